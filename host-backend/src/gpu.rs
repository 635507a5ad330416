//! [`WgpuBackend`]: the object model on real host adapters through wgpu's
//! Vulkan backend.
//!
//! One wgpu device and queue per host adapter, opened on first use and
//! shared by every guest device on it (as a kernel-mode driver shares the
//! hardware). Each allocation is one storage buffer. A piece of work is one
//! command encoder; wgpu tracks buffer use across submissions and inserts
//! the barriers, so later work sees earlier writes. A completion thread per
//! adapter waits for each submission (`device.poll(Wait)` on its index) and
//! runs its completions: nobody polls in a loop.
//!
//! Work goes to the queue at once while fewer than [`IN_FLIGHT`]
//! submissions are in flight; after that, pieces of work gather in one
//! batch (one encoder), which the completion thread submits as soon as a
//! submission completes. A stream of small submits then costs one queue
//! submission per batch instead of one each, and the queue submission is
//! made on the completion thread, off the thread that serves the guest,
//! while the GPU always has the next piece of work queued: large work is
//! not held back. Anything that reads results back, and any buffer being
//! destroyed, submits the batch first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use dxvmm_protocol::escape::{CreatePipeline, ShaderLanguage};

use crate::backend::*;
use crate::core::Core;
use crate::engine::{Completion, Engine, Op, Progress, Range};
use crate::error::{BackendError, Result};
use crate::import::{self, HostImport, HOST_IMPORT_ENV};
use crate::memory::HostSpan;
use crate::shader::{self, ShaderBinding};

/// Bind groups kept per pipeline before the cache is emptied. A guest that
/// dispatches the same pipeline over the same ranges (the common case)
/// builds its bind group once.
const BIND_GROUP_CACHE: usize = 256;

/// Submissions handed to the driver ahead of the GPU before later work
/// waits in a batch: two, so that the GPU finds the next piece queued when
/// one completes, while the completion thread wakes and submits the batch.
const IN_FLIGHT: usize = 2;

/// Pieces of work in one batch at most; a full batch is submitted at once.
const MAX_BATCH: usize = 256;

/// Environment variable that turns batching off when set to 0 (every piece
/// of work is then its own queue submission, at once; for comparisons).
pub const BATCH_ENV: &str = "DXVMM_GPU_BATCH";

/// Chunk of an upload staged through the CPU cache.
const UPLOAD_CHUNK: usize = 256 << 10;

/// Largest pattern buffer of a non-zero FILL; bigger fills copy it again.
const FILL_CHUNK: u64 = 1 << 20;

/// Environment variable that overrides every adapter's memory budget (MiB).
pub const MEMORY_BUDGET_ENV: &str = "DXVMM_GPU_MEMORY_MIB";

struct Gpu {
    device: wgpu::Device,
    /// The queue, and the batch waiting to go on it.
    submitter: Arc<Submitter>,
    /// Timestamp queries inside encoders are available.
    timestamps: Option<Timestamps>,
    /// Reused download staging (MAP_READ) buffer.
    staging: Mutex<Option<wgpu::Buffer>>,
    /// Reused bounce buffer for copies within one buffer.
    bounce: Mutex<Option<wgpu::Buffer>>,
    /// Uploads staged for the next submission, copied first in it.
    uploads: Mutex<Vec<Upload>>,
    /// Guest RAM imported as GPU memory, where the driver can.
    import: Option<HostImport>,
}

struct Upload {
    /// A staging buffer (back to the pool once copied) or imported guest
    /// RAM (not).
    src: UploadSource,
    src_offset: u64,
    dst: wgpu::Buffer,
    offset: u64,
    len: u64,
}

enum UploadSource {
    Staging(wgpu::Buffer),
    /// An import of guest RAM, and the destination's count of such
    /// uploads not yet done ([`GpuBuffer::guest_reads`]).
    GuestRam(wgpu::Buffer, Arc<AtomicU64>),
}

/// Staging kept for reuse, all buffers together.
const STAGING_POOL_BYTES: u64 = 512 << 20;

struct Timestamps {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
}

/// An adapter's queue and the batch of work waiting to go on it (see the
/// module documentation); shared with the completion thread, which submits
/// the batch when a submission completes.
struct Submitter {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// Mapped upload staging buffers ready for reuse. wgpu's own
    /// `write_buffer` makes a fresh staging buffer each time, and fresh
    /// memory costs a page fault per page on first write; ours come back
    /// here (mapped again) once the GPU has copied out of them.
    staging_pool: Arc<Mutex<Vec<wgpu::Buffer>>>,
    /// To the completion thread: each submission it waits for.
    completions: Sender<Submitted>,
    state: Mutex<SubmitState>,
    /// Submissions in flight before work waits in a batch: [`IN_FLIGHT`],
    /// or unbounded with batching off ([`BATCH_ENV`]).
    depth: usize,
    /// Pieces of work executed, and queue submissions that carried them.
    pieces: AtomicU64,
    submissions: AtomicU64,
}

