//! Golden vectors for every GPU-PV request, reply and host event dxvmm
//! implements, and for the frame header and config space.

use zerocopy::FromZeros;

use super::bytes::{b, hex, B};
use crate::abi::*;
use crate::frame::*;
use crate::message::{HostEvent, Reply, Request};
use crate::ntstatus::NtStatus;
use crate::vmbus::{global as g, vgpu as v, *};

const PROC: u32 = 0x4000_0001;

fn h(x: u32) -> D3dkmtHandle {
    D3dkmtHandle(x)
}

/// The 24-byte vGPU header for command `cmd`, written out.
fn vh(cmd: u32) -> B {
    b().u64(0)
        .u32(PROC)
        .u32(DXGKVMB_VGPU_TO_HOST)
        .u32(cmd)
        .pad(4)
}

/// The 24-byte global header for command `cmd`, written out.
fn gh(cmd: u32) -> B {
    b().u64(0).u32(PROC).u32(DXGKVMB_VM_TO_HOST).u32(cmd).pad(4)
}

fn vhdr(cmd: u32) -> DxgkvmbCommandVgpuToHost {
    DxgkvmbCommandVgpuToHost::new(cmd, h(PROC))
}

fn ghdr(cmd: u32) -> DxgkvmbCommandVmToHost {
    DxgkvmbCommandVmToHost::new(cmd, h(PROC))
}

fn check(req: Request, expected: Vec<u8>) -> Request {
    assert_eq!(req.encode(), expected, "encoding of {}", req.name());
    let back = Request::decode(&expected).unwrap_or_else(|e| panic!("{}: {e}", req.name()));
    assert_eq!(back, req);
    req
}

fn check_reply(req: &Request, reply: Reply, expected: Vec<u8>) {
    assert_eq!(reply.encode(), expected, "reply to {}", req.name());
    assert_eq!(Reply::decode(req, &expected).unwrap(), reply);
}

fn status(s: NtStatus) -> Vec<u8> {
    b().i32(s.0).done()
}

#[test]
fn global_commands() {
    let mut name = [0u16; DXG_VM_PROCESS_NAME_LENGTH + 1];
    for (i, c) in "dxgtest".encode_utf16().enumerate() {
        name[i] = c;
    }
    let req = check(
        Request::CreateProcess(Box::new(DxgkvmbCommandCreateProcess {
            hdr: DxgkvmbCommandVmToHost::new(g::DXGK_VMBCOMMAND_CREATEPROCESS, h(0)),
            process: 0xffff_8880_0000_1000,
            process_id: 1234,
            process_name: name,
            flags: createprocess_flags::LINUX_PROCESS,
            _pad0: [0; 5],
        })),
        b().u64(0)
            .u32(0)
            .u32(1)
            .u32(1000)
            .pad(4)
            .u64(0xffff_8880_0000_1000)
            .u64(1234)
            .raw(b"d\0x\0g\0t\0e\0s\0t\0")
            .pad(522 - 14)
            .u8(8)
            .pad(5)
            .done(),
    );
    check_reply(
        &req,
        Reply::CreateProcess(DxgkvmbCommandCreateProcessReturn { hprocess: h(PROC) }),
        b().u32(PROC).done(),
    );

    let req = check(
        Request::DestroyProcess(DxgkvmbCommandDestroyProcess {
            hdr: ghdr(g::DXGK_VMBCOMMAND_DESTROYPROCESS),
        }),
        gh(1001).done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );

    let req = check(
        Request::OpenSyncObject(DxgkvmbCommandOpenSyncObject {
            hdr: ghdr(g::DXGK_VMBCOMMAND_OPENSYNCOBJECT),
            device: h(2),
            global_sync_object: h(3),
            engine_affinity: 1,
            flags: D3dddiSynchronizationObjectFlags::SHARED,
        }),
        gh(1002).u32(2).u32(3).u32(1).u32(1).done(),
    );
    check_reply(
        &req,
        Reply::OpenSyncObject(DxgkvmbCommandOpenSyncObjectReturn {
            sync_object: h(4),
            status: NtStatus::SUCCESS,
            gpu_virtual_address: 0x10_0000,
            guest_cpu_physical_address: 0x8000_0000,
        }),
        b().u32(4).u32(0).u64(0x10_0000).u64(0x8000_0000).done(),
    );

    let req = check(
        Request::DestroySyncObject(DxgkvmbCommandDestroySyncObject {
            hdr: ghdr(g::DXGK_VMBCOMMAND_DESTROYSYNCOBJECT),
            sync_object: h(4),
            _pad0: 0,
        }),
        gh(1003).u32(4).pad(4).done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::INVALID_HANDLE),
        hex("08 00 00 c0"),
    );

    let req = check(
        Request::SetIoSpaceRegion(DxgkvmbCommandSetIoSpaceRegion {
            hdr: ghdr(g::DXGK_VMBCOMMAND_SETIOSPACEREGION),
            start: 0,
            length: 0,
            shared_page_gpadl: 0,
            _pad0: 0,
        }),
        gh(1010).u64(0).u64(0).u32(0).pad(4).done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );
}

