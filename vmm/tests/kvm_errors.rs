//! Bad input to the KVM engine: each case ends dxvmm with one clear line on
//! stderr and a non-zero status, before any guest runs.

mod kvm_guest_code;

use std::process::{Command, Output};

const DXVMM_ERROR: i32 = 125;

fn dxvmm(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dxvmm"));
    c.arg("run").args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run dxvmm")
}

/// The one line dxvmm printed; fails if there were more.
fn one_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    lines[0].to_string()
}

/// A valid test guest, so that only the input under test is wrong.
fn guest(dir: &std::path::Path) -> (String, String) {
    let mut a = kvm_guest_code::Asm::new();
    a.poweroff();
    let (k, i) = kvm_guest_code::write_guest(dir, "ok", a);
    (k.display().to_string(), i.display().to_string())
}

#[test]
fn no_kvm_device() {
    let out = dxvmm(
        &["--accel", "kvm", "--", "true"],
        &[("DXVMM_KVM_DEVICE", "/nonexistent/kvm")],
    );
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
    let line = one_line(&out);
    assert!(
        line.starts_with("dxvmm: /nonexistent/kvm is unavailable (no such device"),
        "{line}"
    );
}

#[test]
fn a_device_that_is_not_kvm() {
    let out = dxvmm(
        &["--accel", "kvm", "--", "true"],
        &[("DXVMM_KVM_DEVICE", "/dev/null")],
    );
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
    assert!(one_line(&out).contains("/dev/null is unavailable (not a KVM device)"));
}

#[test]
fn no_permission_on_the_kvm_device() {
    // Root opens anything; drop to nobody to see what a user without
    // access to /dev/kvm sees.
    // SAFETY: geteuid only reads the process's credentials.
    let root = unsafe { libc::geteuid() } == 0;
    let dir = kvm_guest_code::scratch("kvm-perm");
    let dev = dir.join("kvm");
    std::fs::write(&dev, b"").unwrap();
    let out = if root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o600)).unwrap();
        let have_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
        if !have_setpriv {
            eprintln!("skipped: running as root without setpriv");
            return;
        }
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_dxvmm"))
            .args(["run", "--accel", "kvm", "--", "true"])
            .env("DXVMM_KVM_DEVICE", &dev)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o000)).unwrap();
        dxvmm(
            &["--accel", "kvm", "--", "true"],
            &[("DXVMM_KVM_DEVICE", dev.to_str().unwrap())],
        )
    };
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
    let line = one_line(&out);
    assert!(line.contains("permission denied"), "{line}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn auto_says_why_it_does_not_use_kvm() {
    // With no KVM, auto falls back to the user-mode engine in one line,
    // which then fails on the (missing) UML kernel.
    let out = dxvmm(
        &["--kernel", "/nonexistent/linux", "--", "true"],
        &[("DXVMM_KVM_DEVICE", "/nonexistent/kvm")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("dxvmm: /nonexistent/kvm is unavailable (")
            && first.ends_with("): using the user-mode engine"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
}

#[test]
fn auto_on_a_software_only_kvm() {
    if !std::path::Path::new("/sys/module/kvm_pvm").exists() || !kvm_guest_code::kvm_usable() {
        eprintln!("skipped: this host's KVM is not kvm_pvm");
        return;
    }
    let out = dxvmm(&["--kernel", "/nonexistent/linux", "--", "true"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().next().unwrap_or_default(),
        "dxvmm: /dev/kvm is software-only (kvm_pvm): using the user-mode engine",
        "{err}"
    );
}

#[test]
fn kernel_that_is_neither_bzimage_nor_elf() {
    let dir = kvm_guest_code::scratch("kvm-badkernel");
    let (_, initrd) = guest(&dir);
    let bad = dir.join("vmlinuz");
    std::fs::write(&bad, b"#!/bin/sh\necho this is not a kernel\n").unwrap();
    let out = dxvmm(
        &[
            "--accel",
            "kvm",
            "--kernel",
            bad.to_str().unwrap(),
            "--initramfs",
            &initrd,
            "--",
            "true",
        ],
        &[],
    );
    if !kvm_guest_code::kvm_usable() {
        return; // the KVM check comes first
    }
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
    let line = one_line(&out);
    assert!(
        line.contains("is neither a bzImage nor an ELF vmlinux"),
        "{line}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_kernel_and_initramfs() {
    if !kvm_guest_code::kvm_usable() {
        return;
    }
    let dir = kvm_guest_code::scratch("kvm-missing");
    let (kernel, _) = guest(&dir);
    let out = dxvmm(
        &[
            "--accel",
            "kvm",
            "--kernel",
            &kernel,
            "--initramfs",
            "/nonexistent/initrd.gz",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
    assert_eq!(
        one_line(&out),
        "dxvmm: initramfs not found at /nonexistent/initrd.gz (build the images: images/build.sh)"
    );
    let out = dxvmm(
        &[
            "--accel",
            "kvm",
            "--kernel",
            "/nonexistent/vmlinuz",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
    assert!(one_line(&out).contains("kernel not found at /nonexistent/vmlinuz"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn memory_too_small_or_too_large() {
    let out = dxvmm(&["--accel", "kvm", "--memory", "16M", "--", "true"], &[]);
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
    assert!(one_line(&out).contains("too small"));
    let out = dxvmm(&["--accel", "kvm", "--memory", "65536G", "--", "true"], &[]);
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
    assert!(one_line(&out).contains("more than this host has"));
}

#[test]
fn memory_too_small_for_the_initramfs() {
    if !kvm_guest_code::kvm_usable() {
        return;
    }
    let dir = kvm_guest_code::scratch("kvm-smallmem");
    let (kernel, _) = guest(&dir);
    let big = dir.join("big.cpio");
    std::fs::write(&big, vec![0u8; 70 << 20]).unwrap();
    let out = dxvmm(
        &[
            "--accel",
            "kvm",
            "--memory",
            "64M",
            "--kernel",
            &kernel,
            "--initramfs",
            big.to_str().unwrap(),
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(DXVMM_ERROR));
    let line = one_line(&out);
    assert!(
        line.contains("too small for the kernel and an initramfs of 70 MiB"),
        "{line}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn malformed_memory_size() {
    let out = dxvmm(&["--accel", "kvm", "--memory", "12Q", "--", "true"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.lines().next().unwrap_or_default();
    assert!(first.contains("'12Q' is not a memory size"), "{err}");
}