#[derive(Default)]
struct SubmitState {
    /// Submissions handed to the completion thread and not yet complete.
    in_flight: usize,
    /// Work recorded and not yet submitted, in order after everything
    /// submitted.
    batch: Option<Batch>,
}

/// Pieces of work recorded into one encoder, to be one queue submission.
struct Batch {
    enc: wgpu::CommandEncoder,
    /// Upload staging the batch reads, recycled once it is submitted.
    staged: Vec<wgpu::Buffer>,
    /// The pieces' completions, in order.
    done: Vec<Completion>,
    pieces: usize,
}

/// What [`Gpu::record_uploads`] recorded: staging to recycle once
/// submitted, guest-RAM upload counts to take one off once complete.
#[derive(Default)]
struct Recorded {
    staged: Vec<wgpu::Buffer>,
    guest_reads: Vec<Arc<AtomicU64>>,
}

impl Recorded {
    /// Takes this submission's uploads off their buffers' counts: the
    /// GPU has read them.
    fn reads_done(reads: Vec<Arc<AtomicU64>>) {
        for r in reads {
            r.fetch_sub(1, Ordering::Release);
        }
    }
}

/// A submission the completion thread waits for, and what runs after it.
struct Submitted {
    index: wgpu::SubmissionIndex,
    done: Vec<Completion>,
}

impl Submitter {
    fn state(&self) -> std::sync::MutexGuard<'_, SubmitState> {
        lock(&self.state)
    }

    /// Submits `enc` and hands it to the completion thread.
    fn submit(
        &self,
        st: &mut SubmitState,
        enc: wgpu::CommandEncoder,
        staged: Vec<wgpu::Buffer>,
        done: Vec<Completion>,
    ) -> Result<()> {
        let index = self.queue.submit([enc.finish()]);
        self.submissions.fetch_add(1, Ordering::Relaxed);
        recycle(&self.staging_pool, staged);
        st.in_flight += 1;
        self.completions
            .send(Submitted { index, done })
            .map_err(|_| unavailable("GPU completion thread ended"))
    }

    /// Submits the batch, if there is one.
    fn submit_batch(&self, st: &mut SubmitState) -> Result<()> {
        match st.batch.take() {
            Some(b) => self.submit(st, b.enc, b.staged, b.done),
            None => Ok(()),
        }
    }

    /// Submits the batch now (before work that must follow it, or before
    /// a buffer it may use is destroyed).
    fn flush(&self) -> Result<()> {
        self.submit_batch(&mut self.state())
    }

    /// Submits `enc` after the batch, for work the caller waits for itself.
    fn submit_after_batch(&self, enc: wgpu::CommandEncoder) -> Result<wgpu::SubmissionIndex> {
        let mut st = self.state();
        self.submit_batch(&mut st)?;
        Ok(self.queue.submit([enc.finish()]))
    }

    /// The completion thread saw a submission complete: the batch, if any,
    /// goes now.
    fn completed(&self) {
        let mut st = self.state();
        st.in_flight = st.in_flight.saturating_sub(1);
        if st.in_flight < self.depth {
            if let Err(e) = self.submit_batch(&mut st) {
                tracing::error!("submitting GPU work: {e}");
            }
        }
    }
}

impl Drop for Submitter {
    fn drop(&mut self) {
        // The completion thread is ending with this: a batch still here
        // runs, and its completions after it.
        let batch = self
            .state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .batch
            .take();
        if let Some(b) = batch {
            let index = self.queue.submit([b.enc.finish()]);
            let _ = self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            });
            for done in b.done {
                done();
            }
        }
    }
}

/// An allocation's buffer.
pub(crate) struct GpuBuffer {
    buffer: wgpu::Buffer,
    live: Arc<AtomicU64>,
    /// Its adapter's submitter: a batch that may use the buffer goes to
    /// the queue before the buffer is destroyed.
    submitter: std::sync::Weak<Submitter>,
    /// Uploads into it that the GPU reads from guest RAM, queued and not
    /// yet seen complete: while there are any, a lock must wait.
    guest_reads: Arc<AtomicU64>,
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(s) = self.submitter.upgrade() {
            if let Err(e) = s.flush() {
                tracing::error!("submitting GPU work: {e}");
            }
        }
        // Frees the memory now; work already submitted keeps what it needs.
        self.buffer.destroy();
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

type BindKey = Vec<(u32, u64, u64, u64)>;

pub(crate) struct GpuPipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    bind_groups: Mutex<HashMap<BindKey, wgpu::BindGroup>>,
}

