//! The GPU-PV message set: command numbers, command headers and payload
//! layouts modelled on WSL 2's dxgkrnl (`drivers/hv/dxgkrnl/dxgvmbus.h`).
//!
//! Names, numbers and byte layouts are dxgkrnl's, so that a trace of dxvmm's
//! traffic reads like the original protocol and research tooling can be
//! shared. What carries the messages is ours ([`crate::frame`]): virtio
//! queues instead of VMBus channels.
//!
//! Variable-length tails (handle arrays, private driver data, page lists)
//! follow the fixed part directly. dxgkrnl declares them as `x[1]` members and
//! sizes messages as `sizeof(struct) + n - 1`; dxvmm's payloads are exactly
//! the fixed part plus the tail. The few fixed parts that end on a 4-byte
//! boundary after a 64-bit field are `packed(4)` so that their Rust size is
//! the offset of the tail; their field offsets are still the C ones.

use crate::abi::{
    D3dddiCreateContextFlags, D3dddiCreateHwQueueFlags, D3dddiEscapeFlags, D3dddiEvictFlags,
    D3dddiMakeResidentFlags, D3dddiMapGpuVirtualAddress, D3dddiReserveGpuVirtualAddress,
    D3dddiSynchronizationObjectFlags, D3dddiWaitForSynchronizationObjectFromCpuFlags,
    D3dddicbDestroyAllocation2Flags, D3dddicbSignalFlags, D3dkmtCreateAllocationFlags,
    D3dkmtCreateDeviceFlags, D3dkmtCreatePagingQueue, D3dkmtCreateSynchronizationObject2,
    D3dkmtFreeGpuVirtualAddress, D3dkmtGetDeviceState, D3dkmtHandle, D3dkmtLock2,
    D3dkmtQueryAllocationResidency, D3dkmtSubmitCommand, D3dkmtSubmitCommandToHwQueue,
    D3dkmtUnlock2, WinLuid,
};
use crate::layout::{big_array, wire_struct};
use crate::ntstatus::NtStatus;

/// The dxgkrnl interface version dxvmm speaks (`DXGK_VMBUS_INTERFACE_VERSION`).
pub const DXGK_VMBUS_INTERFACE_VERSION: u32 = 40;
/// The oldest version this one is compatible with.
pub const DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION: u32 = 16;
/// Largest message in either direction (`DXG_MAX_VM_BUS_PACKET_SIZE`).
pub const DXG_MAX_VM_BUS_PACKET_SIZE: usize = 128 * 1024;
/// Characters in CREATEPROCESS's name, without the terminator.
pub const DXG_VM_PROCESS_NAME_LENGTH: usize = 260;
/// `WIN_MAX_PATH`.
pub const WIN_MAX_PATH: usize = 260;

// ---------------------------------------------------------------------------
// Channel types and command numbers
// ---------------------------------------------------------------------------

/// `enum dxgkvmb_commandchanneltype`.
pub const DXGKVMB_VGPU_TO_HOST: u32 = 0;
pub const DXGKVMB_VM_TO_HOST: u32 = 1;
pub const DXGKVMB_HOST_TO_VM: u32 = 2;

/// Global-channel commands (`enum dxgkvmb_commandtype_global`).
pub mod global {
    pub const DXGK_VMBCOMMAND_VM_TO_HOST_FIRST: u32 = 1000;
    pub const DXGK_VMBCOMMAND_CREATEPROCESS: u32 = 1000;
    pub const DXGK_VMBCOMMAND_DESTROYPROCESS: u32 = 1001;
    pub const DXGK_VMBCOMMAND_OPENSYNCOBJECT: u32 = 1002;
    pub const DXGK_VMBCOMMAND_DESTROYSYNCOBJECT: u32 = 1003;
    pub const DXGK_VMBCOMMAND_CREATENTSHAREDOBJECT: u32 = 1004;
    pub const DXGK_VMBCOMMAND_DESTROYNTSHAREDOBJECT: u32 = 1005;
    pub const DXGK_VMBCOMMAND_SIGNALFENCE: u32 = 1006;
    pub const DXGK_VMBCOMMAND_NOTIFYPROCESSFREEZE: u32 = 1007;
    pub const DXGK_VMBCOMMAND_NOTIFYPROCESSTHAW: u32 = 1008;
    pub const DXGK_VMBCOMMAND_QUERYETWSESSION: u32 = 1009;
    pub const DXGK_VMBCOMMAND_SETIOSPACEREGION: u32 = 1010;
    pub const DXGK_VMBCOMMAND_COMPLETETRANSACTION: u32 = 1011;
    pub const DXGK_VMBCOMMAND_SHAREOBJECTWITHHOST: u32 = 1021;
    pub const DXGK_VMBCOMMAND_ISFEATUREENABLED_GLOBAL: u32 = 1022;
    pub const DXGK_VMBCOMMAND_INVALID_VM_TO_HOST: u32 = 1023;
}

