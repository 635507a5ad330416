//! Decoded GPU-PV messages: every command dxvmm implements as one enum
//! variant holding its fixed struct and its tails, with encode and a
//! validating decode. These are what the device dispatches on and what the
//! trace format records (hence serde).

use serde::{Deserialize, Serialize};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::abi::{
    D3dkmtHandle, D3DDDI_MAX_BROADCAST_CONTEXT, D3DDDI_MAX_OBJECT_SIGNALED,
    D3DDDI_MAX_OBJECT_WAITED_ON, D3DDDI_MAX_WRITTEN_PRIMARIES, D3DKMT_CREATEALLOCATION_MAX,
    D3DKMT_MAKERESIDENT_ALLOC_MAX,
};
use crate::error::{check_count, DecodeError, Reader};
use crate::ntstatus::NtStatus;
use crate::vmbus::{self, global, host_to_vm, vgpu, *};

/// Most history buffers one SUBMITCOMMAND may name.
pub const MAX_HISTORY_BUFFERS: u32 = 1024;
/// Most pages one SETEXISTINGSYSMEMPAGES may carry (what fits in a payload).
pub const MAX_PAGES_PER_MESSAGE: u32 =
    ((DXG_MAX_VM_BUS_PACKET_SIZE - DxgkvmbCommandSetExistingSysmemPages::SIZE) / 8) as u32;

/// A guest-to-host command, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    // Global channel.
    CreateProcess(Box<DxgkvmbCommandCreateProcess>),
    DestroyProcess(DxgkvmbCommandDestroyProcess),
    OpenSyncObject(DxgkvmbCommandOpenSyncObject),
    DestroySyncObject(DxgkvmbCommandDestroySyncObject),
    SetIoSpaceRegion(DxgkvmbCommandSetIoSpaceRegion),
    // Per adapter.
    OpenAdapter(DxgkvmbCommandOpenAdapter),
    CloseAdapter(DxgkvmbCommandCloseAdapter),
    GetInternalAdapterInfo(DxgkvmbCommandGetInternalAdapterInfo),
    QueryAdapterInfo {
        cmd: DxgkvmbCommandQueryAdapterInfo,
        private_data: Vec<u8>,
    },
    QueryVideoMemoryInfo(DxgkvmbCommandQueryVideoMemoryInfo),
    CreateDevice(DxgkvmbCommandCreateDevice),
    DestroyDevice(DxgkvmbCommandDestroyDevice),
    FlushDevice(DxgkvmbCommandFlushDevice),
    GetDeviceState(DxgkvmbCommandGetDeviceState),
    CreateContextVirtual {
        cmd: DxgkvmbCommandCreateContextVirtual,
        priv_drv_data: Vec<u8>,
    },
    DestroyContext(DxgkvmbCommandDestroyContext),
    CreateHwQueue {
        cmd: DxgkvmbCommandCreateHwQueue,
        priv_drv_data: Vec<u8>,
    },
    DestroyHwQueue(DxgkvmbCommandDestroyHwQueue),
    CreatePagingQueue(DxgkvmbCommandCreatePagingQueue),
    DestroyPagingQueue(DxgkvmbCommandDestroyPagingQueue),
    CreateAllocation {
        cmd: DxgkvmbCommandCreateAllocation,
        alloc_info: Vec<DxgkvmbCommandCreateAllocationAllocInfo>,
        private_runtime_data: Vec<u8>,
        priv_drv_data: Vec<u8>,
        /// One entry per `alloc_info`, of its `priv_drv_data_size` bytes.
        alloc_priv_drv_data: Vec<Vec<u8>>,
    },
    SetExistingSysmemPages {
        cmd: DxgkvmbCommandSetExistingSysmemPages,
        /// Guest page frame numbers (4 KiB pages).
        pfns: Vec<u64>,
    },
    DestroyAllocation {
        cmd: DxgkvmbCommandDestroyAllocation,
        allocations: Vec<D3dkmtHandle>,
    },
    MakeResident {
        cmd: DxgkvmbCommandMakeResident,
        allocations: Vec<D3dkmtHandle>,
    },
    Evict {
        cmd: DxgkvmbCommandEvict,
        allocations: Vec<D3dkmtHandle>,
    },
    QueryAllocationResidency {
        cmd: DxgkvmbCommandQueryAllocationResidency,
        allocations: Vec<D3dkmtHandle>,
    },
    GetAllocationPriority {
        cmd: DxgkvmbCommandGetAllocationPriority,
        allocations: Vec<D3dkmtHandle>,
    },
    SetAllocationPriority {
        cmd: DxgkvmbCommandSetAllocationPriority,
        allocations: Vec<D3dkmtHandle>,
        /// `max(allocation_count, 1)` entries.
        priorities: Vec<u32>,
    },
    Lock2(DxgkvmbCommandLock2),
    Unlock2(DxgkvmbCommandUnlock2),
    ReserveGpuVirtualAddress(DxgkvmbCommandReserveGpuVirtualAddress),
    MapGpuVirtualAddress(DxgkvmbCommandMapGpuVirtualAddress),
    FreeGpuVirtualAddress(DxgkvmbCommandFreeGpuVirtualAddress),
    CreateSyncObject(DxgkvmbCommandCreateSyncObject),
    SignalSyncObject {
        cmd: DxgkvmbCommandSignalSyncObject,
        objects: Vec<D3dkmtHandle>,
        contexts: Vec<D3dkmtHandle>,
        /// Empty, or one value per object (monitored fences).
        fence_values: Vec<u64>,
    },
    WaitForSyncObjectFromCpu {
        cmd: DxgkvmbCommandWaitForSyncObjectFromCpu,
        objects: Vec<D3dkmtHandle>,
        fence_values: Vec<u64>,
    },
    WaitForSyncObjectFromGpu {
        cmd: DxgkvmbCommandWaitForSyncObjectFromGpu,
        fence_values: Vec<u64>,
        objects: Vec<D3dkmtHandle>,
    },
    SubmitCommand {
        cmd: Box<DxgkvmbCommandSubmitCommand>,
        history_buffers: Vec<D3dkmtHandle>,
        priv_drv_data: Vec<u8>,
    },
    SubmitCommandToHwQueue {
        cmd: DxgkvmbCommandSubmitCommandToHwQueue,
        written_primaries: Vec<D3dkmtHandle>,
        priv_drv_data: Vec<u8>,
    },
    Escape {
        cmd: DxgkvmbCommandEscape,
        priv_drv_data: Vec<u8>,
    },
}

fn put<T: IntoBytes + Immutable + ?Sized>(out: &mut Vec<u8>, v: &T) {
    out.extend_from_slice(v.as_bytes());
}

