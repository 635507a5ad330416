//! Guest vs native compute, in one run: the workloads of dxgbench (a large
//! matrix multiply, many tiny dispatches, upload and download) directly on
//! wgpu on the host's default adapter, then `dxgbench --json` with the same
//! sizes in a UML guest (libdxg, /dev/dxg, the virtio-dxg device, the wgpu
//! backend on the same adapter), and the ratio guest / native.
//!
//! Sizes (environment, passed to the guest as arguments):
//!   DXVMM_BENCH_N      matrix size of the multiply (default 1024)
//!   DXVMM_BENCH_REPS   multiplies and transfers per round (default 20: at 5,
//!                      a round of 1024x1024 multiplies is 4.5 ms of an H100's
//!                      time, and the guest's fixed cost to start and finish
//!                      a burst of work, not its throughput, set the ratio)
//!   DXVMM_BENCH_TINY   tiny dispatches, one submit each (default 10000)
//!   DXVMM_BENCH_MIB    transfer size in MiB (default 64)
//!   DXVMM_BENCH_ROUNDS rounds per workload; each side's best counts (default 3)
//!   DXVMM_BENCH_GUEST_ENV  NAME=VALUE words for dxgbench's environment in
//!                      the guest (say DXG_UPLOAD_PIECES=0, libdxg's knob)
//!
//! `images/build.sh` first (the guest needs dxgbench), then
//! `cargo bench -p dxvmm --bench dxgbench`; `DXVMM_BENCH_N=256
//! DXVMM_BENCH_TINY=1000 DXVMM_BENCH_MIB=8` makes it quick.
//! Goals: >= 95% of native on the multiply, >= 50% on tiny submits, >= 80%
//! on bandwidth.

use std::process::Command;
use std::time::{Duration, Instant};

// The same native code as host-backend's benchmark.
#[path = "../../host-backend/tests/common/direct.rs"]
mod direct;
use direct::Direct;

// The guest's own shaders, so both sides run exactly the same work.
use dxvmm_guest_tools::shaders::{MATMUL, TINY};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

struct Sizes {
    n: u32,
    reps: u64,
    tiny: u64,
    mib: u64,
    rounds: u64,
}

/// The native side: our own wgpu device on the adapter the guest's GPU is
/// (the host backend's default: the first of `dxvmm gpus`).
fn native_device() -> (Direct, String) {
    let name = dxvmm_host_backend::host_adapters()
        .first()
        .map(|a| a.name.clone())
        .expect("a Vulkan adapter on the host");
    (Direct::new(&name), name)
}

fn best(rounds: u64, mut f: impl FnMut() -> Duration) -> f64 {
    (0..rounds)
        .map(|_| f())
        .min()
        .unwrap_or(Duration::MAX)
        .as_secs_f64()
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// (workload, unit, value) of the native side, in dxgbench's order.
fn native(sz: &Sizes) -> Vec<(&'static str, &'static str, f64)> {
    let (d, name) = native_device();
    println!("adapter: {name}");
    let mut rows = Vec::new();

    let n = sz.n;
    let elems = u64::from(n) * u64::from(n);
    let a: Vec<f32> = (0..elems).map(|i| (i % 13) as f32 - 6.0).collect();
    let da = d.buffer(elems * 4);
    let db = d.buffer(elems * 4);
    let dc = d.buffer(elems * 4);
    let dd = d.buffer(16);
    d.queue.write_buffer(&da, 0, &bytes_of(&a));
    d.queue.write_buffer(&db, 0, &bytes_of(&a));
    d.queue
        .write_buffer(&dd, 0, &[n.to_le_bytes(), [0; 4], [0; 4], [0; 4]].concat());
    let p = d.pipeline(MATMUL);
    let bg = d.bind(&p, &[&da, &db, &dc, &dd]);
    let groups = [n.div_ceil(16), n.div_ceil(16), 1];
    d.dispatch(&p, &bg, groups);
    d.wait();
    let secs = best(sz.rounds, || {
        let t = Instant::now();
        for _ in 0..sz.reps {
            d.dispatch(&p, &bg, groups);
        }
        d.wait();
        t.elapsed()
    });
    let flops = 2.0 * f64::from(n).powi(3) * sz.reps as f64;
    rows.push(("matmul", "GFLOP/s", flops / secs / 1e9));

    let x = d.buffer(256);
    let p = d.pipeline(TINY);
    let bg = d.bind(&p, &[&x]);
    d.dispatch(&p, &bg, [1, 1, 1]);
    d.wait();
    let secs = best(sz.rounds, || {
        let t = Instant::now();
        for _ in 0..sz.tiny {
            d.dispatch(&p, &bg, [1, 1, 1]);
        }
        d.wait();
        t.elapsed()
    });
    rows.push(("tiny", "submits/s", sz.tiny as f64 / secs));

    // Upload: the bytes into the GPU buffer and a small use of it; the
    // guest writes its mapped pages and submits a small copy.
    let bytes = sz.mib << 20;
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let big = d.buffer(bytes);
    let sink = d.buffer(4096);
    let staging = d.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let copy_small = || {
        let mut enc = d.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&big, 0, &sink, 0, 4);
        d.queue.submit([enc.finish()]);
    };
    d.queue.write_buffer(&big, 0, &data);
    copy_small();
    d.wait();
    let up = best(sz.rounds, || {
        let t = Instant::now();
        for _ in 0..sz.reps {
            d.queue.write_buffer(&big, 0, &data);
            copy_small();
            d.wait();
        }
        t.elapsed()
    });
    // Download: the GPU writes (untimed), then to a mapped staging buffer
    // and into a CPU vector; the guest: LOCK2 and a copy out of the pages.
    let mut out = vec![0u8; bytes as usize];
    let down = best(sz.rounds, || {
        let mut t = Duration::ZERO;
        for _ in 0..sz.reps {
            let mut enc = d.device.create_command_encoder(&Default::default());
            enc.clear_buffer(&big, 0, None);
            d.queue.submit([enc.finish()]);
            d.wait();
            let start = Instant::now();
            let mut enc = d.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&big, 0, &staging, 0, bytes);
            d.queue.submit([enc.finish()]);
            staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
            d.wait();
            out.copy_from_slice(&staging.get_mapped_range(..).expect("mapped"));
            staging.unmap();
            t += start.elapsed();
        }
        t
    });
    let gb = (bytes * sz.reps) as f64 / 1e9;
    rows.push(("upload", "GB/s", gb / up));
    rows.push(("download", "GB/s", gb / down));
    rows
}

