//! `dxvmm run --trace`: the device's [`FrameObserver`] that writes a trace.
//!
//! The device thread encodes each record and hands it to a writer thread
//! through a bounded channel; when the writer falls behind, the device
//! thread waits for room (a trace is complete or it is nothing). Besides the
//! frames, it copies the guest memory the backend reads or writes at the
//! points the protocol defines (see [`crate::capture`]).
//!
//! Large inputs (UNLOCK2, a submit's pages) are copied on the writer thread:
//! the device thread sends the page frames in order with the records, and
//! the writer reads, diffs and writes them while the backend does its own
//! copy. The device thread waits for those copies to be done where the
//! guest could change the pages: before a LOCK2 or a destroy, and before
//! the reply to a submit whose pages are still being copied. LOCK2 results
//! are copied on the device thread after what is in flight (one order),
//! small inputs at once when no page of theirs is in flight (a submit's
//! stream need not wait for an UNLOCK2's compare).
//!
//! A capture of 2 MiB or more is split over threads ([`Options::threads`]:
//! the thread that has it and helper threads started with the recorder,
//! not by a device thread that may be pinned to one CPU): its page list
//! is cut into segments, each within one MiB of guest memory, which the
//! threads take one at a time (`Split`); their records are joined in
//! list order, so the trace is the same whatever the number. Each helper
//! has its own channel, so a split wakes them at once; on hosts with 8 or
//! more CPUs the helpers of a large LOCK2 result are woken by its request
//! and spin until the device thread has the capture (`Shared::stand_by`).
//! The writer and the helpers keep off a pinned device thread's CPU
//! (`cpus.rs`). The shadow is in stripes of 1 MiB of guest
//! memory, each behind its own lock. A large LOCK2 result takes at least
//! two threads (its reply waits for it); an input on the writer as many as
//! [`Options::threads`] says.
//!
//! A LOCK2 result is captured only when a submit could have written the
//! allocation since its last capture ([`crate::capture`]), and one of at
//! least [`Options::digest_pages`] pages as digests, not bytes
//! ([`crate::digest`]): its cost is then a hash of the pages. On hosts
//! with 8 CPUs or more ([`Options::early_results`]) a large digested
//! result is read as it lands: the backend copies it in pieces and says
//! when each has landed ([`FrameObserver::lock_progress`]), helpers hash
//! each piece while the next is copied, and the reply joins them
//! (`EarlyResult`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use device_dxg::{Direction, FrameObserver};
use dxvmm_host_backend::AdapterInfo;
use dxvmm_protocol::frame::DXGV_FRAME_VERSION;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::capture::{releases_pages, Capture, PartDiff, ResultPages, Shadow, StreamParts};
use crate::cpus;
use crate::error::TraceError;
use crate::format::{self, AdapterEntry, MemoryPurpose, Record, TraceHeader};
use crate::ticks;

/// Bytes per guest page.
const PAGE: u64 = 4096;

/// Records in flight between the device thread and the writer.
const CHANNEL_DEPTH: usize = 4096;

/// The writer's buffer: small records (frames, scattered pages) gather
/// into one write; memory runs at least this large go to the file
/// directly, without a copy into the buffer.
const WRITE_BUFFER: usize = 256 << 10;

/// An encoded record: its head and the bytes after it, handed to the writer
/// as the recorder made them (the bulk of a memory record is not copied
/// into a second buffer).
type Encoded = (Vec<u8>, Vec<u8>);

/// Inputs of at most this many pages are copied on the device thread when
/// no copy is in flight (handing them over would cost more).
const INLINE_PAGES: usize = 16;

/// Captures of at least this many pages per thread are split across
/// threads: one segment ([`segments`], 1 MiB), which one thread hashes in
/// about 0.25 ms on the H100 host, against tens of microseconds to wake a
/// helper. (At 2 MiB a thread, a libdxg write's 2 MiB UPLOAD pieces were
/// captured on one thread, slower than the guest wrote them.)
const PAGES_PER_THREAD: usize = 256;
/// Captures of at least this many pages (bulk data, not command streams)
/// compare pages by hash once they have one ([`Shadow::pages`]).
const BULK_PAGES: usize = 512;

/// Most threads one capture is split over. Alone, more keep helping: on
/// an H100 host (16 CPUs) a digest of 64 MiB ran at 35.6 GB/s on 8
/// threads, 46.6 on 12 and 68.8 on 16 (`capture_rate`). Beside a running
/// guest they did not: with 16, `trace_cost` put traced downloads at a
/// median 0.50 of plain and uploads at 0.72, against 0.72 and 0.92 with 8
/// on another host of the kind (docs/trace.md).
pub const MAX_THREADS: usize = 8;

/// How to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// LOCK2 results of allocations of at least this many pages are
    /// recorded as digests; `usize::MAX`: always as bytes.
    pub digest_pages: usize,
    /// Threads a large capture (an input on the writer thread, a LOCK2
    /// result on the device thread) is split over, the one that has it
    /// included; a LOCK2 result takes at least 2 (it is on the reply's
    /// path). The trace is the same whatever the number.
    pub threads: usize,
    /// Whether a large LOCK2 result recorded by digest is read as the
    /// backend copies it, a piece at a time
    /// ([`FrameObserver::lock_progress`]), rather than all after the
    /// copy. By default on hosts with at least 8 CPUs: on a smaller one
    /// the helpers take the CPUs the copy itself needs (lavapipe's is on
    /// the CPU), and on the 2-core development machine downloads got
    /// slower.
    pub early_results: bool,
    /// Whether a large input (an UNLOCK2's pages, an UPLOAD's piece) is
    /// handed to helpers standing by when its request arrives, the writer
    /// joining their work in order later, rather than split by the writer
    /// once it wakes: a libdxg write of 16 MiB is eight UPLOAD pieces, a
    /// fifth of a millisecond apart on the H100 machine, and each wakes
    /// the writer and then its helpers, on a host where a wake-up can take
    /// hundreds of microseconds. Off by default until measured on such a
    /// host (docs/trace.md); on the 2-core development machine the
    /// helpers take the CPU the guest's own copy needs.
    pub early_inputs: bool,
}

impl Default for Options {
    fn default() -> Options {
        // 32 KiB: small results (a few values a test checks) stay
        // readable in `trace show --json`; bulk data costs a hash.
        Options {
            digest_pages: 8,
            threads: default_threads(),
            early_results: std::thread::available_parallelism()
                .is_ok_and(|n| n.get() >= STAND_BY_MIN_CPUS),
            early_inputs: false,
        }
    }
}

/// The default [`Options::threads`]: the host's CPUs less one (the guest
/// and the device thread run too), at most `MAX_THREADS`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .clamp(1, MAX_THREADS)
}

/// Records handed to the writer at once: up to this many bytes, or
/// [`BATCH_RECORDS`] records, wait on the device thread for the next. One
/// hand-over wakes the writer (a futex wake and, across CPUs, an
/// interrupt): once per record, that cost a tiny submission a fifth of its
/// rate on the H100 machine.
const BATCH_BYTES: usize = 256 << 10;
/// See [`BATCH_BYTES`].
const BATCH_RECORDS: usize = 512;
/// Records of at most this many bytes are encoded into the batch's one
/// buffer ([`Chunk::Blob`]) rather than handed over as their own parts:
/// a tiny submission's request, reply and stream diff then cost the device
/// thread no allocation, and the writer frees nothing the device thread
/// allocated (glibc then takes the allocating thread's arena lock, which
/// the two threads contended for on every record).
const SMALL_RECORD: usize = 8 << 10;
/// Spare blob buffers kept for reuse.
const SPARE_BLOBS: usize = 4;

/// Records handed to the writer, in order.
enum Chunk {
    /// Small records, encoded one after the other.
    Blob { bytes: Vec<u8>, records: u64 },
    /// One record, as its parts (its bulk is written without a copy).
    Record(Encoded),
}

/// Blob buffers the writer gives back for the device thread to fill again.
type Spares = Arc<Mutex<Vec<Vec<u8>>>>;