pub(crate) struct WgpuEngine {
    adapters: Vec<wgpu::Adapter>,
    infos: Vec<AdapterInfo>,
    gpus: Vec<OnceLock<std::result::Result<Arc<Gpu>, String>>>,
    live: Arc<AtomicU64>,
    /// Import guest RAM where the driver can (see [`crate::import`]).
    host_import: bool,
}

fn unavailable(e: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(e.to_string())
}

fn host_memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The budget the backend grants an adapter. wgpu does not report how much
/// memory a GPU has, so this is an accounting limit: `DXVMM_GPU_MEMORY_MIB`
/// if set, else half of the host's RAM (for lavapipe that is the memory it
/// allocates from; for a GPU it errs low rather than promise what the
/// driver may refuse).
fn memory_budget() -> u64 {
    if let Some(mib) = std::env::var(MEMORY_BUDGET_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return mib.saturating_mul(1 << 20);
    }
    host_memory_bytes().map_or(4 << 30, |b| b / 2)
}

fn kind_of(t: wgpu::DeviceType) -> DeviceKind {
    match t {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu,
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu,
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu,
        wgpu::DeviceType::Cpu => DeviceKind::Cpu,
        wgpu::DeviceType::Other => DeviceKind::Other,
    }
}

/// Every Vulkan adapter of the host, hardware first (so the default, the
/// first, is a GPU when there is one and lavapipe otherwise).
fn enumerate() -> Vec<(wgpu::Adapter, AdapterInfo)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN,
        // No validation layers or debug messenger, even in debug builds:
        // the loader's chatter would bury dxvmm's one-line errors, and every
        // command is checked before it reaches the driver. WGPU_DEBUG=1 and
        // WGPU_VALIDATION=1 turn them on.
        flags: wgpu::InstanceFlags::empty().with_env(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
    adapters.sort_by_key(|a| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    });
    let budget = memory_budget();
    let mut seen: HashMap<(u32, u32, String, String), u32> = HashMap::new();
    adapters
        .into_iter()
        .map(|a| {
            let i = a.get_info();
            let l = a.limits();
            let ordinal = seen
                .entry((i.vendor, i.device, i.name.clone(), i.driver.clone()))
                .or_insert(0);
            let backend = i.backend.to_str().to_owned();
            let luid =
                crate::stable_luid(i.vendor, i.device, &i.name, &i.driver, &backend, *ordinal);
            *ordinal += 1;
            let kind = kind_of(i.device_type);
            let info = AdapterInfo {
                luid,
                name: i.name.clone(),
                vendor_id: i.vendor,
                device_id: i.device,
                kind,
                software: kind == DeviceKind::Cpu,
                backend,
                driver: i.driver.clone(),
                driver_info: i.driver_info.clone(),
                memory_budget: budget,
                segments: vec![SegmentInfo {
                    id: 1,
                    group: SegmentGroup::Local,
                    size: budget,
                    cpu_visible: kind == DeviceKind::Cpu,
                }],
                limits: AdapterLimits {
                    max_buffer_size: l.max_buffer_size,
                    max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
                    max_bindings: l
                        .max_storage_buffers_per_shader_stage
                        .min(dxvmm_protocol::cmdstream::MAX_BINDINGS),
                    max_workgroups_per_dimension: l
                        .max_compute_workgroups_per_dimension
                        .min(dxvmm_protocol::cmdstream::MAX_WORKGROUPS_PER_DIMENSION),
                    max_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
                    min_storage_buffer_offset_alignment: l.min_storage_buffer_offset_alignment,
                },
            };
            (a, info)
        })
        .collect()
}

/// The host's adapters as the guest will see them, without opening any.
pub fn host_adapters() -> Vec<AdapterInfo> {
    enumerate().into_iter().map(|(_, i)| i).collect()
}

impl WgpuEngine {
    fn new(host_import: bool) -> Result<Self> {
        let (adapters, infos): (Vec<_>, Vec<_>) = enumerate().into_iter().unzip();
        if adapters.is_empty() {
            return Err(BackendError::Unavailable(
                "no Vulkan adapter (install a GPU driver, or Mesa's lavapipe: mesa-vulkan-drivers)"
                    .into(),
            ));
        }
        Ok(WgpuEngine {
            gpus: adapters.iter().map(|_| OnceLock::new()).collect(),
            adapters,
            infos,
            live: Arc::new(AtomicU64::new(0)),
            host_import,
        })
    }

