//! Which guest memory a trace must hold for a replay to do the same work.
//!
//! Frames name guest memory but do not carry it: a command stream sits at a
//! GPU VA inside a CPU-visible allocation, and the data a compute job reads
//! is in the allocation's guest pages. The backend reads those pages at
//! defined points only (docs/protocol.md §2.6), and this module copies them
//! there, following the frames:
//!
//! - SETEXISTINGSYSMEMPAGES: remembers the allocation's page frames; the
//!   pages are due for capture (their contents are uploaded at first use).
//! - UNLOCK2: captures the allocation's pages (the CPU may have written them).
//! - SUBMITCOMMAND / SUBMITCOMMANDTOHWQUEUE: captures the pages of the command
//!   stream (found through the process's MAPGPUVIRTUALADDRESS mappings) and of
//!   every allocation the stream names that is due or still locked (every
//!   due or locked one when the stream does not decode).
//! - LOCK2 (after a successful reply): captures the allocation's pages as a
//!   result: what the GPU computed, for a replay to compare.
//!
//! [`Capture`] only decides which page frames to copy, and when; the copying
//! is [`Shadow::pages`]: per 4 KiB page, diffed against a shadow copy of what
//! the trace last said the page holds (zeros at first, as in a replay's
//! fresh guest memory), so unchanged pages cost no trace space. The recorder
//! runs it on the device thread or on its writer thread (see
//! [`crate::recorder`]).

use std::collections::HashMap;

use dxvmm_protocol::cmdstream::{Command, CommandStream};
use dxvmm_protocol::frame::{Frame, FrameKind};
use dxvmm_protocol::message::Request;
use dxvmm_protocol::vmbus::{
    global, vgpu, DxgkvmbCommandLock2Return, DxgkvmbCommandMapGpuVirtualAddressReturn,
    DXGKVMB_VGPU_TO_HOST, DXGKVMB_VM_TO_HOST,
};
use dxvmm_protocol::NtStatus;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::FromBytes;

use crate::format::MAX_MEMORY_CHUNK;

const PAGE: u64 = 4096;

#[derive(Default)]
struct Alloc {
    pfns: Vec<u64>,
    /// The backend will upload the pages at the next use.
    due: bool,
    locked: bool,
}

struct VaMap {
    va: u64,
    size: u64,
    allocation: u32,
    offset: u64,
}

enum Pending {
    Map {
        process: u32,
        allocation: u32,
        offset: u64,
        size: u64,
    },
    Lock {
        process: u32,
        allocation: u32,
    },
}

/// What the recorder knows of the guest's allocations.
#[derive(Default)]
pub struct Capture {
    allocs: HashMap<(u32, u32), Alloc>,
    vas: HashMap<u32, Vec<VaMap>>,
    pending: Option<Pending>,
}

/// What the trace says each captured page holds.
#[derive(Default)]
pub struct Shadow {
    pages: HashMap<u64, Box<[u8]>>,
}

/// Whether a request frame lets the guest change, or reuse, pages captured
/// before it: LOCK2 (the guest may write the allocation once it is locked,
/// and the backend writes its results there), DESTROYALLOCATION and
/// DESTROYPROCESS (the pages go back to the guest). Captures still in
/// flight must be done before the device acts on it.
pub fn releases_pages(frame: &[u8]) -> bool {
    let Some((channel, command)) = command_of(frame) else {
        return false;
    };
    match channel & 0xff {
        DXGKVMB_VGPU_TO_HOST => matches!(
            command,
            vgpu::DXGK_VMBCOMMAND_LOCK2 | vgpu::DXGK_VMBCOMMAND_DESTROYALLOCATION
        ),
        DXGKVMB_VM_TO_HOST => command == global::DXGK_VMBCOMMAND_DESTROYPROCESS,
        _ => false,
    }
}