#[test]
fn adapter_commands() {
    let req = check(
        Request::OpenAdapter(DxgkvmbCommandOpenAdapter {
            hdr: DxgkvmbCommandVgpuToHost::new(v::DXGK_VMBCOMMAND_OPENADAPTER, h(0)),
            vmbus_interface_version: DXGK_VMBUS_INTERFACE_VERSION,
            vmbus_last_compatible_interface_version: DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION,
            guest_adapter_luid: WinLuid { a: 0x1000, b: 0 },
        }),
        b().u64(0)
            .u32(0)
            .u32(0)
            .u32(14)
            .pad(4)
            .u32(40)
            .u32(16)
            .u32(0x1000)
            .u32(0)
            .done(),
    );
    check_reply(
        &req,
        Reply::OpenAdapter(DxgkvmbCommandOpenAdapterReturn {
            host_adapter_handle: h(0x40000040),
            status: NtStatus::SUCCESS,
            vmbus_interface_version: 40,
            vmbus_last_compatible_interface_version: 16,
        }),
        b().u32(0x40000040).u32(0).u32(40).u32(16).done(),
    );

    let req = check(
        Request::CloseAdapter(DxgkvmbCommandCloseAdapter {
            hdr: vhdr(v::DXGK_VMBCOMMAND_CLOSEADAPTER),
            host_handle: h(0x40000040),
            _pad0: 0,
        }),
        vh(15).u32(0x40000040).pad(4).done(),
    );
    check_reply(&req, Reply::Empty, vec![]);

    let req = check(
        Request::GetInternalAdapterInfo(DxgkvmbCommandGetInternalAdapterInfo {
            hdr: vhdr(v::DXGK_VMBCOMMAND_GETINTERNALADAPTERINFO),
        }),
        vh(36).done(),
    );
    let mut info = DxgkvmbCommandGetInternalAdapterInfoReturn::new_zeroed();
    info.flags = internal_adapter_flags::HW_SCH_CAPABLE;
    info.host_adapter_luid = WinLuid { a: 5, b: 6 };
    info.device_description[0] = u16::from(b'N');
    info.device_instance_id[259] = 0xffff;
    info.host_vgpu_luid = WinLuid { a: 7, b: 8 };
    check_reply(
        &req,
        Reply::GetInternalAdapterInfo(Box::new(info)),
        b().u32(0)
            .u32(0)
            .u32(0)
            .u32(0x10)
            .u32(5)
            .u32(6)
            .u16(u16::from(b'N'))
            .pad(158)
            .pad(518)
            .u16(0xffff)
            .u32(7)
            .u32(8)
            .done(),
    );

    let req = check(
        Request::QueryAdapterInfo {
            cmd: DxgkvmbCommandQueryAdapterInfo {
                hdr: vhdr(v::DXGK_VMBCOMMAND_QUERYADAPTERINFO),
                query_type: kmtqaitype::ADAPTERTYPE,
                private_data_size: 4,
            },
            private_data: vec![0; 4],
        },
        vh(2).u32(15).u32(4).u32(0).done(),
    );
    check_reply(
        &req,
        Reply::QueryAdapterInfo {
            status: NtStatus::SUCCESS,
            private_data: D3dkmtAdapterType::RENDER_SUPPORTED
                .with(D3dkmtAdapterType::PARAVIRTUALIZED)
                .0
                .to_le_bytes()
                .to_vec(),
        },
        b().u32(0).u32(0x81).done(),
    );

    let req = check(
        Request::QueryVideoMemoryInfo(DxgkvmbCommandQueryVideoMemoryInfo {
            hdr: vhdr(v::DXGK_VMBCOMMAND_QUERYVIDEOMEMORYINFO),
            adapter: h(9),
            memory_segment_group: memory_segment_group::LOCAL,
            physical_adapter_index: 0,
            _pad0: 0,
        }),
        vh(21).u32(9).u32(0).u32(0).pad(4).done(),
    );
    check_reply(
        &req,
        Reply::QueryVideoMemoryInfo(DxgkvmbCommandQueryVideoMemoryInfoReturn {
            budget: 8 << 30,
            current_usage: 1 << 20,
            current_reservation: 0,
            available_for_reservation: 4 << 30,
        }),
        b().u64(8 << 30).u64(1 << 20).u64(0).u64(4 << 30).done(),
    );
}