fn len_u32(len: usize) -> u32 {
    // Tails over 4 GiB cannot be built by any caller (payloads are capped at
    // 128 KiB); saturating keeps encode total and lets decode reject them.
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn read_fixed<T: FromBytes + KnownLayout + Immutable>(payload: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(payload, "command");
    let v = r.read()?;
    r.finish()?;
    Ok(v)
}

impl Request {
    /// The channel the command travels on ([`DXGKVMB_VM_TO_HOST`] or
    /// [`DXGKVMB_VGPU_TO_HOST`]).
    pub fn channel_type(&self) -> u32 {
        match self {
            Request::CreateProcess(_)
            | Request::DestroyProcess(_)
            | Request::OpenSyncObject(_)
            | Request::DestroySyncObject(_)
            | Request::SetIoSpaceRegion(_) => DXGKVMB_VM_TO_HOST,
            _ => DXGKVMB_VGPU_TO_HOST,
        }
    }

    /// The `DXGK_VMBCOMMAND_*` number.
    pub fn command_type(&self) -> u32 {
        match self {
            Request::CreateProcess(_) => global::DXGK_VMBCOMMAND_CREATEPROCESS,
            Request::DestroyProcess(_) => global::DXGK_VMBCOMMAND_DESTROYPROCESS,
            Request::OpenSyncObject(_) => global::DXGK_VMBCOMMAND_OPENSYNCOBJECT,
            Request::DestroySyncObject(_) => global::DXGK_VMBCOMMAND_DESTROYSYNCOBJECT,
            Request::SetIoSpaceRegion(_) => global::DXGK_VMBCOMMAND_SETIOSPACEREGION,
            Request::OpenAdapter(_) => vgpu::DXGK_VMBCOMMAND_OPENADAPTER,
            Request::CloseAdapter(_) => vgpu::DXGK_VMBCOMMAND_CLOSEADAPTER,
            Request::GetInternalAdapterInfo(_) => vgpu::DXGK_VMBCOMMAND_GETINTERNALADAPTERINFO,
            Request::QueryAdapterInfo { .. } => vgpu::DXGK_VMBCOMMAND_QUERYADAPTERINFO,
            Request::QueryVideoMemoryInfo(_) => vgpu::DXGK_VMBCOMMAND_QUERYVIDEOMEMORYINFO,
            Request::CreateDevice(_) => vgpu::DXGK_VMBCOMMAND_CREATEDEVICE,
            Request::DestroyDevice(_) => vgpu::DXGK_VMBCOMMAND_DESTROYDEVICE,
            Request::FlushDevice(_) => vgpu::DXGK_VMBCOMMAND_FLUSHDEVICE,
            Request::GetDeviceState(_) => vgpu::DXGK_VMBCOMMAND_GETDEVICESTATE,
            Request::CreateContextVirtual { .. } => vgpu::DXGK_VMBCOMMAND_CREATECONTEXTVIRTUAL,
            Request::DestroyContext(_) => vgpu::DXGK_VMBCOMMAND_DESTROYCONTEXT,
            Request::CreateHwQueue { .. } => vgpu::DXGK_VMBCOMMAND_CREATEHWQUEUE,
            Request::DestroyHwQueue(_) => vgpu::DXGK_VMBCOMMAND_DESTROYHWQUEUE,
            Request::CreatePagingQueue(_) => vgpu::DXGK_VMBCOMMAND_CREATEPAGINGQUEUE,
            Request::DestroyPagingQueue(_) => vgpu::DXGK_VMBCOMMAND_DESTROYPAGINGQUEUE,
            Request::CreateAllocation { .. } => vgpu::DXGK_VMBCOMMAND_CREATEALLOCATION,
            Request::SetExistingSysmemPages { .. } => vgpu::DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES,
            Request::DestroyAllocation { .. } => vgpu::DXGK_VMBCOMMAND_DESTROYALLOCATION,
            Request::MakeResident { .. } => vgpu::DXGK_VMBCOMMAND_MAKERESIDENT,
            Request::Evict { .. } => vgpu::DXGK_VMBCOMMAND_EVICT,
            Request::QueryAllocationResidency { .. } => {
                vgpu::DXGK_VMBCOMMAND_QUERYALLOCATIONRESIDENCY
            }
            Request::GetAllocationPriority { .. } => vgpu::DXGK_VMBCOMMAND_GETALLOCATIONPRIORITY,
            Request::SetAllocationPriority { .. } => vgpu::DXGK_VMBCOMMAND_SETALLOCATIONPRIORITY,
            Request::Lock2(_) => vgpu::DXGK_VMBCOMMAND_LOCK2,
            Request::Unlock2(_) => vgpu::DXGK_VMBCOMMAND_UNLOCK2,
            Request::ReserveGpuVirtualAddress(_) => vgpu::DXGK_VMBCOMMAND_RESERVEGPUVIRTUALADDRESS,
            Request::MapGpuVirtualAddress(_) => vgpu::DXGK_VMBCOMMAND_MAPGPUVIRTUALADDRESS,
            Request::FreeGpuVirtualAddress(_) => vgpu::DXGK_VMBCOMMAND_FREEGPUVIRTUALADDRESS,
            Request::CreateSyncObject(_) => vgpu::DXGK_VMBCOMMAND_CREATESYNCOBJECT,
            Request::SignalSyncObject { .. } => vgpu::DXGK_VMBCOMMAND_SIGNALSYNCOBJECT,
            Request::WaitForSyncObjectFromCpu { .. } => {
                vgpu::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMCPU
            }
            Request::WaitForSyncObjectFromGpu { .. } => {
                vgpu::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMGPU
            }
            Request::SubmitCommand { .. } => vgpu::DXGK_VMBCOMMAND_SUBMITCOMMAND,
            Request::SubmitCommandToHwQueue { .. } => vgpu::DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE,
            Request::Escape { .. } => vgpu::DXGK_VMBCOMMAND_ESCAPE,
        }
    }

    /// The command's name as dxgkrnl spells it, for traces.
    pub fn name(&self) -> &'static str {
        command_name(self.channel_type(), self.command_type()).unwrap_or("?")
    }

    /// The command header, as the vGPU layout (both request header kinds
    /// share it byte for byte).
    pub fn header(&self) -> DxgkvmbCommandVgpuToHost {
        let g = |h: DxgkvmbCommandVmToHost| -> DxgkvmbCommandVgpuToHost { zerocopy::transmute!(h) };
        match self {
            Request::CreateProcess(c) => g(c.hdr),
            Request::DestroyProcess(c) => g(c.hdr),
            Request::OpenSyncObject(c) => g(c.hdr),
            Request::DestroySyncObject(c) => g(c.hdr),
            Request::SetIoSpaceRegion(c) => g(c.hdr),
            Request::OpenAdapter(c) => c.hdr,
            Request::CloseAdapter(c) => c.hdr,
            Request::GetInternalAdapterInfo(c) => c.hdr,
            Request::QueryAdapterInfo { cmd, .. } => cmd.hdr,
            Request::QueryVideoMemoryInfo(c) => c.hdr,
            Request::CreateDevice(c) => c.hdr,
            Request::DestroyDevice(c) => c.hdr,
            Request::FlushDevice(c) => c.hdr,
            Request::GetDeviceState(c) => c.hdr,
            Request::CreateContextVirtual { cmd, .. } => cmd.hdr,
            Request::DestroyContext(c) => c.hdr,
            Request::CreateHwQueue { cmd, .. } => cmd.hdr,
            Request::DestroyHwQueue(c) => c.hdr,
            Request::CreatePagingQueue(c) => c.hdr,
            Request::DestroyPagingQueue(c) => c.hdr,
            Request::CreateAllocation { cmd, .. } => cmd.hdr,
            Request::SetExistingSysmemPages { cmd, .. } => cmd.hdr,
            Request::DestroyAllocation { cmd, .. } => cmd.hdr,
            Request::MakeResident { cmd, .. } => cmd.hdr,
            Request::Evict { cmd, .. } => cmd.hdr,
            Request::QueryAllocationResidency { cmd, .. } => cmd.hdr,
            Request::GetAllocationPriority { cmd, .. } => cmd.hdr,
            Request::SetAllocationPriority { cmd, .. } => cmd.hdr,
            Request::Lock2(c) => c.hdr,
            Request::Unlock2(c) => c.hdr,
            Request::ReserveGpuVirtualAddress(c) => c.hdr,
            Request::MapGpuVirtualAddress(c) => c.hdr,
            Request::FreeGpuVirtualAddress(c) => c.hdr,
            Request::CreateSyncObject(c) => c.hdr,
            Request::SignalSyncObject { cmd, .. } => cmd.hdr,
            Request::WaitForSyncObjectFromCpu { cmd, .. } => cmd.hdr,
            Request::WaitForSyncObjectFromGpu { cmd, .. } => cmd.hdr,
            Request::SubmitCommand { cmd, .. } => cmd.hdr,
            Request::SubmitCommandToHwQueue { cmd, .. } => cmd.hdr,
            Request::Escape { cmd, .. } => cmd.hdr,
        }
    }

    /// Host handle of the process the command is for (0 for commands the
    /// guest driver sends on its own behalf, such as OPENADAPTER).
    pub fn process(&self) -> D3dkmtHandle {
        self.header().process
    }

    /// True when the sender set the async bit and no reply payload comes.
    pub fn is_async(&self) -> bool {
        self.channel_type() == DXGKVMB_VGPU_TO_HOST && self.header().async_msg()
    }

    /// Encodes the command into a frame payload. Counts and sizes in the
    /// fixed part that describe a tail are taken from the tail, so the
    /// output always decodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Request::CreateProcess(c) => put(&mut out, &**c),
            Request::DestroyProcess(c) => put(&mut out, c),
            Request::OpenSyncObject(c) => put(&mut out, c),
            Request::DestroySyncObject(c) => put(&mut out, c),
            Request::SetIoSpaceRegion(c) => put(&mut out, c),
            Request::OpenAdapter(c) => put(&mut out, c),
            Request::CloseAdapter(c) => put(&mut out, c),
            Request::GetInternalAdapterInfo(c) => put(&mut out, c),
            Request::QueryAdapterInfo { cmd, private_data } => {
                let mut cmd = *cmd;
                cmd.private_data_size = len_u32(private_data.len());
                put(&mut out, &cmd);
                out.extend_from_slice(private_data);
            }
            Request::QueryVideoMemoryInfo(c) => put(&mut out, c),
            Request::CreateDevice(c) => put(&mut out, c),
            Request::DestroyDevice(c) => put(&mut out, c),
            Request::FlushDevice(c) => put(&mut out, c),
            Request::GetDeviceState(c) => put(&mut out, c),
            Request::CreateContextVirtual { cmd, priv_drv_data } => {
                let mut cmd = *cmd;
                cmd.priv_drv_data_size = len_u32(priv_drv_data.len());
                put(&mut out, &cmd);
                out.extend_from_slice(priv_drv_data);
            }
            Request::DestroyContext(c) => put(&mut out, c),
            Request::CreateHwQueue { cmd, priv_drv_data } => {
                let mut cmd = *cmd;
                cmd.priv_drv_data_size = len_u32(priv_drv_data.len());
                put(&mut out, &cmd);
                out.extend_from_slice(priv_drv_data);
            }
            Request::DestroyHwQueue(c) => put(&mut out, c),
            Request::CreatePagingQueue(c) => put(&mut out, c),
            Request::DestroyPagingQueue(c) => put(&mut out, c),
            Request::CreateAllocation {
                cmd,
                alloc_info,
                private_runtime_data,
                priv_drv_data,
                alloc_priv_drv_data,
            } => {
                let mut cmd = *cmd;
                cmd.alloc_count = len_u32(alloc_info.len());
                cmd.private_runtime_data_size = len_u32(private_runtime_data.len());
                cmd.priv_drv_data_size = len_u32(priv_drv_data.len());
                put(&mut out, &cmd);
                for (i, info) in alloc_info.iter().enumerate() {
                    let mut info = *info;
                    info.priv_drv_data_size =
                        len_u32(alloc_priv_drv_data.get(i).map_or(0, Vec::len));
                    put(&mut out, &info);
                }
                out.extend_from_slice(private_runtime_data);
                out.extend_from_slice(priv_drv_data);
                for data in alloc_priv_drv_data.iter().take(alloc_info.len()) {
                    out.extend_from_slice(data);
                }
            }
            Request::SetExistingSysmemPages { cmd, pfns } => {
                let mut cmd = *cmd;
                cmd.num_pages = len_u32(pfns.len());
                put(&mut out, &cmd);
                put(&mut out, pfns.as_slice());
            }
            Request::DestroyAllocation { cmd, allocations } => {
                let mut cmd = *cmd;
                cmd.alloc_count = len_u32(allocations.len());
                put(&mut out, &cmd);
                put(&mut out, allocations.as_slice());
            }
            Request::MakeResident { cmd, allocations } => {
                let mut cmd = *cmd;
                cmd.alloc_count = len_u32(allocations.len());
                put(&mut out, &cmd);
                put(&mut out, allocations.as_slice());
            }
            Request::Evict { cmd, allocations } => {
                let mut cmd = *cmd;
                cmd.alloc_count = len_u32(allocations.len());
                put(&mut out, &cmd);
                put(&mut out, allocations.as_slice());
            }
            Request::QueryAllocationResidency { cmd, allocations } => {
                let mut cmd = *cmd;
                cmd.args.allocation_count = len_u32(allocations.len());
                put(&mut out, &cmd);
                put(&mut out, allocations.as_slice());
            }
            Request::GetAllocationPriority { cmd, allocations } => {
                let mut cmd = *cmd;
                cmd.allocation_count = len_u32(allocations.len());
                put(&mut out, &cmd);
                put(&mut out, allocations.as_slice());
            }
            Request::SetAllocationPriority {
                cmd,
                allocations,
                priorities,
            } => {
                let mut cmd = *cmd;
                cmd.allocation_count = len_u32(allocations.len());
                put(&mut out, &cmd);
                put(&mut out, allocations.as_slice());
                put(&mut out, priorities.as_slice());
            }
            Request::Lock2(c) => put(&mut out, c),
            Request::Unlock2(c) => put(&mut out, c),
            Request::ReserveGpuVirtualAddress(c) => put(&mut out, c),
            Request::MapGpuVirtualAddress(c) => put(&mut out, c),
            Request::FreeGpuVirtualAddress(c) => put(&mut out, c),
            Request::CreateSyncObject(c) => put(&mut out, c),
            Request::SignalSyncObject {
                cmd,
                objects,
                contexts,
                fence_values,
            } => {
                let mut cmd = *cmd;
                cmd.object_count = len_u32(objects.len());
                cmd.context_count = len_u32(contexts.len());
                put(&mut out, &cmd);
                put(&mut out, objects.as_slice());
                put(&mut out, contexts.as_slice());
                put(&mut out, fence_values.as_slice());
            }
            Request::WaitForSyncObjectFromCpu {
                cmd,
                objects,
                fence_values,
            } => {
                let mut cmd = *cmd;
                cmd.object_count = len_u32(objects.len());
                put(&mut out, &cmd);
                put(&mut out, objects.as_slice());
                put(&mut out, fence_values.as_slice());
            }
            Request::WaitForSyncObjectFromGpu {
                cmd,
                fence_values,
                objects,
            } => {
                let mut cmd = *cmd;
                cmd.object_count = len_u32(objects.len());
                put(&mut out, &cmd);
                put(&mut out, fence_values.as_slice());
                put(&mut out, objects.as_slice());
            }
            Request::SubmitCommand {
                cmd,
                history_buffers,
                priv_drv_data,
            } => {
                let mut cmd = **cmd;
                cmd.args.num_history_buffers = len_u32(history_buffers.len());
                cmd.args.priv_drv_data_size = len_u32(priv_drv_data.len());
                put(&mut out, &cmd);
                put(&mut out, history_buffers.as_slice());
                out.extend_from_slice(priv_drv_data);
            }
            Request::SubmitCommandToHwQueue {
                cmd,
                written_primaries,
                priv_drv_data,
            } => {
                let mut cmd = *cmd;
                cmd.args.num_primaries = len_u32(written_primaries.len());
                cmd.args.priv_drv_data_size = len_u32(priv_drv_data.len());
                put(&mut out, &cmd);
                put(&mut out, written_primaries.as_slice());
                out.extend_from_slice(priv_drv_data);
            }
            Request::Escape { cmd, priv_drv_data } => {
                let mut cmd = *cmd;
                cmd.priv_drv_data_size = len_u32(priv_drv_data.len());
                put(&mut out, &cmd);
                out.extend_from_slice(priv_drv_data);
            }
        }
        out
    }

    /// Decodes a frame payload from the guest. Every count is checked
    /// against its limit and against the bytes present; the payload must be
    /// consumed exactly.
    pub fn decode(payload: &[u8]) -> Result<Request, DecodeError> {
        if payload.len() > DXG_MAX_VM_BUS_PACKET_SIZE {
            return Err(DecodeError::TooLarge {
                what: "command",
                len: payload.len(),
                max: DXG_MAX_VM_BUS_PACKET_SIZE,
            });
        }
        // Both request header kinds share the first 24 bytes' layout.
        let hdr: DxgkvmbCommandVgpuToHost = Reader::new(payload, "command header").read()?;
        let channel = hdr.channel();
        match channel {
            DXGKVMB_VM_TO_HOST => {
                // The global header has no flag bits: the whole word is the
                // channel type.
                if hdr.channel_type != DXGKVMB_VM_TO_HOST {
                    return Err(DecodeError::UnknownChannel(hdr.channel_type));
                }
                decode_global(hdr.command_type, payload)
            }
            DXGKVMB_VGPU_TO_HOST => {
                if hdr.channel_type & !(0xff | CHANNEL_FLAG_ASYNC_MSG) != 0 {
                    return Err(DecodeError::InvalidValue {
                        what: "vgpu header reserved bits",
                        value: hdr.channel_type.into(),
                    });
                }
                decode_vgpu(hdr.command_type, payload)
            }
            other => Err(DecodeError::UnknownChannel(other)),
        }
    }
}

