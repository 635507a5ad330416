//! `dxgtest abuse`: garbage for every ioctl of the adapter/device layer.
//!
//! Each case hands the driver something a correct caller never would and
//! requires an error back (an errno, never success). The driver must then
//! still work: after each ioctl's cases a valid call must succeed, and at
//! the end the host must hold no more devices than before.
//!
//! Memory safety of the suite itself: every bad pointer is one the kernel
//! cannot write through (null, unmapped, inaccessible, read-only, kernel or
//! non-canonical addresses), and every "valid" pointer is into mappings of
//! this program's own with a guard page after them, so a driver that writes
//! more than it was told stops at the guard rather than in our heap.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dxvmm_protocol::abi::{
    kmtqaitype, memory_segment_group, D3dddiMakeResident, D3dddiMapGpuVirtualAddress,
    D3dddiReserveGpuVirtualAddress, D3dkmtAdapterInfo, D3dkmtCloseAdapter, D3dkmtCreateAllocation,
    D3dkmtCreateContextVirtual, D3dkmtCreateDevice, D3dkmtCreateHwQueue, D3dkmtCreatePagingQueue,
    D3dkmtCreateSynchronizationObject2, D3dkmtDestroyAllocation2, D3dkmtDestroyContext,
    D3dkmtDestroyDevice, D3dkmtDestroyHwQueue, D3dkmtDestroySynchronizationObject,
    D3dkmtEnumAdapters2, D3dkmtEnumAdapters3, D3dkmtEnumAdaptersFilter, D3dkmtEscape, D3dkmtEvict,
    D3dkmtFreeGpuVirtualAddress, D3dkmtHandle, D3dkmtLock2, D3dkmtOpenAdapterFromLuid,
    D3dkmtQueryAdapterInfo, D3dkmtQueryAllocationResidency, D3dkmtQueryVideoMemoryInfo,
    D3dkmtSignalSynchronizationObjectFromCpu, D3dkmtSignalSynchronizationObjectFromGpu,
    D3dkmtSignalSynchronizationObjectFromGpu2, D3dkmtSubmitCommand, D3dkmtSubmitCommandToHwQueue,
    D3dkmtUnlock2, D3dkmtWaitForSynchronizationObjectFromCpu,
    D3dkmtWaitForSynchronizationObjectFromGpu, WinLuid, D3DKMT_ADAPTERS_MAX,
};
use dxvmm_protocol::escape::{qai_type, DxgvHostObjects};
use libdxg::ioctl::{dxg_cmd, iowr, IoctlArg, DXG_IOCTL_TYPE, MAX_IOCTL_SIZE};
use libdxg::{Dxg, Error};
use zerocopy::IntoBytes;

use crate::report::ObjectsReport;
use crate::sys::{self, Forked, Mapping, Pipe};
use crate::tap::Tap;

/// Offsets in the scratch area: the argument struct itself, then the
/// buffers its pointers name.
const ARG_AT: usize = 0;
const LIST_AT: usize = 0x4000;
const DATA_AT: usize = 0x8000;
const SCRATCH: usize = 0x10000;

/// Handle values no driver hands out to this process at this point.
const JUNK_HANDLES: [(&str, u32); 3] = [
    ("null handle", 0),
    ("all-ones handle", 0xffff_ffff),
    ("made-up handle", 0x4242_4240),
];

const QAI_OBJECTS_SIZE: u32 = DxgvHostObjects::SIZE as u32;

/// The process's objects the cases aim at, as plain handles (garbage calls
/// may destroy them; `reset` makes new ones).
struct Env {
    dxg: Dxg,
    luid: WinLuid,
    adapter: D3dkmtHandle,
    device: D3dkmtHandle,
    adapters: usize,
    /// Host devices that cases already reported as leaked (they live as
    /// long as this process), so the final count does not report them again.
    leaked_devices: u32,
    scratch: Mapping,
    /// One page the kernel cannot touch.
    none: Mapping,
}

impl Env {
    fn new(dxg: Dxg) -> Result<Env, String> {
        let list = dxg
            .enum_adapters3_raw(D3dkmtEnumAdaptersFilter::INCLUDE_COMPUTE_ONLY)
            .map_err(|e| e.to_string())?;
        let first = *list.first().ok_or("the driver lists no adapter")?;
        for a in &list[1..] {
            let _ = dxg.close_adapter_raw(a.adapter_handle);
        }
        let device = dxg
            .create_device_raw(first.adapter_handle, Default::default())
            .map_err(|e| e.to_string())?;
        let (scratch, _) = Mapping::guarded(SCRATCH).map_err(|e| e.to_string())?;
        let none = Mapping::new(1, libc::PROT_NONE).map_err(|e| e.to_string())?;
        Ok(Env {
            dxg,
            luid: first.adapter_luid,
            adapter: first.adapter_handle,
            device,
            adapters: list.len(),
            leaked_devices: 0,
            scratch,
            none,
        })
    }

    /// New adapter and device handles, after a garbage call that wrongly
    /// succeeded may have closed or replaced them.
    fn reset(&mut self) {
        let _ = self.dxg.destroy_device_raw(self.device);
        let _ = self.dxg.close_adapter_raw(self.adapter);
        if let Ok(a) = self.dxg.open_adapter_from_luid_raw(self.luid) {
            self.adapter = a;
        }
        if let Ok(d) = self.dxg.create_device_raw(self.adapter, Default::default()) {
            self.device = d;
        }
    }

    fn at(&self, off: usize) -> u64 {
        self.scratch.addr() + off as u64
    }

