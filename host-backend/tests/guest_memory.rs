//! The device's view: allocation contents and fence values live in guest
//! pages reached through vm-memory, and completions arrive as events.

mod common;

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dxvmm_host_backend::*;
use dxvmm_protocol::cmdstream::{Command, CommandStream};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Debug, PartialEq)]
enum Event {
    Fence(Handle, u64),
    Wait(u64),
}

struct Sink(Mutex<Sender<Event>>);

impl EventSink for Sink {
    fn fence_signaled(&self, _process: Handle, fence: Handle, value: u64) {
        let _ = self.0.lock().unwrap().send(Event::Fence(fence, value));
    }
    fn wait_satisfied(&self, _process: Handle, cookie: u64) {
        let _ = self.0.lock().unwrap().send(Event::Wait(cookie));
    }
}

fn guest_pages(b: &dyn Backend) {
    let (tx, rx) = channel();
    b.set_event_sink(Some(Arc::new(Sink(Mutex::new(tx)))));
    let fx = Fx::new(b);
    let (p, d) = (fx.process, fx.device);
    // 64 pages of guest RAM.
    let guest = Arc::new(
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 * GUEST_PAGE_SIZE as usize)])
            .unwrap(),
    );
    let pages = |pfns: &[u64]| -> Arc<dyn HostVisibleMemory> {
        Arc::new(GuestRanges::from_pfns(guest.clone(), pfns).unwrap())
    };
    let alloc = |size| {
        b.create_allocation(
            p,
            d,
            &AllocationDesc {
                size,
                alignment: 0,
                cpu_visible: true,
            },
        )
        .unwrap()
        .0
    };
    let map = |allocation, size| {
        b.map_gpu_va(
            p,
            d,
            &VaMapping {
                base: 0,
                minimum: 0,
                maximum: 0,
                size,
                allocation,
                allocation_offset: 0,
            },
        )
        .unwrap()
    };
    // Source: guest frames 9, 3 (scattered); destination: frames 20, 21.
    let src = alloc(8192);
    let dst = alloc(8192);
    let cmdbuf = alloc(4096);
    b.set_allocation_memory(p, src, pages(&[9, 3])).unwrap();
    b.set_allocation_memory(p, dst, pages(&[20, 21])).unwrap();
    b.set_allocation_memory(p, cmdbuf, pages(&[30])).unwrap();
    let (src_va, dst_va, cmd_va) = (map(src, 8192), map(dst, 8192), map(cmdbuf, 4096));
    guest
        .write_slice(&[0xab; 4096], GuestAddress(9 * 4096))
        .unwrap();
    guest
        .write_slice(&[0xcd; 4096], GuestAddress(3 * 4096))
        .unwrap();

    // The fence value lives at byte 16 of guest frame 40.
    let f = b
        .create_sync_object(
            p,
            d,
            0,
            Some(FenceStorage {
                memory: pages(&[40]),
                offset: 16,
            }),
        )
        .unwrap();
    b.notify_when_reached(p, &[FenceValue { fence: f, value: 7 }], WaitMode::All, 99)
        .unwrap();

    // The guest writes the command stream into its pages and submits by VA.
    let stream = CommandStream {
        commands: vec![
            Command::Copy {
                src_va,
                dst_va,
                size: 8192,
            },
            Command::FenceSignal {
                sync_object: f,
                value: 7,
            },
        ],
    }
    .encode();
    guest.write_slice(&stream, GuestAddress(30 * 4096)).unwrap();
    b.submit(
        p,
        fx.context,
        CommandBuffer::GpuVa {
            va: cmd_va,
            length: stream.len() as u64,
        },
    )
    .unwrap();

    let mut events = Vec::new();
    while events.len() < 2 {
        events.push(rx.recv_timeout(Duration::from_secs(120)).expect("events"));
    }
    assert!(events.contains(&Event::Fence(f, 7)), "{events:?}");
    assert!(events.contains(&Event::Wait(99)), "{events:?}");
    let v: u64 = guest.read_obj(GuestAddress(40 * 4096 + 16)).unwrap();
    assert_eq!(v, 7);

    b.lock(p, dst).unwrap();
    let mut out = vec![0u8; 4096];
    guest.read_slice(&mut out, GuestAddress(20 * 4096)).unwrap();
    assert_eq!(out, vec![0xab; 4096]);
    guest.read_slice(&mut out, GuestAddress(21 * 4096)).unwrap();
    assert_eq!(out, vec![0xcd; 4096]);
    b.unlock(p, dst).unwrap();

    // A command buffer in pages outside guest memory is a typed error.
    let bad = alloc(4096);
    b.set_allocation_memory(p, bad, pages(&[1 << 30])).unwrap();
    assert!(matches!(
        b.submit(
            p,
            fx.context,
            CommandBuffer::GpuVa {
                va: map(bad, 4096),
                length: 64
            }
        ),
        Err(BackendError::Memory { .. })
    ));
    b.set_event_sink(None);
    b.destroy_process(p).unwrap();
}

