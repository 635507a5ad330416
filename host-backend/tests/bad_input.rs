//! Every handle, offset, length, GPU VA and shader a caller passes is
//! checked: a bad one is a typed error, never a panic, and every other
//! object keeps working. Run on the CPU test double and on the real
//! backend.

mod common;

use std::sync::Arc;

use common::*;
use dxvmm_host_backend::*;
use dxvmm_protocol::abi::D3dkmtHandle;
use dxvmm_protocol::cmdstream::{Binding, Command};
use dxvmm_protocol::escape::{EscapeRequest, EscapeResponse};

fn is_handle(r: Result<impl std::fmt::Debug>, kind: ObjectKind) {
    match r {
        Err(BackendError::InvalidHandle { kind: k, .. }) if k == kind => {}
        other => panic!("expected an invalid {kind} handle, got {other:?}"),
    }
}

fn is_range<T: std::fmt::Debug>(r: Result<T>) {
    assert!(
        matches!(r, Err(BackendError::OutOfRange { .. })),
        "expected out of range, got {r:?}"
    );
}

/// A copy through the fixture still works.
fn still_works(fx: &Fx<'_>, src: &Buf, dst: &Buf, byte: u8) {
    src.mem.write_at(0, &[byte; 64]).unwrap();
    fx.b.lock(fx.process, src.alloc).unwrap();
    fx.b.unlock(fx.process, src.alloc).unwrap();
    fx.submit(
        fx.context,
        vec![Command::Copy {
            src_va: src.va,
            dst_va: dst.va,
            size: 64,
        }],
    )
    .unwrap();
    assert_eq!(fx.read(dst)[..64], [byte; 64]);
}

fn bad_handles(b: &dyn Backend) {
    let fx = Fx::new(b);
    let other = Fx::new(b);
    let src = fx.buffer(4096);
    let dst = fx.buffer(4096);
    let bogus = D3dkmtHandle(0x4000_1234);
    let p = fx.process;

    is_handle(b.create_context(bogus, fx.device), ObjectKind::Process);
    is_handle(b.destroy_process(D3dkmtHandle::NULL), ObjectKind::Process);
    is_handle(
        b.open_adapter(p, WinLuid { a: 1, b: 2 }),
        ObjectKind::Adapter,
    );
    is_handle(b.create_device(p, bogus), ObjectKind::Adapter);
    is_handle(b.close_adapter(p, fx.device), ObjectKind::Adapter);
    is_handle(b.create_context(p, bogus), ObjectKind::Device);
    is_handle(b.destroy_device(p, fx.context), ObjectKind::Device);
    is_handle(b.create_paging_queue(p, bogus), ObjectKind::Device);
    is_handle(
        b.destroy_paging_queue(p, fx.device),
        ObjectKind::PagingQueue,
    );
    is_handle(b.destroy_context(p, bogus), ObjectKind::Context);
    is_handle(b.create_hw_queue(p, fx.device, None), ObjectKind::Context);
    is_handle(b.destroy_hw_queue(p, fx.context), ObjectKind::HwQueue);
    is_handle(b.lock(p, fx.device), ObjectKind::Allocation);
    is_handle(b.unlock(p, bogus), ObjectKind::Allocation);
    is_handle(b.destroy_allocation(p, bogus), ObjectKind::Allocation);
    is_handle(b.fence_value(p, src.alloc), ObjectKind::SyncObject);
    is_handle(
        b.signal_from_cpu(
            p,
            &[FenceValue {
                fence: bogus,
                value: 1,
            }],
        ),
        ObjectKind::SyncObject,
    );
    is_handle(
        b.destroy_pipeline(p, fx.device, 0x1234),
        ObjectKind::Pipeline,
    );
    is_handle(
        b.submit(p, bogus, CommandBuffer::Bytes(&[])),
        ObjectKind::Context,
    );
    is_handle(
        fx.submit(
            fx.context,
            vec![Command::FenceSignal {
                sync_object: bogus,
                value: 1,
            }],
        ),
        ObjectKind::SyncObject,
    );
    is_handle(
        fx.submit(
            fx.context,
            vec![Command::Dispatch {
                pipeline: 77,
                group_counts: [1, 1, 1],
                bindings: vec![],
            }],
        ),
        ObjectKind::Pipeline,
    );
    // Another process's objects are invisible.
    is_handle(
        b.create_context(other.process, fx.device),
        ObjectKind::Device,
    );
    is_handle(b.lock(other.process, src.alloc), ObjectKind::Allocation);
    is_handle(
        b.submit(other.process, fx.context, CommandBuffer::Bytes(&[])),
        ObjectKind::Context,
    );
    // A destroyed handle stays invalid (handles are never reused).
    let ctx = b.create_context(p, fx.device).unwrap();
    b.destroy_context(p, ctx).unwrap();
    is_handle(b.destroy_context(p, ctx), ObjectKind::Context);

    still_works(&fx, &src, &dst, 0x11);
    b.destroy_process(other.process).unwrap();
    b.destroy_process(fx.process).unwrap();
}