    /// `spans` as pieces of imported guest RAM, if the adapter can reach
    /// all of them that way.
    fn imported(
        &self,
        adapter: usize,
        spans: &[HostSpan],
    ) -> Result<Option<(&Arc<Gpu>, Vec<import::Piece>)>> {
        let gpu = self.gpu(adapter)?;
        Ok(gpu
            .import
            .as_ref()
            .and_then(|i| i.pieces(&gpu.device, spans))
            .map(|p| (gpu, p)))
    }

    /// The adapter's device, opened on first use.
    fn gpu(&self, adapter: usize) -> Result<&Arc<Gpu>> {
        let slot = self.gpus.get(adapter).ok_or(BackendError::range(
            "adapter index",
            adapter as u64,
            self.gpus.len() as u64,
        ))?;
        slot.get_or_init(|| open(&self.adapters[adapter], self.host_import).map(Arc::new))
            .as_ref()
            .map_err(|e| BackendError::Unavailable(e.clone()))
    }
}

/// The adapter's device, with host-memory import enabled where the driver
/// has it.
fn open_device(
    adapter: &wgpu::Adapter,
    desc: &wgpu::DeviceDescriptor<'_>,
    host_import: bool,
) -> std::result::Result<(wgpu::Device, wgpu::Queue, bool), String> {
    let name = adapter.get_info().name;
    if host_import && import::available(adapter) {
        let opened = {
            // SAFETY: the hal adapter is used only to open a device, which
            // wgpu then owns (below).
            let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() };
            hal.map(|hal| {
                let add: Box<wgpu::hal::vulkan::CreateDeviceCallback<'_>> =
                    Box::new(|args| args.extensions.push(import::EXTENSION));
                // SAFETY: only an extension is added (the adapter has it);
                // features and limits are the descriptor's.
                unsafe {
                    hal.open_with_callback(
                        desc.required_features,
                        &desc.required_limits,
                        &desc.memory_hints,
                        Some(add),
                    )
                }
            })
        };
        match opened {
            Some(Ok(open)) => {
                // SAFETY: `open` was made from this adapter with the
                // descriptor's features.
                let r = unsafe { adapter.create_device_from_hal(open, desc) };
                return r
                    .map(|(d, q)| (d, q, true))
                    .map_err(|e| format!("opening {name}: {e}"));
            }
            Some(Err(e)) => {
                tracing::info!("{name}: no host-memory import ({e}); transfers are staged")
            }
            None => {}
        }
    }
    pollster::block_on(adapter.request_device(desc))
        .map(|(d, q)| (d, q, false))
        .map_err(|e| format!("opening {name}: {e}"))
}

fn open(adapter: &wgpu::Adapter, host_import: bool) -> std::result::Result<Gpu, String> {
    let want = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
    let features = adapter.features() & want;
    // Threads the driver starts from here (lavapipe's workers) inherit
    // this thread's CPU affinity: give them the process's, not a pin the
    // caller may have (dxvmm pins the thread that serves a user-mode guest
    // to the guest's CPU). Our completion thread keeps off that CPU
    // altogether (crate::affinity).
    let away = crate::affinity::away_from_caller();
    let _unpinned = crate::affinity::Unpinned::enter();
    let (device, queue, can_import) = open_device(
        adapter,
        &wgpu::DeviceDescriptor {
            label: Some("dxvmm"),
            required_features: features,
            // Everything the adapter can do: the guest sees these limits.
            required_limits: adapter.limits(),
            ..Default::default()
        },
        host_import,
    )?;
    let import = can_import
        .then(|| HostImport::new(adapter, &device))
        .flatten();
    // Every command is checked before it reaches wgpu, so an error here is
    // a bug or a lost device: log it rather than let wgpu's default
    // handler panic the host.
    device.on_uncaptured_error(Arc::new(|e| tracing::error!("wgpu: {e}")));
    let timestamps = (features == want).then(|| Timestamps {
        queries: device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("dxvmm timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 1,
        }),
        resolve: device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dxvmm timestamp resolve"),
            size: 256,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }),
    });
    let (tx, rx) = channel::<Submitted>();
    let submitter = Arc::new(Submitter {
        device: device.clone(),
        queue,
        staging_pool: Arc::new(Mutex::new(Vec::new())),
        completions: tx,
        state: Mutex::new(SubmitState::default()),
        depth: if std::env::var(BATCH_ENV).is_ok_and(|v| v.trim() == "0") {
            usize::MAX
        } else {
            IN_FLIGHT
        },
        pieces: AtomicU64::new(0),
        submissions: AtomicU64::new(0),
    });
    let poll_device = device.clone();
    let weak = Arc::downgrade(&submitter);
    std::thread::Builder::new()
        .name("dxvmm-gpu-completion".into())
        .spawn(move || {
            // Off the guest's CPU, where the thread that wakes it runs.
            if let Some(away) = away {
                crate::affinity::set_current(&away);
            }
            // Submissions complete in order. After each, the waiting batch
            // goes to the queue first (the GPU is then never without work
            // while there is some), then the completions run.
            while let Ok(s) = rx.recv() {
                if let Err(e) = poll_device.poll(wgpu::PollType::Wait {
                    submission_index: Some(s.index),
                    timeout: None,
                }) {
                    tracing::error!("waiting for GPU work: {e}");
                }
                if let Some(submitter) = weak.upgrade() {
                    submitter.completed();
                }
                for done in s.done {
                    done();
                }
            }
        })
        .map_err(|e| format!("starting the completion thread: {e}"))?;
    Ok(Gpu {
        device,
        submitter,
        timestamps,
        staging: Mutex::new(None),
        bounce: Mutex::new(None),
        uploads: Mutex::new(Vec::new()),
        import,
    })
}

