//! `dxvmm trace replay`: the recorded requests, without a guest, against a
//! fresh backend, each reply checked against the recorded one.
//!
//! A fresh [`device_dxg::Vm`] dispatches the requests; a fresh guest memory
//! of the recorded layout receives the recorded inputs (command streams,
//! uploaded data) before the request that reads them. Handles the replay's
//! backend makes are paired with the recorded ones as replies come, and
//! later requests are rewritten to use them. What must match: every frame
//! status and status field, the shape of each handle (null or not, the same
//! pairing every time), GPU virtual addresses and pipeline ids (command
//! streams in guest memory name them), allocation sizes, and every byte of
//! guest memory the backend wrote at LOCK2: a recorded result by its bytes
//! or its digest, and every other page of the locked allocation as
//! unchanged (the recording left out what was as the trace already had
//! it, and results no submit could have written). Host-specific answers
//! (adapter names, memory budgets, LUIDs) are not compared.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use device_dxg::{EventQueue, Vm};
use dxvmm_host_backend::{Backend, EventSink, Handle};
use dxvmm_protocol::abi::WinLuid;
use dxvmm_protocol::escape::EscapeResponse;
use dxvmm_protocol::frame::{Frame, FrameKind};
use dxvmm_protocol::message::{HostEvent, Reply, Request};
use dxvmm_protocol::NtStatus;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use dxvmm_protocol::cmdstream::{Command, CommandStream};

use crate::capture::Capture;
use crate::digest::{hex, page_hash, Combiner, PAGE};
use crate::error::ReplayError;
use crate::format::{MemoryPurpose, Record, TraceHeader};
use crate::reader::Located;
use crate::remap::Remap;

/// Where and how a replay went another way than the recording.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Divergence {
    /// The record that differs (a reply or a memory result).
    pub index: u64,
    /// The command it belongs to.
    pub command: String,
    pub what: String,
    pub recorded: String,
    pub replayed: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} ({}): {}: recorded {}, replayed {}",
            self.index, self.command, self.what, self.recorded, self.replayed
        )
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub requests: u64,
    pub replies_compared: u64,
    pub memory_results_compared: u64,
    pub memory_bytes_compared: u64,
    /// Of those, results recorded as digests.
    pub result_digests_compared: u64,
    /// Pages of locked allocations checked to be as the trace had them
    /// after the replay's LOCK2 (results left out of the recording).
    pub unchanged_pages_checked: u64,
    pub memory_bytes_written: u64,
    /// CPU waits whose completion the replay waited for.
    pub waits: u64,
    /// Guest bytes not compared: GPU timestamps (TIMESTAMP commands'
    /// destinations), which differ every run.
    pub volatile_bytes: u64,
    /// The replay's adapters, by name.
    pub adapters: Vec<String>,
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// How to replay.
#[derive(Clone, Debug)]
pub struct Options {
    /// The replay's adapters for the recorded ones, in order; `None`: the
    /// backend's first ones.
    pub adapters: Option<Vec<WinLuid>>,
    /// How long to wait for a CPU wait the recording saw satisfied.
    pub wait_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            adapters: None,
            wait_timeout: Duration::from_secs(30),
        }
    }
}

/// The replay's event sink: which (process, cookie) waits were satisfied.
///
/// Events come from two places, as in the recording: the backend reports a
/// wait satisfied, and the device ends a wait whose fence (or process) was
/// destroyed with an event of its own (docs/protocol.md §2.6.8), which the
/// backend never reports. Both reach `queue`, the device's event queue,
/// and are read back from it here.
struct Events {
    queue: Arc<EventQueue>,
    seen: Mutex<HashSet<(u32, u64)>>,
    cv: Condvar,
}

impl EventSink for Events {
    fn fence_signaled(&self, process: Handle, fence: Handle, value: u64) {
        self.queue.fence_signaled(process, fence, value);
    }

    fn wait_satisfied(&self, process: Handle, cookie: u64) {
        self.queue.wait_satisfied(process, cookie);
        // Taking the lock orders this after a waiter's look at the queue.
        let _seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        self.cv.notify_all();
    }
}

impl Events {
    fn new() -> Result<Events, ReplayError> {
        Ok(Events {
            queue: Arc::new(EventQueue::new().map_err(ReplayError::Events)?),
            seen: Mutex::new(HashSet::new()),
            cv: Condvar::new(),
        })
    }

    /// Moves the SIGNALGUESTEVENTs the device queued into `seen`.
    fn drain(&self, seen: &mut HashSet<(u32, u64)>) {
        self.queue.acknowledge();
        while let Some(frame) = self.queue.pop() {
            if let Some((process, cookie)) = signalled_wait(&frame) {
                seen.insert((process, cookie));
            }
        }
    }

