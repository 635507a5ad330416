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
//! - LOCK2 (before the device acts): the allocation's pages if they are
//!   still due (new pages: a reused page holds what the guest put there,
//!   not what the trace last said of it).
//! - SUBMITCOMMAND / SUBMITCOMMANDTOHWQUEUE: captures the pages of the command
//!   stream (found through the process's MAPGPUVIRTUALADDRESS mappings) and of
//!   every allocation the stream names that is due or still locked (every
//!   due or locked one when the stream does not decode).
//! - LOCK2 (after a successful reply): captures the allocation's pages as a
//!   result: what the GPU computed, for a replay to compare; but only if a
//!   submit could have written the allocation since the trace last said
//!   what it holds. A submit could write what its stream names as COPY,
//!   FILL or TIMESTAMP destinations and every dispatch binding (the
//!   backend takes writability from the shader, not the binding's
//!   READ_ONLY flag), resolved to allocations through the process's
//!   MAPGPUVIRTUALADDRESS replies; a stream or range that does not resolve
//!   counts as writing every allocation of the process. A process that
//!   has made the GPU wait (FENCE_WAIT, WAITFORSYNCOBJECTFROMGPU) may have
//!   work queued that writes later than its submit, so its written
//!   allocations stay written. A result skipped means "unchanged"; a
//!   replay checks that its own LOCK2 left those pages as they were.
//!
//! [`Capture`] only decides which page frames to copy, and when; the copying
//! is [`Shadow::pages`]: per 4 KiB page, diffed against a shadow copy of what
//! the trace last said the page holds (zeros at first, as in a replay's
//! fresh guest memory), so unchanged pages cost no trace space. Large
//! results go through [`Shadow::digests`] instead: the changed pages are
//! recorded as digests ([`crate::digest`]), and the shadow keeps each
//! page's hash rather than its bytes. The recorder runs both on the device
//! thread or on its writer thread (see [`crate::recorder`]).

use std::collections::{HashMap, HashSet};

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

use crate::digest::{page_hash, zero_page_hash, Combiner};
use crate::format::MAX_MEMORY_CHUNK;

const PAGE: u64 = 4096;

#[derive(Default)]
struct Alloc {
    pfns: Vec<u64>,
    /// The backend will upload the pages at the next use.
    due: bool,
    locked: bool,
    /// A submit may have written the allocation, or its pages are new,
    /// since the trace last captured its result: the next LOCK2 result is
    /// captured. Set with the pages (SETEXISTINGSYSMEMPAGES).
    written: bool,
    /// A TIMESTAMP command wrote into it: its results are captured as
    /// bytes, never as a digest (a replay skips the timestamps' bytes,
    /// which it cannot do inside a digest).
    timestamps: bool,
}

/// The pages of a LOCK2 result to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultPages {
    pub pfns: Vec<u64>,
    /// Whether a TIMESTAMP command may have written the allocation.
    pub timestamps: bool,
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
    /// Processes that have made the GPU wait (their work may run after
    /// a later LOCK2).
    gpu_waits: HashSet<u32>,
    /// LOCK2 results not captured: no submit could have written them.
    pub skipped: u64,
}

/// What the trace says a captured page holds.
enum Known {
    Bytes(Box<[u8]>),
    /// Known by its hash only: the page was last recorded in a digest.
    Hash(u128),
}