/// A buffer of at least `size` from `slot`, made anew when too small.
fn reusable<'a>(
    device: &wgpu::Device,
    slot: &'a mut Option<wgpu::Buffer>,
    size: u64,
    usage: wgpu::BufferUsages,
) -> &'a wgpu::Buffer {
    if slot.as_ref().is_none_or(|b| b.size() < size) {
        *slot = Some(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dxvmm staging"),
            size: size.next_power_of_two(),
            usage,
            mapped_at_creation: false,
        }));
    }
    slot.as_ref().expect("just filled")
}

/// Maps used staging buffers again; each returns to `pool` when the GPU is
/// done reading it (its map callback runs in a later poll).
fn recycle(pool: &Arc<Mutex<Vec<wgpu::Buffer>>>, used: Vec<wgpu::Buffer>) {
    for b in used {
        let pool = Arc::downgrade(pool);
        let buf = b.clone();
        b.map_async(wgpu::MapMode::Write, .., move |r| {
            let Some(pool) = pool.upgrade() else { return };
            if r.is_ok() {
                let mut pool = lock(&pool);
                let held: u64 = pool.iter().map(|b| b.size()).sum();
                if held + buf.size() <= STAGING_POOL_BYTES {
                    pool.push(buf);
                }
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gpu {
    /// A mapped staging buffer of at least `len` bytes: the smallest free
    /// one that fits, else a new one mapped at creation.
    fn take_staging(&self, len: u64) -> wgpu::Buffer {
        let mut pool = lock(&self.submitter.staging_pool);
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.size() >= len)
            .min_by_key(|(_, b)| b.size())
            .map(|(i, _)| i);
        if let Some(i) = best {
            return pool.swap_remove(i);
        }
        drop(pool);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dxvmm upload staging"),
            size: len.next_power_of_two().max(4096),
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        })
    }

    /// Records the staged uploads at the start of `enc`; returns their
    /// staging buffers, to be recycled once the submission is made, and
    /// the counts of guest-RAM uploads to take one off once it completes.
    fn record_uploads(&self, enc: &mut wgpu::CommandEncoder) -> Recorded {
        let uploads = std::mem::take(&mut *lock(&self.uploads));
        let mut r = Recorded::default();
        for u in uploads {
            let src = match &u.src {
                UploadSource::Staging(b) | UploadSource::GuestRam(b, _) => b,
            };
            enc.copy_buffer_to_buffer(src, u.src_offset, &u.dst, u.offset, u.len);
            match u.src {
                UploadSource::Staging(b) => r.staged.push(b),
                UploadSource::GuestRam(_, reads) => r.guest_reads.push(reads),
            }
        }
        r
    }

    fn bind_group(
        &self,
        p: &GpuPipeline,
        bindings: &[(u32, Range<WgpuEngine>)],
    ) -> Result<wgpu::BindGroup> {
        let key: BindKey = bindings
            .iter()
            .map(|(slot, r)| (*slot, r.buffer_id, r.offset, r.size))
            .collect();
        let mut cache = lock(&p.bind_groups);
        if let Some(bg) = cache.get(&key) {
            return Ok(bg.clone());
        }
        let entries: Vec<wgpu::BindGroupEntry<'_>> = bindings
            .iter()
            .map(|(slot, r)| wgpu::BindGroupEntry {
                binding: *slot,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &r.buffer.buffer,
                    offset: r.offset,
                    size: wgpu::BufferSize::new(r.size),
                }),
            })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            tracing::error!("bind group: {e}");
            return Err(BackendError::param(
                "dispatch bindings",
                bindings.len() as u64,
            ));
        }
        if cache.len() >= BIND_GROUP_CACHE {
            cache.clear();
        }
        cache.insert(key, bg.clone());
        Ok(bg)
    }

    fn record(&self, enc: &mut wgpu::CommandEncoder, op: &Op<WgpuEngine>) -> Result<()> {
        match op {
            Op::Copy { src, dst } => {
                if src.buffer_id == dst.buffer_id {
                    // wgpu copies between distinct buffers only.
                    let mut slot = lock(&self.bounce);
                    let bounce = reusable(
                        &self.device,
                        &mut slot,
                        src.size,
                        wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    );
                    enc.copy_buffer_to_buffer(&src.buffer.buffer, src.offset, bounce, 0, src.size);
                    enc.copy_buffer_to_buffer(bounce, 0, &dst.buffer.buffer, dst.offset, src.size);
                } else {
                    enc.copy_buffer_to_buffer(
                        &src.buffer.buffer,
                        src.offset,
                        &dst.buffer.buffer,
                        dst.offset,
                        src.size,
                    );
                }
            }
            Op::Fill { dst, value } => {
                if *value == 0 {
                    enc.clear_buffer(&dst.buffer.buffer, dst.offset, Some(dst.size));
                } else {
                    let n = dst.size.min(FILL_CHUNK);
                    let pattern: Vec<u8> = value.to_le_bytes().repeat((n / 4) as usize);
                    let src = self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("dxvmm fill pattern"),
                        size: n,
                        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    self.submitter.queue.write_buffer(&src, 0, &pattern);
                    let mut at = 0;
                    while at < dst.size {
                        let len = n.min(dst.size - at);
                        enc.copy_buffer_to_buffer(
                            &src,
                            0,
                            &dst.buffer.buffer,
                            dst.offset + at,
                            len,
                        );
                        at += len;
                    }
                }
            }
            Op::Dispatch {
                pipeline,
                groups,
                bindings,
            } => {
                let bg = self.bind_group(pipeline, bindings)?;
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                pass.set_pipeline(&pipeline.pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            }
            Op::Timestamp { dst } => {
                let Some(ts) = self.timestamps.as_ref() else {
                    // No timestamp queries on this adapter: write 0, the
                    // documented "no time available" value.
                    enc.clear_buffer(&dst.buffer.buffer, dst.offset, Some(8));
                    return Ok(());
                };
                enc.write_timestamp(&ts.queries, 0);
                enc.resolve_query_set(&ts.queries, 0..1, &ts.resolve, 0);
                enc.copy_buffer_to_buffer(&ts.resolve, 0, &dst.buffer.buffer, dst.offset, 8);
            }
        }
        Ok(())
    }
}

