//! The guest-visible ABI of `/dev/dxg`: the D3DKMT ioctl argument structs,
//! their enums and flag words, and the ioctl numbers, laid out as in WSL 2's
//! `include/uapi/misc/d3dkmthk.h` so that a program built against that header
//! runs unchanged in a dxvmm guest.
//!
//! User-space pointers are `u64` on both 32- and 64-bit guests, as in the
//! original (its `DXGKPOINTER` expands to `__u64` outside the kernel). Where C
//! pads implicitly, the struct has an explicit `_padN` field; a C union is a
//! field named after its first member, padded to the union's size.
//!
//! Only the ioctls a compute workload uses are defined here; the rest of the
//! original table (render, present, sharing by NT handle...) is not served by
//! dxvmm and returns `-ENOTTY`.

use serde::{Deserialize, Serialize};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::{big_array, flags_word, wire_struct};

/// A kernel object handle as user space sees it (`struct d3dkmthandle`).
///
/// Opaque to user space; the bit split (instance:6, index:24, unique:2) is how
/// dxgkrnl's handle manager encodes table slots, and how dxvmm's does too.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Serialize,
    Deserialize,
)]
#[repr(transparent)]
#[serde(transparent)]
pub struct D3dkmtHandle(pub u32);

impl D3dkmtHandle {
    /// The null handle; never names an object.
    pub const NULL: D3dkmtHandle = D3dkmtHandle(0);

    /// Builds a handle from its parts; out-of-range bits are masked off.
    pub const fn from_parts(instance: u32, index: u32, unique: u32) -> Self {
        D3dkmtHandle((instance & 0x3f) | ((index & 0x00ff_ffff) << 6) | ((unique & 0x3) << 30))
    }

    /// Low 6 bits: reuse counter of the slot.
    pub const fn instance(self) -> u32 {
        self.0 & 0x3f
    }

    /// Bits 6..30: slot index in the handle table.
    pub const fn index(self) -> u32 {
        (self.0 >> 6) & 0x00ff_ffff
    }

    /// Top 2 bits.
    pub const fn unique(self) -> u32 {
        self.0 >> 30
    }

    /// True for the null handle.
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }
}

/// A Windows LUID (`struct winluid`): names adapters across the VM boundary.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Serialize,
    Deserialize,
)]
#[repr(C)]
pub struct WinLuid {
    pub a: u32,
    pub b: u32,
}

const _: () = assert!(core::mem::size_of::<WinLuid>() == 8);

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

pub const D3DDDI_MAX_WRITTEN_PRIMARIES: usize = 16;
pub const D3DKMT_CREATEALLOCATION_MAX: u32 = 1024;
pub const D3DKMT_MAKERESIDENT_ALLOC_MAX: u32 = 1024 * 10;
pub const D3DKMT_ADAPTERS_MAX: u32 = 64;
pub const D3DDDI_MAX_BROADCAST_CONTEXT: usize = 64;
pub const D3DDDI_MAX_OBJECT_WAITED_ON: u32 = 32;
pub const D3DDDI_MAX_OBJECT_SIGNALED: u32 = 32;

// ---------------------------------------------------------------------------
// Enums. C enums are `int`-sized; they stay plain `u32`/`i32` constants so
// that an unknown value from user space is data to reject, not UB.
// ---------------------------------------------------------------------------

/// `enum d3dkmt_clienthint`.
pub mod client_hint {
    pub const UNKNOWN: u32 = 0;
    pub const OPENGL: u32 = 1;
    pub const CDD: u32 = 2;
    pub const DX7: u32 = 7;
    pub const DX8: u32 = 8;
    pub const DX9: u32 = 9;
    pub const DX10: u32 = 10;
}

/// `enum d3dddi_pagingqueue_priority`.
pub mod pagingqueue_priority {
    pub const BELOW_NORMAL: i32 = -1;
    pub const NORMAL: i32 = 0;
    pub const ABOVE_NORMAL: i32 = 1;
}

/// `enum d3dkmt_standardallocationtype`.
pub mod standard_allocation_type {
    pub const EXISTINGHEAP: u32 = 1;
    pub const CROSSADAPTER: u32 = 2;
}

/// `enum d3dddigpuva_reservation_type`.
pub mod gpuva_reservation_type {
    pub const NO_ACCESS: u32 = 0;
    pub const ZERO: u32 = 1;
    pub const NO_COMMIT: u32 = 2;
}

/// `enum d3dkmt_memory_segment_group`.
pub mod memory_segment_group {
    pub const LOCAL: u32 = 0;
    pub const NON_LOCAL: u32 = 1;
}

/// `enum kmtqueryadapterinfotype` (the values the Linux ABI defines).
pub mod kmtqaitype {
    /// Driver-private data for the user-mode driver: dxvmm's
    /// [`crate::escape::DxgvUmdAdapterInfo`].
    pub const UMDRIVERPRIVATE: u32 = 0;
    /// A `d3dkmt_adaptertype` flag word.
    pub const ADAPTERTYPE: u32 = 15;
    pub const ADAPTERTYPE_RENDER: u32 = 57;
}

/// `enum d3dkmt_escapetype`.
pub mod escape_type {
    pub const DRIVERPRIVATE: u32 = 0;
    pub const VIDMM: u32 = 1;
    pub const VIDSCH: u32 = 3;
    pub const DEVICE: u32 = 4;
    pub const DRT_TEST: u32 = 8;
}