/// Per-adapter (vGPU) commands (`enum dxgkvmb_commandtype`).
pub mod vgpu {
    pub const DXGK_VMBCOMMAND_CREATEDEVICE: u32 = 0;
    pub const DXGK_VMBCOMMAND_DESTROYDEVICE: u32 = 1;
    pub const DXGK_VMBCOMMAND_QUERYADAPTERINFO: u32 = 2;
    pub const DXGK_VMBCOMMAND_DDIQUERYADAPTERINFO: u32 = 3;
    pub const DXGK_VMBCOMMAND_CREATEALLOCATION: u32 = 4;
    pub const DXGK_VMBCOMMAND_DESTROYALLOCATION: u32 = 5;
    pub const DXGK_VMBCOMMAND_CREATECONTEXTVIRTUAL: u32 = 6;
    pub const DXGK_VMBCOMMAND_DESTROYCONTEXT: u32 = 7;
    pub const DXGK_VMBCOMMAND_CREATESYNCOBJECT: u32 = 8;
    pub const DXGK_VMBCOMMAND_CREATEPAGINGQUEUE: u32 = 9;
    pub const DXGK_VMBCOMMAND_DESTROYPAGINGQUEUE: u32 = 10;
    pub const DXGK_VMBCOMMAND_MAKERESIDENT: u32 = 11;
    pub const DXGK_VMBCOMMAND_EVICT: u32 = 12;
    pub const DXGK_VMBCOMMAND_ESCAPE: u32 = 13;
    pub const DXGK_VMBCOMMAND_OPENADAPTER: u32 = 14;
    pub const DXGK_VMBCOMMAND_CLOSEADAPTER: u32 = 15;
    pub const DXGK_VMBCOMMAND_FREEGPUVIRTUALADDRESS: u32 = 16;
    pub const DXGK_VMBCOMMAND_MAPGPUVIRTUALADDRESS: u32 = 17;
    pub const DXGK_VMBCOMMAND_RESERVEGPUVIRTUALADDRESS: u32 = 18;
    pub const DXGK_VMBCOMMAND_UPDATEGPUVIRTUALADDRESS: u32 = 19;
    pub const DXGK_VMBCOMMAND_SUBMITCOMMAND: u32 = 20;
    /// Spelled in lower case in dxgkrnl's enum; same number.
    pub const DXGK_VMBCOMMAND_QUERYVIDEOMEMORYINFO: u32 = 21;
    pub const DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMCPU: u32 = 22;
    pub const DXGK_VMBCOMMAND_LOCK2: u32 = 23;
    pub const DXGK_VMBCOMMAND_UNLOCK2: u32 = 24;
    pub const DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMGPU: u32 = 25;
    pub const DXGK_VMBCOMMAND_SIGNALSYNCOBJECT: u32 = 26;
    pub const DXGK_VMBCOMMAND_SIGNALFENCENTSHAREDBYREF: u32 = 27;
    pub const DXGK_VMBCOMMAND_GETDEVICESTATE: u32 = 28;
    pub const DXGK_VMBCOMMAND_MARKDEVICEASERROR: u32 = 29;
    pub const DXGK_VMBCOMMAND_ADAPTERSTOP: u32 = 30;
    pub const DXGK_VMBCOMMAND_SETQUEUEDLIMIT: u32 = 31;
    pub const DXGK_VMBCOMMAND_OPENRESOURCE: u32 = 32;
    pub const DXGK_VMBCOMMAND_SETCONTEXTSCHEDULINGPRIORITY: u32 = 33;
    pub const DXGK_VMBCOMMAND_PRESENTHISTORYTOKEN: u32 = 34;
    pub const DXGK_VMBCOMMAND_SETREDIRECTEDFLIPFENCEVALUE: u32 = 35;
    pub const DXGK_VMBCOMMAND_GETINTERNALADAPTERINFO: u32 = 36;
    pub const DXGK_VMBCOMMAND_FLUSHHEAPTRANSITIONS: u32 = 37;
    pub const DXGK_VMBCOMMAND_BLT: u32 = 38;
    pub const DXGK_VMBCOMMAND_DDIGETSTANDARDALLOCATIONDRIVERDATA: u32 = 39;
    pub const DXGK_VMBCOMMAND_CDDGDICOMMAND: u32 = 40;
    pub const DXGK_VMBCOMMAND_QUERYALLOCATIONRESIDENCY: u32 = 41;
    pub const DXGK_VMBCOMMAND_FLUSHDEVICE: u32 = 42;
    pub const DXGK_VMBCOMMAND_FLUSHADAPTER: u32 = 43;
    pub const DXGK_VMBCOMMAND_DDIGETNODEMETADATA: u32 = 44;
    pub const DXGK_VMBCOMMAND_SETEXISTINGSYSMEMSTORE: u32 = 45;
    pub const DXGK_VMBCOMMAND_ISSYNCOBJECTSIGNALED: u32 = 46;
    pub const DXGK_VMBCOMMAND_CDDSYNCGPUACCESS: u32 = 47;
    pub const DXGK_VMBCOMMAND_QUERYSTATISTICS: u32 = 48;
    pub const DXGK_VMBCOMMAND_CHANGEVIDEOMEMORYRESERVATION: u32 = 49;
    pub const DXGK_VMBCOMMAND_CREATEHWQUEUE: u32 = 50;
    pub const DXGK_VMBCOMMAND_DESTROYHWQUEUE: u32 = 51;
    pub const DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE: u32 = 52;
    pub const DXGK_VMBCOMMAND_GETDRIVERSTOREFILE: u32 = 53;
    pub const DXGK_VMBCOMMAND_READDRIVERSTOREFILE: u32 = 54;
    pub const DXGK_VMBCOMMAND_GETNEXTHARDLINK: u32 = 55;
    pub const DXGK_VMBCOMMAND_UPDATEALLOCATIONPROPERTY: u32 = 56;
    pub const DXGK_VMBCOMMAND_OFFERALLOCATIONS: u32 = 57;
    pub const DXGK_VMBCOMMAND_RECLAIMALLOCATIONS: u32 = 58;
    pub const DXGK_VMBCOMMAND_SETALLOCATIONPRIORITY: u32 = 59;
    pub const DXGK_VMBCOMMAND_GETALLOCATIONPRIORITY: u32 = 60;
    pub const DXGK_VMBCOMMAND_GETCONTEXTSCHEDULINGPRIORITY: u32 = 61;
    pub const DXGK_VMBCOMMAND_QUERYCLOCKCALIBRATION: u32 = 62;
    pub const DXGK_VMBCOMMAND_QUERYRESOURCEINFO: u32 = 64;
    pub const DXGK_VMBCOMMAND_LOGEVENT: u32 = 65;
    pub const DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES: u32 = 66;
    pub const DXGK_VMBCOMMAND_INVALIDATECACHE: u32 = 67;
    pub const DXGK_VMBCOMMAND_ISFEATUREENABLED: u32 = 68;
    pub const DXGK_VMBCOMMAND_INVALID: u32 = 69;
}