impl Engine for WgpuEngine {
    type Buffer = GpuBuffer;
    type Pipeline = GpuPipeline;

    fn adapters(&self) -> &[AdapterInfo] {
        &self.infos
    }

    fn create_buffer(&self, adapter: usize, size: u64) -> Result<GpuBuffer> {
        let gpu = self.gpu(adapter)?;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if pollster::block_on(scope.pop()).is_some() {
            return Err(BackendError::OutOfMemory {
                what: "GPU buffer",
                size,
            });
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        Ok(GpuBuffer {
            buffer,
            live: self.live.clone(),
            submitter: Arc::downgrade(&gpu.submitter),
            guest_reads: Arc::new(AtomicU64::new(0)),
        })
    }

    fn live_buffers(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    fn write_buffer(
        &self,
        adapter: usize,
        buffer: &GpuBuffer,
        offset: u64,
        len: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let gpu = self.gpu(adapter)?;
        if len == 0 {
            return Ok(());
        }
        let staging = gpu.take_staging(len);
        {
            let mut view = staging.get_mapped_range_mut(0..len).map_err(unavailable)?;
            // The mapped staging memory is write-only: go through a chunk
            // that stays in the CPU cache, so the second copy costs little.
            let mut chunk = vec![0u8; UPLOAD_CHUNK.min(len as usize)];
            let mut at = 0u64;
            while at < len {
                let n = (len - at).min(chunk.len() as u64) as usize;
                read(at, &mut chunk[..n])?;
                view.slice(at as usize..at as usize + n)
                    .copy_from_slice(&chunk[..n]);
                at += n as u64;
            }
        }
        staging.unmap();
        lock(&gpu.uploads).push(Upload {
            src: UploadSource::Staging(staging),
            src_offset: 0,
            dst: buffer.buffer.clone(),
            offset,
            len,
        });
        Ok(())
    }

    fn write_buffer_direct(
        &self,
        adapter: usize,
        buffer: &GpuBuffer,
        spans: &[HostSpan],
    ) -> Result<bool> {
        let Some((gpu, pieces)) = self.imported(adapter, spans)? else {
            return Ok(false);
        };
        tracing::debug!(
            pieces = pieces.len(),
            spans = spans.len(),
            "upload from guest RAM"
        );
        // The GPU reads the guest's pages when the next submission runs,
        // not now: §2.6's coherency rules leave them alone until then.
        buffer
            .guest_reads
            .fetch_add(pieces.len() as u64, Ordering::Relaxed);
        lock(&gpu.uploads).extend(pieces.into_iter().map(|p| Upload {
            src: UploadSource::GuestRam(p.chunk, buffer.guest_reads.clone()),
            src_offset: p.chunk_offset,
            dst: buffer.buffer.clone(),
            offset: p.offset,
            len: p.len,
        }));
        Ok(true)
    }

    fn finish_direct_reads(&self, adapter: usize, buffer: &GpuBuffer) -> Result<()> {
        // Seen complete already (the usual case: the guest waited for the
        // work's fence, which is raised after this count goes down)?
        if buffer.guest_reads.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        // Everything queued so far: the buffer's upload is in there.
        let gpu = self.gpu(adapter)?;
        gpu.submitter.flush()?;
        gpu.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(unavailable)?;
        Ok(())
    }

    fn read_buffer_direct(
        &self,
        adapter: usize,
        buffer: &GpuBuffer,
        spans: &[HostSpan],
        progress: Option<Progress<'_>>,
    ) -> Result<bool> {
        let Some((gpu, pieces)) = self.imported(adapter, spans)? else {
            return Ok(false);
        };
        // Each piece of the progress its own submission, all queued at
        // once: the GPU copies them back to back, and the caller hears of
        // each as it lands.
        let (mut ends, mut reached): (&[u64], _) = match progress {
            Some((ends, reached)) => (ends, Some(reached)),
            None => (&[], None),
        };
        let mut submitted = Vec::new();
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        let recorded = gpu.record_uploads(&mut enc);
        let mut staged = Some(recorded.staged);
        for p in &pieces {
            let mut at = 0;
            while at < p.len {
                let offset = p.offset + at;
                // Past a piece's end: what is recorded so far goes now.
                while let Some((&end, rest)) = ends.split_first().filter(|(e, _)| offset >= **e) {
                    ends = rest;
                    let full = std::mem::replace(
                        &mut enc,
                        gpu.device.create_command_encoder(&Default::default()),
                    );
                    submitted.push((end, gpu.submitter.submit_after_batch(full)?));
                    if let Some(staged) = staged.take() {
                        recycle(&gpu.submitter.staging_pool, staged);
                    }
                }
                let piece_end = ends.first().copied().unwrap_or(u64::MAX);
                let len = (p.len - at).min(piece_end.saturating_sub(offset));
                enc.copy_buffer_to_buffer(
                    &buffer.buffer,
                    offset,
                    &p.chunk,
                    p.chunk_offset + at,
                    len,
                );
                at += len;
            }
        }
        let end = pieces.last().map_or(0, |p| p.offset + p.len);
        submitted.push((end, gpu.submitter.submit_after_batch(enc)?));
        if let Some(staged) = staged.take() {
            recycle(&gpu.submitter.staging_pool, staged);
        }
        let mut guest_reads = Some(recorded.guest_reads);
        for (end, index) in submitted {
            gpu.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                })
                .map_err(unavailable)?;
            if let Some(reads) = guest_reads.take() {
                Recorded::reads_done(reads);
            }
            if let Some(reached) = reached.as_mut() {
                reached(end);
            }
        }
        Ok(true)
    }