/// dxgbench in a UML guest: (workload, value) per JSON line.
/// `env NAME=VALUE...` before the guest's command, from
/// $DXVMM_BENCH_GUEST_ENV; nothing when it is unset or empty.
fn guest_env() -> Vec<String> {
    let words: Vec<String> = std::env::var("DXVMM_BENCH_GUEST_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if words.is_empty() {
        return words;
    }
    std::iter::once("env".to_string()).chain(words).collect()
}

fn guest(sz: &Sizes) -> Vec<(String, f64)> {
    let memory = format!("{}M", 512 + 3 * sz.mib);
    let args = [
        "--n".to_string(),
        sz.n.to_string(),
        "--reps".into(),
        sz.reps.to_string(),
        "--tiny".into(),
        sz.tiny.to_string(),
        "--mib".into(),
        sz.mib.to_string(),
        "--rounds".into(),
        sz.rounds.to_string(),
    ];
    // $DXVMM_BIN: the dxvmm to run, for a machine without the build tree.
    let dxvmm = std::env::var("DXVMM_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dxvmm").into());
    let out = Command::new(dxvmm)
        .env_remove("RUST_LOG")
        .args([
            "run",
            "--accel",
            "uml",
            "--memory",
            &memory,
            "--timeout",
            "1800",
        ])
        .arg("--")
        .args(guest_env())
        .args(["dxgbench", "--json"])
        .args(&args)
        .output()
        .expect("spawn dxvmm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dxgbench in the guest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["workload"].as_str()?.to_string(), v["value"].as_f64()?)))
        .collect()
}

fn main() {
    // `cargo bench` passes --bench; a filter argument selects nothing here.
    let sz = Sizes {
        n: env("DXVMM_BENCH_N", 1024).min(8192) as u32,
        reps: env("DXVMM_BENCH_REPS", 20),
        tiny: env("DXVMM_BENCH_TINY", 10_000),
        mib: env("DXVMM_BENCH_MIB", 64).min(1024),
        rounds: env("DXVMM_BENCH_ROUNDS", 3),
    };
    println!(
        "sizes: matmul {n}x{n} x{reps}, {tiny} tiny dispatches, {mib} MiB transfers x{reps}; best of {rounds} rounds",
        n = sz.n,
        reps = sz.reps,
        tiny = sz.tiny,
        mib = sz.mib,
        rounds = sz.rounds
    );
    let native = native(&sz);
    let guest = guest(&sz);
    let goal = |w: &str| match w {
        "matmul" => 95.0,
        "tiny" => 50.0,
        _ => 80.0,
    };
    println!();
    println!(
        "{:<10} {:>14} {:>14} {:>9} {:>6}  unit",
        "workload", "guest", "native", "ratio", "goal"
    );
    for (w, unit, nv) in native {
        let gv = guest
            .iter()
            .find(|(g, _)| g == w)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN);
        println!(
            "{:<10} {:>14.2} {:>14.2} {:>8.1}% {:>5.0}%  {}",
            w,
            gv,
            nv,
            100.0 * gv / nv,
            goal(w),
            unit
        );
    }
}