#[test]
fn device_context_queue_commands() {
    let req = check(
        Request::CreateDevice(DxgkvmbCommandCreateDevice {
            hdr: vhdr(v::DXGK_VMBCOMMAND_CREATEDEVICE),
            flags: D3dkmtCreateDeviceFlags(0),
            cdd_device: 0,
            _pad0: [0; 3],
            error_code: 0,
        }),
        vh(0).u32(0).u8(0).pad(3).u64(0).done(),
    );
    check_reply(
        &req,
        Reply::CreateDevice(DxgkvmbCommandCreateDeviceReturn { device: h(0x81) }),
        b().u32(0x81).done(),
    );

    for (cmd, num) in [
        (v::DXGK_VMBCOMMAND_DESTROYDEVICE, 1),
        (v::DXGK_VMBCOMMAND_DESTROYCONTEXT, 7),
        (v::DXGK_VMBCOMMAND_DESTROYPAGINGQUEUE, 10),
        (v::DXGK_VMBCOMMAND_DESTROYHWQUEUE, 51),
    ] {
        let req = match cmd {
            v::DXGK_VMBCOMMAND_DESTROYDEVICE => {
                Request::DestroyDevice(DxgkvmbCommandDestroyDevice {
                    hdr: vhdr(cmd),
                    device: h(0x81),
                    _pad0: 0,
                })
            }
            v::DXGK_VMBCOMMAND_DESTROYCONTEXT => {
                Request::DestroyContext(DxgkvmbCommandDestroyContext {
                    hdr: vhdr(cmd),
                    context: h(0x81),
                    _pad0: 0,
                })
            }
            v::DXGK_VMBCOMMAND_DESTROYPAGINGQUEUE => {
                Request::DestroyPagingQueue(DxgkvmbCommandDestroyPagingQueue {
                    hdr: vhdr(cmd),
                    paging_queue: h(0x81),
                    _pad0: 0,
                })
            }
            _ => Request::DestroyHwQueue(DxgkvmbCommandDestroyHwQueue {
                hdr: vhdr(cmd),
                hwqueue: h(0x81),
                _pad0: 0,
            }),
        };
        let req = check(req, vh(num).u32(0x81).pad(4).done());
        check_reply(
            &req,
            Reply::Status(NtStatus::SUCCESS),
            status(NtStatus::SUCCESS),
        );
    }

    let req = check(
        Request::FlushDevice(DxgkvmbCommandFlushDevice {
            hdr: vhdr(v::DXGK_VMBCOMMAND_FLUSHDEVICE),
            device: h(0x81),
            reason: 4,
        }),
        vh(42).u32(0x81).u32(4).done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );

    let mut state = D3dkmtGetDeviceState::new_zeroed();
    state.device = h(0x81);
    state.state_type = devicestate_type::EXECUTION;
    let req = check(
        Request::GetDeviceState(DxgkvmbCommandGetDeviceState {
            hdr: vhdr(v::DXGK_VMBCOMMAND_GETDEVICESTATE),
            args: state,
        }),
        vh(28).u32(0x81).u32(1).pad(48).done(),
    );
    state.execution_state = deviceexecution_state::ACTIVE;
    check_reply(
        &req,
        Reply::GetDeviceState(DxgkvmbCommandGetDeviceStateReturn {
            args: state,
            status: NtStatus::SUCCESS,
            _pad0: 0,
        }),
        b().u32(0x81).u32(1).u32(1).pad(44).u32(0).pad(4).done(),
    );

    let ctx = DxgkvmbCommandCreateContextVirtual {
        hdr: vhdr(v::DXGK_VMBCOMMAND_CREATECONTEXTVIRTUAL),
        context: h(0),
        device: h(0x81),
        node_ordinal: 0,
        engine_affinity: 1,
        flags: D3dddiCreateContextFlags::HW_QUEUE_SUPPORTED,
        client_hint: client_hint::DX10,
        priv_drv_data_size: 3,
    };
    let req = check(
        Request::CreateContextVirtual {
            cmd: ctx,
            priv_drv_data: vec![1, 2, 3],
        },
        vh(6)
            .u32(0)
            .u32(0x81)
            .u32(0)
            .u32(1)
            .u32(16)
            .u32(10)
            .u32(3)
            .raw(&[1, 2, 3])
            .done(),
    );
    let mut echoed = ctx;
    echoed.context = h(0xc1);
    check_reply(
        &req,
        Reply::CreateContextVirtual {
            cmd: echoed,
            priv_drv_data: vec![4, 5, 6],
        },
        vh(6)
            .u32(0xc1)
            .u32(0x81)
            .u32(0)
            .u32(1)
            .u32(16)
            .u32(10)
            .u32(3)
            .raw(&[4, 5, 6])
            .done(),
    );

    let q = DxgkvmbCommandCreateHwQueue {
        hdr: vhdr(v::DXGK_VMBCOMMAND_CREATEHWQUEUE),
        status: NtStatus::SUCCESS,
        hwqueue: h(0),
        hwqueue_progress_fence: h(0),
        _pad0: 0,
        hwqueue_progress_fence_cpuva: 0,
        hwqueue_progress_fence_gpuva: 0,
        context: h(0xc1),
        flags: D3dddiCreateHwQueueFlags(0),
        priv_drv_data_size: 0,
    };
    let req = check(
        Request::CreateHwQueue {
            cmd: q,
            priv_drv_data: vec![],
        },
        vh(50)
            .u32(0)
            .u32(0)
            .u32(0)
            .pad(4)
            .u64(0)
            .u64(0)
            .u32(0xc1)
            .u32(0)
            .u32(0)
            .done(),
    );
    let mut echoed = q;
    echoed.hwqueue = h(0x101);
    echoed.hwqueue_progress_fence = h(0x141);
    echoed.hwqueue_progress_fence_cpuva = 0x8_0000_0000;
    echoed.hwqueue_progress_fence_gpuva = 0x10_0000;
    check_reply(
        &req,
        Reply::CreateHwQueue {
            cmd: echoed,
            priv_drv_data: vec![],
        },
        vh(50)
            .u32(0)
            .u32(0x101)
            .u32(0x141)
            .pad(4)
            .u64(0x8_0000_0000)
            .u64(0x10_0000)
            .u32(0xc1)
            .u32(0)
            .u32(0)
            .done(),
    );

    let mut pq = D3dkmtCreatePagingQueue::new_zeroed();
    pq.device = h(0x81);
    let req = check(
        Request::CreatePagingQueue(DxgkvmbCommandCreatePagingQueue {
            hdr: vhdr(v::DXGK_VMBCOMMAND_CREATEPAGINGQUEUE),
            args: pq,
        }),
        vh(9).u32(0x81).pad(28).done(),
    );
    check_reply(
        &req,
        Reply::CreatePagingQueue(DxgkvmbCommandCreatePagingQueueReturn {
            paging_queue: h(0x181),
            sync_object: h(0x1c1),
            fence_storage_physical_address: 0x8_0000_1000,
            fence_storage_offset: 8,
        }),
        b().u32(0x181).u32(0x1c1).u64(0x8_0000_1000).u64(8).done(),
    );
}

