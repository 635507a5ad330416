//! Golden vectors for the /dev/dxg ioctl structs and ioctl numbers. Each
//! struct gets distinct values in every field; the expected bytes are
//! written field by field in C order, padding included.

use zerocopy::{FromBytes, IntoBytes};

use super::bytes::b;
use crate::abi::*;

/// Asserts both directions: encoding gives `expected`, decoding `expected`
/// gives the value back.
pub fn golden<T>(value: T, expected: Vec<u8>)
where
    T: IntoBytes
        + FromBytes
        + zerocopy::Immutable
        + zerocopy::KnownLayout
        + PartialEq
        + core::fmt::Debug,
{
    assert_eq!(
        value.as_bytes(),
        expected.as_slice(),
        "encoding of {value:?}"
    );
    let back = T::read_from_bytes(&expected).expect("size");
    assert_eq!(back, value);
}

fn h(v: u32) -> D3dkmtHandle {
    D3dkmtHandle(v)
}

#[test]
fn handle_bits() {
    let hd = D3dkmtHandle::from_parts(5, 0x1234, 2);
    assert_eq!(hd.0, 5 | (0x1234 << 6) | (2 << 30));
    assert_eq!((hd.instance(), hd.index(), hd.unique()), (5, 0x1234, 2));
    golden(hd, b().u32(hd.0).done());
    golden(WinLuid { a: 1, b: 2 }, b().u32(1).u32(2).done());
}

#[test]
fn adapter_structs() {
    golden(
        D3dkmtAdapterInfo {
            adapter_handle: h(0x40000041),
            adapter_luid: WinLuid {
                a: 0x1111,
                b: 0x2222,
            },
            num_sources: 0,
            present_move_regions_preferred: 1,
        },
        b().u32(0x40000041)
            .u32(0x1111)
            .u32(0x2222)
            .u32(0)
            .u32(1)
            .done(),
    );
    golden(
        D3dkmtEnumAdapters2 {
            num_adapters: 3,
            reserved: 0,
            adapters: 0x7fff_0000_1000,
        },
        b().u32(3).u32(0).u64(0x7fff_0000_1000).done(),
    );
    golden(
        D3dkmtEnumAdapters3 {
            filter: D3dkmtEnumAdaptersFilter::INCLUDE_COMPUTE_ONLY,
            adapter_count: 2,
            reserved: 0,
            adapters: 0x1000,
        },
        b().u64(1).u32(2).u32(0).u64(0x1000).done(),
    );
    golden(
        D3dkmtOpenAdapterFromLuid {
            adapter_luid: WinLuid { a: 7, b: 8 },
            adapter_handle: h(9),
        },
        b().u32(7).u32(8).u32(9).done(),
    );
    golden(
        D3dkmtCloseAdapter {
            adapter_handle: h(9),
        },
        b().u32(9).done(),
    );
    golden(
        D3dkmtQueryAdapterInfo {
            adapter: h(9),
            r#type: kmtqaitype::ADAPTERTYPE,
            private_data: 0x5000,
            private_data_size: 4,
            _pad0: 0,
        },
        b().u32(9).u32(15).u64(0x5000).u32(4).pad(4).done(),
    );
    golden(
        D3dkmtQueryVideoMemoryInfo {
            process: 0,
            adapter: h(9),
            memory_segment_group: memory_segment_group::NON_LOCAL,
            budget: 1 << 30,
            current_usage: 2,
            current_reservation: 3,
            available_for_reservation: 4,
            physical_adapter_index: 0,
            _pad0: 0,
        },
        b().u64(0)
            .u32(9)
            .u32(1)
            .u64(1 << 30)
            .u64(2)
            .u64(3)
            .u64(4)
            .u32(0)
            .pad(4)
            .done(),
    );
}