fn bad_ranges(b: &dyn Backend) {
    let fx = Fx::new(b);
    let (p, d) = (fx.process, fx.device);
    let src = fx.buffer(4096);
    let dst = fx.buffer(4096);
    // CPU-visible, 100 bytes: less than the page a mapping of it takes.
    let alloc_100 = || {
        let desc = AllocationDesc {
            size: 100,
            alignment: 0,
            cpu_visible: true,
        };
        b.create_allocation(p, d, &desc).unwrap().0
    };
    let small = alloc_100();

    // Allocations.
    for desc in [
        AllocationDesc {
            size: 0,
            alignment: 0,
            cpu_visible: false,
        },
        AllocationDesc {
            size: 64,
            alignment: 3,
            cpu_visible: false,
        },
        AllocationDesc {
            size: 64,
            alignment: 1 << 20,
            cpu_visible: false,
        },
    ] {
        assert!(matches!(
            b.create_allocation(p, d, &desc),
            Err(BackendError::InvalidParameter { .. })
        ));
    }
    for size in [u64::MAX, u64::MAX - 3, 1 << 62] {
        assert!(matches!(
            b.create_allocation(
                p,
                d,
                &AllocationDesc {
                    size,
                    alignment: 0,
                    cpu_visible: false
                }
            ),
            Err(BackendError::OutOfMemory { .. })
        ));
    }
    is_range(b.set_allocation_memory(p, small, Arc::new(VecMemory::new(50))));
    // LOCK2 needs CPU memory; UNLOCK2 needs a lock.
    assert!(b.lock(p, small).is_err());
    assert!(b.unlock(p, src.alloc).is_err());

    // GPU virtual addresses.
    let map = |base, size, off| VaMapping {
        base,
        minimum: 0,
        maximum: 0,
        size,
        allocation: src.alloc,
        allocation_offset: off,
    };
    is_range(b.map_gpu_va(p, d, &map(0, 8192, 0)));
    is_range(b.map_gpu_va(p, d, &map(0, 4096, u64::MAX - 4095)));
    assert!(b.map_gpu_va(p, d, &map(0, 4096, 5)).is_err());
    assert!(b.map_gpu_va(p, d, &map(0, 100, 0)).is_err());
    assert!(matches!(
        b.map_gpu_va(p, d, &map(0x7000_0000_0000, 4096, 0)),
        Err(BackendError::UnmappedVa { .. })
    ));
    assert!(b
        .reserve_gpu_va(
            p,
            d,
            &VaReservation {
                base: 0,
                minimum: 0,
                maximum: 0,
                size: 0
            }
        )
        .is_err());
    assert!(b
        .reserve_gpu_va(
            p,
            d,
            &VaReservation {
                base: u64::MAX - 4095,
                minimum: 0,
                maximum: 0,
                size: 8192
            }
        )
        .is_err());
    assert!(matches!(
        b.reserve_gpu_va(
            p,
            d,
            &VaReservation {
                base: 0,
                minimum: 0,
                maximum: 0,
                size: 1 << 50
            }
        ),
        Err(BackendError::OutOfMemory { .. })
    ));
    // Overlapping a live range.
    assert!(b
        .reserve_gpu_va(
            p,
            d,
            &VaReservation {
                base: src.va,
                minimum: 0,
                maximum: 0,
                size: 4096
            }
        )
        .is_err());
    // Freeing part of a range, or nothing.
    let r = b
        .reserve_gpu_va(
            p,
            d,
            &VaReservation {
                base: 0,
                minimum: 0,
                maximum: 0,
                size: 1 << 16,
            },
        )
        .unwrap();
    is_range(b.free_gpu_va(p, d, r, 4096));
    assert!(matches!(
        b.free_gpu_va(p, d, 0x7000_0000_0000, 4096),
        Err(BackendError::UnmappedVa { .. })
    ));
    b.free_gpu_va(p, d, r, 1 << 16).unwrap();

    // Commands naming unmapped or too-long ranges.
    for cmd in [
        Command::Copy {
            src_va: src.va,
            dst_va: 0x7000_0000_0000,
            size: 64,
        },
        Command::Copy {
            src_va: src.va,
            dst_va: src.va + 0x10_0000,
            size: 8192,
        },
        Command::Fill {
            dst_va: r,
            size: 64,
            value: 0,
        },
        Command::Timestamp {
            dst_va: dst.va + 4096,
        },
        Command::Upload {
            va: 0x7000_0000_0000,
            size: 64,
        },
        Command::Upload {
            va: src.va + 4032,
            size: 128,
        },
    ] {
        let e = fx.submit(fx.context, vec![cmd.clone()]).unwrap_err();
        assert!(
            matches!(e, BackendError::UnmappedVa { .. }),
            "{cmd:?}: {e:?}"
        );
    }
    // A mapping's last page past the allocation's size (100 bytes here)
    // is slack no command may use.
    let map_page = |allocation| {
        let m = VaMapping {
            allocation,
            ..map(0, 4096, 0)
        };
        b.map_gpu_va(p, d, &m).unwrap()
    };
    let tail = alloc_100();
    b.set_allocation_memory(p, tail, Arc::new(VecMemory::new(4096)))
        .unwrap();
    let tail_va = map_page(tail);
    for cmd in [
        Command::Copy {
            src_va: tail_va + 96,
            dst_va: dst.va,
            size: 64,
        },
        Command::Fill {
            dst_va: tail_va + 4092,
            size: 4,
            value: 0,
        },
        Command::Upload {
            va: tail_va,
            size: 4096,
        },
    ] {
        let e = fx.submit(fx.context, vec![cmd.clone()]).unwrap_err();
        assert!(
            matches!(e, BackendError::UnmappedVa { .. }),
            "{cmd:?}: {e:?}"
        );
    }
    fx.submit(
        fx.context,
        vec![Command::Copy {
            src_va: tail_va + 96,
            dst_va: dst.va,
            size: 4,
        }],
    )
    .unwrap();
    b.destroy_allocation(p, tail).unwrap();
    // UPLOAD takes CPU memory: an allocation without any is refused.
    let small_va = map_page(small);
    let e = fx
        .submit(
            fx.context,
            vec![Command::Upload {
                va: small_va,
                size: 64,
            }],
        )
        .unwrap_err();
    assert!(matches!(e, BackendError::InvalidParameter { .. }), "{e:?}");
    // A malformed stream is a decode error; nothing runs.
    let e = b
        .submit(p, fx.context, CommandBuffer::Bytes(&[1, 2, 3]))
        .unwrap_err();
    assert!(matches!(e, BackendError::Decode { .. }), "{e:?}");
    is_range(b.submit(
        p,
        fx.context,
        CommandBuffer::GpuVa {
            va: src.va,
            length: 0,
        },
    ));
    assert!(b
        .submit(
            p,
            fx.context,
            CommandBuffer::GpuVa {
                va: src.va,
                length: 8192
            }
        )
        .is_err());
    // A stream whose second command is bad runs nothing of the first.
    fx.submit(
        fx.context,
        vec![Command::Fill {
            dst_va: dst.va,
            size: 64,
            value: 0x55,
        }],
    )
    .unwrap();
    assert!(fx
        .submit(
            fx.context,
            vec![
                Command::Fill {
                    dst_va: dst.va,
                    size: 64,
                    value: 0x66
                },
                Command::Copy {
                    src_va: src.va,
                    dst_va: 0x7000_0000_0000,
                    size: 64
                },
            ],
        )
        .is_err());
    assert_eq!(fx.read(&dst)[..4], [0x55, 0, 0, 0]);

    // Fences.
    let f = fx.fence(0);
    is_range(b.signal_from_cpu(p, &[]));
    is_range(b.wait_from_cpu(
        p,
        &vec![FenceValue { fence: f, value: 1 }; 65],
        WaitMode::All,
        None,
    ));
    let storage = Arc::new(VecMemory::new(16));
    is_range(b.create_sync_object(
        p,
        d,
        0,
        Some(FenceStorage {
            memory: storage.clone(),
            offset: 12,
        }),
    ));
    is_range(b.create_sync_object(
        p,
        d,
        0,
        Some(FenceStorage {
            memory: storage,
            offset: u64::MAX,
        }),
    ));

    // Video memory queries.
    assert!(SegmentGroup::from_raw(7).is_err());
    let vm = b
        .query_video_memory(p, fx.adapter, SegmentGroup::Local)
        .unwrap();
    assert!(vm.current_usage == 2 * 4096 + 100 && vm.budget > 0);

    still_works(&fx, &src, &dst, 0x22);
    b.destroy_process(fx.process).unwrap();
}