fn decode_global(command: u32, payload: &[u8]) -> Result<Request, DecodeError> {
    Ok(match command {
        global::DXGK_VMBCOMMAND_CREATEPROCESS => {
            Request::CreateProcess(Box::new(read_fixed(payload)?))
        }
        global::DXGK_VMBCOMMAND_DESTROYPROCESS => Request::DestroyProcess(read_fixed(payload)?),
        global::DXGK_VMBCOMMAND_OPENSYNCOBJECT => Request::OpenSyncObject(read_fixed(payload)?),
        global::DXGK_VMBCOMMAND_DESTROYSYNCOBJECT => {
            Request::DestroySyncObject(read_fixed(payload)?)
        }
        global::DXGK_VMBCOMMAND_SETIOSPACEREGION => Request::SetIoSpaceRegion(read_fixed(payload)?),
        c if command_name(DXGKVMB_VM_TO_HOST, c).is_some() => {
            return Err(DecodeError::Unsupported {
                channel: DXGKVMB_VM_TO_HOST,
                command: c,
            })
        }
        c => {
            return Err(DecodeError::UnknownCommand {
                channel: DXGKVMB_VM_TO_HOST,
                command: c,
            })
        }
    })
}

fn decode_vgpu(command: u32, payload: &[u8]) -> Result<Request, DecodeError> {
    let mut r = Reader::new(payload, vgpu_name(command));
    let req = match command {
        vgpu::DXGK_VMBCOMMAND_OPENADAPTER => Request::OpenAdapter(r.read()?),
        vgpu::DXGK_VMBCOMMAND_CLOSEADAPTER => Request::CloseAdapter(r.read()?),
        vgpu::DXGK_VMBCOMMAND_GETINTERNALADAPTERINFO => Request::GetInternalAdapterInfo(r.read()?),
        vgpu::DXGK_VMBCOMMAND_QUERYADAPTERINFO => {
            let cmd: DxgkvmbCommandQueryAdapterInfo = r.read()?;
            let n = check_count(
                "query private_data_size",
                cmd.private_data_size,
                DXG_MAX_VM_BUS_PACKET_SIZE as u32,
            )?;
            Request::QueryAdapterInfo {
                cmd,
                private_data: r.bytes(n)?.to_vec(),
            }
        }
        vgpu::DXGK_VMBCOMMAND_QUERYVIDEOMEMORYINFO => Request::QueryVideoMemoryInfo(r.read()?),
        vgpu::DXGK_VMBCOMMAND_CREATEDEVICE => Request::CreateDevice(r.read()?),
        vgpu::DXGK_VMBCOMMAND_DESTROYDEVICE => Request::DestroyDevice(r.read()?),
        vgpu::DXGK_VMBCOMMAND_FLUSHDEVICE => Request::FlushDevice(r.read()?),
        vgpu::DXGK_VMBCOMMAND_GETDEVICESTATE => Request::GetDeviceState(r.read()?),
        vgpu::DXGK_VMBCOMMAND_CREATECONTEXTVIRTUAL => {
            let cmd: DxgkvmbCommandCreateContextVirtual = r.read()?;
            let n = check_count(
                "context priv_drv_data_size",
                cmd.priv_drv_data_size,
                DXG_MAX_VM_BUS_PACKET_SIZE as u32,
            )?;
            Request::CreateContextVirtual {
                cmd,
                priv_drv_data: r.bytes(n)?.to_vec(),
            }
        }
        vgpu::DXGK_VMBCOMMAND_DESTROYCONTEXT => Request::DestroyContext(r.read()?),
        vgpu::DXGK_VMBCOMMAND_CREATEHWQUEUE => {
            let cmd: DxgkvmbCommandCreateHwQueue = r.read()?;
            let n = check_count(
                "hwqueue priv_drv_data_size",
                cmd.priv_drv_data_size,
                DXG_MAX_VM_BUS_PACKET_SIZE as u32,
            )?;
            Request::CreateHwQueue {
                cmd,
                priv_drv_data: r.bytes(n)?.to_vec(),
            }
        }
        vgpu::DXGK_VMBCOMMAND_DESTROYHWQUEUE => Request::DestroyHwQueue(r.read()?),
        vgpu::DXGK_VMBCOMMAND_CREATEPAGINGQUEUE => Request::CreatePagingQueue(r.read()?),
        vgpu::DXGK_VMBCOMMAND_DESTROYPAGINGQUEUE => Request::DestroyPagingQueue(r.read()?),
        vgpu::DXGK_VMBCOMMAND_CREATEALLOCATION => {
            let cmd: DxgkvmbCommandCreateAllocation = r.read()?;
            if cmd.alloc_count == 0 {
                return Err(DecodeError::InvalidValue {
                    what: "alloc_count",
                    value: 0,
                });
            }
            let n = check_count("alloc_count", cmd.alloc_count, D3DKMT_CREATEALLOCATION_MAX)?;
            let alloc_info: Vec<DxgkvmbCommandCreateAllocationAllocInfo> = r.array(n)?;
            let private_runtime_data = r.bytes(cmd.private_runtime_data_size as usize)?.to_vec();
            let priv_drv_data = r.bytes(cmd.priv_drv_data_size as usize)?.to_vec();
            let mut alloc_priv_drv_data = Vec::with_capacity(n);
            for info in &alloc_info {
                alloc_priv_drv_data.push(r.bytes(info.priv_drv_data_size as usize)?.to_vec());
            }
            Request::CreateAllocation {
                cmd,
                alloc_info,
                private_runtime_data,
                priv_drv_data,
                alloc_priv_drv_data,
            }
        }
        vgpu::DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES => {
            let cmd: DxgkvmbCommandSetExistingSysmemPages = r.read()?;
            let n = check_count("num_pages", cmd.num_pages, MAX_PAGES_PER_MESSAGE)?;
            Request::SetExistingSysmemPages {
                cmd,
                pfns: r.array(n)?,
            }
        }
        vgpu::DXGK_VMBCOMMAND_DESTROYALLOCATION => {
            let cmd: DxgkvmbCommandDestroyAllocation = r.read()?;
            let n = check_count(
                "alloc_count",
                cmd.alloc_count,
                D3DKMT_MAKERESIDENT_ALLOC_MAX,
            )?;
            Request::DestroyAllocation {
                cmd,
                allocations: r.array(n)?,
            }
        }
        vgpu::DXGK_VMBCOMMAND_MAKERESIDENT => {
            let cmd: DxgkvmbCommandMakeResident = r.read()?;
            let n = check_count(
                "alloc_count",
                cmd.alloc_count,
                D3DKMT_MAKERESIDENT_ALLOC_MAX,
            )?;
            Request::MakeResident {
                cmd,
                allocations: r.array(n)?,
            }
        }
        vgpu::DXGK_VMBCOMMAND_EVICT => {
            let cmd: DxgkvmbCommandEvict = r.read()?;
            let n = check_count(
                "alloc_count",
                cmd.alloc_count,
                D3DKMT_MAKERESIDENT_ALLOC_MAX,
            )?;
            Request::Evict {
                cmd,
                allocations: r.array(n)?,
            }
        }
        vgpu::DXGK_VMBCOMMAND_QUERYALLOCATIONRESIDENCY => {
            let cmd: DxgkvmbCommandQueryAllocationResidency = r.read()?;
            let n = check_count(
                "allocation_count",
                cmd.args.allocation_count,
                D3DKMT_MAKERESIDENT_ALLOC_MAX,
            )?;
            Request::QueryAllocationResidency {
                cmd,
                allocations: r.array(n)?,
            }
        }
        vgpu::DXGK_VMBCOMMAND_GETALLOCATIONPRIORITY => {
            let cmd: DxgkvmbCommandGetAllocationPriority = r.read()?;
            let n = check_count(
                "allocation_count",
                cmd.allocation_count,
                D3DKMT_MAKERESIDENT_ALLOC_MAX,
            )?;
            Request::GetAllocationPriority {
                cmd,
                allocations: r.array(n)?,
            }
        }
        vgpu::DXGK_VMBCOMMAND_SETALLOCATIONPRIORITY => {
            let cmd: DxgkvmbCommandSetAllocationPriority = r.read()?;
            let n = check_count(
                "allocation_count",
                cmd.allocation_count,
                D3DKMT_MAKERESIDENT_ALLOC_MAX,
            )?;
            let allocations = r.array(n)?;
            // With no allocation list the one priority applies to the resource.
            let priorities = r.array(n.max(1))?;
            Request::SetAllocationPriority {
                cmd,
                allocations,
                priorities,
            }
        }
        vgpu::DXGK_VMBCOMMAND_LOCK2 => Request::Lock2(r.read()?),
        vgpu::DXGK_VMBCOMMAND_UNLOCK2 => Request::Unlock2(r.read()?),
        vgpu::DXGK_VMBCOMMAND_RESERVEGPUVIRTUALADDRESS => {
            Request::ReserveGpuVirtualAddress(r.read()?)
        }
        vgpu::DXGK_VMBCOMMAND_MAPGPUVIRTUALADDRESS => Request::MapGpuVirtualAddress(r.read()?),
        vgpu::DXGK_VMBCOMMAND_FREEGPUVIRTUALADDRESS => Request::FreeGpuVirtualAddress(r.read()?),
        vgpu::DXGK_VMBCOMMAND_CREATESYNCOBJECT => Request::CreateSyncObject(r.read()?),
        vgpu::DXGK_VMBCOMMAND_SIGNALSYNCOBJECT => {
            let cmd: DxgkvmbCommandSignalSyncObject = r.read()?;
            let n = check_count("object_count", cmd.object_count, D3DDDI_MAX_OBJECT_SIGNALED)?;
            let c = check_count(
                "context_count",
                cmd.context_count,
                D3DDDI_MAX_BROADCAST_CONTEXT as u32,
            )?;
            let objects = r.array(n)?;
            let contexts = r.array(c)?;
            // The fence value array is present only for monitored fences;
            // anything else left over is a size error.
            let fence_values = if r.remaining() == 0 {
                Vec::new()
            } else {
                r.array(n)?
            };
            Request::SignalSyncObject {
                cmd,
                objects,
                contexts,
                fence_values,
            }
        }
        vgpu::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMCPU => {
            let cmd: DxgkvmbCommandWaitForSyncObjectFromCpu = r.read()?;
            let n = check_count(
                "object_count",
                cmd.object_count,
                D3DDDI_MAX_OBJECT_WAITED_ON,
            )?;
            let objects = r.array(n)?;
            let fence_values = r.array(n)?;
            Request::WaitForSyncObjectFromCpu {
                cmd,
                objects,
                fence_values,
            }
        }
        vgpu::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMGPU => {
            let cmd: DxgkvmbCommandWaitForSyncObjectFromGpu = r.read()?;
            let n = check_count(
                "object_count",
                cmd.object_count,
                D3DDDI_MAX_OBJECT_WAITED_ON,
            )?;
            let fence_values = r.array(n)?;
            let objects = r.array(n)?;
            Request::WaitForSyncObjectFromGpu {
                cmd,
                fence_values,
                objects,
            }
        }
        vgpu::DXGK_VMBCOMMAND_SUBMITCOMMAND => {
            let cmd: DxgkvmbCommandSubmitCommand = r.read()?;
            check_count(
                "broadcast_context_count",
                cmd.args.broadcast_context_count,
                D3DDDI_MAX_BROADCAST_CONTEXT as u32,
            )?;
            check_count(
                "num_primaries",
                cmd.args.num_primaries,
                D3DDDI_MAX_WRITTEN_PRIMARIES as u32,
            )?;
            let h = check_count(
                "num_history_buffers",
                cmd.args.num_history_buffers,
                MAX_HISTORY_BUFFERS,
            )?;
            let history_buffers = r.array(h)?;
            let priv_drv_data = r.bytes(cmd.args.priv_drv_data_size as usize)?.to_vec();
            Request::SubmitCommand {
                cmd: Box::new(cmd),
                history_buffers,
                priv_drv_data,
            }
        }
        vgpu::DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE => {
            let cmd: DxgkvmbCommandSubmitCommandToHwQueue = r.read()?;
            let p = check_count(
                "num_primaries",
                cmd.args.num_primaries,
                D3DDDI_MAX_WRITTEN_PRIMARIES as u32,
            )?;
            let written_primaries = r.array(p)?;
            let priv_drv_data = r.bytes(cmd.args.priv_drv_data_size as usize)?.to_vec();
            Request::SubmitCommandToHwQueue {
                cmd,
                written_primaries,
                priv_drv_data,
            }
        }
        vgpu::DXGK_VMBCOMMAND_ESCAPE => {
            let cmd: DxgkvmbCommandEscape = r.read()?;
            let n = check_count(
                "escape priv_drv_data_size",
                cmd.priv_drv_data_size,
                DXG_MAX_VM_BUS_PACKET_SIZE as u32,
            )?;
            Request::Escape {
                cmd,
                priv_drv_data: r.bytes(n)?.to_vec(),
            }
        }
        c if command_name(DXGKVMB_VGPU_TO_HOST, c).is_some() => {
            return Err(DecodeError::Unsupported {
                channel: DXGKVMB_VGPU_TO_HOST,
                command: c,
            })
        }
        c => {
            return Err(DecodeError::UnknownCommand {
                channel: DXGKVMB_VGPU_TO_HOST,
                command: c,
            })
        }
    };
    r.finish()?;
    Ok(req)
}

