//! Seeds the fuzzers' corpora with the frames of the committed traces
//! (trace/corpus/*.dxtrace), so that fuzzing starts from real guest traffic
//! instead of from nothing:
//!
//! - fuzz/corpus/device_request: each trace's request frames as one input
//!   (the target's format: u16 length, frame, ...), and each frame alone;
//! - protocol/fuzz/corpus/decode_message: each request payload with its
//!   reply payload (the target's format: a byte giving the request's length
//!   in 4-byte units, the request, the reply), and each event payload.
//!
//!   cargo run -p dxvmm-trace --example fuzz_seeds [REPO_ROOT]
//!
//! Files are named by trace and position and rewritten on every run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dxvmm_protocol::frame::{Frame, FrameKind};
use dxvmm_trace::{read_all, Record};

fn payload(frame: &[u8], kind: FrameKind) -> Option<&[u8]> {
    Frame::parse(frame, kind).ok().map(|f| f.payload)
}

fn seed(root: &Path) -> Result<usize, String> {
    let device = root.join("fuzz/corpus/device_request");
    let message = root.join("protocol/fuzz/corpus/decode_message");
    for d in [&device, &message] {
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
