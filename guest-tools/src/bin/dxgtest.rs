//! dxgtest: test suites run inside a guest against the real driver.
//!
//! Usage: dxgtest abuse | procs [N] | roundtrip [N] | compute [--junit FILE]

use std::process::ExitCode;

use dxvmm_guest_tools::{abuse, compute, procs, roundtrip};
use libdxg::DXG_PATH;

const USAGE: &str = "usage: dxgtest SUITE
  abuse          garbage for every adapter/device ioctl; TAP-like lines, exit 0 if all ok
  procs [N]      N processes (default 32) killed holding devices; the host must free everything
  roundtrip [N]  time N (default 10000) ioctls that reach the host; one JSON line
  compute [--junit FILE]
                 compute on the GPU through libdxg (results checked on the CPU), every
                 compute ioctl once, two processes, a killed submitter, bad input;
                 TAP-like lines, JUnit XML to FILE, exit 0 if all ok";

const MAX_PROCS: usize = 4096;

fn count(arg: Option<&String>, default: usize) -> Result<usize, String> {
    match arg {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("'{s}' is not a positive count")),
        },
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = |why: &str| {
        eprintln!("dxgtest: {why}\n{USAGE}");
        ExitCode::from(2)
    };
    let (suite, rest) = match args.split_first() {
        Some((s, rest)) => (s.as_str(), rest),
        None => return usage("no suite given"),
    };
    if matches!(suite, "-h" | "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if suite == "compute" {
        let junit = match rest {
            [] => None,
            [flag, file] if flag == "--junit" => Some(file.as_str()),
            _ => return usage("compute takes only --junit FILE"),
        };
        if !std::path::Path::new(DXG_PATH).exists() {
            eprintln!("dxgtest: {DXG_PATH} not found: is the dxgkrnl module loaded?");
            return ExitCode::FAILURE;
        }
        return if compute::run_suite(junit) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if rest.len() > 1 || (suite == "abuse" && !rest.is_empty()) {
        return usage("too many arguments");
    }
    let n = match suite {
        "abuse" => Ok(0),
        "procs" => count(rest.first(), 32).and_then(|n| {
            // Each child is a process and a host device: keep a typo from
            // becoming a fork bomb.
            if n > MAX_PROCS {
                Err(format!("at most {MAX_PROCS} processes"))
            } else {
                Ok(n)
            }
        }),
        "roundtrip" => count(rest.first(), 10_000),
        other => return usage(&format!("unknown suite '{other}'")),
    };
    let n = match n {
        Ok(n) => n,
        Err(e) => return usage(&e),
    };
    if !std::path::Path::new(DXG_PATH).exists() {
        eprintln!("dxgtest: {DXG_PATH} not found: is the dxgkrnl module loaded?");
        return ExitCode::FAILURE;
    }
    let pass = match suite {
        "abuse" => abuse::run(),
        "procs" => procs::run(n),
        _ => match roundtrip::run(n) {
            Ok(f) => {
                println!("{}", f.json(roundtrip::IOCTL));
                true
            }
            Err(e) => {
                eprintln!("dxgtest roundtrip: {e}");
                false
            }
        },
    };
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
