//! Compute through the command stream on the real backend (lavapipe on CI),
//! checked against the CPU.

mod common;

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use dxvmm_host_backend::*;
use dxvmm_protocol::cmdstream::Command;
use dxvmm_protocol::escape::{CreatePipeline, EscapeRequest, EscapeResponse, ShaderLanguage};

#[test]
fn vector_add() {
    let Some(b) = gpu() else { return };
    let fx = Fx::new(b);
    let n = 1000;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let bv: Vec<f32> = (0..n).map(|i| (i * 2) as f32 + 0.5).collect();
    let ba = fx.buffer_with(&bytes_of(&a));
    let bb = fx.buffer_with(&bytes_of(&bv));
    let bc = fx.buffer(n as u64 * 4);
    let p = fx.pipeline(VECTOR_ADD);
    fx.submit(
        fx.context,
        vec![Command::Dispatch {
            pipeline: p,
            group_counts: [(n as u32).div_ceil(64), 1, 1],
            bindings: vec![ba.binding(0), bb.binding(1), bc.binding(2)],
        }],
    )
    .unwrap();
    let c = f32s(&fx.read(&bc));
    for i in 0..n {
        assert_eq!(c[i], a[i] + bv[i], "element {i}");
    }
    b.destroy_process(fx.process).unwrap();
}

#[test]
fn matrix_multiply() {
    let Some(b) = gpu() else { return };
    let fx = Fx::new(b);
    // Not a multiple of the 16 x 16 tile, so the edges are exercised.
    let n = 70usize;
    let a = matrix(n, 1);
    let bm = matrix(n, 2);
    let ba = fx.buffer_with(&bytes_of(&a));
    let bb = fx.buffer_with(&bytes_of(&bm));
    let bc = fx.buffer((n * n * 4) as u64);
    let dims = fx.buffer_with(&u32_bytes(&[n as u32, 0, 0, 0]));
    let p = fx.pipeline(MATMUL);
    fx.submit(
        fx.context,
        vec![Command::Dispatch {
            pipeline: p,
            group_counts: matmul_groups(n as u32),
            bindings: vec![ba.binding(0), bb.binding(1), bc.binding(2), dims.binding(3)],
        }],
    )
    .unwrap();
    let got = f32s(&fx.read(&bc));
    let want = cpu_matmul(&a, &bm, n);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
            "element {i}: {g} vs {w}"
        );
    }
    b.destroy_process(fx.process).unwrap();
}

#[test]
fn spirv_pipeline_through_an_escape() {
    let Some(b) = gpu() else { return };
    let fx = Fx::new(b);
    // SPIR-V made from the WGSL kernel by naga, as a guest toolchain would.
    let module = naga::front::wgsl::parse_str(VECTOR_ADD).unwrap();
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .unwrap();
    let words =
        naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None)
            .unwrap();
    let req = EscapeRequest::CreatePipeline(CreatePipeline {
        language: ShaderLanguage::SpirV,
        source: words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        entry_point: "main".into(),
        error_capacity: 256,
    })
    .encode();
    let resp = EscapeResponse::decode(&b.escape(fx.process, fx.device, &req).unwrap()).unwrap();
    assert!(resp.status.is_success(), "{}", resp.error);
    let ba = fx.buffer_with(&bytes_of(&[1.0, 2.0, 3.0, 4.0]));
    let bb = fx.buffer_with(&bytes_of(&[10.0, 20.0, 30.0, 40.0]));
    let bc = fx.buffer(16);
    fx.submit(
        fx.context,
        vec![Command::Dispatch {
            pipeline: resp.pipeline,
            group_counts: [1, 1, 1],
            bindings: vec![ba.binding(0), bb.binding(1), bc.binding(2)],
        }],
    )
    .unwrap();
    assert_eq!(f32s(&fx.read(&bc)), [11.0, 22.0, 33.0, 44.0]);
    b.destroy_process(fx.process).unwrap();
}