fn bad_shaders(b: &dyn Backend) {
    let fx = Fx::new(b);
    let (p, d) = (fx.process, fx.device);
    let e = b
        .create_pipeline(
            p,
            d,
            &wgsl("@compute @workgroup_size(1) fn main() { let x: u32 = y; }"),
        )
        .unwrap_err();
    let BackendError::ShaderCompile { message } = &e else {
        panic!("{e:?}")
    };
    assert!(
        message.contains('y'),
        "the compiler's message names the problem: {message}"
    );
    assert_eq!(e.status(), dxvmm_protocol::NtStatus::INVALID_PARAMETER);

    // Through an escape, the compiler's text comes back in the buffer.
    let req = EscapeRequest::CreatePipeline(wgsl("fn main( {")).encode();
    let resp = EscapeResponse::decode(&b.escape(p, d, &req).unwrap()).unwrap();
    assert!(!resp.status.is_success());
    assert_eq!(resp.pipeline, 0);
    assert!(!resp.error.is_empty());
    assert!(matches!(
        b.escape(p, d, &[0; 8]),
        Err(BackendError::Decode { .. })
    ));

    // Too many invocations per workgroup.
    assert!(matches!(
        b.create_pipeline(
            p,
            d,
            &wgsl(
                "@group(0) @binding(0) var<storage, read_write> x: array<u32>;
                   @compute @workgroup_size(1024, 1024) fn main() { x[0] = 1u; }"
            )
        ),
        Err(BackendError::ShaderCompile { .. })
    ));

    // Dispatches that do not match the shader.
    let pl = fx.pipeline(VECTOR_ADD);
    let a = fx.buffer(4096);
    let c = fx.buffer(4096);
    let both = fx.buffer(8192);
    let dispatch = |bindings: Vec<Binding>, groups: [u32; 3]| {
        fx.submit(
            fx.context,
            vec![Command::Dispatch {
                pipeline: pl,
                group_counts: groups,
                bindings,
            }],
        )
    };
    let param = |r: Result<()>| {
        assert!(
            matches!(r, Err(BackendError::InvalidParameter { .. })),
            "{r:?}"
        );
    };
    param(dispatch(vec![a.binding(0), a.binding(1)], [1, 1, 1]));
    param(dispatch(
        vec![a.binding(0), a.binding(1), c.binding(2), c.binding(3)],
        [1, 1, 1],
    ));
    let misaligned = Binding {
        binding: 2,
        read_only: false,
        va: c.va + 4,
        size: 64,
    };
    param(dispatch(
        vec![a.binding(0), a.binding(1), misaligned],
        [1, 1, 1],
    ));
    // One allocation read-only and writable in the same dispatch.
    let half = |slot, off| Binding {
        binding: slot,
        read_only: false,
        va: both.va + off,
        size: 4096,
    };
    param(dispatch(
        vec![half(0, 0), a.binding(1), half(2, 4096)],
        [1, 1, 1],
    ));
    is_range(dispatch(
        vec![
            a.binding(0),
            a.binding(1),
            Binding {
                binding: 2,
                read_only: false,
                va: c.va,
                size: 0x1_0000_0000,
            },
        ],
        [1, 1, 1],
    ));
    // A good one still goes through.
    dispatch(vec![a.binding(0), a.binding(1), c.binding(2)], [1, 1, 1]).unwrap();
    b.destroy_pipeline(p, d, pl).unwrap();
    is_handle(
        dispatch(vec![a.binding(0), a.binding(1), c.binding(2)], [1, 1, 1]),
        ObjectKind::Pipeline,
    );

    still_works(&fx, &a, &c, 0x33);
    b.destroy_process(fx.process).unwrap();
}