/// Host-to-guest commands (`enum dxgkvmb_commandtype_host_to_vm`).
pub mod host_to_vm {
    pub const DXGK_VMBCOMMAND_SIGNALGUESTEVENT: u32 = 0;
    pub const DXGK_VMBCOMMAND_PROPAGATEPRESENTHISTORYTOKEN: u32 = 1;
    pub const DXGK_VMBCOMMAND_SETGUESTDATA: u32 = 2;
    pub const DXGK_VMBCOMMAND_SIGNALGUESTEVENTPASSIVE: u32 = 3;
    pub const DXGK_VMBCOMMAND_SENDWNFNOTIFICATION: u32 = 4;
    pub const DXGK_VMBCOMMAND_INVALID_HOST_TO_VM: u32 = 5;
}

// ---------------------------------------------------------------------------
// Command headers
// ---------------------------------------------------------------------------

/// Bit of the vGPU/host header's `channel_type` word that marks a message
/// the sender expects no reply to (`async_msg`).
pub const CHANNEL_FLAG_ASYNC_MSG: u32 = 1 << 8;

wire_struct! {
    /// `struct dxgkvmb_command_vm_to_host`: header of global-channel commands.
    #[repr(C)]
    pub struct DxgkvmbCommandVmToHost [24] {
        /// Always 0 from the Linux guest; requests are paired by the frame's
        /// request id instead.
        pub command_id: u64 => 0,
        /// Host handle of the guest process (from CREATEPROCESS), or 0.
        pub process: D3dkmtHandle => 8,
        /// [`DXGKVMB_VM_TO_HOST`].
        pub channel_type: u32 => 12,
        /// One of [`global`].
        pub command_type: u32 => 16,
        pub _pad0: u32 => 20,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_vgpu_to_host`: header of per-adapter commands.
    #[repr(C)]
    pub struct DxgkvmbCommandVgpuToHost [24] {
        pub command_id: u64 => 0,
        pub process: D3dkmtHandle => 8,
        /// Bits 0..8: channel type ([`DXGKVMB_VGPU_TO_HOST`]); bit 8:
        /// [`CHANNEL_FLAG_ASYNC_MSG`]; the rest reserved.
        pub channel_type: u32 => 12,
        /// One of [`vgpu`].
        pub command_type: u32 => 16,
        pub _pad0: u32 => 20,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_host_to_vm`: header of host events.
    #[repr(C)]
    pub struct DxgkvmbCommandHostToVm [24] {
        pub command_id: u64 => 0,
        pub process: D3dkmtHandle => 8,
        /// Bits 0..8: [`DXGKVMB_HOST_TO_VM`]; bit 8: async_msg.
        pub channel_type: u32 => 12,
        /// One of [`host_to_vm`].
        pub command_type: u32 => 16,
        pub _pad0: u32 => 20,
    }
}

impl DxgkvmbCommandVmToHost {
    /// A header for global command `command_type` on behalf of `process`.
    pub fn new(command_type: u32, process: D3dkmtHandle) -> Self {
        Self {
            command_id: 0,
            process,
            channel_type: DXGKVMB_VM_TO_HOST,
            command_type,
            _pad0: 0,
        }
    }
}

impl DxgkvmbCommandVgpuToHost {
    /// A header for adapter command `command_type` on behalf of `process`.
    pub fn new(command_type: u32, process: D3dkmtHandle) -> Self {
        Self {
            command_id: 0,
            process,
            channel_type: DXGKVMB_VGPU_TO_HOST,
            command_type,
            _pad0: 0,
        }
    }

    /// The channel type without the flag bits.
    pub fn channel(&self) -> u32 {
        self.channel_type & 0xff
    }

    /// True when the guest asked for no reply.
    pub fn async_msg(&self) -> bool {
        self.channel_type & CHANNEL_FLAG_ASYNC_MSG != 0
    }
}

impl DxgkvmbCommandHostToVm {
    /// A header for host event `command_type`.
    pub fn new(command_type: u32, process: D3dkmtHandle) -> Self {
        Self {
            command_id: 0,
            process,
            channel_type: DXGKVMB_HOST_TO_VM,
            command_type,
            _pad0: 0,
        }
    }
}

// ---------------------------------------------------------------------------
// Global-channel messages
// ---------------------------------------------------------------------------

/// Bits of CREATEPROCESS's `flags` byte.
pub mod createprocess_flags {
    pub const CSRSS_PROCESS: u8 = 1 << 0;
    pub const DWM_PROCESS: u8 = 1 << 1;
    pub const WOW64_PROCESS: u8 = 1 << 2;
    pub const LINUX_PROCESS: u8 = 1 << 3;
}

wire_struct! {
    /// `struct dxgkvmb_command_createprocess`: sent when a process first
    /// opens `/dev/dxg`. Reply: [`DxgkvmbCommandCreateProcessReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandCreateProcess [568] {
        pub hdr: DxgkvmbCommandVmToHost => 0,
        /// Guest kernel's cookie for the process; echoed in host events.
        pub process: u64 => 24,
        pub process_id: u64 => 32,
        /// UTF-16 process name (`comm`), NUL-terminated.
        #[serde(with = "big_array")]
        pub process_name: [u16; DXG_VM_PROCESS_NAME_LENGTH + 1] => 40,
        /// [`createprocess_flags`]; the Linux guest sets LINUX_PROCESS.
        pub flags: u8 => 562,
        pub _pad0: [u8; 5] => 563,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_createprocess_return`. A null handle means
    /// failure.
    #[repr(C)]
    pub struct DxgkvmbCommandCreateProcessReturn [4] {
        pub hprocess: D3dkmtHandle => 0,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_destroyprocess`: the process closed its last
    /// `/dev/dxg` file; the host frees every object it owns. Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandDestroyProcess [24] {
        pub hdr: DxgkvmbCommandVmToHost => 0,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_opensyncobject`. Reply:
    /// [`DxgkvmbCommandOpenSyncObjectReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandOpenSyncObject [40] {
        pub hdr: DxgkvmbCommandVmToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub global_sync_object: D3dkmtHandle => 28,
        pub engine_affinity: u32 => 32,
        pub flags: D3dddiSynchronizationObjectFlags => 36,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_opensyncobject_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandOpenSyncObjectReturn [24] {
        pub sync_object: D3dkmtHandle => 0,
        pub status: NtStatus => 4,
        pub gpu_virtual_address: u64 => 8,
        pub guest_cpu_physical_address: u64 => 16,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_destroysyncobject`. A global command in
    /// dxgkrnl even though sync objects are created per adapter. Reply:
    /// NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandDestroySyncObject [32] {
        pub hdr: DxgkvmbCommandVmToHost => 0,
        pub sync_object: D3dkmtHandle => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_setiospaceregion`. dxgkrnl tells the host
    /// where its MMIO window for mapped allocations is; dxvmm's guest sends
    /// it with `length = 0` (no window: allocations are guest pages) and the
    /// host accepts it for compatibility. Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandSetIoSpaceRegion [48] {
        pub hdr: DxgkvmbCommandVmToHost => 0,
        pub start: u64 => 24,
        pub length: u64 => 32,
        pub shared_page_gpadl: u32 => 40,
        pub _pad0: u32 => 44,
    }
}

// ---------------------------------------------------------------------------
// Adapter open/close and queries
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct dxgkvmb_command_openadapter`: the version handshake, sent
    /// once per adapter when the guest driver binds. Reply:
    /// [`DxgkvmbCommandOpenAdapterReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandOpenAdapter [40] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub vmbus_interface_version: u32 => 24,
        pub vmbus_last_compatible_interface_version: u32 => 28,
        pub guest_adapter_luid: WinLuid => 32,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_openadapter_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandOpenAdapterReturn [16] {
        pub host_adapter_handle: D3dkmtHandle => 0,
        pub status: NtStatus => 4,
        pub vmbus_interface_version: u32 => 8,
        pub vmbus_last_compatible_interface_version: u32 => 12,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_closeadapter`. Reply: empty.
    #[repr(C)]
    pub struct DxgkvmbCommandCloseAdapter [32] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub host_handle: D3dkmtHandle => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_getinternaladapterinfo`. Reply:
    /// [`DxgkvmbCommandGetInternalAdapterInfoReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandGetInternalAdapterInfo [24] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
    }
}

/// Bits of GETINTERNALADAPTERINFO's reply `flags` word.
pub mod internal_adapter_flags {
    pub const SECURE_VIRTUAL_MACHINE: u32 = 1 << 0;
    pub const VIRTUAL_MACHINE_RESET: u32 = 1 << 1;
    pub const IS_VAIL_SUPPORTED: u32 = 1 << 2;
    pub const HW_SCH_ENABLED: u32 = 1 << 3;
    pub const HW_SCH_CAPABLE: u32 = 1 << 4;
    pub const VA_BACKED_VM: u32 = 1 << 5;
    pub const ASYNC_MSG_ENABLED: u32 = 1 << 6;
    /// Two bits: `hw_support_state`.
    pub const HW_SUPPORT_STATE_SHIFT: u32 = 7;
}

wire_struct! {
    /// `struct dxgkvmb_command_getinternaladapterinfo_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandGetInternalAdapterInfoReturn [712] {
        /// `struct dxgk_device_types` bit word.
        pub device_types: u32 => 0,
        pub driver_store_copy_mode: u32 => 4,
        pub driver_ddi_version: u32 => 8,
        /// [`internal_adapter_flags`].
        pub flags: u32 => 12,
        pub host_adapter_luid: WinLuid => 16,
        /// UTF-16, NUL-terminated: the adapter name `dxginfo` prints.
        #[serde(with = "big_array")]
        pub device_description: [u16; 80] => 24,
        #[serde(with = "big_array")]
        pub device_instance_id: [u16; WIN_MAX_PATH] => 184,
        pub host_vgpu_luid: WinLuid => 704,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_queryadapterinfo`, followed by
    /// `private_data_size` bytes of query input. Reply: NTSTATUS followed by
    /// `private_data_size` bytes of answer (interface version 40 layout).
    #[repr(C)]
    pub struct DxgkvmbCommandQueryAdapterInfo [32] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        /// `enum kmtqueryadapterinfotype`.
        pub query_type: u32 => 24,
        pub private_data_size: u32 => 28,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_queryvideomemoryinfo`. Reply:
    /// [`DxgkvmbCommandQueryVideoMemoryInfoReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandQueryVideoMemoryInfo [40] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub adapter: D3dkmtHandle => 24,
        pub memory_segment_group: u32 => 28,
        pub physical_adapter_index: u32 => 32,
        pub _pad0: u32 => 36,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_queryvideomemoryinfo_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandQueryVideoMemoryInfoReturn [32] {
        pub budget: u64 => 0,
        pub current_usage: u64 => 8,
        pub current_reservation: u64 => 16,
        pub available_for_reservation: u64 => 24,
    }
}

// ---------------------------------------------------------------------------
// Devices, contexts, hardware queues, paging queues
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct dxgkvmb_command_createdevice`. Reply:
    /// [`DxgkvmbCommandCreateDeviceReturn`] (null handle on failure).
    #[repr(C)]
    pub struct DxgkvmbCommandCreateDevice [40] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub flags: D3dkmtCreateDeviceFlags => 24,
        pub cdd_device: u8 => 28,
        pub _pad0: [u8; 3] => 29,
        /// A guest kernel pointer in dxgkrnl; unused, sent as 0.
        pub error_code: u64 => 32,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_createdevice_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandCreateDeviceReturn [4] {
        pub device: D3dkmtHandle => 0,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_destroydevice`. Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandDestroyDevice [32] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_flushdevice`: sent before DESTROYDEVICE so
    /// that queued GPU work of the device completes or is dropped. Reply:
    /// NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandFlushDevice [32] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        /// `enum dxgdevice_flushschedulerreason` (4: device terminate).
        pub reason: u32 => 28,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_createcontextvirtual`, followed by
    /// `priv_drv_data_size` bytes. The reply is the same message, with
    /// `context` and the private data filled in by the host.
    #[repr(C, packed(4))]
    pub struct DxgkvmbCommandCreateContextVirtual [52] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub context: D3dkmtHandle => 24,
        pub device: D3dkmtHandle => 28,
        pub node_ordinal: u32 => 32,
        pub engine_affinity: u32 => 36,
        pub flags: D3dddiCreateContextFlags => 40,
        pub client_hint: u32 => 44,
        pub priv_drv_data_size: u32 => 48,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_destroycontext`. Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandDestroyContext [32] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub context: D3dkmtHandle => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_createhwqueue`, followed by
    /// `priv_drv_data_size` bytes. The reply is the same message with
    /// `status`, the queue, its progress fence and the private data filled.
    #[repr(C, packed(4))]
    pub struct DxgkvmbCommandCreateHwQueue [68] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub status: NtStatus => 24,
        pub hwqueue: D3dkmtHandle => 28,
        pub hwqueue_progress_fence: D3dkmtHandle => 32,
        pub _pad0: u32 => 36,
        /// Guest physical address of the fence value page in dxvmm (dxgkrnl
        /// carried a guest kernel pointer here); see docs/protocol.md.
        pub hwqueue_progress_fence_cpuva: u64 => 40,
        pub hwqueue_progress_fence_gpuva: u64 => 48,
        pub context: D3dkmtHandle => 56,
        pub flags: D3dddiCreateHwQueueFlags => 60,
        pub priv_drv_data_size: u32 => 64,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_destroyhwqueue`. Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandDestroyHwQueue [32] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub hwqueue: D3dkmtHandle => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_createpagingqueue`. Reply:
    /// [`DxgkvmbCommandCreatePagingQueueReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandCreatePagingQueue [56] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dkmtCreatePagingQueue => 24,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_createpagingqueue_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandCreatePagingQueueReturn [24] {
        pub paging_queue: D3dkmtHandle => 0,
        pub sync_object: D3dkmtHandle => 4,
        /// Guest physical address of the page holding the paging fence.
        pub fence_storage_physical_address: u64 => 8,
        pub fence_storage_offset: u64 => 16,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_destroypagingqueue`. Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandDestroyPagingQueue [32] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub paging_queue: D3dkmtHandle => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_getdevicestate`. Reply:
    /// [`DxgkvmbCommandGetDeviceStateReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandGetDeviceState [80] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dkmtGetDeviceState => 24,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_getdevicestate_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandGetDeviceStateReturn [64] {
        pub args: D3dkmtGetDeviceState => 0,
        pub status: NtStatus => 56,
        pub _pad0: u32 => 60,
    }
}