#[test]
fn device_context_queue_structs() {
    golden(
        D3dkmtCreateDevice {
            adapter: h(9),
            _pad0: 0,
            flags: D3dkmtCreateDeviceFlags::DISABLE_GPU_TIMEOUT,
            device: h(0x40000081),
            command_buffer: 1,
            command_buffer_size: 2,
            reserved: 0,
            allocation_list: 3,
            allocation_list_size: 4,
            reserved1: 0,
            patch_location_list: 5,
            patch_location_list_size: 6,
            reserved2: 0,
        },
        b().u32(9)
            .pad(4)
            .u32(4)
            .u32(0x40000081)
            .u64(1)
            .u32(2)
            .u32(0)
            .u64(3)
            .u32(4)
            .u32(0)
            .u64(5)
            .u32(6)
            .u32(0)
            .done(),
    );
    golden(D3dkmtDestroyDevice { device: h(1) }, b().u32(1).done());
    golden(
        D3dkmtCreateContextVirtual {
            device: h(1),
            node_ordinal: 2,
            engine_affinity: 3,
            flags: D3dddiCreateContextFlags::HW_QUEUE_SUPPORTED,
            priv_drv_data: 0xabc0,
            priv_drv_data_size: 16,
            client_hint: client_hint::DX10,
            context: h(4),
            _pad0: 0,
        },
        b().u32(1)
            .u32(2)
            .u32(3)
            .u32(16)
            .u64(0xabc0)
            .u32(16)
            .u32(10)
            .u32(4)
            .pad(4)
            .done(),
    );
    golden(D3dkmtDestroyContext { context: h(4) }, b().u32(4).done());
    golden(
        D3dkmtCreateHwQueue {
            context: h(4),
            flags: D3dddiCreateHwQueueFlags::DISABLE_GPU_TIMEOUT,
            priv_drv_data_size: 8,
            reserved: 0,
            priv_drv_data: 0x10,
            queue: h(5),
            queue_progress_fence: h(6),
            queue_progress_fence_cpu_va: 0x7000,
            queue_progress_fence_gpu_va: 0x8000,
        },
        b().u32(4)
            .u32(1)
            .u32(8)
            .u32(0)
            .u64(0x10)
            .u32(5)
            .u32(6)
            .u64(0x7000)
            .u64(0x8000)
            .done(),
    );
    golden(D3dkmtDestroyHwQueue { queue: h(5) }, b().u32(5).done());
    golden(
        D3dkmtCreatePagingQueue {
            device: h(1),
            priority: pagingqueue_priority::BELOW_NORMAL,
            paging_queue: h(2),
            sync_object: h(3),
            fence_cpu_virtual_address: 0x9000,
            physical_adapter_index: 0,
            _pad0: 0,
        },
        b().u32(1)
            .i32(-1)
            .u32(2)
            .u32(3)
            .u64(0x9000)
            .u32(0)
            .pad(4)
            .done(),
    );
    golden(
        D3dddiDestroyPagingQueue { paging_queue: h(2) },
        b().u32(2).done(),
    );
    let mut reserved = [0u32; 11];
    reserved[10] = 0xeeee;
    golden(
        D3dkmtGetDeviceState {
            device: h(1),
            state_type: devicestate_type::EXECUTION,
            execution_state: deviceexecution_state::ACTIVE,
            reserved,
        },
        b().u32(1).u32(1).u32(1).pad(40).u32(0xeeee).done(),
    );
}

