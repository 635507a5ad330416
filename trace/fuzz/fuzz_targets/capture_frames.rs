//! The recorder's view of the guest (`dxvmm run --trace`): arbitrary
//! request frames, answered by the real device on the CPU test backend,
//! and arbitrary guest memory, seen by [`Capture`], which follows the
//! frames to find the guest pages a trace must hold, and [`Shadow`], which
//! reads and diffs them, as the recorder uses them. Everything in a request
//! is the guest's to choose (page lists, offsets, GPU VAs, stream lengths):
//! nothing may panic, and nothing the guest names may make the host
//! allocate beyond what the device accepted (libFuzzer's memory limit
//! catches a list grown from an offset).
//!
//! Input: the guest memory's first page frame (u32, little endian; 64 MiB
//! of memory from there), then items of a tag byte, a u16 length and that
//! many bytes: 0 a request frame, 1 guest memory to write (a u32 offset
//! into the memory, then the bytes).
#![no_main]

use std::sync::{Arc, Mutex};

use device_dxg::{Direction, DxgDevice, FrameObserver};
use dxvmm_host_backend::{Backend, SoftBackend};
use dxvmm_trace::capture::{page_hashes, Capture, PartDiff, Shadow};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PAGE: u64 = 4096;
const MEMORY: u64 = 64 << 20;

fn u32_at(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

/// What the recorder keeps of the guest.
#[derive(Default)]
struct Seen {
    capture: Capture,
    shadow: Shadow,
}

impl Seen {
    /// What the recorder does with a list of pages: diff them (inputs;
    /// large lists by hash) or hash them into digests (results, every
    /// other list as bytes).
    fn take(&mut self, mem: &GuestMemoryMmap, pfns: &[u64], result: bool) {
        if result && pfns.len() % 2 == 0 {
            let mut hashes = Vec::new();
            page_hashes(mem, pfns, &mut hashes);
            self.shadow.digests(pfns, &hashes, &mut Vec::new());
        } else {
            let by_hash = pfns.len() > 64;
            self.shadow
                .pages(mem, pfns, !result, by_hash, &mut Vec::new());
        }
    }
}

struct Observer(Mutex<Seen>);

impl FrameObserver for Observer {
    fn observe(&self, direction: Direction, frame: &[u8], mem: Option<&GuestMemoryMmap>) {
        let mut seen = self.0.lock().unwrap();
        let seen = &mut *seen;
        let Some(mem) = mem else { return };
        match direction {
            Direction::Request => {
                let mut inputs = Vec::new();
                seen.capture.before_request(frame, Some(mem), &mut inputs);
                for pfns in &inputs {
                    seen.take(mem, pfns, false);
                }
                let stream = seen.capture.take_stream();
                let mut diff = PartDiff::default();
                for &(pfn, from, to) in &stream {
                    if !seen.shadow.part(mem, pfn, from, to, &mut diff) {
                        seen.take(mem, &[pfn], false);
                    }
                }
                seen.capture.give_back_stream(stream);
                for pfns in seen.capture.take_uploads() {
                    seen.take(mem, &pfns, false);
                }
                let _ = seen.capture.pending_result_pages();
            }
            Direction::Reply => {
                let mut results = Vec::new();
                seen.capture.after_reply(frame, Some(mem), &mut results);
                for r in &results {
                    seen.take(mem, &r.pfns, true);
                }
            }
            Direction::Event => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(base) = u32_at(data) else { return };
    let base = u64::from(base) * PAGE;
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(base), MEMORY as usize)])
    else {
        return;
    };
    let backend: Arc<dyn Backend> = Arc::new(SoftBackend::new());
    let luid = backend.adapters()[0].luid;
    let luid_bytes = [luid.a.to_le_bytes(), luid.b.to_le_bytes()].concat();
    let mut dev = DxgDevice::new(backend, &[luid]).expect("an eventfd");
    dev.set_guest_memory(mem.clone());
    dev.set_observer(Some(Arc::new(Observer(Mutex::default()))));
    let mut rest = &data[4..];
    while rest.len() >= 3 {
        let tag = rest[0];
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let (item, tail) = rest[3..].split_at(len);
        rest = tail;
        match tag {
            0 => {
                // A vGPU command names the adapter by its LUID, which a
                // fuzzer cannot guess (nor a seed from another host know).
                let mut frame = item.to_vec();
                if let Some(l) = frame.get_mut(24..32).filter(|l| l.iter().any(|&b| b != 0)) {
                    l.copy_from_slice(&luid_bytes);
                }
                dev.handle_frame(&frame);
            }
            1 => {
                if let Some(offset) = u32_at(item) {
                    let gpa = base + u64::from(offset) % MEMORY;
                    let _ = mem.write_slice(&item[4..], GuestAddress(gpa));
                }
            }
            _ => {}
        }
    }
});
