//! Which guest memory a trace must hold for a replay to do the same work.
//!
//! Frames name guest memory but do not carry it: a command stream sits at a
//! GPU VA inside a CPU-visible allocation, and the data a compute job reads
//! is in the allocation's guest pages. The backend reads those pages at
//! defined points only (docs/protocol.md §2.6), and this module copies them
//! there, following the frames:
//!
//! - SETEXISTINGSYSMEMPAGES (once the device accepts it): remembers the
//!   allocation's page frames; the pages are due for capture (their
//!   contents are uploaded at first use).
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
//! fresh guest memory), so unchanged pages cost no trace space; of a
//! changed page, an input records only the changed bytes (a submit's
//! stream page whose fence value changed costs those 8 bytes), a result
//! the page whole (a replay accounts for a LOCK2's pages a page at a
//! time). Large results go through [`Shadow::digests`] instead: the changed pages are
//! recorded as digests ([`crate::digest`]), and the shadow keeps each
//! page's hash rather than its bytes. The recorder runs both on the device
//! thread or on its writer thread (see [`crate::recorder`]).

// foldhash, seeded at random per map: SipHash was a tenth of a tiny
// submission's time in the recorder (keys are handles and page frames).
use foldhash::{HashMap, HashSet};

use dxvmm_protocol::cmdstream::{Command, CommandStream, MAX_STREAM_SIZE};
use dxvmm_protocol::frame::{Frame, FrameKind};
use dxvmm_protocol::message::Request;
use dxvmm_protocol::vmbus::{
    global, vgpu, DxgkvmbCommandLock2Return, DxgkvmbCommandMapGpuVirtualAddressReturn,
    DXGKVMB_VGPU_TO_HOST, DXGKVMB_VM_TO_HOST,
};
use dxvmm_protocol::NtStatus;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
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
    /// Per page, whether an UPLOAD took all of it since the last LOCK2:
    /// the backend does not upload it again before the next (protocol.md
    /// §2.6), so UNLOCK2 and later uses do not capture it again.
    taken: Vec<bool>,
}

impl Alloc {
    /// The page frames the backend may still upload from.
    fn untaken(&self) -> impl Iterator<Item = u64> + '_ {
        self.pfns
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.taken.get(*i).copied().unwrap_or(false))
            .map(|(_, p)| *p)
    }
}

/// The pages of a LOCK2 result to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultPages {
    pub pfns: Vec<u64>,
    /// Whether a TIMESTAMP command may have written the allocation.
    pub timestamps: bool,
}

#[derive(Clone, Copy)]
struct VaMap {
    va: u64,
    size: u64,
    allocation: u32,
    offset: u64,
}

impl VaMap {
    fn end(&self) -> u64 {
        self.va.saturating_add(self.size)
    }
}

/// A process's GPU VA mappings as the frames followed so far made them,
/// by start and none overlapping (a new mapping replaces what it covers
/// of older ones, as the backend does): a lookup is a search, not a walk
/// of every mapping (with 2,000 allocations mapped, the walks tripled
/// what the recorder added to a tiny submission, `tiny_submit_cost`).
#[derive(Default)]
struct VaSpace(std::collections::BTreeMap<u64, VaMap>);

impl VaSpace {
    /// The mapping that holds `va`.
    fn at(&self, va: u64) -> Option<&VaMap> {
        let (_, m) = self.0.range(..=va).next_back()?;
        (va < m.end()).then_some(m)
    }

    /// The mappings that overlap `[va, end)`, the highest first.
    fn overlapping(&self, va: u64, end: u64) -> impl Iterator<Item = &VaMap> + '_ {
        // Sorted and apart: once one ends at or before `va`, so do all
        // below it.
        self.0
            .range(..end)
            .rev()
            .map(|(_, m)| m)
            .take_while(move |m| m.end() > va)
    }

    /// Adds `m`, cutting what it covers out of the mappings it overlaps.
    fn insert(&mut self, m: VaMap) {
        if m.size == 0 {
            return;
        }
        let end = m.end();
        let covered: Vec<VaMap> = self.overlapping(m.va, end).copied().collect();
        for old in covered {
            self.0.remove(&old.va);
            if old.va < m.va {
                let size = m.va - old.va;
                self.0.insert(old.va, VaMap { size, ..old });
            }
            // The rest's offset in its allocation: a guest's offset may
            // be near the top of u64, and then the rest is dropped.
            if let Some(offset) = old.offset.checked_add(end - old.va) {
                if old.end() > end {
                    let size = old.end() - end;
                    let rest = VaMap {
                        va: end,
                        size,
                        offset,
                        ..old
                    };
                    self.0.insert(end, rest);
                }
            }
        }
        self.0.insert(m.va, m);
    }

    /// Drops every mapping that overlaps `[base, base + size)`.
    fn free(&mut self, base: u64, size: u64) {
        let end = base.saturating_add(size);
        let gone: Vec<u64> = self.overlapping(base, end).map(|m| m.va).collect();
        for va in gone {
            self.0.remove(&va);
        }
    }

    /// Drops the mappings of `allocations` (sorted).
    fn forget(&mut self, allocations: &[u32]) {
        self.0
            .retain(|_, m| allocations.binary_search(&m.allocation).is_err());
    }
}

enum Pending {
    /// A SETEXISTINGSYSMEMPAGES: the pages from `start` on, once accepted.
    Pages {
        process: u32,
        allocation: u32,
        start: usize,
        pfns: Vec<u64>,
    },
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
    /// A submit's UPLOADs: (process, allocation) and the pages each took
    /// whole, taken once the submit is accepted (a refused one runs none).
    Taken(Vec<((u32, u32), std::ops::Range<usize>)>),
}