#[test]
fn allocation_structs() {
    golden(
        D3dddiAllocationInfo2 {
            allocation: h(0x11),
            _pad0: 0,
            sysmem: 0x7f00_0000_0000,
            priv_drv_data: 0x20,
            priv_drv_data_size: 0x30,
            vidpn_source_id: 0,
            flags: D3dddiAllocationInfo2Flags::OVERRIDE_PRIORITY,
            _pad1: 0,
            gpu_virtual_address: 0x1_0000,
            priority: 0xc8000000,
            _pad2: 0,
            reserved: [1, 2, 3, 4, 5],
        },
        b().u32(0x11)
            .pad(4)
            .u64(0x7f00_0000_0000)
            .u64(0x20)
            .u32(0x30)
            .u32(0)
            .u32(4)
            .pad(4)
            .u64(0x1_0000)
            .u32(0xc8000000)
            .pad(4)
            .u64(1)
            .u64(2)
            .u64(3)
            .u64(4)
            .u64(5)
            .done(),
    );
    golden(
        D3dkmtCreateStandardAllocation {
            r#type: standard_allocation_type::EXISTINGHEAP,
            reserved: 0,
            existing_heap_data_size: 0x10000,
            flags: 0,
            reserved1: 0,
        },
        b().u32(1).u32(0).u64(0x10000).u32(0).u32(0).done(),
    );
    golden(
        D3dkmtCreateAllocation {
            device: h(1),
            resource: h(0),
            global_share: h(0),
            reserved: 0,
            private_runtime_data: 0x100,
            private_runtime_data_size: 4,
            reserved1: 0,
            priv_drv_data: 0x200,
            priv_drv_data_size: 8,
            alloc_count: 1,
            allocation_info: 0x300,
            flags: D3dkmtCreateAllocationFlags::EXISTING_SYSMEM
                .with(D3dkmtCreateAllocationFlags::CREATE_RESOURCE),
            reserved2: 0,
            private_runtime_resource_handle: 0x400,
        },
        b().u32(1)
            .u32(0)
            .u32(0)
            .u32(0)
            .u64(0x100)
            .u32(4)
            .u32(0)
            .u64(0x200)
            .u32(8)
            .u32(1)
            .u64(0x300)
            .u32(0x21)
            .u32(0)
            .u64(0x400)
            .done(),
    );
    golden(
        D3dkmtDestroyAllocation2 {
            device: h(1),
            resource: h(2),
            allocations: 0x500,
            alloc_count: 3,
            flags: D3dddicbDestroyAllocation2Flags::ASSUME_NOT_IN_USE,
        },
        b().u32(1).u32(2).u64(0x500).u32(3).u32(1).done(),
    );
    golden(
        D3dddiMakeResident {
            paging_queue: h(2),
            alloc_count: 2,
            allocation_list: 0x600,
            priority_list: 0x700,
            flags: D3dddiMakeResidentFlags::MUST_SUCCEED,
            _pad0: 0,
            paging_fence_value: 9,
            num_bytes_to_trim: 10,
        },
        b().u32(2)
            .u32(2)
            .u64(0x600)
            .u64(0x700)
            .u32(2)
            .pad(4)
            .u64(9)
            .u64(10)
            .done(),
    );
    golden(
        D3dkmtEvict {
            device: h(1),
            alloc_count: 1,
            allocations: 0x800,
            flags: D3dddiEvictFlags::NOT_WRITTEN_TO,
            reserved: 0,
            num_bytes_to_trim: 11,
        },
        b().u32(1).u32(1).u64(0x800).u32(2).u32(0).u64(11).done(),
    );
    golden(
        D3dkmtQueryAllocationResidency {
            device: h(1),
            resource: h(0),
            allocations: 0x900,
            allocation_count: 4,
            reserved: 0,
            residency_status: 0xa00,
        },
        b().u32(1).u32(0).u64(0x900).u32(4).u32(0).u64(0xa00).done(),
    );
    golden(
        D3dkmtQueryResourceInfo {
            device: h(1),
            global_share: h(2),
            private_runtime_data: 0xb00,
            private_runtime_data_size: 3,
            total_priv_drv_data_size: 4,
            resource_priv_drv_data_size: 5,
            allocation_count: 6,
        },
        b().u32(1)
            .u32(2)
            .u64(0xb00)
            .u32(3)
            .u32(4)
            .u32(5)
            .u32(6)
            .done(),
    );
    let prio = |device| D3dkmtGetAllocationPriority {
        device,
        resource: h(2),
        allocation_list: 0xc00,
        allocation_count: 2,
        reserved: 0,
        priorities: 0xd00,
    };
    let expect = b().u32(1).u32(2).u64(0xc00).u32(2).u32(0).u64(0xd00).done();
    golden(prio(h(1)), expect.clone());
    let p = prio(h(1));
    golden(
        D3dkmtSetAllocationPriority {
            device: p.device,
            resource: p.resource,
            allocation_list: p.allocation_list,
            allocation_count: p.allocation_count,
            reserved: 0,
            priorities: p.priorities,
        },
        expect,
    );
    golden(
        D3dkmtLock2 {
            device: h(1),
            allocation: h(0x11),
            flags: D3dddicbLock2Flags(0),
            reserved: 0,
            data: 0x7f00_1234_0000,
        },
        b().u32(1)
            .u32(0x11)
            .u32(0)
            .u32(0)
            .u64(0x7f00_1234_0000)
            .done(),
    );
    golden(
        D3dkmtUnlock2 {
            device: h(1),
            allocation: h(0x11),
        },
        b().u32(1).u32(0x11).done(),
    );
}