#[test]
fn copy_fill_timestamp_and_cpu_coherency() {
    let Some(b) = gpu() else { return };
    let fx = Fx::new(b);
    let src = fx.buffer(64 * 1024);
    let dst = fx.buffer(64 * 1024);
    let ts = fx.buffer(16);
    fx.submit(
        fx.context,
        vec![
            Command::Timestamp { dst_va: ts.va },
            Command::Fill {
                dst_va: src.va,
                size: 64 * 1024,
                value: 0xdead_beef,
            },
            Command::Fill {
                dst_va: src.va + 8,
                size: 8,
                value: 0,
            },
            Command::Copy {
                src_va: src.va,
                dst_va: dst.va,
                size: 64 * 1024,
            },
            // Within one allocation (goes through a bounce buffer).
            Command::Copy {
                src_va: dst.va,
                dst_va: dst.va + 4096,
                size: 16,
            },
            Command::Timestamp { dst_va: ts.va + 8 },
        ],
    )
    .unwrap();
    let d = fx.read(&dst);
    assert_eq!(d[0..4], 0xdead_beef_u32.to_le_bytes());
    assert_eq!(d[8..16], [0; 8]);
    assert_eq!(d[4096..4112], d[0..16]);
    assert_eq!(d[65532..], 0xdead_beef_u32.to_le_bytes());
    let t = fx.read(&ts);
    let t0 = u64::from_le_bytes(t[0..8].try_into().unwrap());
    let t1 = u64::from_le_bytes(t[8..16].try_into().unwrap());
    assert!(t1 >= t0, "timestamps went backwards: {t0} then {t1}");

    // The CPU writes between LOCK2 and UNLOCK2; the GPU sees it at the next
    // use, and the CPU sees the GPU's result at the next LOCK2.
    b.lock(fx.process, src.alloc).unwrap();
    src.mem.write_at(0, &[7; 16]).unwrap();
    b.unlock(fx.process, src.alloc).unwrap();
    fx.submit(
        fx.context,
        vec![Command::Copy {
            src_va: src.va,
            dst_va: dst.va + 32,
            size: 16,
        }],
    )
    .unwrap();
    assert_eq!(fx.read(&dst)[32..48], [7; 16]);
    b.destroy_process(fx.process).unwrap();
}

/// UPLOAD: the range goes to the GPU when the command runs, and is the
/// GPU's until the next LOCK2: neither the rest of a locked allocation's
/// pages taken at the next use nor UNLOCK2 bring it back.
#[test]
fn upload_takes_a_range_until_the_next_lock() {
    let Some(b) = gpu() else { return };
    let fx = Fx::new(b);
    let src = fx.buffer(3 * 4096);
    let dst = fx.buffer(3 * 4096);
    let copy_all = || Command::Copy {
        src_va: src.va,
        dst_va: dst.va,
        size: 3 * 4096,
    };
    b.lock(fx.process, src.alloc).unwrap();
    src.mem.write_at(0, &[1; 3 * 4096]).unwrap();
    fx.submit(
        fx.context,
        vec![Command::Upload {
            va: src.va + 4096,
            size: 4096,
        }],
    )
    .unwrap();
    // Written after the UPLOAD took the middle page (the rules forbid it):
    // while locked, the next use takes the other pages only.
    src.mem.write_at(0, &[2; 3 * 4096]).unwrap();
    fx.submit(fx.context, vec![copy_all()]).unwrap();
    let d = fx.read(&dst);
    assert_eq!(d[..4096], [2; 4096]);
    assert_eq!(d[4096..8192], [1; 4096]);
    assert_eq!(d[8192..], [2; 4096]);
    // After UNLOCK2 too.
    b.unlock(fx.process, src.alloc).unwrap();
    fx.submit(fx.context, vec![copy_all()]).unwrap();
    assert_eq!(fx.read(&dst)[4096..8192], [1; 4096]);
    // The next LOCK2 gives the pages back: all of them go at the next use.
    b.lock(fx.process, src.alloc).unwrap();
    b.unlock(fx.process, src.alloc).unwrap();
    fx.submit(fx.context, vec![copy_all()]).unwrap();
    assert_eq!(fx.read(&dst), [2; 3 * 4096]);
    // Pieces in a row, then a use in the same stream: the pieces first.
    b.lock(fx.process, src.alloc).unwrap();
    src.mem.write_at(0, &[3; 3 * 4096]).unwrap();
    b.unlock(fx.process, src.alloc).unwrap();
    let mut cmds: Vec<Command> = (0..3)
        .map(|i| Command::Upload {
            va: src.va + i * 4096,
            size: 4096,
        })
        .collect();
    cmds.push(copy_all());
    fx.submit(fx.context, cmds).unwrap();
    assert_eq!(fx.read(&dst), [3; 3 * 4096]);
    b.destroy_process(fx.process).unwrap();
}

