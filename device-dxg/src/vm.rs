//! One VM's view of the host GPUs: its guest processes, the adapters it was
//! given, and the dispatch of each decoded request to the backend.
//!
//! Everything here treats the guest as hostile: a process handle must be one
//! this VM created, an adapter must be one it was given, and every other
//! handle goes to the backend, which checks that it belongs to the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dxvmm_host_backend::{AdapterInfo, Backend, BackendError, ObjectCounts, SegmentGroup};
use dxvmm_protocol::abi::{kmtqaitype, D3dkmtAdapterType, D3dkmtHandle, WinLuid};
use dxvmm_protocol::escape::{
    put_str, qai_type, DxgvHostAdapterInfo, DxgvHostObjects, DXGV_HOST_ADAPTER_MAGIC,
    DXGV_HOST_ADAPTER_VERSION, DXGV_HOST_OBJECTS_MAGIC, DXGV_HOST_OBJECTS_VERSION,
};
use dxvmm_protocol::frame::negotiate_version;
use dxvmm_protocol::message::{Reply, Request};
use dxvmm_protocol::vmbus::{
    DxgkvmbCommandCreateDeviceReturn, DxgkvmbCommandCreateProcessReturn,
    DxgkvmbCommandGetInternalAdapterInfoReturn, DxgkvmbCommandOpenAdapterReturn,
    DxgkvmbCommandQueryVideoMemoryInfoReturn, DXGK_VMBUS_INTERFACE_VERSION,
    DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION,
};
use dxvmm_protocol::NtStatus;
use zerocopy::IntoBytes;

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
}

/// A request's outcome: a reply payload, or a status for the frame (the
/// request could not be dispatched; the payload is empty).
pub type Outcome = Result<Reply, NtStatus>;

impl Vm {
    /// A VM that sees the adapters of `backend` whose LUIDs are in `luids`.
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
        }
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
    }

    /// Carries out one request for the adapter `vgpu` (zero for global
    /// commands).
    pub fn dispatch(&mut self, vgpu: WinLuid, request: Request) -> Outcome {
        let process = request.process();
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
                Ok(Reply::Status(result(self.backend.destroy_process(process))))
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
                    Ok(d) => d,
                    Err(e) => {
                        tracing::debug!("CREATEDEVICE: {e}");
                        D3dkmtHandle::NULL
                    }
                };
                Ok(Reply::CreateDevice(DxgkvmbCommandCreateDeviceReturn {
                    device,
                }))
            }
            Request::DestroyDevice(cmd) => {
                self.process(process)?;
                Ok(Reply::Status(result(
                    self.backend.destroy_device(process, cmd.device),
                )))
            }
            Request::FlushDevice(_) => {
                self.process(process)?;
                Ok(Reply::Status(result(self.backend.flush())))
            }
            other => {
                tracing::debug!("{} is not supported yet", other.name());
                Err(NtStatus::NOT_SUPPORTED)
            }
        }
    }
}

/// The NTSTATUS of a backend error.
fn status(e: &BackendError) -> NtStatus {
    e.status()
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
}
