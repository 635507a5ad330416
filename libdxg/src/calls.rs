//! The compute profile's ioctls (protocol §2.6) as checked calls on plain
//! handle values: allocations and their residency, LOCK2/UNLOCK2, GPU
//! virtual addresses, contexts, hardware queues, submission, escapes and
//! monitored fences.
//!
//! Like the adapter calls in `dxg.rs`, these take handles as values so that
//! a test can pass a destroyed or foreign one, and check what the driver
//! answers (counts, null handles on success) before returning it. The owner
//! types of the compute API ([`crate::Gpu`] and friends) sit on top.
//!
//! Every user pointer a call hands the driver is into memory the call owns
//! for its duration (a local struct or `Vec`), except where a function is
//! `unsafe` and says otherwise.

use dxvmm_protocol::abi::{
    escape_type, syncobject_type, D3dddiAllocationInfo2, D3dddiCreateContextFlags,
    D3dddiCreateHwQueueFlags, D3dddiDestroyPagingQueue, D3dddiGpuVaProtectionType,
    D3dddiMakeResident, D3dddiMapGpuVirtualAddress, D3dddiReserveGpuVirtualAddress,
    D3dddiSynchronizationObjectInfo2, D3dddiWaitForSynchronizationObjectFromCpuFlags,
    D3dddicbSignalFlags, D3dkmtCreateAllocation, D3dkmtCreateAllocationFlags,
    D3dkmtCreateContextVirtual, D3dkmtCreateHwQueue, D3dkmtCreatePagingQueue,
    D3dkmtCreateSynchronizationObject2, D3dkmtDestroyAllocation2, D3dkmtDestroyContext,
    D3dkmtDestroyHwQueue, D3dkmtDestroySynchronizationObject, D3dkmtEscape, D3dkmtEvict,
    D3dkmtFreeGpuVirtualAddress, D3dkmtHandle, D3dkmtLock2, D3dkmtQueryAllocationResidency,
    D3dkmtSignalSynchronizationObjectFromCpu, D3dkmtSignalSynchronizationObjectFromGpu,
    D3dkmtSignalSynchronizationObjectFromGpu2, D3dkmtSubmitCommand, D3dkmtSubmitCommandToHwQueue,
    D3dkmtUnlock2, D3dkmtWaitForSynchronizationObjectFromCpu,
    D3dkmtWaitForSynchronizationObjectFromGpu, MonitoredFenceInfo, D3DDDI_MAX_OBJECT_SIGNALED,
    D3DDDI_MAX_OBJECT_WAITED_ON, D3DKMT_CREATEALLOCATION_MAX,
};
use dxvmm_protocol::escape::DxgvAllocationDesc;

use crate::dxg::Dxg;
use crate::error::{Error, Result};
use crate::ioctl::IoctlArg;

/// `D3DDDI_ALLOCATIONPRIORITY_NORMAL`.
pub const ALLOCATION_PRIORITY_NORMAL: u32 = 0x7800_0000;

/// A created monitored fence: its handle and where the driver mapped its
/// value (read-only) in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncObjectInfo {
    pub handle: D3dkmtHandle,
    /// User address of the fence's u64 slot; 0 if the driver mapped none.
    pub cpu_va: u64,
}

/// A created paging queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingQueueInfo {
    pub handle: D3dkmtHandle,
    pub sync_object: D3dkmtHandle,
    pub fence_cpu_va: u64,
}

/// A created hardware queue and its progress fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwQueueInfo {
    pub handle: D3dkmtHandle,
    pub progress_fence: D3dkmtHandle,
    pub progress_fence_cpu_va: u64,
}

/// A GPU VA operation's result: the address and the paging fence value
/// after which it is in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuVa {
    pub va: u64,
    pub paging_fence_value: u64,
}

fn len_u32<T: IoctlArg>(n: usize, what: &'static str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::BadArgument {
        ioctl: T::NAME,
        what,
    })
}

