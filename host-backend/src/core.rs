//! The GPU-PV object model, written once over an [`Engine`]: handle tables,
//! ownership and teardown, GPU virtual address spaces, monitored fences and
//! the per-queue scheduler that holds work behind fence waits.
//!
//! One mutex guards all state. Engine calls that only queue work (upload,
//! execute) happen under it, which keeps each queue's order trivially; the
//! engine runs completions on its own thread, which takes the mutex to
//! apply fence signals. Event sink callbacks run after the mutex is
//! released.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use dxvmm_protocol::abi::WinLuid;
use dxvmm_protocol::cmdstream::{Command, CommandStream, MAX_STREAM_SIZE};
use dxvmm_protocol::escape::CreatePipeline;

use crate::backend::*;
use crate::engine::{Completion, Engine, Op, Progress, Range};
use crate::error::{BackendError, ObjectKind, Result};
use crate::memory::HostVisibleMemory;
use crate::shader::ShaderBinding;

/// Most fences one signal or wait call names.
pub const MAX_FENCES_PER_CALL: usize = 64;

/// Most processes the backend creates in its life (process handles are
/// never reused): 16.7 million.
const MAX_HANDLES: u32 = 0x00ff_ffff;

/// Object handles carry a 30-bit sequence number (the index and instance
/// bits of `D3dkmtHandle`); the top bits say "object" (1) or "process" (2).
const HANDLE_SEQUENCE_MASK: u32 = 0x3fff_ffff;

struct OpenAdapter {
    index: usize,
}

struct Device {
    adapter_handle: Handle,
    adapter: usize,
}

/// A process's GPU virtual address space on one adapter: ranges by start
/// address. As in WDDM it is shared by the process's devices on that
/// adapter, so a second device's mappings neither collide with the first's
/// nor need the device named to be freed.
type VaSpace = BTreeMap<u64, VaEntry>;

#[derive(Clone, Copy)]
struct VaEntry {
    size: u64,
    /// (allocation, offset in it) when mapped; reserved otherwise.
    map: Option<(Handle, u64)>,
    /// The device that reserved or mapped it: its ranges go with it.
    device: Handle,
}

struct Allocation<E: Engine> {
    device: Handle,
    adapter: usize,
    info: AllocationInfo,
    buffer: Arc<E::Buffer>,
    id: u64,
    memory: Option<Arc<dyn HostVisibleMemory>>,
    /// The CPU memory holds data the GPU buffer lacks.
    cpu_dirty: bool,
    /// The GPU wrote the buffer since its last download.
    gpu_dirty: bool,
    locked: bool,
    /// Byte ranges `[start, end)` that UPLOAD commands gave the GPU since
    /// the allocation was last locked, sorted and apart: the process may not
    /// write them again before its next LOCK2, so they are not uploaded
    /// again with the rest (docs/protocol.md §2.6).
    taken: Vec<(u64, u64)>,
}

struct Fence {
    device: Handle,
    adapter: usize,
    /// Completed value: what the CPU sees.
    value: u64,
    /// Highest value that work already handed to the engine (or the CPU)
    /// will reach. A wait for at most this on the same adapter is met by
    /// the engine's in-order execution.
    scheduled: u64,
    storage: Option<FenceStorage>,
}

enum Item<E: Engine> {
    Wait(Vec<FenceValue>),
    Work(Work<E>),
}

/// The commands of a stream between fence commands, run as one piece.
struct Work<E: Engine> {
    ops: Vec<Op<E>>,
    signals: Vec<FenceValue>,
    /// Allocations the work reads or writes (uploaded first if dirty).
    touched: Vec<Handle>,
    written: Vec<Handle>,
    /// UPLOAD commands, (allocation, offset, length): done first, in order.
    uploads: Vec<(Handle, u64, u64)>,
}

impl<E: Engine> Default for Work<E> {
    fn default() -> Self {
        Work {
            ops: Vec::new(),
            signals: Vec::new(),
            touched: Vec::new(),
            written: Vec::new(),
            uploads: Vec::new(),
        }
    }
}

impl<E: Engine> Work<E> {
    /// Ends the piece being built: onto `items` unless it does nothing.
    fn close(&mut self, items: &mut Vec<Item<E>>) {
        if self.ops.is_empty() && self.signals.is_empty() && self.uploads.is_empty() {
            return;
        }
        let mut w = std::mem::take(self);
        w.touched.sort();
        w.touched.dedup();
        w.written.sort();
        w.written.dedup();
        items.push(Item::Work(w));
    }
}

struct Queue<E: Engine> {
    device: Handle,
    adapter: usize,
    /// For a hardware queue: its context.
    context: Option<Handle>,
    progress_fence: Option<Handle>,
    pending: VecDeque<Item<E>>,
}

struct Pipeline<E: Engine> {
    device: Handle,
    pipeline: Arc<E::Pipeline>,
    bindings: Vec<ShaderBinding>,
}

struct PagingQueueObj {
    device: Handle,
    fence: Handle,
}

struct Waiter {
    fences: Vec<FenceValue>,
    mode: WaitMode,
    cookie: u64,
}

struct Process<E: Engine> {
    /// Shared by all processes: handles are unique backend-wide, so one
    /// process's handle used in another is caught, not aliased.
    next_handle: Arc<AtomicU32>,
    adapters: HashMap<Handle, OpenAdapter>,
    devices: HashMap<Handle, Device>,
    allocations: HashMap<Handle, Allocation<E>>,
    queues: HashMap<Handle, Queue<E>>,
    paging_queues: HashMap<Handle, PagingQueueObj>,
    fences: HashMap<Handle, Fence>,
    pipelines: HashMap<Handle, Pipeline<E>>,
    waiters: Vec<Waiter>,
    /// GPU VA spaces by adapter index.
    va: HashMap<usize, VaSpace>,
}

impl<E: Engine> Process<E> {
    /// The allocation `h`, or the error that names it.
    fn allocation(&self, h: Handle) -> Result<&Allocation<E>> {
        self.allocations
            .get(&h)
            .ok_or(BackendError::handle(ObjectKind::Allocation, h.0))
    }

    /// As [`Process::allocation`], to change it.
    fn allocation_mut(&mut self, h: Handle) -> Result<&mut Allocation<E>> {
        self.allocations
            .get_mut(&h)
            .ok_or(BackendError::handle(ObjectKind::Allocation, h.0))
    }

    fn new(next_handle: Arc<AtomicU32>) -> Self {
        Process {
            next_handle,
            adapters: HashMap::new(),
            devices: HashMap::new(),
            allocations: HashMap::new(),
            queues: HashMap::new(),
            paging_queues: HashMap::new(),
            fences: HashMap::new(),
            pipelines: HashMap::new(),
            waiters: Vec::new(),
            va: HashMap::new(),
        }
    }

    fn new_handle(&mut self) -> Result<Handle> {
        // 30 bits of sequence (a billion handles) before the counter wraps;
        // after that a value still alive in this process is skipped, so a
        // long-lived VM never runs out and never gets a duplicate.
        for _ in 0..64 {
            let n = self.next_handle.fetch_add(1, Ordering::Relaxed) & HANDLE_SEQUENCE_MASK;
            if n == 0 {
                continue;
            }
            let h = Handle::from_parts(n & 0x3f, n >> 6, 1);
            if !self.holds(h) {
                return Ok(h);
            }
        }
        Err(BackendError::OutOfMemory {
            what: "handles",
            size: u64::from(HANDLE_SEQUENCE_MASK),
        })
    }

    /// Whether `h` names a live object of this process (of any kind).
    fn holds(&self, h: Handle) -> bool {
        self.adapters.contains_key(&h)
            || self.devices.contains_key(&h)
            || self.allocations.contains_key(&h)
            || self.queues.contains_key(&h)
            || self.paging_queues.contains_key(&h)
            || self.fences.contains_key(&h)
            || self.pipelines.contains_key(&h)
    }

    fn device(&self, h: Handle) -> Result<&Device> {
        self.devices
            .get(&h)
            .ok_or(BackendError::handle(ObjectKind::Device, h.0))
    }

    /// The GPU VA space `device` works in (its adapter's).
    fn va_space(&mut self, device: Handle) -> Result<&mut VaSpace> {
        let adapter = self.device(device)?.adapter;
        Ok(self.va.entry(adapter).or_default())
    }

    fn fence_reached(&self, fv: &FenceValue) -> bool {
        // A destroyed fence never blocks anyone: its waiters would
        // otherwise hang forever.
        self.fences
            .get(&fv.fence)
            .is_none_or(|f| f.value >= fv.value)
    }

    /// Drops the registered CPU waits that name a fence this process no
    /// longer has. Such a wait can never be satisfied as asked, and its
    /// registrant ends it itself when it destroys the fence (device-dxg
    /// sends the guest its event, protocol §2.6.8); kept, it would stay
    /// until the process ends, one more for every wait-then-destroy.
    fn drop_waits_on_dead_fences(&mut self) {
        let fences = &self.fences;
        self.waiters
            .retain(|w| w.fences.iter().all(|f| fences.contains_key(&f.fence)));
    }