// ---------------------------------------------------------------------------
// Allocations and residency
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct dxgkvmb_command_createallocation`. Followed by, in order:
    /// `alloc_count` × [`DxgkvmbCommandCreateAllocationAllocInfo`],
    /// `private_runtime_data_size` bytes, `priv_drv_data_size` bytes (the
    /// resource's private data, or a `d3dkmt_createstandardallocation`), and
    /// each allocation's private data in turn. Reply:
    /// [`DxgkvmbCommandCreateAllocationReturn`] and its tail.
    #[repr(C)]
    pub struct DxgkvmbCommandCreateAllocation [64] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub resource: D3dkmtHandle => 28,
        pub private_runtime_data_size: u32 => 32,
        pub priv_drv_data_size: u32 => 36,
        pub alloc_count: u32 => 40,
        pub flags: D3dkmtCreateAllocationFlags => 44,
        pub private_runtime_resource_handle: u64 => 48,
        pub make_resident: u8 => 56,
        pub _pad0: [u8; 7] => 57,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_createallocation_allocinfo`.
    #[repr(C)]
    pub struct DxgkvmbCommandCreateAllocationAllocInfo [12] {
        /// `d3dddi_allocationinfo2.flags`.
        pub flags: u32 => 0,
        pub priv_drv_data_size: u32 => 4,
        pub vidpn_source_id: u32 => 8,
    }
}

