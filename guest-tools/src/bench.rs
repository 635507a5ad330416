//! dxgbench's workloads: the same as host-backend's benchmark (a large
//! matrix multiply, many tiny dispatches, upload and download), run in the
//! guest through libdxg, /dev/dxg and the whole GPU-PV path.

use std::time::{Duration, Instant};

use libdxg::{Bind, Buffer, Commands, Error, Gpu, Pipeline};
use serde::Serialize;
use zerocopy::IntoBytes;

use crate::shaders::{matmul_groups, matrix, MATMUL, TINY};

/// Sizes of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Matrix size of the multiply.
    pub n: u32,
    /// Multiplies and transfers per timed round.
    pub reps: u64,
    /// Tiny dispatches per timed round.
    pub tiny: u64,
    /// Transfer size in KiB (`--kib`; `--mib` sets it in MiB).
    pub kib: u64,
    /// Timed rounds per workload; the best counts.
    pub rounds: u64,
}

impl Default for Sizes {
    fn default() -> Sizes {
        Sizes {
            n: 1024,
            reps: 5,
            tiny: 10_000,
            kib: 64 << 10,
            rounds: 3,
        }
    }
}

/// One workload's result: one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: &'static str,
    /// What the figure counts.
    pub unit: &'static str,
    pub value: f64,
    /// Best round's wall time.
    pub seconds: f64,
    pub n: u32,
    pub reps: u64,
    pub tiny: u64,
    pub bytes: u64,
    /// Transfers: of `seconds`, the CPU's own copy (upload: writing the
    /// mapped pages; download: reading them out), the rest being the
    /// device's (UNLOCK2 or LOCK2, the submission, the GPU's copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
}

fn best(rounds: u64, mut f: impl FnMut() -> Result<Duration, Error>) -> Result<f64, Error> {
    best_split(rounds, || Ok((f()?, Duration::ZERO))).map(|(t, _)| t)
}

/// As [`best`], for rounds timed as (all, a part of it): the best round's
/// pair.
fn best_split(
    rounds: u64,
    mut f: impl FnMut() -> Result<(Duration, Duration), Error>,
) -> Result<(f64, f64), Error> {
    let mut t = (Duration::MAX, Duration::ZERO);
    for _ in 0..rounds.max(1) {
        let r = f()?;
        if r.0 < t.0 {
            t = r;
        }
    }
    Ok((t.0.as_secs_f64(), t.1.as_secs_f64()))
}

fn check(what: &str, ok: bool) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::Range(format!("{what}: wrong result")))
    }
}

/// GFLOP/s of `reps` n x n multiplies submitted back to back.
pub fn matmul(gpu: &Gpu, sz: Sizes) -> Result<Row, Error> {
    let n = sz.n;
    let a = matrix(n as usize, 1);
    let b = matrix(n as usize, 2);
    let ba = Buffer::with_data(gpu, a.as_bytes())?;
    let bb = Buffer::with_data(gpu, b.as_bytes())?;
    let mut bc = Buffer::new(gpu, u64::from(n) * u64::from(n) * 4)?;
    let dims = Buffer::with_data(gpu, [n, 0, 0, 0].as_bytes())?;
    let p = Pipeline::from_wgsl(gpu, MATMUL, "main")?;
    let mut c = Commands::new();
    c.dispatch(
        &p,
        matmul_groups(n),
        &[
            Bind::ro(0, &ba.all()),
            Bind::ro(1, &bb.all()),
            Bind::rw(2, &bc.all()),
            Bind::ro(3, &dims.all()),
        ],
    );
    // Warm-up: uploads, pipeline compilation.
    let v = gpu.submit(&c)?;
    gpu.wait(v, None)?;
    let secs = best(sz.rounds, || {
        let t = Instant::now();
        let mut v = 0;
        for _ in 0..sz.reps {
            v = gpu.submit(&c)?;
        }
        gpu.wait(v, None)?;
        Ok(t.elapsed())
    })?;
    // Row 0 of C against the CPU.
    let n_us = n as usize;
    let mut want = vec![0.0f32; n_us];
    for (k, &aik) in a[..n_us].iter().enumerate() {
        for (j, w) in want.iter_mut().enumerate() {
            *w += aik * b[k * n_us + j];
        }
    }
    let got = bc.read_f32s()?;
    check("matmul", got[..n_us] == want[..])?;
    let flops = 2.0 * f64::from(n).powi(3) * sz.reps as f64;
    Ok(Row {
        workload: "matmul",
        unit: "GFLOP/s",
        value: flops / secs / 1e9,
        seconds: secs,
        n,
        reps: sz.reps,
        tiny: 0,
        bytes: 0,
        cpu_seconds: None,
    })
}