fn vgpu_name(command: u32) -> &'static str {
    command_name(DXGKVMB_VGPU_TO_HOST, command).unwrap_or("vgpu command")
}

/// A reply to a [`Request`], decoded. Replies carry no command number (as
/// on VMBus they are paired with their request by id), so decoding needs the
/// request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Commands whose reply is a bare NTSTATUS.
    Status(NtStatus),
    /// CLOSEADAPTER and async commands: no payload.
    Empty,
    CreateProcess(DxgkvmbCommandCreateProcessReturn),
    OpenSyncObject(DxgkvmbCommandOpenSyncObjectReturn),
    OpenAdapter(DxgkvmbCommandOpenAdapterReturn),
    GetInternalAdapterInfo(Box<DxgkvmbCommandGetInternalAdapterInfoReturn>),
    QueryAdapterInfo {
        status: NtStatus,
        private_data: Vec<u8>,
    },
    QueryVideoMemoryInfo(DxgkvmbCommandQueryVideoMemoryInfoReturn),
    CreateDevice(DxgkvmbCommandCreateDeviceReturn),
    GetDeviceState(DxgkvmbCommandGetDeviceStateReturn),
    /// The request echoed back with the context handle filled in.
    CreateContextVirtual {
        cmd: DxgkvmbCommandCreateContextVirtual,
        priv_drv_data: Vec<u8>,
    },
    /// The request echoed back with status, queue and fence filled in.
    CreateHwQueue {
        cmd: DxgkvmbCommandCreateHwQueue,
        priv_drv_data: Vec<u8>,
    },
    CreatePagingQueue(DxgkvmbCommandCreatePagingQueueReturn),
    CreateAllocation {
        ret: DxgkvmbCommandCreateAllocationReturn,
        allocation_info: Vec<DxgkvmbCommandAllocInfoReturn>,
        /// One entry per allocation, of its `priv_drv_data_size` bytes.
        alloc_priv_drv_data: Vec<Vec<u8>>,
    },
    MakeResident(DxgkvmbCommandMakeResidentReturn),
    Evict(DxgkvmbCommandEvictReturn),
    QueryAllocationResidency {
        status: NtStatus,
        residency_status: Vec<u32>,
    },
    GetAllocationPriority {
        status: NtStatus,
        priorities: Vec<u32>,
    },
    Lock2(DxgkvmbCommandLock2Return),
    ReserveGpuVirtualAddress(DxgkvmbCommandReserveGpuVirtualAddressReturn),
    MapGpuVirtualAddress(DxgkvmbCommandMapGpuVirtualAddressReturn),
    CreateSyncObject(DxgkvmbCommandCreateSyncObjectReturn),
    /// ESCAPE's reply is the private data only, the request's size.
    Escape {
        priv_drv_data: Vec<u8>,
    },
}