/// What the recorder knows of the guest's allocations.
#[derive(Default)]
pub struct Capture {
    allocs: HashMap<(u32, u32), Alloc>,
    vas: HashMap<u32, VaSpace>,
    pending: Option<Pending>,
    /// Processes that have made the GPU wait (their work may run after
    /// a later LOCK2).
    gpu_waits: HashSet<u32>,
    /// LOCK2 results not captured: no submit could have written them.
    pub skipped: u64,
    /// The command stream of the submit being requested ([`StreamParts`]).
    stream: StreamParts,
    /// The pages its UPLOAD commands name ([`Capture::take_uploads`]).
    uploads: Vec<Vec<u64>>,
    /// The last stream's bytes, the buffer kept for the next.
    stream_bytes: Vec<u8>,
    /// The GPU VAs the last stream named, and what it may write (va,
    /// length, a timestamp): the buffers kept for the next.
    stream_vas: Vec<u64>,
    stream_writes: Vec<(u64, u64, bool)>,
    /// The last stream's guest ranges and the allocations it named: the
    /// buffers kept for the next (a tiny submission allocates nothing).
    stream_ranges: Vec<(u64, u64)>,
    stream_allocs: Vec<u32>,
}

/// A command stream's bytes, a page at a time: (page frame, start, end)
/// within the page, widened to whole blocks of [`BLOCK`] bytes. The
/// recorder diffs these alone ([`Shadow::part`]) rather than the stream's
/// whole pages: a tiny submission's stream is a few dozen bytes of a 4 KiB
/// page, and the device thread would read both the page and its shadow.
pub type StreamParts = Vec<(u64, usize, usize)>;

/// What [`Shadow::part`] found changed: runs of (guest address, length),
/// their bytes one after the other in `bytes`. Kept by the caller and
/// refilled, so that a tiny submission's diff allocates nothing.
#[derive(Default, Debug)]
pub struct PartDiff {
    runs: Vec<(u64, usize)>,
    bytes: Vec<u8>,
}

impl PartDiff {
    pub fn clear(&mut self) {
        self.runs.clear();
        self.bytes.clear();
    }

    /// The runs, in the order found: (guest address, bytes).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let mut at = 0;
        self.runs.iter().map(move |&(gpa, n)| {
            let bytes = &self.bytes[at..at + n];
            at += n;
            (gpa, bytes)
        })
    }
}

/// What the trace says a captured page holds.
enum Known {
    /// The bytes, and their hash once a bulk capture ([`Shadow::pages`]
    /// with `by_hash`) has taken it: comparing a page's hash then reads
    /// the guest's page alone, not the shadow too.
    Bytes(Box<[u8]>, Option<u128>),
    /// Known by its hash only: the page was last recorded in a digest.
    Hash(u128),
    /// Not known: a result was read early and then not recorded (its
    /// LOCK2 failed), so the trace may not hold what the page holds; the
    /// next capture takes the page whole.
    Stale,
}

