//! Property tests: every message built from random material encodes to
//! bytes that decode back to the same message, and re-encode identically.

use proptest::prelude::*;
use zerocopy::FromBytes;

use crate::abi::D3dkmtHandle;
use crate::cmdstream::{Binding, Command, CommandStream};
use crate::escape::{CreatePipeline, EscapeRequest, EscapeResponse, ShaderLanguage};
use crate::frame::{encode_frame, Frame, FrameKind};
use crate::message::{HostEvent, Reply, Request};
use crate::ntstatus::NtStatus;
use crate::vmbus::*;

/// Random ingredients a message is built from.
#[derive(Debug, Clone)]
pub struct Material {
    fixed: Vec<u8>,
    tail: Vec<u8>,
    handles: Vec<u32>,
    values: Vec<u64>,
    flag: bool,
}

pub fn material() -> impl Strategy<Value = Material> {
    (
        proptest::collection::vec(any::<u8>(), 768),
        proptest::collection::vec(any::<u8>(), 0..48),
        proptest::collection::vec(any::<u32>(), 1..8),
        proptest::collection::vec(any::<u64>(), 0..8),
        any::<bool>(),
    )
        .prop_map(|(fixed, tail, handles, values, flag)| Material {
            fixed,
            tail,
            handles,
            values,
            flag,
        })
}

fn fixed<T: FromBytes>(m: &Material) -> T {
    T::read_from_prefix(&m.fixed)
        .expect("material is larger than any struct")
        .0
}

fn handles(m: &Material) -> Vec<D3dkmtHandle> {
    m.handles.iter().map(|&h| D3dkmtHandle(h)).collect()
}

fn vh(cmd: u32, m: &Material) -> DxgkvmbCommandVgpuToHost {
    let mut h: DxgkvmbCommandVgpuToHost = fixed(m);
    h.channel_type = DXGKVMB_VGPU_TO_HOST;
    h.command_type = cmd;
    h
}

fn gh(cmd: u32, m: &Material) -> DxgkvmbCommandVmToHost {
    let mut h: DxgkvmbCommandVmToHost = fixed(m);
    h.channel_type = DXGKVMB_VM_TO_HOST;
    h.command_type = cmd;
    h
}

/// Number of request kinds [`build`] makes.
pub const KINDS: usize = 40;

