//! Compute on the GPU from inside a UML guest: dxgtest's `compute` suite
//! (libdxg's user-mode driver, the guest driver's compute ioctls, the
//! device and the host's Vulkan driver, lavapipe on CI), the compute
//! ioctls' garbage cases, and dxgbench at CI sizes. Each asserts a zero
//! exit and no failed case.

use std::process::{Command, Output};

mod common;
use common::text;

fn guest(cmd: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dxvmm"))
        .env_remove("RUST_LOG")
        .args(["run", "--accel", "uml", "--timeout", "240", "--"])
        .args(cmd)
        .output()
        .expect("spawn dxvmm")
}

/// Exit 0, some `ok` lines and no `not ok` line.
fn suite_passes(out: &Output) -> String {
    let s = text(&out.stdout);
    let failed: Vec<&str> = s.lines().filter(|l| l.starts_with("not ok")).collect();
    assert!(
        failed.is_empty(),
        "failed cases:\n{}\n\nall:\n{s}",
        failed.join("\n")
    );
    assert!(s.contains("ok - "), "{s}\nstderr:\n{}", text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{s}\nstderr:\n{}",
        text(&out.stderr)
    );
    s
}

/// The lines of the compute suite whose name starts with `prefix`.
fn cases<'a>(s: &'a str, prefix: &str) -> Vec<&'a str> {
    s.lines()
        .filter(|l| {
            l.strip_prefix("ok - ")
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

#[test]
fn compute_suite_passes_and_writes_junit() {
    let out = guest(&[
        "sh",
        "-c",
        "dxgtest compute --junit /tmp/compute.xml; rc=$?; echo '# junit'; cat /tmp/compute.xml; exit $rc",
    ]);
    let s = suite_passes(&out);
    // Results against the CPU, both shader languages, the compiler's text.
    for name in [
        "vector add",
        "matrix multiply 64x64",
        "matrix multiply 256x256",
        "reduction",
        "SPIR-V pipeline",
        "a shader that does not compile returns the compiler's message",
        "two processes use the GPU at once",
        "a process killed with a long dispatch in flight leaves no host objects",
        "the GPU works after the killed process",
        "no host objects left behind",
    ] {
        assert_eq!(cases(&s, name).len(), 1, "{name} missing:\n{s}");
    }
    // Conformance: each ioctl of the compute profile once.
    for ioctl in [
        "CREATEALLOCATION",
        "DESTROYALLOCATION2",
        "QUERYALLOCATIONRESIDENCY",
        "MAKERESIDENT",
        "EVICT",
        "LOCK2",
        "UNLOCK2",
        "RESERVEGPUVIRTUALADDRESS",
        "MAPGPUVIRTUALADDRESS",
        "FREEGPUVIRTUALADDRESS",
        "CREATECONTEXTVIRTUAL",
        "DESTROYCONTEXT",
        "CREATEHWQUEUE",
        "CREATESYNCHRONIZATIONOBJECT2",
        "DESTROYSYNCHRONIZATIONOBJECT",
        "SIGNALSYNCHRONIZATIONOBJECTFROMCPU",
        "SIGNALSYNCHRONIZATIONOBJECTFROMGPU",
        "SIGNALSYNCHRONIZATIONOBJECTFROMGPU2",
        "WAITFORSYNCHRONIZATIONOBJECTFROMCPU",
        "WAITFORSYNCHRONIZATIONOBJECTFROMGPU",
    ] {
        assert!(!cases(&s, ioctl).is_empty(), "{ioctl} not exercised:\n{s}");
    }
    // Bad input from the guest fails with an errno, and the GPU goes on.
    assert!(cases(&s, "submit: ").len() >= 8, "{s}");
    assert!(cases(&s, "stream with ").len() >= 8, "{s}");
    assert!(s.contains(": the GPU still works"), "{s}");
    let xml = s.split("# junit\n").nth(1).unwrap_or_default();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains("<testsuite name=\"dxgtest.compute\""), "{xml}");
    assert!(xml.contains("failures=\"0\""), "{xml}");
}

#[test]
fn compute_ioctl_garbage_fails_cleanly() {
    let out = guest(&["dxgtest", "abuse"]);
    let s = suite_passes(&out);
    for ioctl in [
        "createallocation",
        "lock2",
        "mapgpuvirtualaddress",
        "submitcommand",
        "escape",
        "waitfromcpu",
        "signalfromgpu2",
    ] {
        assert!(
            s.lines()
                .any(|l| l.starts_with(&format!("ok - {ioctl}: argument at"))),
            "{ioctl}: no bad-pointer cases:\n{s}"
        );
    }
}

#[test]
fn dxgbench_runs_every_workload_at_ci_sizes() {
    let out = guest(&[
        "dxgbench", "--json", "--n", "128", "--reps", "2", "--tiny", "200", "--mib", "4",
        "--rounds", "1",
    ]);
    let s = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{s}\nstderr:\n{}",
        text(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = s
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["workload"].as_str()).collect();
    assert_eq!(names, ["matmul", "tiny", "upload", "download"], "{s}");
    for r in &rows {
        assert!(r["value"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    }
}