/// What the device thread hands the writer.
enum Msg {
    /// Records, in order.
    Records(Vec<Chunk>),
    /// Copy these input pages (diffed against the shadow) into memory
    /// records, then count the copy as done.
    Capture {
        t: u64,
        pfns: Vec<u64>,
        mem: GuestMemoryMmap,
    },
    /// The same for an input helpers already have ([`Options::early_inputs`]):
    /// join their work.
    Started { t: u64, split: Arc<Split> },
    /// The end record: the writer knows how many records came before it.
    End { t: u64 },
}

/// Stripes of the shadow, each a segment's worth of guest memory
/// ([`SEGMENT_SHIFT`]) in every `STRIPES`, behind its own lock: threads
/// capturing different segments do not wait for each other.
const STRIPES: usize = 64;

/// A segment, the most of a capture one thread takes at a time, is within
/// `1 << SEGMENT_SHIFT` pages of guest memory (1 MiB), one stripe.
const SEGMENT_SHIFT: u32 = 8;

/// The most pages of a segment.
const SEGMENT_PAGES: usize = 1 << SEGMENT_SHIFT;

/// The most pages of a segment of a piece of a result read as it lands
/// ([`FrameObserver::lock_progress`]): digests hash their pages before
/// taking the stripe's lock, so four threads can share a MiB, and the
/// last piece (a MiB) is not left to one while the guest waits. Elsewhere
/// whole MiBs do better: on the 2-core development machine, 64-page
/// segments hashed 4-7% slower (pages in order) and 7-15% slower
/// (shuffled within each MiB) in `capture_rate`.
const EARLY_SEGMENT_PAGES: usize = 64;

/// Work for a helper thread.
type Job = Box<dyn FnOnce() + Send>;

/// Starts `n` helper threads, each running the [`Job`]s sent on its own
/// sender until that is dropped: a capture wakes the helpers it needs all
/// at once, not one after another (on the H100 machine, a VM, waking a
/// thread on another CPU takes up to hundreds of microseconds). They start
/// with the affinity of the thread that creates the recorder (threads the
/// device thread started would inherit its pinning to the guest's CPU),
/// and move to `cpus` once known ([`crate::cpus`]).
fn helpers(n: usize, cpus: &Arc<cpus::Shared>) -> std::io::Result<Vec<Sender<Job>>> {
    let mut senders = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = channel::<Job>();
        let cpus = cpus.clone();
        std::thread::Builder::new()
            .name(format!("dxvmm-trace-{i}"))
            .spawn(move || {
                let mut moved = false;
                for job in rx {
                    cpus::follow(&cpus, &mut moved);
                    job();
                }
            })?;
        senders.push(tx);
    }
    Ok(senders)
}

/// How long a helper woken ahead of a LOCK2 result ([`Shared::stand_by`])
/// waits for it, or for its next piece, spinning, before it sleeps again.
const STAND_BY: Duration = Duration::from_millis(4);

/// Most helpers that spin ahead of one LOCK2 result: the backend's own
/// threads (the completion thread that learns the GPU copied the result)
/// need CPUs meanwhile. Helpers beyond these join the capture when woken.
const STAND_BY_HELPERS: usize = 7;

/// Helpers stand by only on hosts with at least this many CPUs: spinning
/// on a small host takes the CPU the guest and the GPU driver need.
const STAND_BY_MIN_CPUS: usize = 8;

/// What the device thread, the writer and the helpers share.
struct Shared {
    /// The shadow, by 1 MiB stripes (`stripe`).
    shadow: Vec<Mutex<Shadow>>,
    /// Captures the writer has finished.
    done: Mutex<u64>,
    finished: Condvar,
    /// Each helper thread's work.
    helpers: Vec<Sender<Job>>,
    /// The helper the next split wakes first ([`Shared::start`]).
    next_helper: AtomicUsize,
    /// The split captures not joined yet, which helpers standing by
    /// take, and how many were ever started, which they watch without the
    /// lock.
    published: Mutex<Vec<Arc<Split>>>,
    generation: AtomicU64,
    /// How many LOCK2 results helpers stood by for are done
    /// ([`Shared::end_stand_by`]): a helper standing by stops when this
    /// changes.
    stood_by: AtomicU64,
    /// Whether helpers may stand by (a large host).
    may_stand_by: bool,
    /// Helpers standing by now (in [`Shared::stand_by`]'s loop).
    standing: AtomicUsize,
    /// [`BULK_PAGES`] (tests change it).
    bulk_pages: usize,
    /// Where the writer and the helpers run, once the device thread was
    /// seen ([`crate::cpus`]).
    cpus: Arc<cpus::Shared>,
}

impl Shared {
    /// The shared state, with `helpers` helper threads.
    fn new(helpers: usize) -> std::io::Result<Shared> {
        let cpus = Arc::new(cpus::Shared::new());
        let cpus_here = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Shared {
            shadow: (0..STRIPES).map(|_| Mutex::default()).collect(),
            done: Mutex::new(0),
            finished: Condvar::new(),
            helpers: self::helpers(helpers, &cpus)?,
            next_helper: AtomicUsize::new(0),
            published: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            stood_by: AtomicU64::new(0),
            may_stand_by: cpus_here >= STAND_BY_MIN_CPUS,
            standing: AtomicUsize::new(0),
            bulk_pages: BULK_PAGES,
            cpus,
        })
    }

    /// Wakes the helpers a capture of `pages` pages will take, ahead of
    /// it: each spins (up to [`STAND_BY`]) until a capture is published,
    /// takes its share at once, and spins for the next, until
    /// [`Shared::end_stand_by`]. The device thread calls this when a LOCK2
    /// whose result will be captured arrives, so that its reply does not
    /// wait for helpers to wake: for the whole result, or for each piece
    /// of one read as it lands (a helper that slept after the first
    /// piece took tens to hundreds of microseconds to wake for the next
    /// on the H100 machine).
    fn stand_by(self: &Arc<Self>, pages: usize, threads: usize) {
        let helpers = threads.min(pages / PAGES_PER_THREAD).saturating_sub(1);
        self.stand_by_helpers(helpers);
    }

    /// [`Shared::stand_by`] for `helpers` helpers (at most
    /// [`STAND_BY_HELPERS`]).
    fn stand_by_helpers(self: &Arc<Self>, helpers: usize) {
        if !self.may_stand_by {
            return;
        }
        let helpers = helpers.min(STAND_BY_HELPERS);
        let seen = self.generation.load(Ordering::Acquire);
        let round = self.stood_by.load(Ordering::Acquire);
        for tx in self.helpers.iter().take(helpers) {
            let sh = self.clone();
            let _ = tx.send(Box::new(move || {
                let mut seen = seen;
                let mut deadline = Instant::now() + STAND_BY;
                sh.standing.fetch_add(1, Ordering::AcqRel);
                loop {
                    let now = sh.generation.load(Ordering::Acquire);
                    if now != seen {
                        seen = now;
                        // Every split not joined yet: the pieces of a
                        // result read as it lands may come faster than
                        // one is done.
                        let splits = lock(&sh.published).clone();
                        for split in splits {
                            split.work(&sh);
                        }
                        deadline = Instant::now() + STAND_BY;
                    }
                    if sh.stood_by.load(Ordering::Acquire) != round || Instant::now() >= deadline {
                        sh.standing.fetch_sub(1, Ordering::AcqRel);
                        return;
                    }
                    std::hint::spin_loop();
                }
            }));
        }
    }

    /// The LOCK2 result helpers stood by for is captured: they stop
    /// spinning.
    fn end_stand_by(&self) {
        self.stood_by.fetch_add(1, Ordering::AcqRel);
    }
}

/// Which stripe of the shadow holds page frame `pfn`.
fn stripe(pfn: u64) -> usize {
    ((pfn >> SEGMENT_SHIFT) % STRIPES as u64) as usize
}

