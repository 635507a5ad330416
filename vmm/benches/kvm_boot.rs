//! KVM engine figures on this host (run: `cargo bench -p dxvmm --bench kvm_boot`).
//!
//! - set-up: dxvmm's own time from start to a VM with vCPUs ready (its
//!   debug log), and a whole `dxvmm run` of a guest that powers off at once;
//! - exit round trips through a test guest: port I/O and MMIO exits that
//!   dxvmm serves in userspace, and QueueNotify writes KVM turns into an
//!   ioeventfd signal, each against the same loop without the access (the
//!   guest's native path) and a host system call, with ratios;
//! - dxvmm's resident memory beyond the guest's.
//!
//! Uses the test guests of tests/kvm_guest_code; needs a usable /dev/kvm.

#[path = "../tests/kvm_guest_code/mod.rs"]
mod kvm_guest_code;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvm_guest_code::{scratch, write_guest, Asm, VIRTIO_BASE};

/// The dxvmm binary: cargo's, or $DXVMM_BIN (to run the bench binary on a
/// machine without the build tree).
fn dxvmm_bin() -> String {
    std::env::var("DXVMM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dxvmm").to_string())
}

fn run(kernel: &Path, initrd: &Path, memory: &str, debug: bool) -> (Duration, String) {
    let started = Instant::now();
    let out = Command::new(dxvmm_bin())
        .args([
            "run",
            "--accel",
            "kvm",
            "--memory",
            memory,
            "--timeout",
            "120",
        ])
        .arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(initrd)
        .env("RUST_LOG", if debug { "dxvmm=debug" } else { "warn" })
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run dxvmm");
    let took = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (took, String::from_utf8_lossy(&out.stderr).to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// dxvmm's "VM set up in ..." figure, in ms.
fn setup_ms(log: &str) -> Option<f64> {
    let rest = log
        .lines()
        .find_map(|l| l.split("VM set up in ").nth(1))?
        .trim();
    let (num, unit) = rest.split_at(rest.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "ms" => v,
        "µs" | "us" => v / 1000.0,
        "s" => v * 1000.0,
        "ns" => v / 1e6,
        _ => return None,
    })
}

/// A guest that runs `body` `n` times in a loop, then powers off.
fn loop_guest(dir: &Path, name: &str, n: u32, body: impl Fn(&mut Asm)) -> (PathBuf, PathBuf) {
    let mut a = Asm::new();
    let top = a.label();
    a.mov_ecx(n.max(1));
    a.mov_dx(0x80);
    a.mov_rax(VIRTIO_BASE);
    a.bind(top);
    if n > 0 {
        body(&mut a);
    }
    a.loop_ecx(top);
    a.poweroff();
    write_guest(dir, name, a)
}

fn per_iteration_us(dir: &Path, name: &str, n: u32, body: impl Fn(&mut Asm) + Copy) -> f64 {
    let (k0, i0) = loop_guest(dir, &format!("{name}-0"), 0, body);
    let (k, i) = loop_guest(dir, name, n, body);
    let base = median(
        (0..3)
            .map(|_| run(&k0, &i0, "64M", false).0.as_secs_f64())
            .collect(),
    );
    let with = median(
        (0..3)
            .map(|_| run(&k, &i, "64M", false).0.as_secs_f64())
            .collect(),
    );
    (with - base).max(0.0) / n as f64 * 1e6
}

fn host_syscall_us(n: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no arguments and no side effects.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    t.elapsed().as_secs_f64() / n as f64 * 1e6
}

/// Resident set of a running dxvmm, and the part of it that is guest memory
/// (the anonymous mapping of exactly the guest's size).
fn rss_kib(pid: u32, guest_kib: u64) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut guest, mut in_guest) = (0, 0, false);
    for line in smaps.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("Size:"), Some(v)) => in_guest = v.parse::<u64>().ok() == Some(guest_kib),
            (Some("Rss:"), Some(v)) => {
                let v: u64 = v.parse().unwrap_or(0);
                total += v;
                if in_guest {
                    guest += v;
                }
            }
            _ => {}
        }
    }
    (total, guest)
}

fn main() {
    if !kvm_guest_code::kvm_usable() {
        println!("kvm_boot: skipped, /dev/kvm is not usable here");
        return;
    }
    let dir = scratch("kvm-bench");
    println!("dxvmm KVM engine benchmark ({})", host());

    // Set-up time.
    let mut off = Asm::new();
    off.poweroff();
    let (k, i) = write_guest(&dir, "off", off);
    run(&k, &i, "512M", true); // warm the page cache
    let mut setup = vec![];
    let mut whole = vec![];
    for _ in 0..20 {
        let (t, log) = run(&k, &i, "512M", true);
        setup.push(setup_ms(&log).expect("no set-up time in dxvmm's log"));
        whole.push(t.as_secs_f64() * 1e3);
    }
    println!(
        "VMM set-up, 512 MiB guest, 1 vCPU (median of 20): {:.2} ms",
        median(setup)
    );
    println!(
        "whole dxvmm run of a guest that powers off at once: {:.2} ms",
        median(whole)
    );

    // Exit round trips.
    const N: u32 = 100_000;
    let native = per_iteration_us(&dir, "native", 1_000_000, |a| a.nop()) * 1e3;
    let pio = per_iteration_us(&dir, "pio", N, |a| a.out_dx_al());
    let mmio = per_iteration_us(&dir, "mmio", N, |a| a.load_ebx());
    let notify = per_iteration_us(&dir, "ioeventfd", N, |a| {
        // QueueNotify(1) of the stdio console: caught by its ioeventfd.
        a.write32(VIRTIO_BASE + 0x50, 1);
        a.mov_rax(VIRTIO_BASE);
    });
    let host = host_syscall_us(1_000_000);
    println!("guest loop iteration (nop; dec; jnz) without an exit (native path): {native:.1} ns");
    println!("host system call (getppid): {:.3} us", host);
    for (what, us) in [
        ("port I/O exit to dxvmm (out to port 0x80)", pio),
        ("MMIO exit to dxvmm (virtio-mmio MagicValue read)", mmio),
        ("QueueNotify write through ioeventfd", notify),
    ] {
        println!(
            "{what}: {us:.2} us per round trip = {:.0}x the native loop, {:.0}x a host system call",
            us * 1e3 / native.max(0.001),
            us / host.max(0.0001)
        );
    }

    // RSS beyond guest memory.
    let mut spin = Asm::new();
    let top = spin.label();
    spin.print("spinning\n");
    spin.bind(top);
    spin.pause();
    spin.jmp(top);
    let (k, i) = write_guest(&dir, "spin", spin);
    let guest_mib = 512u64;
    let mut child = Command::new(dxvmm_bin())
        .args([
            "run",
            "--accel",
            "kvm",
            "--memory",
            &format!("{guest_mib}M"),
        ])
        .arg("--kernel")
        .arg(&k)
        .arg("--initramfs")
        .arg(&i)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (total, guest) = rss_kib(child.id(), guest_mib * 1024);
    // SAFETY: kill signals the child we spawned, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    println!(
        "dxvmm RSS with a {guest_mib} MiB guest: {:.1} MiB, of which guest memory {guest} KiB: {:.1} MiB beyond guest memory",
        total as f64 / 1024.0,
        (total - guest) as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn host() -> String {
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpu}; /dev/kvm: {}", if pvm { "kvm_pvm" } else { "kvm" })
}