/// Collects fence signals: how the device learns that a fence moved.
struct Sink(Mutex<Sender<(Handle, u64)>>);

impl EventSink for Sink {
    fn fence_signaled(&self, _process: Handle, fence: Handle, value: u64) {
        let _ = self.0.lock().unwrap().send((fence, value));
    }
    fn wait_satisfied(&self, _process: Handle, _cookie: u64) {}
}

#[test]
fn fence_ordering_across_two_contexts() {
    let Some(b) = new_gpu() else { return };
    let (tx, rx) = channel();
    b.set_event_sink(Some(Arc::new(Sink(Mutex::new(tx)))));
    let fx = Fx::new(&b);
    let ctx2 = b.create_context(fx.process, fx.device).unwrap();
    let storage = Arc::new(VecMemory::new(64));
    let f = b
        .create_sync_object(
            fx.process,
            fx.device,
            0,
            Some(FenceStorage {
                memory: storage.clone(),
                offset: 8,
            }),
        )
        .unwrap();
    let gate = fx.fence(0);
    let a = fx.buffer(4096);
    let out = fx.buffer(4096);

    // Context 2 is submitted first but must wait for context 1's fill.
    fx.submit(
        ctx2,
        vec![
            Command::FenceWait {
                sync_object: f,
                value: 1,
            },
            Command::Copy {
                src_va: a.va,
                dst_va: out.va,
                size: 4096,
            },
            Command::FenceSignal {
                sync_object: f,
                value: 2,
            },
        ],
    )
    .unwrap();
    assert_eq!(b.process_counts(fx.process).unwrap().pending_submissions, 2);
    // Context 1 is itself held until the CPU opens the gate.
    b.wait_from_queue(
        fx.process,
        fx.context,
        &[FenceValue {
            fence: gate,
            value: 5,
        }],
    )
    .unwrap();
    fx.submit(
        fx.context,
        vec![
            Command::Fill {
                dst_va: a.va,
                size: 4096,
                value: 0x0101_0101,
            },
            Command::FenceSignal {
                sync_object: f,
                value: 1,
            },
        ],
    )
    .unwrap();
    assert!(matches!(
        b.wait_from_cpu(
            fx.process,
            &[FenceValue { fence: f, value: 1 }],
            WaitMode::All,
            Some(Duration::from_millis(50))
        ),
        Err(BackendError::Timeout)
    ));
    assert_eq!(b.fence_value(fx.process, f).unwrap(), 0);
    b.signal_from_cpu(
        fx.process,
        &[FenceValue {
            fence: gate,
            value: 5,
        }],
    )
    .unwrap();
    // Completion is pushed to the sink; nobody polls.
    let mut seen = Vec::new();
    while seen.last().map(|s: &(Handle, u64)| s.1) != Some(2) {
        let (fence, value) = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("fence signal");
        if fence == f {
            seen.push((fence, value));
        }
    }
    assert_eq!(seen, [(f, 1), (f, 2)]);
    assert_eq!(storage.to_vec()[8..16], 2u64.to_le_bytes());
    b.wait_from_cpu(
        fx.process,
        &[FenceValue { fence: f, value: 2 }],
        WaitMode::All,
        None,
    )
    .unwrap();
    assert_eq!(fx.read(&out), vec![1u8; 4096]);
    assert_eq!(b.process_counts(fx.process).unwrap().pending_submissions, 0);
    b.destroy_process(fx.process).unwrap();
}

