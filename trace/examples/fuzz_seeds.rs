//! Seeds the fuzzers' corpora with the frames of the committed traces
//! (trace/corpus/*.dxtrace), so that fuzzing starts from real guest traffic
//! instead of from nothing:
//!
//! - fuzz/corpus/device_request: each trace's request frames as one input
//!   (the target's format: u16 length, frame, ...), and each frame alone;
//! - protocol/fuzz/corpus/decode_message: each request payload with its
//!   reply payload (the target's format: a byte giving the request's length
//!   in 4-byte units, the request, the reply), and each event payload;
//! - trace/fuzz/corpus/capture_frames: each trace's requests and the
//!   input memory written before each as one input (the target's format: the guest memory's
//!   first page frame, then tagged items).
//!
//!   cargo run -p dxvmm-trace --example fuzz_seeds [REPO_ROOT]
//!
//! Files are named by trace and position and rewritten on every run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dxvmm_protocol::frame::{Frame, FrameKind};
use dxvmm_trace::format::MemoryPurpose;
use dxvmm_trace::{read_all, Record};

/// The first four bytes as a little-endian u32 (0 if fewer).
fn u32_at(b: &[u8]) -> u32 {
    b.get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn payload(frame: &[u8], kind: FrameKind) -> Option<&[u8]> {
    Frame::parse(frame, kind).ok().map(|f| f.payload)
}

fn seed(root: &Path) -> Result<usize, String> {
    let device = root.join("fuzz/corpus/device_request");
    let message = root.join("protocol/fuzz/corpus/decode_message");
    let capture = root.join("trace/fuzz/corpus/capture_frames");
    for d in [&device, &message, &capture] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut traces: Vec<PathBuf> = std::fs::read_dir(root.join("trace/corpus"))
        .map_err(|e| format!("trace/corpus: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dxtrace"))
        .collect();
    traces.sort();
    let mut written = 0;
    let mut write = |path: PathBuf, bytes: &[u8]| -> Result<(), String> {
        written += 1;
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    for t in &traces {
        let (_, records) = read_all(t).map_err(|e| format!("{}: {e}", t.display()))?;
        let name = t
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let mut sequence = Vec::new();
        let mut request: Option<&[u8]> = None;
        let mut followed = Vec::new();
        let mut request_at = 0;
        for l in &records {
            let (tag, bytes) = match &l.record {
                Record::Layout { regions, .. } => {
                    let first = regions.first().map_or(0, |r| r.0 / 4096);
                    followed = u32::try_from(first).unwrap_or(0).to_le_bytes().to_vec();
                    request_at = followed.len();
                    continue;
                }
                Record::Request { frame, .. } => (0, frame.clone()),
                Record::Memory {
                    purpose: MemoryPurpose::Input,
                    gpa,
                    bytes,
                    ..
                } => {
                    // As an offset from the memory's start.
                    let base = u64::from(u32_at(&followed)) * 4096;
                    let Ok(offset) = u32::try_from(gpa.wrapping_sub(base)) else {
                        continue;
                    };
                    let mut item = offset.to_le_bytes().to_vec();
                    item.extend_from_slice(bytes);
                    (1, item)
                }
                _ => continue,
            };
            let Ok(n) = u16::try_from(bytes.len()) else {
                continue;
            };
            let mut item = vec![tag];
            item.extend_from_slice(&n.to_le_bytes());
            item.extend_from_slice(&bytes);
            // A request's inputs are recorded after it; the guest wrote
            // them before it.
            if tag == 0 {
                request_at = followed.len();
            }
            let at = if tag == 1 { request_at } else { followed.len() };
            followed.splice(at..at, item.iter().copied());
            if tag == 1 {
                request_at += item.len();
            }
        }
        write(capture.join(format!("{name}-all")), &followed)?;
        for (i, l) in records.iter().enumerate() {
            match &l.record {
                Record::Request { frame, .. } => {
                    // The target's length prefix is a u16; larger frames
                    // only seed alone.
                    if let Ok(n) = u16::try_from(frame.len()) {
                        sequence.extend_from_slice(&n.to_le_bytes());
                        sequence.extend_from_slice(frame);
                    }
                    write(device.join(format!("{name}-{i}")), frame)?;
                    request = payload(frame, FrameKind::Request);
                }
                Record::Reply { frame, .. } => {
                    let (Some(req), Some(reply)) =
                        (request.take(), payload(frame, FrameKind::Reply))
                    else {
                        continue;
                    };
                    let Some(units) = (req.len() % 4 == 0)
                        .then(|| u8::try_from(req.len() / 4).ok())
                        .flatten()
                    else {
                        continue;
                    };
                    let mut input = vec![units];
                    input.extend_from_slice(req);
                    input.extend_from_slice(reply);
                    write(message.join(format!("{name}-{i}")), &input)?;
                }
                Record::Event { frame, .. } => {
                    if let Some(event) = payload(frame, FrameKind::Event) {
                        let mut input = vec![0];
                        input.extend_from_slice(event);
                        write(message.join(format!("{name}-{i}")), &input)?;
                    }
                }
                _ => {}
            }
        }
        write(device.join(format!("{name}-all")), &sequence)?;
    }
    Ok(written)
}

fn main() -> ExitCode {
    let root = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
        PathBuf::from,
    );
    match seed(&root) {
        Ok(n) => {
            println!("[fuzz] {n} seed inputs from trace/corpus");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fuzz_seeds: {e}");
            ExitCode::FAILURE
        }
    }
}
