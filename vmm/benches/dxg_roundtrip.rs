//! Round trip of a trivial /dev/dxg ioctl, guest user space to the host
//! device and back, per engine, beside the cost of one bare KVM exit to user
//! space measured in the same run (run: `cargo bench -p dxvmm --bench
//! dxg_roundtrip`).
//!
//! The ioctl is QUERYADAPTERINFO(HOST_OBJECTS): the guest driver sends it to
//! the device, which answers from its tables without touching the GPU. The
//! guest's `dxgtest roundtrip N` times N of them with CLOCK_MONOTONIC and
//! reports the median and p99. The bare exit is an `out` to a port that
//! dxvmm's vCPU loop serves, in a test guest, less the same loop without it.
//!
//! The KVM device row needs no guest kernel: a test guest submits the same
//! QUERYADAPTERINFO(HOST_OBJECTS) request chain on the virtio-dxg request
//! queue N times (QueueNotify write, which KVM turns into an ioeventfd
//! signal; dxvmm's device thread serves it; the guest spins on used.idx,
//! interrupts suppressed), less the same loop without the kick and the wait.
//!
//! Needs images/build.sh's images (with the guest tools) and a Vulkan
//! adapter; the KVM rows need /dev/kvm (and, for the guest-kernel row, one
//! that runs an unmodified kernel).

#[path = "../tests/kvm_guest_code/mod.rs"]
mod kvm_guest_code;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kvm_guest_code::dxg;
use kvm_guest_code::{scratch, write_guest, Asm};