    fn wait_met(&self, fences: &[FenceValue], mode: WaitMode) -> bool {
        match mode {
            WaitMode::All => fences.iter().all(|f| self.fence_reached(f)),
            WaitMode::Any => fences.iter().any(|f| self.fence_reached(f)),
        }
    }

    fn counts(&self) -> ObjectCounts {
        let contexts = self.queues.values().filter(|q| q.context.is_none()).count();
        ObjectCounts {
            processes: 1,
            adapters: self.adapters.len() as u64,
            devices: self.devices.len() as u64,
            paging_queues: self.paging_queues.len() as u64,
            allocations: self.allocations.len() as u64,
            contexts: contexts as u64,
            hw_queues: (self.queues.len() - contexts) as u64,
            sync_objects: self.fences.len() as u64,
            pipelines: self.pipelines.len() as u64,
            va_ranges: self.va.values().map(|v| v.len() as u64).sum(),
            pending_submissions: self.queues.values().map(|q| q.pending.len() as u64).sum(),
            allocated_bytes: self.allocations.values().map(|a| a.info.size).sum(),
            gpu_buffers: 0,
        }
    }
}

struct State<E: Engine> {
    processes: HashMap<Handle, Process<E>>,
    next_process: u32,
    next_handle: Arc<AtomicU32>,
    next_buffer_id: u64,
    /// Bytes allocated per adapter, all processes.
    usage: Vec<u64>,
}

/// Deferred sink calls, made once the state lock is released.
#[derive(Default)]
struct Notes {
    fences: Vec<(Handle, Handle, u64)>,
    waits: Vec<(Handle, u64)>,
}

struct Shared<E: Engine> {
    engine: E,
    state: Mutex<State<E>>,
    /// Woken whenever a fence value changes or a process dies.
    changed: Condvar,
    sink: RwLock<Option<Arc<dyn EventSink>>>,
}

/// The object model over engine `E`.
pub(crate) struct Core<E: Engine> {
    shared: Arc<Shared<E>>,
}

fn fence_list(fences: &[FenceValue]) -> Result<()> {
    if fences.is_empty() || fences.len() > MAX_FENCES_PER_CALL {
        return Err(BackendError::range(
            "fence count",
            fences.len() as u64,
            MAX_FENCES_PER_CALL as u64,
        ));
    }
    Ok(())
}

impl<E: Engine> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, State<E>> {
        // Every state change is completed before anything that can panic
        // (which would be a bug); a poisoned lock still holds valid tables.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, notes: Notes) {
        if notes.fences.is_empty() && notes.waits.is_empty() {
            return;
        }
        let sink = self.sink.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(sink) = sink {
            for (p, f, v) in notes.fences {
                sink.fence_signaled(p, f, v);
            }
            for (p, c) in notes.waits {
                sink.wait_satisfied(p, c);
            }
        }
    }

    /// Raises fences to new values: writes their storage, records sink
    /// notes, wakes CPU waiters, and lets held queues run on.
    fn apply_signals(
        self: &Arc<Self>,
        st: &mut State<E>,
        process: Handle,
        signals: &[FenceValue],
        notes: &mut Notes,
    ) {
        let Some(proc_) = st.processes.get_mut(&process) else {
            return;
        };
        let mut any = false;
        for s in signals {
            let Some(f) = proc_.fences.get_mut(&s.fence) else {
                continue;
            };
            f.scheduled = f.scheduled.max(s.value);
            if s.value <= f.value {
                continue;
            }
            f.value = s.value;
            any = true;
            if let Some(storage) = &f.storage {
                if let Err(e) = storage
                    .memory
                    .write_at(storage.offset, &s.value.to_le_bytes())
                {
                    tracing::warn!("fence {:#x}: storage write failed: {e}", s.fence.0);
                }
            }
            notes.fences.push((process, s.fence, s.value));
        }
        if !any {
            return;
        }
        let mut i = 0;
        while i < proc_.waiters.len() {
            let w = &proc_.waiters[i];
            if proc_.wait_met(&w.fences, w.mode) {
                let w = proc_.waiters.swap_remove(i);
                notes.waits.push((process, w.cookie));
            } else {
                i += 1;
            }
        }
        self.changed.notify_all();
        self.pump_process(st, process, notes);
    }

    /// Runs every queue of `process` as far as its fence waits allow, until
    /// nothing more can move.
    fn pump_process(self: &Arc<Self>, st: &mut State<E>, process: Handle, notes: &mut Notes) {
        loop {
            let Some(proc_) = st.processes.get(&process) else {
                return;
            };
            let blocked: Vec<Handle> = proc_
                .queues
                .iter()
                .filter(|(_, q)| !q.pending.is_empty())
                .map(|(h, _)| *h)
                .collect();
            let mut progress = false;
            for q in blocked {
                progress |= self.pump_queue(st, process, q, notes);
            }
            if !progress {
                return;
            }
        }
    }

    /// Runs queue `qh`'s held items until one must wait; true if any ran.
    fn pump_queue(
        self: &Arc<Self>,
        st: &mut State<E>,
        process: Handle,
        qh: Handle,
        notes: &mut Notes,
    ) -> bool {
        let mut progress = false;
        loop {
            let Some(proc_) = st.processes.get_mut(&process) else {
                return progress;
            };
            let Some(q) = proc_.queues.get(&qh) else {
                return progress;
            };
            let adapter = q.adapter;
            match q.pending.front() {
                None => return progress,
                Some(Item::Wait(fences)) => {
                    let met = fences.iter().all(|fv| {
                        proc_.fences.get(&fv.fence).is_none_or(|f| {
                            f.value >= fv.value || (f.adapter == adapter && f.scheduled >= fv.value)
                        })
                    });
                    if !met {
                        return progress;
                    }
                    proc_
                        .queues
                        .get_mut(&qh)
                        .and_then(|q| q.pending.pop_front());
                }
                Some(Item::Work(_)) => {
                    let Some(Item::Work(work)) = proc_
                        .queues
                        .get_mut(&qh)
                        .and_then(|q| q.pending.pop_front())
                    else {
                        return progress;
                    };
                    self.run_work(st, process, adapter, work, notes);
                }
            }
            progress = true;
        }
    }

    /// Hands one piece of work to the engine: uploads what the CPU changed,
    /// executes, and arranges for its fence signals on completion.
    fn run_work(
        self: &Arc<Self>,
        st: &mut State<E>,
        process: Handle,
        adapter: usize,
        work: Work<E>,
        notes: &mut Notes,
    ) {
        let Work {
            ops,
            signals,
            touched,
            written,
            uploads,
        } = work;
        let Some(proc_) = st.processes.get_mut(&process) else {
            return;
        };
        for (h, offset, len) in uploads {
            if let Some(a) = proc_.allocations.get_mut(&h) {
                upload_taken(&self.engine, a, offset, len);
            }
        }
        for h in &touched {
            if let Some(a) = proc_.allocations.get_mut(h) {
                upload_if_dirty(&self.engine, a);
            }
        }
        for h in &written {
            if let Some(a) = proc_.allocations.get_mut(h) {
                a.gpu_dirty = true;
            }
        }
        for s in &signals {
            if let Some(f) = proc_.fences.get_mut(&s.fence) {
                f.scheduled = f.scheduled.max(s.value);
            }
        }
        let done: Option<Completion> = if signals.is_empty() {
            None
        } else {
            let weak: Weak<Shared<E>> = Arc::downgrade(self);
            Some(Box::new(move || {
                if let Some(shared) = weak.upgrade() {
                    let mut notes = Notes::default();
                    {
                        let mut st = shared.lock();
                        shared.apply_signals(&mut st, process, &signals, &mut notes);
                    }
                    shared.deliver(notes);
                }
            }))
        };
        if let Err(e) = self.engine.execute(adapter, &ops, done) {
            // The engine refused work that passed every check: the device
            // is lost. Nothing sensible can be signalled.
            tracing::error!("GPU execution failed: {e}");
        }
        let _ = notes;
    }
}

/// Uploads an allocation's CPU memory to its buffer if the CPU may have
/// changed it (after SETEXISTINGSYSMEMPAGES, UNLOCK2, or while locked),
/// but for the ranges UPLOAD commands already took.
fn upload_if_dirty<E: Engine>(engine: &E, a: &mut Allocation<E>) {
    if !(a.cpu_dirty || a.locked) {
        return;
    }
    // The gaps between taken ranges (all of it when none is taken), in
    // order; ranges end within the allocation (commands are checked).
    let ends = a.taken.iter().map(|r| r.0).chain([a.info.size]);
    let starts = [0].into_iter().chain(a.taken.iter().map(|r| r.1));
    for (start, end) in starts.zip(ends).filter(|(s, e)| s < e) {
        if let Err(e) = upload(engine, a, start, end - start) {
            tracing::warn!("allocation upload failed: {e}");
            return;
        }
    }
    // While locked the CPU may still write what was not taken.
    if !a.locked {
        a.cpu_dirty = false;
        a.taken.clear();
    }
}

