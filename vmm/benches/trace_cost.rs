//! What `--trace` costs a guest: the guest's compute benchmark (`dxgbench`,
//! host-backend's workloads through the whole GPU-PV path) in UML guests
//! with and without recording, alternating, in one run; the best of each
//! side per workload and the ratio traced / plain (goal: >= 0.95).
//!
//!   cargo bench -p dxvmm --bench trace_cost
//!
//! Sizes: DXVMM_TRACE_BENCH_ARGS (dxgbench arguments, default
//! "--n 256 --reps 3 --tiny 2000 --mib 16 --rounds 2"), DXVMM_TRACE_BENCH_ROUNDS
//! (guest runs per side, default 3).

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
        .unwrap_or(3);
    let trace =
        std::env::temp_dir().join(format!("dxvmm-trace-cost-{}.dxtrace", std::process::id()));
    let mut plain: BTreeMap<String, (String, f64)> = BTreeMap::new();
    let mut traced: BTreeMap<String, (String, f64)> = BTreeMap::new();
    let mut size = 0;
    for _ in 0..rounds {
        for (side, t) in [(&mut plain, None), (&mut traced, Some(trace.as_path()))] {
            for (w, (u, v)) in run(t, &args) {
                let e = side.entry(w).or_insert((u, 0.0));
                e.1 = e.1.max(v);
            }
        }
        size = std::fs::metadata(&trace).map_or(0, |m| m.len());
    }
    let _ = std::fs::remove_file(&trace);
    println!(
        "dxgbench {} in a UML guest, best of {rounds} runs each (trace: {size} bytes)",
        args.join(" ")
    );
    println!(
        "{:<10} {:>14} {:>14} {:>10}  unit",
        "workload", "plain", "--trace", "ratio"
    );
    for (w, (u, p)) in &plain {
        let t = traced.get(w).map_or(0.0, |x| x.1);
        println!("{w:<10} {p:>14.3} {t:>14.3} {:>10.3}  {u}", t / p);
    }
}
