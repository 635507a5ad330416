//! The user-mode driver: a small compute API over the §2.6 ioctls.
//!
//! ```no_run
//! use libdxg::{Bind, Buffer, Commands, Gpu, Pipeline};
//! let gpu = Gpu::open()?;
//! let mut buf = Buffer::new(&gpu, 1024)?;
//! buf.write_u32s(0, &[1; 256])?;
//! let double = Pipeline::from_wgsl(&gpu, "@group(0) @binding(0) var<storage, read_write> x: array<u32>;
//!     @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) i: vec3<u32>) { x[i.x] *= 2u; }", "main")?;
//! let mut cmds = Commands::new();
//! cmds.dispatch(&double, [4, 1, 1], &[Bind::rw(0, &buf.all())]);
//! let done = gpu.submit(&cmds)?;
//! gpu.wait(done, None)?;
//! assert_eq!(buf.read_u32s()?[0], 2);
//! # Ok::<(), libdxg::Error>(())
//! ```
//!
//! # Objects
//!
//! - [`Gpu`]: an open `/dev/dxg`, the adapter, a device, a context, a paging
//!   queue, a command buffer allocation and a timeline fence that every
//!   submission signals. Everything else keeps it alive (it is reference
//!   counted), so objects can be dropped in any order.
//! - [`Buffer`]: a `CPU_VISIBLE` allocation, locked once (LOCK2 maps its
//!   pages into the process; the address stays the same until it is
//!   destroyed) and mapped at a GPU VA the host chooses.
//! - [`Pipeline`]: a compute pipeline made by the CREATE_PIPELINE escape
//!   from WGSL or SPIR-V; a shader that does not compile is
//!   [`Error::Compile`] with the compiler's text.
//! - [`Commands`]: a command stream (§8.1) being built; [`Gpu::submit`]
//!   writes it into the command buffer allocation and sends SUBMITCOMMAND.
//! - [`Fence`]: a monitored fence; its value is read from the slot the
//!   driver maps into the process, without a system call.
//! - [`HwQueue`]: a hardware queue on a context of its own, whose progress
//!   fence SUBMITCOMMANDTOHWQUEUE advances.
//!
//! # Coherency (protocol §2.6.3)
//!
//! A buffer's pages and the GPU's copy of it are two memories; the host
//! moves data between them only at LOCK2 (GPU → pages, after the work that
//! writes the allocation completes) and after UNLOCK2 (pages → GPU, before
//! the GPU next uses it). The host writes the pages during LOCK2 and at no
//! other time. So the rules are:
//!
//! 1. CPU writes go into the pages ([`Buffer::write`] and friends), which
//!    marks the buffer CPU-dirty;
//! 2. [`Gpu::submit`] sends UNLOCK2 for every locked buffer the stream
//!    names before SUBMITCOMMAND (the submit does it, so a caller cannot
//!    forget). Only that: while an allocation is locked, its pages are the
//!    CPU's and the host takes them again before each GPU use, so a
//!    buffer left locked would lose what the GPU wrote in between;
//! 3. a submission that may write a buffer (a read-write binding, a COPY,
//!    FILL or TIMESTAMP destination) marks it GPU-written; the next read
//!    sends LOCK2 first, which waits for that work and copies the result
//!    into the pages. Commands added with [`Commands::raw`] are not
//!    tracked: call [`Buffer::invalidate`] before reading what they wrote.
//!
//! A large [`Buffer::write_at`] (at least [`PIECEWISE_MIN`] bytes) does not
//! leave the whole copy to the next submission: it writes the bytes in
//! [`PIECES`] pieces and hands each to the GPU with an UPLOAD command as
//! soon as it is written, so the GPU copies one piece while the CPU writes
//! the next. The pages an UPLOAD took are the GPU's until the next LOCK2, so
//! the next write to the buffer sends UNLOCK2 and LOCK2 first (the LOCK2
//! waits for the GPU to have read them).
//!
//! A view of the pages borrows the buffer mutably, and only those methods
//! send LOCK2 for it, so the host never writes pages that a live Rust
//! reference points to. (Calling [`Dxg::lock2_raw`] by handle on a buffer
//! that is borrowed is the one way around that; do not.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dxvmm_protocol::abi::{D3dddiCreateContextFlags, D3dkmtHandle, WinLuid};
use dxvmm_protocol::cmdstream::{Binding, Command, CommandStream, MAX_STREAM_SIZE};
use dxvmm_protocol::escape::{
    alloc_flags, device_type, CreatePipeline, DxgvAllocationDesc, DxgvHostObjects,
    DxgvUmdAdapterInfo, EscapeRequest, EscapeResponse, ShaderLanguage, MAX_ERROR_TEXT,
};
use dxvmm_protocol::NtStatus;

use crate::calls::PagingQueueInfo;
use crate::dxg::Dxg;
use crate::error::{Error, Result};

/// Page granule of allocations and mappings.
pub const PAGE_SIZE: u64 = 4096;

/// Size of a context's command ring; a stream larger than that gets a ring
/// of its own size (up to the stream limit).
const CMD_RING_SIZE: u64 = 256 * 1024;

/// Streams start at multiples of this in the ring.
const STREAM_ALIGN: u64 = 64;

/// Writes of at least this many bytes go to the GPU in pieces as they are
/// written (see the module documentation). Below it the GPU's copy is
/// short next to a submission's cost.
pub const PIECEWISE_MIN: usize = 4 << 20;

/// How many pieces such a write makes: the GPU's copy of the last one is
/// all that is left once the CPU is done, and each piece costs one
/// submission. `$DXG_UPLOAD_PIECES` overrides it (0: none, the whole write
/// waits for the next submission), for measuring.
pub const PIECES: usize = 8;