#[test]
fn allocation_commands() {
    let req = check(
        Request::CreateAllocation {
            cmd: DxgkvmbCommandCreateAllocation {
                hdr: vhdr(v::DXGK_VMBCOMMAND_CREATEALLOCATION),
                device: h(0x81),
                resource: h(0),
                private_runtime_data_size: 2,
                priv_drv_data_size: 1,
                alloc_count: 2,
                flags: D3dkmtCreateAllocationFlags::EXISTING_SYSMEM,
                private_runtime_resource_handle: 0,
                make_resident: 1,
                _pad0: [0; 7],
            },
            alloc_info: vec![
                DxgkvmbCommandCreateAllocationAllocInfo {
                    flags: 0,
                    priv_drv_data_size: 4,
                    vidpn_source_id: 0,
                },
                DxgkvmbCommandCreateAllocationAllocInfo {
                    flags: 0,
                    priv_drv_data_size: 0,
                    vidpn_source_id: 0,
                },
            ],
            private_runtime_data: vec![0xaa, 0xbb],
            priv_drv_data: vec![0xcc],
            alloc_priv_drv_data: vec![vec![1, 2, 3, 4], vec![]],
        },
        vh(4)
            .u32(0x81)
            .u32(0)
            .u32(2)
            .u32(1)
            .u32(2)
            .u32(0x20)
            .u64(0)
            .u8(1)
            .pad(7)
            .u32(0)
            .u32(4)
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(0)
            .raw(&[0xaa, 0xbb, 0xcc, 1, 2, 3, 4])
            .done(),
    );
    let mut a0 = DxgkvmbCommandAllocInfoReturn::new_zeroed();
    a0.allocation = h(0x201);
    a0.priv_drv_data_size = 2;
    a0.allocation_flags = vmb_allocflags::EXISTING_SYSMEM;
    a0.allocation_size = 0x10000;
    a0.driver_info.width = 0x10000;
    let mut a1 = a0;
    a1.allocation = h(0x241);
    a1.priv_drv_data_size = 0;
    let alloc_ret = |a: &DxgkvmbCommandAllocInfoReturn| {
        b().u32(a.allocation.0)
            .u32(a.priv_drv_data_size)
            .u32(0x800)
            .pad(4)
            .u64(0x10000)
            .u64(0)
            .u32(0x10000)
            .pad(36)
            .done()
    };
    check_reply(
        &req,
        Reply::CreateAllocation {
            ret: DxgkvmbCommandCreateAllocationReturn {
                flags: D3dkmtCreateAllocationFlags::EXISTING_SYSMEM,
                resource: h(0),
                global_share: h(0),
                vgpu_flags: 0,
            },
            allocation_info: vec![a0, a1],
            alloc_priv_drv_data: vec![vec![9, 9], vec![]],
        },
        b().u32(0x20)
            .u32(0)
            .u32(0)
            .u32(0)
            .raw(&alloc_ret(&a0))
            .raw(&alloc_ret(&a1))
            .raw(&[9, 9])
            .done(),
    );

    let req = check(
        Request::SetExistingSysmemPages {
            cmd: DxgkvmbCommandSetExistingSysmemPages {
                hdr: vhdr(v::DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES),
                device: h(0x81),
                allocation: h(0x201),
                num_pages: 2,
                alloc_offset_in_pages: 0,
            },
            pfns: vec![0x12345, 0x12346],
        },
        vh(66)
            .u32(0x81)
            .u32(0x201)
            .u32(2)
            .u32(0)
            .u64(0x12345)
            .u64(0x12346)
            .done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );

    let req = check(
        Request::DestroyAllocation {
            cmd: DxgkvmbCommandDestroyAllocation {
                hdr: vhdr(v::DXGK_VMBCOMMAND_DESTROYALLOCATION),
                device: h(0x81),
                resource: h(0),
                alloc_count: 2,
                flags: D3dddicbDestroyAllocation2Flags::ASSUME_NOT_IN_USE,
            },
            allocations: vec![h(0x201), h(0x241)],
        },
        vh(5)
            .u32(0x81)
            .u32(0)
            .u32(2)
            .u32(1)
            .u32(0x201)
            .u32(0x241)
            .done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );

    let req = check(
        Request::MakeResident {
            cmd: DxgkvmbCommandMakeResident {
                hdr: vhdr(v::DXGK_VMBCOMMAND_MAKERESIDENT),
                device: h(0x81),
                paging_queue: h(0x181),
                flags: D3dddiMakeResidentFlags(0),
                alloc_count: 1,
            },
            allocations: vec![h(0x201)],
        },
        vh(11).u32(0x81).u32(0x181).u32(0).u32(1).u32(0x201).done(),
    );
    check_reply(
        &req,
        Reply::MakeResident(DxgkvmbCommandMakeResidentReturn {
            paging_fence_value: 3,
            num_bytes_to_trim: 0,
            status: NtStatus::PENDING,
            _pad0: 0,
        }),
        b().u64(3).u64(0).u32(0x103).pad(4).done(),
    );

    let req = check(
        Request::Evict {
            cmd: DxgkvmbCommandEvict {
                hdr: vhdr(v::DXGK_VMBCOMMAND_EVICT),
                device: h(0x81),
                flags: D3dddiEvictFlags(0),
                alloc_count: 1,
            },
            allocations: vec![h(0x201)],
        },
        vh(12).u32(0x81).u32(0).u32(1).u32(0x201).done(),
    );
    check_reply(
        &req,
        Reply::Evict(DxgkvmbCommandEvictReturn {
            num_bytes_to_trim: 0x1000,
        }),
        b().u64(0x1000).done(),
    );

    let mut qr = D3dkmtQueryAllocationResidency::new_zeroed();
    qr.device = h(0x81);
    qr.allocation_count = 2;
    let req = check(
        Request::QueryAllocationResidency {
            cmd: DxgkvmbCommandQueryAllocationResidency {
                hdr: vhdr(v::DXGK_VMBCOMMAND_QUERYALLOCATIONRESIDENCY),
                args: qr,
            },
            allocations: vec![h(0x201), h(0x241)],
        },
        vh(41)
            .u32(0x81)
            .u32(0)
            .u64(0)
            .u32(2)
            .u32(0)
            .u64(0)
            .u32(0x201)
            .u32(0x241)
            .done(),
    );
    check_reply(
        &req,
        Reply::QueryAllocationResidency {
            status: NtStatus::SUCCESS,
            residency_status: vec![1, 3],
        },
        b().u32(0).u32(1).u32(3).done(),
    );

    let req = check(
        Request::GetAllocationPriority {
            cmd: DxgkvmbCommandGetAllocationPriority {
                hdr: vhdr(v::DXGK_VMBCOMMAND_GETALLOCATIONPRIORITY),
                device: h(0x81),
                resource: h(0),
                allocation_count: 1,
            },
            allocations: vec![h(0x201)],
        },
        vh(60).u32(0x81).u32(0).u32(1).u32(0x201).done(),
    );
    check_reply(
        &req,
        Reply::GetAllocationPriority {
            status: NtStatus::SUCCESS,
            priorities: vec![0x7800_0000],
        },
        b().u32(0).u32(0x7800_0000).done(),
    );

    let req = check(
        Request::SetAllocationPriority {
            cmd: DxgkvmbCommandSetAllocationPriority {
                hdr: vhdr(v::DXGK_VMBCOMMAND_SETALLOCATIONPRIORITY),
                device: h(0x81),
                resource: h(0x301),
                allocation_count: 0,
            },
            allocations: vec![],
            priorities: vec![0x5000_0000],
        },
        vh(59).u32(0x81).u32(0x301).u32(0).u32(0x5000_0000).done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );

    let req = check(
        Request::Lock2(DxgkvmbCommandLock2 {
            hdr: vhdr(v::DXGK_VMBCOMMAND_LOCK2),
            args: D3dkmtLock2 {
                device: h(0x81),
                allocation: h(0x201),
                flags: D3dddicbLock2Flags(0),
                reserved: 0,
                data: 0,
            },
            use_legacy_lock: 0,
            _pad0: [0; 3],
            flags: 0,
            priv_drv_data: 0,
            _pad1: 0,
        }),
        vh(23)
            .u32(0x81)
            .u32(0x201)
            .u32(0)
            .u32(0)
            .u64(0)
            .u8(0)
            .pad(3)
            .u32(0)
            .u32(0)
            .pad(4)
            .done(),
    );
    check_reply(
        &req,
        Reply::Lock2(DxgkvmbCommandLock2Return {
            status: NtStatus::SUCCESS,
            _pad0: 0,
            cpu_visible_buffer_offset: 0,
        }),
        b().u32(0).pad(4).u64(0).done(),
    );

    let req = check(
        Request::Unlock2(DxgkvmbCommandUnlock2 {
            hdr: vhdr(v::DXGK_VMBCOMMAND_UNLOCK2),
            args: D3dkmtUnlock2 {
                device: h(0x81),
                allocation: h(0x201),
            },
            use_legacy_unlock: 0,
            _pad0: [0; 7],
        }),
        vh(24).u32(0x81).u32(0x201).u8(0).pad(7).done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );
}