/// `enum d3dddi_synchronizationobject_type`.
pub mod syncobject_type {
    pub const SYNCHRONIZATION_MUTEX: u32 = 1;
    pub const SEMAPHORE: u32 = 2;
    pub const FENCE: u32 = 3;
    pub const CPU_NOTIFICATION: u32 = 4;
    pub const MONITORED_FENCE: u32 = 5;
    pub const PERIODIC_MONITORED_FENCE: u32 = 6;
}

/// `enum d3dkmt_allocationresidencystatus`.
pub mod residency_status {
    pub const RESIDENTINGPUMEMORY: u32 = 1;
    pub const RESIDENTINSHAREDMEMORY: u32 = 2;
    pub const NOTRESIDENT: u32 = 3;
}

/// `enum d3dkmt_devicestate_type`.
pub mod devicestate_type {
    pub const EXECUTION: u32 = 1;
    pub const PRESENT: u32 = 2;
    pub const RESET: u32 = 3;
    pub const PRESENT_DWM: u32 = 4;
    pub const PAGE_FAULT: u32 = 5;
    pub const PRESENT_QUEUE: u32 = 6;
}

/// `enum d3dkmt_deviceexecution_state`.
pub mod deviceexecution_state {
    pub const ACTIVE: u32 = 1;
    pub const RESET: u32 = 2;
    pub const HUNG: u32 = 3;
    pub const STOPPED: u32 = 4;
    pub const ERROR_OUTOFMEMORY: u32 = 5;
    pub const ERROR_DMAFAULT: u32 = 6;
    pub const ERROR_DMAPAGEFAULT: u32 = 7;
}

// ---------------------------------------------------------------------------
// Flag words
// ---------------------------------------------------------------------------

flags_word! {
    /// `struct d3dkmt_createdeviceflags`.
    pub struct D3dkmtCreateDeviceFlags(u32) {
        const LEGACY_MODE = 0;
        const REQUEST_VSYNC = 1;
        const DISABLE_GPU_TIMEOUT = 2;
    }
}

flags_word! {
    /// `struct d3dddi_createcontextflags`.
    pub struct D3dddiCreateContextFlags(u32) {
        const NULL_RENDERING = 0;
        const INITIAL_DATA = 1;
        const DISABLE_GPU_TIMEOUT = 2;
        const SYNCHRONIZATION_ONLY = 3;
        const HW_QUEUE_SUPPORTED = 4;
    }
}

flags_word! {
    /// `struct d3dddi_createhwqueueflags`.
    pub struct D3dddiCreateHwQueueFlags(u32) {
        const DISABLE_GPU_TIMEOUT = 0;
    }
}

flags_word! {
    /// `struct d3dkmt_createallocationflags`.
    pub struct D3dkmtCreateAllocationFlags(u32) {
        const CREATE_RESOURCE = 0;
        const CREATE_SHARED = 1;
        const NON_SECURE = 2;
        const CREATE_PROTECTED = 3;
        const RESTRICT_SHARED_ACCESS = 4;
        /// The allocation is backed by user memory the guest already has
        /// (`d3dddi_allocationinfo2.sysmem`); dxvmm's CPU-visible allocations.
        const EXISTING_SYSMEM = 5;
        const NT_SECURITY_SHARING = 6;
        const READ_ONLY = 7;
        const CREATE_WRITE_COMBINED = 8;
        const CREATE_CACHED = 9;
        const SWAP_CHAIN_BACK_BUFFER = 10;
        const CROSS_ADAPTER = 11;
        const OPEN_CROSS_ADAPTER = 12;
        const PARTIAL_SHARED_CREATION = 13;
        const ZEROED = 14;
        const WRITE_WATCH = 15;
        const STANDARD_ALLOCATION = 16;
        const EXISTING_SECTION = 17;
    }
}

flags_word! {
    /// The `flags` union of `struct d3dddi_allocationinfo2`.
    pub struct D3dddiAllocationInfo2Flags(u32) {
        const PRIMARY = 0;
        const STEREO = 1;
        const OVERRIDE_PRIORITY = 2;
    }
}

flags_word! {
    /// `struct d3dddicb_destroyallocation2flags`.
    pub struct D3dddicbDestroyAllocation2Flags(u32) {
        const ASSUME_NOT_IN_USE = 0;
        const SYNCHRONOUS_DESTROY = 1;
        const SYSTEM_USE_ONLY = 31;
    }
}

flags_word! {
    /// `struct d3dddi_makeresident_flags`.
    pub struct D3dddiMakeResidentFlags(u32) {
        const CANT_TRIM_FURTHER = 0;
        const MUST_SUCCEED = 1;
    }
}

flags_word! {
    /// `struct d3dddi_evict_flags`.
    pub struct D3dddiEvictFlags(u32) {
        const EVICT_ONLY_IF_NECESSARY = 0;
        const NOT_WRITTEN_TO = 1;
    }
}

flags_word! {
    /// `struct d3dddigpuva_protection_type` (a 64-bit word).
    pub struct D3dddiGpuVaProtectionType(u64) {
        const WRITE = 0;
        const EXECUTE = 1;
        const ZERO = 2;
        const NO_ACCESS = 3;
        const SYSTEM_USE_ONLY = 4;
    }
}