impl Reply {
    /// Encodes the reply payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Reply::Status(s) => put(&mut out, s),
            Reply::Empty => {}
            Reply::CreateProcess(r) => put(&mut out, r),
            Reply::OpenSyncObject(r) => put(&mut out, r),
            Reply::OpenAdapter(r) => put(&mut out, r),
            Reply::GetInternalAdapterInfo(r) => put(&mut out, &**r),
            Reply::QueryAdapterInfo {
                status,
                private_data,
            } => {
                put(&mut out, status);
                out.extend_from_slice(private_data);
            }
            Reply::QueryVideoMemoryInfo(r) => put(&mut out, r),
            Reply::CreateDevice(r) => put(&mut out, r),
            Reply::GetDeviceState(r) => put(&mut out, r),
            Reply::CreateContextVirtual { cmd, priv_drv_data } => {
                let mut cmd = *cmd;
                cmd.priv_drv_data_size = len_u32(priv_drv_data.len());
                put(&mut out, &cmd);
                out.extend_from_slice(priv_drv_data);
            }
            Reply::CreateHwQueue { cmd, priv_drv_data } => {
                let mut cmd = *cmd;
                cmd.priv_drv_data_size = len_u32(priv_drv_data.len());
                put(&mut out, &cmd);
                out.extend_from_slice(priv_drv_data);
            }
            Reply::CreatePagingQueue(r) => put(&mut out, r),
            Reply::CreateAllocation {
                ret,
                allocation_info,
                alloc_priv_drv_data,
            } => {
                put(&mut out, ret);
                for (i, info) in allocation_info.iter().enumerate() {
                    let mut info = *info;
                    info.priv_drv_data_size =
                        len_u32(alloc_priv_drv_data.get(i).map_or(0, Vec::len));
                    put(&mut out, &info);
                }
                for data in alloc_priv_drv_data.iter().take(allocation_info.len()) {
                    out.extend_from_slice(data);
                }
            }
            Reply::MakeResident(r) => put(&mut out, r),
            Reply::Evict(r) => put(&mut out, r),
            Reply::QueryAllocationResidency {
                status,
                residency_status,
            } => {
                put(&mut out, status);
                put(&mut out, residency_status.as_slice());
            }
            Reply::GetAllocationPriority { status, priorities } => {
                put(&mut out, status);
                put(&mut out, priorities.as_slice());
            }
            Reply::Lock2(r) => put(&mut out, r),
            Reply::ReserveGpuVirtualAddress(r) => put(&mut out, r),
            Reply::MapGpuVirtualAddress(r) => put(&mut out, r),
            Reply::CreateSyncObject(r) => put(&mut out, r),
            Reply::Escape { priv_drv_data } => out.extend_from_slice(priv_drv_data),
        }
        out
    }

    /// Decodes the reply payload to `request`. Sizes the request fixed (the
    /// number of allocations, the private data size) must match exactly.
    pub fn decode(request: &Request, payload: &[u8]) -> Result<Reply, DecodeError> {
        let mut r = Reader::new(payload, "reply");
        if request.is_async() {
            r.finish()?;
            return Ok(Reply::Empty);
        }
        let reply = match request {
            Request::DestroyProcess(_)
            | Request::DestroySyncObject(_)
            | Request::SetIoSpaceRegion(_)
            | Request::DestroyDevice(_)
            | Request::FlushDevice(_)
            | Request::DestroyContext(_)
            | Request::DestroyHwQueue(_)
            | Request::DestroyPagingQueue(_)
            | Request::SetExistingSysmemPages { .. }
            | Request::DestroyAllocation { .. }
            | Request::SetAllocationPriority { .. }
            | Request::Unlock2(_)
            | Request::FreeGpuVirtualAddress(_)
            | Request::SignalSyncObject { .. }
            | Request::WaitForSyncObjectFromCpu { .. }
            | Request::WaitForSyncObjectFromGpu { .. }
            | Request::SubmitCommand { .. }
            | Request::SubmitCommandToHwQueue { .. } => Reply::Status(r.read()?),
            Request::CloseAdapter(_) => Reply::Empty,
            Request::CreateProcess(_) => Reply::CreateProcess(r.read()?),
            Request::OpenSyncObject(_) => Reply::OpenSyncObject(r.read()?),
            Request::OpenAdapter(_) => Reply::OpenAdapter(r.read()?),
            Request::GetInternalAdapterInfo(_) => {
                Reply::GetInternalAdapterInfo(Box::new(r.read()?))
            }
            Request::QueryAdapterInfo { private_data, .. } => Reply::QueryAdapterInfo {
                status: r.read()?,
                private_data: r.bytes(private_data.len())?.to_vec(),
            },
            Request::QueryVideoMemoryInfo(_) => Reply::QueryVideoMemoryInfo(r.read()?),
            Request::CreateDevice(_) => Reply::CreateDevice(r.read()?),
            Request::GetDeviceState(_) => Reply::GetDeviceState(r.read()?),
            Request::CreateContextVirtual { priv_drv_data, .. } => {
                let cmd: DxgkvmbCommandCreateContextVirtual = r.read()?;
                if cmd.priv_drv_data_size as usize != priv_drv_data.len() {
                    return Err(DecodeError::InvalidValue {
                        what: "echoed priv_drv_data_size",
                        value: cmd.priv_drv_data_size.into(),
                    });
                }
                Reply::CreateContextVirtual {
                    cmd,
                    priv_drv_data: r.bytes(priv_drv_data.len())?.to_vec(),
                }
            }
            Request::CreateHwQueue { priv_drv_data, .. } => {
                let cmd: DxgkvmbCommandCreateHwQueue = r.read()?;
                if cmd.priv_drv_data_size as usize != priv_drv_data.len() {
                    return Err(DecodeError::InvalidValue {
                        what: "echoed priv_drv_data_size",
                        value: cmd.priv_drv_data_size.into(),
                    });
                }
                Reply::CreateHwQueue {
                    cmd,
                    priv_drv_data: r.bytes(priv_drv_data.len())?.to_vec(),
                }
            }
            Request::CreatePagingQueue(_) => Reply::CreatePagingQueue(r.read()?),
            Request::CreateAllocation { alloc_info, .. } => {
                let ret = r.read()?;
                let allocation_info: Vec<DxgkvmbCommandAllocInfoReturn> =
                    r.array(alloc_info.len())?;
                let mut alloc_priv_drv_data = Vec::with_capacity(allocation_info.len());
                for info in &allocation_info {
                    alloc_priv_drv_data.push(r.bytes(info.priv_drv_data_size as usize)?.to_vec());
                }
                Reply::CreateAllocation {
                    ret,
                    allocation_info,
                    alloc_priv_drv_data,
                }
            }
            Request::MakeResident { .. } => Reply::MakeResident(r.read()?),
            Request::Evict { .. } => Reply::Evict(r.read()?),
            Request::QueryAllocationResidency { allocations, .. } => {
                Reply::QueryAllocationResidency {
                    status: r.read()?,
                    residency_status: r.array(allocations.len())?,
                }
            }
            Request::GetAllocationPriority { allocations, .. } => Reply::GetAllocationPriority {
                status: r.read()?,
                priorities: r.array(allocations.len().max(1))?,
            },
            Request::Lock2(_) => Reply::Lock2(r.read()?),
            Request::ReserveGpuVirtualAddress(_) => Reply::ReserveGpuVirtualAddress(r.read()?),
            Request::MapGpuVirtualAddress(_) => Reply::MapGpuVirtualAddress(r.read()?),
            Request::CreateSyncObject(_) => Reply::CreateSyncObject(r.read()?),
            Request::Escape { priv_drv_data, .. } => Reply::Escape {
                priv_drv_data: r.bytes(priv_drv_data.len())?.to_vec(),
            },
        };
        r.finish()?;
        Ok(reply)
    }
}

