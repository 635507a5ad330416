//! Helpers the integration tests that run `dxvmm` share.
#![allow(dead_code)] // each test crate uses its own subset

use std::process::{Command, Output};

/// The dxvmm under test, quiet (RUST_LOG from the environment dropped).
pub fn dxvmm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dxvmm"));
    c.env_remove("RUST_LOG");
    c
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts a zero exit status, showing both streams otherwise.
pub fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Processes whose command line mentions `needle`, other than this one,
/// as "PID: COMMAND LINE".
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = text(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}