flags_word! {
    /// `struct d3dkmt_adaptertype`, the answer to `KMTQAITYPE_ADAPTERTYPE`.
    pub struct D3dkmtAdapterType(u32) {
        const RENDER_SUPPORTED = 0;
        const DISPLAY_SUPPORTED = 1;
        const SOFTWARE_DEVICE = 2;
        const POST_DEVICE = 3;
        const HYBRID_DISCRETE = 4;
        const HYBRID_INTEGRATED = 5;
        const INDIRECT_DISPLAY_DEVICE = 6;
        const PARAVIRTUALIZED = 7;
        const ACG_SUPPORTED = 8;
        const SUPPORT_SET_TIMINGS_FROM_VIDPN = 9;
        const DETACHABLE = 10;
        const COMPUTE_ONLY = 11;
        const PROTOTYPE = 12;
    }
}

flags_word! {
    /// `struct d3dddi_escapeflags`.
    pub struct D3dddiEscapeFlags(u32) {
        const HARDWARE_ACCESS = 0;
        const DEVICE_STATUS_QUERY = 1;
        const CHANGE_FRAME_LATENCY = 2;
        const NO_ADAPTER_SYNCHRONIZATION = 3;
        const VIRTUAL_MACHINE_DATA = 5;
        const DRIVER_KNOWN_ESCAPE = 6;
        const DRIVER_COMMON_ESCAPE = 7;
    }
}

flags_word! {
    /// `struct d3dddi_synchronizationobject_flags`.
    pub struct D3dddiSynchronizationObjectFlags(u32) {
        const SHARED = 0;
        const NT_SECURITY_SHARING = 1;
        const CROSS_ADAPTER = 2;
        const TOP_OF_PIPELINE = 3;
        const NO_SIGNAL = 4;
        const NO_WAIT = 5;
        const NO_SIGNAL_MAX_VALUE_ON_TDR = 6;
        const NO_GPU_ACCESS = 7;
    }
}

flags_word! {
    /// `struct d3dddicb_signalflags`.
    pub struct D3dddicbSignalFlags(u32) {
        const SIGNAL_AT_SUBMISSION = 0;
        const ENQUEUE_CPU_EVENT = 1;
        const ALLOW_FENCE_REWIND = 2;
        const DXGK_SIGNAL_FLAG_INTERNAL0 = 31;
    }
}

flags_word! {
    /// `struct d3dddi_waitforsynchronizationobjectfromcpu_flags`.
    pub struct D3dddiWaitForSynchronizationObjectFromCpuFlags(u32) {
        const WAIT_ANY = 0;
    }
}

flags_word! {
    /// `struct d3dkmt_submitcommandflags`.
    pub struct D3dkmtSubmitCommandFlags(u32) {
        const NULL_RENDERING = 0;
        const PRESENT_REDIRECTED = 1;
    }
}

flags_word! {
    /// `struct d3dddicb_lock2flags` (no bits defined).
    pub struct D3dddicbLock2Flags(u32) {}
}

flags_word! {
    /// `union d3dkmt_enumadapters_filter` (a 64-bit word).
    pub struct D3dkmtEnumAdaptersFilter(u64) {
        const INCLUDE_COMPUTE_ONLY = 0;
        const INCLUDE_DISPLAY_ONLY = 1;
    }
}

// ---------------------------------------------------------------------------
// Adapter enumeration and queries
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct d3dkmt_adapterinfo`: one entry of the ENUMADAPTERS2/3 array.
    #[repr(C)]
    pub struct D3dkmtAdapterInfo [20] {
        pub adapter_handle: D3dkmtHandle => 0,
        pub adapter_luid: WinLuid => 4,
        pub num_sources: u32 => 12,
        pub present_move_regions_preferred: u32 => 16,
    }
}

wire_struct! {
    /// `struct d3dkmt_enumadapters2`. With `adapters == 0` only the count is
    /// returned.
    #[repr(C)]
    pub struct D3dkmtEnumAdapters2 [16] {
        pub num_adapters: u32 => 0,
        pub reserved: u32 => 4,
        pub adapters: u64 => 8,
    }
}

wire_struct! {
    /// `struct d3dkmt_enumadapters3`.
    #[repr(C)]
    pub struct D3dkmtEnumAdapters3 [24] {
        pub filter: D3dkmtEnumAdaptersFilter => 0,
        pub adapter_count: u32 => 8,
        pub reserved: u32 => 12,
        pub adapters: u64 => 16,
    }
}

wire_struct! {
    /// `struct d3dkmt_openadapterfromluid`.
    #[repr(C)]
    pub struct D3dkmtOpenAdapterFromLuid [12] {
        pub adapter_luid: WinLuid => 0,
        pub adapter_handle: D3dkmtHandle => 8,
    }
}

wire_struct! {
    /// `struct d3dkmt_closeadapter`.
    #[repr(C)]
    pub struct D3dkmtCloseAdapter [4] {
        pub adapter_handle: D3dkmtHandle => 0,
    }
}

wire_struct! {
    /// `struct d3dkmt_queryadapterinfo`.
    #[repr(C)]
    pub struct D3dkmtQueryAdapterInfo [24] {
        pub adapter: D3dkmtHandle => 0,
        /// `enum kmtqueryadapterinfotype`, see [`kmtqaitype`].
        pub r#type: u32 => 4,
        pub private_data: u64 => 8,
        pub private_data_size: u32 => 16,
        pub _pad0: u32 => 20,
    }
}

wire_struct! {
    /// `struct d3dkmt_queryvideomemoryinfo`.
    #[repr(C)]
    pub struct D3dkmtQueryVideoMemoryInfo [56] {
        pub process: u64 => 0,
        pub adapter: D3dkmtHandle => 8,
        /// See [`memory_segment_group`].
        pub memory_segment_group: u32 => 12,
        pub budget: u64 => 16,
        pub current_usage: u64 => 24,
        pub current_reservation: u64 => 32,
        pub available_for_reservation: u64 => 40,
        pub physical_adapter_index: u32 => 48,
        pub _pad0: u32 => 52,
    }
}

// ---------------------------------------------------------------------------
// Devices, contexts, hardware queues, paging queues
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct d3dkmt_createdevice`. The first member is a union of the
    /// adapter handle and a pointer; only the handle form is used on Linux.
    #[repr(C)]
    pub struct D3dkmtCreateDevice [64] {
        pub adapter: D3dkmtHandle => 0,
        pub _pad0: u32 => 4,
        pub flags: D3dkmtCreateDeviceFlags => 8,
        pub device: D3dkmtHandle => 12,
        pub command_buffer: u64 => 16,
        pub command_buffer_size: u32 => 24,
        pub reserved: u32 => 28,
        pub allocation_list: u64 => 32,
        pub allocation_list_size: u32 => 40,
        pub reserved1: u32 => 44,
        pub patch_location_list: u64 => 48,
        pub patch_location_list_size: u32 => 56,
        pub reserved2: u32 => 60,
    }
}