/// Builds request kind `i` from random material, keeping the few values
/// the decoder range-checks inside their limits.
pub fn build(i: usize, m: &Material) -> Request {
    use global as g;
    use vgpu as v;
    macro_rules! simple {
        ($variant:ident, $ty:ty, $hdr:expr) => {{
            let mut c: $ty = fixed(m);
            c.hdr = $hdr;
            Request::$variant(c)
        }};
    }
    let hs = handles(m);
    let n = hs.len();
    match i {
        0 => {
            let mut c: DxgkvmbCommandCreateProcess = fixed(m);
            c.hdr = gh(g::DXGK_VMBCOMMAND_CREATEPROCESS, m);
            Request::CreateProcess(Box::new(c))
        }
        1 => simple!(
            DestroyProcess,
            DxgkvmbCommandDestroyProcess,
            gh(g::DXGK_VMBCOMMAND_DESTROYPROCESS, m)
        ),
        2 => simple!(
            OpenSyncObject,
            DxgkvmbCommandOpenSyncObject,
            gh(g::DXGK_VMBCOMMAND_OPENSYNCOBJECT, m)
        ),
        3 => simple!(
            DestroySyncObject,
            DxgkvmbCommandDestroySyncObject,
            gh(g::DXGK_VMBCOMMAND_DESTROYSYNCOBJECT, m)
        ),
        4 => simple!(
            SetIoSpaceRegion,
            DxgkvmbCommandSetIoSpaceRegion,
            gh(g::DXGK_VMBCOMMAND_SETIOSPACEREGION, m)
        ),
        5 => simple!(
            OpenAdapter,
            DxgkvmbCommandOpenAdapter,
            vh(v::DXGK_VMBCOMMAND_OPENADAPTER, m)
        ),
        6 => simple!(
            CloseAdapter,
            DxgkvmbCommandCloseAdapter,
            vh(v::DXGK_VMBCOMMAND_CLOSEADAPTER, m)
        ),
        7 => simple!(
            GetInternalAdapterInfo,
            DxgkvmbCommandGetInternalAdapterInfo,
            vh(v::DXGK_VMBCOMMAND_GETINTERNALADAPTERINFO, m)
        ),
        8 => {
            let mut cmd: DxgkvmbCommandQueryAdapterInfo = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_QUERYADAPTERINFO, m);
            Request::QueryAdapterInfo {
                cmd,
                private_data: m.tail.clone(),
            }
        }
        9 => simple!(
            QueryVideoMemoryInfo,
            DxgkvmbCommandQueryVideoMemoryInfo,
            vh(v::DXGK_VMBCOMMAND_QUERYVIDEOMEMORYINFO, m)
        ),
        10 => simple!(
            CreateDevice,
            DxgkvmbCommandCreateDevice,
            vh(v::DXGK_VMBCOMMAND_CREATEDEVICE, m)
        ),
        11 => simple!(
            DestroyDevice,
            DxgkvmbCommandDestroyDevice,
            vh(v::DXGK_VMBCOMMAND_DESTROYDEVICE, m)
        ),
        12 => simple!(
            FlushDevice,
            DxgkvmbCommandFlushDevice,
            vh(v::DXGK_VMBCOMMAND_FLUSHDEVICE, m)
        ),
        13 => simple!(
            GetDeviceState,
            DxgkvmbCommandGetDeviceState,
            vh(v::DXGK_VMBCOMMAND_GETDEVICESTATE, m)
        ),
        14 => {
            let mut cmd: DxgkvmbCommandCreateContextVirtual = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_CREATECONTEXTVIRTUAL, m);
            Request::CreateContextVirtual {
                cmd,
                priv_drv_data: m.tail.clone(),
            }
        }
        15 => simple!(
            DestroyContext,
            DxgkvmbCommandDestroyContext,
            vh(v::DXGK_VMBCOMMAND_DESTROYCONTEXT, m)
        ),
        16 => {
            let mut cmd: DxgkvmbCommandCreateHwQueue = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_CREATEHWQUEUE, m);
            Request::CreateHwQueue {
                cmd,
                priv_drv_data: m.tail.clone(),
            }
        }
        17 => simple!(
            DestroyHwQueue,
            DxgkvmbCommandDestroyHwQueue,
            vh(v::DXGK_VMBCOMMAND_DESTROYHWQUEUE, m)
        ),
        18 => simple!(
            CreatePagingQueue,
            DxgkvmbCommandCreatePagingQueue,
            vh(v::DXGK_VMBCOMMAND_CREATEPAGINGQUEUE, m)
        ),
        19 => simple!(
            DestroyPagingQueue,
            DxgkvmbCommandDestroyPagingQueue,
            vh(v::DXGK_VMBCOMMAND_DESTROYPAGINGQUEUE, m)
        ),
        20 => {
            let mut cmd: DxgkvmbCommandCreateAllocation = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_CREATEALLOCATION, m);
            let info: DxgkvmbCommandCreateAllocationAllocInfo = fixed(m);
            let split = m.tail.len() / 3;
            Request::CreateAllocation {
                cmd,
                alloc_info: vec![info; n],
                private_runtime_data: m.tail[..split].to_vec(),
                priv_drv_data: m.tail[split..2 * split].to_vec(),
                alloc_priv_drv_data: (0..n)
                    .map(|k| {
                        if k == 0 {
                            m.tail[2 * split..].to_vec()
                        } else {
                            vec![k as u8]
                        }
                    })
                    .collect(),
            }
        }
        21 => {
            let mut cmd: DxgkvmbCommandSetExistingSysmemPages = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES, m);
            Request::SetExistingSysmemPages {
                cmd,
                pfns: m.values.clone(),
            }
        }
        22 => {
            let mut cmd: DxgkvmbCommandDestroyAllocation = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_DESTROYALLOCATION, m);
            Request::DestroyAllocation {
                cmd,
                allocations: hs,
            }
        }
        23 => {
            let mut cmd: DxgkvmbCommandMakeResident = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_MAKERESIDENT, m);
            Request::MakeResident {
                cmd,
                allocations: hs,
            }
        }
        24 => {
            let mut cmd: DxgkvmbCommandEvict = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_EVICT, m);
            Request::Evict {
                cmd,
                allocations: hs,
            }
        }
        25 => {
            let mut cmd: DxgkvmbCommandQueryAllocationResidency = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_QUERYALLOCATIONRESIDENCY, m);
            Request::QueryAllocationResidency {
                cmd,
                allocations: hs,
            }
        }
        26 => {
            let mut cmd: DxgkvmbCommandGetAllocationPriority = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_GETALLOCATIONPRIORITY, m);
            Request::GetAllocationPriority {
                cmd,
                allocations: hs,
            }
        }
        27 => {
            let mut cmd: DxgkvmbCommandSetAllocationPriority = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_SETALLOCATIONPRIORITY, m);
            let (allocations, priorities) = if m.flag {
                (hs.clone(), m.handles.clone())
            } else {
                (vec![], vec![7])
            };
            Request::SetAllocationPriority {
                cmd,
                allocations,
                priorities,
            }
        }
        28 => simple!(Lock2, DxgkvmbCommandLock2, vh(v::DXGK_VMBCOMMAND_LOCK2, m)),
        29 => simple!(
            Unlock2,
            DxgkvmbCommandUnlock2,
            vh(v::DXGK_VMBCOMMAND_UNLOCK2, m)
        ),
        30 => simple!(
            ReserveGpuVirtualAddress,
            DxgkvmbCommandReserveGpuVirtualAddress,
            vh(v::DXGK_VMBCOMMAND_RESERVEGPUVIRTUALADDRESS, m)
        ),
        31 => simple!(
            MapGpuVirtualAddress,
            DxgkvmbCommandMapGpuVirtualAddress,
            vh(v::DXGK_VMBCOMMAND_MAPGPUVIRTUALADDRESS, m)
        ),
        32 => simple!(
            FreeGpuVirtualAddress,
            DxgkvmbCommandFreeGpuVirtualAddress,
            vh(v::DXGK_VMBCOMMAND_FREEGPUVIRTUALADDRESS, m)
        ),
        33 => simple!(
            CreateSyncObject,
            DxgkvmbCommandCreateSyncObject,
            vh(v::DXGK_VMBCOMMAND_CREATESYNCOBJECT, m)
        ),
        34 => {
            let mut cmd: DxgkvmbCommandSignalSyncObject = fixed(m);
            let mut hdr = vh(v::DXGK_VMBCOMMAND_SIGNALSYNCOBJECT, m);
            if m.flag {
                hdr.channel_type |= CHANNEL_FLAG_ASYNC_MSG;
            }
            cmd.hdr = hdr;
            let fence_values = if m.flag {
                m.handles.iter().map(|&h| u64::from(h) << 3).collect()
            } else {
                vec![]
            };
            Request::SignalSyncObject {
                cmd,
                objects: hs.clone(),
                contexts: hs[..n / 2].to_vec(),
                fence_values,
            }
        }
        35 => {
            let mut cmd: DxgkvmbCommandWaitForSyncObjectFromCpu = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMCPU, m);
            let fence_values = m.handles.iter().map(|&h| u64::from(h) + 1).collect();
            Request::WaitForSyncObjectFromCpu {
                cmd,
                objects: hs,
                fence_values,
            }
        }
        36 => {
            let mut cmd: DxgkvmbCommandWaitForSyncObjectFromGpu = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMGPU, m);
            let fence_values = m.handles.iter().map(|&h| u64::from(h) * 3).collect();
            Request::WaitForSyncObjectFromGpu {
                cmd,
                fence_values,
                objects: hs,
            }
        }
        37 => {
            let mut cmd: DxgkvmbCommandSubmitCommand = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_SUBMITCOMMAND, m);
            cmd.args.broadcast_context_count %= 65;
            cmd.args.num_primaries %= 17;
            Request::SubmitCommand {
                cmd: Box::new(cmd),
                history_buffers: hs,
                priv_drv_data: m.tail.clone(),
            }
        }
        38 => {
            let mut cmd: DxgkvmbCommandSubmitCommandToHwQueue = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE, m);
            Request::SubmitCommandToHwQueue {
                cmd,
                written_primaries: hs[..n.min(16)].to_vec(),
                priv_drv_data: m.tail.clone(),
            }
        }
        _ => {
            let mut cmd: DxgkvmbCommandEscape = fixed(m);
            cmd.hdr = vh(v::DXGK_VMBCOMMAND_ESCAPE, m);
            Request::Escape {
                cmd,
                priv_drv_data: m.tail.clone(),
            }
        }
    }
}