#[test]
fn gpu_va_structs() {
    golden(
        D3dddiReserveGpuVirtualAddress {
            adapter: h(9),
            _pad0: 0,
            base_address: 0,
            minimum_address: 0x1000,
            maximum_address: 0xffff_f000,
            size: 0x20000,
            reservation_type: gpuva_reservation_type::ZERO,
            _pad1: 0,
            driver_protection: 0,
            virtual_address: 0x4000_0000,
            paging_fence_value: 3,
        },
        b().u32(9)
            .pad(4)
            .u64(0)
            .u64(0x1000)
            .u64(0xffff_f000)
            .u64(0x20000)
            .u32(1)
            .pad(4)
            .u64(0)
            .u64(0x4000_0000)
            .u64(3)
            .done(),
    );
    golden(
        D3dddiMapGpuVirtualAddress {
            paging_queue: h(2),
            _pad0: 0,
            base_address: 0x4000_0000,
            minimum_address: 0,
            maximum_address: 0,
            allocation: h(0x11),
            _pad1: 0,
            offset_in_pages: 0,
            size_in_pages: 16,
            protection: D3dddiGpuVaProtectionType::WRITE,
            driver_protection: 0,
            reserved0: 0,
            _pad2: 0,
            reserved1: 0,
            virtual_address: 0x4000_0000,
            paging_fence_value: 4,
        },
        b().u32(2)
            .pad(4)
            .u64(0x4000_0000)
            .u64(0)
            .u64(0)
            .u32(0x11)
            .pad(4)
            .u64(0)
            .u64(16)
            .u64(1)
            .u64(0)
            .u32(0)
            .pad(4)
            .u64(0)
            .u64(0x4000_0000)
            .u64(4)
            .done(),
    );
    golden(
        D3dkmtFreeGpuVirtualAddress {
            adapter: h(9),
            reserved: 0,
            base_address: 0x4000_0000,
            size: 0x10000,
        },
        b().u32(9).u32(0).u64(0x4000_0000).u64(0x10000).done(),
    );
}

#[test]
fn sync_structs() {
    let mut info = D3dddiSynchronizationObjectInfo2 {
        r#type: syncobject_type::MONITORED_FENCE,
        flags: D3dddiSynchronizationObjectFlags::NO_GPU_ACCESS,
        reserved: [0; 8],
        shared_handle: h(0),
        _pad0: 0,
    };
    let fence = MonitoredFenceInfo {
        initial_fence_value: 5,
        fence_cpu_virtual_address: 0x7000,
        fence_gpu_virtual_address: 0x8000,
        engine_affinity: 1,
    };
    info.set_monitored_fence(fence);
    assert_eq!(info.monitored_fence(), fence);
    let info_bytes = b()
        .u32(5)
        .u32(0x80)
        .u64(5)
        .u64(0x7000)
        .u64(0x8000)
        .u32(1)
        .pad(4)
        .pad(32)
        .u32(0)
        .pad(4)
        .done();
    golden(info, info_bytes.clone());
    golden(
        D3dkmtCreateSynchronizationObject2 {
            device: h(1),
            reserved: 0,
            info,
            sync_object: h(0x21),
            reserved1: 0,
        },
        b().u32(1).u32(0).raw(&info_bytes).u32(0x21).u32(0).done(),
    );
    golden(
        D3dkmtDestroySynchronizationObject {
            sync_object: h(0x21),
        },
        b().u32(0x21).done(),
    );
    golden(
        D3dkmtOpenSynchronizationObject {
            shared_handle: h(3),
            sync_object: h(4),
            reserved: [0; 8],
        },
        b().u32(3).u32(4).pad(64).done(),
    );
    golden(
        D3dkmtWaitForSynchronizationObjectFromCpu {
            device: h(1),
            object_count: 2,
            objects: 0x100,
            fence_values: 0x200,
            async_event: 7,
            flags: D3dddiWaitForSynchronizationObjectFromCpuFlags::WAIT_ANY,
            _pad0: 0,
        },
        b().u32(1)
            .u32(2)
            .u64(0x100)
            .u64(0x200)
            .u64(7)
            .u32(1)
            .pad(4)
            .done(),
    );
    golden(
        D3dkmtSignalSynchronizationObjectFromCpu {
            device: h(1),
            object_count: 1,
            objects: 0x100,
            fence_values: 0x200,
            flags: D3dddicbSignalFlags::ALLOW_FENCE_REWIND,
            _pad0: 0,
        },
        b().u32(1).u32(1).u64(0x100).u64(0x200).u32(4).pad(4).done(),
    );
    golden(
        D3dkmtWaitForSynchronizationObjectFromGpu {
            context: h(4),
            object_count: 1,
            objects: 0x100,
            monitored_fence_values: 0x300,
            reserved: [0; 7],
        },
        b().u32(4).u32(1).u64(0x100).u64(0x300).pad(56).done(),
    );
    golden(
        D3dkmtSignalSynchronizationObjectFromGpu {
            context: h(4),
            object_count: 1,
            objects: 0x100,
            monitored_fence_values: 0x300,
            reserved: [0; 7],
        },
        b().u32(4).u32(1).u64(0x100).u64(0x300).pad(56).done(),
    );
    golden(
        D3dkmtSignalSynchronizationObjectFromGpu2 {
            object_count: 1,
            reserved1: 0,
            objects: 0x100,
            flags: D3dddicbSignalFlags(0),
            context_count: 2,
            contexts: 0x400,
            fence_value: 12,
            reserved: [0; 7],
        },
        b().u32(1)
            .u32(0)
            .u64(0x100)
            .u32(0)
            .u32(2)
            .u64(0x400)
            .u64(12)
            .pad(56)
            .done(),
    );
}