/// The command header's channel and command number.
pub(crate) fn command_of(frame: &[u8]) -> Option<(u32, u32)> {
    let word = |at: usize| {
        frame
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    Some((word(32 + 12)?, word(32 + 16)?))
}

/// Whether a request frame is one that [`Capture`] follows (cheap: reads the
/// command header's channel and number only).
fn interesting(frame: &[u8]) -> bool {
    let Some((channel, command)) = command_of(frame) else {
        return false;
    };
    match channel & 0xff {
        DXGKVMB_VGPU_TO_HOST => matches!(
            command,
            vgpu::DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES
                | vgpu::DXGK_VMBCOMMAND_UNLOCK2
                | vgpu::DXGK_VMBCOMMAND_LOCK2
                | vgpu::DXGK_VMBCOMMAND_SUBMITCOMMAND
                | vgpu::DXGK_VMBCOMMAND_SUBMITCOMMANDTOHWQUEUE
                | vgpu::DXGK_VMBCOMMAND_DESTROYALLOCATION
                | vgpu::DXGK_VMBCOMMAND_MAPGPUVIRTUALADDRESS
                | vgpu::DXGK_VMBCOMMAND_FREEGPUVIRTUALADDRESS
        ),
        DXGKVMB_VM_TO_HOST => command == global::DXGK_VMBCOMMAND_DESTROYPROCESS,
        _ => false,
    }
}

impl Capture {
    /// Follows a request before the device acts on it; appends the guest
    /// page frames the backend is about to read to `out`, one list per
    /// capture (`mem` reads command streams; without it nothing is due).
    pub fn before_request(
        &mut self,
        frame: &[u8],
        mem: Option<&GuestMemoryMmap>,
        out: &mut Vec<Vec<u64>>,
    ) {
        self.pending = None;
        if !interesting(frame) {
            return;
        }
        let Ok(f) = Frame::parse(frame, FrameKind::Request) else {
            return;
        };
        let Ok(request) = Request::decode(f.payload) else {
            return;
        };
        let process = request.process().0;
        match request {
            Request::SetExistingSysmemPages { cmd, pfns } => {
                let a = self.allocs.entry((process, cmd.allocation.0)).or_default();
                let start = cmd.alloc_offset_in_pages as usize;
                let Some(end) = start.checked_add(pfns.len()) else {
                    return;
                };
                // The device refuses page lists past the allocation; a
                // bogus one here only costs a larger vector, bounded by the
                // frame size.
                if end > a.pfns.len() {
                    a.pfns.resize(end, u64::MAX);
                }
                a.pfns[start..end].copy_from_slice(&pfns);
                a.due = true;
            }
            Request::Unlock2(cmd) => {
                let key = (process, cmd.args.allocation.0);
                if let (Some(a), Some(_)) = (self.allocs.get_mut(&key), mem) {
                    a.locked = false;
                    a.due = false;
                    out.push(a.pfns.clone());
                }
            }
            Request::Lock2(cmd) => {
                self.pending = Some(Pending::Lock {
                    process,
                    allocation: cmd.args.allocation.0,
                });
            }
            Request::SubmitCommand { cmd, .. } => {
                let a = cmd.args;
                self.submit(
                    process,
                    a.command_buffer,
                    u64::from(a.command_length),
                    mem,
                    out,
                );
            }
            Request::SubmitCommandToHwQueue { cmd, .. } => {
                let a = cmd.args;
                self.submit(
                    process,
                    a.command_buffer,
                    u64::from(a.command_length),
                    mem,
                    out,
                );
            }
            Request::DestroyAllocation { allocations, .. } => {
                for h in allocations {
                    self.allocs.remove(&(process, h.0));
                    if let Some(v) = self.vas.get_mut(&process) {
                        v.retain(|m| m.allocation != h.0);
                    }
                }
            }
            Request::MapGpuVirtualAddress(cmd) => {
                let a = cmd.args;
                if let (Some(offset), Some(size)) = (
                    a.offset_in_pages.checked_mul(PAGE),
                    a.size_in_pages.checked_mul(PAGE),
                ) {
                    self.pending = Some(Pending::Map {
                        process,
                        allocation: a.allocation.0,
                        offset,
                        size,
                    });
                }
            }
            Request::FreeGpuVirtualAddress(cmd) => {
                let (base, size) = (cmd.args.base_address, cmd.args.size);
                if let Some(v) = self.vas.get_mut(&process) {
                    v.retain(|m| {
                        m.va.saturating_add(m.size) <= base || m.va >= base.saturating_add(size)
                    });
                }
            }
            Request::DestroyProcess(_) => {
                self.allocs.retain(|(p, _), _| *p != process);
                self.vas.remove(&process);
            }
            _ => {}
        }
    }

    /// Follows the reply to the request last given to `before_request`;
    /// appends the page frames the backend wrote to `out`.
    pub fn after_reply(
        &mut self,
        frame: &[u8],
        mem: Option<&GuestMemoryMmap>,
        out: &mut Vec<Vec<u64>>,
    ) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let Ok(f) = Frame::parse(frame, FrameKind::Reply) else {
            return;
        };
        if !f.header.status.is_success() {
            return;
        }
        match pending {
            Pending::Map {
                process,
                allocation,
                offset,
                size,
            } => {
                if let Ok((r, _)) =
                    DxgkvmbCommandMapGpuVirtualAddressReturn::read_from_prefix(f.payload)
                {
                    if r.status == NtStatus::SUCCESS && r.virtual_address != 0 {
                        self.vas.entry(process).or_default().push(VaMap {
                            va: r.virtual_address,
                            size,
                            allocation,
                            offset,
                        });
                    }
                }
            }
            Pending::Lock {
                process,
                allocation,
            } => {
                let Ok((r, _)) = DxgkvmbCommandLock2Return::read_from_prefix(f.payload) else {
                    return;
                };
                if r.status != NtStatus::SUCCESS {
                    return;
                }
                if let (Some(a), Some(_)) = (self.allocs.get_mut(&(process, allocation)), mem) {
                    a.locked = true;
                    out.push(a.pfns.clone());
                }
            }
        }
    }

    /// The guest-physical (address, length) pieces of `[va, va + len)` in
    /// `process`'s GPU VA space, as the frames followed so far map it.
    pub fn guest_ranges(&self, process: u32, va: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        let m = self
            .vas
            .get(&process)?
            .iter()
            .find(|m| va >= m.va && va.checked_add(len).is_some_and(|e| e <= m.va + m.size))?;
        let a = self.allocs.get(&(process, m.allocation))?;
        let mut at = m.offset + (va - m.va);
        let end = at + len;
        let mut out: Vec<(u64, u64)> = Vec::new();
        while at < end {
            let pfn = *a.pfns.get((at / PAGE) as usize)?;
            let gpa = pfn.checked_mul(PAGE)? + at % PAGE;
            let n = (PAGE - at % PAGE).min(end - at);
            match out.last_mut() {
                Some((g, l)) if *g + *l == gpa => *l += n,
                _ => out.push((gpa, n)),
            }
            at += n;
        }
        Some(out)
    }

    fn submit(
        &mut self,
        process: u32,
        va: u64,
        len: u64,
        mem: Option<&GuestMemoryMmap>,
        out: &mut Vec<Vec<u64>>,
    ) {
        let Some(mem) = mem else { return };
        // The command stream: its pages, and the allocations it names.
        let mut touched: Option<Vec<u32>> = None;
        if let Some(ranges) = self.guest_ranges(process, va, len) {
            let mut stream = Vec::with_capacity(len as usize);
            let mut pfns = Vec::new();
            for (gpa, n) in &ranges {
                let mut b = vec![0u8; *n as usize];
                if mem.read_slice(&mut b, GuestAddress(*gpa)).is_err() {
                    stream.clear();
                    break;
                }
                stream.extend_from_slice(&b);
                let first = gpa / PAGE;
                let last = (gpa + n).div_ceil(PAGE);
                pfns.extend(first..last);
            }
            out.push(pfns);
            if let Ok(s) = CommandStream::decode(&stream) {
                let mut vas: Vec<u64> = Vec::new();
                for c in &s.commands {
                    match c {
                        Command::Copy { src_va, dst_va, .. } => vas.extend([*src_va, *dst_va]),
                        Command::Fill { dst_va, .. } | Command::Timestamp { dst_va } => {
                            vas.push(*dst_va)
                        }
                        Command::Dispatch { bindings, .. } => {
                            vas.extend(bindings.iter().map(|b| b.va))
                        }
                        Command::FenceSignal { .. } | Command::FenceWait { .. } => {}
                    }
                }
                let maps = self.vas.get(&process);
                touched = Some(
                    vas.iter()
                        .filter_map(|v| {
                            maps?
                                .iter()
                                .find(|m| *v >= m.va && *v < m.va + m.size)
                                .map(|m| m.allocation)
                        })
                        .collect(),
                );
            }
        }
        // Allocations whose pages the backend uploads before this work: due
        // (new pages, UNLOCK2) or locked, and named by the stream (all of
        // them when the stream did not decode).
        let mut due: Vec<u64> = Vec::new();
        for ((p, h), a) in self.allocs.iter_mut() {
            let named = touched.as_ref().is_none_or(|t| t.contains(h));
            if *p == process && (a.due || a.locked) && named {
                due.extend_from_slice(&a.pfns);
                a.due = false;
            }
        }
        out.push(due);
    }
}