    /// Addresses the kernel must refuse to read or write.
    fn bad_addrs(&self) -> [(&'static str, u64); 6] {
        [
            ("null", 0),
            ("unmapped low page", 0x1000),
            ("inaccessible page", self.none.addr()),
            ("kernel address", 0xffff_8880_0000_0000),
            ("non-canonical address", 0x8000_0000_0000_0000),
            ("last bytes of the address space", u64::MAX - 7),
        ]
    }

    /// A handle the process had and gave back.
    fn closed_adapter(&self) -> Option<D3dkmtHandle> {
        let h = self.dxg.open_adapter_from_luid_raw(self.luid).ok()?;
        self.dxg.close_adapter_raw(h).ok()?;
        Some(h)
    }

    fn destroyed_device(&self) -> Option<D3dkmtHandle> {
        let d = self
            .dxg
            .create_device_raw(self.adapter, Default::default())
            .ok()?;
        self.dxg.destroy_device_raw(d).ok()?;
        Some(d)
    }

    /// Issues `nr` with `size` in the word and `arg` copied to the scratch
    /// area.
    fn raw(&self, nr: u32, size: usize, arg: &[u8]) -> Result<i32, Error> {
        self.scratch.fill_from(arg);
        // SAFETY: the argument lies in our scratch mapping, whose pointers
        // name either other parts of it or addresses the kernel cannot use.
        unsafe {
            self.dxg
                .ioctl_raw(nr, size, self.scratch.ptr().add(ARG_AT).cast())
        }
    }

    /// Issues `T`'s ioctl with `arg` (in the scratch area).
    fn call<T: IoctlArg>(&self, arg: &T) -> Result<i32, Error> {
        self.raw(T::NR, core::mem::size_of::<T>(), arg.as_bytes())
    }
}

/// One ioctl under test: its valid argument (in terms of the env), and
/// whether the driver writes the argument back (so that a read-only one
/// must fail).
struct Target {
    label: &'static str,
    nr: u32,
    size: usize,
    writes_back: bool,
    valid: fn(&Env) -> Vec<u8>,
}

fn target<T: IoctlArg>(
    label: &'static str,
    writes_back: bool,
    valid: fn(&Env) -> Vec<u8>,
) -> Target {
    Target {
        label,
        nr: T::NR,
        size: core::mem::size_of::<T>(),
        writes_back,
        valid,
    }
}

fn enum2_arg(env: &Env) -> D3dkmtEnumAdapters2 {
    D3dkmtEnumAdapters2 {
        num_adapters: D3DKMT_ADAPTERS_MAX,
        reserved: 0,
        adapters: env.at(LIST_AT),
    }
}

fn enum3_arg(env: &Env) -> D3dkmtEnumAdapters3 {
    D3dkmtEnumAdapters3 {
        filter: D3dkmtEnumAdaptersFilter::INCLUDE_COMPUTE_ONLY,
        adapter_count: D3DKMT_ADAPTERS_MAX,
        reserved: 0,
        adapters: env.at(LIST_AT),
    }
}

fn qai_arg(env: &Env) -> D3dkmtQueryAdapterInfo {
    D3dkmtQueryAdapterInfo {
        adapter: env.adapter,
        r#type: qai_type::HOST_OBJECTS,
        private_data: env.at(DATA_AT),
        private_data_size: QAI_OBJECTS_SIZE,
        _pad0: 0,
    }
}

fn qvmi_arg(env: &Env) -> D3dkmtQueryVideoMemoryInfo {
    D3dkmtQueryVideoMemoryInfo {
        adapter: env.adapter,
        memory_segment_group: memory_segment_group::LOCAL,
        ..Default::default()
    }
}

fn targets() -> Vec<Target> {
    vec![
        target::<D3dkmtEnumAdapters2>("enumadapters2", true, |e| enum2_arg(e).as_bytes().to_vec()),
        target::<D3dkmtEnumAdapters3>("enumadapters3", true, |e| enum3_arg(e).as_bytes().to_vec()),
        target::<D3dkmtOpenAdapterFromLuid>("openadapterfromluid", true, |e| {
            D3dkmtOpenAdapterFromLuid {
                adapter_luid: e.luid,
                adapter_handle: D3dkmtHandle::NULL,
            }
            .as_bytes()
            .to_vec()
        }),
        target::<D3dkmtCloseAdapter>("closeadapter", false, |e| {
            D3dkmtCloseAdapter {
                adapter_handle: e.adapter,
            }
            .as_bytes()
            .to_vec()
        }),
        target::<D3dkmtQueryAdapterInfo>("queryadapterinfo", false, |e| {
            qai_arg(e).as_bytes().to_vec()
        }),
        target::<D3dkmtCreateDevice>("createdevice", true, |e| {
            D3dkmtCreateDevice {
                adapter: e.adapter,
                ..Default::default()
            }
            .as_bytes()
            .to_vec()
        }),
        target::<D3dkmtDestroyDevice>("destroydevice", false, |e| {
            D3dkmtDestroyDevice { device: e.device }.as_bytes().to_vec()
        }),
        target::<D3dkmtQueryVideoMemoryInfo>("queryvideomemoryinfo", true, |e| {
            qvmi_arg(e).as_bytes().to_vec()
        }),
    ]
}

/// The compute profile's ioctls (protocol §2.6). Their "valid" arguments
/// name this process's device with lists in the scratch area; what the
/// common cases vary is the argument pointer and the size in the command
/// word, which the driver must refuse whatever the struct holds.
fn compute_targets() -> Vec<Target> {
    fn dev<T: IntoBytes + zerocopy::Immutable>(t: T) -> Vec<u8> {
        t.as_bytes().to_vec()
    }
    vec![
        target::<D3dkmtCreateAllocation>("createallocation", false, |e| {
            dev(D3dkmtCreateAllocation {
                device: e.device,
                alloc_count: 1,
                allocation_info: e.at(LIST_AT),
                ..Default::default()
            })
        }),
        target::<D3dkmtDestroyAllocation2>("destroyallocation2", false, |e| {
            dev(D3dkmtDestroyAllocation2 {
                device: e.device,
                allocations: e.at(LIST_AT),
                alloc_count: 1,
                ..Default::default()
            })
        }),
        target::<D3dkmtQueryAllocationResidency>("queryallocationresidency", false, |e| {
            dev(D3dkmtQueryAllocationResidency {
                device: e.device,
                allocations: e.at(LIST_AT),
                allocation_count: 1,
                residency_status: e.at(DATA_AT),
                ..Default::default()
            })
        }),
        target::<D3dddiMakeResident>("makeresident", false, |e| {
            dev(D3dddiMakeResident {
                paging_queue: e.device,
                alloc_count: 1,
                allocation_list: e.at(LIST_AT),
                priority_list: e.at(DATA_AT),
                ..Default::default()
            })
        }),
        target::<D3dkmtEvict>("evict", false, |e| {
            dev(D3dkmtEvict {
                device: e.device,
                alloc_count: 1,
                allocations: e.at(LIST_AT),
                ..Default::default()
            })
        }),
        target::<D3dkmtLock2>("lock2", false, |e| {
            dev(D3dkmtLock2 {
                device: e.device,
                ..Default::default()
            })
        }),
        target::<D3dkmtUnlock2>("unlock2", false, |e| {
            dev(D3dkmtUnlock2 {
                device: e.device,
                allocation: D3dkmtHandle::NULL,
            })
        }),
        target::<D3dkmtCreatePagingQueue>("createpagingqueue", false, |e| {
            dev(D3dkmtCreatePagingQueue {
                device: e.device,
                ..Default::default()
            })
        }),
        target::<D3dddiReserveGpuVirtualAddress>("reservegpuvirtualaddress", false, |e| {
            dev(D3dddiReserveGpuVirtualAddress {
                adapter: e.device,
                size: 4096,
                ..Default::default()
            })
        }),
        target::<D3dddiMapGpuVirtualAddress>("mapgpuvirtualaddress", false, |e| {
            dev(D3dddiMapGpuVirtualAddress {
                paging_queue: e.device,
                size_in_pages: 1,
                ..Default::default()
            })
        }),
        target::<D3dkmtFreeGpuVirtualAddress>("freegpuvirtualaddress", false, |e| {
            dev(D3dkmtFreeGpuVirtualAddress {
                adapter: e.device,
                reserved: 0,
                base_address: 0x7000_0000_0000,
                size: 4096,
            })
        }),
        target::<D3dkmtCreateContextVirtual>("createcontextvirtual", false, |e| {
            dev(D3dkmtCreateContextVirtual {
                device: e.device,
                ..Default::default()
            })
        }),
        target::<D3dkmtDestroyContext>("destroycontext", false, |_| {
            dev(D3dkmtDestroyContext {
                context: D3dkmtHandle(0x4242_4240),
            })
        }),
        target::<D3dkmtCreateHwQueue>("createhwqueue", false, |e| {
            dev(D3dkmtCreateHwQueue {
                context: e.device,
                ..Default::default()
            })
        }),
        target::<D3dkmtDestroyHwQueue>("destroyhwqueue", false, |_| {
            dev(D3dkmtDestroyHwQueue {
                queue: D3dkmtHandle(0x4242_4240),
            })
        }),
        target::<D3dkmtSubmitCommand>("submitcommand", false, |e| {
            let mut a = D3dkmtSubmitCommand {
                command_buffer: 0x7000_0000_0000,
                command_length: 64,
                broadcast_context_count: 1,
                ..Default::default()
            };
            a.broadcast_context[0] = e.device;
            dev(a)
        }),
        target::<D3dkmtSubmitCommandToHwQueue>("submitcommandtohwqueue", false, |e| {
            dev(D3dkmtSubmitCommandToHwQueue {
                hwqueue: e.device,
                hwqueue_progress_fence_id: 1,
                command_buffer: 0x7000_0000_0000,
                command_length: 64,
                ..Default::default()
            })
        }),
        target::<D3dkmtEscape>("escape", false, |e| {
            dev(D3dkmtEscape {
                adapter: e.adapter,
                device: e.device,
                priv_drv_data: e.at(DATA_AT),
                priv_drv_data_size: 16,
                ..Default::default()
            })
        }),
        target::<D3dkmtCreateSynchronizationObject2>("createsynchronizationobject2", false, |e| {
            dev(D3dkmtCreateSynchronizationObject2 {
                device: e.device,
                ..Default::default()
            })
        }),
        target::<D3dkmtDestroySynchronizationObject>("destroysynchronizationobject", false, |_| {
            dev(D3dkmtDestroySynchronizationObject {
                sync_object: D3dkmtHandle(0x4242_4240),
            })
        }),
        target::<D3dkmtSignalSynchronizationObjectFromCpu>("signalfromcpu", false, |e| {
            dev(D3dkmtSignalSynchronizationObjectFromCpu {
                device: e.device,
                object_count: 1,
                objects: e.at(LIST_AT),
                fence_values: e.at(DATA_AT),
                ..Default::default()
            })
        }),
        target::<D3dkmtSignalSynchronizationObjectFromGpu>("signalfromgpu", false, |e| {
            dev(D3dkmtSignalSynchronizationObjectFromGpu {
                context: e.device,
                object_count: 1,
                objects: e.at(LIST_AT),
                monitored_fence_values: e.at(DATA_AT),
                ..Default::default()
            })
        }),
        target::<D3dkmtSignalSynchronizationObjectFromGpu2>("signalfromgpu2", false, |e| {
            dev(D3dkmtSignalSynchronizationObjectFromGpu2 {
                object_count: 1,
                objects: e.at(LIST_AT),
                context_count: 1,
                contexts: e.at(LIST_AT),
                fence_value: e.at(DATA_AT),
                ..Default::default()
            })
        }),
        target::<D3dkmtWaitForSynchronizationObjectFromCpu>("waitfromcpu", false, |e| {
            dev(D3dkmtWaitForSynchronizationObjectFromCpu {
                device: e.device,
                object_count: 1,
                objects: e.at(LIST_AT),
                fence_values: e.at(DATA_AT),
                ..Default::default()
            })
        }),
        target::<D3dkmtWaitForSynchronizationObjectFromGpu>("waitfromgpu", false, |e| {
            dev(D3dkmtWaitForSynchronizationObjectFromGpu {
                context: e.device,
                object_count: 1,
                objects: e.at(LIST_AT),
                monitored_fence_values: e.at(DATA_AT),
                ..Default::default()
            })
        }),
    ]
}

/// Counts and lists of garbage for the compute ioctls: handle lists
/// naming nothing, counts past the limits, lists at bad addresses. The
/// scratch area holds zeros, so the handles the lists name are null.
fn compute_cases(tap: &mut Tap, env: &mut Env) {
    let big = 0x7fff_ffffu32;
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "createallocation: alloc_count 0",
            D3dkmtCreateAllocation {
                device: env.device,
                alloc_count: 0,
                allocation_info: env.at(LIST_AT),
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtCreateAllocation::NR,
        ),
        (
            "createallocation: alloc_count 0x7fffffff",
            D3dkmtCreateAllocation {
                device: env.device,
                alloc_count: big,
                allocation_info: env.at(LIST_AT),
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtCreateAllocation::NR,
        ),
        (
            "createallocation: info without private data",
            D3dkmtCreateAllocation {
                device: env.device,
                alloc_count: 1,
                allocation_info: env.at(LIST_AT),
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtCreateAllocation::NR,
        ),
        (
            "destroyallocation2: a null handle in the list",
            D3dkmtDestroyAllocation2 {
                device: env.device,
                allocations: env.at(LIST_AT),
                alloc_count: 1,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtDestroyAllocation2::NR,
        ),
        (
            "destroyallocation2: count 0x7fffffff",
            D3dkmtDestroyAllocation2 {
                device: env.device,
                allocations: env.at(LIST_AT),
                alloc_count: big,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtDestroyAllocation2::NR,
        ),
        (
            "queryallocationresidency: count 0x7fffffff",
            D3dkmtQueryAllocationResidency {
                device: env.device,
                allocations: env.at(LIST_AT),
                allocation_count: big,
                residency_status: env.at(DATA_AT),
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtQueryAllocationResidency::NR,
        ),
        (
            "evict: list at a kernel address",
            D3dkmtEvict {
                device: env.device,
                alloc_count: 1,
                allocations: 0xffff_8880_0000_0000,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtEvict::NR,
        ),
        (
            "lock2: device as allocation",
            D3dkmtLock2 {
                device: env.device,
                allocation: env.device,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtLock2::NR,
        ),
        (
            "unlock2: made-up allocation",
            D3dkmtUnlock2 {
                device: env.device,
                allocation: D3dkmtHandle(0x4242_4240),
            }
            .as_bytes()
            .to_vec(),
            D3dkmtUnlock2::NR,
        ),
        (
            "mapgpuvirtualaddress: device as paging queue and allocation",
            D3dddiMapGpuVirtualAddress {
                paging_queue: env.device,
                allocation: env.device,
                size_in_pages: 1,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dddiMapGpuVirtualAddress::NR,
        ),
        (
            "reservegpuvirtualaddress: size 2^64 - 4096",
            D3dddiReserveGpuVirtualAddress {
                adapter: env.device,
                size: u64::MAX - 4095,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dddiReserveGpuVirtualAddress::NR,
        ),
        (
            "signalfromcpu: object_count 0x7fffffff",
            D3dkmtSignalSynchronizationObjectFromCpu {
                device: env.device,
                object_count: big,
                objects: env.at(LIST_AT),
                fence_values: env.at(DATA_AT),
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtSignalSynchronizationObjectFromCpu::NR,
        ),
        (
            "waitfromcpu: object_count 0",
            D3dkmtWaitForSynchronizationObjectFromCpu {
                device: env.device,
                object_count: 0,
                objects: env.at(LIST_AT),
                fence_values: env.at(DATA_AT),
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtWaitForSynchronizationObjectFromCpu::NR,
        ),
        (
            "waitfromcpu: a null fence in the list",
            D3dkmtWaitForSynchronizationObjectFromCpu {
                device: env.device,
                object_count: 1,
                objects: env.at(LIST_AT),
                fence_values: env.at(DATA_AT),
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtWaitForSynchronizationObjectFromCpu::NR,
        ),
        (
            "signalfromgpu2: context_count 0x7fffffff",
            D3dkmtSignalSynchronizationObjectFromGpu2 {
                object_count: 1,
                objects: env.at(LIST_AT),
                context_count: big,
                contexts: env.at(LIST_AT),
                fence_value: env.at(DATA_AT),
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtSignalSynchronizationObjectFromGpu2::NR,
        ),
        (
            "escape: 16 zero bytes (no dxvmm escape header)",
            D3dkmtEscape {
                adapter: env.adapter,
                device: env.device,
                priv_drv_data: env.at(DATA_AT),
                priv_drv_data_size: 16,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtEscape::NR,
        ),
        (
            "escape: size 0x7fffffff",
            D3dkmtEscape {
                adapter: env.adapter,
                device: env.device,
                priv_drv_data: env.at(DATA_AT),
                priv_drv_data_size: big,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtEscape::NR,
        ),
        (
            "createsynchronizationobject2: type 0",
            D3dkmtCreateSynchronizationObject2 {
                device: env.device,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            D3dkmtCreateSynchronizationObject2::NR,
        ),
    ];
    for (what, arg, nr) in cases {
        env.scratch.fill_from(&[0u8; SCRATCH]);
        let r = env.raw(nr, arg.len(), &arg);
        if tap.refused(what, r) {
            env.reset();
        }
    }
}

/// What every ioctl gets: bad argument pointers, a read-only argument,
/// sizes in the command word other than its struct's.
fn common_cases(tap: &mut Tap, env: &mut Env, t: &Target) {
    for (what, addr) in env.bad_addrs() {
        // SAFETY: a bad address the kernel cannot use (see bad_addrs).
        let r = unsafe { env.dxg.ioctl_raw(t.nr, t.size, addr as *mut _) };
        if tap.refused(&format!("{}: argument at {what}", t.label), r) {
            env.reset();
        }
    }
    if t.writes_back {
        let name = format!("{}: read-only argument", t.label);
        match Mapping::new(t.size, libc::PROT_READ | libc::PROT_WRITE) {
            Ok(ro) => {
                ro.fill_from(&(t.valid)(env));
                if ro.protect(libc::PROT_READ).is_ok() {
                    let before = objects(env).map(|o| o.devices);
                    // SAFETY: a read-only page: the kernel can read the
                    // argument but not write its answer.
                    let r = unsafe { env.dxg.ioctl_raw(t.nr, t.size, ro.ptr().cast()) };
                    if tap.refused(&name, r) {
                        env.reset();
                    }
                    // A call that fails must not leave behind what it made:
                    // the caller never saw a handle to release it with.
                    let after = objects(env).map(|o| o.devices);
                    if let (true, Ok(before), Ok(after)) =
                        (t.nr == D3dkmtCreateDevice::NR, before, after)
                    {
                        let name = format!("{}: read-only argument leaves no host device", t.label);
                        if after > before {
                            env.leaked_devices += after - before;
                            tap.not_ok(
                                &name,
                                &format!(
                                    "{} more device(s) on the host after the call failed",
                                    after - before
                                ),
                            );
                        } else {
                            tap.ok(&name);
                        }
                    }
                } else {
                    tap.not_ok(&name, "mprotect failed");
                }
            }
            Err(e) => tap.not_ok(&name, &format!("mmap: {e}")),
        }
    }
    let mut sizes = vec![0, t.size - 1, t.size + 1, t.size + 8, 4096, MAX_IOCTL_SIZE];
    sizes.dedup();
    for size in sizes {
        let arg = (t.valid)(env);
        let r = env.raw(t.nr, size, &arg);
        if tap.refused(
            &format!(
                "{}: size {size} in the ioctl number (struct is {})",
                t.label, t.size
            ),
            r,
        ) {
            env.reset();
        }
    }
}

fn enum_cases(tap: &mut Tap, env: &mut Env, v3: bool) {
    let label = if v3 { "enumadapters3" } else { "enumadapters2" };
    let call = |env: &Env, count: u32, adapters: u64| {
        if v3 {
            let mut a = enum3_arg(env);
            a.adapter_count = count;
            a.adapters = adapters;
            env.call(&a)
        } else {
            let mut a = enum2_arg(env);
            a.num_adapters = count;
            a.adapters = adapters;
            env.call(&a)
        }
    };
    // A null list with a count is a count query in WSL's ABI, not garbage.
    for (what, addr) in env.bad_addrs().into_iter().skip(1) {
        let r = call(env, D3DKMT_ADAPTERS_MAX, addr);
        if tap.refused(&format!("{label}: adapter list at {what}"), r) {
            env.reset();
        }
    }
    if let Ok(ro) = Mapping::new(
        D3DKMT_ADAPTERS_MAX as usize * D3dkmtAdapterInfo::SIZE,
        libc::PROT_READ,
    ) {
        let r = call(env, D3DKMT_ADAPTERS_MAX, ro.addr());
        if tap.refused(&format!("{label}: adapter list read-only"), r) {
            env.reset();
        }
    }
    // WSL's dxgkrnl refuses counts above D3DKMT_ADAPTERS_MAX with EINVAL;
    // a program written against it may rely on that.
    for count in [D3DKMT_ADAPTERS_MAX + 1, 0x8000_0000, u32::MAX] {
        let r = call(env, count, env.at(LIST_AT));
        if tap.refused(&format!("{label}: adapter count {count:#x}"), r) {
            env.reset();
        }
    }
    // Room for fewer adapters than there are (only testable with two).
    if env.adapters > 1 {
        let r = call(env, 1, env.at(LIST_AT));
        if tap.refused(
            &format!("{label}: room for 1 of {} adapters", env.adapters),
            r,
        ) {
            env.reset();
        }
    }
}

fn open_cases(tap: &mut Tap, env: &mut Env) {
    let l = env.luid;
    let luids = [
        ("zero LUID", WinLuid { a: 0, b: 0 }),
        ("all-ones LUID", WinLuid { a: !0, b: !0 }),
        (
            "neighbouring LUID",
            WinLuid {
                a: l.a.wrapping_add(1),
                b: l.b,
            },
        ),
        (
            "LUID with high bit flipped",
            WinLuid {
                a: l.a,
                b: l.b ^ 0x8000_0000,
            },
        ),
    ];
    for (what, luid) in luids {
        let r = env.dxg.open_adapter_from_luid_raw(luid);
        if let Ok(h) = r {
            let _ = env.dxg.close_adapter_raw(h);
        }
        tap.refused(&format!("openadapterfromluid: {what}"), r);
    }
}

/// Handles that name nothing the call may act on, for `label`'s ioctl.
fn wrong_handles(env: &Env, kind: &str) -> Vec<(String, D3dkmtHandle)> {
    let mut v: Vec<(String, D3dkmtHandle)> = JUNK_HANDLES
        .iter()
        .map(|(w, h)| (w.to_string(), D3dkmtHandle(*h)))
        .collect();
    if kind == "adapter" {
        v.push(("device handle as adapter".into(), env.device));
        if let Some(h) = env.closed_adapter() {
            v.push(("closed adapter handle".into(), h));
        }
    } else {
        v.push(("adapter handle as device".into(), env.adapter));
        if let Some(d) = env.destroyed_device() {
            v.push(("destroyed device handle".into(), d));
        }
    }
    v
}

fn close_cases(tap: &mut Tap, env: &mut Env) {
    for (what, h) in wrong_handles(env, "adapter") {
        if tap.refused(
            &format!("closeadapter: {what}"),
            env.dxg.close_adapter_raw(h),
        ) {
            env.reset();
        }
    }
}

fn destroy_cases(tap: &mut Tap, env: &mut Env) {
    for (what, h) in wrong_handles(env, "device") {
        if tap.refused(
            &format!("destroydevice: {what}"),
            env.dxg.destroy_device_raw(h),
        ) {
            env.reset();
        }
    }
}

fn create_cases(tap: &mut Tap, env: &mut Env) {
    for (what, h) in wrong_handles(env, "adapter") {
        let r = env.dxg.create_device_raw(h, Default::default());
        if let Ok(d) = r {
            let _ = env.dxg.destroy_device_raw(d);
        }
        tap.refused(&format!("createdevice: {what}"), r);
    }
}

fn qai_cases(tap: &mut Tap, env: &mut Env) {
    let mut data = |what: String, tweak: &dyn Fn(&mut D3dkmtQueryAdapterInfo)| {
        let mut a = qai_arg(env);
        tweak(&mut a);
        let r = env.call(&a);
        tap.refused(&format!("queryadapterinfo: {what}"), r);
    };
    for (what, addr) in env.bad_addrs() {
        data(format!("private data at {what}"), &|a| {
            a.private_data = addr
        });
    }
    let ro = Mapping::new(4096, libc::PROT_READ).ok();
    if let Some(ro) = &ro {
        let addr = ro.addr();
        data("private data read-only".into(), &|a| a.private_data = addr);
    }
    data("private data size 0".into(), &|a| a.private_data_size = 0);
    data(
        format!(
            "private data size {} for a {QAI_OBJECTS_SIZE}-byte answer",
            QAI_OBJECTS_SIZE - 1
        ),
        &|a| a.private_data_size = QAI_OBJECTS_SIZE - 1,
    );
    data("private data size 0x80000000".into(), &|a| {
        a.private_data_size = 0x8000_0000
    });
    data("private data size 0xffffffff".into(), &|a| {
        a.private_data_size = u32::MAX
    });
    data("unknown type 0x7ffffff0".into(), &|a| {
        a.r#type = 0x7fff_fff0
    });
    data("unknown dxvmm type 0x4458ffff".into(), &|a| {
        a.r#type = 0x4458_ffff
    });
    data("UMDRIVERPRIVATE with 4 bytes".into(), &|a| {
        a.r#type = kmtqaitype::UMDRIVERPRIVATE;
        a.private_data_size = 4;
    });
    for (what, h) in wrong_handles(env, "adapter") {
        let mut buf = [0u8; DxgvHostObjects::SIZE];
        let r = env
            .dxg
            .query_adapter_info(h, qai_type::HOST_OBJECTS, &mut buf);
        tap.refused(&format!("queryadapterinfo: {what}"), r);
    }
}

fn qvmi_cases(tap: &mut Tap, env: &mut Env) {
    for (what, h) in wrong_handles(env, "adapter") {
        let r = env
            .dxg
            .query_video_memory_info_raw(h, memory_segment_group::LOCAL, 0);
        tap.refused(&format!("queryvideomemoryinfo: {what}"), r);
    }
    type Tweak = fn(&mut D3dkmtQueryVideoMemoryInfo);
    let cases: [(&str, Tweak); 5] = [
        ("segment group 2", |a| a.memory_segment_group = 2),
        ("segment group 0xffffffff", |a| {
            a.memory_segment_group = u32::MAX
        }),
        ("process handle 1", |a| a.process = 1),
        ("process handle all ones", |a| a.process = u64::MAX),
        ("physical adapter index 0xffffffff", |a| {
            a.physical_adapter_index = u32::MAX
        }),
    ];
    for (what, tweak) in cases {
        let mut a = qvmi_arg(env);
        tweak(&mut a);
        let r = env.call(&a);
        tap.refused(&format!("queryvideomemoryinfo: {what}"), r);
    }
}

/// Numbers the driver does not serve must fail with ENOTTY; command words
/// of another type or direction must fail somehow.
fn unknown_cases(tap: &mut Tap, env: &mut Env) {
    for (what, nr, size) in [
        ("unused number 0x00", 0x00, 8),
        ("unused number 0x03", 0x03, 8),
        (
            "WSL's SIGNALSYNCHRONIZATIONOBJECT 0x11 (not served)",
            0x11,
            64,
        ),
        ("number 0x3f past the table", 0x3f, 8),
        ("number 0xff", 0xff, 8),
    ] {
        let r = env.raw(nr, size, &[0u8; 64]);
        tap.refused_with(&format!("unknown ioctl: {what}"), r, libc::ENOTTY);
    }
    let enum2_size = core::mem::size_of::<D3dkmtEnumAdapters2>();
    let arg = enum2_arg(env);
    env.scratch.fill_from(arg.as_bytes());
    let words = [
        (
            "ENUMADAPTERS2's number with type 'H'",
            iowr(DXG_IOCTL_TYPE + 1, 0x14, enum2_size),
        ),
        // _IO('G', 0x14): no direction, no size.
        ("ENUMADAPTERS2's number with no direction", Some(0x4714)),
        // _IOR('G', 0x14, 16): read-only direction.
        (
            "ENUMADAPTERS2's number with read direction only",
            dxg_cmd(0x14, enum2_size).map(|w| w & !0x4000_0000),
        ),
    ];
    for (what, word) in words {
        let Some(word) = word else {
            tap.not_ok(what, "cannot encode");
            continue;
        };
        // SAFETY: the argument is in our scratch mapping.
        let r = unsafe { env.dxg.ioctl_cmd(word, env.scratch.ptr().cast()) };
        if tap.refused(&format!("unknown ioctl: {what}"), r) {
            env.reset();
        }
    }
}

/// Two threads on one file: one opens adapters and creates, queries and
/// destroys devices on them, the other closes and destroys whatever handle
/// the first made last, at any moment. Calls may fail either way; the
/// driver must not crash, must still work afterwards, and must not keep a
/// device nobody can name (the final count checks that).
///
/// Runs after every fork of the suite: `sys::fork` relies on a
/// single-threaded process.
fn race_cases(tap: &mut Tap, env: &mut Env) {
    const ROUNDS: usize = 2000;
    let dxg = &env.dxg;
    let luid = env.luid;
    let adapter = AtomicU32::new(0);
    let device = AtomicU32::new(0);
    let done = AtomicBool::new(false);
    let (made, raced) = std::thread::scope(|s| {
        let maker = s.spawn(|| {
            let mut made = 0usize;
            for _ in 0..ROUNDS {
                let Ok(a) = dxg.open_adapter_from_luid_raw(luid) else {
                    continue;
                };
                adapter.store(a.0, Ordering::Relaxed);
                if let Ok(d) = dxg.create_device_raw(a, Default::default()) {
                    made += 1;
                    device.store(d.0, Ordering::Relaxed);
                    let _ = dxg.query_host_objects(a);
                    let _ = dxg.query_video_memory_info_raw(a, 0, 0);
                    let _ = dxg.destroy_device_raw(d);
                }
                let _ = dxg.close_adapter_raw(a);
            }
            done.store(true, Ordering::Relaxed);
            made
        });
        let breaker = s.spawn(|| {
            let mut raced = 0usize;
            while !done.load(Ordering::Relaxed) {
                let d = D3dkmtHandle(device.load(Ordering::Relaxed));
                let a = D3dkmtHandle(adapter.load(Ordering::Relaxed));
                raced += usize::from(dxg.destroy_device_raw(d).is_ok());
                raced += usize::from(dxg.close_adapter_raw(a).is_ok());
            }
            raced
        });
        (maker.join(), breaker.join())
    });
    match (made, raced) {
        (Ok(made), Ok(raced)) => tap.check(
            &format!(
                "race: {ROUNDS} open/create/destroy/close rounds against a thread closing their handles ({made} devices made, {raced} handles taken away)"
            ),
            made > 0,
            || "no device could be created".into(),
        ),
        _ => tap.check("race: threads", false, || "a thread panicked".into()),
    };
}

/// A valid call of each kind still works.
fn still_works(tap: &mut Tap, env: &mut Env, after: &str) {
    let name = format!("{after}: driver still works");
    let r = (|| -> Result<(), Error> {
        let list = env
            .dxg
            .enum_adapters3_raw(D3dkmtEnumAdaptersFilter::INCLUDE_COMPUTE_ONLY)?;
        for a in &list {
            env.dxg.close_adapter_raw(a.adapter_handle)?;
        }
        if list.len() != env.adapters {
            return Err(Error::BadAnswer {
                ioctl: D3dkmtEnumAdapters3::NAME,
                what: format!("{} adapters, {} before", list.len(), env.adapters),
            });
        }
        env.dxg.query_host_objects(env.adapter)?;
        let d = env.dxg.create_device_raw(env.adapter, Default::default())?;
        env.dxg.destroy_device_raw(d)?;
        env.dxg.query_video_memory_info_raw(env.adapter, 0, 0)?;
        Ok(())
    })();
    if tap.works(&name, r).is_none() {
        env.reset();
    }
}

/// A child that uses the file it inherited from its parent acts for the
/// parent's process: the driver must refuse it rather than let it use the
/// parent's handles.
fn inherited_file_case(tap: &mut Tap, dxg: &Dxg) {
    let name = "inherited file: a forked child's calls on its parent's file fail";
    match sys::fork() {
        Ok(Forked::Child) => {
            let r = dxg.enum_adapters3_raw(D3dkmtEnumAdaptersFilter::INCLUDE_COMPUTE_ONLY);
            sys::exit_child(if r.is_err() { 0 } else { 1 })
        }
        Ok(Forked::Parent(pid)) => match sys::wait(pid) {
            Ok(status) => {
                tap.check(name, sys::exited_ok(status), || {
                    format!("ENUMADAPTERS3 succeeded in the child (wait status {status:#x})")
                });
            }
            Err(e) => tap.not_ok(name, &e.to_string()),
        },
        Err(e) => tap.not_ok(name, &format!("fork: {e}")),
    }
}

/// Handles of another process: a child opens an adapter and creates a
/// device and sends their handles; none of our calls on them may succeed,
/// and the child's objects must survive them.
fn foreign_cases(tap: &mut Tap, dxg: &Dxg) {
    let (Ok(up), Ok(down)) = (Pipe::new(), Pipe::new()) else {
        tap.not_ok("foreign handles", "pipe failed");
        return;
    };
    let pid = match sys::fork() {
        Ok(Forked::Child) => foreign_child(&up, &down),
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => {
            tap.not_ok("foreign handles", &format!("fork: {e}"));
            return;
        }
    };
    let mut msg = [0u8; 8];
    let got = sys::read_full(&up.read, &mut msg, Duration::from_secs(30));
    let adapter = D3dkmtHandle(u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]));
    let device = D3dkmtHandle(u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]));
    if !matches!(got, Ok(8)) || adapter.is_null() || device.is_null() {
        tap.not_ok(
            "foreign handles",
            &format!("the child could not set up ({got:?})"),
        );
        let _ = sys::kill9(pid);
        let _ = sys::wait(pid);
        return;
    }
    let mut buf = [0u8; DxgvHostObjects::SIZE];
    tap.refused(
        "foreign handles: queryadapterinfo on the other process's adapter",
        dxg.query_adapter_info(adapter, qai_type::HOST_OBJECTS, &mut buf),
    );
    let r = dxg.create_device_raw(adapter, Default::default());
    if let Ok(d) = r {
        let _ = dxg.destroy_device_raw(d);
    }
    tap.refused(
        "foreign handles: createdevice on the other process's adapter",
        r,
    );
    tap.refused(
        "foreign handles: queryvideomemoryinfo on the other process's adapter",
        dxg.query_video_memory_info_raw(adapter, 0, 0),
    );
    tap.refused(
        "foreign handles: destroydevice of the other process's device",
        dxg.destroy_device_raw(device),
    );
    tap.refused(
        "foreign handles: closeadapter of the other process's adapter",
        dxg.close_adapter_raw(adapter),
    );
    let _ = sys::write_all(&down.write, b"g");
    match sys::wait(pid) {
        Ok(status) => {
            tap.check(
                "foreign handles: the owner's objects survived",
                sys::exited_ok(status),
                || format!("the child's own calls failed afterwards (wait status {status:#x})"),
            );
        }
        Err(e) => tap.not_ok(
            "foreign handles: the owner's objects survived",
            &e.to_string(),
        ),
    }
}

fn foreign_child(up: &Pipe, down: &Pipe) -> ! {
    // Its own open of the driver, so that it is a process of its own to the
    // driver rather than a user of the parent's file.
    let setup = || -> Result<(Dxg, D3dkmtHandle, D3dkmtHandle), Error> {
        let dxg = Dxg::open()?;
        let list = dxg.enum_adapters3_raw(D3dkmtEnumAdaptersFilter::INCLUDE_COMPUTE_ONLY)?;
        let adapter = list
            .first()
            .map(|a| a.adapter_handle)
            .ok_or(Error::BadAnswer {
                ioctl: D3dkmtEnumAdapters3::NAME,
                what: "no adapters".into(),
            })?;
        let device = dxg.create_device_raw(adapter, Default::default())?;
        Ok((dxg, adapter, device))
    };
    let Ok((dxg, adapter, device)) = setup() else {
        let _ = sys::write_all(&up.write, &[0; 8]);
        sys::exit_child(2);
    };
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&adapter.0.to_le_bytes());
    msg[4..].copy_from_slice(&device.0.to_le_bytes());
    let _ = sys::write_all(&up.write, &msg);
    let mut go = [0u8; 1];
    let _ = sys::read_full(&down.read, &mut go, Duration::from_secs(60));
    let ok = dxg.query_host_objects(adapter).is_ok()
        && dxg.destroy_device_raw(device).is_ok()
        && dxg.close_adapter_raw(adapter).is_ok();
    sys::exit_child(if ok { 0 } else { 3 });
}

fn objects(env: &Env) -> Result<DxgvHostObjects, Error> {
    env.dxg.query_host_objects(env.adapter)
}

/// Runs the suite; true when every case passed.
pub fn run() -> bool {
    let mut tap = Tap::new();
    let dxg = match Dxg::open() {
        Ok(d) => d,
        Err(e) => {
            tap.not_ok("open /dev/dxg", &e.to_string());
            return tap.finish();
        }
    };
    // First, while this process holds no handle at all, so that a foreign
    // handle cannot equal one of ours by chance.
    foreign_cases(&mut tap, &dxg);
    inherited_file_case(&mut tap, &dxg);

    let mut env = match Env::new(dxg) {
        Ok(env) => env,
        Err(e) => {
            tap.not_ok("setup (adapter and device)", &e);
            return tap.finish();
        }
    };
    // Devices on the host before the suite, less the env's own.
    let before = objects(&env).ok().map(|o| o.devices.saturating_sub(1));

    for t in targets() {
        common_cases(&mut tap, &mut env, &t);
        match t.label {
            "enumadapters2" => enum_cases(&mut tap, &mut env, false),
            "enumadapters3" => enum_cases(&mut tap, &mut env, true),
            "openadapterfromluid" => open_cases(&mut tap, &mut env),
            "closeadapter" => close_cases(&mut tap, &mut env),
            "queryadapterinfo" => qai_cases(&mut tap, &mut env),
            "createdevice" => create_cases(&mut tap, &mut env),
            "destroydevice" => destroy_cases(&mut tap, &mut env),
            "queryvideomemoryinfo" => qvmi_cases(&mut tap, &mut env),
            _ => {}
        }
        still_works(&mut tap, &mut env, t.label);
    }
    for t in compute_targets() {
        common_cases(&mut tap, &mut env, &t);
        still_works(&mut tap, &mut env, t.label);
    }
    compute_cases(&mut tap, &mut env);
    still_works(&mut tap, &mut env, "compute garbage");
    unknown_cases(&mut tap, &mut env);
    still_works(&mut tap, &mut env, "unknown ioctls");
    race_cases(&mut tap, &mut env);
    still_works(&mut tap, &mut env, "race");

    // Nothing the garbage calls did may have left a device behind on the
    // host. Other processes' devices would count too; the guest runs none.
    let name = "no devices left on the host";
    let _ = env.dxg.destroy_device_raw(env.device);
    match before {
        Some(before) => {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match objects(&env) {
                    Ok(o) if o.devices == before + env.leaked_devices => {
                        tap.ok(&format!("{name} ({})", ObjectsReport::from(&o).line()));
                        break;
                    }
                    Ok(o) if Instant::now() >= deadline => {
                        tap.not_ok(
                            name,
                            &format!(
                                "{} devices, {before} before the suite and {} reported above",
                                o.devices, env.leaked_devices
                            ),
                        );
                        break;
                    }
                    Err(e) => {
                        tap.not_ok(name, &e.to_string());
                        break;
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        None => tap.not_ok(name, "HOST_OBJECTS failed before the suite"),
    }
    let _ = env.dxg.close_adapter_raw(env.adapter);
    tap.finish()
}