#[test]
fn soft_guest_pages_and_events() {
    guest_pages(&SoftBackend::new());
}

#[test]
fn gpu_guest_pages_and_events() {
    if let Some(b) = new_gpu() {
        guest_pages(&b);
    }
}

/// The same through both transfer paths: guest RAM imported as GPU memory
/// (lavapipe has VK_EXT_external_memory_host, so there it must be used) and
/// staging buffers.
#[test]
fn gpu_guest_pages_imported_and_staged() {
    if new_gpu().is_none() {
        return;
    }
    let imported = WgpuBackend::with_host_import(true).unwrap();
    guest_pages(&imported);
    let software = imported.adapters().first().is_some_and(|a| a.software);
    if software {
        assert!(
            imported.guest_ram_imported() > 0,
            "lavapipe transfers did not use imported guest RAM"
        );
    }
    let staged = WgpuBackend::with_host_import(false).unwrap();
    guest_pages(&staged);
    assert_eq!(staged.guest_ram_imported(), 0);
}

/// A registered wait that names a fence which is then destroyed is dropped
/// unreported: the caller that destroyed the fence ends it (device-dxg
/// sends the guest its event), and the backend keeps nothing for it.
fn waits_on_destroyed_fences(b: &dyn Backend) {
    let (tx, rx) = channel();
    b.set_event_sink(Some(Arc::new(Sink(Mutex::new(tx)))));
    let fx = Fx::new(b);
    let (p, d) = (fx.process, fx.device);
    let gone = b.create_sync_object(p, d, 0, None).unwrap();
    let kept = b.create_sync_object(p, d, 0, None).unwrap();
    let on = |fence, value| FenceValue { fence, value };
    b.notify_when_reached(p, &[on(gone, 1)], WaitMode::All, 1)
        .unwrap();
    b.notify_when_reached(p, &[on(gone, 1), on(kept, 1)], WaitMode::Any, 2)
        .unwrap();
    b.notify_when_reached(p, &[on(kept, 1)], WaitMode::All, 3)
        .unwrap();
    b.destroy_sync_object(p, gone).unwrap();
    // A signal re-checks the waits: only the one on `kept` alone is left.
    b.signal_from_cpu(p, &[on(kept, 1)]).unwrap();
    let mut waits = Vec::new();
    while let Ok(e) = rx.recv_timeout(Duration::from_millis(200)) {
        if let Event::Wait(c) = e {
            waits.push(c);
        }
    }
    assert_eq!(waits, [3]);
    b.set_event_sink(None);
    b.destroy_process(p).unwrap();
}

#[test]
fn soft_waits_on_destroyed_fences() {
    waits_on_destroyed_fences(&SoftBackend::new());
}

#[test]
fn gpu_waits_on_destroyed_fences() {
    if let Some(b) = new_gpu() {
        waits_on_destroyed_fences(&b);
    }
}