/// A host-to-guest event, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostEvent {
    SignalGuestEvent(DxgkvmbCommandSignalGuestEvent),
    SignalGuestEventPassive(DxgkvmbCommandSignalGuestEvent),
    SetGuestData(DxgkvmbCommandSetGuestData),
}

impl HostEvent {
    /// Encodes the event payload.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            HostEvent::SignalGuestEvent(c) | HostEvent::SignalGuestEventPassive(c) => {
                c.as_bytes().to_vec()
            }
            HostEvent::SetGuestData(c) => c.as_bytes().to_vec(),
        }
    }

    /// Decodes an event payload from the host.
    pub fn decode(payload: &[u8]) -> Result<HostEvent, DecodeError> {
        let hdr: DxgkvmbCommandHostToVm = Reader::new(payload, "event header").read()?;
        if hdr.channel_type & 0xff != DXGKVMB_HOST_TO_VM {
            return Err(DecodeError::UnknownChannel(hdr.channel_type));
        }
        let event = match hdr.command_type {
            host_to_vm::DXGK_VMBCOMMAND_SIGNALGUESTEVENT => {
                HostEvent::SignalGuestEvent(read_fixed(payload)?)
            }
            host_to_vm::DXGK_VMBCOMMAND_SIGNALGUESTEVENTPASSIVE => {
                HostEvent::SignalGuestEventPassive(read_fixed(payload)?)
            }
            host_to_vm::DXGK_VMBCOMMAND_SETGUESTDATA => {
                HostEvent::SetGuestData(read_fixed(payload)?)
            }
            c if command_name(DXGKVMB_HOST_TO_VM, c).is_some() => {
                return Err(DecodeError::Unsupported {
                    channel: DXGKVMB_HOST_TO_VM,
                    command: c,
                })
            }
            c => {
                return Err(DecodeError::UnknownCommand {
                    channel: DXGKVMB_HOST_TO_VM,
                    command: c,
                })
            }
        };
        Ok(event)
    }

    /// A SIGNALGUESTEVENT for guest event `event`.
    pub fn signal(process: D3dkmtHandle, event: u64, process_id: u64) -> HostEvent {
        HostEvent::SignalGuestEvent(DxgkvmbCommandSignalGuestEvent {
            hdr: DxgkvmbCommandHostToVm::new(host_to_vm::DXGK_VMBCOMMAND_SIGNALGUESTEVENT, process),
            event,
            process_id,
            dereference_event: 0,
            _pad0: [0; 7],
        })
    }
}