/// Work submitted while the GPU is busy waits in one batch and goes to the
/// queue as one submission; each piece still runs once, in order, and its
/// fence signal comes after it.
#[test]
fn submits_behind_busy_work_go_in_batches_in_order() {
    let Some(b) = new_gpu() else { return };
    let (tx, rx) = channel();
    b.set_event_sink(Some(Arc::new(Sink(Mutex::new(tx)))));
    let fx = Fx::new(&b);
    let f = fx.fence(0);
    // Long work first, then many tiny dispatches behind it.
    let counter = fx.buffer(256);
    let tiny = fx.pipeline(TINY);
    fx.busy_gpu();
    let n = 200u64;
    for i in 1..=n {
        fx.submit(
            fx.context,
            vec![
                Command::Dispatch {
                    pipeline: tiny,
                    group_counts: [1, 1, 1],
                    bindings: vec![counter.binding(0)],
                },
                Command::FenceSignal {
                    sync_object: f,
                    value: i,
                },
            ],
        )
        .unwrap();
    }
    b.wait_from_cpu(
        fx.process,
        &[FenceValue { fence: f, value: n }],
        WaitMode::All,
        None,
    )
    .unwrap();
    assert_eq!(fx.read(&counter)[..4], (n as u32).to_le_bytes());
    let (pieces, submissions) = b.work_submitted();
    assert!(
        submissions < pieces,
        "{pieces} pieces of work in {submissions} queue submissions: nothing was batched"
    );
    // The sink sees the fence rise in order, to the last value (it may be
    // told just after the waiter woke).
    let mut values = Vec::new();
    while values.last() != Some(&n) {
        let (fence, value) = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("fence signal");
        if fence == f {
            values.push(value);
        }
    }
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    b.destroy_process(fx.process).unwrap();
}

#[test]
fn process_teardown_frees_everything() {
    let Some(b) = new_gpu() else { return };
    assert!(b.counts().is_empty(), "{:?}", b.counts());
    for round in 0..2 {
        let fx = Fx::new(&b);
        let hw = b.create_hw_queue(fx.process, fx.context, None).unwrap();
        b.create_paging_queue(fx.process, fx.device).unwrap();
        let bufs: Vec<Buf> = (0..4).map(|_| fx.buffer(1 << 16)).collect();
        let p = fx.pipeline(VECTOR_ADD);
        let f = fx.fence(0);
        b.reserve_gpu_va(
            fx.process,
            fx.device,
            &VaReservation {
                base: 0,
                minimum: 0,
                maximum: 0,
                size: 1 << 20,
            },
        )
        .unwrap();
        fx.submit(
            hw.handle,
            vec![
                Command::Dispatch {
                    pipeline: p,
                    group_counts: [256, 1, 1],
                    bindings: vec![bufs[0].binding(0), bufs[1].binding(1), bufs[2].binding(2)],
                },
                Command::FenceSignal {
                    sync_object: f,
                    value: 1,
                },
            ],
        )
        .unwrap();
        // Work held forever behind a fence nobody signals.
        fx.submit(
            fx.context,
            vec![
                Command::FenceWait {
                    sync_object: f,
                    value: 100,
                },
                Command::Copy {
                    src_va: bufs[0].va,
                    dst_va: bufs[3].va,
                    size: 1 << 16,
                },
            ],
        )
        .unwrap();
        let c = b.process_counts(fx.process).unwrap();
        assert_eq!(
            (c.allocations, c.contexts, c.hw_queues, c.pipelines),
            (4, 1, 1, 1),
            "round {round}"
        );
        assert_eq!(c.sync_objects, 3); // ours, the hw queue's, the paging queue's
        assert_eq!(c.pending_submissions, 2);
        b.destroy_process(fx.process).unwrap();
        b.flush().unwrap();
        assert!(b.counts().is_empty(), "round {round}: {:?}", b.counts());
        assert!(matches!(
            b.create_context(fx.process, fx.device),
            Err(BackendError::InvalidHandle {
                kind: ObjectKind::Process,
                ..
            })
        ));
    }
}
