//! `dxvmm run --trace` and `dxvmm trace ...`: the command-line side of
//! dxvmm-trace (docs/trace.md).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use dxvmm_host_backend::{Backend, SoftBackend, WgpuBackend};
use dxvmm_trace::{pcapng, replay, show, RecordOptions, Recorder, TraceHeader};

use crate::cli::{ReplayBackend, TraceCommand};
use crate::exit;
use crate::GpuConfig;

/// Set to 0 or 1: whether large LOCK2 results are read as they land
/// ([`RecordOptions::early_results`]; by default on hosts with 8 CPUs or
/// more). For measuring what it changes.
pub const EARLY_ENV: &str = "DXVMM_TRACE_EARLY";

/// Set to 0 or 1: whether large inputs are handed to helpers as their
/// request arrives ([`RecordOptions::early_inputs`]; off by default). For
/// measuring what it changes.
pub const EARLY_INPUTS_ENV: &str = "DXVMM_TRACE_EARLY_INPUTS";

/// Set to a number: the threads a large capture is split over
/// ([`RecordOptions::threads`]; by default the host's CPUs less one, at
/// most 8). For measuring and testing.
pub const THREADS_ENV: &str = "DXVMM_TRACE_THREADS";

/// Starts recording what the guest's GPU device sees to `path`.
pub fn recorder(path: &Path, gpu: &GpuConfig) -> Result<Arc<Recorder>, dxvmm_trace::TraceError> {
    let all = gpu.backend.adapters();
    let shown: Vec<_> = gpu
        .luids
        .iter()
        .filter_map(|l| all.iter().find(|a| a.luid == *l).cloned())
        .collect();
    let header = TraceHeader::new(&shown, concat!("dxvmm ", env!("CARGO_PKG_VERSION")));
    let mut options = RecordOptions::default();
    if let Some(v) = std::env::var_os(EARLY_ENV) {
        options.early_results = v != "0";
    }
    if let Some(n) = std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        options.threads = n.clamp(1, dxvmm_trace::recorder::MAX_THREADS);
    }
    if let Some(v) = std::env::var_os(EARLY_INPUTS_ENV) {
        options.early_inputs = v != "0";
    }
    Recorder::create_with(path, &header, options)
}

/// Ends the recording (after the guest stopped).
pub fn finish(recorder: &Recorder, path: &Path) {
    match recorder.finish() {
        Ok(s) => tracing::info!(
            "trace: {} records, {} bytes in {} ({} waits for the writer, {} LOCK2 results skipped: no submit wrote them, {} read as they landed); \
             the device thread spent {:.3} s recording, {:.3} s of it waiting for input captures ({:.3} s on the writer) and {:.3} s capturing LOCK2 results",
            s.records,
            s.bytes,
            path.display(),
            s.waits,
            s.results_skipped,
            s.results_read_early,
            s.spent.total.as_secs_f64(),
            s.spent.settling.as_secs_f64(),
            s.spent.input_captures.as_secs_f64(),
            s.spent.results.as_secs_f64(),
        ),
        Err(e) => eprintln!("dxvmm: --trace: {e}"),
    }
}