wire_struct! {
    /// `struct d3dddi_rational`.
    #[repr(C)]
    pub struct D3dddiRational [8] {
        pub numerator: u32 => 0,
        pub denominator: u32 => 4,
    }
}

wire_struct! {
    /// `struct dxgkarg_describeallocation`.
    #[repr(C)]
    pub struct DxgkargDescribeAllocation [48] {
        pub allocation: u64 => 0,
        pub width: u32 => 8,
        pub height: u32 => 12,
        pub format: u32 => 16,
        pub multisample_method: u32 => 20,
        pub refresh_rate: D3dddiRational => 24,
        pub private_driver_attribute: u32 => 32,
        pub flags: u32 => 36,
        pub rotation: u32 => 40,
        pub _pad0: u32 => 44,
    }
}

/// Bits of `dxgkvmb_allocflags` that dxvmm reports.
pub mod vmb_allocflags {
    pub const PRIMARY: u32 = 1 << 0;
    pub const EXISTING_SYSMEM: u32 = 1 << 11;
    pub const CACHED: u32 = 1 << 19;
}

wire_struct! {
    /// `struct dxgkvmb_command_allocinfo_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandAllocInfoReturn [72] {
        pub allocation: D3dkmtHandle => 0,
        pub priv_drv_data_size: u32 => 4,
        /// `struct dxgkvmb_allocflags`, see [`vmb_allocflags`].
        pub allocation_flags: u32 => 8,
        pub _pad0: u32 => 12,
        /// Rounded up to whole pages: the guest pins this many bytes.
        pub allocation_size: u64 => 16,
        pub driver_info: DxgkargDescribeAllocation => 24,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_createallocation_return`, followed by
    /// `alloc_count` × [`DxgkvmbCommandAllocInfoReturn`] and then each
    /// allocation's private data (`priv_drv_data_size` bytes each).
    #[repr(C)]
    pub struct DxgkvmbCommandCreateAllocationReturn [16] {
        pub flags: D3dkmtCreateAllocationFlags => 0,
        pub resource: D3dkmtHandle => 4,
        pub global_share: D3dkmtHandle => 8,
        pub vgpu_flags: u32 => 12,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_setexistingsysmempages`, followed by
    /// `num_pages` guest page frame numbers (u64, 4 KiB pages): the guest
    /// pages that back an EXISTING_SYSMEM allocation, from page
    /// `alloc_offset_in_pages` on. Large allocations take several messages.
    /// Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandSetExistingSysmemPages [40] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub allocation: D3dkmtHandle => 28,
        pub num_pages: u32 => 32,
        pub alloc_offset_in_pages: u32 => 36,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_destroyallocation`, followed by `alloc_count`
    /// allocation handles. Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandDestroyAllocation [40] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub resource: D3dkmtHandle => 28,
        pub alloc_count: u32 => 32,
        pub flags: D3dddicbDestroyAllocation2Flags => 36,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_makeresident`, followed by `alloc_count`
    /// handles. Reply: [`DxgkvmbCommandMakeResidentReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandMakeResident [40] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub paging_queue: D3dkmtHandle => 28,
        pub flags: D3dddiMakeResidentFlags => 32,
        pub alloc_count: u32 => 36,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_makeresident_return`. `STATUS_PENDING` means
    /// the paging fence reaches `paging_fence_value` later.
    #[repr(C)]
    pub struct DxgkvmbCommandMakeResidentReturn [24] {
        pub paging_fence_value: u64 => 0,
        pub num_bytes_to_trim: u64 => 8,
        pub status: NtStatus => 16,
        pub _pad0: u32 => 20,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_evict`, followed by `alloc_count` handles.
    /// Reply: [`DxgkvmbCommandEvictReturn`].
    #[repr(C, packed(4))]
    pub struct DxgkvmbCommandEvict [36] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub flags: D3dddiEvictFlags => 28,
        pub alloc_count: u32 => 32,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_evict_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandEvictReturn [8] {
        pub num_bytes_to_trim: u64 => 0,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_queryallocationresidency`, followed by
    /// `args.allocation_count` handles. Reply: NTSTATUS followed by one
    /// `d3dkmt_allocationresidencystatus` (u32) per allocation.
    #[repr(C)]
    pub struct DxgkvmbCommandQueryAllocationResidency [56] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dkmtQueryAllocationResidency => 24,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_getallocationpriority`, followed by
    /// `allocation_count` handles. Reply: NTSTATUS followed by
    /// `max(allocation_count, 1)` u32 priorities.
    #[repr(C, packed(4))]
    pub struct DxgkvmbCommandGetAllocationPriority [36] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub resource: D3dkmtHandle => 28,
        pub allocation_count: u32 => 32,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_setallocationpriority`, followed by
    /// `allocation_count` handles and `max(allocation_count, 1)` u32
    /// priorities. Reply: NTSTATUS.
    #[repr(C, packed(4))]
    pub struct DxgkvmbCommandSetAllocationPriority [36] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub resource: D3dkmtHandle => 28,
        pub allocation_count: u32 => 32,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_lock2`. Reply: [`DxgkvmbCommandLock2Return`].
    #[repr(C)]
    pub struct DxgkvmbCommandLock2 [64] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dkmtLock2 => 24,
        pub use_legacy_lock: u8 => 48,
        pub _pad0: [u8; 3] => 49,
        pub flags: u32 => 52,
        pub priv_drv_data: u32 => 56,
        pub _pad1: u32 => 60,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_lock2_return`. When the host had to bring GPU
    /// contents back to the guest pages first, it has done so by the time it
    /// replies; the offset is 0 for dxvmm's guest-page allocations.
    #[repr(C)]
    pub struct DxgkvmbCommandLock2Return [16] {
        pub status: NtStatus => 0,
        pub _pad0: u32 => 4,
        pub cpu_visible_buffer_offset: u64 => 8,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_unlock2`. Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandUnlock2 [40] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dkmtUnlock2 => 24,
        pub use_legacy_unlock: u8 => 32,
        pub _pad0: [u8; 7] => 33,
    }
}

