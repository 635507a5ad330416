//! Handles of a recording and of its replay: the host made the recorded
//! ones, another host (or another backend) may make others. Replies pair
//! them up; requests get theirs rewritten before dispatch.

use std::collections::HashMap;

use dxvmm_protocol::abi::D3dkmtHandle;
use dxvmm_protocol::message::Request;

/// Recorded handle -> replayed handle.
#[derive(Clone, Debug, Default)]
pub struct Remap {
    map: HashMap<u32, u32>,
}

impl Remap {
    /// Notes that the replay made `new` where the recording had `old`.
    /// Fails with a description when that contradicts what is known.
    pub fn pair(&mut self, what: &str, old: D3dkmtHandle, new: D3dkmtHandle) -> Result<(), String> {
        match (old.0, new.0) {
            (0, 0) => Ok(()),
            (0, _) | (_, 0) => Err(format!(
                "{what}: recorded {:#x}, replayed {:#x} (one of them is null)",
                old.0, new.0
            )),
            (o, n) => match self.map.get(&o) {
                Some(m) if *m != n => Err(format!(
                    "{what}: recorded {o:#x} was replayed as {m:#x} before, now {n:#x}"
                )),
                _ => {
                    self.map.insert(o, n);
                    Ok(())
                }
            },
        }
    }

    /// The replay's handle for `old` (itself when unknown: a null or bogus
    /// handle is passed on as recorded, to be refused as it was).
    pub fn get(&self, old: D3dkmtHandle) -> D3dkmtHandle {
        self.map.get(&old.0).map_or(old, |n| D3dkmtHandle(*n))
    }

    /// Rewrites every handle in `req`.
    pub fn apply(&self, req: &mut Request) {
        each_handle(req, &mut |h| *h = self.get(*h));
    }
}

fn all(v: &mut [D3dkmtHandle], f: &mut dyn FnMut(&mut D3dkmtHandle)) {
    v.iter_mut().for_each(f);
}