/// The GPU reads an upload from imported guest RAM when the work runs, not
/// when it is submitted: a lock in between waits for that read, so a CPU
/// write after the lock does not reach the work submitted before it.
#[test]
fn a_lock_waits_until_the_gpu_has_read_the_pages() {
    if new_gpu().is_none() {
        return;
    }
    let b = WgpuBackend::with_host_import(true).unwrap();
    let fx = Fx::new(&b);
    let (p, d) = (fx.process, fx.device);
    let guest = Arc::new(
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 16 * GUEST_PAGE_SIZE as usize)])
            .unwrap(),
    );
    let page = |pfn: u64| -> (Handle, u64) {
        let a = b
            .create_allocation(
                p,
                d,
                &AllocationDesc {
                    size: 4096,
                    alignment: 0,
                    cpu_visible: true,
                },
            )
            .unwrap()
            .0;
        let mem = GuestRanges::from_pfns(guest.clone(), &[pfn]).unwrap();
        b.set_allocation_memory(p, a, Arc::new(mem)).unwrap();
        let va = b
            .map_gpu_va(
                p,
                d,
                &VaMapping {
                    base: 0,
                    minimum: 0,
                    maximum: 0,
                    size: 4096,
                    allocation: a,
                    allocation_offset: 0,
                },
            )
            .unwrap();
        (a, va)
    };
    let (src, src_va) = page(3);
    let (dst, dst_va) = page(5);
    guest
        .write_slice(&[0xab; 4096], GuestAddress(3 * 4096))
        .unwrap();
    fx.busy_gpu();
    fx.submit(
        fx.context,
        vec![Command::Copy {
            src_va,
            dst_va,
            size: 4096,
        }],
    )
    .unwrap();
    b.lock(p, src).unwrap();
    guest
        .write_slice(&[0xcd; 4096], GuestAddress(3 * 4096))
        .unwrap();
    b.unlock(p, src).unwrap();
    b.lock(p, dst).unwrap();
    let mut out = vec![0u8; 4096];
    guest.read_slice(&mut out, GuestAddress(5 * 4096)).unwrap();
    assert_eq!(
        out,
        vec![0xab; 4096],
        "the copy saw the write after the lock"
    );
    b.destroy_process(p).unwrap();
}

/// An allocation of `size` bytes in the guest frames `pfns` of a fresh
/// guest memory, mapped at a GPU VA: (guest memory, handle, VA).
fn in_guest_pages(fx: &Fx, pfns: &[u64], size: u64) -> (Arc<GuestMemoryMmap>, Handle, u64) {
    let (b, p, d) = (fx.b, fx.process, fx.device);
    let frames = pfns.iter().max().map_or(0, |m| m + 1);
    let guest = Arc::new(
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), (frames * 4096) as usize)]).unwrap(),
    );
    let desc = AllocationDesc {
        size,
        alignment: 0,
        cpu_visible: true,
    };
    let (alloc, _) = b.create_allocation(p, d, &desc).unwrap();
    let memory = Arc::new(GuestRanges::from_pfns(guest.clone(), pfns).unwrap());
    b.set_allocation_memory(p, alloc, memory).unwrap();
    let mapping = VaMapping {
        base: 0,
        minimum: 0,
        maximum: 0,
        size: pfns.len() as u64 * 4096,
        allocation: alloc,
        allocation_offset: 0,
    };
    let va = b.map_gpu_va(p, d, &mapping).unwrap();
    (guest, alloc, va)
}