#[test]
fn soft_bad_handles() {
    bad_handles(&SoftBackend::new());
}

#[test]
fn soft_bad_ranges() {
    bad_ranges(&SoftBackend::new());
}

#[test]
fn soft_bad_shaders() {
    bad_shaders(&SoftBackend::new());
}

#[test]
fn gpu_bad_handles() {
    if let Some(b) = gpu() {
        bad_handles(b);
    }
}

#[test]
fn gpu_bad_ranges() {
    if let Some(b) = gpu() {
        bad_ranges(b);
    }
}

#[test]
fn gpu_bad_shaders() {
    if let Some(b) = gpu() {
        bad_shaders(b);
    }
}

#[test]
fn soft_double_runs_the_object_model() {
    // What device-dxg tests get: copies, fences and teardown on the CPU.
    let b = SoftBackend::new();
    let fx = Fx::new(&b);
    let src = fx.buffer_with(&[9; 256]);
    let dst = fx.buffer(256);
    let f = fx.fence(0);
    fx.submit(
        fx.context,
        vec![
            Command::Copy {
                src_va: src.va,
                dst_va: dst.va,
                size: 256,
            },
            Command::FenceSignal {
                sync_object: f,
                value: 3,
            },
        ],
    )
    .unwrap();
    b.wait_from_cpu(
        fx.process,
        &[FenceValue { fence: f, value: 3 }],
        WaitMode::All,
        None,
    )
    .unwrap();
    assert_eq!(fx.read(&dst), vec![9; 256]);
    b.destroy_process(fx.process).unwrap();
    b.flush().unwrap();
    assert!(b.counts().is_empty(), "{:?}", b.counts());
}