fn pieces() -> usize {
    static PIECES_NOW: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PIECES_NOW.get_or_init(|| {
        std::env::var("DXG_UPLOAD_PIECES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(PIECES)
    })
}

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

fn sys_err(call: &'static str) -> Error {
    Error::Sys {
        call,
        source: std::io::Error::last_os_error(),
    }
}

/// Reads a fence slot the host writes.
fn read_slot(slot: usize) -> u64 {
    // SAFETY: `slot` is the 8-byte-aligned address of a fence value the
    // driver mapped read-only into this process when the fence was made;
    // the mapping lives as long as the fence, whose owner outlives every
    // caller. The host updates it concurrently, hence the volatile read of
    // an aligned u64 (a single load on the supported 64-bit targets).
    let v = unsafe { std::ptr::read_volatile(slot as *const u64) };
    std::sync::atomic::fence(Ordering::Acquire);
    u64::from_le(v)
}

// ---------------------------------------------------------------------------
// Gpu
// ---------------------------------------------------------------------------

/// A fence's handle and its mapped slot.
#[derive(Clone, Copy, Debug)]
struct Slot {
    handle: D3dkmtHandle,
    addr: usize,
}

/// A context's command streams, one after another in a CPU-visible
/// allocation. The host reads a stream when it takes the submission, which
/// with asynchronous submission (the driver's default) is after the ioctl
/// returned: so the ring starts over only once the host has taken every
/// submission so far ([`GpuInner::settle`]), once per trip around it.
#[derive(Debug)]
struct CmdRing {
    buf: RawBuf,
    /// Where the next stream goes.
    head: u64,
}

/// One CPU-visible allocation, locked and mapped at a GPU VA: the common
/// part of buffers and command buffers.
#[derive(Debug)]
struct RawBuf {
    handle: D3dkmtHandle,
    va: u64,
    /// Bytes of the mapping (the size rounded up to pages).
    len: u64,
    ptr: usize,
}

#[derive(Debug)]
struct GpuInner {
    dxg: Dxg,
    adapter: D3dkmtHandle,
    luid: WinLuid,
    device: D3dkmtHandle,
    context: D3dkmtHandle,
    paging: PagingQueueInfo,
    timeline: Slot,
    /// The last timeline value a submission signals.
    submitted: AtomicU64,
    cmd: Mutex<Option<CmdRing>>,
    info: DxgvUmdAdapterInfo,
}

impl GpuInner {
    fn bare(dxg: Dxg) -> GpuInner {
        GpuInner {
            dxg,
            adapter: D3dkmtHandle::NULL,
            luid: WinLuid::default(),
            device: D3dkmtHandle::NULL,
            context: D3dkmtHandle::NULL,
            paging: PagingQueueInfo {
                handle: D3dkmtHandle::NULL,
                sync_object: D3dkmtHandle::NULL,
                fence_cpu_va: 0,
            },
            timeline: Slot {
                handle: D3dkmtHandle::NULL,
                addr: 0,
            },
            submitted: AtomicU64::new(0),
            cmd: Mutex::new(None),
            info: DxgvUmdAdapterInfo::default(),
        }
    }

    /// A locked, mapped, CPU-visible allocation of `size` bytes.
    fn raw_buf(&self, size: u64) -> Result<RawBuf> {
        let len = round_up(size.max(4), PAGE_SIZE)
            .ok_or_else(|| Error::Range(format!("buffer size {size} overflows")))?;
        let desc = DxgvAllocationDesc {
            size: round_up(size.max(4), 4).unwrap_or(len),
            alignment: 0,
            flags: alloc_flags::CPU_VISIBLE,
        };
        let handle = self.dxg.create_allocations_raw(self.device, &[desc])?[0];
        let mut raw = RawBuf {
            handle,
            va: 0,
            len,
            ptr: 0,
        };
        match self.finish_raw_buf(&mut raw) {
            Ok(()) => Ok(raw),
            Err(e) => {
                self.drop_raw_buf(&raw);
                Err(e)
            }
        }
    }

    fn finish_raw_buf(&self, raw: &mut RawBuf) -> Result<()> {
        let addr = self.dxg.lock2_raw(self.device, raw.handle)?;
        if addr % PAGE_SIZE != 0 {
            return Err(Error::BadAnswer {
                ioctl: "LX_DXLOCK2",
                what: format!("address {addr:#x} is not page-aligned"),
            });
        }
        raw.ptr = usize::try_from(addr).map_err(|_| Error::BadAnswer {
            ioctl: "LX_DXLOCK2",
            what: format!("address {addr:#x} does not fit a pointer"),
        })?;
        let mapped = self.dxg.map_gpu_va_raw(
            self.paging.handle,
            raw.handle,
            0,
            0,
            0,
            0,
            raw.len / PAGE_SIZE,
        )?;
        raw.va = mapped.va;
        self.wait_paging(mapped.paging_fence_value)
    }

    /// Waits for the paging fence to reach `value` (a mapping is in effect
    /// then); most hosts map at once and answer 0.
    fn wait_paging(&self, value: u64) -> Result<()> {
        if value == 0 || self.paging.sync_object.is_null() {
            return Ok(());
        }
        if self.paging.fence_cpu_va != 0 && read_slot(self.paging.fence_cpu_va as usize) >= value {
            return Ok(());
        }
        self.dxg
            .wait_from_cpu_raw(self.device, &[self.paging.sync_object], &[value], false, 0)
    }

    fn drop_raw_buf(&self, raw: &RawBuf) {
        // The pages stay mapped in the process until the allocation is
        // destroyed; the driver unmaps them then.
        if raw.va != 0 {
            let _ = self.dxg.free_gpu_va_raw(self.device, raw.va, raw.len);
        }
        let _ = self.dxg.destroy_allocations_raw(self.device, &[raw.handle]);
    }

    fn fence(&self, initial: u64) -> Result<Slot> {
        let info = self.dxg.create_monitored_fence_raw(self.device, initial)?;
        if info.cpu_va == 0 || info.cpu_va % 8 != 0 {
            let _ = self.dxg.destroy_sync_object_raw(info.handle);
            return Err(Error::BadAnswer {
                ioctl: "LX_DXCREATESYNCHRONIZATIONOBJECT",
                what: format!("fence value address {:#x}", info.cpu_va),
            });
        }
        Ok(Slot {
            handle: info.handle,
            addr: info.cpu_va as usize,
        })
    }

    /// Waits until the fence in `slot` reaches `value`: at once when its
    /// mapped value says so, else WAITFORSYNCHRONIZATIONOBJECTFROMCPU
    /// (blocking without a timeout; with one, its eventfd form and poll).
    fn wait_slot(&self, slot: Slot, value: u64, timeout: Option<Duration>) -> Result<()> {
        if read_slot(slot.addr) >= value {
            return Ok(());
        }
        let Some(timeout) = timeout else {
            return self
                .dxg
                .wait_from_cpu_raw(self.device, &[slot.handle], &[value], false, 0);
        };
        let deadline = Instant::now() + timeout;
        let timed_out = || Error::Timeout {
            fence: slot.handle.0,
            value,
            current: read_slot(slot.addr),
            timeout,
        };
        // SAFETY: eventfd has no memory-safety preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(sys_err("eventfd"));
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let raw_fd = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let asynced =
            self.dxg
                .wait_from_cpu_raw(self.device, &[slot.handle], &[value], false, raw_fd as u64);
        if let Err(e) = asynced {
            // A driver without the eventfd form: watch the slot instead.
            if e.errno().is_none() || read_slot(slot.addr) >= value {
                return if read_slot(slot.addr) >= value {
                    Ok(())
                } else {
                    Err(e)
                };
            }
            while read_slot(slot.addr) < value {
                if Instant::now() >= deadline {
                    return Err(timed_out());
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            return Ok(());
        }
        loop {
            if read_slot(slot.addr) >= value {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            let mut pfd = libc::pollfd {
                fd: raw_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return Err(sys_err("poll"));
            }
            if rc > 0 {
                // Signalled: satisfied, or the fence can no longer be (it
                // was destroyed); the slot tells which.
                return if read_slot(slot.addr) >= value {
                    Ok(())
                } else {
                    Err(Error::Host {
                        what: "fence wait ended without the value",
                        status: NtStatus::CANCELLED,
                    })
                };
            }
        }
    }

    fn escape(&self, request: &EscapeRequest) -> Result<EscapeResponse> {
        let mut buf = request.encode();
        self.dxg.escape_raw(self.adapter, self.device, &mut buf)?;
        EscapeResponse::decode(&buf).map_err(|source| Error::Decode {
            ioctl: "LX_DXESCAPE",
            source,
        })
    }

    /// Waits until the host has taken every submission of this process so
    /// far and returns the first failure among them. The driver makes any
    /// call but a submission wait for that; this one is a CPU wait for a
    /// value the timeline already has.
    fn settle(&self) -> Result<()> {
        self.dxg
            .wait_from_cpu_raw(self.device, &[self.timeline.handle], &[0], false, 0)
    }

    /// Sends an UPLOAD of `[va, va + len)`, on its own and signalling
    /// nothing: the GPU starts copying those bytes of the pages now.
    fn upload(&self, va: u64, len: u64) -> Result<()> {
        let mut cmd = self.cmd.lock().unwrap_or_else(|p| p.into_inner());
        let stream = CommandStream {
            commands: vec![Command::Upload { va, size: len }],
        }
        .encode();
        self.with_stream(&mut cmd, &stream, |va, len| {
            self.dxg.submit_command_raw(self.context, va, len)
        })
    }

    /// Writes `stream` into the command ring (a larger one if it does not
    /// fit) and hands it to `send` with its GPU VA and length.
    fn with_stream(
        &self,
        cmd: &mut MutexGuard<'_, Option<CmdRing>>,
        stream: &[u8],
        send: impl FnOnce(u64, u32) -> Result<()>,
    ) -> Result<()> {
        let len = stream.len() as u64;
        if cmd.as_ref().is_none_or(|r| r.buf.len < len) {
            // Submissions in flight may still read the old ring.
            self.settle()?;
            let new = self.raw_buf(len.max(CMD_RING_SIZE))?;
            if let Some(old) = cmd.replace(CmdRing { buf: new, head: 0 }) {
                self.drop_raw_buf(&old.buf);
            }
        }
        let Some(ring) = cmd.as_mut() else {
            return Err(Error::Range("no command buffer".into()));
        };
        if ring.head + len > ring.buf.len {
            self.settle()?;
            ring.head = 0;
        }
        let at = ring.head;
        // SAFETY: `ring.buf.ptr` maps `ring.buf.len` >= `at + len` bytes of
        // the ring's pages, which only this code writes (under the lock);
        // the host reads a stream only until it has taken its submission,
        // and no stream it has not taken lies in [at, at + len): the ring
        // restarts only after settle().
        unsafe {
            std::ptr::copy_nonoverlapping(
                stream.as_ptr(),
                (ring.buf.ptr as *mut u8).add(at as usize),
                stream.len(),
            );
        }
        ring.head = round_up(at + len, STREAM_ALIGN).unwrap_or(u64::MAX);
        send(ring.buf.va + at, stream.len() as u32)
    }
}

impl Drop for GpuInner {
    fn drop(&mut self) {
        let cmd = self
            .cmd
            .get_mut()
            .map(Option::take)
            .unwrap_or_else(|p| p.into_inner().take());
        if let Some(ring) = cmd {
            self.drop_raw_buf(&ring.buf);
        }
        if !self.timeline.handle.is_null() {
            let _ = self.dxg.destroy_sync_object_raw(self.timeline.handle);
        }
        if !self.context.is_null() {
            let _ = self.dxg.destroy_context_raw(self.context);
        }
        if !self.paging.handle.is_null() {
            let _ = self.dxg.destroy_paging_queue_raw(self.paging.handle);
        }
        if !self.device.is_null() {
            let _ = self.dxg.destroy_device_raw(self.device);
        }
        if !self.adapter.is_null() {
            let _ = self.dxg.close_adapter_raw(self.adapter);
        }
    }
}

/// The GPU as a compute device: see the module documentation.
#[derive(Clone, Debug)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

impl Gpu {
    /// The first adapter (ENUMADAPTERS3 order) of a new `/dev/dxg` file.
    pub fn open() -> Result<Gpu> {
        Gpu::open_on(Dxg::open()?, None)
    }

    /// The adapter `luid` names.
    pub fn open_luid(luid: WinLuid) -> Result<Gpu> {
        Gpu::open_on(Dxg::open()?, Some(luid))
    }

    /// On an open file, the adapter `luid` names or the first.
    pub fn open_on(dxg: Dxg, luid: Option<WinLuid>) -> Result<Gpu> {
        let luid = match luid {
            Some(l) => l,
            None => {
                let list = dxg.enum_adapters3_raw(
                    dxvmm_protocol::abi::D3dkmtEnumAdaptersFilter::INCLUDE_COMPUTE_ONLY,
                )?;
                for a in &list {
                    let _ = dxg.close_adapter_raw(a.adapter_handle);
                }
                list.first()
                    .map(|a| a.adapter_luid)
                    .ok_or(Error::BadAnswer {
                        ioctl: "LX_DXENUMADAPTERS3",
                        what: "no adapters".into(),
                    })?
            }
        };
        let mut g = GpuInner::bare(dxg);
        g.luid = luid;
        g.adapter = g.dxg.open_adapter_from_luid_raw(luid)?;
        g.info = g.dxg.query_umd_info(g.adapter)?;
        g.device = g.dxg.create_device_raw(g.adapter, Default::default())?;
        g.paging = g.dxg.create_paging_queue_raw(g.device)?;
        g.context = g
            .dxg
            .create_context_raw(g.device, D3dddiCreateContextFlags::default())?;
        g.timeline = g.fence(0)?;
        let first = g.raw_buf(CMD_RING_SIZE)?;
        *g.cmd.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(CmdRing {
            buf: first,
            head: 0,
        });
        Ok(Gpu { inner: Arc::new(g) })
    }

    pub fn dxg(&self) -> &Dxg {
        &self.inner.dxg
    }
    pub fn adapter(&self) -> D3dkmtHandle {
        self.inner.adapter
    }
    pub fn luid(&self) -> WinLuid {
        self.inner.luid
    }
    pub fn device(&self) -> D3dkmtHandle {
        self.inner.device
    }
    pub fn context(&self) -> D3dkmtHandle {
        self.inner.context
    }
    pub fn paging_queue(&self) -> D3dkmtHandle {
        self.inner.paging.handle
    }
    /// The host GPU's description and limits.
    pub fn info(&self) -> &DxgvUmdAdapterInfo {
        &self.inner.info
    }
    /// Live host objects of the whole VM.
    pub fn host_objects(&self) -> Result<DxgvHostObjects> {
        self.inner.dxg.query_host_objects(self.inner.adapter)
    }

    /// Encodes `cmds`, followed by a signal of the timeline fence, into
    /// the command buffer and submits it to the context. Returns the
    /// timeline value that says it completed ([`Gpu::wait`]).
    ///
    /// CPU-dirty buffers the stream names are unlocked first (module
    /// documentation); a success means queued, not done, and not even
    /// accepted: the driver sends submissions without waiting, so one the
    /// host refuses fails the next call ([`Gpu::wait`], [`Gpu::sync`], ...).
    pub fn submit(&self, cmds: &Commands) -> Result<u64> {
        let g = &*self.inner;
        let mut cmd = g.cmd.lock().unwrap_or_else(|p| p.into_inner());
        cmds.flush_buffers()?;
        let value = g.submitted.load(Ordering::Relaxed) + 1;
        let stream = cmds.encode_with(Some(Command::FenceSignal {
            sync_object: g.timeline.handle,
            value,
        }))?;
        g.with_stream(&mut cmd, &stream, |va, len| {
            g.dxg.submit_command_raw(g.context, va, len)
        })?;
        g.submitted.store(value, Ordering::Relaxed);
        cmds.mark_written();
        Ok(value)
    }

    /// Submits `stream` bytes as they are (no timeline signal, no buffer
    /// tracking) and waits until the host has taken it ([`Gpu::sync`]), so
    /// that its failure is this call's: for tests that send malformed
    /// streams.
    pub fn submit_bytes(&self, stream: &[u8]) -> Result<()> {
        let g = &*self.inner;
        let mut cmd = g.cmd.lock().unwrap_or_else(|p| p.into_inner());
        g.with_stream(&mut cmd, stream, |va, len| {
            g.dxg.submit_command_raw(g.context, va, len)
        })?;
        g.settle()
    }

    /// Waits until the host has taken every submission so far and returns
    /// the first failure among them not yet reported. The driver sends
    /// submissions without waiting (module parameter `async_submit`), so a
    /// submission the host refuses fails the process's next call instead
    /// (docs/guest-kernel.md); this is such a call.
    pub fn sync(&self) -> Result<()> {
        self.inner.settle()
    }

    /// The GPU VA of the command ring (where [`Gpu::submit_bytes`] puts a
    /// stream, from its start), for tests.
    pub fn command_buffer_va(&self) -> u64 {
        let cmd = self.inner.cmd.lock().unwrap_or_else(|p| p.into_inner());
        cmd.as_ref().map_or(0, |r| r.buf.va)
    }

    /// Waits until submission `value` (from [`Gpu::submit`]) completed.
    pub fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<()> {
        self.inner.wait_slot(self.inner.timeline, value, timeout)
    }

    /// Waits for everything submitted so far.
    pub fn wait_idle(&self, timeout: Option<Duration>) -> Result<()> {
        self.wait(self.inner.submitted.load(Ordering::Relaxed), timeout)
    }

    /// The last completed timeline value (no system call).
    pub fn completed(&self) -> u64 {
        read_slot(self.inner.timeline.addr)
    }

    /// SIGNALSYNCHRONIZATIONOBJECTFROMGPU: `fence` to `value` after this
    /// context's earlier work.
    pub fn signal_from_gpu(&self, fence: &Fence, value: u64) -> Result<()> {
        self.inner
            .dxg
            .signal_from_gpu_raw(self.inner.context, &[fence.slot.handle], &[value])
    }

    /// WAITFORSYNCHRONIZATIONOBJECTFROMGPU: this context's later work waits
    /// for `fence` to reach `value`.
    pub fn wait_from_gpu(&self, fence: &Fence, value: u64) -> Result<()> {
        self.inner
            .dxg
            .wait_from_gpu_raw(self.inner.context, &[fence.slot.handle], &[value])
    }
}

// ---------------------------------------------------------------------------
// Buffers
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct BufState {
    /// Locked (LOCK2 sent, no UNLOCK2 since).
    locked: bool,
    /// The CPU may have written the pages since the last UNLOCK2.
    cpu_dirty: bool,
    /// A submission may have written the allocation since the last LOCK2.
    gpu_written: bool,
    /// UPLOAD commands took some of the pages since the last LOCK2: the
    /// CPU may not write them again before the next.
    handed: bool,
}

#[derive(Debug)]
struct BufShared {
    gpu: Arc<GpuInner>,
    raw: RawBuf,
    size: u64,
    state: Mutex<BufState>,
}

impl BufShared {
    fn state(&self) -> MutexGuard<'_, BufState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// UNLOCK2 when locked: while an allocation is locked its pages are
    /// the CPU's, and the host takes them again at every GPU use.
    fn flush(&self) -> Result<()> {
        let mut s = self.state();
        if s.locked {
            self.gpu.dxg.unlock2_raw(self.gpu.device, self.raw.handle)?;
            s.locked = false;
            s.cpu_dirty = false;
        }
        Ok(())
    }

    /// LOCK2 when the pages may be stale.
    fn make_current(&self) -> Result<()> {
        let mut s = self.state();
        if !s.locked || s.gpu_written {
            let addr = self.gpu.dxg.lock2_raw(self.gpu.device, self.raw.handle)?;
            if addr != self.raw.ptr as u64 {
                return Err(Error::BadAnswer {
                    ioctl: "LX_DXLOCK2",
                    what: format!(
                        "address {addr:#x}, the allocation was at {:#x}",
                        self.raw.ptr
                    ),
                });
            }
            s.locked = true;
            s.gpu_written = false;
            s.handed = false;
        }
        Ok(())
    }

    /// As [`BufShared::make_current`], for a write: pages an UPLOAD took
    /// come back through UNLOCK2 and LOCK2.
    fn make_writable(&self) -> Result<()> {
        if self.state().handed {
            self.flush()?;
        }
        self.make_current()?;
        self.state().cpu_dirty = true;
        Ok(())
    }
}

impl Drop for BufShared {
    fn drop(&mut self) {
        self.gpu.drop_raw_buf(&self.raw);
    }
}

/// A CPU-visible GPU buffer: see the module documentation for when data
/// moves between its pages and the GPU.
#[derive(Debug)]
pub struct Buffer {
    shared: Arc<BufShared>,
}

/// A byte range of a buffer, for commands. Keeps the buffer's allocation
/// alive while a [`Commands`] holds it.
#[derive(Clone, Debug)]
pub struct BufRange {
    buf: Arc<BufShared>,
    offset: u64,
    size: u64,
}

impl BufRange {
    /// The GPU VA of the range's first byte.
    pub fn va(&self) -> u64 {
        self.buf.raw.va + self.offset
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Buffer {
    /// A buffer of `size` bytes (rounded up to a multiple of 4 for the
    /// GPU), zeroed.
    pub fn new(gpu: &Gpu, size: u64) -> Result<Buffer> {
        if size == 0 {
            return Err(Error::Range("a buffer of 0 bytes".into()));
        }
        let raw = gpu.inner.raw_buf(size)?;
        Ok(Buffer {
            shared: Arc::new(BufShared {
                gpu: gpu.inner.clone(),
                raw,
                size,
                state: Mutex::new(BufState {
                    locked: true,
                    ..Default::default()
                }),
            }),
        })
    }

    /// A buffer holding `data`.
    pub fn with_data(gpu: &Gpu, data: &[u8]) -> Result<Buffer> {
        let mut b = Buffer::new(gpu, data.len() as u64)?;
        b.write_at(0, data)?;
        Ok(b)
    }

    pub fn size(&self) -> u64 {
        self.shared.size
    }
    pub fn va(&self) -> u64 {
        self.shared.raw.va
    }
    pub fn handle(&self) -> D3dkmtHandle {
        self.shared.raw.handle
    }
    /// Where the pages are mapped in this process.
    pub fn cpu_addr(&self) -> usize {
        self.shared.raw.ptr
    }

    /// `size` bytes from `offset`, checked against the buffer.
    pub fn range(&self, offset: u64, size: u64) -> Result<BufRange> {
        match offset.checked_add(size) {
            Some(end) if size > 0 && end <= self.size() => Ok(BufRange {
                buf: self.shared.clone(),
                offset,
                size,
            }),
            _ => Err(Error::Range(format!(
                "range {offset}+{size} outside a buffer of {} bytes",
                self.size()
            ))),
        }
    }

    /// The whole buffer (its size rounded up to 4 bytes, what the GPU sees).
    pub fn all(&self) -> BufRange {
        BufRange {
            buf: self.shared.clone(),
            offset: 0,
            size: round_up(self.size(), 4).unwrap_or(self.size()),
        }
    }

    /// A range at a GPU VA the buffer does not cover (for tests of the
    /// host's checks): `va` relative to the buffer's start, unchecked.
    pub fn unchecked_range(&self, offset: u64, size: u64) -> BufRange {
        BufRange {
            buf: self.shared.clone(),
            offset,
            size,
        }
    }

    /// The next read sends LOCK2 (after commands the buffer cannot track).
    pub fn invalidate(&self) {
        self.shared.state().gpu_written = true;
    }

    /// The pages, current: LOCK2 first if the GPU may have written them
    /// (which waits for that work).
    pub fn read(&mut self) -> Result<&[u8]> {
        self.shared.make_current()?;
        // SAFETY: `ptr` maps the allocation's pages (at least `size` bytes)
        // for as long as the allocation lives, which `self` ensures; the
        // host writes them only during LOCK2, which for this buffer only
        // `read`/`write` send, and they need `&mut self`, so not while the
        // returned borrow lives. u8 is valid for any bytes.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr(), self.size() as usize) })
    }

    /// The pages for writing (current first, as [`Buffer::read`]); the
    /// next submit that names the buffer sends UNLOCK2.
    pub fn write(&mut self) -> Result<&mut [u8]> {
        self.shared.make_writable()?;
        // SAFETY: as in `read`; `&mut self` makes this the only view.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.size() as usize) })
    }

    fn ptr(&self) -> *mut u8 {
        self.shared.raw.ptr as *mut u8
    }

    /// Copies `data` into the buffer at `offset`.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let size = self.size();
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= size)
            .ok_or_else(|| {
                Error::Range(format!(
                    "{} bytes at {offset} outside a buffer of {size} bytes",
                    data.len()
                ))
            })?;
        // A GPU takes the pages by DMA: write around the cache. A CPU
        // adapter (lavapipe) reads them with the CPU, from the cache when
        // they are still there (an 8 MiB upload lost a fifth streamed).
        let cpu_adapter = self.shared.gpu.info.device_type == device_type::CPU;
        let copy = if cpu_adapter {
            <[u8]>::copy_from_slice
        } else {
            crate::stream::copy
        };
        let shared = self.shared.clone();
        let (gpu, va) = (&shared.gpu, shared.raw.va);
        let dst = &mut self.write()?[offset as usize..end as usize];
        if data.len() < PIECEWISE_MIN || pieces() == 0 {
            copy(dst, data);
            return Ok(());
        }
        let piece = data
            .len()
            .div_ceil(pieces())
            .next_multiple_of(PAGE_SIZE as usize);
        // Before the first UPLOAD: should one fail, those before it still
        // took their pages.
        shared.state().handed = true;
        for (i, (d, s)) in dst.chunks_mut(piece).zip(data.chunks(piece)).enumerate() {
            copy(d, s);
            // UPLOAD's range is 4-byte aligned: widened to that, it takes
            // a few neighbouring bytes as they are, which is harmless.
            let start = (offset + (i * piece) as u64) / 4 * 4;
            let stop = (offset + (i * piece + s.len()) as u64).next_multiple_of(4);
            gpu.upload(va + start, stop - start)?;
        }
        Ok(())
    }

    pub fn write_u32s(&mut self, offset: u64, v: &[u32]) -> Result<()> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.write_at(offset, &bytes)
    }

    pub fn write_f32s(&mut self, offset: u64, v: &[f32]) -> Result<()> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.write_at(offset, &bytes)
    }

    /// The buffer as little-endian u32s.
    pub fn read_u32s(&mut self) -> Result<Vec<u32>> {
        Ok(self
            .read()?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn read_f32s(&mut self) -> Result<Vec<f32>> {
        Ok(self.read_u32s()?.into_iter().map(f32::from_bits).collect())
    }
}

// ---------------------------------------------------------------------------
// Pipelines
// ---------------------------------------------------------------------------

/// A compute pipeline on the host; DESTROY_PIPELINE on drop.
#[derive(Debug)]
pub struct Pipeline {
    gpu: Arc<GpuInner>,
    id: u32,
}

impl Pipeline {
    /// Compiles WGSL `source` with entry point `entry`.
    pub fn from_wgsl(gpu: &Gpu, source: &str, entry: &str) -> Result<Pipeline> {
        Pipeline::create(gpu, ShaderLanguage::Wgsl, source.as_bytes().to_vec(), entry)
    }

    /// Creates a pipeline from a SPIR-V module (bytes, a multiple of 4).
    pub fn from_spirv(gpu: &Gpu, module: &[u8], entry: &str) -> Result<Pipeline> {
        if module.is_empty() || !module.len().is_multiple_of(4) {
            return Err(Error::Range(format!(
                "SPIR-V of {} bytes (not a non-zero multiple of 4)",
                module.len()
            )));
        }
        Pipeline::create(gpu, ShaderLanguage::SpirV, module.to_vec(), entry)
    }

    fn create(
        gpu: &Gpu,
        language: ShaderLanguage,
        source: Vec<u8>,
        entry: &str,
    ) -> Result<Pipeline> {
        let resp = gpu
            .inner
            .escape(&EscapeRequest::CreatePipeline(CreatePipeline {
                language,
                source,
                entry_point: entry.to_owned(),
                error_capacity: MAX_ERROR_TEXT,
            }))?;
        if !resp.status.is_success() {
            return Err(Error::Compile {
                status: resp.status,
                message: resp.error,
            });
        }
        if resp.pipeline == 0 {
            return Err(Error::BadAnswer {
                ioctl: "LX_DXESCAPE",
                what: "CREATE_PIPELINE succeeded with pipeline 0".into(),
            });
        }
        Ok(Pipeline {
            gpu: gpu.inner.clone(),
            id: resp.pipeline,
        })
    }

    /// The id DISPATCH names.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self
            .gpu
            .escape(&EscapeRequest::DestroyPipeline { pipeline: self.id });
    }
}

// ---------------------------------------------------------------------------
// Fences
// ---------------------------------------------------------------------------

/// A monitored fence of the GPU's device; destroyed on drop.
#[derive(Debug)]
pub struct Fence {
    gpu: Arc<GpuInner>,
    slot: Slot,
}

impl Fence {
    /// A fence starting at `initial`.
    pub fn new(gpu: &Gpu, initial: u64) -> Result<Fence> {
        Ok(Fence {
            gpu: gpu.inner.clone(),
            slot: gpu.inner.fence(initial)?,
        })
    }

    pub fn handle(&self) -> D3dkmtHandle {
        self.slot.handle
    }

    /// The value the host last wrote (no system call).
    pub fn value(&self) -> u64 {
        read_slot(self.slot.addr)
    }

    /// SIGNALSYNCHRONIZATIONOBJECTFROMCPU: the fence to `value` now.
    pub fn signal(&self, value: u64) -> Result<()> {
        self.gpu
            .dxg
            .signal_from_cpu_raw(self.gpu.device, &[self.slot.handle], &[value])
    }

    /// Waits until the fence reaches `value`; `None` waits for ever.
    pub fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<()> {
        self.gpu.wait_slot(self.slot, value, timeout)
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        let _ = self.gpu.dxg.destroy_sync_object_raw(self.slot.handle);
    }
}

// ---------------------------------------------------------------------------
// Hardware queues
// ---------------------------------------------------------------------------

/// A hardware queue on a context of its own, with its own command buffer.
#[derive(Debug)]
pub struct HwQueue {
    gpu: Arc<GpuInner>,
    context: D3dkmtHandle,
    queue: D3dkmtHandle,
    progress: Slot,
    submitted: AtomicU64,
    cmd: Mutex<Option<CmdRing>>,
}

impl HwQueue {
    pub fn new(gpu: &Gpu) -> Result<HwQueue> {
        let g = &gpu.inner;
        let context = g.dxg.create_context_raw(
            g.device,
            D3dddiCreateContextFlags::default().with(D3dddiCreateContextFlags::HW_QUEUE_SUPPORTED),
        )?;
        let mut q = HwQueue {
            gpu: g.clone(),
            context,
            queue: D3dkmtHandle::NULL,
            progress: Slot {
                handle: D3dkmtHandle::NULL,
                addr: 0,
            },
            submitted: AtomicU64::new(0),
            cmd: Mutex::new(None),
        };
        let info = g.dxg.create_hw_queue_raw(context)?;
        q.queue = info.handle;
        if info.progress_fence_cpu_va == 0 || info.progress_fence_cpu_va % 8 != 0 {
            return Err(Error::BadAnswer {
                ioctl: "LX_DXCREATEHWQUEUE",
                what: format!("progress fence address {:#x}", info.progress_fence_cpu_va),
            });
        }
        q.progress = Slot {
            handle: info.progress_fence,
            addr: info.progress_fence_cpu_va as usize,
        };
        q.submitted
            .store(read_slot(q.progress.addr), Ordering::Relaxed);
        *q.cmd.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(CmdRing {
            buf: g.raw_buf(CMD_RING_SIZE)?,
            head: 0,
        });
        Ok(q)
    }

    pub fn handle(&self) -> D3dkmtHandle {
        self.queue
    }
    pub fn context(&self) -> D3dkmtHandle {
        self.context
    }
    pub fn progress_fence(&self) -> D3dkmtHandle {
        self.progress.handle
    }

    /// The progress fence's value (no system call).
    pub fn progress(&self) -> u64 {
        read_slot(self.progress.addr)
    }

    /// SUBMITCOMMANDTOHWQUEUE of `cmds`; returns the progress value that
    /// says it completed.
    pub fn submit(&self, cmds: &Commands) -> Result<u64> {
        let g = &*self.gpu;
        let mut cmd = self.cmd.lock().unwrap_or_else(|p| p.into_inner());
        cmds.flush_buffers()?;
        let value = self.submitted.load(Ordering::Relaxed) + 1;
        let stream = cmds.encode_with(None)?;
        g.with_stream(&mut cmd, &stream, |va, len| {
            g.dxg.submit_to_hw_queue_raw(self.queue, value, va, len)
        })?;
        self.submitted.store(value, Ordering::Relaxed);
        cmds.mark_written();
        Ok(value)
    }

    pub fn wait(&self, value: u64, timeout: Option<Duration>) -> Result<()> {
        self.gpu.wait_slot(self.progress, value, timeout)
    }
}

impl Drop for HwQueue {
    fn drop(&mut self) {
        let cmd = self
            .cmd
            .get_mut()
            .map(Option::take)
            .unwrap_or_else(|p| p.into_inner().take());
        if let Some(ring) = cmd {
            self.gpu.drop_raw_buf(&ring.buf);
        }
        if !self.queue.is_null() {
            let _ = self.gpu.dxg.destroy_hw_queue_raw(self.queue);
        }
        let _ = self.gpu.dxg.destroy_context_raw(self.context);
    }
}

// ---------------------------------------------------------------------------
// Command streams
// ---------------------------------------------------------------------------

/// A storage buffer binding of a dispatch.
#[derive(Clone, Debug)]
pub struct Bind<'a> {
    pub slot: u32,
    pub range: &'a BufRange,
    pub read_only: bool,
}

impl<'a> Bind<'a> {
    /// A `var<storage, read_write>` binding.
    pub fn rw(slot: u32, range: &'a BufRange) -> Bind<'a> {
        Bind {
            slot,
            range,
            read_only: false,
        }
    }
    /// A `var<storage, read>` binding.
    pub fn ro(slot: u32, range: &'a BufRange) -> Bind<'a> {
        Bind {
            slot,
            range,
            read_only: true,
        }
    }
}

/// A command stream being built (protocol §8.1). Ranges keep their
/// buffers alive until the stream is dropped.
#[derive(Clone, Debug, Default)]
pub struct Commands {
    cmds: Vec<Command>,
    /// Buffers the stream names, and whether the GPU may write them.
    uses: Vec<(Arc<BufShared>, bool)>,
}

impl Commands {
    pub fn new() -> Commands {
        Commands::default()
    }

    pub fn len(&self) -> usize {
        self.cmds.len()
    }
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }
    pub fn commands(&self) -> &[Command] {
        &self.cmds
    }

    fn uses(&mut self, r: &BufRange, writes: bool) {
        match self.uses.iter_mut().find(|(b, _)| Arc::ptr_eq(b, &r.buf)) {
            Some((_, w)) => *w |= writes,
            None => self.uses.push((r.buf.clone(), writes)),
        }
    }

    /// COPY of `src` to `dst` (same size).
    pub fn copy(&mut self, src: &BufRange, dst: &BufRange) -> Result<&mut Commands> {
        if src.size != dst.size {
            return Err(Error::Range(format!(
                "copy of {} bytes into {} bytes",
                src.size, dst.size
            )));
        }
        self.uses(src, false);
        self.uses(dst, true);
        self.cmds.push(Command::Copy {
            src_va: src.va(),
            dst_va: dst.va(),
            size: src.size,
        });
        Ok(self)
    }

    /// FILL of `dst` with the 32-bit `value`.
    pub fn fill(&mut self, dst: &BufRange, value: u32) -> &mut Commands {
        self.uses(dst, true);
        self.cmds.push(Command::Fill {
            dst_va: dst.va(),
            size: dst.size,
            value,
        });
        self
    }

    /// DISPATCH of `pipeline` over `groups` workgroups.
    pub fn dispatch(
        &mut self,
        pipeline: &Pipeline,
        groups: [u32; 3],
        bindings: &[Bind<'_>],
    ) -> &mut Commands {
        for b in bindings {
            self.uses(b.range, !b.read_only);
        }
        self.cmds.push(Command::Dispatch {
            pipeline: pipeline.id,
            group_counts: groups,
            bindings: bindings
                .iter()
                .map(|b| Binding {
                    binding: b.slot,
                    read_only: b.read_only,
                    va: b.range.va(),
                    size: b.range.size,
                })
                .collect(),
        });
        self
    }

    /// TIMESTAMP: the GPU time in ns (u64) at the start of `dst`.
    pub fn timestamp(&mut self, dst: &BufRange) -> Result<&mut Commands> {
        if dst.size < 8 || !dst.va().is_multiple_of(8) {
            return Err(Error::Range(
                "a timestamp needs 8 bytes at an 8-byte-aligned address".into(),
            ));
        }
        self.uses(dst, true);
        self.cmds.push(Command::Timestamp { dst_va: dst.va() });
        Ok(self)
    }

    /// FENCE_SIGNAL: `fence` to `value` when the commands before complete.
    pub fn signal(&mut self, fence: &Fence, value: u64) -> &mut Commands {
        self.cmds.push(Command::FenceSignal {
            sync_object: fence.slot.handle,
            value,
        });
        self
    }

    /// FENCE_WAIT: later commands wait until `fence` reaches `value`.
    pub fn wait(&mut self, fence: &Fence, value: u64) -> &mut Commands {
        self.cmds.push(Command::FenceWait {
            sync_object: fence.slot.handle,
            value,
        });
        self
    }

    /// Any command, as is (not tracked for coherency).
    pub fn raw(&mut self, cmd: Command) -> &mut Commands {
        self.cmds.push(cmd);
        self
    }

    /// The encoded stream, with `extra` at the end.
    fn encode_with(&self, extra: Option<Command>) -> Result<Vec<u8>> {
        let mut commands = self.cmds.clone();
        commands.extend(extra);
        let bytes = CommandStream { commands }.encode();
        if bytes.len() > MAX_STREAM_SIZE {
            return Err(Error::Range(format!(
                "a stream of {} bytes (at most {MAX_STREAM_SIZE})",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// The encoded stream.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.encode_with(None)
    }

    fn flush_buffers(&self) -> Result<()> {
        for (b, _) in &self.uses {
            b.flush()?;
        }
        Ok(())
    }

    fn mark_written(&self) {
        for (b, writes) in &self.uses {
            if *writes {
                b.state().gpu_written = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dxvmm_protocol::cmdstream::DXGV_CMDSTREAM_MAGIC;

    #[test]
    fn streams_encode_what_the_host_decodes_and_end_with_the_extra_command() {
        let mut c = Commands::new();
        c.raw(Command::Fill {
            dst_va: 1 << 32,
            size: 64,
            value: 7,
        })
        .raw(Command::Copy {
            src_va: 1 << 32,
            dst_va: (1 << 32) + 4096,
            size: 64,
        });
        assert_eq!(c.len(), 2);
        let signal = Command::FenceSignal {
            sync_object: D3dkmtHandle(0x40),
            value: 3,
        };
        let bytes = c.encode_with(Some(signal.clone())).unwrap();
        assert_eq!(&bytes[..4], &DXGV_CMDSTREAM_MAGIC.to_le_bytes());
        let back = CommandStream::decode(&bytes).unwrap();
        assert_eq!(back.commands.len(), 3);
        assert_eq!(back.commands[2], signal);
        assert_eq!(&back.commands[..2], c.commands());
    }

    #[test]
    fn streams_over_the_limit_are_refused_before_the_driver() {
        let mut c = Commands::new();
        for _ in 0..(MAX_STREAM_SIZE / 32 + 1) {
            c.raw(Command::Fill {
                dst_va: 1 << 32,
                size: 4,
                value: 0,
            });
        }
        assert!(matches!(c.encode(), Err(Error::Range(_))));
        assert!(Commands::new().is_empty());
    }

    #[test]
    fn rounding_does_not_overflow() {
        assert_eq!(round_up(1, PAGE_SIZE), Some(PAGE_SIZE));
        assert_eq!(round_up(PAGE_SIZE, PAGE_SIZE), Some(PAGE_SIZE));
        assert_eq!(round_up(u64::MAX, PAGE_SIZE), None);
    }
}
