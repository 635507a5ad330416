//! One VM's view of the host GPUs: its guest processes, the adapters it was
//! given, and the dispatch of each decoded request to the backend.
//!
//! Everything here treats the guest as hostile: a process handle must be one
//! this VM created, an adapter must be one it was given, and every other
//! handle goes to the backend, which checks that it belongs to the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dxvmm_host_backend::{
    AdapterInfo, AllocationDesc, Backend, BackendError, CommandBuffer, FenceStorage, FenceValue,
    GuestRanges, ObjectCounts, SegmentGroup, VaMapping, VaReservation, WaitMode,
};
use dxvmm_protocol::abi::{
    escape_type, kmtqaitype, syncobject_type, D3dkmtAdapterType, D3dkmtHandle, WinLuid,
};
use dxvmm_protocol::escape::{
    alloc_flags, put_str, qai_type, DxgvAllocationDesc, DxgvHostAdapterInfo, DxgvHostObjects,
    DXGV_HOST_ADAPTER_MAGIC, DXGV_HOST_ADAPTER_VERSION, DXGV_HOST_OBJECTS_MAGIC,
    DXGV_HOST_OBJECTS_VERSION,
};
use dxvmm_protocol::frame::negotiate_version;
use dxvmm_protocol::message::{Reply, Request};
use dxvmm_protocol::vmbus::{
    DxgkvmbCommandAllocInfoReturn, DxgkvmbCommandCreateAllocationReturn,
    DxgkvmbCommandCreateDeviceReturn, DxgkvmbCommandCreatePagingQueueReturn,
    DxgkvmbCommandCreateProcessReturn, DxgkvmbCommandCreateSyncObjectReturn,
    DxgkvmbCommandEvictReturn, DxgkvmbCommandGetInternalAdapterInfoReturn,
    DxgkvmbCommandLock2Return, DxgkvmbCommandMakeResidentReturn,
    DxgkvmbCommandMapGpuVirtualAddressReturn, DxgkvmbCommandOpenAdapterReturn,
    DxgkvmbCommandQueryVideoMemoryInfoReturn, DxgkvmbCommandReserveGpuVirtualAddressReturn,
    DXGK_VMBUS_INTERFACE_VERSION, DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION,
};
use dxvmm_protocol::NtStatus;
use vm_memory::GuestMemoryMmap;
use zerocopy::IntoBytes;

use crate::events::{EventQueue, TrackError};
use crate::observe::FrameObserver;

/// Guest memory as the backend holds it: the device's view, shared.
type Memory = Arc<GuestMemoryMmap>;

/// Size of a guest page (SETEXISTINGSYSMEMPAGES's unit).
const PAGE: u64 = 4096;

/// `D3DKMT_ALLOCATIONRESIDENCYSTATUS_RESIDENTINGPUMEMORY`.
const RESIDENT_IN_GPU_MEMORY: u32 = 1;

/// Most guest processes one VM may have at once: a guest that opens
/// /dev/dxg without end gets STATUS_INSUFFICIENT_RESOURCES, not the host's
/// memory.
pub const MAX_PROCESSES: usize = 4096;

/// Largest private data a QUERYADAPTERINFO may ask for.
const MAX_QUERY_SIZE: u32 = 64 * 1024;

/// The state of one guest process on the host.
#[derive(Default)]
struct Process {
    /// The backend's handle for each adapter the process used, opened on
    /// first use.
    adapters: HashMap<WinLuid, D3dkmtHandle>,
    /// Devices in creation order, with their adapter: the first one on an
    /// adapter holds the process's GPU virtual address space there (WDDM
    /// has one per process and adapter; RESERVE and FREE name the adapter).
    devices: Vec<(WinLuid, D3dkmtHandle)>,
    /// CPU-visible allocations whose guest pages have not all arrived.
    pending_pages: HashMap<D3dkmtHandle, PagePlan>,
    /// Each hardware queue's progress fence.
    hw_queues: HashMap<D3dkmtHandle, D3dkmtHandle>,
}

/// The page frame numbers of an allocation, filled by SETEXISTINGSYSMEMPAGES.
struct PagePlan {
    pfns: Vec<u64>,
    filled: Vec<bool>,
    missing: usize,
}

/// A VM's GPU-PV state.
pub struct Vm {
    backend: Arc<dyn Backend>,
    /// What the guest was given, in its order.
    adapters: Vec<AdapterInfo>,
    /// OPENADAPTER's handles (the driver's, not a process's) to the adapter
    /// they opened.
    opened: BTreeMap<u32, WinLuid>,
    next_adapter_handle: u32,
    processes: HashMap<D3dkmtHandle, Process>,
    /// Where pending CPU waits are kept and their events go (the backend's
    /// event sink); without one, waits are not tracked and a wait whose
    /// fence is destroyed is not ended.
    events: Option<Arc<EventQueue>>,
    /// Hears how far a LOCK2's result has landed, if it asks
    /// ([`FrameObserver::wants_lock_progress`]).
    observer: Option<Arc<dyn FrameObserver>>,
    /// Whether fence values are written to the guest memory their fences
    /// name (`set_fence_storage`).
    fence_storage: bool,
}

/// A request's outcome: a reply payload, or a status for the frame (the
/// request could not be dispatched; the payload is empty).
pub type Outcome = Result<Reply, NtStatus>;

impl Vm {
    /// A VM that sees the adapters of `backend` whose LUIDs are in `luids`
    /// and ends the pending CPU waits it tracks in `events` (which must be
    /// the backend's event sink) when they can no longer be satisfied.
    pub fn with_events(
        backend: Arc<dyn Backend>,
        luids: &[WinLuid],
        events: Arc<EventQueue>,
    ) -> Vm {
        let mut vm = Vm::new(backend, luids);
        vm.events = Some(events);
        vm
    }

    /// A VM that sees the adapters of `backend` whose LUIDs are in `luids`,
    /// with no event queue of its own (whoever set the backend's event
    /// sink hears of satisfied waits).
    pub fn new(backend: Arc<dyn Backend>, luids: &[WinLuid]) -> Vm {
        let all = backend.adapters();
        let adapters = luids
            .iter()
            .filter_map(|l| all.iter().find(|a| a.luid == *l).cloned())
            .collect();
        Vm {
            backend,
            adapters,
            opened: BTreeMap::new(),
            next_adapter_handle: 1,
            processes: HashMap::new(),
            events: None,
            observer: None,
            fence_storage: true,
        }
    }

    /// Whether the backend writes fence values to the guest memory their
    /// fences name (on by default). A trace's replay turns it off: its
    /// memory is the recording's as the trace says, and the trace says
    /// what the guest's fence slots held where the recorder read them; a
    /// value the replay's own backend wrote, at its own time, into a page
    /// the guest later reused would stay where the recording's guest had
    /// written over it with bytes the trace had no reason to carry. The
    /// addresses are still checked, so replies do not change.
    pub fn set_fence_storage(&mut self, on: bool) {
        self.fence_storage = on;
    }

    /// Lets `observer` hear how far each LOCK2's result has landed, when
    /// it asks for it (`None`: stop).
    pub fn set_observer(&mut self, observer: Option<Arc<dyn FrameObserver>>) {
        self.observer = observer;
    }

    /// The adapters the guest sees.
    pub fn adapters(&self) -> &[AdapterInfo] {
        &self.adapters
    }