/// What the trace says each captured page holds.
#[derive(Default)]
pub struct Shadow {
    pages: HashMap<u64, Known>,
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
                | vgpu::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMGPU
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
                a.written = true;
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
                // New pages no capture has taken yet hold what the guest
                // put there (zeros, or the caller's own memory, possibly a
                // page that held another allocation's results): an input,
                // which the backend leaves in place unless the GPU wrote
                // the allocation. Taken before the LOCK2 acts.
                let key = (process, cmd.args.allocation.0);
                if let (Some(a), Some(_)) = (self.allocs.get_mut(&key), mem) {
                    if a.due {
                        a.due = false;
                        out.push(a.pfns.clone());
                    }
                }
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
            Request::WaitForSyncObjectFromGpu { .. } => {
                self.gpu_waits.insert(process);
            }
            Request::DestroyProcess(_) => {
                self.allocs.retain(|(p, _), _| *p != process);
                self.vas.remove(&process);
                self.gpu_waits.remove(&process);
            }
            _ => {}
        }
    }

    /// Follows the reply to the request last given to `before_request`;
    /// appends the page frames the backend may have written to `out`.
    pub fn after_reply(
        &mut self,
        frame: &[u8],
        mem: Option<&GuestMemoryMmap>,
        out: &mut Vec<ResultPages>,
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
                    if a.written {
                        out.push(ResultPages {
                            pfns: a.pfns.clone(),
                            timestamps: a.timestamps,
                        });
                        // Work queued behind a GPU wait may still write it.
                        if !self.gpu_waits.contains(&process) {
                            a.written = false;
                        }
                    } else {
                        self.skipped += 1;
                    }
                }
            }
        }
    }

    /// The page frames of `process`'s `allocation`, as the frames followed
    /// so far gave them (`u64::MAX` where none was given).
    pub fn allocation_pages(&self, process: u32, allocation: u32) -> Option<&[u64]> {
        self.allocs
            .get(&(process, allocation))
            .map(|a| a.pfns.as_slice())
    }

    /// Whether the next LOCK2 result of `process`'s `allocation` would be
    /// captured (for tests and counters).
    pub fn is_written(&self, process: u32, allocation: u32) -> Option<bool> {
        self.allocs.get(&(process, allocation)).map(|a| a.written)
    }

    /// Marks what `[va, va + len)` of `process` resolves to as written; a
    /// range no single mapping holds (the backend refuses those, or the
    /// mappings followed here are not the backend's) marks every
    /// allocation of the process.
    fn mark_written(&mut self, process: u32, va: u64, len: u64, timestamp: bool) {
        let end = va.saturating_add(len);
        let maps = self.vas.get(&process).map(Vec::as_slice).unwrap_or(&[]);
        let held = maps
            .iter()
            .any(|m| va >= m.va && end <= m.va.saturating_add(m.size));
        // Every mapping the range touches: a stale one costs a capture.
        let hit: Option<Vec<u32>> = held.then(|| {
            maps.iter()
                .filter(|m| va < m.va.saturating_add(m.size) && end > m.va)
                .map(|m| m.allocation)
                .collect()
        });
        for ((p, h), a) in self.allocs.iter_mut() {
            if *p == process && hit.as_ref().is_none_or(|hit| hit.contains(h)) {
                a.written = true;
                a.timestamps |= timestamp;
            }
        }
    }

    /// A submit whose stream could not be read or decoded: the backend
    /// refuses it, but this cannot tell what it would have done.
    fn unknown_stream(&mut self, process: u32) {
        self.mark_written(process, 0, u64::MAX, true);
        self.gpu_waits.insert(process);
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
        // What it may write: (va, length, a timestamp).
        let mut writes: Option<Vec<(u64, u64, bool)>> = None;
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
                let mut w = Vec::new();
                for c in &s.commands {
                    match c {
                        Command::Copy {
                            src_va,
                            dst_va,
                            size,
                        } => {
                            vas.extend([*src_va, *dst_va]);
                            w.push((*dst_va, *size, false));
                        }
                        Command::Fill { dst_va, size, .. } => {
                            vas.push(*dst_va);
                            w.push((*dst_va, *size, false));
                        }
                        Command::Timestamp { dst_va } => {
                            vas.push(*dst_va);
                            w.push((*dst_va, 8, true));
                        }
                        Command::Dispatch { bindings, .. } => {
                            vas.extend(bindings.iter().map(|b| b.va));
                            // Read-only or not, as the shader says.
                            w.extend(bindings.iter().map(|b| (b.va, b.size, false)));
                        }
                        Command::FenceWait { .. } => {
                            self.gpu_waits.insert(process);
                        }
                        Command::FenceSignal { .. } => {}
                    }
                }
                writes = Some(w);
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
        match writes {
            Some(w) => {
                for (va, len, timestamp) in w {
                    self.mark_written(process, va, len, timestamp);
                }
            }
            None => self.unknown_stream(process),
        }
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
                Some(Known::Bytes(s)) if **s == *page => bytes.truncate(at),
                Some(Known::Bytes(s)) => s.copy_from_slice(page),
                Some(Known::Hash(h)) if *h == page_hash(page) => bytes.truncate(at),
                Some(k) => *k = Known::Bytes(Box::from(&*page)),
                None if *page == ZERO => bytes.truncate(at),
                None => {
                    self.pages.insert(pfn, Known::Bytes(Box::from(&*page)));
                }
            }
        }
        if let Some(r) = run.filter(|(_, b)| !b.is_empty()) {
            out.push(r);
        }
    }

    /// As [`Shadow::pages`], for a result recorded by digest: the pages
    /// `pfns` that differ from the shadow, in runs of physically contiguous
    /// pages, each run as (guest address, length, digest). Each page is
    /// read into one small buffer and hashed there; the shadow keeps the
    /// hash. No page bytes are kept or written.
    pub fn digests(
        &mut self,
        mem: &GuestMemoryMmap,
        pfns: &[u64],
        out: &mut Vec<(u64, u64, u128)>,
    ) {
        const LEN: usize = PAGE as usize;
        let mut page = vec![0u8; LEN];
        let mut run: Option<(u64, u64)> = None;
        let mut hashes = Combiner::default();
        let mut flush = |run: &mut Option<(u64, u64)>, hashes: &mut Combiner| {
            if let Some((gpa, len)) = run.take() {
                out.push((gpa, len, hashes.finish()));
            }
        };
        for &pfn in pfns {
            let Some(gpa) = pfn.checked_mul(PAGE) else {
                continue;
            };
            if mem.read_slice(&mut page, GuestAddress(gpa)).is_err() {
                flush(&mut run, &mut hashes);
                continue;
            }
            let h = page_hash(&page);
            let unchanged = match self.pages.get(&pfn) {
                Some(Known::Hash(k)) => *k == h,
                Some(Known::Bytes(b)) => **b == *page,
                None => h == zero_page_hash(),
            };
            if unchanged {
                flush(&mut run, &mut hashes);
                continue;
            }
            self.pages.insert(pfn, Known::Hash(h));
            match &mut run {
                Some((start, len)) if *start + *len == gpa && *len < MAX_MEMORY_CHUNK as u64 => {
                    *len += PAGE;
                }
                _ => {
                    flush(&mut run, &mut hashes);
                    run = Some((gpa, PAGE));
                }
            }
            hashes.push(h);
        }
        flush(&mut run, &mut hashes);
    }
}