impl Shadow {
    /// Captures the pages `pfns` that differ from the shadow, in runs of
    /// physically contiguous pages. Each page is read once, straight into
    /// the run that may carry it, and compared there; an unchanged one is
    /// dropped from the run again. Shadows are overwritten in place, so a
    /// page captured before costs no allocation.
    pub fn pages(&mut self, mem: &GuestMemoryMmap, pfns: &[u64], out: &mut Vec<(u64, Vec<u8>)>) {
        const LEN: usize = PAGE as usize;
        // A page the trace never mentioned holds zeros in a replay.
        static ZERO: [u8; LEN] = [0; LEN];
        let mut run: Option<(u64, Vec<u8>)> = None;
        for &pfn in pfns {
            let Some(gpa) = pfn.checked_mul(PAGE) else {
                continue;
            };
            match &mut run {
                Some((start, bytes)) if bytes.is_empty() => *start = gpa,
                Some((start, bytes))
                    if *start + bytes.len() as u64 == gpa && bytes.len() < MAX_MEMORY_CHUNK => {}
                _ => {
                    if let Some(r) = run.take() {
                        out.push(r);
                    }
                    run = Some((gpa, Vec::new()));
                }
            }
            let Some((_, bytes)) = &mut run else {
                continue;
            };
            let at = bytes.len();
            bytes.resize(at + LEN, 0);
            let page = &mut bytes[at..];
            if mem.read_slice(page, GuestAddress(gpa)).is_err() {
                bytes.truncate(at);
                continue;
            }
            match self.pages.get_mut(&pfn) {
                Some(s) if **s == *page => bytes.truncate(at),
                Some(s) => s.copy_from_slice(page),
                None if *page == ZERO => bytes.truncate(at),
                None => {
                    self.pages.insert(pfn, Box::from(&*page));
                }
            }
        }
        if let Some(r) = run.filter(|(_, b)| !b.is_empty()) {
            out.push(r);
        }
    }
}