/// A plausible reply to `req` built from random material.
pub fn build_reply(req: &Request, m: &Material) -> Reply {
    if req.is_async() {
        return Reply::Empty;
    }
    let st = NtStatus(fixed::<i32>(m));
    match req {
        Request::CloseAdapter(_) => Reply::Empty,
        Request::CreateProcess(_) => Reply::CreateProcess(fixed(m)),
        Request::OpenSyncObject(_) => Reply::OpenSyncObject(fixed(m)),
        Request::OpenAdapter(_) => Reply::OpenAdapter(fixed(m)),
        Request::GetInternalAdapterInfo(_) => Reply::GetInternalAdapterInfo(Box::new(fixed(m))),
        Request::QueryAdapterInfo { private_data, .. } => Reply::QueryAdapterInfo {
            status: st,
            private_data: private_data.iter().map(|b| b ^ 0x5a).collect(),
        },
        Request::QueryVideoMemoryInfo(_) => Reply::QueryVideoMemoryInfo(fixed(m)),
        Request::CreateDevice(_) => Reply::CreateDevice(fixed(m)),
        Request::GetDeviceState(_) => Reply::GetDeviceState(fixed(m)),
        Request::CreateContextVirtual { cmd, priv_drv_data } => Reply::CreateContextVirtual {
            cmd: *cmd,
            priv_drv_data: priv_drv_data.clone(),
        },
        Request::CreateHwQueue { cmd, priv_drv_data } => Reply::CreateHwQueue {
            cmd: *cmd,
            priv_drv_data: priv_drv_data.clone(),
        },
        Request::CreatePagingQueue(_) => Reply::CreatePagingQueue(fixed(m)),
        Request::CreateAllocation { alloc_info, .. } => Reply::CreateAllocation {
            ret: fixed(m),
            allocation_info: vec![fixed(m); alloc_info.len()],
            alloc_priv_drv_data: (0..alloc_info.len()).map(|k| vec![k as u8; k]).collect(),
        },
        Request::MakeResident { .. } => Reply::MakeResident(fixed(m)),
        Request::Evict { .. } => Reply::Evict(fixed(m)),
        Request::QueryAllocationResidency { allocations, .. } => Reply::QueryAllocationResidency {
            status: st,
            residency_status: vec![1; allocations.len()],
        },
        Request::GetAllocationPriority { allocations, .. } => Reply::GetAllocationPriority {
            status: st,
            priorities: vec![2; allocations.len().max(1)],
        },
        Request::Lock2(_) => Reply::Lock2(fixed(m)),
        Request::ReserveGpuVirtualAddress(_) => Reply::ReserveGpuVirtualAddress(fixed(m)),
        Request::MapGpuVirtualAddress(_) => Reply::MapGpuVirtualAddress(fixed(m)),
        Request::CreateSyncObject(_) => Reply::CreateSyncObject(fixed(m)),
        Request::Escape { priv_drv_data, .. } => Reply::Escape {
            priv_drv_data: priv_drv_data.iter().rev().copied().collect(),
        },
        _ => Reply::Status(st),
    }
}