wire_struct! {
    /// `struct d3dkmt_destroydevice`.
    #[repr(C)]
    pub struct D3dkmtDestroyDevice [4] {
        pub device: D3dkmtHandle => 0,
    }
}

wire_struct! {
    /// `struct d3dkmt_createcontextvirtual`.
    #[repr(C)]
    pub struct D3dkmtCreateContextVirtual [40] {
        pub device: D3dkmtHandle => 0,
        pub node_ordinal: u32 => 4,
        pub engine_affinity: u32 => 8,
        pub flags: D3dddiCreateContextFlags => 12,
        pub priv_drv_data: u64 => 16,
        pub priv_drv_data_size: u32 => 24,
        /// See [`client_hint`].
        pub client_hint: u32 => 28,
        pub context: D3dkmtHandle => 32,
        pub _pad0: u32 => 36,
    }
}

wire_struct! {
    /// `struct d3dkmt_destroycontext`.
    #[repr(C)]
    pub struct D3dkmtDestroyContext [4] {
        pub context: D3dkmtHandle => 0,
    }
}

wire_struct! {
    /// `struct d3dkmt_createhwqueue`.
    #[repr(C)]
    pub struct D3dkmtCreateHwQueue [48] {
        pub context: D3dkmtHandle => 0,
        pub flags: D3dddiCreateHwQueueFlags => 4,
        pub priv_drv_data_size: u32 => 8,
        pub reserved: u32 => 12,
        pub priv_drv_data: u64 => 16,
        pub queue: D3dkmtHandle => 24,
        pub queue_progress_fence: D3dkmtHandle => 28,
        pub queue_progress_fence_cpu_va: u64 => 32,
        pub queue_progress_fence_gpu_va: u64 => 40,
    }
}

wire_struct! {
    /// `struct d3dkmt_destroyhwqueue`.
    #[repr(C)]
    pub struct D3dkmtDestroyHwQueue [4] {
        pub queue: D3dkmtHandle => 0,
    }
}

