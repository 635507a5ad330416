//! `dxvmm run --trace` and `dxvmm trace ...` end to end: a UML guest's
//! compute run recorded, replayed without the guest on the host's Vulkan
//! driver (lavapipe on CI), exported and dissected by tshark; bad trace files
//! and impossible replays each get one line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dxvmm_trace::format::{AdapterEntry, Record, TraceHeader};

mod common;
use common::{dxvmm, ok, text};

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dxvmm-trace-test-{}-{name}", std::process::id()))
}

fn guest(trace: Option<&Path>, cmd: &[&str]) -> Output {
    guest_with(trace, &[], cmd)
}

/// [`guest`], with `env` set for dxvmm.
fn guest_with(trace: Option<&Path>, env: &[(&str, &str)], cmd: &[&str]) -> Output {
    let mut c = dxvmm();
    c.envs(env.iter().copied());
    c.args(["run", "--accel", "uml", "--timeout", "120"]);
    if let Some(t) = trace {
        c.arg("--trace").arg(t);
    }
    c.arg("--").args(cmd).output().expect("spawn dxvmm")
}

/// `dxvmm trace replay --json` of `trace` on the host's adapter: its
/// report, which names no divergence.
fn replayed(trace: &Path) -> serde_json::Value {
    let r = dxvmm()
        .args(["trace", "replay", "--json"])
        .arg(trace)
        .output()
        .unwrap();
    ok(&r);
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(report["divergence"].is_null(), "{report}");
    report
}

#[test]
fn a_recorded_compute_run_replays_without_the_guest_and_dissects() {
    let t = tmp("compute.dxtrace");
    let out = guest(
        Some(&t),
        &[
            "dxgbench", "--n", "16", "--reps", "1", "--tiny", "4", "--mib", "1", "--rounds", "1",
        ],
    );
    ok(&out);
    // Replay on the host's adapter: statuses, handles, GPU VAs, pipelines
    // and every LOCK2 result byte as recorded.
    let report = replayed(&t);
    assert!(
        report["memory_results_compared"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["replies_compared"].as_u64().unwrap() > 10,
        "{report}"
    );
    // The CPU double cannot run shaders: the first divergence is named.
    let r = dxvmm()
        .args(["trace", "replay", "--backend", "soft"])
        .arg(&t)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1), "{}", text(&r.stdout));
    assert!(
        text(&r.stdout).contains("divergence at record"),
        "{}",
        text(&r.stdout)
    );
    // Show with filters, stats.
    let s = dxvmm()
        .args(["trace", "show", "--command", "lock2"])
        .arg(&t)
        .output()
        .unwrap();
    ok(&s);
    let lines: Vec<String> = text(&s.stdout)
        .lines()
        .skip(2)
        .map(str::to_string)
        .collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains("LOCK2")),
        "{lines:?}"
    );
    let s = dxvmm()
        .args(["trace", "show", "--json"])
        .arg(&t)
        .output()
        .unwrap();
    ok(&s);
    for l in text(&s.stdout).lines() {
        let _: serde_json::Value = serde_json::from_str(l).unwrap();
    }
    let s = dxvmm()
        .args(["trace", "stats", "--json"])
        .arg(&t)
        .output()
        .unwrap();
    ok(&s);
    let stats: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert!(stats["events"].as_u64().unwrap() > 0, "{stats}");
    // pcapng, dissected by tshark.
    let p = tmp("compute.pcapng");
    ok(&dxvmm()
        .args(["trace", "export-pcapng"])
        .arg(&t)
        .arg("-o")
        .arg(&p)
        .output()
        .unwrap());
    if Command::new("tshark").arg("--version").output().is_ok() {
        let lua = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trace/wireshark/dxvmm.lua");
        let d = Command::new("tshark")
            .arg("-X")
            .arg(format!("lua_script:{}", lua.display()))
            .arg("-r")
            .arg(&p)
            .args(["-T", "fields", "-e", "dxvmm.command_name"])
            .output()
            .unwrap();
        ok(&d);
        let names = text(&d.stdout);
        for n in [
            "CREATEPROCESS",
            "ESCAPE",
            "SUBMITCOMMAND",
            "LOCK2",
            "SIGNALGUESTEVENT",
        ] {
            assert!(
                names.lines().any(|l| l == n),
                "tshark named no {n}:\n{names}"
            );
        }
    } else {
        eprintln!("tshark is not installed (images/deps.sh installs it): dissection not checked");
    }
    let _ = std::fs::remove_file(&t);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn recording_does_not_change_what_the_guest_sees() {
    let t = tmp("info.dxtrace");
    let plain = guest(None, &["dxginfo", "--json"]);
    let traced = guest(Some(&t), &["dxginfo", "--json"]);
    ok(&plain);
    ok(&traced);
    assert_eq!(text(&plain.stdout), text(&traced.stdout));
    assert!(std::fs::metadata(&t).unwrap().len() > 0);
    let _ = std::fs::remove_file(&t);
}

/// The guest's whole compute suite (two processes at once, a killed one,
/// fences, waits, uploads in pieces, results by bytes and by digest),
/// recorded and replayed on the host's adapter: no divergence. Fence slots
/// in pages the guest reused made it diverge one run in three or four.
#[test]
fn the_compute_suite_replays_without_divergence() {
    suite_replays("suite.dxtrace", &[]);
}

/// The guest's compute suite recorded to `name` with `env` set for dxvmm,
/// then replayed: no divergence, and result digests compared.
fn suite_replays(name: &str, env: &[(&str, &str)]) {
    let t = tmp(name);
    let out = guest_with(Some(&t), env, &["dxgtest", "compute"]);
    ok(&out);
    let report = replayed(&t);
    assert!(
        report["result_digests_compared"].as_u64().unwrap() > 0,
        "{report}"
    );
    let _ = std::fs::remove_file(&t);
}