#[test]
fn gpu_va_commands() {
    let mut rv = D3dddiReserveGpuVirtualAddress::new_zeroed();
    rv.adapter = h(0x40000040);
    rv.size = 0x10000;
    let req = check(
        Request::ReserveGpuVirtualAddress(DxgkvmbCommandReserveGpuVirtualAddress {
            hdr: vhdr(v::DXGK_VMBCOMMAND_RESERVEGPUVIRTUALADDRESS),
            args: rv,
        }),
        vh(18)
            .u32(0x40000040)
            .pad(4)
            .u64(0)
            .u64(0)
            .u64(0)
            .u64(0x10000)
            .pad(32)
            .done(),
    );
    check_reply(
        &req,
        Reply::ReserveGpuVirtualAddress(DxgkvmbCommandReserveGpuVirtualAddressReturn {
            virtual_address: 0x1_0000_0000,
            paging_fence_value: 0,
        }),
        b().u64(0x1_0000_0000).u64(0).done(),
    );

    let mut mv = D3dddiMapGpuVirtualAddress::new_zeroed();
    mv.paging_queue = h(0x181);
    mv.base_address = 0x1_0000_0000;
    mv.allocation = h(0x201);
    mv.size_in_pages = 16;
    mv.protection = D3dddiGpuVaProtectionType::WRITE;
    let req = check(
        Request::MapGpuVirtualAddress(DxgkvmbCommandMapGpuVirtualAddress {
            hdr: vhdr(v::DXGK_VMBCOMMAND_MAPGPUVIRTUALADDRESS),
            args: mv,
            device: h(0x81),
            _pad0: 0,
        }),
        vh(17)
            .u32(0x181)
            .pad(4)
            .u64(0x1_0000_0000)
            .u64(0)
            .u64(0)
            .u32(0x201)
            .pad(4)
            .u64(0)
            .u64(16)
            .u64(1)
            .pad(40)
            .u32(0x81)
            .pad(4)
            .done(),
    );
    check_reply(
        &req,
        Reply::MapGpuVirtualAddress(DxgkvmbCommandMapGpuVirtualAddressReturn {
            virtual_address: 0x1_0000_0000,
            paging_fence_value: 5,
            status: NtStatus::PENDING,
            _pad0: 0,
        }),
        b().u64(0x1_0000_0000).u64(5).u32(0x103).pad(4).done(),
    );

    let req = check(
        Request::FreeGpuVirtualAddress(DxgkvmbCommandFreeGpuVirtualAddress {
            hdr: vhdr(v::DXGK_VMBCOMMAND_FREEGPUVIRTUALADDRESS),
            args: D3dkmtFreeGpuVirtualAddress {
                adapter: h(0x40000040),
                reserved: 0,
                base_address: 0x1_0000_0000,
                size: 0x10000,
            },
        }),
        vh(16)
            .u32(0x40000040)
            .u32(0)
            .u64(0x1_0000_0000)
            .u64(0x10000)
            .done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );
}

