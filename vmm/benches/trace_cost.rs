//! What `--trace` costs a guest: the guest's compute benchmark (`dxgbench`,
//! host-backend's workloads through the whole GPU-PV path) in UML guests
//! with and without recording, alternating, in one run; per workload the
//! best of each side and their ratio traced / plain (goal: >= 0.95), and the
//! median and range of the rounds' own ratios (each round runs both sides
//! back to back, so the machine's drift between rounds cancels out).
//!
//!   cargo bench -p dxvmm --bench trace_cost
//!
//! Sizes: DXVMM_TRACE_BENCH_ARGS (dxgbench arguments, default
//! "--n 256 --reps 3 --tiny 2000 --mib 16 --rounds 2"), DXVMM_TRACE_BENCH_ROUNDS
//! (guest runs per side, default 5).

use std::collections::BTreeMap;
use std::process::Command;

fn run(trace: Option<&std::path::Path>, args: &[String]) -> BTreeMap<String, (String, f64)> {
    // $DXVMM_BIN: the dxvmm to run, for a machine without the build tree.
    let dxvmm = std::env::var("DXVMM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dxvmm").into());
    let mut c = Command::new(dxvmm);
    c.env_remove("RUST_LOG")
        .args(["run", "--accel", "uml", "--timeout", "600"]);
    if let Some(t) = trace {
        c.arg("--trace").arg(t);
    }
    let out = c
        .arg("--")
        .arg("dxgbench")
        .arg("--json")
        .args(args)
        .output()
        .expect("spawn dxvmm");
    assert!(
        out.status.success(),
        "dxgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(w), Some(u), Some(x)) = (
            v["workload"].as_str(),
            v["unit"].as_str(),
            v["value"].as_f64(),
        ) {
            m.insert(w.to_string(), (u.to_string(), x));
        }
    }
    m
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let args: Vec<String> = std::env::var("DXVMM_TRACE_BENCH_ARGS")
        .unwrap_or_else(|_| "--n 256 --reps 3 --tiny 2000 --mib 16 --rounds 2".into())
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let rounds: usize = std::env::var("DXVMM_TRACE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let trace =
        std::env::temp_dir().join(format!("dxvmm-trace-cost-{}.dxtrace", std::process::id()));
    // Per workload: its unit and each round's (plain, traced) values.
    let mut runs: BTreeMap<String, (String, Vec<(f64, f64)>)> = BTreeMap::new();
    let mut size = 0;
    for round in 0..rounds {
        // Which side goes first alternates, so that neither always runs on
        // a machine the other has just warmed (or heated).
        let traced_first = round % 2 == 1;
        let mut plain = BTreeMap::new();
        let mut traced = BTreeMap::new();
        for side in [traced_first, !traced_first] {
            if side {
                traced = run(Some(trace.as_path()), &args);
            } else {
                plain = run(None, &args);
            }
        }
        for (w, (u, p)) in plain {
            let t = traced.get(&w).map_or(0.0, |x| x.1);
            runs.entry(w).or_insert((u, Vec::new())).1.push((p, t));
        }
        size = std::fs::metadata(&trace).map_or(0, |m| m.len());
    }
    let _ = std::fs::remove_file(&trace);
    println!(
        "dxgbench {} in a UML guest, {rounds} rounds of one run each side (trace: {size} bytes)",
        args.join(" ")
    );
    println!(
        "{:<10} {:>12} {:>12} {:>7} {:>8} {:>13}  unit",
        "workload", "plain best", "traced best", "ratio", "median", "round ratios"
    );
    for (w, (u, pairs)) in &runs {
        let best = |f: fn(&(f64, f64)) -> f64| pairs.iter().map(f).fold(0.0, f64::max);
        let (p, t) = (best(|x| x.0), best(|x| x.1));
        let mut ratios: Vec<f64> = pairs.iter().map(|(p, t)| t / p).collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        let range = format!("{:.2}-{:.2}", ratios[0], ratios[ratios.len() - 1]);
        println!(
            "{w:<10} {p:>12.3} {t:>12.3} {:>7.3} {median:>8.3} {range:>13}  {u}",
            t / p
        );
    }
}
