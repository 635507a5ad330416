//! What the recorder costs the device thread, message by message: records a
//! trace's frames again, in order, into a new trace (guest memory rebuilt
//! from the trace's own input records as they come), timing each
//! `observe` call. No guest, no GPU: the recorder alone.
//!
//!   cargo run --release -p dxvmm-trace --example record_cost -- TRACE [ROUNDS]
//!
//! Prints the mean time per call for each direction and command, best of
//! ROUNDS (default 3) re-recordings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use device_dxg::{Direction, FrameObserver};
use dxvmm_protocol::message::command_name;
use dxvmm_trace::format::MemoryPurpose;
use dxvmm_trace::{read_all, Record, RecordOptions, Recorder};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// (direction, command) -> (calls, time in them).
type Calls = BTreeMap<(String, String), (u64, Duration)>;

/// The command's name in a request frame (its command header's channel
/// and command words).
fn command(frame: &[u8]) -> String {
    let word = |at: usize| {
        frame
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match (word(32 + 12), word(32 + 16)) {
        (Some(channel), Some(command)) => command_name(channel & 0xff, command)
            .unwrap_or("?")
            .to_string(),
        _ => "?".into(),
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().ok_or("usage: record_cost TRACE [ROUNDS]")?);
    let rounds: usize = args
        .next()
        .map_or(Ok(3), |r| r.parse())
        .map_err(|e| format!("{e}"))?;
    let (header, records) = read_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let regions = records
        .iter()
        .find_map(|l| match &l.record {
            Record::Layout { regions, .. } => Some(regions.clone()),
            _ => None,
        })
        .ok_or("the trace has no memory layout")?;
    let ranges: Vec<(GuestAddress, usize)> = regions
        .iter()
        .map(|&(start, len)| (GuestAddress(start), len as usize))
        .collect();
    let out = std::env::temp_dir().join(format!("record_cost-{}.dxtrace", std::process::id()));
    let mut best: Option<(Duration, Calls)> = None;
    for _ in 0..rounds {
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).map_err(|e| e.to_string())?;
        let recorder = Recorder::create_with(&out, &header, RecordOptions::default())
            .map_err(|e| e.to_string())?;
        let mut calls = Calls::new();
        let mut total = Duration::ZERO;
        let mut last = String::new();
        for l in &records {
            let (direction, frame, name) = match &l.record {
                Record::Memory {
                    purpose: MemoryPurpose::Input,
                    gpa,
                    bytes,
                    ..
                } => {
                    mem.write_slice(bytes, GuestAddress(*gpa))
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                Record::Request { frame, .. } => {
                    last = command(frame);
                    (Direction::Request, frame, ("request", last.clone()))
                }
                Record::Reply { frame, .. } => (Direction::Reply, frame, ("reply", last.clone())),
                Record::Event { frame, .. } => (Direction::Event, frame, ("event", String::new())),
                _ => continue,
            };
            let t = Instant::now();
            recorder.observe(direction, frame, Some(&mem));
            let took = t.elapsed();
            total += took;
            let e = calls.entry((name.0.to_string(), name.1)).or_default();
            e.0 += 1;
            e.1 += took;
        }
        recorder.finish().map_err(|e| e.to_string())?;
        if best.as_ref().is_none_or(|(b, _)| total < *b) {
            best = Some((total, calls));
        }
    }
    let _ = std::fs::remove_file(&out);
    let (total, calls) = best.ok_or("no rounds")?;
    println!(
        "{:<10} {:<32} {:>8} {:>10}",
        "direction", "command", "calls", "us/call"
    );
    for ((direction, name), (n, t)) in &calls {
        println!(
            "{direction:<10} {name:<32} {n:>8} {:>10.2}",
            t.as_secs_f64() * 1e6 / *n as f64
        );
    }
    println!("total: {:.3} ms in the recorder", total.as_secs_f64() * 1e3);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("record_cost: {e}");
            ExitCode::FAILURE
        }
    }
}