#[test]
fn sync_commands() {
    let mut so = D3dkmtCreateSynchronizationObject2::new_zeroed();
    so.device = h(0x81);
    so.info.r#type = syncobject_type::MONITORED_FENCE;
    let req = check(
        Request::CreateSyncObject(DxgkvmbCommandCreateSyncObject {
            hdr: vhdr(v::DXGK_VMBCOMMAND_CREATESYNCOBJECT),
            args: so,
            client_hint: client_hint::DX10,
            _pad0: 0,
        }),
        vh(8).u32(0x81).u32(0).u32(5).pad(84).u32(10).pad(4).done(),
    );
    check_reply(
        &req,
        Reply::CreateSyncObject(DxgkvmbCommandCreateSyncObjectReturn {
            sync_object: h(0x401),
            global_sync_object: h(0),
            fence_gpu_va: 0x20_0000,
            fence_storage_address: 0x8_0000_2000,
            fence_storage_offset: 0x10,
            _pad0: 0,
        }),
        b().u32(0x401)
            .u32(0)
            .u64(0x20_0000)
            .u64(0x8_0000_2000)
            .u32(0x10)
            .pad(4)
            .done(),
    );

    let req = check(
        Request::SignalSyncObject {
            cmd: DxgkvmbCommandSignalSyncObject {
                hdr: vhdr(v::DXGK_VMBCOMMAND_SIGNALSYNCOBJECT),
                object_count: 1,
                flags: D3dddicbSignalFlags(0),
                context_count: 0,
                _pad0: 0,
                fence_value: 0,
                cpu_event_handle: 0x81,
            },
            objects: vec![h(0x401)],
            contexts: vec![],
            fence_values: vec![42],
        },
        vh(26)
            .u32(1)
            .u32(0)
            .u32(0)
            .pad(4)
            .u64(0)
            .u64(0x81)
            .u32(0x401)
            .u64(42)
            .done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );

    let req = check(
        Request::WaitForSyncObjectFromCpu {
            cmd: DxgkvmbCommandWaitForSyncObjectFromCpu {
                hdr: vhdr(v::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMCPU),
                device: h(0x81),
                object_count: 2,
                flags: D3dddiWaitForSynchronizationObjectFromCpuFlags::WAIT_ANY,
                _pad0: 0,
                guest_event_pointer: 77,
                dereference_event: 1,
                _pad1: [0; 7],
            },
            objects: vec![h(0x401), h(0x441)],
            fence_values: vec![1, 2],
        },
        vh(22)
            .u32(0x81)
            .u32(2)
            .u32(1)
            .pad(4)
            .u64(77)
            .u8(1)
            .pad(7)
            .u32(0x401)
            .u32(0x441)
            .u64(1)
            .u64(2)
            .done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::PENDING),
        status(NtStatus::PENDING),
    );

    let req = check(
        Request::WaitForSyncObjectFromGpu {
            cmd: DxgkvmbCommandWaitForSyncObjectFromGpu {
                hdr: vhdr(v::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMGPU),
                context: h(0xc1),
                object_count: 1,
                legacy_fence_object: 0,
                _pad0: [0; 7],
            },
            fence_values: vec![9],
            objects: vec![h(0x401)],
        },
        vh(25)
            .u32(0xc1)
            .u32(1)
            .u8(0)
            .pad(7)
            .u64(9)
            .u32(0x401)
            .done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );
}

