//! The [`Backend`] trait: GPU-PV's object model as the host's "kernel-mode
//! driver plus hardware", and the types it speaks in.
//!
//! Handles are [`D3dkmtHandle`]s made by the backend. Process handles are
//! global; every other handle is valid only within the process that created
//! it, so the device can pass the guest's handles straight through and a
//! handle of another process is [`BackendError::InvalidHandle`]. Handles are
//! unique backend-wide and not reused until a billion more have been made
//! (then only values not alive in the process), so a stale handle, or one
//! of another process, is caught.
//!
//! Ownership: a process owns its opened adapters; an opened adapter owns the
//! devices created on it; a device owns its allocations, contexts (which own
//! their hardware queues), paging queues, sync objects, pipelines and GPU
//! virtual address space. Destroying an object destroys what it owns;
//! destroying a process frees everything.

use std::sync::Arc;
use std::time::Duration;

use dxvmm_protocol::abi::{D3dkmtHandle, WinLuid};
use dxvmm_protocol::escape::{CreatePipeline, DxgvUmdAdapterInfo, EscapeRequest, EscapeResponse};
use dxvmm_protocol::NtStatus;
use serde::Serialize;

use crate::error::{BackendError, Result};
use crate::memory::HostVisibleMemory;

/// A backend handle (see the module documentation for its scope).
pub type Handle = D3dkmtHandle;

/// What kind of device an adapter is (wgpu's classification).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    DiscreteGpu,
    IntegratedGpu,
    VirtualGpu,
    /// A software rasterizer (lavapipe, SwiftShader).
    Cpu,
    Other,
}

impl DeviceKind {
    /// The value of [`DxgvUmdAdapterInfo::device_type`].
    pub fn umd_device_type(self) -> u32 {
        use dxvmm_protocol::escape::device_type as t;
        match self {
            DeviceKind::DiscreteGpu => t::DISCRETE_GPU,
            DeviceKind::IntegratedGpu => t::INTEGRATED_GPU,
            DeviceKind::VirtualGpu => t::VIRTUAL_GPU,
            DeviceKind::Cpu => t::CPU,
            DeviceKind::Other => t::OTHER,
        }
    }
}

/// `D3DKMT_MEMORY_SEGMENT_GROUP`: which memory QUERYVIDEOMEMORYINFO asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentGroup {
    /// Memory local to the GPU (all of it, for a software adapter).
    Local = 0,
    /// System memory the GPU reaches over the bus.
    NonLocal = 1,
}

impl SegmentGroup {
    /// From the ABI's `memory_segment_group` value.
    pub fn from_raw(v: u32) -> Result<Self> {
        match v {
            0 => Ok(SegmentGroup::Local),
            1 => Ok(SegmentGroup::NonLocal),
            v => Err(BackendError::param("memory segment group", v.into())),
        }
    }
}

/// One memory segment of an adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    /// Segment id, from 1 (WDDM's numbering).
    pub id: u32,
    pub group: SegmentGroup,
    /// Bytes the backend lets allocations use in this segment.
    pub size: u64,
    /// Whether the CPU can map the segment directly. dxvmm never maps GPU
    /// memory into the guest (CPU access goes through guest pages), so this
    /// says what the host hardware could do, for information.
    pub cpu_visible: bool,
}

/// Limits the guest's user-mode driver must respect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdapterLimits {
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_bindings: u32,
    pub max_workgroups_per_dimension: u32,
    pub max_invocations_per_workgroup: u32,
    /// Binding ranges must start at a multiple of this within their
    /// allocation.
    pub min_storage_buffer_offset_alignment: u32,
}

/// A host adapter as the guest will see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdapterInfo {
    /// Stable across runs: derived from what identifies the adapter (see
    /// [`crate::stable_luid`]).
    pub luid: WinLuid,
    pub name: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub kind: DeviceKind,
    /// True for software adapters (lavapipe).
    pub software: bool,
    /// Graphics API the backend drives it through ("vulkan", or "cpu" for
    /// the test double).
    pub backend: String,
    /// Driver name and version, as the driver reports them.
    pub driver: String,
    pub driver_info: String,
    /// Bytes of allocations the backend accepts on this adapter, all
    /// processes together (QUERYVIDEOMEMORYINFO's budget).
    pub memory_budget: u64,
    pub segments: Vec<SegmentInfo>,
    pub limits: AdapterLimits,
}