    fn read_buffer(
        &self,
        adapter: usize,
        buffer: &GpuBuffer,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let gpu = self.gpu(adapter)?;
        if len == 0 {
            return Ok(());
        }
        let mut slot = lock(&gpu.staging);
        let staging = reusable(
            &gpu.device,
            &mut slot,
            len,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        let recorded = gpu.record_uploads(&mut enc);
        enc.copy_buffer_to_buffer(&buffer.buffer, offset, staging, 0, len);
        let index = gpu.submitter.submit_after_batch(enc)?;
        recycle(&gpu.submitter.staging_pool, recorded.staged);
        let (tx, rx) = channel();
        staging.map_async(wgpu::MapMode::Read, 0..len, move |r| {
            let _ = tx.send(r);
        });
        gpu.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(unavailable)?;
        Recorded::reads_done(recorded.guest_reads);
        rx.recv().map_err(unavailable)?.map_err(unavailable)?;
        let result = {
            let view = staging.get_mapped_range(0..len).map_err(unavailable)?;
            sink(&view)
        };
        staging.unmap();
        result
    }

    fn create_pipeline(
        &self,
        adapter: usize,
        req: &CreatePipeline,
    ) -> Result<(GpuPipeline, Vec<ShaderBinding>)> {
        let gpu = self.gpu(adapter)?;
        let s = shader::parse(req)?;
        let source = match req.language {
            ShaderLanguage::Wgsl => {
                // `shader::parse` checked it is UTF-8.
                let text = String::from_utf8_lossy(&req.source).into_owned();
                wgpu::ShaderSource::Wgsl(text.into())
            }
            ShaderLanguage::SpirV => {
                let words: Vec<u32> = req
                    .source
                    .chunks_exact(4)
                    .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                    .collect();
                wgpu::ShaderSource::SpirV(words.into())
            }
        };
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = gpu
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source,
            });
        let pipeline = gpu
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: None,
                module: &module,
                entry_point: Some(&req.entry_point),
                compilation_options: Default::default(),
                cache: None,
            });
        // Only ask for the layout of a pipeline that exists.
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(BackendError::ShaderCompile {
                message: e.to_string(),
            });
        }
        let layout = pipeline.get_bind_group_layout(0);
        Ok((
            GpuPipeline {
                pipeline,
                layout,
                bind_groups: Mutex::new(HashMap::new()),
            },
            s.bindings,
        ))
    }

    fn execute(&self, adapter: usize, ops: &[Op<Self>], done: Option<Completion>) -> Result<()> {
        let gpu = self.gpu(adapter)?;
        let s = &gpu.submitter;
        s.pieces.fetch_add(1, Ordering::Relaxed);
        let mut st = s.state();
        // Everything was checked before it got here; if the driver still
        // refuses one command, skip it and keep the rest of the work and
        // its fence signals, so no waiter hangs on it.
        // The piece's guest-RAM uploads count as done before its own
        // completion runs (a fence the guest waits for, say).
        let record = |enc: &mut wgpu::CommandEncoder| {
            let Recorded {
                staged,
                guest_reads,
            } = gpu.record_uploads(enc);
            for op in ops {
                if let Err(e) = gpu.record(enc, op) {
                    tracing::error!("GPU command skipped: {e}");
                }
            }
            let reads_done = (!guest_reads.is_empty())
                .then(|| Box::new(move || Recorded::reads_done(guest_reads)) as Completion);
            (staged, reads_done.into_iter().chain(done))
        };
        if st.batch.is_none() && st.in_flight < s.depth {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            let (staged, done) = record(&mut enc);
            return s.submit(&mut st, enc, staged, done.collect());
        }
        let b = st.batch.get_or_insert_with(|| Batch {
            enc: gpu.device.create_command_encoder(&Default::default()),
            staged: Vec::new(),
            done: Vec::new(),
            pieces: 0,
        });
        let (staged, done) = record(&mut b.enc);
        b.staged.extend(staged);
        b.done.extend(done);
        b.pieces += 1;
        if b.pieces >= MAX_BATCH {
            s.submit_batch(&mut st)?;
        }
        Ok(())
    }
}