/// An UPLOAD command: `[offset, offset + len)` of the CPU memory to the
/// buffer now, and not again until the allocation is locked again.
fn upload_taken<E: Engine>(engine: &E, a: &mut Allocation<E>, offset: u64, len: u64) {
    if let Err(e) = upload(engine, a, offset, len) {
        tracing::warn!("allocation upload failed: {e}");
        return;
    }
    if a.cpu_dirty || a.locked {
        take_range(&mut a.taken, offset, offset + len);
    }
}

/// Most ranges an allocation's `taken` list holds. The guest chooses the
/// ranges: scattered 4-byte UPLOADs would otherwise grow the list without
/// bound (and each use would upload every gap on its own). A range that
/// would go beyond this is not recorded, so it is uploaded again at the
/// next use: from pages that, by the rules, still hold the same bytes.
const MAX_TAKEN: usize = 1024;

/// Adds `[start, end)` to a sorted list of ranges kept apart (ranges that
/// overlap or touch become one), unless it would make the list longer
/// than [`MAX_TAKEN`].
fn take_range(taken: &mut Vec<(u64, u64)>, mut start: u64, mut end: u64) {
    let first = taken.partition_point(|r| r.1 < start);
    let mut last = first;
    while last < taken.len() && taken[last].0 <= end {
        start = start.min(taken[last].0);
        end = end.max(taken[last].1);
        last += 1;
    }
    if first == last && taken.len() >= MAX_TAKEN {
        return;
    }
    taken.splice(first..last, [(start, end)]);
}

/// Copies `[offset, offset + len)` of an allocation's CPU memory to its
/// buffer: straight from guest RAM where the engine can, else through it.
fn upload<E: Engine>(engine: &E, a: &Allocation<E>, offset: u64, len: u64) -> Result<()> {
    let Some(mem) = &a.memory else { return Ok(()) };
    let direct = match mem.host_spans(offset, len) {
        Some(spans) => engine.write_buffer_direct(a.adapter, &a.buffer, &spans),
        None => Ok(false),
    };
    match direct {
        Ok(true) => Ok(()),
        _ => engine.write_buffer(a.adapter, &a.buffer, offset, len, &mut |at, dst| {
            mem.read_at(offset + at, dst)
        }),
    }
}

/// A LOCK2 whose copy is watched ([`Backend::lock_watched`]) and larger
/// than this goes in pieces ([`lock_pieces`]).
const LOCK_PIECE_MIN: u64 = 1 << 20;

/// Environment variable: each piece of a watched LOCK2 takes this share
/// of what is left, as 1 - 1/N (an integer from 2, the default: halves,
/// to 64). For measuring what pieces cost against what they save.
pub const LOCK_PIECE_SHARE_ENV: &str = "DXVMM_LOCK_PIECE_SHARE";