    fn wait(&self, process: u32, cookie: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            self.drain(&mut seen);
            if seen.remove(&(process, cookie)) {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            seen = self
                .cv
                .wait_timeout(seen, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The (process, cookie) of the wait an event frame ends, if it ends one.
fn signalled_wait(frame: &[u8]) -> Option<(u32, u64)> {
    let f = Frame::parse(frame, FrameKind::Event).ok()?;
    match HostEvent::decode(f.payload).ok()? {
        HostEvent::SignalGuestEvent(c) | HostEvent::SignalGuestEventPassive(c) => {
            Some((c.hdr.process.0, c.event))
        }
        HostEvent::SetGuestData(_) => None,
    }
}

fn st(s: NtStatus) -> String {
    s.name()
        .map_or_else(|| format!("0x{:08X}", s.bits()), str::to_string)
}

/// The request being replayed.
pub(crate) struct Current {
    pub index: u64,
    pub name: String,
    /// As recorded (None: it did not decode, in the recording either).
    pub recorded: Option<Request>,
    /// The replay's process handle and the outcome.
    pub process: u32,
    pub outcome: Result<Reply, NtStatus>,
}

/// Replays `records` on `backend`.
pub fn replay(
    header: &TraceHeader,
    records: &[Located],
    backend: Arc<dyn Backend>,
    opts: &Options,
) -> Result<Report, ReplayError> {
    let host = backend.adapters();
    let need = header.adapters.len();
    let chosen: Vec<WinLuid> = match &opts.adapters {
        Some(l) => l.clone(),
        None => host.iter().map(|a| a.luid).collect(),
    };
    if chosen.len() < need {
        return Err(ReplayError::NotEnoughAdapters {
            need,
            have: chosen.len(),
        });
    }
    let chosen = &chosen[..need];
    let luid_for = |l: WinLuid| -> WinLuid {
        header
            .adapters
            .iter()
            .position(|a| a.luid == l)
            .map_or(l, |i| chosen[i])
    };
    let events = Arc::new(Events::new()?);
    backend.set_event_sink(Some(events.clone()));
    let mut report = Report {
        adapters: chosen
            .iter()
            .filter_map(|l| host.iter().find(|a| a.luid == *l).map(|a| a.name.clone()))
            .collect(),
        ..Default::default()
    };
    // The device's own wait tracking, as the recording's device had it: a
    // destroy that takes a fence a pending wait names ends the wait.
    let mut vm = Vm::with_events(backend.clone(), chosen, events.queue.clone());
    // Fence slots in the replay's memory hold what the trace says they
    // held, not what this backend writes at its own times (a page the
    // guest reused would keep a value the recording's guest overwrote).
    vm.set_fence_storage(false);
    let result = run(records, &mut vm, &events, &luid_for, opts, &mut report);
    vm.reset();
    backend.set_event_sink(None);
    result?;
    Ok(report)
}

fn run(
    records: &[Located],
    vm: &mut Vm,
    events: &Events,
    luid_for: &dyn Fn(WinLuid) -> WinLuid,
    opts: &Options,
    report: &mut Report,
) -> Result<(), ReplayError> {
    let mut mem: Option<GuestMemoryMmap> = None;
    let mut remap = Remap::default();
    let mut current: Option<Current> = None;
    let mut last_name = String::new();
    // Follows the recorded frames to map GPU VAs to guest pages.
    let mut tracker = Capture::default();
    // Guest bytes the GPU writes differently every run (TIMESTAMP).
    let mut volatile: HashSet<u64> = HashSet::new();
    // CPU waits pending in the recording and in the replay: (recorded
    // process, cookie) -> the replay's process. Each is checked where the
    // recording delivered its event: by then the replay has dispatched
    // whatever ended it (a signal, a destroy of a fence it names), and a
    // wait the recording never saw end is not waited for.
    let mut pending: HashMap<(u32, u64), u32> = HashMap::new();
    // The LOCK2 being replayed: its allocation's pages before it.
    let mut before_lock: Option<Snapshot> = None;
    // The LOCK2 just answered: its pages the replay changed, until the
    // result records after it account for them.
    let mut lock: Option<LockCheck> = None;
    for l in records {
        if !matches!(
            l.record,
            Record::Memory {
                purpose: MemoryPurpose::Result,
                ..
            } | Record::Digest { .. }
        ) {
            if let Some(check) = lock.take() {
                if let Some(d) = check.finish(&volatile) {
                    report.divergence = Some(d);
                    return Ok(());
                }
            }
        }
        let diverge =
            |command: &str, what: String, recorded: String, replayed: String| Divergence {
                index: l.index,
                command: command.to_string(),
                what,
                recorded,
                replayed,
            };
        match &l.record {
            Record::Layout { regions, .. } => {
                if mem.is_none() {
                    let ranges: Vec<(GuestAddress, usize)> = regions
                        .iter()
                        .map(|(s, n)| (GuestAddress(*s), *n as usize))
                        .collect();
                    mem = Some(
                        GuestMemoryMmap::from_ranges(&ranges)
                            .map_err(|e| ReplayError::Memory(e.to_string()))?,
                    );
                }
            }
            Record::Memory {
                purpose: MemoryPurpose::Input,
                gpa,
                bytes,
                ..
            } => {
                let m = mem.as_ref().ok_or_else(|| {
                    ReplayError::Memory(format!("record {}: memory before the memory map", l.index))
                })?;
                m.write_slice(bytes, GuestAddress(*gpa)).map_err(|e| {
                    ReplayError::Memory(format!("record {}: {gpa:#x}: {e}", l.index))
                })?;
                report.memory_bytes_written += bytes.len() as u64;
            }
            Record::Memory {
                purpose: MemoryPurpose::Result,
                gpa,
                bytes,
                ..
            } => {
                let m = mem.as_ref().ok_or_else(|| {
                    ReplayError::Memory(format!("record {}: memory before the memory map", l.index))
                })?;
                let mut now = vec![0u8; bytes.len()];
                m.read_slice(&mut now, GuestAddress(*gpa)).map_err(|e| {
                    ReplayError::Memory(format!("record {}: {gpa:#x}: {e}", l.index))
                })?;
                report.memory_results_compared += 1;
                report.memory_bytes_compared += bytes.len() as u64;
                let of = lock.as_mut().map_or_else(String::new, |c| {
                    c.covered(*gpa, bytes.len() as u64);
                    format!(", allocation {:#x}", c.allocation)
                });
                let differs = |(i, (a, b)): &(usize, (&u8, &u8))| {
                    a != b && !volatile.contains(&(gpa + *i as u64))
                };
                if let Some((at, _)) = now.iter().zip(bytes).enumerate().find(differs) {
                    let show = |b: &[u8]| {
                        let end = (at + 16).min(b.len());
                        b[at..end]
                            .iter()
                            .map(|x| format!("{x:02x}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    report.divergence = Some(diverge(
                        &last_name,
                        format!(
                            "guest memory at {:#x} (byte {at} of the result{of})",
                            gpa + at as u64
                        ),
                        show(bytes),
                        show(&now),
                    ));
                    return Ok(());
                }
            }
            Record::Digest {
                gpa, len, digest, ..
            } => {
                let m = mem.as_ref().ok_or_else(|| {
                    ReplayError::Memory(format!("record {}: memory before the memory map", l.index))
                })?;
                let mine = digest_of(m, *gpa, *len).map_err(|e| {
                    ReplayError::Memory(format!("record {}: {gpa:#x}: {e}", l.index))
                })?;
                report.memory_results_compared += 1;
                report.result_digests_compared += 1;
                report.memory_bytes_compared += len;
                let of = lock.as_mut().map_or_else(String::new, |c| {
                    c.covered(*gpa, *len);
                    format!(" of allocation {:#x}", c.allocation)
                });
                if mine != *digest {
                    let stamps = (*gpa..gpa + len).any(|a| volatile.contains(&a));
                    report.divergence = Some(diverge(
                        &last_name,
                        format!(
                            "guest memory at {gpa:#x}..{:#x}{of} (a result recorded as its digest{})",
                            gpa + len,
                            if stamps { "; it holds GPU timestamps" } else { "" }
                        ),
                        hex(*digest),
                        hex(mine),
                    ));
                    return Ok(());
                }
            }
            Record::Request { frame, .. } => {
                report.requests += 1;
                tracker.before_request(frame, None, &mut Vec::new());
                if let Some(m) = &mem {
                    report.volatile_bytes += timestamp_bytes(&tracker, frame, m, &mut volatile);
                    before_lock = lock_target(frame).and_then(|(process, allocation)| {
                        let pfns = tracker.allocation_pages(process, allocation)?;
                        Some(Snapshot::take(m, allocation, pfns))
                    });
                }
                current = Some(dispatch(l.index, frame, vm, mem.as_ref(), &remap, luid_for));
                last_name = current.as_ref().map(|c| c.name.clone()).unwrap_or_default();
            }
            Record::Reply { frame, .. } => {
                tracker.after_reply(frame, None, &mut Vec::new());
                let Some(cur) = current.take() else {
                    continue;
                };
                report.replies_compared += 1;
                // A CPU wait satisfied at once in one run and pending in
                // the other is timing, but what the guest saw must come
                // true: a wait pending in both is checked at the recorded
                // event; one the recording saw satisfied at once is waited
                // for here (the guest went on at once).
                let mut on_wait = |w: CpuWait| -> Diff {
                    match (w.recorded_pending, w.replayed_pending) {
                        (true, true) => {
                            pending.insert((w.process, w.cookie), cur.process);
                        }
                        (false, true) => {
                            report.waits += 1;
                            if !events.wait(cur.process, w.cookie, opts.wait_timeout) {
                                return differ(
                                    "CPU wait",
                                    "satisfied",
                                    format!("not satisfied within {:?}", opts.wait_timeout),
                                );
                            }
                        }
                        _ => {}
                    }
                    None
                };
                let d = compare(&cur, frame, &mut remap, &mut on_wait);
                if let Some((what, recorded, replayed)) = d {
                    report.divergence = Some(diverge(&cur.name, what, recorded, replayed));
                    return Ok(());
                }
                let locked =
                    matches!(&cur.outcome, Ok(Reply::Lock2(r)) if r.status == NtStatus::SUCCESS);
                if let (Some(snap), Some(m), true) = (before_lock.take(), &mem, locked) {
                    let check = snap.changed(m, l.index, &volatile);
                    report.unchanged_pages_checked += check.checked;
                    lock = Some(check);
                }
            }
            Record::Event { frame, .. } => {
                let Some(wait) = signalled_wait(frame) else {
                    continue;
                };
                let Some(process) = pending.remove(&wait) else {
                    continue;
                };
                report.waits += 1;
                if !events.wait(process, wait.1, opts.wait_timeout) {
                    report.divergence = Some(diverge(
                        "WAITFORSYNCOBJECTFROMCPU",
                        format!("CPU wait {:#x} (its event)", wait.1),
                        "satisfied".into(),
                        format!("not satisfied within {:?}", opts.wait_timeout),
                    ));
                    return Ok(());
                }
            }
            Record::End { .. } => {}
        }
    }
    if let Some(check) = lock.take() {
        report.divergence = check.finish(&volatile);
    }
    Ok(())
}

/// The (process, allocation) a LOCK2 request frame names.
fn lock_target(frame: &[u8]) -> Option<(u32, u32)> {
    let f = Frame::parse(frame, FrameKind::Request).ok()?;
    match Request::decode(f.payload).ok()? {
        Request::Lock2(c) => Some((c.hdr.process.0, c.args.allocation.0)),
        _ => None,
    }
}

/// A locked allocation's pages before the replay's LOCK2.
struct Snapshot {
    allocation: u32,
    pages: Vec<(u64, Vec<u8>)>,
}

impl Snapshot {
    fn take(mem: &GuestMemoryMmap, allocation: u32, pfns: &[u64]) -> Snapshot {
        let pages = pfns
            .iter()
            .filter_map(|&pfn| {
                let mut b = vec![0u8; PAGE];
                let gpa = pfn.checked_mul(PAGE as u64)?;
                mem.read_slice(&mut b, GuestAddress(gpa)).ok()?;
                Some((pfn, b))
            })
            .collect();
        Snapshot { allocation, pages }
    }

    /// The pages the LOCK2 (record `index`) changed, GPU timestamps aside.
    fn changed(self, mem: &GuestMemoryMmap, index: u64, volatile: &HashSet<u64>) -> LockCheck {
        let mut changed = BTreeMap::new();
        let mut now = vec![0u8; PAGE];
        let checked = self.pages.len() as u64;
        for (pfn, before) in self.pages {
            let gpa = pfn * PAGE as u64;
            if mem.read_slice(&mut now, GuestAddress(gpa)).is_err() {
                continue;
            }
            let differs = before
                .iter()
                .zip(&now)
                .enumerate()
                .any(|(i, (a, b))| a != b && !volatile.contains(&(gpa + i as u64)));
            if differs {
                changed.insert(pfn, (before, now.clone()));
            }
        }
        LockCheck {
            index,
            allocation: self.allocation,
            changed,
            checked,
        }
    }
}

/// Pages a replayed LOCK2 changed that no result record has accounted for
/// yet: the recording left them as the trace had them.
struct LockCheck {
    /// The LOCK2's reply record.
    index: u64,
    allocation: u32,
    /// Page frame -> (before, after).
    changed: BTreeMap<u64, (Vec<u8>, Vec<u8>)>,
    checked: u64,
}

impl LockCheck {
    /// A result record covers `[gpa, gpa + len)`: it compares those bytes.
    fn covered(&mut self, gpa: u64, len: u64) {
        let first = gpa / PAGE as u64;
        let last = gpa.saturating_add(len).div_ceil(PAGE as u64);
        let hit: Vec<u64> = self.changed.range(first..last).map(|(p, _)| *p).collect();
        for p in hit {
            self.changed.remove(&p);
        }
    }

    /// The divergence, if a changed page was not accounted for.
    fn finish(self, volatile: &HashSet<u64>) -> Option<Divergence> {
        let (pfn, (before, after)) = self.changed.into_iter().next()?;
        let gpa = pfn * PAGE as u64;
        let at = before
            .iter()
            .zip(&after)
            .enumerate()
            .position(|(i, (a, b))| a != b && !volatile.contains(&(gpa + i as u64)))
            .unwrap_or(0);
        let show = |b: &[u8]| {
            b[at..(at + 16).min(b.len())]
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        Some(Divergence {
            index: self.index,
            command: "LOCK2".into(),
            what: format!(
                "guest memory at {:#x} (allocation {:#x}): the recording's LOCK2 left it as the trace had it",
                gpa + at as u64,
                self.allocation
            ),
            recorded: show(&before),
            replayed: show(&after),
        })
    }
}

/// The digest ([`crate::digest`]) of `len` bytes of `mem` at `gpa`.
fn digest_of(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> Result<u128, String> {
    let mut page = vec![0u8; PAGE];
    let mut c = Combiner::default();
    let mut at = gpa;
    while at < gpa + len {
        mem.read_slice(&mut page, GuestAddress(at))
            .map_err(|e| e.to_string())?;
        c.push(page_hash(&page));
        at += PAGE as u64;
    }
    Ok(c.finish())
}

/// Adds the guest addresses that a submission's TIMESTAMP commands write
/// to `volatile`; returns how many are new.
fn timestamp_bytes(
    tracker: &Capture,
    frame: &[u8],
    mem: &GuestMemoryMmap,
    volatile: &mut HashSet<u64>,
) -> u64 {
    let Ok(f) = Frame::parse(frame, FrameKind::Request) else {
        return 0;
    };
    let (process, va, len) = match Request::decode(f.payload) {
        Ok(Request::SubmitCommand { cmd, .. }) => (
            cmd.hdr.process.0,
            cmd.args.command_buffer,
            cmd.args.command_length,
        ),
        Ok(Request::SubmitCommandToHwQueue { cmd, .. }) => (
            cmd.hdr.process.0,
            cmd.args.command_buffer,
            cmd.args.command_length,
        ),
        _ => return 0,
    };
    let Some(ranges) = tracker.guest_ranges(process, va, u64::from(len)) else {
        return 0;
    };
    let mut stream = Vec::with_capacity(len as usize);
    for (gpa, n) in ranges {
        let mut b = vec![0u8; n as usize];
        if mem.read_slice(&mut b, GuestAddress(gpa)).is_err() {
            return 0;
        }
        stream.extend_from_slice(&b);
    }
    let Ok(stream) = CommandStream::decode(&stream) else {
        return 0;
    };
    let mut added = 0;
    for c in &stream.commands {
        if let Command::Timestamp { dst_va } = c {
            for (gpa, n) in tracker
                .guest_ranges(process, *dst_va, 8)
                .unwrap_or_default()
            {
                for a in gpa..gpa + n {
                    added += u64::from(volatile.insert(a));
                }
            }
        }
    }
    added
}

fn dispatch(
    index: u64,
    frame: &[u8],
    vm: &mut Vm,
    mem: Option<&GuestMemoryMmap>,
    remap: &Remap,
    luid_for: &dyn Fn(WinLuid) -> WinLuid,
) -> Current {
    let refused = |name: String, s: NtStatus| Current {
        index,
        name,
        recorded: None,
        process: 0,
        outcome: Err(s),
    };
    let f = match Frame::parse(frame, FrameKind::Request) {
        Ok(f) => f,
        Err(e) => return refused("(bad frame)".into(), e.status()),
    };
    let recorded = match Request::decode(f.payload) {
        Ok(r) => r,
        Err(e) => return refused("(undecodable command)".into(), e.status()),
    };
    let name = recorded
        .name()
        .strip_prefix("DXGK_VMBCOMMAND_")
        .unwrap_or(recorded.name())
        .to_string();
    let mut req = recorded.clone();
    remap.apply(&mut req);
    let vgpu = luid_for(f.header.vgpu_luid);
    if let Request::OpenAdapter(c) = &mut req {
        c.guest_adapter_luid = luid_for(c.guest_adapter_luid);
    }
    let process = req.process().0;
    let outcome = vm.dispatch_with(vgpu, req, mem);
    Current {
        index,
        name,
        recorded: Some(recorded),
        process,
        outcome,
    }
}

pub(crate) type Diff = Option<(String, String, String)>;

pub(crate) fn differ(what: &str, a: impl ToString, b: impl ToString) -> Diff {
    Some((what.to_string(), a.to_string(), b.to_string()))
}

/// A CPU wait (WAITFORSYNCOBJECTFROMCPU) that both runs accepted, in
/// the recording's process: whether each left it pending.
pub(crate) struct CpuWait {
    pub process: u32,
    pub cookie: u64,
    pub recorded_pending: bool,
    pub replayed_pending: bool,
}

/// Compares another run's outcome (a replay's, or another recording's)
/// with the recorded reply frame; pairs handles on the way. CPU waits
/// both runs accepted go to `on_wait`, which says whether they differ.
pub(crate) fn compare(
    cur: &Current,
    frame: &[u8],
    remap: &mut Remap,
    on_wait: &mut dyn FnMut(CpuWait) -> Diff,
) -> Diff {
    let f = match Frame::parse(frame, FrameKind::Reply) {
        Ok(f) => f,
        Err(e) => return differ("the recorded reply", format!("undecodable ({e})"), "-"),
    };
    let new_status = match &cur.outcome {
        Ok(_) => NtStatus::SUCCESS,
        Err(s) => *s,
    };
    if f.header.status != new_status {
        return differ("frame status", st(f.header.status), st(new_status));
    }
    let (Some(req), Ok(new)) = (&cur.recorded, &cur.outcome) else {
        return None;
    };
    let old = match Reply::decode(req, f.payload) {
        Ok(r) => r,
        Err(e) => return differ("the recorded reply", format!("undecodable ({e})"), "-"),
    };
    let pair = |remap: &mut Remap, what: &str, a, b| -> Diff {
        remap
            .pair(what, a, b)
            .err()
            .map(|e| (what.to_string(), e, String::new()))
    };
    macro_rules! check {
        ($e:expr) => {
            if let Some(d) = $e {
                return Some(d);
            }
        };
    }
    match (&old, new) {
        (Reply::Status(a), Reply::Status(b)) => {
            if let Request::WaitForSyncObjectFromCpu { cmd, .. } = req {
                // Whether a CPU wait was satisfied at once is timing; what
                // matters is that it is satisfied.
                let done = |s: &NtStatus| *s == NtStatus::SUCCESS || *s == NtStatus::PENDING;
                if done(a) && done(b) {
                    return on_wait(CpuWait {
                        process: cmd.hdr.process.0,
                        cookie: cmd.guest_event_pointer,
                        recorded_pending: *a == NtStatus::PENDING,
                        replayed_pending: *b == NtStatus::PENDING,
                    });
                }
            }
            if a != b {
                return differ("status", st(*a), st(*b));
            }
        }
        (Reply::Empty, Reply::Empty) => {}
        (Reply::CreateProcess(a), Reply::CreateProcess(b)) => {
            check!(pair(remap, "process handle", a.hprocess, b.hprocess));
        }
        (Reply::OpenAdapter(a), Reply::OpenAdapter(b)) => {
            if a.status != b.status {
                return differ("status", st(a.status), st(b.status));
            }
            if a.vmbus_interface_version != b.vmbus_interface_version {
                return differ(
                    "interface version",
                    a.vmbus_interface_version,
                    b.vmbus_interface_version,
                );
            }
            check!(pair(
                remap,
                "adapter handle",
                a.host_adapter_handle,
                b.host_adapter_handle
            ));
        }
        (Reply::GetInternalAdapterInfo(_), Reply::GetInternalAdapterInfo(_))
        | (Reply::QueryVideoMemoryInfo(_), Reply::QueryVideoMemoryInfo(_))
        | (Reply::Evict(_), Reply::Evict(_)) => {}
        (Reply::QueryAdapterInfo { status: a, .. }, Reply::QueryAdapterInfo { status: b, .. })
        | (
            Reply::QueryAllocationResidency { status: a, .. },
            Reply::QueryAllocationResidency { status: b, .. },
        )
        | (
            Reply::GetAllocationPriority { status: a, .. },
            Reply::GetAllocationPriority { status: b, .. },
        ) => {
            if a != b {
                return differ("status", st(*a), st(*b));
            }
        }
        (Reply::CreateDevice(a), Reply::CreateDevice(b)) => {
            check!(pair(remap, "device handle", a.device, b.device));
        }
        (Reply::GetDeviceState(a), Reply::GetDeviceState(b)) => {
            if a.status != b.status {
                return differ("status", st(a.status), st(b.status));
            }
        }
        (
            Reply::CreateContextVirtual { cmd: a, .. },
            Reply::CreateContextVirtual { cmd: b, .. },
        ) => {
            check!(pair(remap, "context handle", a.context, b.context));
        }
        (Reply::CreateHwQueue { cmd: a, .. }, Reply::CreateHwQueue { cmd: b, .. }) => {
            if a.status != b.status {
                return differ("status", st(a.status), st(b.status));
            }
            check!(pair(remap, "hardware queue handle", a.hwqueue, b.hwqueue));
            check!(pair(
                remap,
                "progress fence handle",
                a.hwqueue_progress_fence,
                b.hwqueue_progress_fence
            ));
        }
        (Reply::CreatePagingQueue(a), Reply::CreatePagingQueue(b)) => {
            check!(pair(
                remap,
                "paging queue handle",
                a.paging_queue,
                b.paging_queue
            ));
            check!(pair(
                remap,
                "paging fence handle",
                a.sync_object,
                b.sync_object
            ));
        }
        (
            Reply::CreateAllocation {
                allocation_info: a, ..
            },
            Reply::CreateAllocation {
                allocation_info: b, ..
            },
        ) => {
            if a.len() != b.len() {
                return differ("allocations", a.len(), b.len());
            }
            for (x, y) in a.iter().zip(b) {
                if x.allocation_size != y.allocation_size {
                    return differ("allocation size", x.allocation_size, y.allocation_size);
                }
                check!(pair(remap, "allocation handle", x.allocation, y.allocation));
            }
        }
        (Reply::MakeResident(a), Reply::MakeResident(b)) => {
            if a.status != b.status {
                return differ("status", st(a.status), st(b.status));
            }
        }
        (Reply::Lock2(a), Reply::Lock2(b)) => {
            if a.status != b.status {
                return differ("status", st(a.status), st(b.status));
            }
        }
        (Reply::ReserveGpuVirtualAddress(a), Reply::ReserveGpuVirtualAddress(b)) => {
            if a.virtual_address != b.virtual_address {
                return differ(
                    "GPU virtual address (command streams name it)",
                    format!("{:#x}", a.virtual_address),
                    format!("{:#x}", b.virtual_address),
                );
            }
        }
        (Reply::MapGpuVirtualAddress(a), Reply::MapGpuVirtualAddress(b)) => {
            if a.status != b.status {
                return differ("status", st(a.status), st(b.status));
            }
            if a.virtual_address != b.virtual_address {
                return differ(
                    "GPU virtual address (command streams name it)",
                    format!("{:#x}", a.virtual_address),
                    format!("{:#x}", b.virtual_address),
                );
            }
        }
        (Reply::CreateSyncObject(a), Reply::CreateSyncObject(b)) => {
            check!(pair(remap, "fence handle", a.sync_object, b.sync_object));
            if a.fence_storage_address != b.fence_storage_address {
                return differ(
                    "fence storage address",
                    format!("{:#x}", a.fence_storage_address),
                    format!("{:#x}", b.fence_storage_address),
                );
            }
        }
        (Reply::OpenSyncObject(a), Reply::OpenSyncObject(b)) => {
            if a.status != b.status {
                return differ("status", st(a.status), st(b.status));
            }
            check!(pair(remap, "fence handle", a.sync_object, b.sync_object));
        }
        (Reply::Escape { priv_drv_data: a }, Reply::Escape { priv_drv_data: b }) => {
            match (EscapeResponse::decode(a), EscapeResponse::decode(b)) {
                (Ok(x), Ok(y)) => {
                    if x.status != y.status {
                        let msg = if y.error.is_empty() {
                            st(y.status)
                        } else {
                            format!(
                                "{} ({})",
                                st(y.status),
                                y.error.lines().next().unwrap_or("")
                            )
                        };
                        return differ(
                            "escape status (a feature this host lacks?)",
                            st(x.status),
                            msg,
                        );
                    }
                    if x.pipeline != y.pipeline {
                        return differ(
                            "pipeline id (command streams name it)",
                            x.pipeline,
                            y.pipeline,
                        );
                    }
                }
                (Ok(_), Err(e)) => return differ("escape reply", "decodable", e),
                _ => {}
            }
        }
        (a, b) => {
            return differ("reply", format!("{a:?}"), format!("{b:?}"));
        }
    }
    let _ = cur.index;
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use dxvmm_host_backend::SoftBackend;
    use dxvmm_protocol::abi::{syncobject_type, D3dkmtHandle, MonitoredFenceInfo};
    use dxvmm_protocol::frame::encode_frame;
    use dxvmm_protocol::vmbus::{
        global, vgpu, DxgkvmbCommandCreateDevice, DxgkvmbCommandCreateProcess,
        DxgkvmbCommandCreateSyncObject, DxgkvmbCommandDestroySyncObject, DxgkvmbCommandVgpuToHost,
        DxgkvmbCommandVmToHost, DxgkvmbCommandWaitForSyncObjectFromCpu,
    };
    use zerocopy::FromZeros;

    /// Records requests the way `dxvmm run --trace` does: each request,
    /// its reply, then the events the device queued meanwhile.
    struct Recording {
        vm: Vm,
        luid: WinLuid,
        queue: Arc<EventQueue>,
        mem: GuestMemoryMmap,
        records: Vec<Record>,
    }

    impl Recording {
        fn new() -> (Recording, TraceHeader) {
            let backend: Arc<dyn Backend> = Arc::new(SoftBackend::new());
            let queue = Arc::new(EventQueue::new().unwrap());
            backend.set_event_sink(Some(queue.clone()));
            let luid = backend.adapters()[0].luid;
            let header = TraceHeader::new(&backend.adapters(), "test");
            let regions = vec![(0, 1 << 20)];
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            let rec = Recording {
                vm: Vm::with_events(backend, &[luid], queue.clone()),
                luid,
                queue,
                mem,
                records: vec![Record::Layout { t: 0, regions }],
            };
            (rec, header)
        }

        fn run(&mut self, request: Request) -> Reply {
            let id = self.records.len() as u64;
            let frame = encode_frame(
                FrameKind::Request,
                id,
                self.luid,
                NtStatus::SUCCESS,
                &request.encode(),
            );
            let process = request.process().0;
            self.records.push(Record::Request {
                t: 0,
                process,
                frame,
            });
            let reply = self
                .vm
                .dispatch_with(self.luid, request, Some(&self.mem))
                .unwrap();
            let frame = encode_frame(
                FrameKind::Reply,
                id,
                self.luid,
                NtStatus::SUCCESS,
                &reply.encode(),
            );
            self.records.push(Record::Reply {
                t: 0,
                process,
                frame,
            });
            while let Some(frame) = self.queue.pop() {
                self.records.push(Record::Event { t: 0, frame });
            }
            reply
        }

        fn located(&self) -> Vec<Located> {
            self.records
                .iter()
                .enumerate()
                .map(|(i, r)| Located {
                    index: i as u64,
                    offset: 0,
                    record: r.clone(),
                })
                .collect()
        }
    }

    /// A process with a device and a monitored fence; a CPU wait on the
    /// fence that stays pending; then the fence destroyed, which ends the
    /// wait with its event (the backend never reports it).
    fn wait_ended_by_destroy() -> (Vec<Located>, TraceHeader, usize) {
        let (mut rec, header) = Recording::new();
        let mut c = DxgkvmbCommandCreateProcess::new_zeroed();
        c.hdr = DxgkvmbCommandVmToHost::new(global::DXGK_VMBCOMMAND_CREATEPROCESS, D3dkmtHandle(0));
        let process = match rec.run(Request::CreateProcess(Box::new(c))) {
            Reply::CreateProcess(r) => r.hprocess,
            r => panic!("{r:?}"),
        };
        let mut c = DxgkvmbCommandCreateDevice::new_zeroed();
        c.hdr = DxgkvmbCommandVgpuToHost::new(vgpu::DXGK_VMBCOMMAND_CREATEDEVICE, process);
        let device = match rec.run(Request::CreateDevice(c)) {
            Reply::CreateDevice(r) => r.device,
            r => panic!("{r:?}"),
        };
        let mut c = DxgkvmbCommandCreateSyncObject::new_zeroed();
        c.hdr = DxgkvmbCommandVgpuToHost::new(vgpu::DXGK_VMBCOMMAND_CREATESYNCOBJECT, process);
        c.args.device = device;
        c.args.info.r#type = syncobject_type::MONITORED_FENCE;
        c.args.info.set_monitored_fence(MonitoredFenceInfo {
            fence_cpu_virtual_address: 0x3000,
            ..Default::default()
        });
        let fence: D3dkmtHandle = match rec.run(Request::CreateSyncObject(c)) {
            Reply::CreateSyncObject(r) => r.sync_object,
            r => panic!("{r:?}"),
        };
        let mut w = DxgkvmbCommandWaitForSyncObjectFromCpu::new_zeroed();
        w.hdr =
            DxgkvmbCommandVgpuToHost::new(vgpu::DXGK_VMBCOMMAND_WAITFORSYNCOBJECTFROMCPU, process);
        w.device = device;
        w.object_count = 1;
        w.guest_event_pointer = 0x10;
        let waited = rec.run(Request::WaitForSyncObjectFromCpu {
            cmd: w,
            objects: vec![fence],
            fence_values: vec![1],
        });
        assert_eq!(waited, Reply::Status(NtStatus::PENDING));
        let destroy = rec.records.len();
        let mut d = DxgkvmbCommandDestroySyncObject::new_zeroed();
        d.hdr = DxgkvmbCommandVmToHost::new(global::DXGK_VMBCOMMAND_DESTROYSYNCOBJECT, process);
        d.sync_object = fence;
        rec.run(Request::DestroySyncObject(d));
        assert!(
            matches!(rec.records.last(), Some(Record::Event { .. })),
            "the destroy ended the wait with an event"
        );
        (rec.located(), header, destroy)
    }

    fn opts() -> Options {
        Options {
            adapters: None,
            wait_timeout: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_wait_ended_by_a_destroy_replays_as_recorded() {
        let (records, header, _) = wait_ended_by_destroy();
        let report = replay(&header, &records, Arc::new(SoftBackend::new()), &opts()).unwrap();
        assert_eq!(report.divergence, None, "{}", report.to_json());
        assert_eq!(report.waits, 1, "the wait's event was checked");
    }

    #[test]
    fn a_wait_the_replay_never_ends_diverges_at_its_event() {
        let (mut records, header, destroy) = wait_ended_by_destroy();
        // Without the destroy, nothing ends the wait in the replay.
        records.drain(destroy..destroy + 2);
        let report = replay(&header, &records, Arc::new(SoftBackend::new()), &opts()).unwrap();
        let d = report.divergence.expect("a divergence");
        assert!(d.what.contains("CPU wait 0x10"), "{d}");
        assert!(d.replayed.contains("not satisfied"), "{d}");
    }
}