/// Submits per second of one one-invocation dispatch each.
pub fn tiny(gpu: &Gpu, sz: Sizes) -> Result<Row, Error> {
    let mut x = Buffer::new(gpu, 256)?;
    let p = Pipeline::from_wgsl(gpu, TINY, "main")?;
    let mut c = Commands::new();
    c.dispatch(&p, [1, 1, 1], &[Bind::rw(0, &x.all())]);
    let v = gpu.submit(&c)?;
    gpu.wait(v, None)?;
    let secs = best(sz.rounds, || {
        let t = Instant::now();
        let mut v = 0;
        for _ in 0..sz.tiny {
            v = gpu.submit(&c)?;
        }
        gpu.wait(v, None)?;
        Ok(t.elapsed())
    })?;
    let count = x.read_u32s()?[0];
    let want = sz.tiny * sz.rounds.max(1) + 1;
    if u64::from(count) != want {
        return Err(Error::Range(format!(
            "tiny dispatches: the counter is {count}, want {want}"
        )));
    }
    Ok(Row {
        workload: "tiny",
        unit: "submits/s",
        value: sz.tiny as f64 / secs,
        seconds: secs,
        n: 0,
        reps: 0,
        tiny: sz.tiny,
        bytes: 0,
        cpu_seconds: None,
    })
}

/// Upload and download bandwidth (GB/s) through the LOCK2 mapping of one
/// buffer of `kib` KiB.
pub fn transfers(gpu: &Gpu, sz: Sizes) -> Result<(Row, Row), Error> {
    let bytes = sz.kib << 10;
    let mut big = Buffer::new(gpu, bytes)?;
    let sink = Buffer::new(gpu, 4096)?;
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    // Upload: the CPU writes the mapped pages, the submit's UNLOCK2 makes
    // them the truth, and the GPU's first use takes them.
    let mut use_big = Commands::new();
    use_big.copy(&big.range(0, 4)?, &sink.range(0, 4)?)?;
    big.write_at(0, &data)?;
    let v = gpu.submit(&use_big)?;
    gpu.wait(v, None)?;
    let up = best_split(sz.rounds, || {
        let t = Instant::now();
        let mut cpu = Duration::ZERO;
        for _ in 0..sz.reps {
            let w = Instant::now();
            big.write_at(0, &data)?;
            cpu += w.elapsed();
            let v = gpu.submit(&use_big)?;
            gpu.wait(v, None)?;
        }
        Ok((t.elapsed(), cpu))
    })?;
    // Download: the GPU writes, LOCK2 brings it into the pages, the CPU
    // copies it out. Only the transfer is timed.
    let mut out = vec![0u8; bytes as usize];
    let mut fill = Commands::new();
    fill.fill(&big.all(), 0x0101_0101);
    let down = best_split(sz.rounds, || {
        let mut t = Duration::ZERO;
        let mut cpu = Duration::ZERO;
        for _ in 0..sz.reps {
            let v = gpu.submit(&fill)?;
            gpu.wait(v, None)?;
            let start = Instant::now();
            let pages = big.read()?;
            let c = Instant::now();
            out.copy_from_slice(pages);
            cpu += c.elapsed();
            t += start.elapsed();
        }
        Ok((t, cpu))
    })?;
    check("download", out.iter().all(|&b| b == 1))?;
    let gb = (bytes * sz.reps) as f64 / 1e9;
    let row = |workload, (secs, cpu): (f64, f64)| Row {
        workload,
        unit: "GB/s",
        value: gb / secs,
        seconds: secs,
        n: 0,
        reps: sz.reps,
        tiny: 0,
        bytes,
        cpu_seconds: Some(cpu),
    };
    Ok((row("upload", up), row("download", down)))
}

/// Every workload in order.
pub fn run_all(gpu: &Gpu, sz: Sizes) -> Result<Vec<Row>, Error> {
    let mut rows = vec![matmul(gpu, sz)?, tiny(gpu, sz)?];
    let (up, down) = transfers(gpu, sz)?;
    rows.push(up);
    rows.push(down);
    Ok(rows)
}
