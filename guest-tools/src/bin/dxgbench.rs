//! dxgbench: compute benchmarks inside the guest, through libdxg and the
//! whole GPU-PV path: the same workloads as host-backend's benchmark, so a
//! host-side run (vmm's `dxgbench` bench) can print guest/native ratios.
//!
//! Usage: dxgbench [--json] [--n N] [--reps R] [--tiny T] [--mib M | --kib K] [--rounds K]
//! Defaults come from DXVMM_BENCH_N, _REPS, _TINY, _MIB (or _KIB), _ROUNDS,
//! else 1024, 5, 10000, 64 MiB, 3. `--kib` exists for traces small enough
//! to keep (trace/corpus/): a MiB goes each way per transfer.

use std::process::ExitCode;

use dxvmm_guest_tools::bench::{self, Sizes};
use libdxg::{Gpu, DXG_PATH};

const USAGE: &str =
    "usage: dxgbench [--json] [--n N] [--reps R] [--tiny T] [--mib M | --kib K] [--rounds K]
  matrix multiply (GFLOP/s), tiny dispatches (submits/s), upload and download (GB/s)
  of M MiB (or K KiB; the last one given counts); --json prints one JSON object per workload";

/// Largest transfer: 1 GiB.
const MAX_KIB: u64 = 1 << 20;

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
        kib: match std::env::var("DXVMM_BENCH_KIB") {
            Ok(_) => env("DXVMM_BENCH_KIB", d.kib),
            Err(_) => env("DXVMM_BENCH_MIB", d.kib >> 10).saturating_mul(1024),
        }
        .clamp(1, MAX_KIB),
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
            "--mib" if v <= MAX_KIB >> 10 => sz.kib = v << 10,
            "--kib" if v <= MAX_KIB => sz.kib = v,
            "--rounds" => sz.rounds = v,
            "--n" | "--mib" | "--kib" => return Err(format!("{a} {v} is too large")),
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
                    let cpu = r
                        .cpu_seconds
                        .map(|c| format!(", the CPU's copy {c:.3} s"))
                        .unwrap_or_default();
                    println!(
                        "{:<10} {:>12.2} {:<10} ({:.3} s{cpu})",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn transfer_sizes_in_mib_or_kib_the_last_one_counts() {
        assert_eq!(parse(&args("--mib 2")).unwrap().1.kib, 2048);
        assert_eq!(parse(&args("--kib 64")).unwrap().1.kib, 64);
        assert_eq!(parse(&args("--mib 2 --kib 8")).unwrap().1.kib, 8);
        assert_eq!(parse(&args("--kib 8 --mib 1")).unwrap().1.kib, 1024);
        assert!(parse(&args("--kib 0")).is_err());
        assert!(parse(&args("--kib 1048577"))
            .unwrap_err()
            .contains("too large"));
        assert!(parse(&args("--mib 1025"))
            .unwrap_err()
            .contains("too large"));
    }
}