#[test]
fn devices_of_a_process_share_its_gpu_va_space_on_an_adapter() {
    // As in WDDM: a second device's mappings do not land on the first's
    // addresses, either device may free a range, each works in the same
    // space, and a device takes its own ranges with it.
    let b = SoftBackend::new();
    let first = Fx::new(&b);
    let second = Fx {
        device: b.create_device(first.process, first.adapter).unwrap(),
        ..first
    };
    let second = Fx {
        context: b.create_context(second.process, second.device).unwrap(),
        ..second
    };
    let a = first.buffer_with(&[1; 4096]);
    let c = second.buffer_with(&[2; 4096]);
    assert_ne!(a.va, c.va, "one address space, two ranges");
    // A device maps only its own allocations.
    is_handle(
        b.map_gpu_va(
            first.process,
            first.device,
            &VaMapping {
                base: 0,
                minimum: 0,
                maximum: 0,
                size: 4096,
                allocation: c.alloc,
                allocation_offset: 0,
            },
        ),
        ObjectKind::Allocation,
    );
    // Each context's stream reaches both through the shared space.
    let d = second.buffer(4096);
    second
        .submit(
            second.context,
            vec![Command::Copy {
                src_va: a.va,
                dst_va: d.va,
                size: 4096,
            }],
        )
        .unwrap();
    b.flush().unwrap();
    assert_eq!(second.read(&d), vec![1; 4096]);
    // Freed through the other device, the range is gone for both.
    b.free_gpu_va(first.process, second.device, a.va, 4096)
        .unwrap();
    assert!(matches!(
        b.free_gpu_va(first.process, first.device, a.va, 4096),
        Err(BackendError::UnmappedVa { .. })
    ));
    // Destroying the second device drops its ranges, not the first's.
    let e = first.buffer(4096);
    b.destroy_device(first.process, second.device).unwrap();
    assert!(matches!(
        b.free_gpu_va(first.process, first.device, c.va, 4096),
        Err(BackendError::UnmappedVa { .. })
    ));
    b.free_gpu_va(first.process, first.device, e.va, 4096)
        .unwrap();
    b.destroy_process(first.process).unwrap();
    b.flush().unwrap();
    assert!(b.counts().is_empty(), "{:?}", b.counts());
}