proptest! {
    #[test]
    fn request_round_trip(i in 0..KINDS, m in material()) {
        // Encoding takes counts and sizes from the tails, so the random
        // counts in `req` are replaced; the decoded message must then be a
        // fixed point of encode/decode.
        let req = build(i, &m);
        let bytes = req.encode();
        let back = Request::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{}: {e}", req.name())))?;
        prop_assert_eq!(back.encode(), bytes.clone());
        prop_assert_eq!(Request::decode(&bytes).unwrap(), back.clone());
        prop_assert_eq!(back.command_type(), req.command_type());
        // The trace format: serde through JSON and back.
        let json = serde_json::to_string(&back).unwrap();
        prop_assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), back);
    }

    #[test]
    fn reply_round_trip(i in 0..KINDS, m in material()) {
        let req = Request::decode(&build(i, &m).encode()).unwrap();
        let reply = build_reply(&req, &m);
        let bytes = reply.encode();
        let back = Reply::decode(&req, &bytes).unwrap();
        prop_assert_eq!(back.encode(), bytes);
        let json = serde_json::to_string(&back).unwrap();
        prop_assert_eq!(serde_json::from_str::<Reply>(&json).unwrap(), back);
    }

    #[test]
    fn frame_round_trip(id in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..256), a in any::<u32>()) {
        let luid = crate::abi::WinLuid { a, b: 0 };
        let bytes = encode_frame(FrameKind::Request, id, luid, NtStatus::SUCCESS, &payload);
        let f = Frame::parse(&bytes, FrameKind::Request).unwrap();
        prop_assert_eq!(f.header.request_id, id);
        prop_assert_eq!(f.header.vgpu_luid, luid);
        prop_assert_eq!(f.payload, payload.as_slice());
        prop_assert_eq!(f.to_bytes(), bytes);
    }

    #[test]
    fn event_round_trip(event in any::<u64>(), pid in any::<u64>(), p in any::<u32>()) {
        let ev = HostEvent::signal(D3dkmtHandle(p), event, pid);
        prop_assert_eq!(HostEvent::decode(&ev.encode()).unwrap(), ev);
    }

    #[test]
    fn command_stream_round_trip(cmds in proptest::collection::vec(command(), 0..24)) {
        let stream = CommandStream { commands: cmds };
        let bytes = stream.encode();
        prop_assert_eq!(CommandStream::decode(&bytes).unwrap(), stream.clone());
        let json = serde_json::to_string(&stream).unwrap();
        prop_assert_eq!(serde_json::from_str::<CommandStream>(&json).unwrap(), stream);
    }

    #[test]
    fn escape_round_trip(
        spirv in any::<bool>(),
        words in proptest::collection::vec(any::<u32>(), 1..32),
        entry in "[a-z_][a-z0-9_]{0,15}",
        cap in 0u32..64,
        err in "[ -~]{0,80}",
        pipeline in any::<u32>(),
    ) {
        let source: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let req = EscapeRequest::CreatePipeline(CreatePipeline {
            language: if spirv { ShaderLanguage::SpirV } else { ShaderLanguage::Wgsl },
            source,
            entry_point: entry,
            error_capacity: cap,
        });
        let bytes = req.encode();
        prop_assert_eq!(EscapeRequest::decode(&bytes).unwrap(), req);
        let resp = EscapeResponse { status: NtStatus::INVALID_PARAMETER, pipeline, error: err.clone() };
        let out = resp.encode_into_request(&bytes).unwrap();
        let back = EscapeResponse::decode(&out).unwrap();
        prop_assert_eq!(back.pipeline, pipeline);
        let keep = err.len().min(cap as usize);
        prop_assert_eq!(back.error, &err[..keep]);
    }
}