// ---------------------------------------------------------------------------
// GPU virtual addresses
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct dxgkvmb_command_reservegpuvirtualaddress`. Reply:
    /// [`DxgkvmbCommandReserveGpuVirtualAddressReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandReserveGpuVirtualAddress [96] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dddiReserveGpuVirtualAddress => 24,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_reservegpuvirtualaddress_return`. A zero
    /// address means failure.
    #[repr(C)]
    pub struct DxgkvmbCommandReserveGpuVirtualAddressReturn [16] {
        pub virtual_address: u64 => 0,
        pub paging_fence_value: u64 => 8,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_mapgpuvirtualaddress`. Reply:
    /// [`DxgkvmbCommandMapGpuVirtualAddressReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandMapGpuVirtualAddress [136] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dddiMapGpuVirtualAddress => 24,
        pub device: D3dkmtHandle => 128,
        pub _pad0: u32 => 132,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_mapgpuvirtualaddress_return`.
    #[repr(C)]
    pub struct DxgkvmbCommandMapGpuVirtualAddressReturn [24] {
        pub virtual_address: u64 => 0,
        pub paging_fence_value: u64 => 8,
        pub status: NtStatus => 16,
        pub _pad0: u32 => 20,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_freegpuvirtualaddress`. Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandFreeGpuVirtualAddress [48] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dkmtFreeGpuVirtualAddress => 24,
    }
}

