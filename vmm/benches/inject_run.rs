//! Wall time of a CI job's whole `dxvmm run --inject ./t -- /t` (boot, run
//! a trivial static test binary, power off), per engine, median of N runs
//! (run: `cargo bench -p dxvmm --bench inject_run`; N from $BENCH_RUNS,
//! default 10).
//!
//! - uml: with the GPU device (the host's default adapters) and without;
//! - kvm: only where /dev/kvm is hardware KVM (kvm_intel or kvm_amd), beside
//!   QEMU's microvm with the same kernel and initramfs (the same archive
//!   appended, made by the host's `cpio`), when qemu-system-x86_64 is
//!   installed; elsewhere the rows say why they are skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

fn dxvmm_bin() -> String {
    std::env::var("DXVMM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dxvmm").to_string())
}

fn cache() -> PathBuf {
    std::env::var_os("DXVMM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dxvmm"))
}

/// A trivial static test binary: exits 0.
fn test_binary(dir: &Path) -> PathBuf {
    let src = dir.join("t.rs");
    std::fs::write(&src, "fn main() {}\n").unwrap();
    let bin = dir.join("t");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let ok = Command::new(rustc)
        .args([
            "-O",
            "-C",
            "strip=symbols",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("run rustc")
        .success();
    assert!(ok, "rustc failed");
    bin
}

/// Median, min and max in seconds of `n` runs of `cmd`, each of which must
/// exit 0.
fn time(n: usize, mut cmd: impl FnMut() -> Command) -> (f64, f64, f64) {
    let mut v = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let out = cmd().stdin(Stdio::null()).output().expect("spawn");
        let t = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        v.push(t);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn row(what: &str, (median, min, max): (f64, f64, f64)) {
    println!("{what:<44} {median:>7.3} s   (min {min:.3}, max {max:.3})");
}

fn hardware_kvm() -> bool {
    ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| Path::new("/sys/module").join(m).exists())
        && Path::new("/dev/kvm").exists()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then
    // only check that the bench builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("dxvmm-bench-inject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    test_binary(&dir);
    println!(
        "dxvmm run --inject ./t -- /t, a static binary that exits 0; median of {n} runs, wall time"
    );
    let run = |accel: &'static str, extra: &'static [&'static str]| {
        let dir = dir.clone();
        move || {
            let mut c = Command::new(dxvmm_bin());
            c.current_dir(&dir)
                .env_remove("RUST_LOG")
                .args(["run", "--accel", accel, "--timeout", "60"])
                .args(extra)
                .args(["--inject", "./t", "--", "/t"]);
            c
        }
    };
    row(
        "uml, GPU device (default adapters)",
        time(n, run("uml", &[])),
    );
    row("uml, --gpu none", time(n, run("uml", &["--gpu", "none"])));

    if !hardware_kvm() {
        println!("kvm: skipped: /dev/kvm is not hardware KVM here (no kvm_intel or kvm_amd)");
    } else {
        row(
            "kvm, GPU device (default adapters)",
            time(n, run("kvm", &[])),
        );
        row("kvm, --gpu none", time(n, run("kvm", &["--gpu", "none"])));
        match which("qemu-system-x86_64") {
            None => println!("qemu microvm: skipped: qemu-system-x86_64 is not installed"),
            Some(qemu) => {
                let initrd = combined_initramfs(&dir);
                let kernel = cache().join("images/cloud/vmlinuz");
                // The command as dxvmm passes it: base64 of "/t\0".
                let append = "console=ttyS0 quiet panic=-1 dxvmm.cmd=L3QA";
                row(
                    "qemu microvm (same kernel and initramfs)",
                    time(n, || {
                        let mut c = Command::new(&qemu);
                        c.args([
                            "-M",
                            "microvm,acpi=on,x-option-roms=off,rtc=off",
                            "-enable-kvm",
                            "-cpu",
                            "host",
                            "-m",
                            "512",
                            "-nodefaults",
                            "-no-user-config",
                            "-nographic",
                            "-no-reboot",
                            "-serial",
                            "stdio",
                            "-append",
                            append,
                        ])
                        .arg("-kernel")
                        .arg(&kernel)
                        .arg("-initrd")
                        .arg(&initrd);
                        c
                    }),
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The image's initramfs with `t` appended as /t, as dxvmm hands it to the
/// kernel, made with the host's cpio for QEMU.
fn combined_initramfs(dir: &Path) -> PathBuf {
    let mut all = std::fs::read(cache().join("images/initramfs.cpio.gz")).unwrap();
    all.resize(all.len().next_multiple_of(4), 0);
    let out = Command::new("sh")
        .current_dir(dir)
        .args(["-c", "echo t | cpio -o -H newc --quiet -R 0:0"])
        .output()
        .expect("run cpio");
    assert!(out.status.success(), "cpio failed");
    all.extend_from_slice(&out.stdout);
    let path = dir.join("initramfs-t.cpio");
    std::fs::write(&path, all).unwrap();
    path
}