fn dxvmm_bin() -> String {
    std::env::var("DXVMM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dxvmm").to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `dxgtest roundtrip` in a guest of `engine`: (median, p99) in µs.
fn guest_roundtrip(engine: &str, n: u32) -> Result<(f64, f64), String> {
    let out = Command::new(dxvmm_bin())
        .args(["run", "--accel", engine, "--timeout", "300", "--"])
        .args(["dxgtest", "roundtrip", &n.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = s
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("no JSON in the guest's output:\n{s}"))?;
    let ns = |k: &str| v[k].as_f64().ok_or_else(|| format!("no {k} in {v}"));
    Ok((ns("median_ns")? / 1e3, ns("p99_ns")? / 1e3))
}

fn run_kvm_guest(kernel: &Path, initrd: &Path) -> f64 {
    let t = Instant::now();
    let st = Command::new(dxvmm_bin())
        .args(["run", "--accel", "kvm", "--gpu", "none", "--memory", "64M"])
        .arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(initrd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run dxvmm");
    assert!(st.success(), "the KVM test guest failed");
    t.elapsed().as_secs_f64()
}

/// One port I/O exit served by dxvmm, in µs.
fn bare_exit_us(dir: &Path) -> f64 {
    const N: u32 = 100_000;
    let guest = |name: &str, n: u32| -> (PathBuf, PathBuf) {
        let mut a = Asm::new();
        let top = a.label();
        a.mov_ecx(n.max(1));
        a.mov_dx(0x80);
        a.bind(top);
        if n > 0 {
            a.out_dx_al();
        }
        a.loop_ecx(top);
        a.poweroff();
        write_guest(dir, name, a)
    };
    let (k0, i0) = guest("empty", 0);
    let (k, i) = guest("pio", N);
    let base = median((0..3).map(|_| run_kvm_guest(&k0, &i0)).collect());
    let with = median((0..3).map(|_| run_kvm_guest(&k, &i)).collect());
    (with - base).max(0.0) / f64::from(N) * 1e6
}

/// A test guest that sets up the dxg device's request queue with one
/// QUERYADAPTERINFO(HOST_OBJECTS) chain, submits it once and checks the
/// reply, then runs `dxg_loop` `n` times (with or without the kick), checks
/// the last reply again and reports `exit 0` on hvc2 (`exit 1` if a reply
/// was bad).
fn dxg_guest(dir: &Path, name: &str, n: u32, kick: bool) -> (PathBuf, PathBuf) {
    let q = dxg::request_queue();
    let frame = dxg::host_objects_frame(1);
    let mut a = Asm::new();
    let fail = a.label();
    let bad_reply = a.label();
    a.virtio_console_init(2, fail);
    a.virtio_dxg_init(fail);
    let addr = a.data(&frame);
    a.dxg_set_luid(addr);
    a.dxg_chain(addr, frame.len() as u32);
    // The frame status, then the query's own (the payload's first word).
    let check = |a: &mut Asm| {
        a.expect32(q.buffer + dxg::HEADER_STATUS, u32::MAX, 0, bad_reply);
        a.expect32(q.buffer + dxg::HEADER_SIZE, u32::MAX, 0, bad_reply);
    };
    a.dxg_submit(1);
    check(&mut a);
    a.dxg_loop(1, n, kick);
    check(&mut a);
    a.virtio_console_send(2, 1, b"exit 0\n", fail);
    a.poweroff();
    a.bind(bad_reply);
    a.print("dxg bench guest: FAIL: bad reply\n");
    a.virtio_console_send(2, 1, b"exit 1\n", fail);
    a.poweroff();
    a.bind(fail);
    a.print("dxg bench guest: FAIL\n");
    a.poweroff();
    write_guest(dir, name, a)
}

/// Wall time of one run of a dxg test guest, in seconds.
fn run_dxg_guest(kernel: &Path, initrd: &Path) -> Result<f64, String> {
    let serial = kernel.with_extension("serial.log");
    let t = Instant::now();
    let out = Command::new(dxvmm_bin())
        .args(["run", "--accel", "kvm", "--gpu", "all", "--memory", "64M"])
        .args(["--timeout", "120"])
        .arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(initrd)
        .arg("--serial-log")
        .arg(&serial)
        .args(["--", "true"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let took = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "the dxg test guest failed (status {:?}): {} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim(),
            std::fs::read_to_string(&serial).unwrap_or_default().trim()
        ));
    }
    Ok(took)
}

/// The device round trip and the guest loop around it, in µs per request:
/// (N kicked submissions - N unkicked) / N, and (N unkicked - 0) / N.
fn dxg_device_us(dir: &Path, n: u32) -> Result<(f64, f64), String> {
    let (k0, i0) = dxg_guest(dir, "dxg-none", 0, false);
    let (ke, ie) = dxg_guest(dir, "dxg-empty", n, false);
    let (kk, ik) = dxg_guest(dir, "dxg-kick", n, true);
    let time = |k: &Path, i: &Path| -> Result<f64, String> {
        let runs = (0..5)
            .map(|_| run_dxg_guest(k, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(median(runs))
    };
    let none = time(&k0, &i0)?;
    let empty = time(&ke, &ie)?;
    let kicked = time(&kk, &ik)?;
    let per = |a: f64, b: f64| (a - b).max(0.0) / f64::from(n) * 1e6;
    Ok((per(kicked, empty), per(empty, none)))
}

/// Whether /dev/kvm is backed by VT-x/AMD-V (what `--accel auto` checks).
fn hardware_kvm() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    kvm_guest_code::kvm_usable()
        && !Path::new("/sys/module/kvm_pvm").exists()
        && flags
            .lines()
            .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")))
}

fn main() {
    let n: u32 = std::env::var("DXVMM_BENCH_IOCTLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    println!("/dev/dxg ioctl round trip, {n} QUERYADAPTERINFO(HOST_OBJECTS) per engine");

    let exit = if kvm_guest_code::kvm_usable() {
        let dir = scratch("dxg-bench");
        let us = bare_exit_us(&dir);
        let _ = std::fs::remove_dir_all(dir);
        println!("bare KVM exit to dxvmm (port I/O, test guest): {us:.2} us");
        Some(us)
    } else {
        println!("bare KVM exit: /dev/kvm is not usable here");
        None
    };
    let ratio = |us: f64| match exit {
        Some(e) if e > 0.0 => format!("{:.1}x a bare exit", us / e),
        _ => "-".to_string(),
    };

    if exit.is_some() {
        let kicks: u32 = std::env::var("DXVMM_BENCH_KICKS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(50_000);
        let dir = scratch("dxg-bench-device");
        match dxg_device_us(&dir, kicks) {
            Ok((us, loop_us)) => {
                println!(
                    "kvm device: {us:.2} us per request ({}), test guest, no guest kernel, \
                     median of 5 runs of {kicks}",
                    ratio(us)
                );
                println!(
                    "    includes: the guest's QueueNotify write, KVM's ioeventfd signal, \
                     dxvmm's device thread (event-manager) waking, the device decoding and \
                     answering QUERYADAPTERINFO(HOST_OBJECTS) into the chain's reply \
                     buffer, the used ring update, the guest seeing used.idx move \
                     (it spins on it)"
                );
                println!(
                    "    excludes: a guest kernel and driver (no ioctl, no copies, no \
                     sleeping waiter), interrupts (suppressed: VRING_AVAIL_F_NO_INTERRUPT), \
                     the guest's loop around the kick ({loop_us:.2} us per iteration \
                     here, subtracted)"
                );
            }
            Err(e) => println!("kvm device: not measured: {e}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    for engine in ["uml", "kvm"] {
        if engine == "kvm" && !hardware_kvm() {
            println!(" kvm: not measured: /dev/kvm here cannot run an unmodified guest kernel (software-only KVM)");
            continue;
        }
        match guest_roundtrip(engine, n) {
            Ok((median, p99)) => println!(
                "{engine:>4}: median {median:.2} us ({}), p99 {p99:.2} us ({})",
                ratio(median),
                ratio(p99)
            ),
            Err(e) => println!("{engine:>4}: not measured: {e}"),
        }
    }
}
