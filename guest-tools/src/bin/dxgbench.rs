//! dxgbench: compute benchmarks inside the guest, through libdxg and the
//! whole GPU-PV path: the same workloads as host-backend's benchmark, so a
//! host-side run (vmm's `dxgbench` bench) can print guest/native ratios.
//!
//! Usage: dxgbench [--json] [--n N] [--reps R] [--tiny T] [--mib M] [--rounds K]
//! Defaults come from DXVMM_BENCH_N, _REPS, _TINY, _MIB, _ROUNDS, else
//! 1024, 5, 10000, 64, 3.

use std::process::ExitCode;

use dxvmm_guest_tools::bench::{self, Sizes};
use libdxg::{Gpu, DXG_PATH};

const USAGE: &str = "usage: dxgbench [--json] [--n N] [--reps R] [--tiny T] [--mib M] [--rounds K]
  matrix multiply (GFLOP/s), tiny dispatches (submits/s), upload and download (GB/s);
  --json prints one JSON object per workload";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn parse(args: &[String]) -> Result<(bool, Sizes), String> {
    let d = Sizes::default();
    let mut sz = Sizes {
        n: env("DXVMM_BENCH_N", d.n.into()).clamp(16, 8192) as u32,
        reps: env("DXVMM_BENCH_REPS", d.reps).max(1),
        tiny: env("DXVMM_BENCH_TINY", d.tiny).max(1),
        mib: env("DXVMM_BENCH_MIB", d.mib).max(1),
        rounds: env("DXVMM_BENCH_ROUNDS", d.rounds).max(1),
    };
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--json" {
            json = true;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{a} needs a value"))?
            .parse::<u64>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("{a} needs a positive number"))?;
        match a.as_str() {
            "--n" if v <= 8192 => sz.n = v as u32,
            "--reps" => sz.reps = v,
            "--tiny" => sz.tiny = v,
            "--mib" if v <= 1024 => sz.mib = v,
            "--rounds" => sz.rounds = v,
            "--n" | "--mib" => return Err(format!("{a} {v} is too large")),
            _ => return Err(format!("unknown argument '{a}'")),
        }
    }
    Ok((json, sz))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (json, sz) = match parse(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("dxgbench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !std::path::Path::new(DXG_PATH).exists() {
        eprintln!("dxgbench: {DXG_PATH} not found: is the dxgkrnl module loaded?");
        return ExitCode::FAILURE;
    }
    let run = || -> Result<Vec<bench::Row>, libdxg::Error> {
        let gpu = Gpu::open()?;
        if !json {
            println!("adapter: {}", gpu.info().name());
        }
        bench::run_all(&gpu, sz)
    };
    match run() {
        Ok(rows) => {
            for r in rows {
                if json {
                    match serde_json::to_string(&r) {
                        Ok(line) => println!("{line}"),
                        Err(e) => {
                            eprintln!("dxgbench: {e}");
                            return ExitCode::FAILURE;
                        }
                    }
                } else {
                    println!(
                        "{:<10} {:>12.2} {:<10} ({:.3} s)",
                        r.workload, r.value, r.unit, r.seconds
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dxgbench: {e}");
            ExitCode::FAILURE
        }
    }
}
