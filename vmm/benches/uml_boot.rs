//! User-mode engine figures on this host (run: `cargo bench -p dxvmm --bench uml_boot`).
//!
//! Each guest runs one command and powers off; the same UML kernel and
//! initramfs run two ways in one run:
//!
//! - bare UML: the kernel started by hand with no devices, its /init falling
//!   back to the kernel console for the command's output;
//! - dxvmm: `dxvmm run --accel uml`, with its three virtio consoles served over
//!   vhost-user, the runtime directory, the watchdog and status reporting.
//!
//! Figures: boot-to-init (the guest's /proc/uptime when the command runs) and
//! the whole wall-clock cycle of a `/bin/true` guest, medians of
//! $DXVMM_BENCH_RUNS runs (default 10), with dxvmm/bare ratios.
//! Needs images/build.sh's images.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

fn cache() -> PathBuf {
    std::env::var_os("DXVMM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dxvmm"))
}

fn dxvmm_bin() -> String {
    std::env::var("DXVMM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dxvmm").to_string())
}

/// /init's encoding of a command: base64 of the NUL-terminated words.
fn encode_command(argv: &[&str]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = Vec::new();
    for a in argv {
        raw.extend_from_slice(a.as_bytes());
        raw.push(0);
    }
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("dxvmm.cmd={out}")
}

/// One guest cycle: (wall seconds, what the command printed).
fn bare_uml(argv: &[&str]) -> (f64, String) {
    let images = cache().join("images");
    let started = Instant::now();
    let out = Command::new(images.join("uml/linux"))
        .args([
            "mem=512M".to_string(),
            format!("initrd={}", images.join("initramfs.cpio.gz").display()),
            "con=null".into(),
            "ssl=null".into(),
            "con0=null,fd:1".into(),
            "quiet".into(),
            encode_command(argv),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("start the UML kernel");
    let took = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("dxvmm: exit 0"),
        "bare UML did not report exit 0:\n{text}"
    );
    (took, text)
}

fn dxvmm(argv: &[&str]) -> (f64, String) {
    let started = Instant::now();
    let out = Command::new(dxvmm_bin())
        .args(["run", "--accel", "uml", "--timeout", "120", "--"])
        .args(argv)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("start dxvmm");
    let took = started.elapsed().as_secs_f64();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first "UPTIME IDLE" line's uptime, in seconds.
fn uptime(text: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let up: f64 = it.next()?.parse().ok()?;
            let _idle: f64 = it.next()?.parse().ok()?;
            it.next().is_none().then_some(up)
        })
        .unwrap_or_else(|| panic!("no /proc/uptime line in:\n{text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("DXVMM_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    for f in ["images/uml/linux", "images/initramfs.cpio.gz"] {
        assert!(
            cache().join(f).exists(),
            "{} missing: run images/build.sh",
            cache().join(f).display()
        );
    }
    let uptime_cmd = ["cat", "/proc/uptime"];
    let true_cmd = ["/bin/true"];
    // One of each first: page cache, host-side lazy set-up.
    bare_uml(&true_cmd);
    dxvmm(&true_cmd);

    let (mut bare_init, mut dx_init, mut bare_cycle, mut dx_cycle) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        bare_init.push(uptime(&bare_uml(&uptime_cmd).1));
        dx_init.push(uptime(&dxvmm(&uptime_cmd).1));
        bare_cycle.push(bare_uml(&true_cmd).0);
        dx_cycle.push(dxvmm(&true_cmd).0);
    }
    let rows = [
        (
            "boot to the command (guest uptime)",
            median(bare_init),
            median(dx_init),
        ),
        (
            "whole `run -- /bin/true` cycle (wall)",
            median(bare_cycle),
            median(dx_cycle),
        ),
    ];
    println!("user-mode engine, medians of {runs} runs (ms)");
    println!(
        "{:<40} {:>10} {:>10} {:>8}",
        "", "bare UML", "dxvmm", "ratio"
    );
    for (name, bare, dx) in rows {
        println!(
            "{name:<40} {:>10.1} {:>10.1} {:>7.2}x",
            bare * 1e3,
            dx * 1e3,
            dx / bare
        );
    }
}