/// What the trace says each captured page holds.
#[derive(Default)]
pub struct Shadow {
    pages: HashMap<u64, Known>,
    /// [`Shadow::part`]'s read buffer, kept: a tiny submission's stream is
    /// a few dozen bytes, and a fresh page-sized buffer cost zeroing 4 KiB
    /// each time.
    scratch: Vec<u8>,
    /// [`Shadow::part`]'s changed ranges within the part, kept likewise.
    ranges: Vec<(usize, usize)>,
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
    /// A submit's command stream is not among them: [`Capture::take_stream`]
    /// gives its bytes.
    pub fn before_request(
        &mut self,
        frame: &[u8],
        mem: Option<&GuestMemoryMmap>,
        out: &mut Vec<Vec<u64>>,
    ) {
        self.pending = None;
        self.stream.clear();
        self.uploads.clear();
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
                // Taken once the device accepts them: it checks the pages
                // and the offset against the allocation, which this does
                // not know. Before, a refused offset near u32::MAX grew
                // the list to 32 GiB here.
                self.pending = Some(Pending::Pages {
                    process,
                    allocation: cmd.allocation.0,
                    start: cmd.alloc_offset_in_pages as usize,
                    pfns,
                });
            }
            Request::Unlock2(cmd) => {
                let key = (process, cmd.args.allocation.0);
                if let (Some(a), Some(_)) = (self.allocs.get_mut(&key), mem) {
                    a.locked = false;
                    a.due = false;
                    out.push(a.untaken().collect());
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
                let mut gone: Vec<u32> = allocations.iter().map(|h| h.0).collect();
                gone.sort_unstable();
                for h in &gone {
                    self.allocs.remove(&(process, *h));
                }
                if let Some(v) = self.vas.get_mut(&process) {
                    v.forget(&gone);
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
                    v.free(base, size);
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
            Pending::Pages {
                process,
                allocation,
                start,
                pfns,
            } => {
                let accepted =
                    NtStatus::read_from_prefix(f.payload).map_or(true, |(s, _)| s.is_success());
                let Some(end) = start.checked_add(pfns.len()).filter(|_| accepted) else {
                    return;
                };
                let a = self.allocs.entry((process, allocation)).or_default();
                if end > a.pfns.len() {
                    a.pfns.resize(end, u64::MAX);
                }
                a.pfns[start..end].copy_from_slice(&pfns);
                a.taken.clear();
                a.due = true;
                a.written = true;
            }
            Pending::Taken(marks) => {
                // A submit's reply is a status; the backend's refusal may
                // also come in the frame's header (checked above).
                let accepted =
                    NtStatus::read_from_prefix(f.payload).map_or(true, |(s, _)| s.is_success());
                if !accepted {
                    return;
                }
                for (key, whole) in marks {
                    if let Some(a) = self.allocs.get_mut(&key) {
                        a.taken.resize(a.pfns.len(), false);
                        if let Some(t) = a.taken.get_mut(whole) {
                            t.fill(true);
                        }
                    }
                }
            }
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
                        self.vas.entry(process).or_default().insert(VaMap {
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
                    a.taken.clear();
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

    /// The pages the LOCK2 given to `before_request` will capture as its
    /// result if it succeeds (0 when it captures none): known before the
    /// device acts, so that the threads that share a large capture can be
    /// awake by then.
    pub fn pending_result_pages(&self) -> usize {
        self.pending_result_of().map_or(0, |a| a.pfns.len())
    }

    /// The pages of the result the LOCK2 given to `before_request` will
    /// capture if it succeeds, and whether a TIMESTAMP may have written
    /// them (as [`Capture::pending_result_pages`]).
    pub fn pending_result(&self) -> Option<ResultPages> {
        self.pending_result_of().map(|a| ResultPages {
            pfns: a.pfns.clone(),
            timestamps: a.timestamps,
        })
    }

    /// The allocation whose result the pending LOCK2 will capture.
    fn pending_result_of(&self) -> Option<&Alloc> {
        match self.pending {
            Some(Pending::Lock {
                process,
                allocation,
            }) => self
                .allocs
                .get(&(process, allocation))
                .filter(|a| a.written),
            _ => None,
        }
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
        let maps = self.vas.get(&process);
        let held = maps.and_then(|v| v.at(va)).is_some_and(|m| end <= m.end());
        let mark = |a: &mut Alloc| {
            a.written = true;
            a.timestamps |= timestamp;
        };
        if let (true, Some(maps)) = (held, maps) {
            // Every mapping the range touches: a stale one costs a capture.
            for m in maps.overlapping(va, end) {
                if let Some(a) = self.allocs.get_mut(&(process, m.allocation)) {
                    mark(a);
                }
            }
        } else {
            for ((p, _), a) in self.allocs.iter_mut() {
                if *p == process {
                    mark(a);
                }
            }
        }
    }

    /// A submit whose stream could not be read or decoded: the backend
    /// refuses it, but this cannot tell what it would have done.
    fn unknown_stream(&mut self, process: u32) {
        self.mark_written(process, 0, u64::MAX, true);
        self.gpu_waits.insert(process);
    }

    /// The command stream of the request last given to `before_request`,
    /// if it was a submit whose stream could be read (its pages are then
    /// not among the lists `before_request` appended).
    pub fn take_stream(&mut self) -> StreamParts {
        std::mem::take(&mut self.stream)
    }

    /// Gives back what [`Capture::take_stream`] gave, emptied, for the
    /// next submit to fill.
    pub fn give_back_stream(&mut self, mut parts: StreamParts) {
        parts.clear();
        if self.stream.is_empty() && parts.capacity() <= 1024 {
            self.stream = parts;
        }
    }

    /// The pages of the UPLOAD commands in the stream of the submit last
    /// given to `before_request`, one list per command (not among the
    /// lists `before_request` appended). The guest leaves them alone until
    /// its next LOCK2, as it does an UNLOCK2's: their capture need not end
    /// before the submit's reply.
    pub fn take_uploads(&mut self) -> Vec<Vec<u64>> {
        std::mem::take(&mut self.uploads)
    }

    /// The guest-physical (address, length) pieces of `[va, va + len)` in
    /// `process`'s GPU VA space, as the frames followed so far map it.
    pub fn guest_ranges(&self, process: u32, va: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        self.guest_ranges_into(process, va, len, &mut out)?;
        Some(out)
    }

    /// [`Capture::guest_ranges`] into `out` (cleared first).
    fn guest_ranges_into(
        &self,
        process: u32,
        va: u64,
        len: u64,
        out: &mut Vec<(u64, u64)>,
    ) -> Option<()> {
        out.clear();
        let (a, mut at) = self.mapped(process, va, len)?;
        let end = at + len;
        while at < end {
            let pfn = *a.pfns.get((at / PAGE) as usize)?;
            let gpa = pfn.checked_mul(PAGE)? + at % PAGE;
            let n = (PAGE - at % PAGE).min(end - at);
            match out.last_mut() {
                // A guest-made page frame may be near the top of u64.
                Some((g, l)) if g.checked_add(*l) == Some(gpa) => *l += n,
                _ => out.push((gpa, n)),
            }
            at += n;
        }
        Some(())
    }

    /// The allocation whose mapping holds all of `[va, va + len)`, and the
    /// range's offset in it.
    fn mapping(&self, process: u32, va: u64, len: u64) -> Option<(u32, u64)> {
        let m = self.vas.get(&process)?.at(va)?;
        if va.checked_add(len)? > m.end() {
            return None;
        }
        // The offset comes from a guest's MAPGPUVIRTUALADDRESS: any u64.
        let at = m.offset.checked_add(va - m.va)?;
        at.checked_add(len)?;
        Some((m.allocation, at))
    }

    fn mapped(&self, process: u32, va: u64, len: u64) -> Option<(&Alloc, u64)> {
        let (allocation, at) = self.mapping(process, va, len)?;
        Some((self.allocs.get(&(process, allocation))?, at))
    }

    /// An UPLOAD of `[va, va + len)` in `process`'s GPU VA space: the page
    /// frames under it, to capture now, and the pages it covers whole,
    /// taken (once the submit is accepted) until the allocation's next
    /// LOCK2.
    fn take_range(&mut self, process: u32, va: u64, len: u64) -> Option<Vec<u64>> {
        let (allocation, at) = self.mapping(process, va, len)?;
        let a = self.allocs.get(&(process, allocation))?;
        let end = at + len;
        let first = usize::try_from(at / PAGE).ok()?;
        let last = usize::try_from(end.div_ceil(PAGE)).ok()?;
        let pfns = a.pfns.get(first..last)?.to_vec();
        let whole = usize::try_from(at.div_ceil(PAGE)).ok()?..usize::try_from(end / PAGE).ok()?;
        if !whole.is_empty() {
            let mark = ((process, allocation), whole);
            match &mut self.pending {
                Some(Pending::Taken(marks)) => marks.push(mark),
                _ => self.pending = Some(Pending::Taken(vec![mark])),
            }
        }
        Some(pfns)
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
        let mut ranges = std::mem::take(&mut self.stream_ranges);
        // The backend refuses a longer stream without reading it; read
        // here, the guest's length (up to 4 GiB) would size the buffer.
        if len <= MAX_STREAM_SIZE as u64
            && self
                .guest_ranges_into(process, va, len, &mut ranges)
                .is_some()
        {
            let mut stream = std::mem::take(&mut self.stream_bytes);
            stream.clear();
            for (gpa, n) in &ranges {
                let filled = stream.len();
                stream.resize(filled + *n as usize, 0);
                if mem
                    .read_slice(&mut stream[filled..], GuestAddress(*gpa))
                    .is_err()
                {
                    stream.clear();
                    break;
                }
                let mut at = *gpa;
                let end = gpa + n;
                while at < end {
                    let pfn = at / PAGE;
                    let stop = ((pfn + 1) * PAGE).min(end);
                    let from = (at % PAGE) as usize;
                    let to = from + (stop - at) as usize;
                    self.stream
                        .push((pfn, from / BLOCK * BLOCK, to.div_ceil(BLOCK) * BLOCK));
                    at = stop;
                }
            }
            if let Ok(s) = CommandStream::decode(&stream) {
                let mut vas = std::mem::take(&mut self.stream_vas);
                vas.clear();
                let mut w = std::mem::take(&mut self.stream_writes);
                w.clear();
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
                        // Not a use of the allocation: the backend takes
                        // the range alone, as it is now.
                        Command::Upload { va, size } => {
                            if let Some(pfns) = self.take_range(process, *va, *size) {
                                self.uploads.push(pfns);
                            }
                        }
                    }
                }
                writes = Some(w);
                // Kept for the next stream unless it is a large one.
                if stream.capacity() <= 64 << 10 {
                    self.stream_bytes = stream;
                }
                let maps = self.vas.get(&process);
                let mut named = std::mem::take(&mut self.stream_allocs);
                named.clear();
                named.extend(vas.iter().filter_map(|v| Some(maps?.at(*v)?.allocation)));
                touched = Some(named);
                if vas.capacity() <= 4096 {
                    self.stream_vas = vas;
                }
            }
        }
        if ranges.capacity() <= 4096 {
            self.stream_ranges = ranges;
        }
        // Allocations whose pages the backend uploads before this work: due
        // (new pages, UNLOCK2) or locked, and named by the stream (all of
        // them when the stream did not decode).
        let mut due: Vec<u64> = Vec::new();
        let mut take = |a: &mut Alloc| {
            if a.due || a.locked {
                due.extend(a.untaken());
                a.due = false;
            }
        };
        match touched.as_mut() {
            // Looked up by name: a submit costs what its stream names, not
            // what the guest has allocated.
            Some(named) => {
                named.sort_unstable();
                named.dedup();
                for h in named.iter() {
                    if let Some(a) = self.allocs.get_mut(&(process, *h)) {
                        take(a);
                    }
                }
            }
            None => self
                .allocs
                .iter_mut()
                .filter(|((p, _), _)| *p == process)
                .for_each(|(_, a)| take(a)),
        }
        if !due.is_empty() {
            out.push(due);
        }
        if let Some(named) = touched.filter(|t| t.capacity() <= 4096) {
            self.stream_allocs = named;
        }
        match writes {
            Some(mut w) => {
                for (va, len, timestamp) in w.drain(..) {
                    self.mark_written(process, va, len, timestamp);
                }
                if w.capacity() <= 4096 {
                    self.stream_writes = w;
                }
            }
            None => self.unknown_stream(process),
        }
    }
}

/// Unchanged bytes between two changed ones that an input's memory record
/// still carries rather than end there and start another: a record's head
/// (length, kind, time, purpose, address) is about 16 bytes in the file,
/// and each record is one more message to the writer.
pub const MERGE_GAP: u64 = 64;

/// The first, fast comparison of a changed page is by blocks of this many
/// bytes; only the blocks at the ends of a changed run are looked at byte
/// by byte.
const BLOCK: usize = 64;

/// Whether two blocks of [`BLOCK`] bytes differ: the XOR of their words,
/// OR-ed, without a branch per word (the compiler vectorises it).
fn block_differs(a: &[u8], b: &[u8]) -> bool {
    let mut acc = 0u64;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let x = u64::from_ne_bytes(x.try_into().unwrap_or_default());
        let y = u64::from_ne_bytes(y.try_into().unwrap_or_default());
        acc |= x ^ y;
    }
    acc != 0
}

/// The byte ranges `[a, b)` where `new` differs from `old` (pages of the
/// same length, a multiple of `BLOCK`), appended to `out` in order:
/// each run of changed blocks is one range, cut to its first and last
/// changed byte, and ranges at most [`MERGE_GAP`] bytes apart are merged.
pub fn changed_ranges(old: &[u8], new: &[u8], out: &mut Vec<(usize, usize)>) {
    let blocks = old.len().min(new.len()) / BLOCK;
    let block = |i: usize| (&old[i * BLOCK..][..BLOCK], &new[i * BLOCK..][..BLOCK]);
    let mut i = 0;
    while i < blocks {
        let (o, n) = block(i);
        if !block_differs(o, n) {
            i += 1;
            continue;
        }
        // Blocks [first, i) differ.
        let first = i;
        i += 1;
        while i < blocks && {
            let (o, n) = block(i);
            block_differs(o, n)
        } {
            i += 1;
        }
        let (o, n) = block(first);
        let a = first * BLOCK + o.iter().zip(n).position(|(x, y)| x != y).unwrap_or(0);
        let (o, n) = block(i - 1);
        let b = (i - 1) * BLOCK
            + o.iter()
                .zip(n)
                .rposition(|(x, y)| x != y)
                .map_or(BLOCK, |p| p + 1);
        match out.last_mut() {
            Some(last) if (a - last.1) as u64 <= MERGE_GAP => last.1 = b,
            _ => out.push((a, b)),
        }
    }
}

/// A memory record being made: guest bytes from `start`, read a page at a
/// time; `carried` is the part of them (guest addresses `[from, to)`) the
/// record holds so far. Bytes after `to` are kept until the next page
/// shows whether its first change is close enough to carry them too.
struct Run {
    start: u64,
    bytes: Vec<u8>,
    carried: Option<(u64, u64)>,
}

impl Run {
    /// The record, if it carries anything.
    fn finish(mut self, out: &mut Vec<(u64, Vec<u8>)>) {
        if let Some((from, to)) = self.carried {
            self.bytes.truncate((to - self.start) as usize);
            if from > self.start {
                self.bytes.drain(..(from - self.start) as usize);
            }
            out.push((from, self.bytes));
        }
    }
}

/// Asks the CPU to bring page frame `pfn` into its cache while the one
/// before it is hashed: a capture reads pages in list order, often
/// scattered, and the CPU's own prefetcher stops at the end of each 4 KiB
/// page, so every page would start with a full memory latency.
fn prefetch_page(mem: &GuestMemoryMmap, pfn: u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let Some(Ok(host)) = pfn
            .checked_mul(PAGE)
            .map(|gpa| mem.get_host_address(GuestAddress(gpa)))
        else {
            return;
        };
        for line in (0..PAGE as usize).step_by(64) {
            // SAFETY: a prefetch is a hint: it reads nothing into the
            // program and never faults, whatever the address; SSE, which
            // it needs, is part of x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(host.wrapping_add(line) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (mem, pfn);
}

impl Shadow {
    /// Captures what changed of the pages `pfns` against the shadow, as
    /// memory records of physically contiguous bytes (at most
    /// [`MAX_MEMORY_CHUNK`]): with `sub_page` (inputs), the changed byte
    /// ranges, close ones merged ([`changed_ranges`]); without it (results,
    /// which a replay accounts for a page at a time), each changed page
    /// whole. Each page is read once, into a scratch page, and compared
    /// there; a changed one goes on the record that may carry it, and what
    /// that does not carry is cut off again. Shadows are overwritten in
    /// place, so a page captured before costs no allocation.
    ///
    /// With `by_hash` (bulk captures, where memory bandwidth is the cost),
    /// a page whose shadow has a hash is compared by hashing it, which
    /// reads the guest's page but not the shadow; only a page that changed
    /// reads its shadow, to diff. Small captures (a few pages, which are
    /// often in the cache) compare bytes.
    pub fn pages(
        &mut self,
        mem: &GuestMemoryMmap,
        pfns: &[u64],
        sub_page: bool,
        by_hash: bool,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) {
        const LEN: usize = PAGE as usize;
        // A page the trace never mentioned holds zeros in a replay.
        static ZERO: [u8; LEN] = [0; LEN];
        let mut run: Option<Run> = None;
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut scratch = [0u8; LEN];
        for (i, &pfn) in pfns.iter().enumerate() {
            if let Some(&next) = pfns.get(i + 1) {
                prefetch_page(mem, next);
            }
            let Some(gpa) = pfn.checked_mul(PAGE) else {
                continue;
            };
            // The page goes on the run if it follows its bytes and the
            // record stays within MAX_MEMORY_CHUNK whatever it carries.
            let follows = run.as_ref().is_some_and(|r| {
                r.start + r.bytes.len() as u64 == gpa
                    && r.carried
                        .is_none_or(|(from, _)| gpa + PAGE - from <= MAX_MEMORY_CHUNK as u64)
            });
            if !follows {
                if let Some(r) = run.take() {
                    r.finish(out);
                }
            }
            let r = run.get_or_insert_with(|| Run {
                start: gpa,
                bytes: Vec::new(),
                carried: None,
            });
            // Read into the cache first: most pages are unchanged, and only
            // a changed one goes on the record.
            if mem.read_slice(&mut scratch, GuestAddress(gpa)).is_err() {
                // The next page does not follow: the record ends here.
                continue;
            }
            let page = &scratch[..];
            ranges.clear();
            let diff = |old: &[u8], new: &[u8], ranges: &mut Vec<(usize, usize)>| {
                if sub_page {
                    changed_ranges(old, new, ranges);
                } else if old != new {
                    ranges.push((0, LEN));
                }
            };
            let hash = |page: &[u8]| by_hash.then(|| page_hash(page));
            match self.pages.get_mut(&pfn) {
                Some(Known::Bytes(s, h)) => match (by_hash, *h) {
                    (true, Some(known)) => {
                        let now = page_hash(page);
                        if now != known {
                            diff(s, page, &mut ranges);
                            s.copy_from_slice(page);
                            *h = Some(now);
                        }
                    }
                    _ => {
                        if **s != page[..] {
                            diff(s, page, &mut ranges);
                            s.copy_from_slice(page);
                            *h = None;
                        }
                        // From now on compared by hash.
                        if by_hash {
                            *h = Some(page_hash(page));
                        }
                    }
                },
                Some(Known::Hash(h)) if *h == page_hash(page) => {}
                Some(k) => {
                    // Known by its hash only: no bytes to diff against.
                    ranges.push((0, LEN));
                    *k = Known::Bytes(Box::from(page), hash(page));
                }
                None if page[..] == ZERO => {}
                None => {
                    diff(&ZERO, page, &mut ranges);
                    self.pages
                        .insert(pfn, Known::Bytes(Box::from(page), hash(page)));
                }
            }
            if ranges.is_empty() {
                match r.carried {
                    Some((_, to)) => r.bytes.truncate((to - r.start) as usize),
                    // Nothing carried yet: the buffer starts over with
                    // the next page.
                    None => {
                        r.bytes.clear();
                        r.start = gpa + PAGE;
                    }
                }
                continue;
            }
            r.bytes.extend_from_slice(page);
            for &(a, b) in &ranges {
                let (a, b) = (gpa + a as u64, gpa + b as u64);
                match r.carried {
                    None => r.carried = Some((a, b)),
                    Some((from, to)) if a - to <= MERGE_GAP => r.carried = Some((from, b)),
                    Some(_) => {
                        // Too far apart: the record ends, and the rest of
                        // the page starts the next one.
                        let rest = r.bytes.split_off((a - r.start) as usize);
                        let done = std::mem::replace(
                            r,
                            Run {
                                start: a,
                                bytes: rest,
                                carried: Some((a, b)),
                            },
                        );
                        done.finish(out);
                    }
                }
            }
        }
        if let Some(r) = run {
            r.finish(out);
        }
    }

    /// As [`Shadow::pages`] with `sub_page`, for the bytes `[from, to)` of
    /// page `pfn` alone (whole blocks of [`BLOCK`] bytes: a command
    /// stream, [`StreamParts`]): what changed goes to `out` as (guest
    /// address, bytes), and the shadow takes those bytes. Returns false,
    /// capturing nothing, when the page is known by its hash only (there
    /// is nothing to diff a part against: the caller takes the page whole).
    pub fn part(
        &mut self,
        mem: &GuestMemoryMmap,
        pfn: u64,
        from: usize,
        to: usize,
        out: &mut PartDiff,
    ) -> bool {
        const LEN: usize = PAGE as usize;
        let (Some(gpa), true) = (pfn.checked_mul(PAGE), from < to && to <= LEN) else {
            return true;
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.resize(to - from, 0);
        let taken = self.part_in(mem, pfn, gpa, from, &mut scratch, out);
        self.scratch = scratch;
        taken
    }

    /// [`Shadow::part`] with `now` (as long as the part) to read into.
    fn part_in(
        &mut self,
        mem: &GuestMemoryMmap,
        pfn: u64,
        gpa: u64,
        from: usize,
        now: &mut [u8],
        out: &mut PartDiff,
    ) -> bool {
        const LEN: usize = PAGE as usize;
        static ZERO: [u8; LEN] = [0; LEN];
        let to = from + now.len();
        if mem
            .read_slice(now, GuestAddress(gpa + from as u64))
            .is_err()
        {
            return true;
        }
        let mut ranges = std::mem::take(&mut self.ranges);
        ranges.clear();
        match self.pages.get_mut(&pfn) {
            Some(Known::Hash(_) | Known::Stale) => {
                self.ranges = ranges;
                return false;
            }
            Some(Known::Bytes(s, h)) => {
                let old = &mut s[from..to];
                if *old != *now {
                    changed_ranges(old, now, &mut ranges);
                    old.copy_from_slice(now);
                    *h = None;
                }
            }
            None => {
                if *now != ZERO[..now.len()] {
                    changed_ranges(&ZERO[..now.len()], now, &mut ranges);
                    let mut page: Box<[u8]> = Box::from(&ZERO[..]);
                    page[from..to].copy_from_slice(now);
                    self.pages.insert(pfn, Known::Bytes(page, None));
                }
            }
        }
        for &(a, b) in &ranges {
            out.runs.push((gpa + (from + a) as u64, b - a));
            out.bytes.extend_from_slice(&now[a..b]);
        }
        self.ranges = ranges;
        true
    }

    /// Forgets what the trace holds of pages `pfns` that it has seen: the
    /// next capture of each takes it whole.
    pub fn forget(&mut self, pfns: &[u64]) {
        for pfn in pfns {
            if let Some(k) = self.pages.get_mut(pfn) {
                *k = Known::Stale;
            }
        }
    }

    /// As [`Shadow::pages`], for a result recorded by digest: the pages
    /// `pfns` that differ from the shadow, in runs of physically contiguous
    /// pages, each run as (guest address, length, digest). `hashes` are
    /// the pages' hashes ([`page_hashes`], None where a page could not be
    /// read), taken before the shadow's lock: only the comparison and the
    /// shadow's update are done under it. The shadow keeps the hash; no
    /// page bytes are kept or written.
    pub fn digests(
        &mut self,
        pfns: &[u64],
        hashes: &[Option<u128>],
        out: &mut Vec<(u64, u64, u128)>,
    ) {
        let mut run: Option<(u64, u64)> = None;
        let mut combined = Combiner::default();
        let mut flush = |run: &mut Option<(u64, u64)>, combined: &mut Combiner| {
            if let Some((gpa, len)) = run.take() {
                out.push((gpa, len, combined.finish()));
            }
        };
        for (&pfn, &h) in pfns.iter().zip(hashes) {
            let (Some(gpa), Some(h)) = (pfn.checked_mul(PAGE), h) else {
                flush(&mut run, &mut combined);
                continue;
            };
            let unchanged = match self.pages.get(&pfn) {
                Some(Known::Hash(k)) | Some(Known::Bytes(_, Some(k))) => *k == h,
                Some(Known::Bytes(b, None)) => page_hash(b) == h,
                Some(Known::Stale) => false,
                None => h == zero_page_hash(),
            };
            if unchanged {
                flush(&mut run, &mut combined);
                continue;
            }
            self.pages.insert(pfn, Known::Hash(h));
            match &mut run {
                Some((start, len)) if *start + *len == gpa && *len < MAX_MEMORY_CHUNK as u64 => {
                    *len += PAGE;
                }
                _ => {
                    flush(&mut run, &mut combined);
                    run = Some((gpa, PAGE));
                }
            }
            combined.push(h);
        }
        flush(&mut run, &mut combined);
    }
}

/// The hash of each page of `pfns` (None where it cannot be read), read
/// one page at a time into a small buffer, the next one prefetched.
pub fn page_hashes(mem: &GuestMemoryMmap, pfns: &[u64], out: &mut Vec<Option<u128>>) {
    let mut page = vec![0u8; PAGE as usize];
    for (i, &pfn) in pfns.iter().enumerate() {
        if let Some(&next) = pfns.get(i + 1) {
            prefetch_page(mem, next);
        }
        let read = pfn
            .checked_mul(PAGE)
            .is_some_and(|gpa| mem.read_slice(&mut page, GuestAddress(gpa)).is_ok());
        out.push(read.then(|| page_hash(&page)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn changed_ranges_are_exact_and_close_ones_merge() {
        let old = vec![0u8; 4096];
        let ranges = |new: &[u8]| {
            let mut out = Vec::new();
            changed_ranges(&old, new, &mut out);
            out
        };
        assert_eq!(ranges(&old), vec![]);
        let mut new = old.clone();
        // An 8-byte fence value in the middle of a block.
        new[100..108].fill(7);
        assert_eq!(ranges(&new), vec![(100, 108)]);
        // Across a block boundary, and the page's last byte.
        new[120..130].fill(1);
        new[4095] = 1;
        assert_eq!(ranges(&new), vec![(100, 130), (4095, 4096)]);
        // Changed blocks side by side are one range, whatever lies
        // between the changed bytes in them.
        let mut new = old.clone();
        new[0] = 1;
        new[127] = 1;
        assert_eq!(ranges(&new), vec![(0, 128)]);
        // With an unchanged block between: MERGE_GAP unchanged bytes still
        // merge; one more does not.
        let g = MERGE_GAP as usize;
        let mut new = old.clone();
        new[63] = 1;
        new[64 + g] = 1;
        assert_eq!(ranges(&new), vec![(63, 65 + g)]);
        new[64 + g] = 0;
        new[65 + g] = 1;
        assert_eq!(ranges(&new), vec![(63, 64), (65 + g, 66 + g)]);
        assert_eq!(ranges(&[9u8; 4096]), vec![(0, 4096)]);
    }

    /// Random changes to random page lists: the records, written over what
    /// the trace had, give the guest's pages exactly, stay within
    /// MAX_MEMORY_CHUNK, and carry a small change without its page.
    #[test]
    fn sub_page_records_rebuild_the_pages_exactly() {
        const PAGES: u64 = 600;
        let mem =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (PAGES * PAGE) as usize)]).unwrap();
        // What a replay's memory holds: what the records said.
        let mut replay = vec![0u8; (PAGES * PAGE) as usize];
        let mut shadow = Shadow::default();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..40 {
            // Changes: single bytes, short runs, runs across pages, whole
            // pages.
            for _ in 0..rng.below(40) {
                let at = rng.below(PAGES * PAGE);
                let len = match rng.below(4) {
                    0 => 1,
                    1 => 1 + rng.below(16),
                    2 => 1 + rng.below(3 * PAGE),
                    _ => PAGE,
                }
                .min(PAGES * PAGE - at);
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                mem.write_slice(&bytes, GuestAddress(at)).unwrap();
            }
            // A list of contiguous stretches, in any order, sometimes a
            // page twice.
            let mut pfns = Vec::new();
            for _ in 0..1 + rng.below(6) {
                let first = rng.below(PAGES);
                let n = 1 + rng.below(300).min(PAGES - first - 1);
                pfns.extend(first..first + n);
            }
            let mut out = Vec::new();
            shadow.pages(&mem, &pfns, true, round % 2 == 1, &mut out);
            for (gpa, bytes) in &out {
                assert!(!bytes.is_empty() && bytes.len() <= MAX_MEMORY_CHUNK);
                let at = *gpa as usize;
                replay[at..at + bytes.len()].copy_from_slice(bytes);
            }
            for &pfn in &pfns {
                let mut now = vec![0u8; PAGE as usize];
                mem.read_slice(&mut now, GuestAddress(pfn * PAGE)).unwrap();
                let at = (pfn * PAGE) as usize;
                assert!(
                    replay[at..at + PAGE as usize] == now[..],
                    "round {round}: page {pfn:#x} differs"
                );
            }
        }
        // A fence value's change costs its bytes, not its page.
        shadow.pages(&mem, &[4, 5, 6], true, false, &mut Vec::new());
        mem.write_slice(&[0xa5; 8], GuestAddress(5 * PAGE + 48))
            .unwrap();
        let mut out = Vec::new();
        shadow.pages(&mem, &[4, 5, 6], true, false, &mut out);
        assert_eq!(out, vec![(5 * PAGE + 48, vec![0xa5; 8])]);
        // Without sub_page, the page whole.
        mem.write_slice(&[0x5a; 8], GuestAddress(5 * PAGE + 48))
            .unwrap();
        let mut out = Vec::new();
        shadow.pages(&mem, &[4, 5, 6], false, false, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].1.len()), (5 * PAGE, PAGE as usize));
    }

    #[test]
    fn va_mappings_are_found_by_search_and_a_new_one_cuts_the_old() {
        let map = |va, size, allocation, offset| VaMap {
            va,
            size,
            allocation,
            offset,
        };
        let list = |v: &VaSpace| -> Vec<(u64, u64, u32, u64)> {
            v.0.values()
                .map(|m| (m.va, m.size, m.allocation, m.offset))
                .collect()
        };
        let owner = |v: &VaSpace, va| v.at(va).map(|m| m.allocation);
        let mut v = VaSpace::default();
        v.insert(map(0x1000, 0x3000, 1, 0));
        v.insert(map(0x8000, 0x1000, 2, 0));
        v.insert(map(0x9000, 0, 3, 0));
        assert_eq!(owner(&v, 0x0fff), None);
        assert_eq!(owner(&v, 0x1000), Some(1));
        assert_eq!(owner(&v, 0x3fff), Some(1));
        assert_eq!(owner(&v, 0x4000), None);
        assert_eq!(owner(&v, 0x8fff), Some(2));
        let over =
            |v: &VaSpace, a, b| -> Vec<u32> { v.overlapping(a, b).map(|m| m.allocation).collect() };
        assert_eq!(over(&v, 0x3fff, 0x8001), vec![2, 1]);
        assert_eq!(over(&v, 0x4000, 0x8000), Vec::<u32>::new());
        // A mapping in the middle of another: the old one keeps both ends,
        // the far end at its own offset in the allocation.
        v.insert(map(0x2000, 0x1000, 4, 0x10_0000));
        assert_eq!(
            list(&v),
            vec![
                (0x1000, 0x1000, 1, 0),
                (0x2000, 0x1000, 4, 0x10_0000),
                (0x3000, 0x1000, 1, 0x2000),
                (0x8000, 0x1000, 2, 0),
            ]
        );
        // Over several: they go, or keep what is outside it.
        v.insert(map(0x1800, 0x7000, 5, 0));
        assert_eq!(
            list(&v),
            vec![
                (0x1000, 0x800, 1, 0),
                (0x1800, 0x7000, 5, 0),
                (0x8800, 0x800, 2, 0x800)
            ]
        );
        // A far end whose offset would pass u64 is dropped.
        v.insert(map(0x10_0000, 0x2000, 6, u64::MAX - 0x800));
        v.insert(map(0x10_0000, 0x1000, 7, 0));
        assert_eq!(owner(&v, 0x10_1000), None);
        v.free(0x1fff, 2);
        assert_eq!(owner(&v, 0x1800), None);
        assert_eq!(owner(&v, 0x1000), Some(1));
        v.forget(&[1, 7]);
        assert_eq!(list(&v), vec![(0x8800, 0x800, 2, 0x800)]);
    }

    /// Request and reply frames for a [`Capture`], as the device shows them.
    mod frames {
        use dxvmm_protocol::abi::{D3dkmtHandle, WinLuid};
        use dxvmm_protocol::frame::{encode_frame, FrameKind};
        use dxvmm_protocol::message::Request;
        use dxvmm_protocol::vmbus::{
            vgpu, DxgkvmbCommandSetExistingSysmemPages, DxgkvmbCommandSubmitCommand,
            DxgkvmbCommandVgpuToHost,
        };
        use dxvmm_protocol::NtStatus;
        use zerocopy::{FromZeros, IntoBytes};

        pub const PROCESS: u32 = 7;

        pub fn request(r: &Request) -> Vec<u8> {
            let payload = r.encode();
            encode_frame(
                FrameKind::Request,
                1,
                WinLuid::default(),
                NtStatus::SUCCESS,
                &payload,
            )
        }

        /// A reply: its frame status, and a status as its payload.
        pub fn reply(status: NtStatus) -> Vec<u8> {
            let payload = status.as_bytes();
            encode_frame(FrameKind::Reply, 1, WinLuid::default(), status, payload)
        }

        pub fn pages(allocation: u32, offset: u32, pfns: Vec<u64>) -> Vec<u8> {
            let mut c = DxgkvmbCommandSetExistingSysmemPages::new_zeroed();
            c.hdr = DxgkvmbCommandVgpuToHost::new(
                vgpu::DXGK_VMBCOMMAND_SETEXISTINGSYSMEMPAGES,
                D3dkmtHandle(PROCESS),
            );
            c.allocation = D3dkmtHandle(allocation);
            c.alloc_offset_in_pages = offset;
            request(&Request::SetExistingSysmemPages { cmd: c, pfns })
        }

        pub fn submit(va: u64, length: u32) -> Vec<u8> {
            let mut c = DxgkvmbCommandSubmitCommand::new_zeroed();
            c.hdr = DxgkvmbCommandVgpuToHost::new(
                vgpu::DXGK_VMBCOMMAND_SUBMITCOMMAND,
                D3dkmtHandle(PROCESS),
            );
            c.args.command_buffer = va;
            c.args.command_length = length;
            c.args.broadcast_context_count = 1;
            request(&Request::SubmitCommand {
                cmd: Box::new(c),
                history_buffers: vec![],
                priv_drv_data: vec![],
            })
        }
    }

    /// The guest's page lists and stream lengths size what the capture
    /// keeps: only what the device accepted counts, and a stream longer
    /// than any the backend reads is not read.
    #[test]
    fn guest_offsets_and_lengths_do_not_size_the_capture() {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 * PAGE as usize)]).unwrap();
        let mut c = Capture::default();
        let mut out = Vec::new();
        let mut results = Vec::new();
        let p = frames::PROCESS;
        // Refused (an offset past any allocation): nothing is kept, where
        // before a list of 2^32 entries was made.
        c.before_request(
            &frames::pages(3, u32::MAX - 1, vec![1]),
            Some(&mem),
            &mut out,
        );
        c.after_reply(
            &frames::reply(NtStatus::INVALID_PARAMETER),
            Some(&mem),
            &mut results,
        );
        assert_eq!(c.allocation_pages(p, 3), None);
        // Accepted: kept.
        c.before_request(&frames::pages(3, 2, vec![8, 9]), Some(&mem), &mut out);
        c.after_reply(&frames::reply(NtStatus::SUCCESS), Some(&mem), &mut results);
        assert_eq!(
            c.allocation_pages(p, 3),
            Some(&[u64::MAX, u64::MAX, 8, 9][..])
        );
        // A stream of 4 GiB over an allocation of the guest's pages,
        // repeated (a guest sends such a list in many frames): not read.
        let whole = Alloc {
            pfns: (0..1u64 << 20).map(|i| i % 64).collect(),
            ..Alloc::default()
        };
        c.allocs.insert((p, 4), whole);
        c.vas.entry(p).or_default().insert(VaMap {
            va: 1 << 40,
            size: 1 << 32,
            allocation: 4,
            offset: 0,
        });
        c.before_request(&frames::submit(1 << 40, u32::MAX), Some(&mem), &mut out);
        assert!(c.stream_bytes.capacity() <= MAX_STREAM_SIZE);
        assert!(c.stream.is_empty());
        // One that size allows is.
        c.before_request(&frames::submit(1 << 40, 64), Some(&mem), &mut out);
        assert_eq!(c.take_stream(), vec![(0, 0, 64)]);
    }

    #[test]
    fn a_stream_part_records_its_changed_bytes_and_keeps_the_rest() {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 * PAGE as usize)]).unwrap();
        let mut shadow = Shadow::default();
        let part = |shadow: &mut Shadow, pfn: u64, from, to| {
            let mut out = PartDiff::default();
            assert!(shadow.part(&mem, pfn, from, to, &mut out));
            let runs: Vec<(u64, Vec<u8>)> = out.iter().map(|(g, b)| (g, b.to_vec())).collect();
            runs
        };
        // A new page: the stream's non-zero bytes; bytes outside the part
        // are not looked at.
        mem.write_slice(&[7; 72], GuestAddress(2 * PAGE + 128))
            .unwrap();
        mem.write_slice(&[9; 8], GuestAddress(2 * PAGE + 1024))
            .unwrap();
        assert_eq!(
            part(&mut shadow, 2, 128, 256),
            vec![(2 * PAGE + 128, vec![7; 72])]
        );
        assert!(part(&mut shadow, 2, 128, 256).is_empty());
        // A fence value in it changes: those bytes.
        mem.write_slice(&[1; 8], GuestAddress(2 * PAGE + 160))
            .unwrap();
        assert_eq!(
            part(&mut shadow, 2, 128, 256),
            vec![(2 * PAGE + 160, vec![1; 8])]
        );
        // The whole page later: what the trace does not have yet (the 9s),
        // not the stream again.
        let mut out = Vec::new();
        shadow.pages(&mem, &[2], true, false, &mut out);
        assert_eq!(out, vec![(2 * PAGE + 1024, vec![9; 8])]);
        // A page known by its hash only is left to the caller.
        mem.write_slice(&[3; 64], GuestAddress(5 * PAGE)).unwrap();
        let mut hashes = Vec::new();
        page_hashes(&mem, &[5], &mut hashes);
        shadow.digests(&[5], &hashes, &mut Vec::new());
        assert!(!shadow.part(&mem, 5, 0, 64, &mut PartDiff::default()));
    }
}
