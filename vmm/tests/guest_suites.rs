//! The guest test suites (`dxgtest SUITE` in a UML guest with /dev/dxg),
//! each guest case reported as a test of its own, through the path a CI job
//! takes: `dxvmm run --inject ... -- CMD`.
//!
//! Names: `SUITE` is the whole suite (the guest's exit status, and every
//! case passed); `SUITE::CASE` is one case, CASE being its TAP description
//! (`ok - CASE`, `not ok - CASE`; dxgtest's failing lines read `NAME: WHY`).
//!
//! Listing (`--list`, which cargo-nextest runs first) must be fast and boot
//! nothing, and a suite's case names are only known once it ran, so the list
//! holds the suites. A run boots a guest per selected suite (all at once),
//! then reports the suite and each of its cases: `cargo test` shows every
//! case by name; a run narrowed to the suite (`--exact SUITE`, which is how
//! nextest runs one test) shows the suite, whose failure message names each
//! failing case. A filter selects a suite when it matches the suite's name
//! or starts with `SUITE::`.
//!
//! DXVMM_DXGTEST=PATH injects that dxgtest over the image's, to test a
//! rebuilt one (guest-tools/build-static.sh) without rebuilding the image.

use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

/// Each suite and its dxgtest arguments.
const SUITES: &[(&str, &[&str])] = &[
    ("abuse", &["abuse"]),
    ("procs", &["procs", "32"]),
    ("compute", &["compute"]),
];

/// Seconds a suite's guest may run.
const SUITE_TIMEOUT: &str = "240";

struct SuiteRun {
    status: Option<i32>,
    stderr: String,
    cases: Vec<(String, Result<(), String>)>,
}

fn run_suite(args: &[&str]) -> SuiteRun {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dxvmm"));
    cmd.env_remove("RUST_LOG")
        .args(["run", "--accel", "uml", "--timeout", SUITE_TIMEOUT]);
    if let Some(dxgtest) = std::env::var_os("DXVMM_DXGTEST") {
        let mut spec = dxgtest;
        spec.push(":/bin/dxgtest");
        cmd.arg("--inject").arg(spec);
    }
    let out = cmd
        .arg("--")
        .arg("dxgtest")
        .args(args)
        .output()
        .expect("spawn dxvmm");
    SuiteRun {
        status: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cases: parse_tap(&String::from_utf8_lossy(&out.stdout)),
    }
}

/// `ok - NAME` and `not ok - NAME` lines; others (summaries) are skipped.
/// A name seen twice gets ` #2`, ` #3`, ... so that each is its own test.
fn parse_tap(out: &str) -> Vec<(String, Result<(), String>)> {
    let mut cases: Vec<(String, Result<(), String>)> = Vec::new();
    for line in out.lines() {
        let (name, result) = if let Some(n) = line.strip_prefix("ok - ") {
            (n, Ok(()))
        } else if let Some(n) = line.strip_prefix("not ok - ") {
            (n, Err(format!("not ok - {n}")))
        } else {
            continue;
        };
        let mut unique = name.to_string();
        let mut k = 1;
        while cases.iter().any(|(c, _)| *c == unique) {
            k += 1;
            unique = format!("{name} #{k}");
        }
        cases.push((unique, result));
    }
    cases
}

/// Whether the command line's filters can select anything of `suite`.
fn selected(args: &Arguments, suite: &str) -> bool {
    let Some(filter) = &args.filter else {
        return true;
    };
    let prefix = format!("{suite}::");
    if args.exact {
        filter == suite || filter.starts_with(&prefix)
    } else {
        suite.contains(filter.as_str()) || filter.starts_with(&prefix)
    }
}

fn verdict(suite: &str, run: &SuiteRun) -> Result<(), Failed> {
    let failed: Vec<&str> = run
        .cases
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|_| n.as_str()))
        .collect();
    let mut why = Vec::new();
    if !failed.is_empty() {
        why.push(format!(
            "failing cases:\n  {suite}::{}",
            failed.join(&format!("\n  {suite}::"))
        ));
    }
    if run.status != Some(0) {
        why.push(format!("dxgtest {suite} ended with {:?}", run.status));
    }
    if run.cases.is_empty() {
        why.push(format!("dxgtest {suite} reported no case"));
    }
    if why.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}\nguest stderr:\n{}",
        why.join("\n"),
        run.stderr.trim_end()
    )
    .into())
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![Trial::test(
        "tap_lines_become_cases",
        tap_lines_become_cases,
    )];
    if args.list {
        for (suite, _) in SUITES {
            trials.push(Trial::test(*suite, || Ok(())));
        }
        libtest_mimic::run(&args, trials).exit();
    }
    // The guests of the selected suites, all at once.
    let runs: Vec<(&str, Option<SuiteRun>)> = std::thread::scope(|s| {
        let handles: Vec<_> = SUITES
            .iter()
            .map(|(suite, dxgtest_args)| {
                let run = selected(&args, suite).then(|| s.spawn(|| run_suite(dxgtest_args)));
                (*suite, run)
            })
            .collect();
        handles
            .into_iter()
            .map(|(suite, h)| (suite, h.map(|h| h.join().expect("suite thread"))))
            .collect()
    });
    for (suite, run) in runs {
        let Some(run) = run else {
            // Filtered out: listed for the filter to drop.
            trials.push(Trial::test(suite, || Ok(())));
            continue;
        };
        let result = verdict(suite, &run);
        trials.push(Trial::test(suite, move || result));
        for (case, result) in run.cases {
            trials.push(Trial::test(format!("{suite}::{case}"), move || {
                result.map_err(Failed::from)
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

/// The parser itself, a plain test beside the suites.
fn tap_lines_become_cases() -> Result<(), Failed> {
    let cases = parse_tap(
        "ok - a (EBADF)\nnot ok - b: why: detail\n# 1 passed, 1 failed\nok - a (EBADF)\n",
    );
    let want = [
        ("a (EBADF)".to_string(), Ok(())),
        (
            "b: why: detail".to_string(),
            Err("not ok - b: why: detail".to_string()),
        ),
        ("a (EBADF) #2".to_string(), Ok(())),
    ];
    if cases != want {
        return Err(format!("{cases:?}").into());
    }
    Ok(())
}