#[test]
fn submit_and_escape_structs() {
    let mut broadcast = [h(0); D3DDDI_MAX_BROADCAST_CONTEXT];
    broadcast[0] = h(4);
    let mut primaries = [h(0); D3DDDI_MAX_WRITTEN_PRIMARIES];
    primaries[15] = h(0x99);
    golden(
        D3dkmtSubmitCommand {
            command_buffer: 0x4000_0000,
            command_length: 0x40,
            flags: D3dkmtSubmitCommandFlags(0),
            present_history_token: 0,
            broadcast_context_count: 1,
            broadcast_context: broadcast,
            reserved: 0,
            priv_drv_data: 0x500,
            priv_drv_data_size: 8,
            num_primaries: 0,
            written_primaries: primaries,
            num_history_buffers: 0,
            reserved1: 0,
            history_buffer_array: 0,
        },
        b().u64(0x4000_0000)
            .u32(0x40)
            .u32(0)
            .u64(0)
            .u32(1)
            .u32(4)
            .pad(63 * 4)
            .u32(0)
            .u64(0x500)
            .u32(8)
            .u32(0)
            .pad(15 * 4)
            .u32(0x99)
            .u32(0)
            .u32(0)
            .u64(0)
            .done(),
    );
    golden(
        D3dkmtSubmitCommandToHwQueue {
            hwqueue: h(5),
            reserved: 0,
            hwqueue_progress_fence_id: 17,
            command_buffer: 0x4000_0000,
            command_length: 0x40,
            priv_drv_data_size: 0,
            priv_drv_data: 0,
            num_primaries: 0,
            reserved1: 0,
            written_primaries: 0,
        },
        b().u32(5)
            .u32(0)
            .u64(17)
            .u64(0x4000_0000)
            .u32(0x40)
            .u32(0)
            .u64(0)
            .u32(0)
            .u32(0)
            .u64(0)
            .done(),
    );
    golden(
        D3dkmtEscape {
            adapter: h(9),
            device: h(1),
            r#type: escape_type::DRIVERPRIVATE,
            flags: D3dddiEscapeFlags::HARDWARE_ACCESS,
            priv_drv_data: 0x600,
            priv_drv_data_size: 0x80,
            context: h(0),
        },
        b().u32(9)
            .u32(1)
            .u32(0)
            .u32(1)
            .u64(0x600)
            .u32(0x80)
            .u32(0)
            .done(),
    );
}