// ---------------------------------------------------------------------------
// Synchronisation objects
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct dxgkvmb_command_createsyncobject`. Reply:
    /// [`DxgkvmbCommandCreateSyncObjectReturn`].
    #[repr(C)]
    pub struct DxgkvmbCommandCreateSyncObject [128] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dkmtCreateSynchronizationObject2 => 24,
        pub client_hint: u32 => 120,
        pub _pad0: u32 => 124,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_createsyncobject_return`. For monitored
    /// fences `fence_storage_address` is the guest physical address of the
    /// page that holds the fence value (dxvmm: a guest page the host writes,
    /// which the guest maps into the process) and `fence_storage_offset` the
    /// byte offset in it.
    #[repr(C)]
    pub struct DxgkvmbCommandCreateSyncObjectReturn [32] {
        pub sync_object: D3dkmtHandle => 0,
        pub global_sync_object: D3dkmtHandle => 4,
        pub fence_gpu_va: u64 => 8,
        pub fence_storage_address: u64 => 16,
        pub fence_storage_offset: u32 => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_signalsyncobject`, followed by
    /// `object_count` handles, `context_count` context handles, and either
    /// nothing or `object_count` u64 monitored-fence values. Reply: NTSTATUS
    /// (none when the header's async bit is set).
    #[repr(C)]
    pub struct DxgkvmbCommandSignalSyncObject [56] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub object_count: u32 => 24,
        pub flags: D3dddicbSignalFlags => 28,
        pub context_count: u32 => 32,
        pub _pad0: u32 => 36,
        pub fence_value: u64 => 40,
        /// Union of `cpu_event_handle` (u64) and `device` (a handle, non-zero
        /// when the signal comes from the CPU).
        pub cpu_event_handle: u64 => 48,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_waitforsyncobjectfromcpu`, followed by
    /// `object_count` handles and `object_count` u64 fence values. The reply
    /// (NTSTATUS) comes at once; the wait's completion arrives later as a
    /// SIGNALGUESTEVENT host event for `guest_event_pointer`.
    #[repr(C)]
    pub struct DxgkvmbCommandWaitForSyncObjectFromCpu [56] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub device: D3dkmtHandle => 24,
        pub object_count: u32 => 28,
        pub flags: D3dddiWaitForSynchronizationObjectFromCpuFlags => 32,
        pub _pad0: u32 => 36,
        /// Guest event id the host names in SIGNALGUESTEVENT.
        pub guest_event_pointer: u64 => 40,
        pub dereference_event: u8 => 48,
        pub _pad1: [u8; 7] => 49,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_waitforsyncobjectfromgpu`, followed by
    /// `object_count` u64 fence values and then `object_count` handles.
    /// Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandWaitForSyncObjectFromGpu [40] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub context: D3dkmtHandle => 24,
        pub object_count: u32 => 28,
        pub legacy_fence_object: u8 => 32,
        pub _pad0: [u8; 7] => 33,
    }
}

// ---------------------------------------------------------------------------
// Submission and escapes
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct dxgkvmb_command_submitcommand`, followed by
    /// `args.num_history_buffers` handles and `args.priv_drv_data_size`
    /// bytes. `args.command_buffer` is the GPU VA of a dxvmm command stream.
    /// Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandSubmitCommand [408] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dkmtSubmitCommand => 24,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_submitcommandtohwqueue`, followed by
    /// `args.num_primaries` handles and `args.priv_drv_data_size` bytes.
    /// Reply: NTSTATUS.
    #[repr(C)]
    pub struct DxgkvmbCommandSubmitCommandToHwQueue [80] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub args: D3dkmtSubmitCommandToHwQueue => 24,
    }
}