/// What is wrong with trace `file`, naming the file once (an I/O error
/// names it already).
fn named(file: &Path, e: &dxvmm_trace::TraceError) -> String {
    match e {
        dxvmm_trace::TraceError::Io { .. } => e.to_string(),
        _ => format!("{}: {e}", file.display()),
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("dxvmm: {e}");
    ExitCode::from(exit::DXVMM_ERROR)
}

/// Output to a closed pipe (`| head`) ends quietly.
fn written(r: std::io::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Reads a trace; a damaged one is still shown up to the damage, then
/// named in one line.
fn load(file: &Path) -> Result<(TraceHeader, Vec<dxvmm_trace::Located>, Option<String>), ExitCode> {
    let mut reader = dxvmm_trace::TraceReader::open(file).map_err(|e| fail(named(file, &e)))?;
    let mut records = Vec::new();
    let mut damage = None;
    for r in &mut reader {
        match r {
            Ok(l) => records.push(l),
            Err(e) => damage = Some(named(file, &e)),
        }
    }
    Ok((reader.header.clone(), records, damage))
}

pub fn run(command: TraceCommand) -> ExitCode {
    match command {
        TraceCommand::Show {
            file,
            json,
            process,
            command,
            all,
        } => {
            let (header, records, damage) = match load(&file) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let filter = show::Filter {
                process,
                command,
                all,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let r =
                show::show(&mut out, &header, &records, &filter, json).and_then(|()| out.flush());
            let code = written(r);
            match damage {
                Some(d) => fail(d),
                None => code,
            }
        }
        TraceCommand::Stats { file, json } => {
            let (_, records, damage) = match load(&file) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let s = show::stats(&records);
            let mut out = std::io::stdout().lock();
            let code = written(show::write_stats(&mut out, &s, json));
            match damage {
                Some(d) => fail(d),
                None => code,
            }
        }
        TraceCommand::Replay {
            file,
            backend,
            gpu,
            json,
        } => {
            let (header, records) = match dxvmm_trace::read_all(&file) {
                Ok(v) => v,
                Err(e) => return fail(named(&file, &e)),
            };
            let backend: Arc<dyn Backend> = match backend {
                ReplayBackend::Soft => Arc::new(SoftBackend::new()),
                ReplayBackend::Wgpu => match WgpuBackend::new() {
                    Ok(b) => Arc::new(b),
                    Err(e) => return fail(format_args!("replay: {e}")),
                },
            };
            let adapters = match gpu {
                None => None,
                Some(sel) => match sel.resolve(&backend.adapters()) {
                    Ok(l) => Some(l),
                    Err(e) => return fail(format_args!("--gpu: {e}")),
                },
            };
            let opts = replay::Options {
                adapters,
                ..Default::default()
            };
            let report = match replay::replay(&header, &records, backend, &opts) {
                Ok(r) => r,
                Err(e) => return fail(format_args!("replay: {e}")),
            };
            if json {
                println!("{}", report.to_json());
            } else {
                println!(
                    "replayed {} requests on {}: {} replies and {} memory results ({} bytes) compared, {} CPU waits",
                    report.requests,
                    report.adapters.join(", "),
                    report.replies_compared,
                    report.memory_results_compared,
                    report.memory_bytes_compared,
                    report.waits
                );
                match &report.divergence {
                    None => println!("no divergence"),
                    Some(d) => println!("divergence at {d}"),
                }
            }
            if report.divergence.is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        TraceCommand::Diff {
            a,
            b,
            skip,
            max,
            json,
        } => {
            let read = |f: &Path| dxvmm_trace::read_all(f).map_err(|e| fail(named(f, &e)));
            let ((ha, ra), (hb, rb)) = match (read(&a), read(&b)) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            let report = dxvmm_trace::diff::diff((&ha, &ra), (&hb, &rb), &skip, max);
            if json {
                println!("{}", report.to_json());
            } else {
                println!(
                    "A: {} ({} records), B: {} ({} records)",
                    a.display(),
                    ra.len(),
                    b.display(),
                    rb.len()
                );
                for c in &report.counts {
                    println!("count {}: A {}, B {}", c.command, c.a, c.b);
                }
                for d in &report.differences {
                    println!("{d}");
                }
                println!(
                    "{} calls compared side by side, {} events; {}",
                    report.calls,
                    report.events,
                    match report.differences.len() {
                        0 => "no difference".to_string(),
                        n if n >= max => format!("{n} differences shown (--max)"),
                        n => format!("{n} difference(s)"),
                    }
                );
            }
            if !report.differences.is_empty() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        TraceCommand::ExportPcapng { file, output } => {
            let (header, records) = match dxvmm_trace::read_all(&file) {
                Ok(v) => v,
                Err(e) => return fail(named(&file, &e)),
            };
            let f = match std::fs::File::create(&output) {
                Ok(f) => f,
                Err(e) => return fail(format_args!("{}: {e}", output.display())),
            };
            let mut w = std::io::BufWriter::new(f);
            match pcapng::export(&mut w, &header, &records).and_then(|n| w.flush().map(|()| n)) {
                Ok(n) => {
                    eprintln!("dxvmm: {n} packets written to {}", output.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format_args!("{}: {e}", output.display())),
            }
        }
    }
}