impl AdapterInfo {
    /// The description QUERYADAPTERINFO(`KMTQAITYPE_UMDRIVERPRIVATE`) returns.
    pub fn umd_info(&self) -> DxgvUmdAdapterInfo {
        let mut info = DxgvUmdAdapterInfo {
            magic: dxvmm_protocol::escape::DXGV_UMD_INFO_MAGIC,
            version: dxvmm_protocol::escape::DXGV_UMD_INFO_VERSION,
            vendor_id: self.vendor_id,
            device_id: self.device_id,
            device_type: self.kind.umd_device_type(),
            max_bindings: self.limits.max_bindings,
            max_buffer_size: self.limits.max_buffer_size,
            max_workgroups_per_dimension: self.limits.max_workgroups_per_dimension,
            max_invocations_per_workgroup: self.limits.max_invocations_per_workgroup,
            min_storage_buffer_offset_alignment: self.limits.min_storage_buffer_offset_alignment,
            _pad0: 0,
            name: [0; 128],
        };
        info.set_name(&self.name);
        info
    }
}

/// QUERYVIDEOMEMORYINFO's answer for one process and segment group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VideoMemoryInfo {
    pub budget: u64,
    pub current_usage: u64,
    pub current_reservation: u64,
    pub available_for_reservation: u64,
}

/// CREATEALLOCATION's request for one allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocationDesc {
    /// Bytes; rounded up to a multiple of 4 (the GPU copy granule).
    pub size: u64,
    /// Required alignment of GPU virtual addresses mapped to it: 0 (any),
    /// or a power of two up to [`MAX_ALIGNMENT`].
    pub alignment: u64,
    /// The CPU will read or write it through guest pages (LOCK2).
    pub cpu_visible: bool,
}

/// Largest allocation alignment accepted (64 KiB, a large GPU page).
pub const MAX_ALIGNMENT: u64 = 64 * 1024;

/// What the backend made of an [`AllocationDesc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocationInfo {
    pub size: u64,
    pub alignment: u64,
    pub cpu_visible: bool,
    /// Segment the allocation lives in.
    pub segment_id: u32,
}

/// RESERVEGPUVIRTUALADDRESS: find or claim `size` bytes of GPU VA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaReservation {
    /// A fixed address, or 0 to let the backend choose within
    /// `[minimum, maximum)` (0 = no bound).
    pub base: u64,
    pub minimum: u64,
    pub maximum: u64,
    pub size: u64,
}

/// MAPGPUVIRTUALADDRESS: map `size` bytes of `allocation` from
/// `allocation_offset` at `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaMapping {
    /// Inside a range reserved earlier (or mapped, to remap it), or 0 to
    /// map at an address the backend chooses within `[minimum, maximum)`.
    pub base: u64,
    pub minimum: u64,
    pub maximum: u64,
    pub size: u64,
    pub allocation: Handle,
    pub allocation_offset: u64,
}

/// Page granule of GPU virtual addresses.
pub const GPU_PAGE_SIZE: u64 = 4096;
/// Lowest GPU virtual address the backend hands out (0 stays invalid).
pub const GPU_VA_START: u64 = 0x1_0000_0000;
/// End of the GPU virtual address space (47 bits, as on most GPUs).
pub const GPU_VA_END: u64 = 1 << 47;

/// Where a monitored fence's value lives in CPU-visible memory: the backend
/// writes each new value (u64, little-endian) at `offset` of `memory`
/// before it reports the signal.
#[derive(Clone)]
pub struct FenceStorage {
    pub memory: Arc<dyn HostVisibleMemory>,
    pub offset: u64,
}

impl std::fmt::Debug for FenceStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FenceStorage")
            .field("len", &self.memory.len())
            .field("offset", &self.offset)
            .finish()
    }
}