wire_struct! {
    /// `struct d3dkmt_createpagingqueue`.
    #[repr(C)]
    pub struct D3dkmtCreatePagingQueue [32] {
        pub device: D3dkmtHandle => 0,
        /// See [`pagingqueue_priority`].
        pub priority: i32 => 4,
        pub paging_queue: D3dkmtHandle => 8,
        pub sync_object: D3dkmtHandle => 12,
        pub fence_cpu_virtual_address: u64 => 16,
        pub physical_adapter_index: u32 => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// `struct d3dddi_destroypagingqueue`.
    #[repr(C)]
    pub struct D3dddiDestroyPagingQueue [4] {
        pub paging_queue: D3dkmtHandle => 0,
    }
}

wire_struct! {
    /// `struct d3dkmt_getdevicestate`. The trailing union is 48 bytes; its
    /// first member, `execution_state`, is the one compute callers read.
    #[repr(C)]
    pub struct D3dkmtGetDeviceState [56] {
        pub device: D3dkmtHandle => 0,
        /// See [`devicestate_type`].
        pub state_type: u32 => 4,
        /// See [`deviceexecution_state`].
        pub execution_state: u32 => 8,
        pub reserved: [u32; 11] => 12,
    }
}

// ---------------------------------------------------------------------------
// Allocations and residency
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct d3dddi_allocationinfo2`: one element of CREATEALLOCATION's
    /// `allocation_info` array.
    #[repr(C)]
    pub struct D3dddiAllocationInfo2 [96] {
        pub allocation: D3dkmtHandle => 0,
        pub _pad0: u32 => 4,
        /// User address of existing system memory backing the allocation.
        pub sysmem: u64 => 8,
        pub priv_drv_data: u64 => 16,
        pub priv_drv_data_size: u32 => 24,
        pub vidpn_source_id: u32 => 28,
        pub flags: D3dddiAllocationInfo2Flags => 32,
        pub _pad1: u32 => 36,
        pub gpu_virtual_address: u64 => 40,
        /// Union of `priority` (u32) and `unused` (u64).
        pub priority: u32 => 48,
        pub _pad2: u32 => 52,
        pub reserved: [u64; 5] => 56,
    }
}

wire_struct! {
    /// `struct d3dkmt_createstandardallocation`.
    #[repr(C)]
    pub struct D3dkmtCreateStandardAllocation [24] {
        /// See [`standard_allocation_type`].
        pub r#type: u32 => 0,
        pub reserved: u32 => 4,
        /// `existing_heap_data.size`.
        pub existing_heap_data_size: u64 => 8,
        pub flags: u32 => 16,
        pub reserved1: u32 => 20,
    }
}

wire_struct! {
    /// `struct d3dkmt_createallocation`. `priv_drv_data` is a union with
    /// `standard_allocation` (selected by the STANDARD_ALLOCATION flag).
    #[repr(C)]
    pub struct D3dkmtCreateAllocation [72] {
        pub device: D3dkmtHandle => 0,
        pub resource: D3dkmtHandle => 4,
        pub global_share: D3dkmtHandle => 8,
        pub reserved: u32 => 12,
        pub private_runtime_data: u64 => 16,
        pub private_runtime_data_size: u32 => 24,
        pub reserved1: u32 => 28,
        pub priv_drv_data: u64 => 32,
        pub priv_drv_data_size: u32 => 40,
        pub alloc_count: u32 => 44,
        pub allocation_info: u64 => 48,
        pub flags: D3dkmtCreateAllocationFlags => 56,
        pub reserved2: u32 => 60,
        pub private_runtime_resource_handle: u64 => 64,
    }
}

wire_struct! {
    /// `struct d3dkmt_destroyallocation2`.
    #[repr(C)]
    pub struct D3dkmtDestroyAllocation2 [24] {
        pub device: D3dkmtHandle => 0,
        pub resource: D3dkmtHandle => 4,
        pub allocations: u64 => 8,
        pub alloc_count: u32 => 16,
        pub flags: D3dddicbDestroyAllocation2Flags => 20,
    }
}

wire_struct! {
    /// `struct d3dddi_makeresident`.
    #[repr(C)]
    pub struct D3dddiMakeResident [48] {
        pub paging_queue: D3dkmtHandle => 0,
        pub alloc_count: u32 => 4,
        pub allocation_list: u64 => 8,
        pub priority_list: u64 => 16,
        pub flags: D3dddiMakeResidentFlags => 24,
        pub _pad0: u32 => 28,
        pub paging_fence_value: u64 => 32,
        pub num_bytes_to_trim: u64 => 40,
    }
}

wire_struct! {
    /// `struct d3dkmt_evict`.
    #[repr(C)]
    pub struct D3dkmtEvict [32] {
        pub device: D3dkmtHandle => 0,
        pub alloc_count: u32 => 4,
        pub allocations: u64 => 8,
        pub flags: D3dddiEvictFlags => 16,
        pub reserved: u32 => 20,
        pub num_bytes_to_trim: u64 => 24,
    }
}

wire_struct! {
    /// `struct d3dkmt_queryallocationresidency`.
    #[repr(C)]
    pub struct D3dkmtQueryAllocationResidency [32] {
        pub device: D3dkmtHandle => 0,
        pub resource: D3dkmtHandle => 4,
        pub allocations: u64 => 8,
        pub allocation_count: u32 => 16,
        pub reserved: u32 => 20,
        /// User pointer to `allocation_count` [`residency_status`] values.
        pub residency_status: u64 => 24,
    }
}

wire_struct! {
    /// `struct d3dkmt_queryresourceinfo`.
    #[repr(C)]
    pub struct D3dkmtQueryResourceInfo [32] {
        pub device: D3dkmtHandle => 0,
        pub global_share: D3dkmtHandle => 4,
        pub private_runtime_data: u64 => 8,
        pub private_runtime_data_size: u32 => 16,
        pub total_priv_drv_data_size: u32 => 20,
        pub resource_priv_drv_data_size: u32 => 24,
        pub allocation_count: u32 => 28,
    }
}

wire_struct! {
    /// `struct d3dkmt_getallocationpriority`.
    #[repr(C)]
    pub struct D3dkmtGetAllocationPriority [32] {
        pub device: D3dkmtHandle => 0,
        pub resource: D3dkmtHandle => 4,
        pub allocation_list: u64 => 8,
        pub allocation_count: u32 => 16,
        pub reserved: u32 => 20,
        pub priorities: u64 => 24,
    }
}

wire_struct! {
    /// `struct d3dkmt_setallocationpriority`.
    #[repr(C)]
    pub struct D3dkmtSetAllocationPriority [32] {
        pub device: D3dkmtHandle => 0,
        pub resource: D3dkmtHandle => 4,
        pub allocation_list: u64 => 8,
        pub allocation_count: u32 => 16,
        pub reserved: u32 => 20,
        pub priorities: u64 => 24,
    }
}

wire_struct! {
    /// `struct d3dkmt_lock2`. On return `data` is the user address the
    /// allocation is mapped at.
    #[repr(C)]
    pub struct D3dkmtLock2 [24] {
        pub device: D3dkmtHandle => 0,
        pub allocation: D3dkmtHandle => 4,
        pub flags: D3dddicbLock2Flags => 8,
        pub reserved: u32 => 12,
        pub data: u64 => 16,
    }
}

wire_struct! {
    /// `struct d3dkmt_unlock2`.
    #[repr(C)]
    pub struct D3dkmtUnlock2 [8] {
        pub device: D3dkmtHandle => 0,
        pub allocation: D3dkmtHandle => 4,
    }
}

// ---------------------------------------------------------------------------
// GPU virtual addresses
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct d3dddi_reservegpuvirtualaddress`.
    #[repr(C)]
    pub struct D3dddiReserveGpuVirtualAddress [72] {
        pub adapter: D3dkmtHandle => 0,
        pub _pad0: u32 => 4,
        pub base_address: u64 => 8,
        pub minimum_address: u64 => 16,
        pub maximum_address: u64 => 24,
        pub size: u64 => 32,
        /// See [`gpuva_reservation_type`].
        pub reservation_type: u32 => 40,
        pub _pad1: u32 => 44,
        pub driver_protection: u64 => 48,
        pub virtual_address: u64 => 56,
        pub paging_fence_value: u64 => 64,
    }
}