fn null_answer<T: IoctlArg>(what: &str) -> Error {
    Error::BadAnswer {
        ioctl: T::NAME,
        what: format!("success with a null {what}"),
    }
}

fn ptr_of<T>(s: &[T]) -> u64 {
    if s.is_empty() {
        0
    } else {
        s.as_ptr() as u64
    }
}

impl Dxg {
    // --- Allocations ------------------------------------------------------

    /// CREATEALLOCATION of one allocation per description, backed by pages
    /// the driver allocates (no `sysmem`). Returns the handles in order.
    pub fn create_allocations_raw(
        &self,
        device: D3dkmtHandle,
        descs: &[DxgvAllocationDesc],
    ) -> Result<Vec<D3dkmtHandle>> {
        let sysmem = vec![0u64; descs.len()];
        // SAFETY: no sysmem pointers: the driver allocates the pages.
        unsafe { self.create_allocations_sysmem_raw(device, descs, &sysmem) }
    }

    /// CREATEALLOCATION with `sysmem[i]` as the user pages of allocation `i`
    /// (0: pages of the driver's).
    ///
    /// # Safety
    ///
    /// Each non-zero `sysmem` address must be page-aligned memory of this
    /// process, at least the allocation's size rounded up to 4 KiB, that
    /// nothing else uses while the allocation lives: the driver pins it and
    /// the host writes the GPU's contents into it at every LOCK2.
    pub unsafe fn create_allocations_sysmem_raw(
        &self,
        device: D3dkmtHandle,
        descs: &[DxgvAllocationDesc],
        sysmem: &[u64],
    ) -> Result<Vec<D3dkmtHandle>> {
        let name = D3dkmtCreateAllocation::NAME;
        if descs.len() != sysmem.len() {
            return Err(Error::BadArgument {
                ioctl: name,
                what: "one sysmem address per allocation",
            });
        }
        if descs.is_empty() || descs.len() > D3DKMT_CREATEALLOCATION_MAX as usize {
            return Err(Error::BadArgument {
                ioctl: name,
                what: "1 to 1024 allocations",
            });
        }
        // The driver may write each allocation's private data back (the
        // host echoes it): a copy of ours, writable.
        let mut privs = descs.to_vec();
        let mut infos: Vec<D3dddiAllocationInfo2> = privs
            .iter_mut()
            .zip(sysmem)
            .map(|(d, &sys)| D3dddiAllocationInfo2 {
                sysmem: sys,
                priv_drv_data: d as *mut DxgvAllocationDesc as u64,
                priv_drv_data_size: DxgvAllocationDesc::SIZE as u32,
                ..Default::default()
            })
            .collect();
        let mut flags = D3dkmtCreateAllocationFlags::default();
        if sysmem.iter().any(|&s| s != 0) {
            flags = flags.with(D3dkmtCreateAllocationFlags::EXISTING_SYSMEM);
        }
        let mut arg = D3dkmtCreateAllocation {
            device,
            alloc_count: infos.len() as u32,
            allocation_info: infos.as_mut_ptr() as u64,
            flags,
            ..Default::default()
        };
        // SAFETY: `allocation_info` and each `priv_drv_data` point into
        // vectors owned here, of types valid for any bytes; the sysmem
        // pages are the caller's contract.
        unsafe { self.ioctl(&mut arg)? };
        let handles: Vec<D3dkmtHandle> = infos.iter().map(|i| i.allocation).collect();
        if handles.iter().any(|h| h.is_null()) {
            return Err(null_answer::<D3dkmtCreateAllocation>("allocation handle"));
        }
        Ok(handles)
    }

