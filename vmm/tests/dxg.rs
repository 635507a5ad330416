//! /dev/dxg end to end: a real UML guest with the dxgkrnl module and the
//! guest tools (images/build.sh), the virtio-dxg device in dxvmm, and the
//! host's Vulkan driver (lavapipe on CI) behind it.

use std::process::Output;

mod common;
use common::{dxvmm, ok, text};

fn guest(args: &[&str]) -> Output {
    dxvmm()
        .args(["run", "--accel", "uml", "--timeout", "120"])
        .args(args)
        .output()
        .expect("spawn dxvmm")
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

#[test]
fn dxginfo_in_the_guest_matches_dxvmm_gpus_on_the_host() {
    let host = dxvmm().args(["gpus", "--json"]).output().unwrap();
    ok(&host);
    let out = guest(&["--", "dxginfo", "--json"]);
    ok(&out);
    let host = json(&text(&host.stdout));
    assert!(
        !host.as_array().unwrap().is_empty(),
        "the host has no Vulkan adapter"
    );
    assert_eq!(json(&text(&out.stdout)), host);
}

#[test]
fn dxginfo_table_names_each_adapter() {
    let out = guest(&["--", "dxginfo"]);
    ok(&out);
    let s = text(&out.stdout);
    assert!(s.starts_with("#  NAME"), "{s}");
    let host = dxvmm().args(["gpus"]).output().unwrap();
    assert_eq!(s, text(&host.stdout));
}

#[test]
fn garbage_ioctls_fail_cleanly() {
    let out = guest(&["--", "dxgtest", "abuse"]);
    let s = text(&out.stdout);
    assert!(!s.contains("not ok"), "{s}");
    assert!(s.contains("ok - "), "{s}");
    ok(&out);
}

#[test]
fn killed_processes_leave_no_host_objects() {
    let out = guest(&["--", "dxgtest", "procs", "32"]);
    ok(&out);
}

#[test]
fn module_unloads_and_reloads() {
    let out = guest(&[
        "--",
        "sh",
        "-c",
        "dxginfo >/dev/null && rmmod dxgkrnl && test ! -e /dev/dxg && modprobe dxgkrnl && dxginfo --json",
    ]);
    ok(&out);
    let host = dxvmm().args(["gpus", "--json"]).output().unwrap();
    assert_eq!(json(&text(&out.stdout)), json(&text(&host.stdout)));
}

#[test]
fn gpu_none_gives_no_device() {
    let out = guest(&[
        "--gpu",
        "none",
        "--",
        "sh",
        "-c",
        "test ! -e /dev/dxg && ! grep -qx 0x003d /sys/bus/virtio/devices/*/device",
    ]);
    ok(&out);
    let out = guest(&["--gpu", "none", "--", "dxginfo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("/dev/dxg"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn gpu_selection_that_matches_nothing_is_one_line() {
    let out = guest(&["--gpu", "no-such-gpu", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let e = text(&out.stderr);
    assert_eq!(
        e.trim_end(),
        "dxvmm: --gpu: no host GPU matches 'no-such-gpu' (see `dxvmm gpus`)"
    );
}