/// Calls `f` on every handle field of `req`: the command header's process
/// and each object handle the command names.
pub fn each_handle(req: &mut Request, f: &mut dyn FnMut(&mut D3dkmtHandle)) {
    match req {
        Request::CreateProcess(c) => f(&mut c.hdr.process),
        Request::DestroyProcess(c) => f(&mut c.hdr.process),
        Request::OpenSyncObject(c) => {
            f(&mut c.hdr.process);
            f(&mut c.device);
            f(&mut c.global_sync_object);
        }
        Request::DestroySyncObject(c) => {
            f(&mut c.hdr.process);
            f(&mut c.sync_object);
        }
        Request::SetIoSpaceRegion(c) => f(&mut c.hdr.process),
        Request::OpenAdapter(c) => f(&mut c.hdr.process),
        Request::CloseAdapter(c) => {
            f(&mut c.hdr.process);
            f(&mut c.host_handle);
        }
        Request::GetInternalAdapterInfo(c) => f(&mut c.hdr.process),
        Request::QueryAdapterInfo { cmd, .. } => f(&mut cmd.hdr.process),
        Request::QueryVideoMemoryInfo(c) => {
            f(&mut c.hdr.process);
            f(&mut c.adapter);
        }
        Request::CreateDevice(c) => f(&mut c.hdr.process),
        Request::DestroyDevice(c) => {
            f(&mut c.hdr.process);
            f(&mut c.device);
        }
        Request::FlushDevice(c) => {
            f(&mut c.hdr.process);
            f(&mut c.device);
        }
        Request::GetDeviceState(c) => {
            f(&mut c.hdr.process);
            f(&mut c.args.device);
        }
        Request::CreateContextVirtual { cmd, .. } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.device);
        }
        Request::DestroyContext(c) => {
            f(&mut c.hdr.process);
            f(&mut c.context);
        }
        Request::CreateHwQueue { cmd, .. } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.context);
        }
        Request::DestroyHwQueue(c) => {
            f(&mut c.hdr.process);
            f(&mut c.hwqueue);
        }
        Request::CreatePagingQueue(c) => {
            f(&mut c.hdr.process);
            f(&mut c.args.device);
        }
        Request::DestroyPagingQueue(c) => {
            f(&mut c.hdr.process);
            f(&mut c.paging_queue);
        }
        Request::CreateAllocation { cmd, .. } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.device);
            f(&mut cmd.resource);
        }
        Request::SetExistingSysmemPages { cmd, .. } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.device);
            f(&mut cmd.allocation);
        }
        Request::DestroyAllocation { cmd, allocations } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.device);
            f(&mut cmd.resource);
            all(allocations, f);
        }
        Request::MakeResident { cmd, allocations } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.device);
            f(&mut cmd.paging_queue);
            all(allocations, f);
        }
        Request::Evict { cmd, allocations } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.device);
            all(allocations, f);
        }
        Request::QueryAllocationResidency { cmd, allocations } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.args.device);
            f(&mut cmd.args.resource);
            all(allocations, f);
        }
        Request::GetAllocationPriority { cmd, allocations } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.device);
            f(&mut cmd.resource);
            all(allocations, f);
        }
        Request::SetAllocationPriority {
            cmd, allocations, ..
        } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.device);
            f(&mut cmd.resource);
            all(allocations, f);
        }
        Request::Lock2(c) => {
            f(&mut c.hdr.process);
            f(&mut c.args.device);
            f(&mut c.args.allocation);
        }
        Request::Unlock2(c) => {
            f(&mut c.hdr.process);
            f(&mut c.args.device);
            f(&mut c.args.allocation);
        }
        Request::ReserveGpuVirtualAddress(c) => {
            f(&mut c.hdr.process);
            f(&mut c.args.adapter);
        }
        Request::MapGpuVirtualAddress(c) => {
            f(&mut c.hdr.process);
            f(&mut c.args.paging_queue);
            f(&mut c.args.allocation);
            f(&mut c.device);
        }
        Request::FreeGpuVirtualAddress(c) => {
            f(&mut c.hdr.process);
            f(&mut c.args.adapter);
        }
        Request::CreateSyncObject(c) => {
            f(&mut c.hdr.process);
            f(&mut c.args.device);
        }
        Request::SignalSyncObject {
            cmd,
            objects,
            contexts,
            ..
        } => {
            f(&mut cmd.hdr.process);
            all(objects, f);
            all(contexts, f);
        }
        Request::WaitForSyncObjectFromCpu { cmd, objects, .. } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.device);
            all(objects, f);
        }
        Request::WaitForSyncObjectFromGpu { cmd, objects, .. } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.context);
            all(objects, f);
        }
        Request::SubmitCommand {
            cmd,
            history_buffers,
            ..
        } => {
            f(&mut cmd.hdr.process);
            let n =
                (cmd.args.broadcast_context_count as usize).min(cmd.args.broadcast_context.len());
            all(&mut cmd.args.broadcast_context[..n], f);
            all(history_buffers, f);
        }
        Request::SubmitCommandToHwQueue {
            cmd,
            written_primaries,
            ..
        } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.args.hwqueue);
            all(written_primaries, f);
        }
        Request::Escape { cmd, .. } => {
            f(&mut cmd.hdr.process);
            f(&mut cmd.adapter);
            f(&mut cmd.device);
            f(&mut cmd.context);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dxvmm_protocol::vmbus::DxgkvmbCommandLock2;

    #[test]
    fn pairs_are_consistent_and_requests_are_rewritten() {
        let mut m = Remap::default();
        m.pair(
            "process",
            D3dkmtHandle(0x8000_0000),
            D3dkmtHandle(0x8000_0040),
        )
        .unwrap();
        m.pair(
            "allocation",
            D3dkmtHandle(0x4000_0001),
            D3dkmtHandle(0x4000_0002),
        )
        .unwrap();
        assert!(m
            .pair("allocation", D3dkmtHandle(0x4000_0001), D3dkmtHandle(7))
            .is_err());
        assert!(m.pair("device", D3dkmtHandle(5), D3dkmtHandle(0)).is_err());
        let mut c: DxgkvmbCommandLock2 = Default::default();
        c.hdr.process = D3dkmtHandle(0x8000_0000);
        c.args.allocation = D3dkmtHandle(0x4000_0001);
        c.args.device = D3dkmtHandle(0x123);
        let mut r = Request::Lock2(c);
        m.apply(&mut r);
        let Request::Lock2(c) = r else { unreachable!() };
        assert_eq!(c.hdr.process, D3dkmtHandle(0x8000_0040));
        assert_eq!(c.args.allocation, D3dkmtHandle(0x4000_0002));
        assert_eq!(c.args.device, D3dkmtHandle(0x123));
    }
}