/// The ioctl numbers, written out as `_IOWR('G', nr, size)` by hand:
/// direction 3 in bits 30..32, size in bits 16..30, 'G' in bits 8..16.
#[test]
fn ioctl_numbers() {
    let iowr = |nr: u32, size: u32| 0xC000_0000 | (size << 16) | (0x47 << 8) | nr;
    let table = [
        (LX_DXOPENADAPTERFROMLUID, iowr(0x01, 12)),
        (LX_DXCREATEDEVICE, iowr(0x02, 64)),
        (LX_DXCREATECONTEXTVIRTUAL, iowr(0x04, 40)),
        (LX_DXDESTROYCONTEXT, iowr(0x05, 4)),
        (LX_DXCREATEALLOCATION, iowr(0x06, 72)),
        (LX_DXCREATEPAGINGQUEUE, iowr(0x07, 32)),
        (LX_DXRESERVEGPUVIRTUALADDRESS, iowr(0x08, 72)),
        (LX_DXQUERYADAPTERINFO, iowr(0x09, 24)),
        (LX_DXQUERYVIDEOMEMORYINFO, iowr(0x0a, 56)),
        (LX_DXMAKERESIDENT, iowr(0x0b, 48)),
        (LX_DXMAPGPUVIRTUALADDRESS, iowr(0x0c, 104)),
        (LX_DXESCAPE, iowr(0x0d, 32)),
        (LX_DXGETDEVICESTATE, iowr(0x0e, 56)),
        (LX_DXSUBMITCOMMAND, iowr(0x0f, 384)),
        (LX_DXCREATESYNCHRONIZATIONOBJECT, iowr(0x10, 96)),
        (LX_DXDESTROYALLOCATION2, iowr(0x13, 24)),
        (LX_DXENUMADAPTERS2, iowr(0x14, 16)),
        (LX_DXCLOSEADAPTER, iowr(0x15, 4)),
        (LX_DXCREATEHWQUEUE, iowr(0x18, 48)),
        (LX_DXDESTROYDEVICE, iowr(0x19, 4)),
        (LX_DXDESTROYHWQUEUE, iowr(0x1b, 4)),
        (LX_DXDESTROYPAGINGQUEUE, iowr(0x1c, 4)),
        (LX_DXDESTROYSYNCHRONIZATIONOBJECT, iowr(0x1d, 4)),
        (LX_DXEVICT, iowr(0x1e, 32)),
        (LX_DXFREEGPUVIRTUALADDRESS, iowr(0x20, 24)),
        (LX_DXLOCK2, iowr(0x25, 24)),
        (LX_DXOPENSYNCHRONIZATIONOBJECT, iowr(0x29, 72)),
        (LX_DXQUERYALLOCATIONRESIDENCY, iowr(0x2a, 32)),
        (LX_DXQUERYRESOURCEINFO, iowr(0x2b, 32)),
        (LX_DXSETALLOCATIONPRIORITY, iowr(0x2e, 32)),
        (LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMCPU, iowr(0x31, 32)),
        (LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU, iowr(0x32, 80)),
        (LX_DXSIGNALSYNCHRONIZATIONOBJECTFROMGPU2, iowr(0x33, 96)),
        (LX_DXSUBMITCOMMANDTOHWQUEUE, iowr(0x34, 56)),
        (LX_DXUNLOCK2, iowr(0x37, 8)),
        (LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMCPU, iowr(0x3a, 40)),
        (LX_DXWAITFORSYNCHRONIZATIONOBJECTFROMGPU, iowr(0x3b, 80)),
        (LX_DXGETALLOCATIONPRIORITY, iowr(0x3c, 32)),
        (LX_DXENUMADAPTERS3, iowr(0x3e, 24)),
    ];
    assert_eq!(table.len(), IOCTLS.len());
    for (got, want) in table {
        assert_eq!(got, want, "{:?}", ioctl_name(got));
        assert_eq!(ioctl_size(got), ((want >> 16) & 0x3fff) as usize);
    }
    // Two spot checks against the hex an strace of a WSL program shows.
    assert_eq!(LX_DXOPENADAPTERFROMLUID, 0xC00C_4701);
    assert_eq!(LX_DXENUMADAPTERS2, 0xC010_4714);
    assert_eq!(ioctl_nr(LX_DXLOCK2), 0x25);
}