/// Where the pieces of a watched LOCK2 of `size` bytes end: each piece
/// half of what is left (whole pages; another share with
/// [`LOCK_PIECE_SHARE_ENV`]), down to [`LOCK_PIECE_MIN`], then the
/// rest (16 MiB: 8, 4, 2, 1 and 1 MiB). The watcher (a trace's digest)
/// reads each piece while the GPU copies the next, half as long, so the
/// reply waits for the last MiB's read only; and there are few pieces, as
/// each is a GPU submission (about 0.1 ms apiece on lavapipe).
fn lock_pieces(size: u64) -> Vec<u64> {
    static SHARE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let share = *SHARE.get_or_init(|| {
        std::env::var(LOCK_PIECE_SHARE_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map_or(2, |n: u64| n.clamp(2, 64))
    });
    lock_pieces_by(size, share)
}

/// [`lock_pieces`], each piece `1 - 1 / share` of what is left.
fn lock_pieces_by(size: u64, share: u64) -> Vec<u64> {
    let mut ends = Vec::new();
    let mut at = 0;
    while size - at > LOCK_PIECE_MIN {
        let left = size - at;
        let piece = (left - left / share)
            .next_multiple_of(4096)
            .max(LOCK_PIECE_MIN);
        if at + piece >= size {
            break;
        }
        at += piece;
        ends.push(at);
    }
    ends.push(size);
    ends
}

impl<E: Engine> Core<E> {
    /// LOCK2, telling `written` (if any) how far the GPU's contents have
    /// landed in the CPU memory, a piece at a time ([`lock_pieces`]).
    fn lock_allocation(
        &self,
        process: Handle,
        allocation: Handle,
        mut written: Option<&mut dyn FnMut(u64)>,
    ) -> Result<()> {
        self.with_process(process, |p, _| {
            let a = p.allocation_mut(allocation)?;
            let Some(mem) = a.memory.clone() else {
                return Err(BackendError::param(
                    "lock of an allocation without CPU memory",
                    allocation.0.into(),
                ));
            };
            // The CPU may write the pages once they are locked: the GPU
            // must have read any upload it takes straight from them first.
            self.shared
                .engine
                .finish_direct_reads(a.adapter, &a.buffer)?;
            if a.gpu_dirty {
                // The CPU copy may be stale only where the GPU wrote; a
                // pending CPU change (cpu_dirty) cannot coexist with a GPU
                // write because every GPU use uploads first.
                let engine = &self.shared.engine;
                let size = a.info.size;
                let ends = lock_pieces(size);
                let direct = match mem.host_spans(0, size) {
                    Some(spans) => {
                        let progress = written
                            .as_deref_mut()
                            .map(|w| -> Progress<'_> { (&ends, w) });
                        engine.read_buffer_direct(a.adapter, &a.buffer, &spans, progress)?
                    }
                    None => false,
                };
                if !direct {
                    engine.read_buffer(a.adapter, &a.buffer, 0, size, &mut |src| {
                        // In pieces when someone listens: it reads each
                        // piece while the next is copied.
                        let Some(w) = written.as_deref_mut() else {
                            return mem.write_at(0, src);
                        };
                        let mut at = 0;
                        for &end in &ends {
                            let piece = src.get(at as usize..end as usize).unwrap_or_default();
                            mem.write_at(at, piece)?;
                            at = end;
                            w(end);
                        }
                        Ok(())
                    })?;
                }
                a.gpu_dirty = false;
            }
            a.locked = true;
            a.taken.clear();
            Ok(())
        })
    }

    pub(crate) fn new(engine: E) -> Self {
        let n = engine.adapters().len();
        Core {
            shared: Arc::new(Shared {
                engine,
                state: Mutex::new(State {
                    processes: HashMap::new(),
                    next_process: 1,
                    next_handle: Arc::new(AtomicU32::new(1)),
                    next_buffer_id: 1,
                    usage: vec![0; n],
                }),
                changed: Condvar::new(),
                sink: RwLock::new(None),
            }),
        }
    }

    pub(crate) fn engine(&self) -> &E {
        &self.shared.engine
    }

    fn with_process<T>(
        &self,
        process: Handle,
        f: impl FnOnce(&mut Process<E>, &mut Vec<u64>) -> Result<T>,
    ) -> Result<T> {
        let mut st = self.shared.lock();
        let st = &mut *st;
        let p = st
            .processes
            .get_mut(&process)
            .ok_or(BackendError::handle(ObjectKind::Process, process.0))?;
        f(p, &mut st.usage)
    }

    fn adapter_by_index(&self, index: usize) -> &AdapterInfo {
        &self.shared.engine.adapters()[index]
    }

    /// Resolves `[va, va + size)` of `device` to one allocation.
    fn resolve(p: &Process<E>, device: Handle, va: u64, size: u64) -> Result<(Handle, u64)> {
        let d = p.device(device)?;
        let unmapped = BackendError::UnmappedVa { va, size };
        let space = p.va.get(&d.adapter).ok_or(unmapped.clone())?;
        let (&start, e) = space.range(..=va).next_back().ok_or(unmapped.clone())?;
        let (alloc, off) = e.map.ok_or(unmapped.clone())?;
        let end = va.checked_add(size).ok_or(unmapped.clone())?;
        if end > start + e.size {
            return Err(unmapped);
        }
        // A mapping's last page may run past the allocation's size (not a
        // page multiple): that slack is not the allocation's.
        let at = off + (va - start);
        let a = p.allocation(alloc)?;
        if at.checked_add(size).is_none_or(|e| e > a.info.size) {
            return Err(unmapped);
        }
        Ok((alloc, at))
    }

    fn range(p: &Process<E>, device: Handle, va: u64, size: u64) -> Result<(Handle, Range<E>)> {
        let (h, offset) = Self::resolve(p, device, va, size)?;
        let a = p.allocation(h)?;
        Ok((
            h,
            Range {
                buffer: a.buffer.clone(),
                buffer_id: a.id,
                offset,
                size,
            },
        ))
    }

    /// Checks a decoded stream against the process's objects and turns it
    /// into queue items. Nothing is queued unless all of it is valid.
    fn build_items(
        &self,
        p: &Process<E>,
        device: Handle,
        adapter: usize,
        stream: &CommandStream,
    ) -> Result<Vec<Item<E>>> {
        let limits = &self.adapter_by_index(adapter).limits;
        let mut items = Vec::new();
        let mut work = Work::default();
        for cmd in &stream.commands {
            match cmd {
                Command::Copy {
                    src_va,
                    dst_va,
                    size,
                } => {
                    let (sh, src) = Self::range(p, device, *src_va, *size)?;
                    let (dh, dst) = Self::range(p, device, *dst_va, *size)?;
                    work.touched.extend([sh, dh]);
                    work.written.push(dh);
                    work.ops.push(Op::Copy { src, dst });
                }
                Command::Fill {
                    dst_va,
                    size,
                    value,
                } => {
                    let (dh, dst) = Self::range(p, device, *dst_va, *size)?;
                    work.touched.push(dh);
                    work.written.push(dh);
                    work.ops.push(Op::Fill { dst, value: *value });
                }
                Command::Upload { va, size } => {
                    let (h, offset) = Self::resolve(p, device, *va, *size)?;
                    let a = p.allocation(h)?;
                    if a.memory.is_none() {
                        return Err(BackendError::param(
                            "upload from an allocation without CPU memory",
                            h.0.into(),
                        ));
                    }
                    work.uploads.push((h, offset, *size));
                }
                Command::Timestamp { dst_va } => {
                    let (dh, dst) = Self::range(p, device, *dst_va, 8)?;
                    work.touched.push(dh);
                    work.written.push(dh);
                    work.ops.push(Op::Timestamp { dst });
                }
                Command::Dispatch {
                    pipeline,
                    group_counts,
                    bindings,
                } => {
                    let ph = dxvmm_protocol::abi::D3dkmtHandle(*pipeline);
                    let pl = p
                        .pipelines
                        .get(&ph)
                        .filter(|pl| pl.device == device)
                        .ok_or(BackendError::handle(ObjectKind::Pipeline, ph.0))?;
                    for &g in group_counts {
                        if g > limits.max_workgroups_per_dimension {
                            return Err(BackendError::range(
                                "workgroup count",
                                g.into(),
                                limits.max_workgroups_per_dimension.into(),
                            ));
                        }
                    }
                    let mut sorted = bindings.clone();
                    sorted.sort_by_key(|b| b.binding);
                    let slots: Vec<u32> = sorted.iter().map(|b| b.binding).collect();
                    let want: Vec<u32> = pl.bindings.iter().map(|b| b.binding).collect();
                    if slots != want {
                        let missing_or_extra = slots
                            .iter()
                            .chain(&want)
                            .find(|s| !(slots.contains(s) && want.contains(s)))
                            .copied()
                            .unwrap_or(0);
                        return Err(BackendError::param(
                            "dispatch binding slot (missing or not in the shader)",
                            missing_or_extra.into(),
                        ));
                    }
                    let mut resolved = Vec::with_capacity(sorted.len());
                    // (allocation, writable) per binding, for the aliasing check.
                    let mut uses: Vec<(Handle, bool)> = Vec::new();
                    for (b, sb) in sorted.iter().zip(&pl.bindings) {
                        if b.size < sb.min_size {
                            return Err(BackendError::range("binding size", b.size, sb.min_size));
                        }
                        if b.size > limits.max_storage_buffer_binding_size {
                            return Err(BackendError::range(
                                "binding size",
                                b.size,
                                limits.max_storage_buffer_binding_size,
                            ));
                        }
                        let (h, r) = Self::range(p, device, b.va, b.size)?;
                        let align = u64::from(limits.min_storage_buffer_offset_alignment.max(1));
                        if !r.offset.is_multiple_of(align) {
                            return Err(BackendError::param(
                                "binding offset in its allocation (misaligned)",
                                r.offset,
                            ));
                        }
                        work.touched.push(h);
                        if sb.writable {
                            work.written.push(h);
                        }
                        uses.push((h, sb.writable));
                        resolved.push((b.binding, r));
                    }
                    // The GPU cannot have one buffer both read-only and
                    // writable in one dispatch.
                    for (h, w) in &uses {
                        if uses.iter().any(|(h2, w2)| h2 == h && w2 != w) {
                            return Err(BackendError::param(
                                "allocation bound both read-only and writable",
                                h.0.into(),
                            ));
                        }
                    }
                    work.ops.push(Op::Dispatch {
                        pipeline: pl.pipeline.clone(),
                        groups: *group_counts,
                        bindings: resolved,
                    });
                }
                Command::FenceSignal { sync_object, value } => {
                    if !p.fences.contains_key(sync_object) {
                        return Err(BackendError::handle(ObjectKind::SyncObject, sync_object.0));
                    }
                    work.signals.push(FenceValue {
                        fence: *sync_object,
                        value: *value,
                    });
                    work.close(&mut items);
                }
                Command::FenceWait { sync_object, value } => {
                    if !p.fences.contains_key(sync_object) {
                        return Err(BackendError::handle(ObjectKind::SyncObject, sync_object.0));
                    }
                    work.close(&mut items);
                    items.push(Item::Wait(vec![FenceValue {
                        fence: *sync_object,
                        value: *value,
                    }]));
                }
            }
        }
        work.close(&mut items);
        Ok(items)
    }

    /// Appends items to a queue and runs what can run.
    fn enqueue(&self, process: Handle, queue: Handle, items: Vec<Item<E>>) -> Result<()> {
        let mut notes = Notes::default();
        {
            let mut st = self.shared.lock();
            let p = st
                .processes
                .get_mut(&process)
                .ok_or(BackendError::handle(ObjectKind::Process, process.0))?;
            let q = p
                .queues
                .get_mut(&queue)
                .ok_or(BackendError::handle(ObjectKind::Context, queue.0))?;
            q.pending.extend(items);
            // Other queues may have been waiting for a signal this work
            // schedules: pump them all.
            self.shared.pump_process(&mut st, process, &mut notes);
        }
        self.shared.deliver(notes);
        Ok(())
    }

    fn destroy_queue_in(p: &mut Process<E>, h: Handle) {
        if let Some(q) = p.queues.remove(&h) {
            if let Some(f) = q.progress_fence {
                p.fences.remove(&f);
                p.drop_waits_on_dead_fences();
            }
        }
        let children: Vec<Handle> = p
            .queues
            .iter()
            .filter(|(_, q)| q.context == Some(h))
            .map(|(k, _)| *k)
            .collect();
        for c in children {
            Self::destroy_queue_in(p, c);
        }
    }

    fn destroy_device_in(p: &mut Process<E>, usage: &mut [u64], h: Handle) {
        let Some(d) = p.devices.remove(&h) else {
            return;
        };
        p.allocations.retain(|_, a| {
            if a.device == h {
                usage[d.adapter] = usage[d.adapter].saturating_sub(a.info.size);
                false
            } else {
                true
            }
        });
        let queues: Vec<Handle> = p
            .queues
            .iter()
            .filter(|(_, q)| q.device == h)
            .map(|(k, _)| *k)
            .collect();
        for q in queues {
            Self::destroy_queue_in(p, q);
        }
        p.paging_queues.retain(|_, q| q.device != h);
        p.fences.retain(|_, f| f.device != h);
        p.drop_waits_on_dead_fences();
        p.pipelines.retain(|_, pl| pl.device != h);
        if let Some(space) = p.va.get_mut(&d.adapter) {
            space.retain(|_, e| e.device != h);
        }
    }

    fn check_fences(p: &Process<E>, fences: &[FenceValue]) -> Result<()> {
        fence_list(fences)?;
        for f in fences {
            if !p.fences.contains_key(&f.fence) {
                return Err(BackendError::handle(ObjectKind::SyncObject, f.fence.0));
            }
        }
        Ok(())
    }

    fn new_fence(
        p: &mut Process<E>,
        device: Handle,
        initial: u64,
        storage: Option<FenceStorage>,
    ) -> Result<Handle> {
        let adapter = p.device(device)?.adapter;
        if let Some(s) = &storage {
            let end = s.offset.checked_add(8);
            if !s.offset.is_multiple_of(8) || end.is_none_or(|e| e > s.memory.len()) {
                return Err(BackendError::range(
                    "fence storage offset",
                    s.offset,
                    s.memory.len(),
                ));
            }
            s.memory.write_at(s.offset, &initial.to_le_bytes())?;
        }
        let h = p.new_handle()?;
        p.fences.insert(
            h,
            Fence {
                device,
                adapter,
                value: initial,
                scheduled: initial,
                storage,
            },
        );
        Ok(h)
    }

    /// Finds a free, aligned VA range of `size` in `[min, max)`.
    fn find_va(space: &VaSpace, size: u64, align: u64, min: u64, max: u64) -> Option<u64> {
        let lo = min.max(GPU_VA_START);
        let hi = if max == 0 {
            GPU_VA_END
        } else {
            max.min(GPU_VA_END)
        };
        let mut cand = lo.checked_next_multiple_of(align)?;
        for (&start, e) in space.range(..) {
            let end = start + e.size;
            if end <= cand {
                continue;
            }
            if start >= cand.checked_add(size)? {
                break;
            }
            cand = end.checked_next_multiple_of(align)?;
        }
        (cand.checked_add(size)? <= hi).then_some(cand)
    }

    fn check_va_args(base: u64, size: u64) -> Result<()> {
        if size == 0 || !size.is_multiple_of(GPU_PAGE_SIZE) {
            return Err(BackendError::param("GPU VA size", size));
        }
        if !base.is_multiple_of(GPU_PAGE_SIZE) {
            return Err(BackendError::param("GPU VA base", base));
        }
        Ok(())
    }
}

fn overlaps(space: &VaSpace, base: u64, size: u64) -> bool {
    let end = base + size;
    space
        .range(..end)
        .next_back()
        .is_some_and(|(&s, e)| s + e.size > base)
}

impl<E: Engine> Backend for Core<E> {
    fn adapters(&self) -> Vec<AdapterInfo> {
        self.shared.engine.adapters().to_vec()
    }

    fn query_video_memory(
        &self,
        process: Handle,
        adapter: Handle,
        group: SegmentGroup,
    ) -> Result<VideoMemoryInfo> {
        let st = self.shared.lock();
        let p = st
            .processes
            .get(&process)
            .ok_or(BackendError::handle(ObjectKind::Process, process.0))?;
        let index = p
            .adapters
            .get(&adapter)
            .ok_or(BackendError::handle(ObjectKind::Adapter, adapter.0))?
            .index;
        if group == SegmentGroup::NonLocal {
            // Every allocation lives in the adapter's one local segment.
            return Ok(VideoMemoryInfo::default());
        }
        let budget = self.adapter_by_index(index).memory_budget;
        let mine: u64 = p
            .allocations
            .values()
            .filter(|a| a.adapter == index)
            .map(|a| a.info.size)
            .sum();
        Ok(VideoMemoryInfo {
            budget,
            current_usage: mine,
            current_reservation: 0,
            available_for_reservation: budget.saturating_sub(st.usage[index]),
        })
    }

    fn set_event_sink(&self, sink: Option<Arc<dyn EventSink>>) {
        *self.shared.sink.write().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    fn create_process(&self) -> Result<Handle> {
        let mut st = self.shared.lock();
        if st.next_process > MAX_HANDLES {
            return Err(BackendError::OutOfMemory {
                what: "process handles",
                size: MAX_HANDLES.into(),
            });
        }
        // Unique bits 2 mark process handles apart from per-process ones.
        let h = Handle::from_parts(0, st.next_process, 2);
        st.next_process += 1;
        let counter = st.next_handle.clone();
        st.processes.insert(h, Process::new(counter));
        Ok(h)
    }

    fn destroy_process(&self, process: Handle) -> Result<()> {
        let mut st = self.shared.lock();
        let st = &mut *st;
        let p = st
            .processes
            .remove(&process)
            .ok_or(BackendError::handle(ObjectKind::Process, process.0))?;
        for a in p.allocations.values() {
            st.usage[a.adapter] = st.usage[a.adapter].saturating_sub(a.info.size);
        }
        // CPU waiters of this process wake up and find it gone.
        self.shared.changed.notify_all();
        Ok(())
    }

    fn open_adapter(&self, process: Handle, luid: WinLuid) -> Result<Handle> {
        let index = self
            .shared
            .engine
            .adapters()
            .iter()
            .position(|a| a.luid == luid)
            .ok_or(BackendError::InvalidHandle {
                kind: ObjectKind::Adapter,
                handle: (u64::from(luid.b) << 32) | u64::from(luid.a),
            })?;
        self.with_process(process, |p, _| {
            let h = p.new_handle()?;
            p.adapters.insert(h, OpenAdapter { index });
            Ok(h)
        })
    }

    fn close_adapter(&self, process: Handle, adapter: Handle) -> Result<()> {
        self.with_process(process, |p, usage| {
            p.adapters
                .remove(&adapter)
                .ok_or(BackendError::handle(ObjectKind::Adapter, adapter.0))?;
            let devices: Vec<Handle> = p
                .devices
                .iter()
                .filter(|(_, d)| d.adapter_handle == adapter)
                .map(|(h, _)| *h)
                .collect();
            for d in devices {
                Self::destroy_device_in(p, usage, d);
            }
            Ok(())
        })
    }

    fn adapter_info(&self, process: Handle, adapter: Handle) -> Result<AdapterInfo> {
        let index = self.with_process(process, |p, _| {
            Ok(p.adapters
                .get(&adapter)
                .ok_or(BackendError::handle(ObjectKind::Adapter, adapter.0))?
                .index)
        })?;
        Ok(self.adapter_by_index(index).clone())
    }

    fn create_device(&self, process: Handle, adapter: Handle) -> Result<Handle> {
        self.with_process(process, |p, _| {
            let index = p
                .adapters
                .get(&adapter)
                .ok_or(BackendError::handle(ObjectKind::Adapter, adapter.0))?
                .index;
            let h = p.new_handle()?;
            p.devices.insert(
                h,
                Device {
                    adapter_handle: adapter,
                    adapter: index,
                },
            );
            Ok(h)
        })
    }

    fn destroy_device(&self, process: Handle, device: Handle) -> Result<()> {
        self.with_process(process, |p, usage| {
            p.device(device)?;
            Self::destroy_device_in(p, usage, device);
            Ok(())
        })
    }

    fn create_paging_queue(&self, process: Handle, device: Handle) -> Result<PagingQueue> {
        self.with_process(process, |p, _| {
            let fence = Self::new_fence(p, device, 0, None)?;
            let h = p.new_handle()?;
            p.paging_queues.insert(h, PagingQueueObj { device, fence });
            Ok(PagingQueue {
                handle: h,
                sync_object: fence,
            })
        })
    }

    fn destroy_paging_queue(&self, process: Handle, queue: Handle) -> Result<()> {
        self.with_process(process, |p, _| {
            let q = p
                .paging_queues
                .remove(&queue)
                .ok_or(BackendError::handle(ObjectKind::PagingQueue, queue.0))?;
            p.fences.remove(&q.fence);
            p.drop_waits_on_dead_fences();
            Ok(())
        })
    }

    fn create_context(&self, process: Handle, device: Handle) -> Result<Handle> {
        self.with_process(process, |p, _| {
            let adapter = p.device(device)?.adapter;
            let h = p.new_handle()?;
            p.queues.insert(
                h,
                Queue {
                    device,
                    adapter,
                    context: None,
                    progress_fence: None,
                    pending: VecDeque::new(),
                },
            );
            Ok(h)
        })
    }

    fn destroy_context(&self, process: Handle, context: Handle) -> Result<()> {
        self.with_process(process, |p, _| {
            match p.queues.get(&context) {
                Some(q) if q.context.is_none() => {}
                _ => return Err(BackendError::handle(ObjectKind::Context, context.0)),
            }
            Self::destroy_queue_in(p, context);
            Ok(())
        })
    }

    fn create_hw_queue(
        &self,
        process: Handle,
        context: Handle,
        progress_storage: Option<FenceStorage>,
    ) -> Result<HwQueue> {
        self.with_process(process, |p, _| {
            let (device, adapter) = match p.queues.get(&context) {
                Some(q) if q.context.is_none() => (q.device, q.adapter),
                _ => return Err(BackendError::handle(ObjectKind::Context, context.0)),
            };
            let fence = Self::new_fence(p, device, 0, progress_storage)?;
            let h = match p.new_handle() {
                Ok(h) => h,
                Err(e) => {
                    p.fences.remove(&fence);
                    return Err(e);
                }
            };
            p.queues.insert(
                h,
                Queue {
                    device,
                    adapter,
                    context: Some(context),
                    progress_fence: Some(fence),
                    pending: VecDeque::new(),
                },
            );
            Ok(HwQueue {
                handle: h,
                progress_fence: fence,
            })
        })
    }

    fn destroy_hw_queue(&self, process: Handle, queue: Handle) -> Result<()> {
        self.with_process(process, |p, _| {
            match p.queues.get(&queue) {
                Some(q) if q.context.is_some() => {}
                _ => return Err(BackendError::handle(ObjectKind::HwQueue, queue.0)),
            }
            Self::destroy_queue_in(p, queue);
            Ok(())
        })
    }

    fn create_allocation(
        &self,
        process: Handle,
        device: Handle,
        desc: &AllocationDesc,
    ) -> Result<(Handle, AllocationInfo)> {
        let mut st = self.shared.lock();
        let st = &mut *st;
        let p = st
            .processes
            .get_mut(&process)
            .ok_or(BackendError::handle(ObjectKind::Process, process.0))?;
        let adapter = p.device(device)?.adapter;
        let info = self.adapter_by_index(adapter);
        if desc.alignment != 0
            && (!desc.alignment.is_power_of_two() || desc.alignment > MAX_ALIGNMENT)
        {
            return Err(BackendError::param("allocation alignment", desc.alignment));
        }
        if desc.size == 0 {
            return Err(BackendError::param("allocation size", 0));
        }
        let size = desc
            .size
            .checked_next_multiple_of(4)
            .filter(|&s| s <= info.limits.max_buffer_size)
            .ok_or(BackendError::OutOfMemory {
                what: "allocation larger than the adapter's largest buffer",
                size: desc.size,
            })?;
        if st.usage[adapter].saturating_add(size) > info.memory_budget {
            return Err(BackendError::OutOfMemory {
                what: "allocation beyond the adapter's memory budget",
                size,
            });
        }
        let buffer = self.shared.engine.create_buffer(adapter, size)?;
        let h = p.new_handle()?;
        let id = st.next_buffer_id;
        st.next_buffer_id += 1;
        st.usage[adapter] += size;
        let ai = AllocationInfo {
            size,
            alignment: desc.alignment.max(GPU_PAGE_SIZE),
            cpu_visible: desc.cpu_visible,
            segment_id: 1,
        };
        p.allocations.insert(
            h,
            Allocation {
                device,
                adapter,
                info: ai,
                buffer: Arc::new(buffer),
                id,
                memory: None,
                cpu_dirty: false,
                taken: Vec::new(),
                gpu_dirty: false,
                locked: false,
            },
        );
        Ok((h, ai))
    }

    fn set_allocation_memory(
        &self,
        process: Handle,
        allocation: Handle,
        memory: Arc<dyn HostVisibleMemory>,
    ) -> Result<()> {
        self.with_process(process, |p, _| {
            let a = p.allocation_mut(allocation)?;
            if memory.len() < a.info.size {
                return Err(BackendError::range(
                    "allocation memory size",
                    memory.len(),
                    a.info.size,
                ));
            }
            a.memory = Some(memory);
            a.cpu_dirty = true;
            a.taken.clear();
            a.gpu_dirty = false;
            Ok(())
        })
    }

    fn destroy_allocation(&self, process: Handle, allocation: Handle) -> Result<()> {
        self.with_process(process, |p, usage| {
            let a = p
                .allocations
                .remove(&allocation)
                .ok_or(BackendError::handle(ObjectKind::Allocation, allocation.0))?;
            usage[a.adapter] = usage[a.adapter].saturating_sub(a.info.size);
            if let Some(space) = p.va.get_mut(&a.adapter) {
                for e in space.values_mut() {
                    if e.map.is_some_and(|(h, _)| h == allocation) {
                        e.map = None;
                    }
                }
            }
            Ok(())
        })
    }

    fn lock(&self, process: Handle, allocation: Handle) -> Result<()> {
        self.lock_allocation(process, allocation, None)
    }

    fn lock_watched(
        &self,
        process: Handle,
        allocation: Handle,
        written: &mut dyn FnMut(u64),
    ) -> Result<()> {
        self.lock_allocation(process, allocation, Some(written))
    }

    fn unlock(&self, process: Handle, allocation: Handle) -> Result<()> {
        self.with_process(process, |p, _| {
            let a = p.allocation_mut(allocation)?;
            if !a.locked {
                return Err(BackendError::param(
                    "unlock of an allocation that is not locked",
                    allocation.0.into(),
                ));
            }
            a.locked = false;
            a.cpu_dirty = true;
            Ok(())
        })
    }

    fn reserve_gpu_va(&self, process: Handle, device: Handle, req: &VaReservation) -> Result<u64> {
        Self::check_va_args(req.base, req.size)?;
        self.with_process(process, |p, _| {
            let space = p.va_space(device)?;
            let base = if req.base != 0 {
                let end = req
                    .base
                    .checked_add(req.size)
                    .filter(|&e| req.base >= GPU_VA_START && e <= GPU_VA_END)
                    .ok_or(BackendError::range("GPU VA", req.base, GPU_VA_END))?;
                if overlaps(space, req.base, end - req.base) {
                    return Err(BackendError::param("GPU VA already in use", req.base));
                }
                req.base
            } else {
                Self::find_va(space, req.size, GPU_PAGE_SIZE, req.minimum, req.maximum).ok_or(
                    BackendError::OutOfMemory {
                        what: "GPU virtual address space",
                        size: req.size,
                    },
                )?
            };
            space.insert(
                base,
                VaEntry {
                    size: req.size,
                    map: None,
                    device,
                },
            );
            Ok(base)
        })
    }

    fn map_gpu_va(&self, process: Handle, device: Handle, map: &VaMapping) -> Result<u64> {
        Self::check_va_args(map.base, map.size)?;
        if !map.allocation_offset.is_multiple_of(GPU_PAGE_SIZE) {
            return Err(BackendError::param(
                "allocation offset of a GPU VA mapping",
                map.allocation_offset,
            ));
        }
        self.with_process(process, |p, _| {
            let a = p
                .allocations
                .get(&map.allocation)
                .ok_or(BackendError::handle(
                    ObjectKind::Allocation,
                    map.allocation.0,
                ))?;
            if a.device != device {
                return Err(BackendError::handle(
                    ObjectKind::Allocation,
                    map.allocation.0,
                ));
            }
            let align = a.info.alignment;
            // The last page may run past the allocation's size when the
            // size is not a page multiple; commands are still checked
            // against the allocation (`resolve`), so that slack is never
            // used.
            let alloc_pages = a.info.size.next_multiple_of(GPU_PAGE_SIZE);
            let end = map.allocation_offset.checked_add(map.size);
            if end.is_none_or(|e| e > alloc_pages) {
                return Err(BackendError::range(
                    "GPU VA mapping end in the allocation",
                    map.allocation_offset.saturating_add(map.size),
                    alloc_pages,
                ));
            }
            let space = p.va_space(device)?;
            let entry = VaEntry {
                size: map.size,
                map: Some((map.allocation, map.allocation_offset)),
                device,
            };
            if map.base == 0 {
                let base = Self::find_va(space, map.size, align, map.minimum, map.maximum).ok_or(
                    BackendError::OutOfMemory {
                        what: "GPU virtual address space",
                        size: map.size,
                    },
                )?;
                space.insert(base, entry);
                return Ok(base);
            }
            if !map.base.is_multiple_of(align) {
                return Err(BackendError::param("GPU VA base (alignment)", map.base));
            }
            // Map into (part of) one existing range, splitting it.
            let (&start, &old) = space
                .range(..=map.base)
                .next_back()
                .filter(|(&s, e)| {
                    map.base
                        .checked_add(map.size)
                        .is_some_and(|end| end <= s + e.size)
                })
                .ok_or(BackendError::UnmappedVa {
                    va: map.base,
                    size: map.size,
                })?;
            space.remove(&start);
            if map.base > start {
                space.insert(
                    start,
                    VaEntry {
                        size: map.base - start,
                        ..old
                    },
                );
            }
            let end = map.base + map.size;
            let old_end = start + old.size;
            if end < old_end {
                space.insert(
                    end,
                    VaEntry {
                        size: old_end - end,
                        map: old.map.map(|(h, off)| (h, off + (end - start))),
                        device: old.device,
                    },
                );
            }
            space.insert(map.base, entry);
            Ok(map.base)
        })
    }

    fn free_gpu_va(&self, process: Handle, device: Handle, base: u64, size: u64) -> Result<()> {
        Self::check_va_args(base, size)?;
        let end = base
            .checked_add(size)
            .ok_or(BackendError::range("GPU VA", base, GPU_VA_END))?;
        self.with_process(process, |p, _| {
            let space = p.va_space(device)?;
            if let Some((&s, e)) = space.range(..base).next_back() {
                if s + e.size > base {
                    return Err(BackendError::range("GPU VA range to free", s, base));
                }
            }
            let inside: Vec<u64> = space.range(base..end).map(|(&s, _)| s).collect();
            if inside.is_empty() {
                return Err(BackendError::UnmappedVa { va: base, size });
            }
            for s in &inside {
                if s + space[s].size > end {
                    return Err(BackendError::range("GPU VA range to free", *s, end));
                }
            }
            for s in inside {
                space.remove(&s);
            }
            Ok(())
        })
    }

    fn create_sync_object(
        &self,
        process: Handle,
        device: Handle,
        initial_value: u64,
        storage: Option<FenceStorage>,
    ) -> Result<Handle> {
        self.with_process(process, |p, _| {
            Self::new_fence(p, device, initial_value, storage)
        })
    }

    fn destroy_sync_object(&self, process: Handle, fence: Handle) -> Result<()> {
        self.with_process(process, |p, _| {
            let owned = p.paging_queues.values().any(|q| q.fence == fence)
                || p.queues.values().any(|q| q.progress_fence == Some(fence));
            if owned {
                // Dies with its paging or hardware queue.
                return Err(BackendError::param(
                    "sync object owned by a queue",
                    fence.0.into(),
                ));
            }
            p.fences
                .remove(&fence)
                .ok_or(BackendError::handle(ObjectKind::SyncObject, fence.0))?;
            p.drop_waits_on_dead_fences();
            Ok(())
        })?;
        // Queues held on it move on (a destroyed fence holds nobody).
        let mut notes = Notes::default();
        {
            let mut st = self.shared.lock();
            self.shared.pump_process(&mut st, process, &mut notes);
        }
        self.shared.changed.notify_all();
        self.shared.deliver(notes);
        Ok(())
    }

    fn fence_value(&self, process: Handle, fence: Handle) -> Result<u64> {
        self.with_process(process, |p, _| {
            Ok(p.fences
                .get(&fence)
                .ok_or(BackendError::handle(ObjectKind::SyncObject, fence.0))?
                .value)
        })
    }

    fn signal_from_cpu(&self, process: Handle, fences: &[FenceValue]) -> Result<()> {
        let mut notes = Notes::default();
        {
            let mut st = self.shared.lock();
            let p = st
                .processes
                .get(&process)
                .ok_or(BackendError::handle(ObjectKind::Process, process.0))?;
            Self::check_fences(p, fences)?;
            self.shared
                .apply_signals(&mut st, process, fences, &mut notes);
        }
        self.shared.deliver(notes);
        Ok(())
    }

    fn wait_from_cpu(
        &self,
        process: Handle,
        fences: &[FenceValue],
        mode: WaitMode,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.shared.lock();
        {
            let p = st
                .processes
                .get(&process)
                .ok_or(BackendError::handle(ObjectKind::Process, process.0))?;
            Self::check_fences(p, fences)?;
        }
        loop {
            let p = st
                .processes
                .get(&process)
                .ok_or(BackendError::handle(ObjectKind::Process, process.0))?;
            if let Some(f) = fences.iter().find(|f| !p.fences.contains_key(&f.fence)) {
                return Err(BackendError::handle(ObjectKind::SyncObject, f.fence.0));
            }
            if p.wait_met(fences, mode) {
                return Ok(());
            }
            st = match deadline {
                None => self
                    .shared
                    .changed
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(BackendError::Timeout);
                    }
                    self.shared
                        .changed
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    fn notify_when_reached(
        &self,
        process: Handle,
        fences: &[FenceValue],
        mode: WaitMode,
        cookie: u64,
    ) -> Result<()> {
        let met = self.with_process(process, |p, _| {
            Self::check_fences(p, fences)?;
            if p.wait_met(fences, mode) {
                return Ok(true);
            }
            p.waiters.push(Waiter {
                fences: fences.to_vec(),
                mode,
                cookie,
            });
            Ok(false)
        })?;
        if met {
            self.shared.deliver(Notes {
                fences: Vec::new(),
                waits: vec![(process, cookie)],
            });
        }
        Ok(())
    }

    fn signal_from_queue(
        &self,
        process: Handle,
        queue: Handle,
        fences: &[FenceValue],
    ) -> Result<()> {
        self.with_process(process, |p, _| {
            Self::check_fences(p, fences)?;
            p.queues
                .get(&queue)
                .ok_or(BackendError::handle(ObjectKind::Context, queue.0))
                .map(|_| ())
        })?;
        let item = Item::Work(Work {
            signals: fences.to_vec(),
            ..Work::default()
        });
        self.enqueue(process, queue, vec![item])
    }

    fn wait_from_queue(&self, process: Handle, queue: Handle, fences: &[FenceValue]) -> Result<()> {
        self.with_process(process, |p, _| {
            Self::check_fences(p, fences)?;
            p.queues
                .get(&queue)
                .ok_or(BackendError::handle(ObjectKind::Context, queue.0))
                .map(|_| ())
        })?;
        self.enqueue(process, queue, vec![Item::Wait(fences.to_vec())])
    }

    fn submit(&self, process: Handle, queue: Handle, commands: CommandBuffer<'_>) -> Result<()> {
        let items = {
            let st = self.shared.lock();
            let p = st
                .processes
                .get(&process)
                .ok_or(BackendError::handle(ObjectKind::Process, process.0))?;
            let q = p
                .queues
                .get(&queue)
                .ok_or(BackendError::handle(ObjectKind::Context, queue.0))?;
            let (device, adapter) = (q.device, q.adapter);
            let owned;
            let bytes: &[u8] = match commands {
                CommandBuffer::Bytes(b) => b,
                CommandBuffer::GpuVa { va, length } => {
                    if length == 0 || length > MAX_STREAM_SIZE as u64 {
                        return Err(BackendError::range(
                            "command buffer length",
                            length,
                            MAX_STREAM_SIZE as u64,
                        ));
                    }
                    let (h, off) = Self::resolve(p, device, va, length)?;
                    let a = p.allocation(h)?;
                    if off.checked_add(length).is_none_or(|e| e > a.info.size) {
                        return Err(BackendError::UnmappedVa { va, size: length });
                    }
                    let mem = a.memory.as_ref().ok_or(BackendError::param(
                        "command buffer in an allocation without CPU memory",
                        va,
                    ))?;
                    let mut buf = vec![0; length as usize];
                    mem.read_at(off, &mut buf)?;
                    owned = buf;
                    &owned
                }
            };
            let stream = CommandStream::decode(bytes).map_err(|source| BackendError::Decode {
                what: "command stream",
                source,
            })?;
            self.build_items(p, device, adapter, &stream)?
        };
        self.enqueue(process, queue, items)
    }

    fn create_pipeline(
        &self,
        process: Handle,
        device: Handle,
        req: &CreatePipeline,
    ) -> Result<u32> {
        let adapter = self.with_process(process, |p, _| Ok(p.device(device)?.adapter))?;
        // Compile without the state lock: it can take a while.
        let (pipeline, bindings) = self.shared.engine.create_pipeline(adapter, req)?;
        self.with_process(process, |p, _| {
            p.device(device)?;
            let h = p.new_handle()?;
            p.pipelines.insert(
                h,
                Pipeline {
                    device,
                    pipeline: Arc::new(pipeline),
                    bindings,
                },
            );
            Ok(h.0)
        })
    }

    fn destroy_pipeline(&self, process: Handle, device: Handle, pipeline: u32) -> Result<()> {
        self.with_process(process, |p, _| {
            p.device(device)?;
            let h = dxvmm_protocol::abi::D3dkmtHandle(pipeline);
            match p.pipelines.get(&h) {
                Some(pl) if pl.device == device => {
                    p.pipelines.remove(&h);
                    Ok(())
                }
                _ => Err(BackendError::handle(ObjectKind::Pipeline, pipeline)),
            }
        })
    }

    fn flush(&self) -> Result<()> {
        // Every adapter in use gets an empty piece of work whose completion
        // comes after everything before it, completions included.
        let n = self.shared.engine.adapters().len();
        let used: Vec<usize> = {
            let st = self.shared.lock();
            (0..n)
                .filter(|i| {
                    st.processes
                        .values()
                        .any(|p| p.devices.values().any(|d| d.adapter == *i))
                })
                .collect()
        };
        for i in used {
            let (tx, rx) = std::sync::mpsc::channel();
            self.shared.engine.execute(
                i,
                &[],
                Some(Box::new(move || {
                    let _ = tx.send(());
                })),
            )?;
            rx.recv()
                .map_err(|_| BackendError::Unavailable("GPU completion thread ended".into()))?;
        }
        Ok(())
    }

    fn counts(&self) -> ObjectCounts {
        let st = self.shared.lock();
        let mut c = ObjectCounts::default();
        for p in st.processes.values() {
            let pc = p.counts();
            c.processes += pc.processes;
            c.adapters += pc.adapters;
            c.devices += pc.devices;
            c.paging_queues += pc.paging_queues;
            c.allocations += pc.allocations;
            c.contexts += pc.contexts;
            c.hw_queues += pc.hw_queues;
            c.sync_objects += pc.sync_objects;
            c.pipelines += pc.pipelines;
            c.va_ranges += pc.va_ranges;
            c.pending_submissions += pc.pending_submissions;
            c.allocated_bytes += pc.allocated_bytes;
        }
        c.gpu_buffers = self.shared.engine.live_buffers();
        c
    }

    fn process_counts(&self, process: Handle) -> Result<ObjectCounts> {
        self.with_process(process, |p, _| Ok(p.counts()))
    }
}

/// Implements [`Backend`] for a public wrapper with a `core: Core<_>` field
/// by forwarding every method.
macro_rules! delegate_backend {
    ($t:ty) => {
        impl $crate::Backend for $t {
            fn adapters(&self) -> Vec<$crate::AdapterInfo> {
                self.core.adapters()
            }
            fn query_video_memory(
                &self,
                process: $crate::Handle,
                adapter: $crate::Handle,
                group: $crate::SegmentGroup,
            ) -> $crate::Result<$crate::VideoMemoryInfo> {
                self.core.query_video_memory(process, adapter, group)
            }
            fn set_event_sink(&self, sink: Option<std::sync::Arc<dyn $crate::EventSink>>) {
                self.core.set_event_sink(sink)
            }
            fn create_process(&self) -> $crate::Result<$crate::Handle> {
                self.core.create_process()
            }
            fn destroy_process(&self, process: $crate::Handle) -> $crate::Result<()> {
                self.core.destroy_process(process)
            }
            fn open_adapter(
                &self,
                process: $crate::Handle,
                luid: $crate::WinLuid,
            ) -> $crate::Result<$crate::Handle> {
                self.core.open_adapter(process, luid)
            }
            fn close_adapter(
                &self,
                process: $crate::Handle,
                adapter: $crate::Handle,
            ) -> $crate::Result<()> {
                self.core.close_adapter(process, adapter)
            }
            fn adapter_info(
                &self,
                process: $crate::Handle,
                adapter: $crate::Handle,
            ) -> $crate::Result<$crate::AdapterInfo> {
                self.core.adapter_info(process, adapter)
            }
            fn create_device(
                &self,
                process: $crate::Handle,
                adapter: $crate::Handle,
            ) -> $crate::Result<$crate::Handle> {
                self.core.create_device(process, adapter)
            }
            fn destroy_device(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
            ) -> $crate::Result<()> {
                self.core.destroy_device(process, device)
            }
            fn create_paging_queue(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
            ) -> $crate::Result<$crate::PagingQueue> {
                self.core.create_paging_queue(process, device)
            }
            fn destroy_paging_queue(
                &self,
                process: $crate::Handle,
                queue: $crate::Handle,
            ) -> $crate::Result<()> {
                self.core.destroy_paging_queue(process, queue)
            }
            fn create_context(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
            ) -> $crate::Result<$crate::Handle> {
                self.core.create_context(process, device)
            }
            fn destroy_context(
                &self,
                process: $crate::Handle,
                context: $crate::Handle,
            ) -> $crate::Result<()> {
                self.core.destroy_context(process, context)
            }
            fn create_hw_queue(
                &self,
                process: $crate::Handle,
                context: $crate::Handle,
                progress_storage: Option<$crate::FenceStorage>,
            ) -> $crate::Result<$crate::HwQueue> {
                self.core
                    .create_hw_queue(process, context, progress_storage)
            }
            fn destroy_hw_queue(
                &self,
                process: $crate::Handle,
                queue: $crate::Handle,
            ) -> $crate::Result<()> {
                self.core.destroy_hw_queue(process, queue)
            }
            fn create_allocation(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
                desc: &$crate::AllocationDesc,
            ) -> $crate::Result<($crate::Handle, $crate::AllocationInfo)> {
                self.core.create_allocation(process, device, desc)
            }
            fn set_allocation_memory(
                &self,
                process: $crate::Handle,
                allocation: $crate::Handle,
                memory: std::sync::Arc<dyn $crate::HostVisibleMemory>,
            ) -> $crate::Result<()> {
                self.core.set_allocation_memory(process, allocation, memory)
            }
            fn destroy_allocation(
                &self,
                process: $crate::Handle,
                allocation: $crate::Handle,
            ) -> $crate::Result<()> {
                self.core.destroy_allocation(process, allocation)
            }
            fn lock(
                &self,
                process: $crate::Handle,
                allocation: $crate::Handle,
            ) -> $crate::Result<()> {
                self.core.lock(process, allocation)
            }
            fn lock_watched(
                &self,
                process: $crate::Handle,
                allocation: $crate::Handle,
                written: &mut dyn FnMut(u64),
            ) -> $crate::Result<()> {
                self.core.lock_watched(process, allocation, written)
            }
            fn unlock(
                &self,
                process: $crate::Handle,
                allocation: $crate::Handle,
            ) -> $crate::Result<()> {
                self.core.unlock(process, allocation)
            }
            fn reserve_gpu_va(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
                req: &$crate::VaReservation,
            ) -> $crate::Result<u64> {
                self.core.reserve_gpu_va(process, device, req)
            }
            fn map_gpu_va(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
                map: &$crate::VaMapping,
            ) -> $crate::Result<u64> {
                self.core.map_gpu_va(process, device, map)
            }
            fn free_gpu_va(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
                base: u64,
                size: u64,
            ) -> $crate::Result<()> {
                self.core.free_gpu_va(process, device, base, size)
            }
            fn create_sync_object(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
                initial_value: u64,
                storage: Option<$crate::FenceStorage>,
            ) -> $crate::Result<$crate::Handle> {
                self.core
                    .create_sync_object(process, device, initial_value, storage)
            }
            fn destroy_sync_object(
                &self,
                process: $crate::Handle,
                fence: $crate::Handle,
            ) -> $crate::Result<()> {
                self.core.destroy_sync_object(process, fence)
            }
            fn fence_value(
                &self,
                process: $crate::Handle,
                fence: $crate::Handle,
            ) -> $crate::Result<u64> {
                self.core.fence_value(process, fence)
            }
            fn signal_from_cpu(
                &self,
                process: $crate::Handle,
                fences: &[$crate::FenceValue],
            ) -> $crate::Result<()> {
                self.core.signal_from_cpu(process, fences)
            }
            fn wait_from_cpu(
                &self,
                process: $crate::Handle,
                fences: &[$crate::FenceValue],
                mode: $crate::WaitMode,
                timeout: Option<std::time::Duration>,
            ) -> $crate::Result<()> {
                self.core.wait_from_cpu(process, fences, mode, timeout)
            }
            fn notify_when_reached(
                &self,
                process: $crate::Handle,
                fences: &[$crate::FenceValue],
                mode: $crate::WaitMode,
                cookie: u64,
            ) -> $crate::Result<()> {
                self.core.notify_when_reached(process, fences, mode, cookie)
            }
            fn signal_from_queue(
                &self,
                process: $crate::Handle,
                queue: $crate::Handle,
                fences: &[$crate::FenceValue],
            ) -> $crate::Result<()> {
                self.core.signal_from_queue(process, queue, fences)
            }
            fn wait_from_queue(
                &self,
                process: $crate::Handle,
                queue: $crate::Handle,
                fences: &[$crate::FenceValue],
            ) -> $crate::Result<()> {
                self.core.wait_from_queue(process, queue, fences)
            }
            fn submit(
                &self,
                process: $crate::Handle,
                queue: $crate::Handle,
                commands: $crate::CommandBuffer<'_>,
            ) -> $crate::Result<()> {
                self.core.submit(process, queue, commands)
            }
            fn create_pipeline(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
                req: &dxvmm_protocol::escape::CreatePipeline,
            ) -> $crate::Result<u32> {
                self.core.create_pipeline(process, device, req)
            }
            fn destroy_pipeline(
                &self,
                process: $crate::Handle,
                device: $crate::Handle,
                pipeline: u32,
            ) -> $crate::Result<()> {
                self.core.destroy_pipeline(process, device, pipeline)
            }
            fn flush(&self) -> $crate::Result<()> {
                self.core.flush()
            }
            fn counts(&self) -> $crate::ObjectCounts {
                self.core.counts()
            }
            fn process_counts(
                &self,
                process: $crate::Handle,
            ) -> $crate::Result<$crate::ObjectCounts> {
                self.core.process_counts(process)
            }
        }
    };
}
pub(crate) use delegate_backend;

#[cfg(test)]
mod tests {
    #[test]
    fn a_watched_lock_halves_what_is_left() {
        const MIB: u64 = 1 << 20;
        assert_eq!(
            super::lock_pieces(16 * MIB),
            vec![8 * MIB, 12 * MIB, 14 * MIB, 15 * MIB, 16 * MIB]
        );
        assert_eq!(super::lock_pieces(MIB), vec![MIB]);
        assert_eq!(super::lock_pieces(100), vec![100]);
        assert_eq!(super::lock_pieces(2 * MIB), vec![MIB, 2 * MIB]);
        assert_eq!(
            super::lock_pieces_by(16 * MIB, 16),
            vec![15 * MIB, 16 * MIB]
        );
        assert_eq!(
            super::lock_pieces_by(16 * MIB, 4),
            vec![12 * MIB, 15 * MIB, 16 * MIB]
        );
        let odd = 3 * MIB + 100;
        let ends = super::lock_pieces(odd);
        assert_eq!(ends.last(), Some(&odd));
        assert!(ends.windows(2).all(|w| w[0] < w[1]));
        assert!(ends[..ends.len() - 1].iter().all(|e| e % 4096 == 0));
    }

    use super::*;

    #[test]
    fn taken_ranges_merge_and_stay_bounded() {
        let mut t = Vec::new();
        take_range(&mut t, 100, 200);
        take_range(&mut t, 0, 40);
        take_range(&mut t, 300, 400);
        assert_eq!(t, [(0, 40), (100, 200), (300, 400)]);
        // Touching and overlapping ranges become one.
        take_range(&mut t, 200, 300);
        assert_eq!(t, [(0, 40), (100, 400)]);
        take_range(&mut t, 20, 120);
        assert_eq!(t, [(0, 400)]);
        // Scattered ranges stop at MAX_TAKEN; merging ones still merge.
        let mut t = Vec::new();
        for i in 0..2 * MAX_TAKEN as u64 {
            take_range(&mut t, i * 8, i * 8 + 4);
        }
        assert_eq!(t.len(), MAX_TAKEN);
        take_range(&mut t, 0, 12);
        assert_eq!(t[..2], [(0, 12), (16, 20)]);
        assert_eq!(t.len(), MAX_TAKEN - 1);
    }
}