/// A watched LOCK2 of a result larger than a MiB: the backend copies it in
/// pieces and reports each once its bytes are in the guest's pages (read
/// here inside the callback), ending with the allocation's size.
fn watched_lock(b: &dyn Backend) {
    let fx = Fx::new(b);
    let p = fx.process;
    // 3 MiB and a little, in guest frames in reverse order (each page its
    // own piece of host memory).
    const PAGES: u64 = 769;
    let size = 3 * (1 << 20) + 100;
    let pfns: Vec<u64> = (0..PAGES).rev().collect();
    let (guest, alloc, va) = in_guest_pages(&fx, &pfns, size);
    fx.submit(
        fx.context,
        vec![Command::Fill {
            dst_va: va,
            size: size & !3,
            value: 0x0707_0707,
        }],
    )
    .unwrap();
    // The guest byte of allocation offset `at`.
    let byte_at = |at: u64| -> u8 {
        let page = pfns[(at / 4096) as usize];
        guest
            .read_obj(GuestAddress(page * 4096 + at % 4096))
            .unwrap()
    };
    let mut reached = Vec::new();
    b.lock_watched(p, alloc, &mut |n| {
        assert_eq!(byte_at(n - 1), 7, "the last byte of {n} landed");
        reached.push(n);
    })
    .unwrap();
    // Half of what is left each time, in whole pages, down to a MiB.
    let half = (size / 2).next_multiple_of(4096);
    assert_eq!(reached, vec![half, half + (1 << 20), size]);
    assert_eq!(byte_at(0), 7);
    // Without a watcher it is a plain LOCK2.
    b.unlock(p, alloc).unwrap();
    b.lock(p, alloc).unwrap();
    b.destroy_process(p).unwrap();
}

#[test]
fn soft_watched_lock() {
    watched_lock(&SoftBackend::new());
}

/// Both transfer paths of the GPU backend.
#[test]
fn gpu_watched_lock_imported_and_staged() {
    if new_gpu().is_none() {
        return;
    }
    let imported = WgpuBackend::with_host_import(true).unwrap();
    watched_lock(&imported);
    let staged = WgpuBackend::with_host_import(false).unwrap();
    watched_lock(&staged);
    assert_eq!(staged.guest_ram_imported(), 0);
}

/// What copying a LOCK2 in pieces costs the copy itself: a 16 MiB
/// allocation the GPU filled, locked with and without a watcher
/// (alternating, 20 each). A measurement, not a check:
/// `cargo test --release -p dxvmm-host-backend --test guest_memory
/// watched_lock_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn watched_lock_cost() {
    let Some(b) = new_gpu() else { return };
    let fx = Fx::new(&b);
    let p = fx.process;
    const PAGES: u64 = 4096;
    let size = PAGES * 4096;
    let pfns: Vec<u64> = (0..PAGES).collect();
    let (_guest, alloc, va) = in_guest_pages(&fx, &pfns, size);
    let flag = fx.buffer(4096);
    let mut times: [Vec<Duration>; 2] = Default::default();
    for round in 0..40 {
        b.unlock(p, alloc).ok();
        fx.submit(
            fx.context,
            vec![Command::Fill {
                dst_va: va,
                size,
                value: round,
            }],
        )
        .unwrap();
        // The fill's completion is waited for outside the timed part: a
        // LOCK2 waits for all the work queued on the adapter.
        fx.submit(
            fx.context,
            vec![Command::Fill {
                dst_va: flag.va,
                size: 4,
                value: round,
            }],
        )
        .unwrap();
        b.lock(p, flag.alloc).unwrap();
        b.unlock(p, flag.alloc).unwrap();
        let watched = round % 2 == 1;
        let t = std::time::Instant::now();
        if watched {
            b.lock_watched(p, alloc, &mut |_| {}).unwrap();
        } else {
            b.lock(p, alloc).unwrap();
        }
        times[usize::from(watched)].push(t.elapsed());
    }
    let mut ms = |i: usize| {
        let t = &mut times[i];
        t.sort();
        (t[0].as_secs_f64() * 1e3, t[t.len() / 2].as_secs_f64() * 1e3)
    };
    let (one, pieces) = (ms(0), ms(1));
    println!(
        "LOCK2 of 16 MiB (best / median of 20): {:.3} / {:.3} ms in one piece, {:.3} / {:.3} ms in pieces",
        one.0, one.1, pieces.0, pieces.1
    );
    b.destroy_process(p).unwrap();
}