/// Splits a capture's page list into segments: runs of consecutive entries
/// in one [`SEGMENT_SHIFT`] block of guest memory (one stripe), at most
/// `most` ([`SEGMENT_PAGES`]; a bogus list may repeat a page). A memory
/// record never spans two segments, so the records depend on the list
/// only, not on how the segments are shared out.
fn segments(pfns: &[u64], most: usize) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, p) in pfns.iter().enumerate() {
        match out.last_mut() {
            Some(r) if r.len() < most && pfns[r.start] >> SEGMENT_SHIFT == p >> SEGMENT_SHIFT => {
                r.end = i + 1
            }
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// A capture split across threads: each takes the next segment not yet
/// claimed, until none is left, and leaves its records in the segment's
/// slot; the thread that joins it ([`Shared::join`]) takes the slots in
/// order and gives the records their time. A thread that starts late (a
/// helper still waking) just takes fewer.
struct Split {
    mem: GuestMemoryMmap,
    pfns: Vec<u64>,
    segs: Vec<std::ops::Range<usize>>,
    purpose: MemoryPurpose,
    digest: bool,
    by_hash: bool,
    /// The next segment to claim.
    next: AtomicUsize,
    /// Each segment's records, their times not yet set.
    records: Vec<Mutex<Vec<Record>>>,
    /// Segments done, and whether one panicked.
    done: Mutex<(usize, bool)>,
    all_done: Condvar,
}

impl Split {
    /// Works on what is left, then waits for the segments helpers took:
    /// then every page has been read. A helper that wakes after the last
    /// segment was claimed is not waited for.
    fn finish(&self, shared: &Shared) {
        self.work(shared);
        let mut done = lock(&self.done);
        while done.0 < self.segs.len() {
            done = self.all_done.wait(done).unwrap_or_else(|e| e.into_inner());
        }
        assert!(!done.1, "a thread capturing guest memory panicked");
    }

    fn work(&self, shared: &Shared) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(r) = self.segs.get(i) else { return };
            let mut out = Vec::new();
            // A panic still counts the segment as done, so that the
            // thread waiting for them all does not wait forever.
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let pfns = &self.pfns[r.clone()];
                let how = (self.digest, self.by_hash);
                shared.segment(&self.mem, pfns, 0, self.purpose, how, &mut out);
            }))
            .is_ok();
            *lock(&self.records[i]) = out;
            let mut done = lock(&self.done);
            done.0 += 1;
            done.1 |= !ok;
            if done.0 == self.segs.len() {
                self.all_done.notify_all();
            }
        }
    }
}

impl Shared {
    /// Diffs the pages `pfns` against the shadow into encoded memory
    /// records (or digest records, with `digest`) appended to `out`, in
    /// the order of the list: split over up to `threads` threads (this one
    /// included) when it is large, with the same records whatever the
    /// number.
    #[allow(clippy::too_many_arguments)]
    fn take(
        self: &Arc<Self>,
        mem: &GuestMemoryMmap,
        pfns: &[u64],
        t: u64,
        purpose: MemoryPurpose,
        digest: bool,
        threads: usize,
        out: &mut Vec<Encoded>,
    ) {
        let threads = self.threads_for(pfns, threads);
        if threads <= 1 {
            let by_hash = pfns.len() >= self.bulk_pages;
            let mut records = Vec::new();
            for r in segments(pfns, SEGMENT_PAGES) {
                let pfns = &pfns[r];
                self.segment(mem, pfns, t, purpose, (digest, by_hash), &mut records);
            }
            out.extend(records.into_iter().map(Record::into_parts));
            return;
        }
        let helpers = threads - 1;
        let split = self.start(mem, pfns.to_vec(), purpose, digest, helpers, SEGMENT_PAGES);
        self.join(&split, t, out);
    }

    /// How many threads a capture of `pfns` takes, of `threads` at most:
    /// one for a small capture, or a page list that names a page twice
    /// (captured where the list first names it; split over threads,
    /// either copy could come first), or without helpers.
    fn threads_for(&self, pfns: &[u64], threads: usize) -> usize {
        self.threads_at(pfns, threads, PAGES_PER_THREAD)
    }