/// The backend on the host's real adapters (see the module documentation).
pub struct WgpuBackend {
    core: Core<WgpuEngine>,
}

impl WgpuBackend {
    /// Every Vulkan adapter of the host; [`BackendError::Unavailable`] if
    /// there is none.
    pub fn new() -> Result<Self> {
        let off = std::env::var(HOST_IMPORT_ENV).is_ok_and(|v| v.trim() == "0");
        Self::with_host_import(!off)
    }

    /// As [`WgpuBackend::new`], choosing whether transfers may use guest RAM
    /// imported as GPU memory (`true`: where the driver can) or always go
    /// through staging buffers (`false`), whatever the environment says.
    pub fn with_host_import(host_import: bool) -> Result<Self> {
        Ok(WgpuBackend {
            core: Core::new(WgpuEngine::new(host_import)?),
        })
    }

    /// Bytes of guest RAM imported as GPU memory so far, all adapters.
    /// Pieces of work executed on the GPUs so far, and the queue
    /// submissions that carried them (fewer where work was batched).
    pub fn work_submitted(&self) -> (u64, u64) {
        let engine = self.core.engine();
        engine
            .gpus
            .iter()
            .filter_map(|g| g.get()?.as_ref().ok())
            .map(|g| {
                let s = &g.submitter;
                (
                    s.pieces.load(Ordering::Relaxed),
                    s.submissions.load(Ordering::Relaxed),
                )
            })
            .fold((0, 0), |(p, q), (a, b)| (p + a, q + b))
    }

    pub fn guest_ram_imported(&self) -> u64 {
        let engine = self.core.engine();
        engine
            .gpus
            .iter()
            .filter_map(|g| g.get()?.as_ref().ok()?.import.as_ref())
            .map(HostImport::imported_bytes)
            .sum()
    }
}

crate::core::delegate_backend!(WgpuBackend);