/// A created paging queue and the fence its paging operations signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingQueue {
    pub handle: Handle,
    pub sync_object: Handle,
}

/// A created hardware queue and its progress fence (signalled by the
/// guest's own FENCE_SIGNAL commands; the backend only creates it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwQueue {
    pub handle: Handle,
    pub progress_fence: Handle,
}

/// How a multi-fence wait is satisfied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// Every fence has reached its value.
    All,
    /// At least one has.
    Any,
}

/// A fence and a value, for signals and waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceValue {
    pub fence: Handle,
    pub value: u64,
}

/// Where SUBMITCOMMAND's command buffer is.
#[derive(Clone, Copy, Debug)]
pub enum CommandBuffer<'a> {
    /// Bytes the caller already has.
    Bytes(&'a [u8]),
    /// At a GPU virtual address of the process, mapped to an allocation
    /// whose guest pages hold the stream (how the guest submits).
    GpuVa { va: u64, length: u64 },
}

/// Receives what completes asynchronously. Called from the backend's own
/// completion thread, never with a backend lock held, so it may call back
/// into the backend; it should not block for long.
pub trait EventSink: Send + Sync {
    /// `fence` of `process` reached `value` (already written to its
    /// [`FenceStorage`], if it has one). Raise the guest's interrupt here.
    fn fence_signaled(&self, process: Handle, fence: Handle, value: u64);

    /// A wait registered with [`Backend::notify_when_reached`] is satisfied.
    fn wait_satisfied(&self, process: Handle, cookie: u64);
}

/// Live objects, all processes together (or one process). After a process
/// is destroyed and the GPU has finished its work, its counts are zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObjectCounts {
    pub processes: u64,
    pub adapters: u64,
    pub devices: u64,
    pub paging_queues: u64,
    pub allocations: u64,
    pub contexts: u64,
    pub hw_queues: u64,
    pub sync_objects: u64,
    pub pipelines: u64,
    pub va_ranges: u64,
    /// Submissions held back by a fence wait.
    pub pending_submissions: u64,
    /// Bytes of allocations.
    pub allocated_bytes: u64,
    /// Buffers alive in the GPU driver (includes those in-flight work still
    /// holds after their allocation was destroyed).
    pub gpu_buffers: u64,
}

impl ObjectCounts {
    /// True when no object of any kind is alive.
    pub fn is_empty(&self) -> bool {
        *self == ObjectCounts::default()
    }
}

/// The host half of GPU-PV. Object-safe: the device holds an
/// `Arc<dyn Backend>`. Every method checks every handle, offset, length and
/// address it is given and answers a [`BackendError`], never a panic, with
/// every other object left as it was.
pub trait Backend: Send + Sync {
    // --- Adapters -------------------------------------------------------

    /// The host adapters, in the order the guest sees them (the default
    /// adapter first).
    fn adapters(&self) -> Vec<AdapterInfo>;

    /// QUERYVIDEOMEMORYINFO for `process` on an adapter it opened.
    fn query_video_memory(
        &self,
        process: Handle,
        adapter: Handle,
        group: SegmentGroup,
    ) -> Result<VideoMemoryInfo>;

    /// Where asynchronous completions go (fence signals, satisfied
    /// waits). `None` stops delivery.
    fn set_event_sink(&self, sink: Option<Arc<dyn EventSink>>);

    // --- Processes ------------------------------------------------------

    fn create_process(&self) -> Result<Handle>;

    /// Frees everything the process owns. GPU work it submitted finishes
    /// (the hardware cannot be interrupted) but signals nothing.
    fn destroy_process(&self, process: Handle) -> Result<()>;

    /// OPENADAPTER: the process's handle for the adapter with `luid`.
    fn open_adapter(&self, process: Handle, luid: WinLuid) -> Result<Handle>;

    fn close_adapter(&self, process: Handle, adapter: Handle) -> Result<()>;

    /// The info of an adapter the process opened.
    fn adapter_info(&self, process: Handle, adapter: Handle) -> Result<AdapterInfo>;

    // --- Devices and queues ---------------------------------------------

    fn create_device(&self, process: Handle, adapter: Handle) -> Result<Handle>;

