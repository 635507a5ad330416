//! `dxvmm run --collect`: files the guest command wrote come back to the
//! host byte for byte (binary, a few MiB, a JUnit report from dxgtest),
//! from flags or `--config`; a missing one is a warning; bad input is one
//! line each, before booting.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::text;

/// A private directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dxvmm-collect-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The directory's entries, sorted: nothing half-written may be left.
    fn entries(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.0.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uml(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dxvmm"));
    c.env_remove("RUST_LOG")
        .current_dir(dir)
        .args(["run", "--accel", "uml", "--timeout", "120"])
        .args(args)
        .output()
        .expect("spawn dxvmm")
}

/// Bytes of every value, in an order no text encoding keeps by accident.
fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn files_come_back_byte_exact_and_a_missing_one_is_a_warning() {
    let s = Scratch::new("exact");
    let big = binary(3 << 20);
    std::fs::write(s.0.join("big.bin"), &big).unwrap();
    std::fs::create_dir(s.0.join("out")).unwrap();
    // The command writes a file with every byte value and a NUL-only one,
    // and fails: the files still come back, and the status stays its own.
    let script = "i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %o $i)\"; i=$((i+1)); done \
        > /tmp/all.bin; : > /tmp/empty; chmod 4755 /tmp/all.bin; exit 7";
    let out = uml(
        &s.0,
        &[
            "--gpu",
            "none",
            "--inject",
            "big.bin:/root/big.bin",
            "--collect",
            "/root/big.bin:out/copy.bin",
            "--collect",
            "/tmp/all.bin:out/",
            "--collect",
            "/tmp/empty",
            "--collect",
            "/tmp/not-written.xml:out/",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "stderr: {stderr}");
    assert_eq!(
        stderr,
        "dxvmm: --collect /tmp/not-written.xml:out/: the guest has no file /tmp/not-written.xml\n"
    );
    assert!(std::fs::read(s.0.join("out/copy.bin")).unwrap() == big);
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(std::fs::read(s.0.join("out/all.bin")).unwrap(), all);
    assert_eq!(std::fs::read(s.0.join("empty")).unwrap(), b"");
    assert_eq!(s.entries("out"), ["all.bin", "copy.bin"]);
    // The guest's mode comes back, less setuid and the host's umask.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(s.0.join(p)).unwrap().permissions().mode() & 0o7777;
    let created = mode("big.bin") & 0o666;
    assert_eq!(
        mode("out/all.bin"),
        0o755 & (created | ((created & 0o444) >> 2))
    );
}

#[test]
fn junit_from_dxgtest_comes_back_from_a_config() {
    let s = Scratch::new("junit");
    std::fs::create_dir(s.0.join("reports")).unwrap();
    let cfg = s.0.join("run.toml");
    std::fs::write(
        &cfg,
        "accel = \"uml\"\n\
         command = [\"dxgtest\", \"compute\", \"--junit\", \"/tmp/junit.xml\"]\n\
         collect = [\"/tmp/junit.xml:reports/\"]\n",
    )
    .unwrap();
    // Run from elsewhere: the report lands beside the config file.
    let out = uml(Path::new("/"), &["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let junit = std::fs::read_to_string(s.0.join("reports/junit.xml")).unwrap();
    assert!(junit.starts_with("<?xml"), "{junit}");
    assert!(
        junit.contains("<testsuite name=\"dxgtest.compute\""),
        "{junit}"
    );
    assert!(junit.contains("failures=\"0\""), "{junit}");
    assert!(junit.trim_end().ends_with("</testsuites>"), "{junit}");
}

// Bad input: one clear line each, before a guest boots.

fn one_line_error(out: &Output) -> String {
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{e}");
    assert_eq!(e.lines().count(), 1, "not one line: {e:?}");
    assert!(!e.contains("panicked"), "{e}");
    e.trim_end().to_string()
}

fn bad(dir: &Path, args: &[&str]) -> Output {
    // A kernel that does not exist: reaching the boot would be an error too,
    // but another one.
    Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .env_remove("RUST_LOG")
        .current_dir(dir)
        .args(["run", "--accel", "uml", "--gpu", "none"])
        .args(["--kernel", "/nonexistent/kernel"])
        .args(args)
        .args(["--", "true"])
        .output()
        .unwrap()
}

#[test]
fn relative_guest_path() {
    let s = Scratch::new("relative");
    assert_eq!(
        one_line_error(&bad(&s.0, &["--collect", "tmp/j.xml"])),
        "dxvmm: --collect tmp/j.xml: the guest path 'tmp/j.xml' is not absolute"
    );
    assert_eq!(
        one_line_error(&bad(&s.0, &["--collect", "/tmp/:j.xml"])),
        "dxvmm: --collect /tmp/:j.xml: the guest path '/tmp/' names no file"
    );
}

#[test]
fn host_directory_that_does_not_exist() {
    let s = Scratch::new("nodir");
    assert_eq!(
        one_line_error(&bad(&s.0, &["--collect", "/tmp/j.xml:missing/j.xml"])),
        "dxvmm: --collect /tmp/j.xml:missing/j.xml: the host directory 'missing' does not exist"
    );
    assert_eq!(
        one_line_error(&bad(
            &s.0,
            &["--collect", "/a/j.xml", "--collect", "/b/j.xml"]
        )),
        "dxvmm: --collect /b/j.xml: j.xml is collected twice"
    );
    let cfg = s.0.join("run.toml");
    std::fs::write(&cfg, "cpus = 1\ncollect = [\"j.xml\"]\n").unwrap();
    assert_eq!(
        one_line_error(&bad(&s.0, &["--config", cfg.to_str().unwrap()])),
        format!(
            "dxvmm: {}:2: collect: j.xml: the guest path 'j.xml' is not absolute",
            cfg.display()
        )
    );
    assert!(s.entries("").iter().all(|n| n == "run.toml"));
}