    /// [`Shared::threads_for`], a thread for each `per_thread` pages.
    fn threads_at(&self, pfns: &[u64], threads: usize, per_thread: usize) -> usize {
        let threads = threads.min(pfns.len() / per_thread).max(1);
        if threads == 1 || self.helpers.is_empty() {
            return 1;
        }
        // A list in order (an allocation's pages, as a rule) names no
        // page twice; others are sorted to see.
        if pfns.windows(2).all(|w| w[0] < w[1]) {
            return threads;
        }
        let mut sorted = pfns.to_vec();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return 1;
        }
        threads
    }

    /// Hands a capture of `pfns` to up to `helpers` helper threads (those
    /// standing by take it at once), without waiting: [`Shared::join`]
    /// collects its records. The list must not name a page twice.
    #[allow(clippy::too_many_arguments)]
    fn start(
        self: &Arc<Self>,
        mem: &GuestMemoryMmap,
        pfns: Vec<u64>,
        purpose: MemoryPurpose,
        digest: bool,
        helpers: usize,
        segment_pages: usize,
    ) -> Arc<Split> {
        let segs = segments(&pfns, segment_pages);
        let split = Arc::new(Split {
            mem: mem.clone(),
            by_hash: pfns.len() >= self.bulk_pages,
            pfns,
            records: segs.iter().map(|_| Mutex::default()).collect(),
            purpose,
            digest,
            next: AtomicUsize::new(0),
            done: Mutex::new((0, false)),
            all_done: Condvar::new(),
            segs,
        });
        // Helpers standing by take it from here at once; the others are
        // woken (a helper that stood by finds nothing left by then).
        lock(&self.published).push(split.clone());
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Helpers in turn: the pieces of a result read as it lands follow
        // each other faster than one helper may finish its part.
        let first = self.next_helper.fetch_add(helpers, Ordering::Relaxed);
        let n = self.helpers.len();
        let wake = helpers.min(split.segs.len()).min(n);
        let turn = (0..wake).map(|i| &self.helpers[(first + i) % n]);
        for tx in turn {
            let (sh, split) = (self.clone(), split.clone());
            let job: Job = Box::new(move || split.work(&sh));
            // A helper that is gone: the job runs here.
            if let Err(std::sync::mpsc::SendError(job)) = tx.send(job) {
                job();
            }
        }
        split
    }

    /// Works on what is left of `split`, waits for the segments helpers
    /// took, and appends its records to `out` in list order, at time `t`.
    fn join(&self, split: &Arc<Split>, t: u64, out: &mut Vec<Encoded>) {
        split.finish(self);
        {
            lock(&self.published).retain(|p| !Arc::ptr_eq(p, split));
        }
        for r in &split.records {
            out.extend(lock(r).drain(..).map(|mut rec| {
                rec.set_time(t);
                rec.into_parts()
            }));
        }
    }

    /// One segment ([`segments`]), as records at time `t`: as digests
    /// (its pages hashed first, then compared under its stripe's lock),
    /// or diffed under that lock, comparing pages by hash
    /// ([`Shadow::pages`]), as the pair says.
    fn segment(
        &self,
        mem: &GuestMemoryMmap,
        pfns: &[u64],
        t: u64,
        purpose: MemoryPurpose,
        (digest, by_hash): (bool, bool),
        out: &mut Vec<Record>,
    ) {
        let Some(first) = pfns.first() else { return };
        if digest {
            // The pages are read and hashed before the stripe's lock:
            // segments of one stripe hash side by side.
            let mut hashes = Vec::with_capacity(pfns.len());
            crate::capture::page_hashes(mem, pfns, &mut hashes);
            let mut digests = Vec::new();
            lock(&self.shadow[stripe(*first)]).digests(pfns, &hashes, &mut digests);
            out.extend(
                digests
                    .into_iter()
                    .map(|(gpa, len, digest)| Record::Digest {
                        t,
                        gpa,
                        len,
                        digest,
                    }),
            );
        } else {
            let mut shadow = lock(&self.shadow[stripe(*first)]);
            let mut runs = Vec::new();
            // Inputs are written into a replay's memory as they are, so
            // a few changed bytes need not carry their page; results are
            // accounted for a page at a time (replay's LockCheck).
            shadow.pages(
                mem,
                pfns,
                purpose == MemoryPurpose::Input,
                by_hash,
                &mut runs,
            );
            drop(shadow);
            out.extend(runs.into_iter().map(|(gpa, bytes)| Record::Memory {
                t,
                purpose,
                gpa,
                bytes,
            }));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process handle in a request frame's command header (0 if none).
pub fn frame_process(frame: &[u8]) -> u32 {
    frame
        .get(32 + 8..32 + 12)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl TraceHeader {
    /// The header of a recording of a guest that sees `adapters`.
    pub fn new(adapters: &[AdapterInfo], producer: &str) -> TraceHeader {
        let start_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        TraceHeader {
            start_unix_ns,
            frame_version: u32::from(DXGV_FRAME_VERSION),
            producer: producer.to_string(),
            host,
            adapters: adapters
                .iter()
                .map(|a| AdapterEntry {
                    luid: a.luid,
                    vendor_id: a.vendor_id,
                    device_id: a.device_id,
                    software: a.software,
                    name: a.name.clone(),
                    driver: a.driver.clone(),
                })
                .collect(),
        }
    }
}

struct State {
    tx: Option<SyncSender<Msg>>,
    /// Captures handed to the writer.
    queued: u64,
    /// Inputs handed to the writer and maybe not done: (their number in
    /// `queued`, lowest and highest page frame).
    in_flight: VecDeque<(u64, u64, u64)>,
    /// Inputs handed to helpers ([`Options::early_inputs`]) the writer
    /// may not have joined yet, by their number in `queued`: their pages
    /// are read once their segments are done, joined or not.
    started: VecDeque<(u64, Arc<Split>)>,
    /// The number in `queued` of the last input the writer captures
    /// itself.
    writer_last: u64,
    /// The request being answered had its pages handed to the writer:
    /// its reply waits for them.
    reply_waits: bool,
    /// The process of the request being answered.
    process: u32,
    layout: Vec<(u64, u64)>,
    capture: Capture,
    /// The LOCK2 being answered, when its result is read as it lands.
    early: Option<EarlyResult>,
    /// See [`Summary::results_read_early`].
    results_read_early: u64,
    /// Helpers stand by for the LOCK2 being answered
    /// ([`Shared::stand_by`]).
    standing: bool,
    /// Times the device thread found the channel full.
    waits: u64,
    /// Where the device thread's time in the recorder went; its total in
    /// ticks ([`crate::ticks`]), turned into time at the end.
    spent: Spent,
    spent_ticks: u64,
    /// Records not handed over yet (see [`BATCH_BYTES`]).
    batch: Vec<Chunk>,
    /// The small records after the last of `batch`.
    blob: Vec<u8>,
    blob_records: u64,
    batch_bytes: usize,
    batch_records: usize,
    spares: Spares,
    /// Buffers a request's capture fills, kept for the next: the input
    /// lists, a stream's pages and its diff.
    inputs: Vec<Vec<u64>>,
    stream_pfns: Vec<u64>,
    stream_diff: PartDiff,
}

impl State {
    fn new(tx: Option<SyncSender<Msg>>) -> State {
        State {
            tx,
            queued: 0,
            in_flight: VecDeque::new(),
            started: VecDeque::new(),
            writer_last: 0,
            reply_waits: false,
            process: 0,
            layout: Vec::new(),
            capture: Capture::default(),
            early: None,
            results_read_early: 0,
            standing: false,
            waits: 0,
            spent: Spent::default(),
            spent_ticks: 0,
            batch: Vec::new(),
            blob: Vec::new(),
            blob_records: 0,
            batch_bytes: 0,
            batch_records: 0,
            spares: Spares::default(),
            inputs: Vec::new(),
            stream_pfns: Vec::new(),
            stream_diff: PartDiff::default(),
        }
    }

    /// Whether no page of `pfns` is in an input the writer may not have
    /// done yet (`done`: captures it has done): then diffing them now,
    /// ahead of it, leaves the trace as it would be in order.
    fn apart(&mut self, done: u64, pfns: &[u64]) -> bool {
        while self.in_flight.front().is_some_and(|f| f.0 <= done) {
            self.in_flight.pop_front();
        }
        pfns.iter()
            .all(|p| self.in_flight.iter().all(|&(_, lo, hi)| *p < lo || *p > hi))
    }

    /// Waits until every input handed over has been read: those the
    /// writer captures itself, through its count; those handed to helpers
    /// ([`Options::early_inputs`]) by their segments, helping with them,
    /// not through the writer, which may still be asleep or writing.
    fn settle(&mut self, shared: &Shared) {
        if self.tx.is_none() {
            return;
        }
        let done = *lock(&shared.done);
        if done >= self.queued {
            self.started.clear();
            return;
        }
        let start = Instant::now();
        for (n, split) in self.started.drain(..) {
            if n > done {
                split.finish(shared);
            }
        }
        let mut done = lock(&shared.done);
        while *done < self.writer_last {
            done = shared
                .finished
                .wait(done)
                .unwrap_or_else(|e| e.into_inner());
        }
        self.spent.settling += start.elapsed();
    }
}

/// A large LOCK2 result digested while the backend copies it
/// ([`FrameObserver::lock_progress`]): each piece that has landed is
/// handed to helpers at once, and the reply joins them and digests the
/// rest. The shadow learns of the pieces as they are read; should the
/// LOCK2 fail, those pages are forgotten ([`Shadow::forget`]).
struct EarlyResult {
    mem: GuestMemoryMmap,
    pfns: Vec<u64>,
    /// Pages of `pfns` handed to helpers so far.
    started: usize,
    splits: Vec<Arc<Split>>,
}

/// Writes a trace of everything the device it observes sees.
pub struct Recorder {
    options: Options,
    start: Instant,
    /// The accounting clock's rate ([`crate::ticks`]).
    ticks: ticks::Rate,
    path: PathBuf,
    state: Mutex<State>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<Written>>>,
}

/// What a finished recording wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
    /// Records the device thread had to wait to hand over.
    pub waits: u64,
    /// LOCK2 results not captured: no submit could have written them
    /// since their last capture.
    pub results_skipped: u64,
    /// LOCK2 results read, at least in part, while the backend copied
    /// them ([`FrameObserver::lock_progress`]).
    pub results_read_early: u64,
    /// What recording cost the device thread, which the guest waits for.
    pub spent: Spent,
}

/// The device thread's time in the recorder, what recording adds to the
/// guest's requests, and the writer's on input captures beside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spent {
    /// All of it.
    pub total: Duration,
    /// Waiting for the writer to finish input captures (a LOCK2 or a
    /// reply whose pages it still reads).
    pub settling: Duration,
    /// Capturing LOCK2 results before the reply.
    pub results: Duration,
    /// The writer's time on input captures (with its helpers; reading the
    /// pages, not writing the file), which `settling` waited for in part.
    pub input_captures: Duration,
}

/// The writer's file and what it wrote.
struct Sink {
    out: BufWriter<File>,
    bytes: u64,
    records: u64,
    failed: Option<std::io::Error>,
}

impl Sink {
    fn write_chunk(&mut self, chunk: Chunk, spares: &Spares) {
        match chunk {
            Chunk::Record(parts) => self.write(parts),
            Chunk::Blob { mut bytes, records } => {
                if self.failed.is_none() {
                    match self.out.write_all(&bytes) {
                        Ok(()) => {
                            self.bytes += bytes.len() as u64;
                            self.records += records;
                        }
                        Err(e) => self.failed = Some(e),
                    }
                }
                bytes.clear();
                let mut spares = lock(spares);
                if spares.len() < SPARE_BLOBS {
                    spares.push(bytes);
                }
            }
        }
    }

    fn write(&mut self, (head, tail): Encoded) {
        if self.failed.is_none() {
            match self
                .out
                .write_all(&head)
                .and_then(|()| self.out.write_all(&tail))
            {
                Ok(()) => {
                    self.bytes += (head.len() + tail.len()) as u64;
                    self.records += 1;
                }
                Err(e) => self.failed = Some(e),
            }
        }
    }
}

/// What the writer wrote: bytes, records before the end record, and the
/// time spent on input captures.
type Written = std::io::Result<(u64, u64, Duration)>;

/// Writes what the device thread sends.
fn writer_thread(
    rx: Receiver<Msg>,
    out: BufWriter<File>,
    head: u64,
    shared: Arc<Shared>,
    threads: usize,
    spares: Spares,
) -> Written {
    let mut sink = Sink {
        out,
        bytes: head,
        records: 0,
        failed: None,
    };
    let mut records = Vec::new();
    let mut moved = false;
    let mut capturing = Duration::ZERO;
    // Drain the channel even after a write error, so that the device thread
    // never waits on a writer that stopped.
    for msg in rx {
        cpus::follow(&shared.cpus, &mut moved);
        match msg {
            Msg::Records(batch) => {
                for chunk in batch {
                    sink.write_chunk(chunk, &spares);
                }
            }
            Msg::Capture { t, pfns, mem } => {
                let start = Instant::now();
                let input = MemoryPurpose::Input;
                shared.take(&mem, &pfns, t, input, false, threads, &mut records);
                capturing += start.elapsed();
                input_read(&shared, &mut records, &mut sink);
            }
            Msg::Started { t, split } => {
                let start = Instant::now();
                shared.join(&split, t, &mut records);
                capturing += start.elapsed();
                input_read(&shared, &mut records, &mut sink);
            }
            Msg::End { t } => {
                let records = sink.records;
                sink.write(Record::End { t, records }.into_parts());
            }
        }
    }
    if let Some(e) = sink.failed {
        return Err(e);
    }
    let mut out = sink.out;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    // The summary counts the records before the end record.
    Ok((sink.bytes, sink.records.saturating_sub(1), capturing))
}

/// An input capture's pages are read: what waits for it (a LOCK2 that
/// lets the guest write them) need not wait for the file too. Its
/// records still go out in order.
fn input_read(shared: &Shared, records: &mut Vec<Encoded>, sink: &mut Sink) {
    *lock(&shared.done) += 1;
    shared.finished.notify_all();
    for r in records.drain(..) {
        sink.write(r);
    }
}

impl Recorder {
    /// Creates `path` (replacing it) and writes the header.
    pub fn create(path: &Path, header: &TraceHeader) -> Result<Arc<Recorder>, TraceError> {
        Recorder::create_with(path, header, Options::default())
    }

    /// As [`Recorder::create`], with `options`.
    pub fn create_with(
        path: &Path,
        header: &TraceHeader,
        options: Options,
    ) -> Result<Arc<Recorder>, TraceError> {
        let file = File::create(path).map_err(|e| TraceError::io(path, e))?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        let head = header.encode();
        out.write_all(&head).map_err(|e| TraceError::io(path, e))?;
        let (tx, rx) = sync_channel(CHANNEL_DEPTH);
        // A LOCK2 result takes at least two threads.
        let helpers = options.threads.max(2) - 1;
        let shared = Arc::new(Shared::new(helpers).map_err(|e| TraceError::io(path, e))?);
        let theirs = shared.clone();
        let threads = options.threads.max(1);
        let state = State::new(Some(tx));
        let spares = state.spares.clone();
        let writer = std::thread::Builder::new()
            .name("dxvmm-trace".into())
            .spawn(move || writer_thread(rx, out, head.len() as u64, theirs, threads, spares))
            .map_err(|e| TraceError::io(path, e))?;
        Ok(Arc::new(Recorder {
            options,
            start: Instant::now(),
            ticks: ticks::Rate::start(),
            path: path.to_path_buf(),
            state: Mutex::new(state),
            shared,
            writer: Mutex::new(Some(writer)),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Writes the end record, waits for the writer and closes the file.
    /// Frames observed afterwards are ignored.
    pub fn finish(&self) -> Result<Summary, TraceError> {
        let (waits, results_skipped, results_read_early, spent) = {
            let mut st = self.lock();
            self.abandon_early(&mut st);
            let t = self.now();
            send(&mut st, Msg::End { t });
            st.tx = None;
            (
                st.waits,
                st.capture.skipped,
                st.results_read_early,
                Spent {
                    total: self.ticks.duration(st.spent_ticks),
                    ..st.spent
                },
            )
        };
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(handle) = handle else {
            return Err(TraceError::Recorder("already finished".into()));
        };
        let (bytes, records, capturing) = handle
            .join()
            .map_err(|_| TraceError::Recorder("the writer thread panicked".into()))?
            .map_err(|e| TraceError::io(&self.path, e))?;
        Ok(Summary {
            records,
            bytes,
            waits,
            results_skipped,
            results_read_early,
            spent: Spent {
                input_captures: capturing,
                ..spent
            },
        })
    }
}

/// Hands `msg` to the writer (waiting for room if need be), after the
/// records batched before it.
fn send(st: &mut State, msg: Msg) -> bool {
    flush(st);
    hand_over(st, msg)
}

/// Hands the batched records to the writer.
fn flush(st: &mut State) {
    close_blob(st);
    if !st.batch.is_empty() {
        let batch = std::mem::take(&mut st.batch);
        st.batch_bytes = 0;
        st.batch_records = 0;
        hand_over(st, Msg::Records(batch));
    }
}

/// Ends the blob being filled: it goes on the batch, in order.
fn close_blob(st: &mut State) {
    if st.blob_records > 0 {
        let bytes = std::mem::take(&mut st.blob);
        let records = std::mem::take(&mut st.blob_records);
        st.batch.push(Chunk::Blob { bytes, records });
    }
}

/// The blob to append a small record to: a spare buffer when a new one
/// starts.
fn blob(st: &mut State) -> &mut Vec<u8> {
    if st.blob.capacity() == 0 {
        st.blob = lock(&st.spares)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH_BYTES + SMALL_RECORD));
    }
    &mut st.blob
}

/// Counts a record queued and hands the batch over when it is full.
fn queued(st: &mut State, bytes: usize) {
    st.batch_bytes += bytes;
    st.batch_records += 1;
    if st.batch_bytes >= BATCH_BYTES || st.batch_records >= BATCH_RECORDS {
        flush(st);
    }
}

/// Queues one record, handing the batch over when it is full.
fn queue(st: &mut State, (head, tail): Encoded) {
    if st.tx.is_none() {
        return;
    }
    let bytes = head.len() + tail.len();
    if bytes <= SMALL_RECORD {
        let blob = blob(st);
        blob.extend_from_slice(&head);
        blob.extend_from_slice(&tail);
        st.blob_records += 1;
    } else {
        close_blob(st);
        st.batch.push(Chunk::Record((head, tail)));
    }
    queued(st, bytes);
}

/// Queues a frame record (request, reply or event) from the borrowed
/// frame, straight into the blob.
fn queue_frame(st: &mut State, kind: u8, t: u64, process: Option<u32>, frame: &[u8]) {
    queue_borrowed(st, frame, |head| {
        format::frame_head(head, kind, t, process, frame.len())
    });
}

/// Queues an input's memory record from borrowed bytes (a stream's diff),
/// straight into the blob.
fn queue_memory(st: &mut State, t: u64, gpa: u64, bytes: &[u8]) {
    let purpose = MemoryPurpose::Input;
    queue_borrowed(st, bytes, |head| {
        format::memory_head(head, t, purpose, gpa, bytes.len())
    });
}

/// Queues a record whose head `head` writes and whose bytes after it are
/// `tail`: into the blob when small, else as its own parts.
fn queue_borrowed(st: &mut State, tail: &[u8], head: impl FnOnce(&mut Vec<u8>)) {
    if st.tx.is_none() {
        return;
    }
    if tail.len() > SMALL_RECORD {
        let mut h = Vec::new();
        head(&mut h);
        return queue(st, (h, tail.to_vec()));
    }
    let blob = blob(st);
    let start = blob.len();
    head(blob);
    blob.extend_from_slice(tail);
    let bytes = blob.len() - start;
    st.blob_records += 1;
    queued(st, bytes);
}

fn hand_over(st: &mut State, msg: Msg) -> bool {
    let Some(tx) = &st.tx else { return false };
    match tx.try_send(msg) {
        Ok(()) => true,
        Err(std::sync::mpsc::TrySendError::Full(msg)) => {
            st.waits += 1;
            if tx.send(msg).is_err() {
                st.tx = None;
                return false;
            }
            true
        }
        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
            st.tx = None;
            false
        }
    }
}

/// Encodes `rec` and hands it to the writer.
fn emit(st: &mut State, rec: Record) {
    queue(st, rec.into_parts());
}

impl Recorder {
    /// Copies the pages `pfns` into memory records (or digests them, with
    /// `digest`): on this thread when they are few (or `purpose` is a
    /// result, which the guest may change as soon as it has the reply), on
    /// the writer thread otherwise. Returns whether the writer got them.
    fn capture(
        &self,
        st: &mut State,
        t: u64,
        purpose: MemoryPurpose,
        pfns: Vec<u64>,
        mem: &GuestMemoryMmap,
        digest: bool,
    ) -> bool {
        if pfns.is_empty() {
            return false;
        }
        let inline = self.inline(st, &pfns);
        if purpose == MemoryPurpose::Input && !inline {
            st.queued += 1;
            let lo = pfns.iter().copied().min().unwrap_or(0);
            let hi = pfns.iter().copied().max().unwrap_or(0);
            st.in_flight.push_back((st.queued, lo, hi));
            let done = *lock(&self.shared.done);
            while st.started.front().is_some_and(|s| s.0 <= done) {
                st.started.pop_front();
            }
            let writer_last = st.writer_last;
            let msg = match self.start_input(pfns, mem) {
                Ok(split) => {
                    st.started.push_back((st.queued, split.clone()));
                    Msg::Started { t, split }
                }
                Err(pfns) => {
                    st.writer_last = st.queued;
                    let mem = mem.clone();
                    Msg::Capture { t, pfns, mem }
                }
            };
            if !send(st, msg) {
                st.queued -= 1;
                st.in_flight.pop_back();
                st.writer_last = writer_last;
                // No writer will join it: helpers drop it once done.
                if st.started.back().is_some_and(|s| s.0 > st.queued) {
                    if let Some((_, split)) = st.started.pop_back() {
                        lock(&self.shared.published).retain(|p| !Arc::ptr_eq(p, &split));
                    }
                }
            }
            return true;
        }
        let start = Instant::now();
        // A result: one order, what is in flight goes first (it may be an
        // UNLOCK2 of the same pages).
        if purpose == MemoryPurpose::Result {
            st.settle(&self.shared);
        }
        // A large result is split over threads here (at least two: the
        // guest waits for the reply); a small input is done here at once.
        let threads = match purpose {
            MemoryPurpose::Result => self.options.threads.max(2),
            MemoryPurpose::Input => 1,
        };
        let mut records = Vec::new();
        let sh = &self.shared;
        sh.take(mem, &pfns, t, purpose, digest, threads, &mut records);
        if purpose == MemoryPurpose::Result {
            st.spent.results += start.elapsed();
        }
        for r in records {
            queue(st, r);
        }
        false
    }

    /// Hands a large input to helpers at once ([`Options::early_inputs`]),
    /// waking them to stand by if none does (on a large host; elsewhere
    /// they are woken for it alone); the writer joins it in order. `Err`
    /// gives the list back where the writer is to split it itself: a
    /// small input, or a list that names a page twice.
    fn start_input(&self, pfns: Vec<u64>, mem: &GuestMemoryMmap) -> Result<Arc<Split>, Vec<u64>> {
        let sh = &self.shared;
        if !self.options.early_inputs || pfns.len() < 2 * PAGES_PER_THREAD {
            return Err(pfns);
        }
        // In the segments of a result read as it lands: the last 2 MiB
        // piece of a write is then shared by up to 8 threads, and the
        // LOCK2 after it waits for less.
        let most = EARLY_SEGMENT_PAGES;
        let threads = sh.threads_at(&pfns, self.options.threads, most);
        if threads <= 1 {
            return Err(pfns);
        }
        // Neither this thread nor (until it wakes) the writer takes a
        // part: as many helpers as the capture has threads.
        let helpers = threads.min(sh.helpers.len());
        if sh.standing.load(Ordering::Acquire) == 0 {
            sh.stand_by_helpers(helpers);
        }
        let input = MemoryPurpose::Input;
        Ok(sh.start(mem, pfns, input, false, helpers, most))
    }

    /// Whether an input of `pfns` is captured on this thread: a few pages
    /// apart from what the writer is still on (a submit's stream while it
    /// compares an UNLOCK2) are diffed here and now, so that the reply need
    /// not wait for the writer.
    fn inline(&self, st: &mut State, pfns: &[u64]) -> bool {
        let done = *lock(&self.shared.done);
        pfns.len() <= INLINE_PAGES && (done == st.queued || st.apart(done, pfns))
    }

    /// Captures a submit's command stream: its bytes alone, diffed on this
    /// thread, when none of its pages is in a capture in flight (as
    /// [`Recorder::capture`] does small inputs); its pages whole otherwise,
    /// and for a page known by its hash only. Returns whether the writer
    /// got pages.
    fn capture_stream(
        &self,
        st: &mut State,
        t: u64,
        parts: &StreamParts,
        mem: &GuestMemoryMmap,
    ) -> bool {
        let mut pfns = std::mem::take(&mut st.stream_pfns);
        pfns.clear();
        pfns.extend(parts.iter().map(|p| p.0));
        pfns.dedup();
        if !self.inline(st, &pfns) {
            // The list goes to the writer; the next submit starts a new one.
            return self.capture(st, t, MemoryPurpose::Input, pfns, mem, false);
        }
        st.stream_pfns = pfns;
        let mut whole = Vec::new();
        let mut diff = std::mem::take(&mut st.stream_diff);
        diff.clear();
        for &(pfn, from, to) in parts {
            let mut shadow = lock(&self.shared.shadow[stripe(pfn)]);
            if !shadow.part(mem, pfn, from, to, &mut diff) && !whole.contains(&pfn) {
                whole.push(pfn);
            }
        }
        for (gpa, bytes) in diff.iter() {
            queue_memory(st, t, gpa, bytes);
        }
        st.stream_diff = diff;
        !whole.is_empty() && self.capture(st, t, MemoryPurpose::Input, whole, mem, false)
    }
}

impl Recorder {
    /// Whether a LOCK2 result is recorded as digests: a large one, unless
    /// TIMESTAMP wrote it (timestamps must stay bytes: a replay skips
    /// them).
    fn digested(&self, r: &ResultPages) -> bool {
        r.pfns.len() >= self.options.digest_pages && !r.timestamps
    }

    /// The reply to a LOCK2 whose result was read as it landed: the
    /// pieces read so far, then the rest, as records at `t`.
    fn finish_early(&self, st: &mut State, t: u64, early: EarlyResult) {
        st.settle(&self.shared);
        let start = Instant::now();
        let mut records = Vec::new();
        for split in &early.splits {
            self.shared.join(split, t, &mut records);
        }
        let rest = &early.pfns[early.started..];
        if !rest.is_empty() {
            let threads = self.options.threads.max(2);
            let sh = &self.shared;
            sh.take(
                &early.mem,
                rest,
                t,
                MemoryPurpose::Result,
                true,
                threads,
                &mut records,
            );
        }
        st.spent.results += start.elapsed();
        for r in records {
            queue(st, r);
        }
    }

    /// Helpers standing by for the LOCK2 just answered (or never
    /// answered) stop spinning.
    fn stop_standing(&self, st: &mut State) {
        if std::mem::take(&mut st.standing) {
            self.shared.end_stand_by();
        }
    }

    /// A result read early that will not be recorded (the LOCK2 failed):
    /// once the helpers are done with it, the shadow forgets its pages.
    fn abandon_early(&self, st: &mut State) {
        let Some(early) = st.early.take() else {
            return;
        };
        let mut dropped = Vec::new();
        for split in &early.splits {
            self.shared.join(split, 0, &mut dropped);
        }
        for &pfn in &early.pfns[..early.started] {
            lock(&self.shared.shadow[stripe(pfn)]).forget(&[pfn]);
        }
    }
}

impl FrameObserver for Recorder {
    fn wants_lock_progress(&self) -> bool {
        self.lock().early.is_some()
    }

    fn lock_progress(&self, bytes: u64) {
        let mut st = self.lock();
        let start = ticks::now();
        let helpers = self.shared.helpers.len();
        let st = &mut *st;
        if let Some(e) = st.early.as_mut() {
            let landed =
                usize::try_from(bytes / PAGE).map_or(e.pfns.len(), |p| p.min(e.pfns.len()));
            if landed > e.started {
                let pfns = e.pfns[e.started..landed].to_vec();
                let (purpose, most) = (MemoryPurpose::Result, EARLY_SEGMENT_PAGES);
                let split = self
                    .shared
                    .start(&e.mem, pfns, purpose, true, helpers, most);
                if e.splits.is_empty() {
                    st.results_read_early += 1;
                }
                e.splits.push(split);
                e.started = landed;
            }
        }
        st.spent_ticks += ticks::now().wrapping_sub(start);
    }

    fn observe(&self, direction: Direction, frame: &[u8], mem: Option<&GuestMemoryMmap>) {
        let mut st = self.lock();
        // The record's time, read under the lock so that times follow the
        // records' order (events may come from another thread). The
        // accounting reads the cheaper tick counter.
        let start = ticks::now();
        let t = self.now();
        self.observe_locked(&mut st, t, direction, frame, mem);
        st.spent_ticks += ticks::now().wrapping_sub(start);
    }
}

impl Recorder {
    fn observe_locked(
        &self,
        st: &mut State,
        t: u64,
        direction: Direction,
        frame: &[u8],
        mem: Option<&GuestMemoryMmap>,
    ) {
        // The device thread calls: its CPUs are known from now on.
        self.shared.cpus.get_or_init(cpus::away_from_caller);
        if st.tx.is_none() {
            return;
        }
        match direction {
            Direction::Request => {
                if let Some(mem) = mem {
                    let regions = || mem.iter().map(|r| (r.start_addr().0, r.len()));
                    if !regions().eq(st.layout.iter().copied()) {
                        st.layout = regions().collect();
                        let regions = st.layout.clone();
                        emit(st, Record::Layout { t, regions });
                    }
                }
                if releases_pages(frame) {
                    st.settle(&self.shared);
                }
                let process = frame_process(frame);
                st.process = process;
                let mut inputs = std::mem::take(&mut st.inputs);
                st.capture.before_request(frame, mem, &mut inputs);
                // A large LOCK2 result: its helpers wake while the backend
                // copies it, and a digested one is read as it lands.
                self.abandon_early(st);
                self.stop_standing(st);
                let result_pages = st.capture.pending_result_pages();
                if let (Some(mem), true) = (mem, result_pages >= 2 * PAGES_PER_THREAD) {
                    self.shared
                        .stand_by(result_pages, self.options.threads.max(2));
                    st.standing = true;
                    st.early = st
                        .capture
                        .pending_result()
                        .filter(|r| {
                            self.options.early_results
                                && self.digested(r)
                                && self.shared.threads_for(&r.pfns, 2) > 1
                        })
                        .map(|r| EarlyResult {
                            mem: mem.clone(),
                            pfns: r.pfns,
                            started: 0,
                            splits: Vec::new(),
                        });
                }
                let stream = st.capture.take_stream();
                let uploads = st.capture.take_uploads();
                let mut deferred = false;
                if let Some(mem) = mem {
                    if !stream.is_empty() {
                        deferred |= self.capture_stream(st, t, &stream, mem);
                    }
                    for pfns in inputs.drain(..) {
                        deferred |= self.capture(st, t, MemoryPurpose::Input, pfns, mem, false);
                    }
                    // The guest leaves an UPLOAD's pages alone until its
                    // next LOCK2, which settles every capture: the reply
                    // need not wait for these.
                    for pfns in uploads {
                        self.capture(st, t, MemoryPurpose::Input, pfns, mem, false);
                    }
                }
                st.capture.give_back_stream(stream);
                inputs.clear();
                st.inputs = inputs;
                // A LOCK2's own inputs are read before the backend may
                // write the pages.
                if deferred && releases_pages(frame) {
                    st.settle(&self.shared);
                    deferred = false;
                }
                // UNLOCK2's pages are the guest's again only at its next
                // LOCK2; a submit's (command stream, locked allocations) may
                // change once it has the reply.
                st.reply_waits = deferred
                    && !matches!(
                        crate::capture::command_of(frame),
                        Some((c, n)) if c & 0xff == dxvmm_protocol::vmbus::DXGKVMB_VGPU_TO_HOST
                            && n == dxvmm_protocol::vmbus::vgpu::DXGK_VMBCOMMAND_UNLOCK2
                    );
                queue_frame(st, format::kind::REQUEST, t, Some(process), frame);
            }
            Direction::Reply => {
                if std::mem::take(&mut st.reply_waits) {
                    st.settle(&self.shared);
                }
                let process = st.process;
                queue_frame(st, format::kind::REPLY, t, Some(process), frame);
                let mut results: Vec<ResultPages> = Vec::new();
                st.capture.after_reply(frame, mem, &mut results);
                let mut early = st.early.take();
                if let Some(mem) = mem {
                    for r in results {
                        match early.take_if(|e| e.pfns == r.pfns) {
                            Some(e) => self.finish_early(st, t, e),
                            None => {
                                let digest = self.digested(&r);
                                self.capture(st, t, MemoryPurpose::Result, r.pfns, mem, digest);
                            }
                        }
                    }
                }
                st.early = early;
                self.abandon_early(st);
                self.stop_standing(st);
            }
            Direction::Event => queue_frame(st, format::kind::EVENT, t, None, frame),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // A recording nobody finished still gets its end record and a
        // flushed file.
        if self.writer.lock().map(|w| w.is_some()).unwrap_or(false) {
            if let Err(e) = self.finish() {
                tracing::warn!("trace: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_inputs_go_ahead_only_of_other_pages() {
        let mut st = State {
            queued: 2,
            in_flight: VecDeque::from([(1, 100, 131), (2, 500, 500)]),
            ..State::new(None)
        };
        assert!(st.apart(0, &[10, 99, 132, 499, 501]));
        assert!(!st.apart(0, &[10, 131]));
        assert!(!st.apart(0, &[500]));
        // Once the writer has done the first, its pages are free.
        assert!(st.apart(1, &[100]));
        assert_eq!(st.in_flight.len(), 1);
        assert!(!st.apart(1, &[500]));
        assert!(st.apart(2, &[500]) && st.in_flight.is_empty());
    }

    #[test]
    fn records_reach_the_writer_in_batches_and_in_order() {
        let (tx, rx) = sync_channel(CHANNEL_DEPTH);
        let mut st = State::new(Some(tx));
        let rec = |i: u8, n: usize| (vec![i], vec![i; n]);
        queue(&mut st, rec(0, 100));
        queue_frame(&mut st, format::kind::EVENT, 5, None, &[1; 10]);
        // A large record goes as its own parts, between two blobs.
        queue(&mut st, rec(2, SMALL_RECORD + 1));
        queue(&mut st, rec(3, 100));
        assert!(rx.try_recv().is_err(), "the records wait");
        // Anything else handed over goes after them.
        send(&mut st, Msg::End { t: 1 });
        let Ok(Msg::Records(first)) = rx.try_recv() else {
            panic!("the batch did not go first");
        };
        assert!(matches!(
            first[..],
            [
                Chunk::Blob { records: 2, .. },
                Chunk::Record(_),
                Chunk::Blob { records: 1, .. }
            ]
        ));
        let bytes: Vec<u8> = first
            .into_iter()
            .flat_map(|c| match c {
                Chunk::Blob { bytes, .. } => bytes,
                Chunk::Record((head, tail)) => [head, tail].concat(),
            })
            .collect();
        let mut want = [vec![0], vec![0; 100]].concat();
        format::frame_head(&mut want, format::kind::EVENT, 5, None, 10);
        want.extend([1; 10]);
        want.extend([vec![2], vec![2; SMALL_RECORD + 1], vec![3], vec![3; 100]].concat());
        assert_eq!(bytes, want);
        assert!(matches!(rx.try_recv(), Ok(Msg::End { t: 1 })));
        // A full batch goes by itself, as one blob.
        for i in 0..BATCH_RECORDS {
            queue(&mut st, rec(i as u8, 100));
        }
        let full = BATCH_RECORDS as u64;
        assert!(matches!(
            rx.try_recv(),
            Ok(Msg::Records(b)) if matches!(b[..], [Chunk::Blob { records, .. }] if records == full)
        ));
        assert!(st.batch.is_empty() && st.blob_records == 0);
        // A large frame goes as its own parts, encoded as its record.
        let frame = vec![6; SMALL_RECORD + 1];
        queue_frame(&mut st, format::kind::REQUEST, 9, Some(0x40), &frame);
        flush(&mut st);
        let Ok(Msg::Records(b)) = rx.try_recv() else {
            panic!("the large frame was not handed over");
        };
        let [Chunk::Record((head, tail))] = &b[..] else {
            panic!("not one record of its own");
        };
        let mut want = Vec::new();
        Record::Request {
            t: 9,
            process: 0x40,
            frame,
        }
        .encode_into(&mut want);
        assert_eq!([head.clone(), tail.clone()].concat(), want);
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    const PAGE: u64 = 4096;
    /// 12 MiB: enough pages for more than 5 threads (PAGES_PER_THREAD each).
    const PAGES: u64 = 3072;

    /// xorshift64: the same guest for every thread count.
    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// A page list as an allocation has it: stretches of contiguous
    /// pages, not in address order, crossing MiB boundaries; with `twice`,
    /// one page listed twice (a bogus list, done on one thread).
    fn list(twice: bool) -> Vec<u64> {
        let mut pfns: Vec<u64> = (1500..PAGES).collect();
        pfns.extend(100..900);
        if twice {
            pfns.push(2000);
        }
        pfns.extend((1000..1300).rev());
        pfns
    }

    /// The records of a scripted sequence of captures of `pfns`, split
    /// over `threads`.
    fn captures(pfns: &[u64], threads: usize, stand_by: bool) -> Vec<Vec<Encoded>> {
        let mem =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (PAGES * PAGE) as usize)]).unwrap();
        let mut shared = Shared::new(threads - 1).unwrap();
        shared.may_stand_by = stand_by;
        let shared = Arc::new(shared);
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut out = Vec::new();
        let mut scribble = |mem: &GuestMemoryMmap, n: usize| {
            for _ in 0..n {
                let at = next(&mut seed) % (PAGES * PAGE - 64);
                let len = 1 + next(&mut seed) % 64;
                let v = vec![next(&mut seed) as u8 | 1; len as usize];
                mem.write_slice(&v, GuestAddress(at)).unwrap();
            }
        };
        let steps = [
            (MemoryPurpose::Input, false),
            (MemoryPurpose::Input, false),
            (MemoryPurpose::Result, true),
            (MemoryPurpose::Input, false),
            (MemoryPurpose::Result, false),
            (MemoryPurpose::Result, true),
        ];
        for (i, (purpose, digest)) in steps.into_iter().enumerate() {
            // Whole pages at first, scattered bytes later.
            scribble(&mem, if i == 0 { 10_000 } else { 300 });
            let mut records = Vec::new();
            // Helpers woken ahead, as for a LOCK2 result, whatever the
            // purpose: they take the capture as if woken for it.
            shared.stand_by(pfns.len(), threads);
            shared.take(&mem, pfns, i as u64, purpose, digest, threads, &mut records);
            shared.end_stand_by();
            out.push(records);
        }
        out
    }

    #[test]
    fn a_capture_is_the_same_whatever_the_threads() {
        let pfns = list(false);
        for most in [SEGMENT_PAGES, EARLY_SEGMENT_PAGES] {
            let segs = segments(&pfns, most);
            assert!(segs.iter().all(|s| s.len() <= most
                && pfns[s.clone()]
                    .iter()
                    .all(|p| p >> SEGMENT_SHIFT == pfns[s.start] >> SEGMENT_SHIFT)));
            assert_eq!(segs.iter().map(|s| s.len()).sum::<usize>(), pfns.len());
        }
        for twice in [false, true] {
            let pfns = list(twice);
            let one = captures(&pfns, 1, false);
            assert!(one.iter().all(|r| !r.is_empty()));
            for threads in [2, 5] {
                assert!(captures(&pfns, threads, false) == one, "{threads} threads");
                assert!(
                    captures(&pfns, threads, true) == one,
                    "{threads} threads standing by"
                );
            }
        }
    }

    /// The records of a digested result read in pieces (halving, as
    /// [`FrameObserver::lock_progress`] hands them over), each started
    /// before the one before it is done and all joined at the end.
    fn pieces(pfns: &[u64], helpers: usize, stand_by: bool) -> Vec<Encoded> {
        let mem =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (PAGES * PAGE) as usize)]).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let bytes: Vec<u8> = (0..PAGES * PAGE).map(|_| next(&mut seed) as u8).collect();
        mem.write_slice(&bytes, GuestAddress(0)).unwrap();
        let mut shared = Shared::new(helpers).unwrap();
        shared.may_stand_by = stand_by;
        let shared = Arc::new(shared);
        shared.stand_by(pfns.len(), helpers + 1);
        let (mut at, mut splits) = (0, Vec::new());
        while at < pfns.len() {
            let n = ((pfns.len() - at) / 2).max(256).min(pfns.len() - at);
            let piece = pfns[at..at + n].to_vec();
            let (purpose, most) = (MemoryPurpose::Result, EARLY_SEGMENT_PAGES);
            splits.push(shared.start(&mem, piece, purpose, true, helpers, most));
            at += n;
        }
        let mut records = Vec::new();
        for split in &splits {
            shared.join(split, 7, &mut records);
        }
        shared.end_stand_by();
        records
    }

    #[test]
    fn pieces_taken_by_helpers_standing_by_are_the_pieces_taken_alone() {
        let pfns = list(false);
        let alone = pieces(&pfns, 0, false);
        assert!(alone.len() >= pfns.len() / EARLY_SEGMENT_PAGES);
        for _ in 0..3 {
            assert!(pieces(&pfns, 3, true) == alone);
            assert!(pieces(&pfns, 3, false) == alone);
        }
    }

    /// How fast captures read guest memory, by thread count: the same
    /// 64 MiB compared again unchanged (an input against its byte shadows
    /// or by page hashes, a digested result by page hashes), as an UNLOCK2
    /// or a LOCK2 of a buffer the guest only read costs. A measurement, not a check:
    /// `cargo test --release -p dxvmm-trace --lib capture_rate -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn capture_rate() {
        const MIB: u64 = 64;
        let pages = MIB << 8;
        let mem =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (pages * PAGE) as usize)]).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let bytes: Vec<u8> = (0..pages * PAGE).map(|_| next(&mut seed) as u8).collect();
        mem.write_slice(&bytes, GuestAddress(0)).unwrap();
        let in_order: Vec<u64> = (0..pages).collect();
        // A guest's allocation is seldom contiguous: the same pages in a
        // shuffled order within each MiB (a segment), where the CPU's own
        // prefetcher cannot guess the next page.
        let mut scattered = in_order.clone();
        for c in scattered.chunks_mut(256) {
            for i in (1..c.len()).rev() {
                let j = (next(&mut seed) % (i as u64 + 1)) as usize;
                c.swap(i, j);
            }
        }
        for (pfns, layout) in [(in_order, "in order"), (scattered, "scattered")] {
            for threads in [1, 2, 4, 8, 12, 16] {
                for (purpose, digest, bulk_pages, what) in [
                    (
                        MemoryPurpose::Input,
                        false,
                        usize::MAX,
                        "input, compared by bytes",
                    ),
                    (
                        MemoryPurpose::Input,
                        false,
                        BULK_PAGES,
                        "input, compared by hash",
                    ),
                    (MemoryPurpose::Result, true, BULK_PAGES, "result digest"),
                ] {
                    let mut shared = Shared::new(threads - 1).unwrap();
                    shared.bulk_pages = bulk_pages;
                    let shared = Arc::new(shared);
                    let mut records = Vec::new();
                    // The first capture takes every page; the rest find them
                    // unchanged.
                    let t = Instant::now();
                    shared.take(&mem, &pfns, 0, purpose, digest, threads, &mut records);
                    let first = t.elapsed();
                    let mut best = Duration::MAX;
                    for _ in 0..5 {
                        records.clear();
                        let t = Instant::now();
                        shared.take(&mem, &pfns, 0, purpose, digest, threads, &mut records);
                        best = best.min(t.elapsed());
                        assert!(records.is_empty());
                    }
                    println!(
                    "pages {layout}, {threads} threads, {what}: {MIB} MiB in {:.2} ms, {:.1} GB/s of guest memory (first capture {:.1} ms)",
                    best.as_secs_f64() * 1e3,
                    (MIB << 20) as f64 / best.as_secs_f64() / 1e9,
                    first.as_secs_f64() * 1e3,
                );
                }
            }
        }
    }
}
