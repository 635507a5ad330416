//! The KVM engine against small test guests on this host's real KVM: each
//! guest prints on COM1, drives dxvmm's virtio-mmio consoles through their
//! queues, and ends through the same paths a Linux guest uses.

mod kvm_guest_code;

use std::path::Path;
use std::process::{Command, Output};

use kvm_guest_code::{scratch, write_guest, Asm};

fn dxvmm(kernel: &Path, initrd: &Path, log: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .args([
            "run",
            "--accel",
            "kvm",
            "--memory",
            "128M",
            "--timeout",
            "30",
        ])
        .arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(initrd)
        .arg("--serial-log")
        .arg(log)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run dxvmm")
}

macro_rules! require_kvm {
    () => {
        if !kvm_guest_code::kvm_usable() {
            eprintln!("skipped: /dev/kvm is not usable here");
            return;
        }
    };
}

fn describe(out: &Output, log: &Path) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}\nserial: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// The whole path of a guest command: output on hvc0, status on hvc2,
/// power-off through ACPI.
fn console_guest(status: u8) -> Asm {
    let mut a = Asm::new();
    let fail = a.label();
    a.print("dxvmm test guest: up\n");
    a.virtio_console_init(0, fail);
    a.virtio_console_init(2, fail);
    a.print("dxvmm test guest: consoles ready\n");
    a.virtio_console_send(0, 1, b"hello from a KVM test guest\n", fail);
    a.virtio_console_send(0, 2, b"second buffer\n", fail);
    a.virtio_console_send(2, 1, format!("exit {status}\n").as_bytes(), fail);
    a.print("dxvmm test guest: powering off\n");
    a.poweroff();
    a.bind(fail);
    a.print("dxvmm test guest: FAIL\n");
    a.poweroff();
    a
}

#[test]
fn guest_drives_virtio_consoles_and_reports_its_status() {
    require_kvm!();
    let dir = scratch("kvm-console");
    let (kernel, initrd) = write_guest(&dir, "console", console_guest(7));
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    let serial = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out, &log));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from a KVM test guest\nsecond buffer\n"
    );
    assert!(serial.contains("consoles ready"), "{serial}");
    assert!(serial.contains("powering off"), "{serial}");
    assert!(!serial.contains("FAIL"), "{serial}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn status_zero_with_several_vcpus() {
    require_kvm!();
    let dir = scratch("kvm-cpus");
    let (kernel, initrd) = write_guest(&dir, "console", console_guest(0));
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--cpus", "2", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn poweroff_without_a_command_is_success() {
    require_kvm!();
    let dir = scratch("kvm-poweroff");
    let mut a = Asm::new();
    a.print("bye\n");
    a.poweroff();
    let (kernel, initrd) = write_guest(&dir, "poweroff", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &log));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "bye\n");
    // With a command, a power-off without a status is a lost guest.
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{}", describe(&out, &log));
    assert!(String::from_utf8_lossy(&out.stderr).contains("powered off without reporting a status"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn acpi_reset_ends_the_run() {
    require_kvm!();
    let dir = scratch("kvm-reset");
    let mut a = Asm::new();
    a.mov_dx(0x604);
    a.mov_al(1);
    a.out_dx_al();
    a.hlt();
    let (kernel, initrd) = write_guest(&dir, "reset", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{}", describe(&out, &log));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ACPI reset register"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn triple_fault_ends_the_run() {
    require_kvm!();
    let dir = scratch("kvm-triple");
    let mut a = Asm::new();
    a.print("about to fault\n");
    a.ud2();
    let (kernel, initrd) = write_guest(&dir, "triple", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(122), "{}", describe(&out, &log));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("triple fault"), "{err}");
    assert!(err.contains("about to fault"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn panic_on_the_console_is_reported() {
    require_kvm!();
    let dir = scratch("kvm-panic");
    let mut a = Asm::new();
    a.print("Kernel panic - not syncing: test guest gives up\n");
    a.print("---[ end Kernel panic - not syncing: test guest gives up ]---\n");
    a.mov_dx(0x604);
    a.mov_al(1);
    a.out_dx_al();
    a.hlt();
    let (kernel, initrd) = write_guest(&dir, "panic", a);
    let log = dir.join("serial.log");
    let out = dxvmm(&kernel, &initrd, &log, &["--", "true"]);
    assert_eq!(out.status.code(), Some(123), "{}", describe(&out, &log));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test guest gives up"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn timeout_stops_a_spinning_guest() {
    require_kvm!();
    let dir = scratch("kvm-timeout");
    let mut a = Asm::new();
    let top = a.label();
    a.bind(top);
    a.pause();
    a.jmp(top);
    let (kernel, initrd) = write_guest(&dir, "spin", a);
    let log = dir.join("serial.log");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .args(["run", "--accel", "kvm", "--memory", "64M", "--timeout", "1"])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initramfs")
        .arg(&initrd)
        .args(["--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", describe(&out, &log));
    assert!(started.elapsed().as_secs() < 10);
    std::fs::remove_dir_all(dir).unwrap();
}