fn command() -> impl Strategy<Value = Command> {
    let aligned = (0u64..1 << 40).prop_map(|v| v * 4);
    let size = (1u64..1 << 20).prop_map(|v| v * 4);
    prop_oneof![
        (aligned.clone(), size.clone()).prop_map(|(src, size)| Command::Copy {
            src_va: src,
            dst_va: src + size + 4,
            size
        }),
        (aligned.clone(), size.clone(), any::<u32>()).prop_map(|(dst_va, size, value)| {
            Command::Fill {
                dst_va,
                size,
                value,
            }
        }),
        (
            any::<u32>(),
            [1u32..65536, 1u32..65536, 1u32..65536],
            proptest::collection::vec((aligned.clone(), size, any::<bool>()), 0..8)
        )
            .prop_map(|(pipeline, group_counts, b)| Command::Dispatch {
                pipeline,
                group_counts,
                bindings: b
                    .into_iter()
                    .enumerate()
                    .map(|(i, (va, size, ro))| Binding {
                        binding: i as u32,
                        read_only: ro,
                        va,
                        size
                    })
                    .collect(),
            }),
        (0u64..1 << 40).prop_map(|v| Command::Timestamp { dst_va: v * 8 }),
        (1u32.., any::<u64>()).prop_map(|(h, value)| Command::FenceSignal {
            sync_object: D3dkmtHandle(h),
            value
        }),
        (1u32.., any::<u64>()).prop_map(|(h, value)| Command::FenceWait {
            sync_object: D3dkmtHandle(h),
            value
        }),
        (0u64..1 << 40, 1u64..1 << 30).prop_map(|(v, n)| Command::Upload {
            va: v * 4,
            size: n * 4
        }),
    ]
}