    fn adapter(&self, luid: WinLuid) -> Result<&AdapterInfo, NtStatus> {
        self.adapters
            .iter()
            .find(|a| a.luid == luid)
            .ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)
    }

    /// The process, if this VM created it.
    fn process(&mut self, handle: D3dkmtHandle) -> Result<&mut Process, NtStatus> {
        self.processes
            .get_mut(&handle)
            .ok_or(NtStatus::INVALID_HANDLE)
    }

    /// The backend's handle of `luid` for `process`, opening it on first use.
    fn process_adapter(
        &mut self,
        process: D3dkmtHandle,
        luid: WinLuid,
    ) -> Result<D3dkmtHandle, NtStatus> {
        self.adapter(luid)?;
        let backend = self.backend.clone();
        let p = self.process(process)?;
        if let Some(h) = p.adapters.get(&luid) {
            return Ok(*h);
        }
        let h = backend
            .open_adapter(process, luid)
            .map_err(|e| status(&e))?;
        p.adapters.insert(luid, h);
        Ok(h)
    }

    /// Live host objects of this VM's processes.
    pub fn counts(&self) -> ObjectCounts {
        let mut total = ObjectCounts {
            processes: self.processes.len() as u64,
            ..Default::default()
        };
        for h in self.processes.keys() {
            if let Ok(c) = self.backend.process_counts(*h) {
                total.adapters += c.adapters;
                total.devices += c.devices;
                total.paging_queues += c.paging_queues;
                total.allocations += c.allocations;
                total.contexts += c.contexts;
                total.hw_queues += c.hw_queues;
                total.sync_objects += c.sync_objects;
                total.pipelines += c.pipelines;
                total.va_ranges += c.va_ranges;
                total.allocated_bytes += c.allocated_bytes;
            }
        }
        total
    }

    /// Frees every host object of the VM (device reset, or the VM ends).
    pub fn reset(&mut self) {
        for (h, _) in self.processes.drain() {
            if let Err(e) = self.backend.destroy_process(h) {
                tracing::warn!("destroying guest process {h:?}: {e}");
            }
        }
        self.opened.clear();
        if let Some(events) = &self.events {
            events.forget_waits();
        }
    }

    /// Ends the pending CPU waits of `process` that name a fence the
    /// backend no longer has (§2.6.8: a wait that can no longer be
    /// satisfied gets its event). Called after every destroy that can take
    /// fences with it: a sync object, a device, a context, a hardware or a
    /// paging queue.
    fn end_abandoned_waits(&self, process: D3dkmtHandle) {
        if let Some(events) = &self.events {
            let ended =
                events.end_waits(process, |f| self.backend.fence_value(process, f).is_err());
            if ended > 0 {
                tracing::debug!(?process, ended, "CPU waits on destroyed fences ended");
            }
        }
    }

    /// A DESTROY* request: checks the process is this VM's before the
    /// backend sees any handle, then forgets `process`'s table entries
    /// (`forget`) and ends the CPU waits that named a fence the destroy
    /// took with it.
    fn destroy(
        &mut self,
        process: D3dkmtHandle,
        run: impl FnOnce(&dyn Backend) -> Result<(), BackendError>,
        forget: impl FnOnce(&mut Process),
    ) -> Outcome {
        self.process(process)?;
        let r = run(&*self.backend);
        if r.is_ok() {
            forget(self.process(process)?);
            self.end_abandoned_waits(process);
        }
        Ok(Reply::Status(result(r)))
    }

    /// The device that holds `process`'s GPU VA space on `vgpu`.
    fn va_device(
        &mut self,
        process: D3dkmtHandle,
        vgpu: WinLuid,
    ) -> Result<D3dkmtHandle, NtStatus> {
        self.process(process)?
            .devices
            .iter()
            .find(|(l, _)| *l == vgpu)
            .map(|(_, d)| *d)
            .ok_or(NtStatus::INVALID_HANDLE)
    }

    /// The device a MAPGPUVIRTUALADDRESS names (the allocation's, which
    /// the guest driver fills in), when it is one of the process's on
    /// `vgpu`; else, as for the commands that name only the adapter, its
    /// first there. The GPU VA space is the process's on the adapter, shared
    /// by its devices (host-backend), so either reaches the same space; the
    /// device named decides which allocations the mapping may take.
    fn map_device(
        &mut self,
        process: D3dkmtHandle,
        vgpu: WinLuid,
        named: D3dkmtHandle,
    ) -> Result<D3dkmtHandle, NtStatus> {
        let p = self.process(process)?;
        if p.devices.iter().any(|&(l, d)| l == vgpu && d == named) {
            return Ok(named);
        }
        self.va_device(process, vgpu)
    }

    /// Carries out one request for the adapter `vgpu` (zero for global
    /// commands) without guest memory: for requests that need none.
    pub fn dispatch(&mut self, vgpu: WinLuid, request: Request) -> Outcome {
        self.dispatch_with(vgpu, request, None)
    }

    /// Carries out one request for the adapter `vgpu`; `mem` is the
    /// guest's memory, for requests that name guest pages.
    pub fn dispatch_with(
        &mut self,
        vgpu: WinLuid,
        request: Request,
        mem: Option<&GuestMemoryMmap>,
    ) -> Outcome {
        let process = request.process();
        let request_is_async = request.is_async();
        match request {
            Request::CreateProcess(_) => {
                if self.processes.len() >= MAX_PROCESSES {
                    return Err(NtStatus::INSUFFICIENT_RESOURCES);
                }
                // A failure is a null handle, as on Hyper-V.
                let hprocess = match self.backend.create_process() {
                    Ok(h) => {
                        self.processes.insert(h, Process::default());
                        h
                    }
                    Err(e) => {
                        tracing::warn!("CREATEPROCESS: {e}");
                        D3dkmtHandle::NULL
                    }
                };
                Ok(Reply::CreateProcess(DxgkvmbCommandCreateProcessReturn {
                    hprocess,
                }))
            }
            Request::DestroyProcess(_) => {
                self.process(process)?;
                self.processes.remove(&process);
                let r = self.backend.destroy_process(process);
                if let Some(events) = &self.events {
                    events.end_process_waits(process);
                }
                Ok(Reply::Status(result(r)))
            }
            Request::SetIoSpaceRegion(cmd) => {
                // dxvmm maps no I/O space aperture; an empty one is accepted
                // for compatibility.
                Ok(Reply::Status(if cmd.length == 0 {
                    NtStatus::SUCCESS
                } else {
                    NtStatus::NOT_SUPPORTED
                }))
            }
            Request::OpenAdapter(cmd) => {
                if cmd.guest_adapter_luid != vgpu {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                self.adapter(vgpu)?;
                let mut ret = DxgkvmbCommandOpenAdapterReturn {
                    host_adapter_handle: D3dkmtHandle::NULL,
                    status: NtStatus::SUCCESS,
                    vmbus_interface_version: DXGK_VMBUS_INTERFACE_VERSION,
                    vmbus_last_compatible_interface_version:
                        DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION,
                };
                match negotiate_version(
                    cmd.vmbus_interface_version,
                    cmd.vmbus_last_compatible_interface_version,
                    DXGK_VMBUS_INTERFACE_VERSION,
                    DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION,
                ) {
                    Some(v) => {
                        if self.opened.len() >= 64 {
                            return Err(NtStatus::INSUFFICIENT_RESOURCES);
                        }
                        let h = self.next_adapter_handle;
                        self.next_adapter_handle = self.next_adapter_handle.wrapping_add(1).max(1);
                        self.opened.insert(h, vgpu);
                        ret.host_adapter_handle = D3dkmtHandle(h);
                        ret.vmbus_interface_version = v;
                    }
                    None => ret.status = NtStatus::NOT_SUPPORTED,
                }
                Ok(Reply::OpenAdapter(ret))
            }
            Request::CloseAdapter(cmd) => match self.opened.get(&cmd.host_handle.0) {
                Some(luid) if *luid == vgpu => {
                    self.opened.remove(&cmd.host_handle.0);
                    Ok(Reply::Empty)
                }
                _ => Err(NtStatus::INVALID_HANDLE),
            },
            Request::GetInternalAdapterInfo(_) => {
                let a = self.adapter(vgpu)?;
                let mut ret = DxgkvmbCommandGetInternalAdapterInfoReturn {
                    host_adapter_luid: a.luid,
                    host_vgpu_luid: a.luid,
                    ..Default::default()
                };
                put_utf16(&mut ret.device_description, &a.name);
                let id = format!("DXVMM\\VEN_{:04X}&DEV_{:04X}", a.vendor_id, a.device_id);
                put_utf16(&mut ret.device_instance_id, &id);
                Ok(Reply::GetInternalAdapterInfo(Box::new(ret)))
            }
            Request::QueryAdapterInfo { cmd, .. } => {
                // The driver asks for itself with process 0 (at bind);
                // otherwise the process must be this VM's.
                if process != D3dkmtHandle::NULL {
                    self.process(process)?;
                }
                let a = self.adapter(vgpu)?;
                if cmd.private_data_size > MAX_QUERY_SIZE {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                let answer = match cmd.query_type {
                    kmtqaitype::UMDRIVERPRIVATE => a.umd_info().as_bytes().to_vec(),
                    kmtqaitype::ADAPTERTYPE => {
                        let mut t = D3dkmtAdapterType::RENDER_SUPPORTED
                            .with(D3dkmtAdapterType::PARAVIRTUALIZED)
                            .with(D3dkmtAdapterType::COMPUTE_ONLY);
                        if a.software {
                            t = t.with(D3dkmtAdapterType::SOFTWARE_DEVICE);
                        }
                        t.as_bytes().to_vec()
                    }
                    qai_type::HOST_ADAPTER => host_adapter_info(a).as_bytes().to_vec(),
                    qai_type::HOST_OBJECTS => {
                        let c = self.counts();
                        let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
                        DxgvHostObjects {
                            magic: DXGV_HOST_OBJECTS_MAGIC,
                            version: DXGV_HOST_OBJECTS_VERSION,
                            processes: n(c.processes),
                            adapters: n(c.adapters),
                            devices: n(c.devices),
                            contexts: n(c.contexts),
                            allocations: n(c.allocations),
                            sync_objects: n(c.sync_objects),
                            paging_queues: n(c.paging_queues),
                            hw_queues: n(c.hw_queues),
                            pipelines: n(c.pipelines),
                            _pad0: 0,
                        }
                        .as_bytes()
                        .to_vec()
                    }
                    _ => {
                        return Ok(Reply::QueryAdapterInfo {
                            status: NtStatus::NOT_SUPPORTED,
                            private_data: vec![0; cmd.private_data_size as usize],
                        })
                    }
                };
                let size = cmd.private_data_size as usize;
                if size < answer.len() {
                    return Ok(Reply::QueryAdapterInfo {
                        status: NtStatus::BUFFER_TOO_SMALL,
                        private_data: vec![0; size],
                    });
                }
                let mut private_data = answer;
                private_data.resize(size, 0);
                Ok(Reply::QueryAdapterInfo {
                    status: NtStatus::SUCCESS,
                    private_data,
                })
            }
            Request::QueryVideoMemoryInfo(cmd) => {
                match self.opened.get(&cmd.adapter.0) {
                    Some(luid) if *luid == vgpu => {}
                    _ => return Err(NtStatus::INVALID_HANDLE),
                }
                let group =
                    SegmentGroup::from_raw(cmd.memory_segment_group).map_err(|e| status(&e))?;
                if cmd.physical_adapter_index != 0 {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                let adapter = self.process_adapter(process, vgpu)?;
                let info = self
                    .backend
                    .query_video_memory(process, adapter, group)
                    .map_err(|e| status(&e))?;
                Ok(Reply::QueryVideoMemoryInfo(
                    DxgkvmbCommandQueryVideoMemoryInfoReturn {
                        budget: info.budget,
                        current_usage: info.current_usage,
                        current_reservation: info.current_reservation,
                        available_for_reservation: info.available_for_reservation,
                    },
                ))
            }
            Request::CreateDevice(_) => {
                let adapter = self.process_adapter(process, vgpu)?;
                let device = match self.backend.create_device(process, adapter) {
                    Ok(d) => {
                        self.process(process)?.devices.push((vgpu, d));
                        d
                    }
                    Err(e) => {
                        tracing::debug!("CREATEDEVICE: {e}");
                        D3dkmtHandle::NULL
                    }
                };
                Ok(Reply::CreateDevice(DxgkvmbCommandCreateDeviceReturn {
                    device,
                }))
            }
            Request::DestroyDevice(cmd) => self.destroy(
                process,
                |b| b.destroy_device(process, cmd.device),
                |p| p.devices.retain(|(_, d)| *d != cmd.device),
            ),
            Request::FlushDevice(_) => {
                self.process(process)?;
                Ok(Reply::Status(result(self.backend.flush())))
            }
            Request::CreateAllocation {
                cmd,
                alloc_info,
                private_runtime_data,
                priv_drv_data,
                alloc_priv_drv_data,
            } => {
                self.process(process)?;
                // No resources and no runtime data in dxvmm's profile (§2.6).
                if cmd.resource != D3dkmtHandle::NULL
                    || !private_runtime_data.is_empty()
                    || !priv_drv_data.is_empty()
                    || alloc_info.is_empty()
                {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                let mut descs = Vec::with_capacity(alloc_info.len());
                for data in &alloc_priv_drv_data {
                    descs.push(DxgvAllocationDesc::decode(data).map_err(|e| e.status())?);
                }
                let mut made: Vec<(D3dkmtHandle, u64, bool)> = Vec::with_capacity(descs.len());
                for d in &descs {
                    let desc = AllocationDesc {
                        size: d.size,
                        alignment: u64::from(d.alignment),
                        cpu_visible: d.flags & alloc_flags::CPU_VISIBLE != 0,
                    };
                    match self.backend.create_allocation(process, cmd.device, &desc) {
                        Ok((h, info)) => made.push((h, info.size, desc.cpu_visible)),
                        Err(e) => {
                            // All or nothing: undo the ones made so far.
                            for (h, _, _) in made {
                                let _ = self.backend.destroy_allocation(process, h);
                            }
                            return Err(status(&e));
                        }
                    }
                }
                let p = self.process(process)?;
                let mut allocation_info = Vec::with_capacity(made.len());
                for (h, size, cpu_visible) in &made {
                    let size = size.div_ceil(PAGE) * PAGE;
                    if *cpu_visible {
                        let pages = (size / PAGE) as usize;
                        p.pending_pages.insert(
                            *h,
                            PagePlan {
                                pfns: vec![0; pages],
                                filled: vec![false; pages],
                                missing: pages,
                            },
                        );
                    }
                    allocation_info.push(DxgkvmbCommandAllocInfoReturn {
                        allocation: *h,
                        priv_drv_data_size: DxgvAllocationDesc::SIZE as u32,
                        allocation_size: size,
                        ..Default::default()
                    });
                }
                Ok(Reply::CreateAllocation {
                    ret: DxgkvmbCommandCreateAllocationReturn {
                        flags: cmd.flags,
                        ..Default::default()
                    },
                    allocation_info,
                    alloc_priv_drv_data,
                })
            }
            Request::SetExistingSysmemPages { cmd, pfns } => {
                let mem = mem.ok_or(NtStatus::UNSUCCESSFUL)?;
                let backend = self.backend.clone();
                let p = self.process(process)?;
                let plan = p
                    .pending_pages
                    .get_mut(&cmd.allocation)
                    .ok_or(NtStatus::INVALID_HANDLE)?;
                let start = cmd.alloc_offset_in_pages as usize;
                let end = start
                    .checked_add(pfns.len())
                    .filter(|e| *e <= plan.pfns.len())
                    .ok_or(NtStatus::INVALID_PARAMETER)?;
                if pfns.len() != cmd.num_pages as usize {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                // Every page must be guest memory: check now, not at first use.
                for &pfn in &pfns {
                    let ok = pfn
                        .checked_mul(PAGE)
                        .is_some_and(|gpa| guest_range_ok(mem, gpa, PAGE));
                    if !ok {
                        return Err(NtStatus::INVALID_PARAMETER);
                    }
                }
                for (i, &pfn) in (start..end).zip(&pfns) {
                    plan.pfns[i] = pfn;
                    if !plan.filled[i] {
                        plan.filled[i] = true;
                        plan.missing -= 1;
                    }
                }
                if plan.missing > 0 {
                    return Ok(Reply::Status(NtStatus::SUCCESS));
                }
                let plan = p
                    .pending_pages
                    .remove(&cmd.allocation)
                    .expect("present above");
                let memory: Memory = Arc::new(mem.clone());
                let ranges = GuestRanges::from_pfns(memory, &plan.pfns).map_err(|e| status(&e))?;
                Ok(Reply::Status(result(backend.set_allocation_memory(
                    process,
                    cmd.allocation,
                    Arc::new(ranges),
                ))))
            }
            Request::DestroyAllocation { cmd, allocations } => {
                self.process(process)?;
                if cmd.resource != D3dkmtHandle::NULL {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                let mut st = NtStatus::SUCCESS;
                for h in allocations {
                    match self.backend.destroy_allocation(process, h) {
                        Ok(()) => {
                            self.process(process)?.pending_pages.remove(&h);
                        }
                        Err(e) if st.is_success() => st = status(&e),
                        Err(_) => {}
                    }
                }
                Ok(Reply::Status(st))
            }
            Request::MakeResident { .. } => {
                // Everything is resident: the backend has no eviction.
                self.process(process)?;
                Ok(Reply::MakeResident(DxgkvmbCommandMakeResidentReturn {
                    status: NtStatus::SUCCESS,
                    ..Default::default()
                }))
            }
            Request::Evict { .. } => {
                self.process(process)?;
                Ok(Reply::Evict(DxgkvmbCommandEvictReturn::default()))
            }
            Request::QueryAllocationResidency { allocations, .. } => {
                self.process(process)?;
                Ok(Reply::QueryAllocationResidency {
                    status: NtStatus::SUCCESS,
                    residency_status: vec![RESIDENT_IN_GPU_MEMORY; allocations.len()],
                })
            }
            Request::SetAllocationPriority { .. } => {
                self.process(process)?;
                Ok(Reply::Status(NtStatus::SUCCESS))
            }
            Request::GetAllocationPriority { allocations, .. } => {
                self.process(process)?;
                // D3DDDI_ALLOCATIONPRIORITY_NORMAL.
                Ok(Reply::GetAllocationPriority {
                    status: NtStatus::SUCCESS,
                    priorities: vec![0x7800_0000; allocations.len().max(1)],
                })
            }
            Request::Lock2(cmd) => {
                self.process(process)?;
                if self
                    .process(process)?
                    .pending_pages
                    .contains_key(&cmd.args.allocation)
                {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                let allocation = cmd.args.allocation;
                let locked = match self.observer.as_ref().filter(|o| o.wants_lock_progress()) {
                    Some(o) => self
                        .backend
                        .lock_watched(process, allocation, &mut |bytes| o.lock_progress(bytes)),
                    None => self.backend.lock(process, allocation),
                };
                let st = result(locked);
                Ok(Reply::Lock2(DxgkvmbCommandLock2Return {
                    status: st,
                    ..Default::default()
                }))
            }
            Request::Unlock2(cmd) => {
                self.process(process)?;
                Ok(Reply::Status(result(
                    self.backend.unlock(process, cmd.args.allocation),
                )))
            }
            Request::ReserveGpuVirtualAddress(cmd) => {
                let device = self.va_device(process, vgpu)?;
                let a = cmd.args;
                let req = VaReservation {
                    base: a.base_address,
                    minimum: a.minimum_address,
                    maximum: a.maximum_address,
                    size: a.size,
                };
                // A failure is a zero address, as on Hyper-V.
                let virtual_address = match self.backend.reserve_gpu_va(process, device, &req) {
                    Ok(va) => va,
                    Err(e) => {
                        tracing::debug!("RESERVEGPUVIRTUALADDRESS: {e}");
                        0
                    }
                };
                Ok(Reply::ReserveGpuVirtualAddress(
                    DxgkvmbCommandReserveGpuVirtualAddressReturn {
                        virtual_address,
                        paging_fence_value: 0,
                    },
                ))
            }
            Request::MapGpuVirtualAddress(cmd) => {
                let device = self.map_device(process, vgpu, cmd.device)?;
                let a = cmd.args;
                let size = a.size_in_pages.checked_mul(PAGE);
                let offset = a.offset_in_pages.checked_mul(PAGE);
                let (Some(size), Some(allocation_offset)) = (size, offset) else {
                    return Err(NtStatus::INTEGER_OVERFLOW);
                };
                let map = VaMapping {
                    base: a.base_address,
                    minimum: a.minimum_address,
                    maximum: a.maximum_address,
                    size,
                    allocation: a.allocation,
                    allocation_offset,
                };
                let mut ret = DxgkvmbCommandMapGpuVirtualAddressReturn::default();
                match self.backend.map_gpu_va(process, device, &map) {
                    Ok(va) => ret.virtual_address = va,
                    Err(e) => ret.status = status(&e),
                }
                Ok(Reply::MapGpuVirtualAddress(ret))
            }
            Request::FreeGpuVirtualAddress(cmd) => {
                let device = self.va_device(process, vgpu)?;
                Ok(Reply::Status(result(self.backend.free_gpu_va(
                    process,
                    device,
                    cmd.args.base_address,
                    cmd.args.size,
                ))))
            }
            Request::CreatePagingQueue(cmd) => {
                self.process(process)?;
                let q = self
                    .backend
                    .create_paging_queue(process, cmd.args.device)
                    .map_err(|e| status(&e))?;
                Ok(Reply::CreatePagingQueue(
                    DxgkvmbCommandCreatePagingQueueReturn {
                        paging_queue: q.handle,
                        sync_object: q.sync_object,
                        ..Default::default()
                    },
                ))
            }
            Request::DestroyPagingQueue(cmd) => self.destroy(
                process,
                |b| b.destroy_paging_queue(process, cmd.paging_queue),
                |_| {},
            ),
            Request::CreateContextVirtual {
                mut cmd,
                priv_drv_data,
            } => {
                self.process(process)?;
                cmd.context = self
                    .backend
                    .create_context(process, cmd.device)
                    .map_err(|e| status(&e))?;
                Ok(Reply::CreateContextVirtual { cmd, priv_drv_data })
            }
            Request::DestroyContext(cmd) => {
                self.destroy(process, |b| b.destroy_context(process, cmd.context), |_| {})
            }
            Request::CreateHwQueue {
                mut cmd,
                priv_drv_data,
            } => {
                self.process(process)?;
                let storage = fence_storage(mem, cmd.hwqueue_progress_fence_cpuva)?
                    .filter(|_| self.fence_storage);
                match self.backend.create_hw_queue(process, cmd.context, storage) {
                    Ok(q) => {
                        self.process(process)?
                            .hw_queues
                            .insert(q.handle, q.progress_fence);
                        cmd.status = NtStatus::SUCCESS;
                        cmd.hwqueue = q.handle;
                        cmd.hwqueue_progress_fence = q.progress_fence;
                        cmd.hwqueue_progress_fence_gpuva = 0;
                    }
                    Err(e) => cmd.status = status(&e),
                }
                Ok(Reply::CreateHwQueue { cmd, priv_drv_data })
            }
            Request::DestroyHwQueue(cmd) => self.destroy(
                process,
                |b| b.destroy_hw_queue(process, cmd.hwqueue),
                |p| {
                    p.hw_queues.remove(&cmd.hwqueue);
                },
            ),
            Request::CreateSyncObject(cmd) => {
                self.process(process)?;
                let info = cmd.args.info;
                if info.r#type != syncobject_type::MONITORED_FENCE {
                    return Err(NtStatus::NOT_SUPPORTED);
                }
                let mf = info.monitored_fence();
                let storage = fence_storage(mem, mf.fence_cpu_virtual_address)?
                    .filter(|_| self.fence_storage);
                let fence = self
                    .backend
                    .create_sync_object(process, cmd.args.device, mf.initial_fence_value, storage)
                    .map_err(|e| status(&e))?;
                Ok(Reply::CreateSyncObject(
                    DxgkvmbCommandCreateSyncObjectReturn {
                        sync_object: fence,
                        fence_storage_address: mf.fence_cpu_virtual_address,
                        ..Default::default()
                    },
                ))
            }
            Request::DestroySyncObject(cmd) => self.destroy(
                process,
                |b| b.destroy_sync_object(process, cmd.sync_object),
                |_| {},
            ),
            Request::SignalSyncObject {
                cmd,
                objects,
                contexts,
                fence_values,
            } => {
                self.process(process)?;
                let fences = fence_list(&objects, &fence_values, cmd.fence_value);
                let r = if contexts.is_empty() {
                    self.backend.signal_from_cpu(process, &fences)
                } else {
                    contexts
                        .iter()
                        .try_for_each(|c| self.backend.signal_from_queue(process, *c, &fences))
                };
                status_reply(request_is_async, r)
            }
            Request::WaitForSyncObjectFromCpu {
                cmd,
                objects,
                fence_values,
            } => {
                self.process(process)?;
                let fences = fence_list(&objects, &fence_values, 0);
                let mode = if cmd.flags.contains(
                    dxvmm_protocol::abi::D3dddiWaitForSynchronizationObjectFromCpuFlags::WAIT_ANY,
                ) {
                    WaitMode::Any
                } else {
                    WaitMode::All
                };
                // Satisfied now?
                let reached = |f: &FenceValue| {
                    self.backend
                        .fence_value(process, f.fence)
                        .map(|v| v >= f.value)
                };
                let mut now = Vec::with_capacity(fences.len());
                for f in &fences {
                    now.push(reached(f).map_err(|e| status(&e))?);
                }
                let done = match mode {
                    WaitMode::All => now.iter().all(|r| *r),
                    WaitMode::Any => now.iter().any(|r| *r),
                };
                if done {
                    return Ok(Reply::Status(NtStatus::SUCCESS));
                }
                let cookie = cmd.guest_event_pointer;
                if cookie == 0 {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                // Tracked before the backend hears of it: it may report the
                // wait satisfied before it returns.
                if let Some(events) = &self.events {
                    let named = fences.iter().map(|f| f.fence).collect();
                    events
                        .track_wait(process, cookie, named)
                        .map_err(|e| match e {
                            TrackError::Duplicate => NtStatus::INVALID_PARAMETER,
                            TrackError::TooMany => NtStatus::INSUFFICIENT_RESOURCES,
                        })?;
                }
                if let Err(e) = self
                    .backend
                    .notify_when_reached(process, &fences, mode, cookie)
                {
                    if let Some(events) = &self.events {
                        events.untrack_wait(process, cookie);
                    }
                    return Err(status(&e));
                }
                Ok(Reply::Status(NtStatus::PENDING))
            }
            Request::WaitForSyncObjectFromGpu {
                cmd,
                fence_values,
                objects,
            } => {
                self.process(process)?;
                let fences = fence_list(&objects, &fence_values, 0);
                Ok(Reply::Status(result(self.backend.wait_from_queue(
                    process,
                    cmd.context,
                    &fences,
                ))))
            }
            Request::SubmitCommand { cmd, .. } => {
                self.process(process)?;
                let a = cmd.args;
                if a.broadcast_context_count != 1 {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                let context = a.broadcast_context[0];
                let r = self.backend.submit(
                    process,
                    context,
                    CommandBuffer::GpuVa {
                        va: a.command_buffer,
                        length: u64::from(a.command_length),
                    },
                );
                status_reply(request_is_async, r)
            }
            Request::SubmitCommandToHwQueue { cmd, .. } => {
                let a = cmd.args;
                let progress = *self
                    .process(process)?
                    .hw_queues
                    .get(&a.hwqueue)
                    .ok_or(NtStatus::INVALID_HANDLE)?;
                let r = self
                    .backend
                    .submit(
                        process,
                        a.hwqueue,
                        CommandBuffer::GpuVa {
                            va: a.command_buffer,
                            length: u64::from(a.command_length),
                        },
                    )
                    .and_then(|()| {
                        // §2.6.5: the queue's progress fence reaches the
                        // submission's value when its work completes.
                        self.backend.signal_from_queue(
                            process,
                            a.hwqueue,
                            &[FenceValue {
                                fence: progress,
                                value: a.hwqueue_progress_fence_id,
                            }],
                        )
                    });
                status_reply(request_is_async, r)
            }
            Request::Escape { cmd, priv_drv_data } => {
                self.process(process)?;
                if cmd.r#type != escape_type::DRIVERPRIVATE {
                    return Err(NtStatus::NOT_SUPPORTED);
                }
                let out = self
                    .backend
                    .escape(process, cmd.device, &priv_drv_data)
                    .map_err(|e| status(&e))?;
                Ok(Reply::Escape { priv_drv_data: out })
            }
            Request::GetDeviceState(_) => Err(NtStatus::NOT_SUPPORTED),
            other => {
                tracing::debug!("{} is not supported", other.name());
                Err(NtStatus::NOT_SUPPORTED)
            }
        }
    }
}

/// Fence values of `objects`: one each from `values`, or `common` for all
/// when `values` is empty.
fn fence_list(objects: &[D3dkmtHandle], values: &[u64], common: u64) -> Vec<FenceValue> {
    objects
        .iter()
        .enumerate()
        .map(|(i, &fence)| FenceValue {
            fence,
            value: values.get(i).copied().unwrap_or(common),
        })
        .collect()
}

/// The guest slot a fence's values go to (§2.6.4): 8 bytes of guest memory
/// at `gpa`, 8-byte aligned; 0 means none.
fn fence_storage(
    mem: Option<&GuestMemoryMmap>,
    gpa: u64,
) -> Result<Option<FenceStorage>, NtStatus> {
    if gpa == 0 {
        return Ok(None);
    }
    let mem = mem.ok_or(NtStatus::UNSUCCESSFUL)?;
    if !gpa.is_multiple_of(8) || !guest_range_ok(mem, gpa, 8) {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let memory: Memory = Arc::new(mem.clone());
    let ranges = GuestRanges::new(memory, [(gpa, 8)]).map_err(|e| status(&e))?;
    Ok(Some(FenceStorage {
        memory: Arc::new(ranges),
        offset: 0,
    }))
}

/// Whether `[gpa, gpa + len)` is guest memory the device may read and write.
fn guest_range_ok(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> bool {
    use vm_memory::{GuestAddress, GuestMemory, Permissions};
    usize::try_from(len)
        .is_ok_and(|n| mem.check_range(GuestAddress(gpa), n, Permissions::ReadWrite))
}

/// The NTSTATUS of a backend error.
fn status(e: &BackendError) -> NtStatus {
    tracing::debug!("backend: {e}");
    e.status()
}

/// The answer to a command whose reply is a bare NTSTATUS. An
/// asynchronous one (`async_msg`) has an empty reply: its result is the
/// frame's status, which the guest driver reads when it reaps the chain
/// and reports at the process's next call (docs/protocol.md §2.2).
fn status_reply(is_async: bool, r: Result<(), BackendError>) -> Outcome {
    match (is_async, r) {
        (false, r) => Ok(Reply::Status(result(r))),
        (true, Ok(())) => Ok(Reply::Empty),
        (true, Err(e)) => Err(status(&e)),
    }
}

fn result(r: Result<(), BackendError>) -> NtStatus {
    match r {
        Ok(()) => NtStatus::SUCCESS,
        Err(e) => status(&e),
    }
}

/// UTF-16 into a NUL-terminated field, cut to fit.
fn put_utf16(field: &mut [u16], s: &str) {
    field.fill(0);
    let room = field.len().saturating_sub(1);
    for (slot, unit) in field[..room].iter_mut().zip(s.encode_utf16()) {
        *slot = unit;
    }
}

/// QUERYADAPTERINFO(HOST_ADAPTER): the adapter as `dxvmm gpus` shows it.
pub fn host_adapter_info(a: &AdapterInfo) -> DxgvHostAdapterInfo {
    let mut info = DxgvHostAdapterInfo {
        magic: DXGV_HOST_ADAPTER_MAGIC,
        version: DXGV_HOST_ADAPTER_VERSION,
        luid: a.luid,
        vendor_id: a.vendor_id,
        device_id: a.device_id,
        device_type: a.kind.umd_device_type(),
        software: u32::from(a.software),
        memory_bytes: a.memory_budget,
        ..Default::default()
    };
    put_str(&mut info.backend, &a.backend);
    put_str(&mut info.driver, &a.driver);
    put_str(&mut info.driver_info, &a.driver_info);
    put_str(&mut info.name, &a.name);
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use dxvmm_host_backend::SoftBackend;
    use dxvmm_protocol::vmbus::{
        DxgkvmbCommandCloseAdapter, DxgkvmbCommandCreateDevice, DxgkvmbCommandDestroyDevice,
        DxgkvmbCommandDestroyProcess, DxgkvmbCommandOpenAdapter, DxgkvmbCommandQueryAdapterInfo,
        DxgkvmbCommandQueryVideoMemoryInfo,
    };

    fn vm() -> (Vm, WinLuid) {
        let backend: Arc<dyn Backend> = Arc::new(SoftBackend::new());
        let luid = backend.adapters()[0].luid;
        (Vm::new(backend, &[luid]), luid)
    }

    fn with_process<T: zerocopy::FromZeros + HasHeader>(process: D3dkmtHandle) -> T {
        let mut cmd = T::new_zeroed();
        cmd.set_process(process);
        cmd
    }

    trait HasHeader {
        fn set_process(&mut self, p: D3dkmtHandle);
    }
    macro_rules! has_header {
        ($($t:ty),*) => {$(
            impl HasHeader for $t {
                fn set_process(&mut self, p: D3dkmtHandle) {
                    self.hdr.process = p;
                }
            }
        )*};
    }
    has_header!(
        dxvmm_protocol::vmbus::DxgkvmbCommandCreateHwQueue,
        dxvmm_protocol::vmbus::DxgkvmbCommandSubmitCommandToHwQueue,
        dxvmm_protocol::vmbus::DxgkvmbCommandCreateAllocation,
        dxvmm_protocol::vmbus::DxgkvmbCommandCreateContextVirtual,
        dxvmm_protocol::vmbus::DxgkvmbCommandCreateSyncObject,
        dxvmm_protocol::vmbus::DxgkvmbCommandLock2,
        dxvmm_protocol::vmbus::DxgkvmbCommandMapGpuVirtualAddress,
        dxvmm_protocol::vmbus::DxgkvmbCommandReserveGpuVirtualAddress,
        dxvmm_protocol::vmbus::DxgkvmbCommandSetExistingSysmemPages,
        dxvmm_protocol::vmbus::DxgkvmbCommandSubmitCommand,
        dxvmm_protocol::vmbus::DxgkvmbCommandWaitForSyncObjectFromCpu,
        dxvmm_protocol::vmbus::DxgkvmbCommandSignalSyncObject,
        dxvmm_protocol::vmbus::DxgkvmbCommandDestroySyncObject,
        dxvmm_protocol::vmbus::DxgkvmbCommandDestroyHwQueue,
        DxgkvmbCommandCreateDevice,
        DxgkvmbCommandDestroyDevice,
        DxgkvmbCommandDestroyProcess,
        DxgkvmbCommandQueryVideoMemoryInfo,
        DxgkvmbCommandQueryAdapterInfo
    );

    fn create_process(vm: &mut Vm) -> D3dkmtHandle {
        let cmd = Box::new(zerocopy::FromZeros::new_zeroed());
        match vm.dispatch(WinLuid::default(), Request::CreateProcess(cmd)) {
            Ok(Reply::CreateProcess(r)) => r.hprocess,
            o => panic!("{o:?}"),
        }
    }

    fn open_adapter(vm: &mut Vm, luid: WinLuid) -> D3dkmtHandle {
        let cmd = DxgkvmbCommandOpenAdapter {
            vmbus_interface_version: DXGK_VMBUS_INTERFACE_VERSION,
            vmbus_last_compatible_interface_version: DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION,
            guest_adapter_luid: luid,
            ..zerocopy::FromZeros::new_zeroed()
        };
        match vm.dispatch(luid, Request::OpenAdapter(cmd)) {
            Ok(Reply::OpenAdapter(r)) => {
                assert_eq!(r.status, NtStatus::SUCCESS);
                r.host_adapter_handle
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn session_devices_and_teardown() {
        let (mut vm, luid) = vm();
        let adapter = open_adapter(&mut vm, luid);
        let p = create_process(&mut vm);
        assert_ne!(p, D3dkmtHandle::NULL);
        let dev = match vm.dispatch(luid, Request::CreateDevice(with_process(p))) {
            Ok(Reply::CreateDevice(r)) => r.device,
            o => panic!("{o:?}"),
        };
        assert_ne!(dev, D3dkmtHandle::NULL);
        assert_eq!(vm.counts().devices, 1);

        let mut q: DxgkvmbCommandQueryVideoMemoryInfo = with_process(p);
        q.adapter = adapter;
        match vm.dispatch(luid, Request::QueryVideoMemoryInfo(q)) {
            Ok(Reply::QueryVideoMemoryInfo(r)) => assert!(r.budget > 0),
            o => panic!("{o:?}"),
        }
        // A wrong adapter handle, a wrong segment group.
        q.adapter = D3dkmtHandle(adapter.0 + 100);
        assert_eq!(
            vm.dispatch(luid, Request::QueryVideoMemoryInfo(q))
                .unwrap_err(),
            NtStatus::INVALID_HANDLE
        );
        q.adapter = adapter;
        q.memory_segment_group = 9;
        assert!(vm.dispatch(luid, Request::QueryVideoMemoryInfo(q)).is_err());

        // Another process cannot destroy p's device.
        let other = create_process(&mut vm);
        let mut d: DxgkvmbCommandDestroyDevice = with_process(other);
        d.device = dev;
        assert!(matches!(
            vm.dispatch(luid, Request::DestroyDevice(d)),
            Ok(Reply::Status(s)) if !s.is_success()
        ));
        assert_eq!(vm.counts().devices, 1);

        // The process goes: its device goes with it.
        let cmd = with_process::<DxgkvmbCommandDestroyProcess>(p);
        assert_eq!(
            vm.dispatch(WinLuid::default(), Request::DestroyProcess(cmd))
                .unwrap(),
            Reply::Status(NtStatus::SUCCESS)
        );
        assert_eq!(vm.counts().devices, 0);
        // Twice is an error, not a crash.
        assert_eq!(
            vm.dispatch(WinLuid::default(), Request::DestroyProcess(cmd))
                .unwrap_err(),
            NtStatus::INVALID_HANDLE
        );
        vm.reset();
        assert!(vm.counts().is_empty());
    }

    #[test]
    fn unknown_processes_and_adapters_are_refused() {
        let (mut vm, luid) = vm();
        let bogus = D3dkmtHandle(0x1234);
        assert_eq!(
            vm.dispatch(luid, Request::CreateDevice(with_process(bogus)))
                .unwrap_err(),
            NtStatus::INVALID_HANDLE
        );
        let p = create_process(&mut vm);
        let elsewhere = WinLuid { a: 1, b: 2 };
        assert_eq!(
            vm.dispatch(elsewhere, Request::CreateDevice(with_process(p)))
                .unwrap_err(),
            NtStatus::OBJECT_NAME_NOT_FOUND
        );
        // OPENADAPTER's LUID must be the frame's.
        let cmd = DxgkvmbCommandOpenAdapter {
            guest_adapter_luid: elsewhere,
            ..zerocopy::FromZeros::new_zeroed()
        };
        assert!(vm.dispatch(luid, Request::OpenAdapter(cmd)).is_err());
        let close = DxgkvmbCommandCloseAdapter {
            host_handle: D3dkmtHandle(77),
            ..zerocopy::FromZeros::new_zeroed()
        };
        assert!(vm.dispatch(luid, Request::CloseAdapter(close)).is_err());
    }

    #[test]
    fn version_negotiation_refuses_old_guests() {
        let (mut vm, luid) = vm();
        let cmd = DxgkvmbCommandOpenAdapter {
            vmbus_interface_version: 2,
            vmbus_last_compatible_interface_version: 1,
            guest_adapter_luid: luid,
            ..zerocopy::FromZeros::new_zeroed()
        };
        match vm.dispatch(luid, Request::OpenAdapter(cmd)) {
            Ok(Reply::OpenAdapter(r)) => {
                assert_eq!(r.status, NtStatus::NOT_SUPPORTED);
                assert_eq!(r.host_adapter_handle, D3dkmtHandle::NULL);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn adapter_queries() {
        let (mut vm, luid) = vm();
        let p = create_process(&mut vm);
        let query = |vm: &mut Vm, t: u32, size: u32| {
            let mut cmd: DxgkvmbCommandQueryAdapterInfo = with_process(p);
            cmd.query_type = t;
            cmd.private_data_size = size;
            vm.dispatch(
                luid,
                Request::QueryAdapterInfo {
                    cmd,
                    private_data: vec![0; size as usize],
                },
            )
        };
        match query(&mut vm, qai_type::HOST_ADAPTER, 456) {
            Ok(Reply::QueryAdapterInfo {
                status,
                private_data,
            }) => {
                assert_eq!(status, NtStatus::SUCCESS);
                let info = DxgvHostAdapterInfo::decode(&private_data).unwrap();
                assert_eq!(info.luid, luid);
            }
            o => panic!("{o:?}"),
        }
        match query(&mut vm, qai_type::HOST_ADAPTER, 100) {
            Ok(Reply::QueryAdapterInfo {
                status,
                private_data,
            }) => {
                assert_eq!(status, NtStatus::BUFFER_TOO_SMALL);
                assert_eq!(private_data.len(), 100);
            }
            o => panic!("{o:?}"),
        }
        match query(&mut vm, qai_type::HOST_OBJECTS, 48) {
            Ok(Reply::QueryAdapterInfo { private_data, .. }) => {
                assert_eq!(DxgvHostObjects::decode(&private_data).unwrap().processes, 1);
            }
            o => panic!("{o:?}"),
        }
        assert!(query(&mut vm, 0x999, 16).is_ok_and(|r| matches!(
            r,
            Reply::QueryAdapterInfo { status, .. } if status == NtStatus::NOT_SUPPORTED
        )));
        assert_eq!(
            query(&mut vm, kmtqaitype::ADAPTERTYPE, 1 << 20).unwrap_err(),
            NtStatus::INVALID_PARAMETER
        );
    }

    mod compute {
        use super::*;
        use dxvmm_protocol::abi::{D3dddiMapGpuVirtualAddress, MonitoredFenceInfo};
        use dxvmm_protocol::cmdstream::{Command, CommandStream};
        use dxvmm_protocol::vmbus::{
            DxgkvmbCommandCreateAllocation, DxgkvmbCommandCreateContextVirtual,
            DxgkvmbCommandCreateSyncObject, DxgkvmbCommandDestroyHwQueue,
            DxgkvmbCommandDestroySyncObject, DxgkvmbCommandLock2,
            DxgkvmbCommandMapGpuVirtualAddress, DxgkvmbCommandReserveGpuVirtualAddress,
            DxgkvmbCommandSetExistingSysmemPages, DxgkvmbCommandSignalSyncObject,
            DxgkvmbCommandSubmitCommand, DxgkvmbCommandWaitForSyncObjectFromCpu,
        };
        use vm_memory::{Bytes, GuestAddress};
        use zerocopy::FromZeros;

        struct Fixture {
            vm: Vm,
            luid: WinLuid,
            p: D3dkmtHandle,
            dev: D3dkmtHandle,
            mem: GuestMemoryMmap,
            events: Arc<crate::EventQueue>,
        }

        fn fixture() -> Fixture {
            let backend: Arc<dyn Backend> = Arc::new(SoftBackend::new());
            let events = Arc::new(crate::EventQueue::new().unwrap());
            backend.set_event_sink(Some(events.clone()));
            let luid = backend.adapters()[0].luid;
            let mut vm = Vm::with_events(backend, &[luid], events.clone());
            let p = create_process(&mut vm);
            let dev = match vm.dispatch(luid, Request::CreateDevice(with_process(p))) {
                Ok(Reply::CreateDevice(r)) => r.device,
                o => panic!("{o:?}"),
            };
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            Fixture {
                vm,
                luid,
                p,
                dev,
                mem,
                events,
            }
        }

        impl Fixture {
            fn run(&mut self, r: Request) -> Outcome {
                self.vm.dispatch_with(self.luid, r, Some(&self.mem))
            }

            fn hdr<T: FromZeros + HasHeader>(&self) -> T {
                with_process(self.p)
            }

            /// A monitored fence of `dev` at 0 whose value lives at `gpa`.
            fn fence_on(&mut self, dev: D3dkmtHandle, gpa: u64) -> D3dkmtHandle {
                let mut c: DxgkvmbCommandCreateSyncObject = self.hdr();
                c.args.device = dev;
                c.args.info.r#type = syncobject_type::MONITORED_FENCE;
                c.args.info.set_monitored_fence(MonitoredFenceInfo {
                    fence_cpu_virtual_address: gpa,
                    ..Default::default()
                });
                match self.run(Request::CreateSyncObject(c)) {
                    Ok(Reply::CreateSyncObject(r)) => r.sync_object,
                    o => panic!("{o:?}"),
                }
            }

            /// WAITFORSYNCOBJECTFROMCPU for every fence to reach its value.
            fn wait(&mut self, fences: &[(D3dkmtHandle, u64)], cookie: u64) -> Outcome {
                let mut w: DxgkvmbCommandWaitForSyncObjectFromCpu = self.hdr();
                w.device = self.dev;
                w.object_count = fences.len() as u32;
                w.guest_event_pointer = cookie;
                self.run(Request::WaitForSyncObjectFromCpu {
                    cmd: w,
                    objects: fences.iter().map(|f| f.0).collect(),
                    fence_values: fences.iter().map(|f| f.1).collect(),
                })
            }

            /// SIGNALSYNCOBJECT from the CPU: `fence` to `value`.
            fn signal(&mut self, fence: D3dkmtHandle, value: u64) {
                let mut c: DxgkvmbCommandSignalSyncObject = self.hdr();
                c.object_count = 1;
                c.cpu_event_handle = u64::from(self.dev.0);
                assert_eq!(
                    self.run(Request::SignalSyncObject {
                        cmd: c,
                        objects: vec![fence],
                        contexts: vec![],
                        fence_values: vec![value],
                    }),
                    Ok(Reply::Status(NtStatus::SUCCESS))
                );
            }

            fn destroy_fence(&mut self, fence: D3dkmtHandle) {
                let mut d: DxgkvmbCommandDestroySyncObject = self.hdr();
                d.sync_object = fence;
                assert_eq!(
                    self.run(Request::DestroySyncObject(d)),
                    Ok(Reply::Status(NtStatus::SUCCESS))
                );
            }

            /// The cookies of the SIGNALGUESTEVENTs queued so far, in order.
            fn events(&self) -> Vec<u64> {
                use dxvmm_protocol::frame::{Frame, FrameKind};
                use dxvmm_protocol::HostEvent;
                std::iter::from_fn(|| self.events.pop())
                    .map(|ev| {
                        let frame = Frame::parse(&ev, FrameKind::Event).unwrap();
                        match HostEvent::decode(frame.payload).unwrap() {
                            HostEvent::SignalGuestEvent(e) => {
                                assert_eq!(e.process_id, u64::from(self.p.0));
                                e.event
                            }
                            e => panic!("{e:?}"),
                        }
                    })
                    .collect()
            }

            /// A CPU-visible allocation of `pages` pages backed by guest
            /// memory from `gpa`, mapped at a GPU VA; returns (handle, va).
            fn buffer(&mut self, pages: u64, gpa: u64) -> (D3dkmtHandle, u64) {
                let mut cmd: DxgkvmbCommandCreateAllocation = self.hdr();
                cmd.device = self.dev;
                let desc = DxgvAllocationDesc {
                    size: pages * PAGE,
                    alignment: 0,
                    flags: alloc_flags::CPU_VISIBLE,
                };
                let h = match self.run(Request::CreateAllocation {
                    cmd,
                    alloc_info: vec![zerocopy::FromZeros::new_zeroed()],
                    private_runtime_data: vec![],
                    priv_drv_data: vec![],
                    alloc_priv_drv_data: vec![desc.as_bytes().to_vec()],
                }) {
                    Ok(Reply::CreateAllocation {
                        allocation_info, ..
                    }) => {
                        assert_eq!(allocation_info[0].allocation_size, pages * PAGE);
                        allocation_info[0].allocation
                    }
                    o => panic!("{o:?}"),
                };
                // Pages in two messages, the second half first.
                let pfns: Vec<u64> = (0..pages).map(|i| gpa / PAGE + i).collect();
                let half = (pages / 2) as usize;
                for (off, part) in [(half, &pfns[half..]), (0, &pfns[..half])] {
                    let mut cmd: DxgkvmbCommandSetExistingSysmemPages = self.hdr();
                    cmd.device = self.dev;
                    cmd.allocation = h;
                    cmd.alloc_offset_in_pages = off as u32;
                    cmd.num_pages = part.len() as u32;
                    assert_eq!(
                        self.run(Request::SetExistingSysmemPages {
                            cmd,
                            pfns: part.to_vec()
                        }),
                        Ok(Reply::Status(NtStatus::SUCCESS))
                    );
                }
                let mut r: DxgkvmbCommandReserveGpuVirtualAddress = self.hdr();
                r.args.size = pages * PAGE;
                r.args.maximum_address = u64::MAX;
                let va = match self.run(Request::ReserveGpuVirtualAddress(r)) {
                    Ok(Reply::ReserveGpuVirtualAddress(r)) => r.virtual_address,
                    o => panic!("{o:?}"),
                };
                assert_ne!(va, 0);
                let mut m: DxgkvmbCommandMapGpuVirtualAddress = self.hdr();
                m.device = self.dev;
                m.args = D3dddiMapGpuVirtualAddress {
                    base_address: va,
                    maximum_address: u64::MAX,
                    allocation: h,
                    size_in_pages: pages,
                    ..FromZeros::new_zeroed()
                };
                match self.run(Request::MapGpuVirtualAddress(m)) {
                    Ok(Reply::MapGpuVirtualAddress(r)) => {
                        assert_eq!(r.status, NtStatus::SUCCESS);
                        assert_eq!(r.virtual_address, va);
                    }
                    o => panic!("{o:?}"),
                }
                (h, va)
            }
        }

        #[test]
        fn fill_through_guest_pages_with_a_fence_in_a_guest_slot() {
            let mut f = fixture();
            let (data, data_va) = f.buffer(4, 0x10000);
            let (_cmds, cmd_va) = f.buffer(2, 0x20000);
            // A fence whose value lives in guest memory at 0x30008.
            let mut c: DxgkvmbCommandCreateSyncObject = f.hdr();
            c.args.device = f.dev;
            c.args.info.r#type = syncobject_type::MONITORED_FENCE;
            c.args.info.set_monitored_fence(MonitoredFenceInfo {
                fence_cpu_virtual_address: 0x30008,
                ..Default::default()
            });
            let fence = match f.run(Request::CreateSyncObject(c)) {
                Ok(Reply::CreateSyncObject(r)) => {
                    assert_eq!(r.fence_storage_address, 0x30008);
                    r.sync_object
                }
                o => panic!("{o:?}"),
            };
            let mut ctx: DxgkvmbCommandCreateContextVirtual = f.hdr();
            ctx.device = f.dev;
            let context = match f.run(Request::CreateContextVirtual {
                cmd: ctx,
                priv_drv_data: vec![],
            }) {
                Ok(Reply::CreateContextVirtual { cmd, .. }) => cmd.context,
                o => panic!("{o:?}"),
            };
            // The stream, written into the command allocation's guest pages.
            let stream = CommandStream {
                commands: vec![
                    Command::Fill {
                        dst_va: data_va,
                        size: 4 * PAGE,
                        value: 0xdead_beef,
                    },
                    Command::FenceSignal {
                        sync_object: fence,
                        value: 7,
                    },
                ],
            }
            .encode();
            f.mem.write_slice(&stream, GuestAddress(0x20000)).unwrap();
            // A CPU wait before the work: pending, then an event.
            let mut w: DxgkvmbCommandWaitForSyncObjectFromCpu = f.hdr();
            w.device = f.dev;
            w.guest_event_pointer = 0x1234;
            assert_eq!(
                f.run(Request::WaitForSyncObjectFromCpu {
                    cmd: w,
                    objects: vec![fence],
                    fence_values: vec![7]
                }),
                Ok(Reply::Status(NtStatus::PENDING))
            );
            let mut s: DxgkvmbCommandSubmitCommand = f.hdr();
            s.args.command_buffer = cmd_va;
            s.args.command_length = stream.len() as u32;
            s.args.broadcast_context_count = 1;
            s.args.broadcast_context[0] = context;
            assert_eq!(
                f.run(Request::SubmitCommand {
                    cmd: Box::new(s),
                    history_buffers: vec![],
                    priv_drv_data: vec![]
                }),
                Ok(Reply::Status(NtStatus::SUCCESS))
            );
            f.vm.backend.flush().unwrap();
            // The fence value reached the guest's slot, and the waiter's event is queued.
            assert_eq!(f.mem.read_obj::<u64>(GuestAddress(0x30008)).unwrap(), 7);
            let ev = f.events.pop().expect("SIGNALGUESTEVENT");
            let frame =
                dxvmm_protocol::frame::Frame::parse(&ev, dxvmm_protocol::frame::FrameKind::Event)
                    .unwrap();
            match dxvmm_protocol::HostEvent::decode(frame.payload).unwrap() {
                dxvmm_protocol::HostEvent::SignalGuestEvent(e) => assert_eq!(e.event, 0x1234),
                e => panic!("{e:?}"),
            }
            // LOCK2 brings the GPU's contents into the guest pages.
            let mut l: DxgkvmbCommandLock2 = f.hdr();
            l.args.device = f.dev;
            l.args.allocation = data;
            match f.run(Request::Lock2(l)) {
                Ok(Reply::Lock2(r)) => assert_eq!(r.status, NtStatus::SUCCESS),
                o => panic!("{o:?}"),
            }
            let word: u32 = f
                .mem
                .read_obj(GuestAddress(0x10000 + 4 * PAGE - 4))
                .unwrap();
            assert_eq!(word, 0xdead_beef);
            // A wait that is satisfied now answers at once.
            assert_eq!(
                f.run(Request::WaitForSyncObjectFromCpu {
                    cmd: w,
                    objects: vec![fence],
                    fence_values: vec![7]
                }),
                Ok(Reply::Status(NtStatus::SUCCESS))
            );
            // Asynchronously (async_msg): an empty reply, the result in the
            // frame's status.
            let mut a = s;
            a.hdr.channel_type |= dxvmm_protocol::vmbus::CHANNEL_FLAG_ASYNC_MSG;
            let submit = |cmd| Request::SubmitCommand {
                cmd: Box::new(cmd),
                history_buffers: vec![],
                priv_drv_data: vec![],
            };
            assert_eq!(f.run(submit(a)), Ok(Reply::Empty));
            a.args.command_buffer = 0x7000_0000_0000;
            assert_eq!(f.run(submit(a)), Err(NtStatus::INVALID_PARAMETER));
            a.args.broadcast_context[0] = D3dkmtHandle(0x4242_4240);
            assert_eq!(f.run(submit(a)), Err(NtStatus::INVALID_HANDLE));
            // Teardown frees everything.
            f.vm.reset();
            assert!(f.vm.counts().is_empty());
        }

        #[test]
        fn a_hardware_queue_signals_its_progress_fence_in_its_guest_slot() {
            use dxvmm_protocol::vmbus::{
                DxgkvmbCommandCreateHwQueue, DxgkvmbCommandSubmitCommandToHwQueue,
            };
            let mut f = fixture();
            let (_data, data_va) = f.buffer(2, 0x10000);
            let (_cmds, cmd_va) = f.buffer(2, 0x20000);
            let mut ctx: DxgkvmbCommandCreateContextVirtual = f.hdr();
            ctx.device = f.dev;
            let context = match f.run(Request::CreateContextVirtual {
                cmd: ctx,
                priv_drv_data: vec![],
            }) {
                Ok(Reply::CreateContextVirtual { cmd, .. }) => cmd.context,
                o => panic!("{o:?}"),
            };
            let mut q: DxgkvmbCommandCreateHwQueue = f.hdr();
            q.context = context;
            q.hwqueue_progress_fence_cpuva = 0x30010;
            let queue = match f.run(Request::CreateHwQueue {
                cmd: q,
                priv_drv_data: vec![],
            }) {
                Ok(Reply::CreateHwQueue { cmd, .. }) => {
                    assert_eq!(cmd.status, NtStatus::SUCCESS);
                    cmd.hwqueue
                }
                o => panic!("{o:?}"),
            };
            let stream = CommandStream {
                commands: vec![Command::Fill {
                    dst_va: data_va,
                    size: PAGE,
                    value: 1,
                }],
            }
            .encode();
            f.mem.write_slice(&stream, GuestAddress(0x20000)).unwrap();
            let mut s: DxgkvmbCommandSubmitCommandToHwQueue = f.hdr();
            s.args.hwqueue = queue;
            s.args.hwqueue_progress_fence_id = 3;
            s.args.command_buffer = cmd_va;
            s.args.command_length = stream.len() as u32;
            assert_eq!(
                f.run(Request::SubmitCommandToHwQueue {
                    cmd: s,
                    written_primaries: vec![],
                    priv_drv_data: vec![]
                }),
                Ok(Reply::Status(NtStatus::SUCCESS))
            );
            f.vm.backend.flush().unwrap();
            assert_eq!(f.mem.read_obj::<u64>(GuestAddress(0x30010)).unwrap(), 3);
            // Another process's queue, or none, is refused.
            s.args.hwqueue = D3dkmtHandle(0x4242);
            assert_eq!(
                f.run(Request::SubmitCommandToHwQueue {
                    cmd: s,
                    written_primaries: vec![],
                    priv_drv_data: vec![]
                }),
                Err(NtStatus::INVALID_HANDLE)
            );
        }

        #[test]
        fn bad_pages_and_descriptions_are_refused() {
            let mut f = fixture();
            let mut cmd: DxgkvmbCommandCreateAllocation = f.hdr();
            cmd.device = f.dev;
            let bad = DxgvAllocationDesc {
                size: 6,
                alignment: 0,
                flags: 0,
            };
            assert!(f
                .run(Request::CreateAllocation {
                    cmd,
                    alloc_info: vec![FromZeros::new_zeroed()],
                    private_runtime_data: vec![],
                    priv_drv_data: vec![],
                    alloc_priv_drv_data: vec![bad.as_bytes().to_vec()],
                })
                .is_err());
            let (h, _) = f.buffer(2, 0x10000);
            // Pages outside guest memory, past the allocation, a wrong count.
            let mut s: DxgkvmbCommandSetExistingSysmemPages = f.hdr();
            s.allocation = h;
            s.num_pages = 1;
            for (off, pfn) in [(0u32, 1u64 << 40), (5, 1)] {
                s.alloc_offset_in_pages = off;
                assert!(f
                    .run(Request::SetExistingSysmemPages {
                        cmd: s,
                        pfns: vec![pfn]
                    })
                    .is_err());
            }
            // A fence slot outside guest memory or misaligned.
            for gpa in [1u64 << 40, 0x30004] {
                let mut c: DxgkvmbCommandCreateSyncObject = f.hdr();
                c.args.device = f.dev;
                c.args.info.r#type = syncobject_type::MONITORED_FENCE;
                c.args.info.set_monitored_fence(MonitoredFenceInfo {
                    fence_cpu_virtual_address: gpa,
                    ..Default::default()
                });
                assert_eq!(
                    f.run(Request::CreateSyncObject(c)).unwrap_err(),
                    NtStatus::INVALID_PARAMETER
                );
            }
            // A submit of a stream at an unmapped VA.
            let mut s: DxgkvmbCommandSubmitCommand = f.hdr();
            s.args.command_buffer = 0x7777_0000;
            s.args.command_length = 64;
            s.args.broadcast_context_count = 1;
            assert!(matches!(
                f.run(Request::SubmitCommand { cmd: Box::new(s), history_buffers: vec![], priv_drv_data: vec![] }),
                Ok(Reply::Status(st)) if !st.is_success()
            ));
        }
        #[test]
        fn a_wait_on_a_destroyed_fence_ends_with_one_event() {
            let mut f = fixture();
            let a = f.fence_on(f.dev, 0x30000);
            let b = f.fence_on(f.dev, 0x30008);
            let pending = Ok(Reply::Status(NtStatus::PENDING));
            assert_eq!(f.wait(&[(a, 1)], 0x10), pending);
            assert_eq!(f.wait(&[(a, 1), (b, 1)], 0x11), pending);
            assert_eq!(f.wait(&[(b, 1)], 0x12), pending);
            assert_eq!(f.events.pending_waits(f.p), 3);
            // Destroying `a` ends the two waits that name it, at once.
            f.destroy_fence(a);
            let mut got = f.events();
            got.sort_unstable();
            assert_eq!(got, [0x10, 0x11]);
            assert_eq!(f.events.pending_waits(f.p), 1);
            // `b` reaching its value satisfies only the wait still pending:
            // the one that also named `a` had its event and gets no second.
            f.signal(b, 1);
            f.vm.backend.flush().unwrap();
            assert_eq!(f.events(), [0x12]);
            assert_eq!(f.events.pending_waits(f.p), 0);
            // A wait on the destroyed handle is refused, not registered.
            assert_eq!(f.wait(&[(a, 1)], 0x13), Err(NtStatus::INVALID_HANDLE));
            assert_eq!(f.events.pending_waits(f.p), 0);
        }

        #[test]
        fn waits_end_with_the_device_the_queue_or_the_process_of_their_fences() {
            use dxvmm_protocol::vmbus::DxgkvmbCommandCreateHwQueue;
            let mut f = fixture();
            let pending = Ok(Reply::Status(NtStatus::PENDING));
            // A second device: destroying it ends the waits on its fence.
            let dev2 = match f
                .vm
                .dispatch(f.luid, Request::CreateDevice(with_process(f.p)))
            {
                Ok(Reply::CreateDevice(r)) => r.device,
                o => panic!("{o:?}"),
            };
            let on2 = f.fence_on(dev2, 0x30000);
            let mine = f.fence_on(f.dev, 0x30008);
            assert_eq!(f.wait(&[(on2, 1)], 0x20), pending);
            assert_eq!(f.wait(&[(mine, 1)], 0x21), pending);
            let mut d: DxgkvmbCommandDestroyDevice = f.hdr();
            d.device = dev2;
            assert_eq!(
                f.run(Request::DestroyDevice(d)),
                Ok(Reply::Status(NtStatus::SUCCESS))
            );
            assert_eq!(f.events(), [0x20]);
            // A hardware queue takes its progress fence with it.
            let mut ctx: DxgkvmbCommandCreateContextVirtual = f.hdr();
            ctx.device = f.dev;
            let context = match f.run(Request::CreateContextVirtual {
                cmd: ctx,
                priv_drv_data: vec![],
            }) {
                Ok(Reply::CreateContextVirtual { cmd, .. }) => cmd.context,
                o => panic!("{o:?}"),
            };
            let mut q: DxgkvmbCommandCreateHwQueue = f.hdr();
            q.context = context;
            q.hwqueue_progress_fence_cpuva = 0x30010;
            let (queue, progress) = match f.run(Request::CreateHwQueue {
                cmd: q,
                priv_drv_data: vec![],
            }) {
                Ok(Reply::CreateHwQueue { cmd, .. }) => (cmd.hwqueue, cmd.hwqueue_progress_fence),
                o => panic!("{o:?}"),
            };
            assert_eq!(f.wait(&[(progress, 1)], 0x22), pending);
            let mut d: DxgkvmbCommandDestroyHwQueue = f.hdr();
            d.hwqueue = queue;
            assert_eq!(
                f.run(Request::DestroyHwQueue(d)),
                Ok(Reply::Status(NtStatus::SUCCESS))
            );
            assert_eq!(f.events(), [0x22]);
            assert_eq!(f.events.pending_waits(f.p), 1);
            // The process going ends the rest and leaves nothing tracked.
            assert_eq!(f.wait(&[(mine, 2)], 0x23), pending);
            assert_eq!(
                f.vm.dispatch(
                    WinLuid::default(),
                    Request::DestroyProcess(with_process(f.p))
                ),
                Ok(Reply::Status(NtStatus::SUCCESS))
            );
            let mut got = f.events();
            got.sort_unstable();
            assert_eq!(got, [0x21, 0x23]);
            assert_eq!(f.events.pending_waits(f.p), 0);
        }

        #[test]
        fn a_cookie_names_one_pending_wait_and_a_process_has_a_bounded_number() {
            let mut f = fixture();
            let a = f.fence_on(f.dev, 0x30000);
            let pending = Ok(Reply::Status(NtStatus::PENDING));
            assert_eq!(f.wait(&[(a, 1)], 7), pending);
            assert_eq!(f.wait(&[(a, 2)], 7), Err(NtStatus::INVALID_PARAMETER));
            for cookie in 8..(8 + crate::events::MAX_PENDING_WAITS as u64 - 1) {
                assert_eq!(f.wait(&[(a, 1)], cookie), pending);
            }
            assert_eq!(
                f.wait(&[(a, 1)], 1 << 40),
                Err(NtStatus::INSUFFICIENT_RESOURCES)
            );
            // All satisfied at once: one event each, nothing left tracked,
            // and a cookie is free again once its wait ended.
            f.signal(a, 2);
            f.vm.backend.flush().unwrap();
            assert_eq!(f.events().len(), crate::events::MAX_PENDING_WAITS);
            assert_eq!(f.events.pending_waits(f.p), 0);
            assert_eq!(f.wait(&[(a, 3)], 7), pending);
            // A wait satisfied already is not tracked at all.
            assert_eq!(f.wait(&[(a, 2)], 9), Ok(Reply::Status(NtStatus::SUCCESS)));
            assert_eq!(f.events.pending_waits(f.p), 1);
            // A reset forgets the waits without events.
            f.vm.reset();
            assert_eq!(f.events.pending_waits(f.p), 0);
            assert!(f.events().is_empty());
        }
    }
}