wire_struct! {
    /// `struct dxgkvmb_command_escape`, followed by `priv_drv_data_size`
    /// bytes (a dxvmm escape, [`crate::escape`]). Reply: the private data
    /// only, same size, rewritten by the host.
    #[repr(C)]
    pub struct DxgkvmbCommandEscape [48] {
        pub hdr: DxgkvmbCommandVgpuToHost => 0,
        pub adapter: D3dkmtHandle => 24,
        pub device: D3dkmtHandle => 28,
        /// `enum d3dkmt_escapetype`.
        pub r#type: u32 => 32,
        pub flags: D3dddiEscapeFlags => 36,
        pub priv_drv_data_size: u32 => 40,
        pub context: D3dkmtHandle => 44,
    }
}

// ---------------------------------------------------------------------------
// Host-to-guest events
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct dxgkvmb_command_signalguestevent` (also the layout of
    /// SIGNALGUESTEVENTPASSIVE): wakes the guest waiter registered as
    /// `event`.
    #[repr(C)]
    pub struct DxgkvmbCommandSignalGuestEvent [48] {
        pub hdr: DxgkvmbCommandHostToVm => 0,
        pub event: u64 => 24,
        pub process_id: u64 => 32,
        pub dereference_event: u8 => 40,
        pub _pad0: [u8; 7] => 41,
    }
}

/// `enum set_guestdata_type`.
pub mod set_guestdata_type {
    pub const DWORD: u32 = 0;
    pub const UINT64: u32 = 1;
}

wire_struct! {
    /// `struct dxgkvmb_command_setguestdata`: write a value at a guest
    /// address. dxvmm's host writes fence values into guest pages itself and
    /// does not send it; decoded for traces of other hosts.
    #[repr(C)]
    pub struct DxgkvmbCommandSetGuestData [48] {
        pub hdr: DxgkvmbCommandHostToVm => 0,
        pub guest_pointer: u64 => 24,
        /// Union of `data64` and `data32`.
        pub data64: u64 => 32,
        /// Bit 0: dereference; bits 1..5: `data_type` ([`set_guestdata_type`]).
        pub flags: u32 => 40,
        pub _pad0: u32 => 44,
    }
}
