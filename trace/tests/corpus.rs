//! The corpus: traces of the project's own guest runs (trace/corpus/,
//! recorded with `dxvmm run --accel uml --trace`; docs/trace.md, "Corpus").
//! Each one reads back, decodes, replays without divergence (a compute
//! trace on the CPU double: up to the first result a shader computed),
//! and seeds the device with its frames the way the fuzzers do.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use device_dxg::DxgDevice;
use dxvmm_host_backend::{Backend, SoftBackend, WgpuBackend};
use dxvmm_protocol::frame::{Frame, FrameKind};
use dxvmm_trace::{read_all, replay, request_frames, show};

/// Whether the trace's guest ran shaders (`compute*.dxtrace`): the CPU
/// double runs none, so its replay differs at the first LOCK2 result a
/// shader wrote.
fn runs_shaders(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("compute"))
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("trace/corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dxtrace"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no traces in {}", dir.display());
    v
}

#[test]
fn every_trace_reads_decodes_and_shows() {
    for path in corpus() {
        let (header, records) =
            read_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!header.adapters.is_empty());
        let msgs = show::messages(&records, true);
        assert!(
            msgs.iter().all(|m| !m.command.starts_with('(')),
            "{}: undecodable records",
            path.display()
        );
        let mut out = Vec::new();
        show::show(&mut out, &header, &records, &show::Filter::default(), false).unwrap();
        let s = show::stats(&records);
        assert!(s.requests > 0);
        let mut pcap = Vec::new();
        let n = dxvmm_trace::pcapng::export(&mut pcap, &header, &records).unwrap();
        assert!(n >= s.requests);
    }
}

#[test]
fn every_trace_replays_on_the_cpu_double() {
    for path in corpus() {
        let (header, records) = read_all(&path).unwrap();
        let backend: Arc<dyn Backend> = Arc::new(SoftBackend::new());
        let r = replay::replay(&header, &records, backend, &replay::Options::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(r.replies_compared > 0);
        if runs_shaders(&path) {
            // Every status, handle and address matched up to there.
            let d = r.divergence.expect("the CPU double runs no shaders");
            assert_eq!(d.command, "LOCK2", "{}: {d}", path.display());
            assert!(d.what.contains("guest memory"), "{}: {d}", path.display());
        } else {
            assert_eq!(r.divergence, None, "{}", path.display());
        }
    }
}

#[test]
fn every_trace_replays_on_the_host_gpu() {
    let Ok(backend) = WgpuBackend::new() else {
        eprintln!("skipped: this host has no Vulkan adapter");
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(backend);
    for path in corpus() {
        let (header, records) = read_all(&path).unwrap();
        let r = replay::replay(
            &header,
            &records,
            backend.clone(),
            &replay::Options::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(r.divergence, None, "{}", path.display());
        if runs_shaders(&path) {
            // The compute trace has results as bytes and as digests.
            assert!(
                r.result_digests_compared > 0
                    && r.memory_results_compared > r.result_digests_compared,
                "{}: {}",
                path.display(),
                r.to_json()
            );
        }
    }
}

/// The frames as fuzz seeds: each one, in order and then mutated, gets a
/// reply frame from a fresh device.
#[test]
fn recorded_frames_seed_the_device() {
    for path in corpus() {
        let (_, records) = read_all(&path).unwrap();
        let backend: Arc<dyn Backend> = Arc::new(SoftBackend::new());
        let luid = backend.adapters()[0].luid;
        let mut dev = DxgDevice::new(backend, &[luid]).unwrap();
        for frame in request_frames(&records) {
            for variant in [frame.to_vec(), frame[..frame.len() / 2].to_vec(), {
                let mut v = frame.to_vec();
                let last = v.len() - 1;
                v[last] ^= 0xff;
                v
            }] {
                let reply = dev.handle_frame(&variant);
                Frame::parse(&reply, FrameKind::Reply).unwrap();
            }
        }
    }
}