/// The same suite recorded the way large hosts may record it, here on any
/// host: captures split over 4 threads, large inputs handed to helpers as
/// their requests arrive, large results read as they land.
#[test]
fn the_compute_suite_recorded_with_early_captures_replays_without_divergence() {
    let env = [
        ("DXVMM_TRACE_THREADS", "4"),
        ("DXVMM_TRACE_EARLY_INPUTS", "1"),
        ("DXVMM_TRACE_EARLY", "1"),
    ];
    suite_replays("suite-early.dxtrace", &env);
}

/// Two recordings of the same guest work are alike for `trace diff`
/// (their guests' page frames and fence slots differ, and handles could);
/// a run that does more differs, with exit status 1, and the commands it
/// sent more of are counted. CPU waits and the events that end them are
/// left out: a guest waits only when its fence is not reached yet.
#[test]
fn two_runs_of_the_same_work_diff_alike_and_other_work_does_not() {
    let run = |name: &str, tiny: &str| {
        let t = tmp(name);
        let bench = [
            "dxgbench", "--n", "16", "--reps", "1", "--tiny", tiny, "--mib", "1", "--rounds", "1",
        ];
        ok(&guest(Some(&t), &bench));
        t
    };
    let (a, b, c) = (
        run("diff-a.dxtrace", "4"),
        run("diff-b.dxtrace", "4"),
        run("diff-c.dxtrace", "6"),
    );
    let diff = |x: &Path, y: &Path| {
        dxvmm()
            .args(["trace", "diff", "--json", "--skip", "waitforsyncobject"])
            .args(["--skip", "signalguestevent"])
            .arg(x)
            .arg(y)
            .output()
            .unwrap()
    };
    let same = diff(&a, &b);
    ok(&same);
    let report: serde_json::Value = serde_json::from_slice(&same.stdout).unwrap();
    assert_eq!(report["differences"], serde_json::json!([]), "{report}");
    assert!(report["calls"].as_u64().unwrap() > 50, "{report}");
    let other = diff(&a, &c);
    assert_eq!(other.status.code(), Some(1), "{}", text(&other.stderr));
    let report: serde_json::Value = serde_json::from_slice(&other.stdout).unwrap();
    // The extra tiny dispatches are calls only B has.
    let differences = report["differences"].as_array().unwrap();
    assert!(
        differences
            .iter()
            .any(|d| d["what"].as_str().unwrap().starts_with("only in B")),
        "{report}"
    );
    let counts = report["counts"].as_array().unwrap();
    assert!(
        counts
            .iter()
            .any(|c| c["command"] == "SUBMITCOMMAND" && c["b"].as_u64() > c["a"].as_u64()),
        "{report}"
    );
    for t in [a, b, c] {
        let _ = std::fs::remove_file(t);
    }
}

/// `dxvmm ARGS` fails with exit status 125 and one line that contains `what`.
fn one_line_error(args: &[&str], file: &Path, what: &str) {
    let out = dxvmm().args(args).arg(file).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(what), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn header(adapters: usize) -> TraceHeader {
    TraceHeader {
        start_unix_ns: 0,
        frame_version: 1,
        producer: "test".into(),
        host: "test".into(),
        adapters: (0..adapters)
            .map(|i| AdapterEntry {
                luid: dxvmm_protocol::abi::WinLuid {
                    a: i as u32 + 1,
                    b: 1,
                },
                vendor_id: 0,
                device_id: 0,
                software: true,
                name: format!("gpu {i}"),
                driver: String::new(),
            })
            .collect(),
    }
}

#[test]
fn bad_trace_files_get_one_line_each() {
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trace/corpus/roundtrip.dxtrace");
    let bytes = std::fs::read(&good).unwrap();
    let f = tmp("bad.dxtrace");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bytes[..bytes.len() - 7].to_vec(), "truncated"),
        (bytes[..bytes.len() - 3].to_vec(), "did not finish"),
        (
            b"not a trace at all, just text\n".to_vec(),
            "not a dxvmm trace",
        ),
        (
            {
                let mut b = bytes.clone();
                b[8] = 9;
                b
            },
            "format version 9; this dxvmm reads version 2",
        ),
        (
            {
                let mut b = bytes.clone();
                let at = b.len() / 2;
                b[at..at + 16].fill(0xff);
                b
            },
            "corrupt",
        ),
    ];
    for (content, what) in cases {
        std::fs::write(&f, content).unwrap();
        let good = good.to_str().unwrap();
        for cmd in [
            &["trace", "show"][..],
            &["trace", "stats"],
            &["trace", "replay", "--backend", "soft"],
            &["trace", "diff", good],
        ] {
            one_line_error(cmd, &f, what);
        }
    }
    one_line_error(&["trace", "show"], &tmp("missing.dxtrace"), "No such file");
    // A trace of a guest with two GPUs, on a host backend with one.
    let mut b = header(2).encode();
    Record::End { t: 0, records: 0 }.encode_into(&mut b);
    std::fs::write(&f, b).unwrap();
    one_line_error(
        &["trace", "replay", "--backend", "soft"],
        &f,
        "needs 2 GPU adapter(s); this host has 1",
    );
    let _ = std::fs::remove_file(&f);
}

#[test]
fn trace_without_a_gpu_is_one_line() {
    let out = dxvmm()
        .args(["run", "--accel", "uml", "--gpu", "none", "--trace"])
        .arg(tmp("none.dxtrace"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
}