#[test]
fn submit_and_escape_commands() {
    let mut sc = D3dkmtSubmitCommand::new_zeroed();
    sc.command_buffer = 0x1_0000_0000;
    sc.command_length = 0x30;
    sc.broadcast_context_count = 1;
    sc.broadcast_context[0] = h(0xc1);
    sc.priv_drv_data_size = 2;
    let req = check(
        Request::SubmitCommand {
            cmd: Box::new(DxgkvmbCommandSubmitCommand {
                hdr: vhdr(v::DXGK_VMBCOMMAND_SUBMITCOMMAND),
                args: sc,
            }),
            history_buffers: vec![],
            priv_drv_data: vec![0xde, 0xad],
        },
        vh(20)
            .u64(0x1_0000_0000)
            .u32(0x30)
            .u32(0)
            .u64(0)
            .u32(1)
            .u32(0xc1)
            .pad(63 * 4 + 4)
            .u64(0)
            .u32(2)
            .u32(0)
            .pad(64)
            .u32(0)
            .u32(0)
            .u64(0)
            .raw(&[0xde, 0xad])
            .done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );

    let mut hq = D3dkmtSubmitCommandToHwQueue::new_zeroed();
    hq.hwqueue = h(0x101);
    hq.hwqueue_progress_fence_id = 3;
    hq.command_buffer = 0x1_0000_0000;
    hq.command_length = 0x30;
    let req = check(
        Request::SubmitCommandToHwQueue {
            cmd: DxgkvmbCommandSubmitCommandToHwQueue {
                hdr: vhdr(v::DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE),
                args: hq,
            },
            written_primaries: vec![],
            priv_drv_data: vec![],
        },
        vh(52)
            .u32(0x101)
            .u32(0)
            .u64(3)
            .u64(0x1_0000_0000)
            .u32(0x30)
            .u32(0)
            .u64(0)
            .u32(0)
            .u32(0)
            .u64(0)
            .done(),
    );
    check_reply(
        &req,
        Reply::Status(NtStatus::SUCCESS),
        status(NtStatus::SUCCESS),
    );

    let req = check(
        Request::Escape {
            cmd: DxgkvmbCommandEscape {
                hdr: vhdr(v::DXGK_VMBCOMMAND_ESCAPE),
                adapter: h(0x40000040),
                device: h(0x81),
                r#type: escape_type::DRIVERPRIVATE,
                flags: D3dddiEscapeFlags(0),
                priv_drv_data_size: 4,
                context: h(0),
            },
            priv_drv_data: vec![1, 2, 3, 4],
        },
        vh(13)
            .u32(0x40000040)
            .u32(0x81)
            .u32(0)
            .u32(0)
            .u32(4)
            .u32(0)
            .raw(&[1, 2, 3, 4])
            .done(),
    );
    check_reply(
        &req,
        Reply::Escape {
            priv_drv_data: vec![5, 6, 7, 8],
        },
        vec![5, 6, 7, 8],
    );
}