/// The dxgkrnl name of command `command` on `channel`, if it has one.
pub fn command_name(channel: u32, command: u32) -> Option<&'static str> {
    use vmbus::global as g;
    use vmbus::host_to_vm as h;
    use vmbus::vgpu as v;
    macro_rules! names {
        ($m:ident: $($c:ident),* $(,)?) => {
            match command { $( $m::$c => Some(stringify!($c)), )* _ => None }
        };
    }
    match channel {
        DXGKVMB_VM_TO_HOST => names!(g:
            DXGK_VMBCOMMAND_CREATEPROCESS, DXGK_VMBCOMMAND_DESTROYPROCESS,
            DXGK_VMBCOMMAND_OPENSYNCOBJECT, DXGK_VMBCOMMAND_DESTROYSYNCOBJECT,
            DXGK_VMBCOMMAND_CREATENTSHAREDOBJECT, DXGK_VMBCOMMAND_DESTROYNTSHAREDOBJECT,
            DXGK_VMBCOMMAND_SIGNALFENCE, DXGK_VMBCOMMAND_NOTIFYPROCESSFREEZE,
            DXGK_VMBCOMMAND_NOTIFYPROCESSTHAW, DXGK_VMBCOMMAND_QUERYETWSESSION,
            DXGK_VMBCOMMAND_SETIOSPACEREGION, DXGK_VMBCOMMAND_COMPLETETRANSACTION,
            DXGK_VMBCOMMAND_SHAREOBJECTWITHHOST, DXGK_VMBCOMMAND_ISFEATUREENABLED_GLOBAL,
        ),
        DXGKVMB_VGPU_TO_HOST => names!(v:
            DXGK_VMBCOMMAND_CREATEDEVICE, DXGK_VMBCOMMAND_DESTROYDEVICE,
            DXGK_VMBCOMMAND_QUERYADAPTERINFO, DXGK_VMBCOMMAND_DDIQUERYADAPTERINFO,
            DXGK_VMBCOMMAND_CREATEALLOCATION, DXGK_VMBCOMMAND_DESTROYALLOCATION,
            DXGK_VMBCOMMAND_CREATECONTEXTVIRTUAL, DXGK_VMBCOMMAND_DESTROYCONTEXT,
            DXGK_VMBCOMMAND_CREATESYNCOBJECT, DXGK_VMBCOMMAND_CREATEPAGINGQUEUE,
            DXGK_VMBCOMMAND_DESTROYPAGINGQUEUE, DXGK_VMBCOMMAND_MAKERESIDENT,
            DXGK_VMBCOMMAND_EVICT, DXGK_VMBCOMMAND_ESCAPE, DXGK_VMBCOMMAND_OPENADAPTER,
            DXGK_VMBCOMMAND_CLOSEADAPTER, DXGK_VMBCOMMAND_FREEGPUVIRTUALADDRESS,
            DXGK_VMBCOMMAND_MAPGPUVIRTUALADDRESS, DXGK_VMBCOMMAND_RESERVEGPUVIRTUALADDRESS,
            DXGK_VMBCOMMAND_UPDATEGPUVIRTUALADDRESS, DXGK_VMBCOMMAND_SUBMITCOMMAND,
            DXGK_VMBCOMMAND_QUERYVIDEOMEMORYINFO, DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMCPU,
            DXGK_VMBCOMMAND_LOCK2, DXGK_VMBCOMMAND_UNLOCK2,
            DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMGPU, DXGK_VMBCOMMAND_SIGNALSYNCOBJECT,
            DXGK_VMBCOMMAND_SIGNALFENCENTSHAREDBYREF, DXGK_VMBCOMMAND_GETDEVICESTATE,
            DXGK_VMBCOMMAND_MARKDEVICEASERROR, DXGK_VMBCOMMAND_ADAPTERSTOP,
            DXGK_VMBCOMMAND_SETQUEUEDLIMIT, DXGK_VMBCOMMAND_OPENRESOURCE,
            DXGK_VMBCOMMAND_SETCONTEXTSCHEDULINGPRIORITY, DXGK_VMBCOMMAND_PRESENTHISTORYTOKEN,
            DXGK_VMBCOMMAND_SETREDIRECTEDFLIPFENCEVALUE, DXGK_VMBCOMMAND_GETINTERNALADAPTERINFO,
            DXGK_VMBCOMMAND_FLUSHHEAPTRANSITIONS, DXGK_VMBCOMMAND_BLT,
            DXGK_VMBCOMMAND_DDIGETSTANDARDALLOCATIONDRIVERDATA, DXGK_VMBCOMMAND_CDDGDICOMMAND,
            DXGK_VMBCOMMAND_QUERYALLOCATIONRESIDENCY, DXGK_VMBCOMMAND_FLUSHDEVICE,
            DXGK_VMBCOMMAND_FLUSHADAPTER, DXGK_VMBCOMMAND_DDIGETNODEMETADATA,
            DXGK_VMBCOMMAND_SETEXISTINGSYSMEMSTORE, DXGK_VMBCOMMAND_ISSYNCOBJECTSIGNALED,
            DXGK_VMBCOMMAND_CDDSYNCGPUACCESS, DXGK_VMBCOMMAND_QUERYSTATISTICS,
            DXGK_VMBCOMMAND_CHANGEVIDEOMEMORYRESERVATION, DXGK_VMBCOMMAND_CREATEHWQUEUE,
            DXGK_VMBCOMMAND_DESTROYHWQUEUE, DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE,
            DXGK_VMBCOMMAND_GETDRIVERSTOREFILE, DXGK_VMBCOMMAND_READDRIVERSTOREFILE,
            DXGK_VMBCOMMAND_GETNEXTHARDLINK, DXGK_VMBCOMMAND_UPDATEALLOCATIONPROPERTY,
            DXGK_VMBCOMMAND_OFFERALLOCATIONS, DXGK_VMBCOMMAND_RECLAIMALLOCATIONS,
            DXGK_VMBCOMMAND_SETALLOCATIONPRIORITY, DXGK_VMBCOMMAND_GETALLOCATIONPRIORITY,
            DXGK_VMBCOMMAND_GETCONTEXTSCHEDULINGPRIORITY, DXGK_VMBCOMMAND_QUERYCLOCKCALIBRATION,
            DXGK_VMBCOMMAND_QUERYRESOURCEINFO, DXGK_VMBCOMMAND_LOGEVENT,
            DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES, DXGK_VMBCOMMAND_INVALIDATECACHE,
            DXGK_VMBCOMMAND_ISFEATUREENABLED,
        ),
        DXGKVMB_HOST_TO_VM => names!(h:
            DXGK_VMBCOMMAND_SIGNALGUESTEVENT, DXGK_VMBCOMMAND_PROPAGATEPRESENTHISTORYTOKEN,
            DXGK_VMBCOMMAND_SETGUESTDATA, DXGK_VMBCOMMAND_SIGNALGUESTEVENTPASSIVE,
            DXGK_VMBCOMMAND_SENDWNFNOTIFICATION,
        ),
        _ => None,
    }
}