    /// DESTROYALLOCATION2 of `allocations`.
    pub fn destroy_allocations_raw(
        &self,
        device: D3dkmtHandle,
        allocations: &[D3dkmtHandle],
    ) -> Result<()> {
        let mut arg = D3dkmtDestroyAllocation2 {
            device,
            allocations: ptr_of(allocations),
            alloc_count: len_u32::<D3dkmtDestroyAllocation2>(allocations.len(), "too many")?,
            ..Default::default()
        };
        // SAFETY: the driver only reads the handle list, which we own.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    /// QUERYALLOCATIONRESIDENCY: one `residency_status` value per allocation.
    pub fn query_allocation_residency_raw(
        &self,
        device: D3dkmtHandle,
        allocations: &[D3dkmtHandle],
    ) -> Result<Vec<u32>> {
        let mut status = vec![0u32; allocations.len()];
        let mut arg = D3dkmtQueryAllocationResidency {
            device,
            allocations: ptr_of(allocations),
            allocation_count: len_u32::<D3dkmtQueryAllocationResidency>(
                allocations.len(),
                "too many",
            )?,
            residency_status: ptr_of(&status),
            ..Default::default()
        };
        // SAFETY: `residency_status` is ours for `allocation_count` u32s.
        unsafe { self.ioctl(&mut arg)? };
        let _ = &mut status;
        Ok(status)
    }

    /// MAKERESIDENT on paging queue `paging_queue`: the paging fence value
    /// after which the allocations are resident.
    pub fn make_resident_raw(
        &self,
        paging_queue: D3dkmtHandle,
        allocations: &[D3dkmtHandle],
    ) -> Result<u64> {
        let priorities = vec![ALLOCATION_PRIORITY_NORMAL; allocations.len()];
        let mut arg = D3dddiMakeResident {
            paging_queue,
            alloc_count: len_u32::<D3dddiMakeResident>(allocations.len(), "too many")?,
            allocation_list: ptr_of(allocations),
            priority_list: ptr_of(&priorities),
            ..Default::default()
        };
        // SAFETY: both lists are ours and only read.
        unsafe { self.ioctl(&mut arg)? };
        Ok(arg.paging_fence_value)
    }

    /// EVICT: the bytes the driver says could still be trimmed.
    pub fn evict_raw(&self, device: D3dkmtHandle, allocations: &[D3dkmtHandle]) -> Result<u64> {
        let mut arg = D3dkmtEvict {
            device,
            alloc_count: len_u32::<D3dkmtEvict>(allocations.len(), "too many")?,
            allocations: ptr_of(allocations),
            ..Default::default()
        };
        // SAFETY: the handle list is ours and only read.
        unsafe { self.ioctl(&mut arg)? };
        Ok(arg.num_bytes_to_trim)
    }

    /// LOCK2: the user address of the allocation's pages in this process,
    /// made current (the host copies the GPU's contents into them first).
    ///
    /// The host writes those pages during this call: whoever holds a Rust
    /// reference into them must not call it (the owner types make that
    /// impossible; see [`crate::Buffer`]).
    pub fn lock2_raw(&self, device: D3dkmtHandle, allocation: D3dkmtHandle) -> Result<u64> {
        let mut arg = D3dkmtLock2 {
            device,
            allocation,
            ..Default::default()
        };
        // SAFETY: no user pointers in the argument.
        unsafe { self.ioctl(&mut arg)? };
        if arg.data == 0 {
            return Err(null_answer::<D3dkmtLock2>("address"));
        }
        Ok(arg.data)
    }

    /// UNLOCK2: the CPU may have written the pages; the host uploads them
    /// before the GPU next uses the allocation.
    pub fn unlock2_raw(&self, device: D3dkmtHandle, allocation: D3dkmtHandle) -> Result<()> {
        self.call(&mut D3dkmtUnlock2 { device, allocation })?;
        Ok(())
    }

    // --- Paging queues and GPU virtual addresses --------------------------

    /// CREATEPAGINGQUEUE on `device`.
    pub fn create_paging_queue_raw(&self, device: D3dkmtHandle) -> Result<PagingQueueInfo> {
        let mut arg = D3dkmtCreatePagingQueue {
            device,
            ..Default::default()
        };
        // SAFETY: no user pointers in the argument.
        unsafe { self.ioctl(&mut arg)? };
        if arg.paging_queue.is_null() {
            return Err(null_answer::<D3dkmtCreatePagingQueue>("paging queue"));
        }
        Ok(PagingQueueInfo {
            handle: arg.paging_queue,
            sync_object: arg.sync_object,
            fence_cpu_va: arg.fence_cpu_virtual_address,
        })
    }

    /// DESTROYPAGINGQUEUE on any handle value.
    pub fn destroy_paging_queue_raw(&self, paging_queue: D3dkmtHandle) -> Result<()> {
        self.call(&mut D3dddiDestroyPagingQueue { paging_queue })?;
        Ok(())
    }

    /// RESERVEGPUVIRTUALADDRESS of `size` bytes at `base` (0: anywhere in
    /// `[minimum, maximum)`, 0 = no bound). `owner` is the device (dxgkrnl
    /// also takes an adapter handle there).
    pub fn reserve_gpu_va_raw(
        &self,
        owner: D3dkmtHandle,
        base: u64,
        minimum: u64,
        maximum: u64,
        size: u64,
    ) -> Result<GpuVa> {
        let mut arg = D3dddiReserveGpuVirtualAddress {
            adapter: owner,
            base_address: base,
            minimum_address: minimum,
            maximum_address: maximum,
            size,
            ..Default::default()
        };
        // SAFETY: no user pointers in the argument.
        unsafe { self.ioctl(&mut arg)? };
        if arg.virtual_address == 0 {
            return Err(null_answer::<D3dddiReserveGpuVirtualAddress>("address"));
        }
        Ok(GpuVa {
            va: arg.virtual_address,
            paging_fence_value: arg.paging_fence_value,
        })
    }

    /// MAPGPUVIRTUALADDRESS: `size_in_pages` pages of `allocation` from
    /// `offset_in_pages`, at `base` (inside a reservation) or, with base 0,
    /// where the host chooses in `[minimum, maximum)`.
    #[allow(clippy::too_many_arguments)]
    pub fn map_gpu_va_raw(
        &self,
        paging_queue: D3dkmtHandle,
        allocation: D3dkmtHandle,
        base: u64,
        minimum: u64,
        maximum: u64,
        offset_in_pages: u64,
        size_in_pages: u64,
    ) -> Result<GpuVa> {
        let mut arg = D3dddiMapGpuVirtualAddress {
            paging_queue,
            base_address: base,
            minimum_address: minimum,
            maximum_address: maximum,
            allocation,
            offset_in_pages,
            size_in_pages,
            protection: D3dddiGpuVaProtectionType::WRITE,
            ..Default::default()
        };
        // SAFETY: no user pointers in the argument.
        unsafe { self.ioctl(&mut arg)? };
        if arg.virtual_address == 0 {
            return Err(null_answer::<D3dddiMapGpuVirtualAddress>("address"));
        }
        Ok(GpuVa {
            va: arg.virtual_address,
            paging_fence_value: arg.paging_fence_value,
        })
    }

    /// FREEGPUVIRTUALADDRESS of `[base, base + size)`; `owner` as in
    /// [`Dxg::reserve_gpu_va_raw`].
    pub fn free_gpu_va_raw(&self, owner: D3dkmtHandle, base: u64, size: u64) -> Result<()> {
        let mut arg = D3dkmtFreeGpuVirtualAddress {
            adapter: owner,
            reserved: 0,
            base_address: base,
            size,
        };
        // SAFETY: no user pointers in the argument.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    // --- Contexts and hardware queues -------------------------------------

    /// CREATECONTEXTVIRTUAL on node 0 of `device`.
    pub fn create_context_raw(
        &self,
        device: D3dkmtHandle,
        flags: D3dddiCreateContextFlags,
    ) -> Result<D3dkmtHandle> {
        let mut arg = D3dkmtCreateContextVirtual {
            device,
            flags,
            ..Default::default()
        };
        // SAFETY: no private data: the only pointer is null.
        unsafe { self.ioctl(&mut arg)? };
        if arg.context.is_null() {
            return Err(null_answer::<D3dkmtCreateContextVirtual>("context"));
        }
        Ok(arg.context)
    }

    /// DESTROYCONTEXT on any handle value.
    pub fn destroy_context_raw(&self, context: D3dkmtHandle) -> Result<()> {
        self.call(&mut D3dkmtDestroyContext { context })?;
        Ok(())
    }

    /// CREATEHWQUEUE on `context`.
    pub fn create_hw_queue_raw(&self, context: D3dkmtHandle) -> Result<HwQueueInfo> {
        let mut arg = D3dkmtCreateHwQueue {
            context,
            flags: D3dddiCreateHwQueueFlags::default(),
            ..Default::default()
        };
        // SAFETY: no private data: the only pointer is null.
        unsafe { self.ioctl(&mut arg)? };
        if arg.queue.is_null() || arg.queue_progress_fence.is_null() {
            return Err(null_answer::<D3dkmtCreateHwQueue>(
                "queue or progress fence",
            ));
        }
        Ok(HwQueueInfo {
            handle: arg.queue,
            progress_fence: arg.queue_progress_fence,
            progress_fence_cpu_va: arg.queue_progress_fence_cpu_va,
        })
    }

    /// DESTROYHWQUEUE on any handle value.
    pub fn destroy_hw_queue_raw(&self, queue: D3dkmtHandle) -> Result<()> {
        self.call(&mut D3dkmtDestroyHwQueue { queue })?;
        Ok(())
    }

    // --- Submission and escapes -------------------------------------------

    /// SUBMITCOMMAND of the command stream at GPU VA `va`, `length` bytes,
    /// to `context`.
    pub fn submit_command_raw(&self, context: D3dkmtHandle, va: u64, length: u32) -> Result<()> {
        let mut arg = D3dkmtSubmitCommand {
            command_buffer: va,
            command_length: length,
            broadcast_context_count: 1,
            ..Default::default()
        };
        arg.broadcast_context[0] = context;
        // SAFETY: `command_buffer` is a GPU VA, which the driver passes to
        // the host without touching; no other pointer is set.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    /// SUBMITCOMMANDTOHWQUEUE: the stream at `va` on `queue`, then its
    /// progress fence to `progress_value`.
    pub fn submit_to_hw_queue_raw(
        &self,
        queue: D3dkmtHandle,
        progress_value: u64,
        va: u64,
        length: u32,
    ) -> Result<()> {
        let mut arg = D3dkmtSubmitCommandToHwQueue {
            hwqueue: queue,
            hwqueue_progress_fence_id: progress_value,
            command_buffer: va,
            command_length: length,
            ..Default::default()
        };
        // SAFETY: as in submit_command_raw.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    /// ESCAPE of type DRIVERPRIVATE with `data` as the in/out private data.
    pub fn escape_raw(
        &self,
        adapter: D3dkmtHandle,
        device: D3dkmtHandle,
        data: &mut [u8],
    ) -> Result<()> {
        let mut arg = D3dkmtEscape {
            adapter,
            device,
            r#type: escape_type::DRIVERPRIVATE,
            priv_drv_data: data.as_mut_ptr() as u64,
            priv_drv_data_size: len_u32::<D3dkmtEscape>(data.len(), "escape over 4 GiB")?,
            ..Default::default()
        };
        // SAFETY: `priv_drv_data` is `data`, ours for its length, any bytes.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    // --- Monitored fences -------------------------------------------------

    /// CREATESYNCHRONIZATIONOBJECT2: a monitored fence at `initial`.
    pub fn create_monitored_fence_raw(
        &self,
        device: D3dkmtHandle,
        initial: u64,
    ) -> Result<SyncObjectInfo> {
        self.create_sync_object_raw(device, syncobject_type::MONITORED_FENCE, initial)
    }

    /// CREATESYNCHRONIZATIONOBJECT2 of any type (others than monitored
    /// fences are refused by dxvmm; tests ask anyway).
    pub fn create_sync_object_raw(
        &self,
        device: D3dkmtHandle,
        ty: u32,
        initial: u64,
    ) -> Result<SyncObjectInfo> {
        let mut info = D3dddiSynchronizationObjectInfo2 {
            r#type: ty,
            ..Default::default()
        };
        info.set_monitored_fence(MonitoredFenceInfo {
            initial_fence_value: initial,
            ..Default::default()
        });
        let mut arg = D3dkmtCreateSynchronizationObject2 {
            device,
            info,
            ..Default::default()
        };
        // SAFETY: the union holds values, not user pointers.
        unsafe { self.ioctl(&mut arg)? };
        if arg.sync_object.is_null() {
            return Err(null_answer::<D3dkmtCreateSynchronizationObject2>(
                "sync object",
            ));
        }
        Ok(SyncObjectInfo {
            handle: arg.sync_object,
            cpu_va: arg.info.monitored_fence().fence_cpu_virtual_address,
        })
    }

    /// DESTROYSYNCHRONIZATIONOBJECT on any handle value.
    pub fn destroy_sync_object_raw(&self, sync_object: D3dkmtHandle) -> Result<()> {
        self.call(&mut D3dkmtDestroySynchronizationObject { sync_object })?;
        Ok(())
    }

    /// SIGNALSYNCHRONIZATIONOBJECTFROMCPU: each fence to its value now.
    pub fn signal_from_cpu_raw(
        &self,
        device: D3dkmtHandle,
        objects: &[D3dkmtHandle],
        values: &[u64],
    ) -> Result<()> {
        let count = pair_count::<D3dkmtSignalSynchronizationObjectFromCpu>(
            objects,
            values,
            D3DDDI_MAX_OBJECT_SIGNALED,
        )?;
        let mut arg = D3dkmtSignalSynchronizationObjectFromCpu {
            device,
            object_count: count,
            objects: ptr_of(objects),
            fence_values: ptr_of(values),
            flags: D3dddicbSignalFlags::default(),
            _pad0: 0,
        };
        // SAFETY: both lists are ours and only read.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    /// SIGNALSYNCHRONIZATIONOBJECTFROMGPU: each fence to its value after
    /// `context`'s earlier work.
    pub fn signal_from_gpu_raw(
        &self,
        context: D3dkmtHandle,
        objects: &[D3dkmtHandle],
        values: &[u64],
    ) -> Result<()> {
        let count = pair_count::<D3dkmtSignalSynchronizationObjectFromGpu>(
            objects,
            values,
            D3DDDI_MAX_OBJECT_SIGNALED,
        )?;
        let mut arg = D3dkmtSignalSynchronizationObjectFromGpu {
            context,
            object_count: count,
            objects: ptr_of(objects),
            monitored_fence_values: ptr_of(values),
            ..Default::default()
        };
        // SAFETY: both lists are ours and only read.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    /// SIGNALSYNCHRONIZATIONOBJECTFROMGPU2: each fence to its value after
    /// the earlier work of every context in `contexts`.
    pub fn signal_from_gpu2_raw(
        &self,
        contexts: &[D3dkmtHandle],
        objects: &[D3dkmtHandle],
        values: &[u64],
    ) -> Result<()> {
        let count = pair_count::<D3dkmtSignalSynchronizationObjectFromGpu2>(
            objects,
            values,
            D3DDDI_MAX_OBJECT_SIGNALED,
        )?;
        let mut arg = D3dkmtSignalSynchronizationObjectFromGpu2 {
            object_count: count,
            objects: ptr_of(objects),
            context_count: len_u32::<D3dkmtSignalSynchronizationObjectFromGpu2>(
                contexts.len(),
                "too many contexts",
            )?,
            contexts: ptr_of(contexts),
            // The union's `monitored_fence_values` member: a pointer.
            fence_value: ptr_of(values),
            ..Default::default()
        };
        // SAFETY: the three lists are ours and only read.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    /// WAITFORSYNCHRONIZATIONOBJECTFROMCPU. With `async_event` 0 the call
    /// blocks until the fences reach their values (all, or any with
    /// `wait_any`); with an eventfd it returns at once and the driver
    /// signals the eventfd then. A blocking wait fails with `ENOENT` when
    /// one of its fences is destroyed (by itself, or with its device,
    /// context or queue) before the wait returns (protocol §2.6.8).
    pub fn wait_from_cpu_raw(
        &self,
        device: D3dkmtHandle,
        objects: &[D3dkmtHandle],
        values: &[u64],
        wait_any: bool,
        async_event: u64,
    ) -> Result<()> {
        let count = pair_count::<D3dkmtWaitForSynchronizationObjectFromCpu>(
            objects,
            values,
            D3DDDI_MAX_OBJECT_WAITED_ON,
        )?;
        let mut flags = D3dddiWaitForSynchronizationObjectFromCpuFlags::default();
        if wait_any {
            flags = flags.with(D3dddiWaitForSynchronizationObjectFromCpuFlags::WAIT_ANY);
        }
        let mut arg = D3dkmtWaitForSynchronizationObjectFromCpu {
            device,
            object_count: count,
            objects: ptr_of(objects),
            fence_values: ptr_of(values),
            async_event,
            flags,
            _pad0: 0,
        };
        // SAFETY: both lists are ours and only read; `async_event` is a
        // file descriptor number, not a pointer.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }

    /// WAITFORSYNCHRONIZATIONOBJECTFROMGPU: `context`'s later work waits
    /// until each fence reaches its value.
    pub fn wait_from_gpu_raw(
        &self,
        context: D3dkmtHandle,
        objects: &[D3dkmtHandle],
        values: &[u64],
    ) -> Result<()> {
        let count = pair_count::<D3dkmtWaitForSynchronizationObjectFromGpu>(
            objects,
            values,
            D3DDDI_MAX_OBJECT_WAITED_ON,
        )?;
        let mut arg = D3dkmtWaitForSynchronizationObjectFromGpu {
            context,
            object_count: count,
            objects: ptr_of(objects),
            monitored_fence_values: ptr_of(values),
            ..Default::default()
        };
        // SAFETY: both lists are ours and only read.
        unsafe { self.ioctl(&mut arg)? };
        Ok(())
    }
}

/// `objects` and `values` must pair up, 1 to `max` of them.
fn pair_count<T: IoctlArg>(objects: &[D3dkmtHandle], values: &[u64], max: u32) -> Result<u32> {
    if objects.len() != values.len() {
        return Err(Error::BadArgument {
            ioctl: T::NAME,
            what: "one value per object",
        });
    }
    if objects.is_empty() || objects.len() > max as usize {
        return Err(Error::BadArgument {
            ioctl: T::NAME,
            what: "1 to 32 objects",
        });
    }
    Ok(objects.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Errno;

    #[test]
    fn arguments_that_cannot_be_encoded_fail_before_the_driver() {
        let null = Dxg::open_path("/dev/null").unwrap();
        let h = D3dkmtHandle(0x40);
        let err = null.create_allocations_raw(h, &[]).unwrap_err();
        assert!(matches!(err, Error::BadArgument { .. }), "{err}");
        let err = null.signal_from_cpu_raw(h, &[h], &[]).unwrap_err();
        assert!(err.to_string().contains("one value per object"), "{err}");
        let err = null.wait_from_cpu_raw(h, &[], &[], false, 0).unwrap_err();
        assert!(err.to_string().contains("1 to 32"), "{err}");
        let many = vec![h; 33];
        let vals = vec![1; 33];
        assert!(null.wait_from_gpu_raw(h, &many, &vals).is_err());
    }

    #[test]
    fn every_call_names_its_ioctl() {
        let null = Dxg::open_path("/dev/null").unwrap();
        let h = D3dkmtHandle(0x40);
        let desc = DxgvAllocationDesc {
            size: 4096,
            alignment: 0,
            flags: 1,
        };
        let cases: Vec<(&str, Error)> = vec![
            (
                "LX_DXCREATEALLOCATION",
                null.create_allocations_raw(h, &[desc]).unwrap_err(),
            ),
            (
                "LX_DXDESTROYALLOCATION2",
                null.destroy_allocations_raw(h, &[h]).unwrap_err(),
            ),
            (
                "LX_DXQUERYALLOCATIONRESIDENCY",
                null.query_allocation_residency_raw(h, &[h]).unwrap_err(),
            ),
            (
                "LX_DXMAKERESIDENT",
                null.make_resident_raw(h, &[h]).unwrap_err(),
            ),
            ("LX_DXEVICT", null.evict_raw(h, &[h]).unwrap_err()),
            ("LX_DXLOCK2", null.lock2_raw(h, h).unwrap_err()),
            ("LX_DXUNLOCK2", null.unlock2_raw(h, h).unwrap_err()),
            (
                "LX_DXCREATEPAGINGQUEUE",
                null.create_paging_queue_raw(h).unwrap_err(),
            ),
            (
                "LX_DXRESERVEGPUVIRTUALADDRESS",
                null.reserve_gpu_va_raw(h, 0, 0, 0, 4096).unwrap_err(),
            ),
            (
                "LX_DXMAPGPUVIRTUALADDRESS",
                null.map_gpu_va_raw(h, h, 0, 0, 0, 0, 1).unwrap_err(),
            ),
            (
                "LX_DXFREEGPUVIRTUALADDRESS",
                null.free_gpu_va_raw(h, 1 << 32, 4096).unwrap_err(),
            ),
            (
                "LX_DXCREATECONTEXTVIRTUAL",
                null.create_context_raw(h, Default::default()).unwrap_err(),
            ),
            (
                "LX_DXDESTROYCONTEXT",
                null.destroy_context_raw(h).unwrap_err(),
            ),
            (
                "LX_DXCREATEHWQUEUE",
                null.create_hw_queue_raw(h).unwrap_err(),
            ),
            (
                "LX_DXDESTROYHWQUEUE",
                null.destroy_hw_queue_raw(h).unwrap_err(),
            ),
            (
                "LX_DXSUBMITCOMMAND",
                null.submit_command_raw(h, 1 << 32, 16).unwrap_err(),
            ),
            (
                "LX_DXSUBMITCOMMANDTOHWQUEUE",
                null.submit_to_hw_queue_raw(h, 1, 1 << 32, 16).unwrap_err(),
            ),
            (
                "LX_DXESCAPE",
                null.escape_raw(h, h, &mut [0; 16]).unwrap_err(),
            ),
            (
                "LX_DXCREATESYNCHRONIZATIONOBJECT",
                null.create_monitored_fence_raw(h, 0).unwrap_err(),
            ),
            (
                "LX_DXDESTROYSYNCHRONIZATIONOBJECT",
                null.destroy_sync_object_raw(h).unwrap_err(),
            ),
            (
                "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU",
                null.signal_from_cpu_raw(h, &[h], &[1]).unwrap_err(),
            ),
            (
                "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU",
                null.signal_from_gpu_raw(h, &[h], &[1]).unwrap_err(),
            ),
            (
                "LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2",
                null.signal_from_gpu2_raw(&[h], &[h], &[1]).unwrap_err(),
            ),
            (
                "LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU",
                null.wait_from_cpu_raw(h, &[h], &[1], false, 0).unwrap_err(),
            ),
            (
                "LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU",
                null.wait_from_gpu_raw(h, &[h], &[1]).unwrap_err(),
            ),
        ];
        for (name, err) in cases {
            assert_eq!(err.errno(), Some(Errno(libc::ENOTTY)), "{name}: {err}");
            assert!(err.to_string().starts_with(name), "{name}: {err}");
        }
    }
}
