//! The virtio-dxg device fed arbitrary request frames, in sequences, on the
//! CPU test backend: it must answer each with a reply frame and never panic,
//! whatever state earlier requests left behind.
#![no_main]

use std::sync::Arc;

use device_dxg::DxgDevice;
use dxvmm_host_backend::{Backend, SoftBackend};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let backend: Arc<dyn Backend> = Arc::new(SoftBackend::new());
    let luid = backend.adapters()[0].luid;
    let luid_bytes = [luid.a.to_le_bytes(), luid.b.to_le_bytes()].concat();
    let mut dev = DxgDevice::new(backend, &[luid]).expect("an eventfd");
    // Several frames per input, split at a two-byte length prefix, so that
    // a process created by one frame can be used by the next.
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (frame, tail) = rest[2..].split_at(len);
        // A vGPU command names the adapter by its LUID, which a fuzzer
        // cannot guess (nor a seed recorded on another host know).
        let mut frame = frame.to_vec();
        if let Some(l) = frame.get_mut(24..32).filter(|l| l.iter().any(|&b| b != 0)) {
            l.copy_from_slice(&luid_bytes);
        }
        let reply = dev.handle_frame(&frame);
        assert!(reply.len() >= 32, "every request gets a reply frame");
        rest = tail;
    }
});