#[test]
fn host_events() {
    let ev = HostEvent::signal(h(PROC), 77, 1234);
    let bytes = b()
        .u64(0)
        .u32(PROC)
        .u32(DXGKVMB_HOST_TO_VM)
        .u32(0)
        .pad(4)
        .u64(77)
        .u64(1234)
        .u8(0)
        .pad(7)
        .done();
    assert_eq!(ev.encode(), bytes);
    assert_eq!(HostEvent::decode(&bytes).unwrap(), ev);

    let HostEvent::SignalGuestEvent(mut passive) = ev else {
        unreachable!()
    };
    passive.hdr.command_type = host_to_vm::DXGK_VMBCOMMAND_SIGNALGUESTEVENTPASSIVE;
    let ev = HostEvent::SignalGuestEventPassive(passive);
    let mut bytes3 = bytes.clone();
    bytes3[16] = 3;
    assert_eq!(ev.encode(), bytes3);
    assert_eq!(HostEvent::decode(&bytes3).unwrap(), ev);

    let ev = HostEvent::SetGuestData(DxgkvmbCommandSetGuestData {
        hdr: DxgkvmbCommandHostToVm::new(host_to_vm::DXGK_VMBCOMMAND_SETGUESTDATA, h(0)),
        guest_pointer: 0x8_0000_2010,
        data64: 5,
        flags: set_guestdata_type::UINT64 << 1,
        _pad0: 0,
    });
    let bytes = b()
        .u64(0)
        .u32(0)
        .u32(2)
        .u32(2)
        .pad(4)
        .u64(0x8_0000_2010)
        .u64(5)
        .u32(2)
        .pad(4)
        .done();
    assert_eq!(ev.encode(), bytes);
    assert_eq!(HostEvent::decode(&bytes).unwrap(), ev);
}

#[test]
fn frame_header_and_config() {
    let payload = vh(1).u32(0x81).pad(4).done();
    let frame = encode_frame(
        FrameKind::Request,
        0x0102030405060708,
        WinLuid { a: 0x1000, b: 0 },
        NtStatus::SUCCESS,
        &payload,
    );
    let expected_header = hex("44 58 47 56  01 00  00 00  08 07 06 05 04 03 02 01
         20 00 00 00  00 00 00 00  00 10 00 00 00 00 00 00");
    assert_eq!(&frame[..32], expected_header.as_slice());
    let parsed = Frame::parse(&frame, FrameKind::Request).unwrap();
    assert_eq!(parsed.payload, payload.as_slice());
    assert_eq!(parsed.header.request_id, 0x0102030405060708);

    let reply = encode_frame(
        FrameKind::Reply,
        9,
        WinLuid::default(),
        NtStatus::INVALID_PARAMETER,
        &[],
    );
    assert_eq!(
        reply,
        hex("44 58 47 56 01 00 01 00 09 00 00 00 00 00 00 00
             00 00 00 00 0d 00 00 c0 00 00 00 00 00 00 00 00")
    );
    let event = FrameHeader::new(FrameKind::Event, 0, 48, WinLuid::default());
    assert_eq!(event.flags, FrameFlags::EVENT);

    let cfg = VirtioDxgConfig::new(&[WinLuid { a: 0x1000, b: 0 }]);
    let bytes = zerocopy::IntoBytes::as_bytes(&cfg).to_vec();
    assert_eq!(
        bytes,
        b().raw(b"DXGV")
            .u16(1)
            .u16(1)
            .u32(40)
            .u32(16)
            .u32(1)
            .u32(128 * 1024)
            .u32(0x1000)
            .u32(0)
            .pad(15 * 8)
            .done()
    );
    assert_eq!(cfg.adapters().unwrap(), &[WinLuid { a: 0x1000, b: 0 }]);
    assert_eq!(negotiate_version(40, 16, 40, 16), Some(40));
    assert_eq!(negotiate_version(41, 16, 40, 16), Some(40));
    assert_eq!(negotiate_version(40, 40, 27, 16), None);
}

#[test]
fn names_and_numbers() {
    use crate::message::command_name;
    assert_eq!(
        command_name(DXGKVMB_VGPU_TO_HOST, 52),
        Some("DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE")
    );
    assert_eq!(
        command_name(DXGKVMB_VM_TO_HOST, 1010),
        Some("DXGK_VMBCOMMAND_SETIOSPACEREGION")
    );
    assert_eq!(command_name(DXGKVMB_VGPU_TO_HOST, 63), None);
    assert_eq!(
        command_name(DXGKVMB_HOST_TO_VM, 0),
        Some("DXGK_VMBCOMMAND_SIGNALGUESTEVENT")
    );
    assert_eq!(v::DXGK_VMBCOMMAND_QUERYRESOURCEINFO, 64);
    assert_eq!(g::DXGK_VMBCOMMAND_SHAREOBJECTWITHHOST, 1021);
}