    fn destroy_device(&self, process: Handle, device: Handle) -> Result<()>;

    fn create_paging_queue(&self, process: Handle, device: Handle) -> Result<PagingQueue>;

    fn destroy_paging_queue(&self, process: Handle, queue: Handle) -> Result<()>;

    /// CREATECONTEXTVIRTUAL: an ordered stream of GPU work.
    fn create_context(&self, process: Handle, device: Handle) -> Result<Handle>;

    fn destroy_context(&self, process: Handle, context: Handle) -> Result<()>;

    /// CREATEHWQUEUE on `context`. Its progress fence's value is written to
    /// `progress_storage` when given.
    fn create_hw_queue(
        &self,
        process: Handle,
        context: Handle,
        progress_storage: Option<FenceStorage>,
    ) -> Result<HwQueue>;

    fn destroy_hw_queue(&self, process: Handle, queue: Handle) -> Result<()>;

    // --- Allocations ----------------------------------------------------

    fn create_allocation(
        &self,
        process: Handle,
        device: Handle,
        desc: &AllocationDesc,
    ) -> Result<(Handle, AllocationInfo)>;

    /// SETEXISTINGSYSMEMPAGES: the CPU-side memory behind an allocation
    /// (at least its size). Its contents become the allocation's (uploaded
    /// at the next GPU use).
    fn set_allocation_memory(
        &self,
        process: Handle,
        allocation: Handle,
        memory: Arc<dyn HostVisibleMemory>,
    ) -> Result<()>;

    /// Destroys the allocation and unmaps it from every GPU VA range (the
    /// ranges stay reserved).
    fn destroy_allocation(&self, process: Handle, allocation: Handle) -> Result<()>;

    /// LOCK2: waits for submitted GPU work that writes the allocation and
    /// copies its GPU contents into its CPU memory.
    fn lock(&self, process: Handle, allocation: Handle) -> Result<()>;

    /// As [`Backend::lock`], telling `written` how far the GPU's contents
    /// have landed in the CPU memory: each call passes a count of bytes
    /// from the allocation's start that now hold what the LOCK2 returns
    /// (growing; nothing writes them again before it returns), so that a
    /// watcher can read them while the rest is copied. A backend may not
    /// call it at all (the default), or only for large copies.
    fn lock_watched(
        &self,
        process: Handle,
        allocation: Handle,
        written: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let _ = written;
        self.lock(process, allocation)
    }

    /// UNLOCK2: the CPU may have written the memory; the GPU sees it from
    /// the next use on.
    fn unlock(&self, process: Handle, allocation: Handle) -> Result<()>;

    // --- GPU virtual address space --------------------------------------

    /// RESERVEGPUVIRTUALADDRESS; returns the base address.
    fn reserve_gpu_va(&self, process: Handle, device: Handle, req: &VaReservation) -> Result<u64>;

    /// MAPGPUVIRTUALADDRESS; returns the base address.
    fn map_gpu_va(&self, process: Handle, device: Handle, map: &VaMapping) -> Result<u64>;

    /// FREEGPUVIRTUALADDRESS: releases whole reserved or mapped ranges
    /// lying within `[base, base + size)`; a range partly inside is
    /// [`BackendError::OutOfRange`].
    fn free_gpu_va(&self, process: Handle, device: Handle, base: u64, size: u64) -> Result<()>;

    // --- Monitored fences -----------------------------------------------

    /// CREATESYNCOBJECT (monitored fence) starting at `initial_value`.
    fn create_sync_object(
        &self,
        process: Handle,
        device: Handle,
        initial_value: u64,
        storage: Option<FenceStorage>,
    ) -> Result<Handle>;

    fn destroy_sync_object(&self, process: Handle, fence: Handle) -> Result<()>;

    /// The fence's current (completed) value.
    fn fence_value(&self, process: Handle, fence: Handle) -> Result<u64>;

    /// SIGNALSYNCOBJECT from the CPU: takes effect at once. Fences are
    /// monotonic; a value below the current one changes nothing.
    fn signal_from_cpu(&self, process: Handle, fences: &[FenceValue]) -> Result<()>;