wire_struct! {
    /// `struct d3dddi_mapgpuvirtualaddress`.
    #[repr(C)]
    pub struct D3dddiMapGpuVirtualAddress [104] {
        pub paging_queue: D3dkmtHandle => 0,
        pub _pad0: u32 => 4,
        pub base_address: u64 => 8,
        pub minimum_address: u64 => 16,
        pub maximum_address: u64 => 24,
        pub allocation: D3dkmtHandle => 32,
        pub _pad1: u32 => 36,
        pub offset_in_pages: u64 => 40,
        pub size_in_pages: u64 => 48,
        pub protection: D3dddiGpuVaProtectionType => 56,
        pub driver_protection: u64 => 64,
        pub reserved0: u32 => 72,
        pub _pad2: u32 => 76,
        pub reserved1: u64 => 80,
        pub virtual_address: u64 => 88,
        pub paging_fence_value: u64 => 96,
    }
}

wire_struct! {
    /// `struct d3dkmt_freegpuvirtualaddress`.
    #[repr(C)]
    pub struct D3dkmtFreeGpuVirtualAddress [24] {
        pub adapter: D3dkmtHandle => 0,
        pub reserved: u32 => 4,
        pub base_address: u64 => 8,
        pub size: u64 => 16,
    }
}

// ---------------------------------------------------------------------------
// Synchronisation objects
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct d3dddi_synchronizationobjectinfo2`. The 64-byte union after
    /// `flags` is kept raw; [`Self::monitored_fence`] reads the member a
    /// compute workload uses.
    #[repr(C)]
    pub struct D3dddiSynchronizationObjectInfo2 [80] {
        /// See [`syncobject_type`].
        pub r#type: u32 => 0,
        pub flags: D3dddiSynchronizationObjectFlags => 4,
        pub reserved: [u64; 8] => 8,
        pub shared_handle: D3dkmtHandle => 72,
        pub _pad0: u32 => 76,
    }
}

/// The `monitored_fence` member of the synchronisation object info union.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitoredFenceInfo {
    pub initial_fence_value: u64,
    pub fence_cpu_virtual_address: u64,
    pub fence_gpu_virtual_address: u64,
    pub engine_affinity: u32,
}

impl D3dddiSynchronizationObjectInfo2 {
    /// Reads the union as `monitored_fence`.
    pub fn monitored_fence(&self) -> MonitoredFenceInfo {
        MonitoredFenceInfo {
            initial_fence_value: self.reserved[0],
            fence_cpu_virtual_address: self.reserved[1],
            fence_gpu_virtual_address: self.reserved[2],
            // engine_affinity is the low half of the fourth word (little endian).
            engine_affinity: self.reserved[3] as u32,
        }
    }

    /// Writes the union as `monitored_fence`, zeroing the rest of it.
    pub fn set_monitored_fence(&mut self, info: MonitoredFenceInfo) {
        self.reserved = [0; 8];
        self.reserved[0] = info.initial_fence_value;
        self.reserved[1] = info.fence_cpu_virtual_address;
        self.reserved[2] = info.fence_gpu_virtual_address;
        self.reserved[3] = u64::from(info.engine_affinity);
    }
}

wire_struct! {
    /// `struct d3dkmt_createsynchronizationobject2`.
    #[repr(C)]
    pub struct D3dkmtCreateSynchronizationObject2 [96] {
        pub device: D3dkmtHandle => 0,
        pub reserved: u32 => 4,
        pub info: D3dddiSynchronizationObjectInfo2 => 8,
        pub sync_object: D3dkmtHandle => 88,
        pub reserved1: u32 => 92,
    }
}

wire_struct! {
    /// `struct d3dkmt_destroysynchronizationobject`.
    #[repr(C)]
    pub struct D3dkmtDestroySynchronizationObject [4] {
        pub sync_object: D3dkmtHandle => 0,
    }
}

wire_struct! {
    /// `struct d3dkmt_opensynchronizationobject`.
    #[repr(C)]
    pub struct D3dkmtOpenSynchronizationObject [72] {
        pub shared_handle: D3dkmtHandle => 0,
        pub sync_object: D3dkmtHandle => 4,
        pub reserved: [u64; 8] => 8,
    }
}

wire_struct! {
    /// `struct d3dkmt_waitforsynchronizationobjectfromcpu`. A non-zero
    /// `async_event` is an eventfd the call signals instead of blocking.
    #[repr(C)]
    pub struct D3dkmtWaitForSynchronizationObjectFromCpu [40] {
        pub device: D3dkmtHandle => 0,
        pub object_count: u32 => 4,
        pub objects: u64 => 8,
        pub fence_values: u64 => 16,
        pub async_event: u64 => 24,
        pub flags: D3dddiWaitForSynchronizationObjectFromCpuFlags => 32,
        pub _pad0: u32 => 36,
    }
}

wire_struct! {
    /// `struct d3dkmt_signalsynchronizationobjectfromcpu`.
    #[repr(C)]
    pub struct D3dkmtSignalSynchronizationObjectFromCpu [32] {
        pub device: D3dkmtHandle => 0,
        pub object_count: u32 => 4,
        pub objects: u64 => 8,
        pub fence_values: u64 => 16,
        pub flags: D3dddicbSignalFlags => 24,
        pub _pad0: u32 => 28,
    }
}

wire_struct! {
    /// `struct d3dkmt_waitforsynchronizationobjectfromgpu`. The 64-byte
    /// union starts with `monitored_fence_values` (a user pointer) or, for
    /// legacy fences, `fence_value`.
    #[repr(C)]
    pub struct D3dkmtWaitForSynchronizationObjectFromGpu [80] {
        pub context: D3dkmtHandle => 0,
        pub object_count: u32 => 4,
        pub objects: u64 => 8,
        pub monitored_fence_values: u64 => 16,
        pub reserved: [u64; 7] => 24,
    }
}

wire_struct! {
    /// `struct d3dkmt_signalsynchronizationobjectfromgpu`.
    #[repr(C)]
    pub struct D3dkmtSignalSynchronizationObjectFromGpu [80] {
        pub context: D3dkmtHandle => 0,
        pub object_count: u32 => 4,
        pub objects: u64 => 8,
        pub monitored_fence_values: u64 => 16,
        pub reserved: [u64; 7] => 24,
    }
}

wire_struct! {
    /// `struct d3dkmt_signalsynchronizationobjectfromgpu2`. The union starts
    /// with `fence_value` / `cpu_event_handle` / `monitored_fence_values`.
    #[repr(C)]
    pub struct D3dkmtSignalSynchronizationObjectFromGpu2 [96] {
        pub object_count: u32 => 0,
        pub reserved1: u32 => 4,
        pub objects: u64 => 8,
        pub flags: D3dddicbSignalFlags => 16,
        pub context_count: u32 => 20,
        pub contexts: u64 => 24,
        pub fence_value: u64 => 32,
        pub reserved: [u64; 7] => 40,
    }
}

// ---------------------------------------------------------------------------
// Submission and escapes
// ---------------------------------------------------------------------------

wire_struct! {
    /// `struct d3dkmt_submitcommand`. `command_buffer` is the GPU VA of a
    /// dxvmm command stream ([`crate::cmdstream`]).
    #[repr(C)]
    pub struct D3dkmtSubmitCommand [384] {
        pub command_buffer: u64 => 0,
        pub command_length: u32 => 8,
        pub flags: D3dkmtSubmitCommandFlags => 12,
        pub present_history_token: u64 => 16,
        pub broadcast_context_count: u32 => 24,
        #[serde(with = "big_array")]
        pub broadcast_context: [D3dkmtHandle; D3DDDI_MAX_BROADCAST_CONTEXT] => 28,
        pub reserved: u32 => 284,
        pub priv_drv_data: u64 => 288,
        pub priv_drv_data_size: u32 => 296,
        pub num_primaries: u32 => 300,
        pub written_primaries: [D3dkmtHandle; D3DDDI_MAX_WRITTEN_PRIMARIES] => 304,
        pub num_history_buffers: u32 => 368,
        pub reserved1: u32 => 372,
        pub history_buffer_array: u64 => 376,
    }
}

wire_struct! {
    /// `struct d3dkmt_submitcommandtohwqueue`.
    #[repr(C)]
    pub struct D3dkmtSubmitCommandToHwQueue [56] {
        pub hwqueue: D3dkmtHandle => 0,
        pub reserved: u32 => 4,
        pub hwqueue_progress_fence_id: u64 => 8,
        pub command_buffer: u64 => 16,
        pub command_length: u32 => 24,
        pub priv_drv_data_size: u32 => 28,
        pub priv_drv_data: u64 => 32,
        pub num_primaries: u32 => 40,
        pub reserved1: u32 => 44,
        pub written_primaries: u64 => 48,
    }
}

wire_struct! {
    /// `struct d3dkmt_escape`.
    #[repr(C)]
    pub struct D3dkmtEscape [32] {
        pub adapter: D3dkmtHandle => 0,
        pub device: D3dkmtHandle => 4,
        /// See [`escape_type`].
        pub r#type: u32 => 8,
        pub flags: D3dddiEscapeFlags => 12,
        pub priv_drv_data: u64 => 16,
        pub priv_drv_data_size: u32 => 24,
        pub context: D3dkmtHandle => 28,
    }
}

// ---------------------------------------------------------------------------
// ioctl numbers
// ---------------------------------------------------------------------------

/// The ioctl type byte of `/dev/dxg` ('G').
pub const DXG_IOCTL_TYPE: u32 = 0x47;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux's `_IOWR(type, nr, size)` on x86 and arm64 (asm-generic encoding).
pub const fn iowr(ty: u32, nr: u32, size: usize) -> u32 {
    assert!(
        size < (1 << 14),
        "ioctl argument larger than the size field"
    );
    ((IOC_READ | IOC_WRITE) << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | (ty << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
}

/// Decoded parts of an ioctl command word.
pub const fn ioctl_nr(cmd: u32) -> u32 {
    cmd & 0xff
}

/// Size field of an ioctl command word.
pub const fn ioctl_size(cmd: u32) -> usize {
    ((cmd >> IOC_SIZESHIFT) & 0x3fff) as usize
}

macro_rules! ioctls {
    ($( $(#[$m:meta])* $name:ident = ($nr:expr, $ty:ty); )*) => {
        $( $(#[$m])* pub const $name: u32 = iowr(DXG_IOCTL_TYPE, $nr, core::mem::size_of::<$ty>()); )*

        /// Every ioctl this module defines, as (name, number, argument size).
        pub const IOCTLS: &[(&str, u32, usize)] = &[
            $( (stringify!($name), $name, core::mem::size_of::<$ty>()), )*
        ];
    };
}

ioctls! {
    LX_DXOPENADAPTERFROMLUID = (0x01, D3dkmtOpenAdapterFromLuid);
    LX_DXCREATEDEVICE = (0x02, D3dkmtCreateDevice);
    LX_DXCREATECONTEXTVIRTUAL = (0x04, D3dkmtCreateContextVirtual);
    LX_DXDESTROYCONTEXT = (0x05, D3dkmtDestroyContext);
    LX_DXCREATEALLOCATION = (0x06, D3dkmtCreateAllocation);
    LX_DXCREATEPAGINGQUEUE = (0x07, D3dkmtCreatePagingQueue);
    LX_DXRESERVEGPUVIRTUALADDRESS = (0x08, D3dddiReserveGpuVirtualAddress);
    LX_DXQUERYADAPTERINFO = (0x09, D3dkmtQueryAdapterInfo);
    LX_DXQUERYVIDEOMEMORYINFO = (0x0a, D3dkmtQueryVideoMemoryInfo);
    LX_DXMAKERESIDENT = (0x0b, D3dddiMakeResident);
    LX_DXMAPGPUVIRTUALADDRESS = (0x0c, D3dddiMapGpuVirtualAddress);
    LX_DXESCAPE = (0x0d, D3dkmtEscape);
    LX_DXGETDEVICESTATE = (0x0e, D3dkmtGetDeviceState);
    LX_DXSUBMITCOMMAND = (0x0f, D3dkmtSubmitCommand);
    LX_DXCREATESYNCHRONIZATIONOBJECT = (0x10, D3dkmtCreateSynchronizationObject2);
    LX_DXDESTROYALLOCATION2 = (0x13, D3dkmtDestroyAllocation2);
    LX_DXENUMADAPTERS2 = (0x14, D3dkmtEnumAdapters2);
    LX_DXCLOSEADAPTER = (0x15, D3dkmtCloseAdapter);
    LX_DXCREATEHWQUEUE = (0x18, D3dkmtCreateHwQueue);
    LX_DXDESTROYDEVICE = (0x19, D3dkmtDestroyDevice);
    LX_DXDESTROYHWQUEUE = (0x1b, D3dkmtDestroyHwQueue);
    LX_DXDESTROYPAGINGQUEUE = (0x1c, D3dddiDestroyPagingQueue);
    LX_DXDESTROYSYNCHRONIZATIONOBJECT = (0x1d, D3dkmtDestroySynchronizationObject);
    LX_DXEVICT = (0x1e, D3dkmtEvict);
    LX_DXFREEGPUVIRTUALADDRESS = (0x20, D3dkmtFreeGpuVirtualAddress);
    LX_DXLOCK2 = (0x25, D3dkmtLock2);
    LX_DXOPENSYNCHRONIZATIONOBJECT = (0x29, D3dkmtOpenSynchronizationObject);
    LX_DXQUERYALLOCATIONRESIDENCY = (0x2a, D3dkmtQueryAllocationResidency);
    LX_DXQUERYRESOURCEINFO = (0x2b, D3dkmtQueryResourceInfo);
    LX_DXSETALLOCATIONPRIORITY = (0x2e, D3dkmtSetAllocationPriority);
    LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU = (0x31, D3dkmtSignalSynchronizationObjectFromCpu);
    LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU = (0x32, D3dkmtSignalSynchronizationObjectFromGpu);
    LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2 = (0x33, D3dkmtSignalSynchronizationObjectFromGpu2);
    LX_DXSUBMITCOMMANDTOHWQUEUE = (0x34, D3dkmtSubmitCommandToHwQueue);
    LX_DXUNLOCK2 = (0x37, D3dkmtUnlock2);
    LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU = (0x3a, D3dkmtWaitForSynchronizationObjectFromCpu);
    LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU = (0x3b, D3dkmtWaitForSynchronizationObjectFromGpu);
    LX_DXGETALLOCATIONPRIORITY = (0x3c, D3dkmtGetAllocationPriority);
    LX_DXENUMADAPTERS3 = (0x3e, D3dkmtEnumAdapters3);
}

/// Looks up the name of an ioctl command word this module defines.
pub fn ioctl_name(cmd: u32) -> Option<&'static str> {
    IOCTLS
        .iter()
        .find(|(_, c, _)| *c == cmd)
        .map(|(n, _, _)| *n)
}