    /// WAITFORSYNCOBJECTFROMCPU, blocking: returns when the condition
    /// holds, [`BackendError::Timeout`] after `timeout`, or an error if the
    /// process or a fence is destroyed meanwhile.
    fn wait_from_cpu(
        &self,
        process: Handle,
        fences: &[FenceValue],
        mode: WaitMode,
        timeout: Option<Duration>,
    ) -> Result<()>;

    /// WAITFORSYNCOBJECTFROMCPU with an event: reports
    /// [`EventSink::wait_satisfied`] with `cookie` when the condition holds
    /// (at once if it already does). Dropped, unreported, with the process
    /// or with any fence it names: the caller, who destroyed it, ends the
    /// wait itself.
    fn notify_when_reached(
        &self,
        process: Handle,
        fences: &[FenceValue],
        mode: WaitMode,
        cookie: u64,
    ) -> Result<()>;

    /// SIGNALSYNCOBJECT on a context or hardware queue: the fences reach
    /// their values when the queue's earlier work completes.
    fn signal_from_queue(
        &self,
        process: Handle,
        queue: Handle,
        fences: &[FenceValue],
    ) -> Result<()>;

    /// WAITFORSYNCOBJECTFROMGPU: the queue's later work waits until every
    /// fence reaches its value.
    fn wait_from_queue(&self, process: Handle, queue: Handle, fences: &[FenceValue]) -> Result<()>;

    // --- Work -------------------------------------------------------------

    /// SUBMITCOMMAND / SUBMITCOMMANDTOHWQUEUE: decodes and checks the whole
    /// stream (a bad one runs nothing), then queues it on the context or
    /// hardware queue `queue`. Returns without waiting for the GPU.
    fn submit(&self, process: Handle, queue: Handle, commands: CommandBuffer<'_>) -> Result<()>;

    /// CREATE_PIPELINE escape; returns the pipeline's id for DISPATCH.
    fn create_pipeline(&self, process: Handle, device: Handle, req: &CreatePipeline)
        -> Result<u32>;

    /// DESTROY_PIPELINE escape. Work already submitted still runs.
    fn destroy_pipeline(&self, process: Handle, device: Handle, pipeline: u32) -> Result<()>;

    /// ESCAPE: decodes a dxvmm escape buffer, runs it, and returns the
    /// buffer with the answer written in (same size). A failed operation
    /// is reported in the buffer's status (with the compiler's text for a
    /// shader); only an undecodable buffer is an `Err`.
    fn escape(&self, process: Handle, device: Handle, request: &[u8]) -> Result<Vec<u8>> {
        let req = EscapeRequest::decode(request).map_err(|source| BackendError::Decode {
            what: "escape",
            source,
        })?;
        let mut resp = EscapeResponse {
            status: NtStatus::SUCCESS,
            pipeline: 0,
            error: String::new(),
        };
        let outcome = match &req {
            EscapeRequest::CreatePipeline(p) => self
                .create_pipeline(process, device, p)
                .map(|id| resp.pipeline = id),
            EscapeRequest::DestroyPipeline { pipeline } => {
                self.destroy_pipeline(process, device, *pipeline)
            }
        };
        if let Err(e) = outcome {
            // A bad handle is the caller's error, not the escape's result.
            if matches!(
                e,
                BackendError::InvalidHandle {
                    kind: crate::ObjectKind::Process | crate::ObjectKind::Device,
                    ..
                }
            ) {
                return Err(e);
            }
            resp.status = e.status();
            resp.error = match e {
                BackendError::ShaderCompile { message } => message,
                other => other.to_string(),
            };
        }
        resp.encode_into_request(request)
            .map_err(|source| BackendError::Decode {
                what: "escape",
                source,
            })
    }

    /// Waits until every piece of work submitted so far has completed on
    /// the GPU and its completions have been delivered.
    fn flush(&self) -> Result<()>;

    /// Live objects of all processes.
    fn counts(&self) -> ObjectCounts;

    /// Live objects of one process (`gpu_buffers` is always 0 here).
    fn process_counts(&self, process: Handle) -> Result<ObjectCounts>;
}
