//! [`SoftBackend`]: the object model over a CPU "GPU", for tests of code
//! above the [`Backend`](crate::Backend) trait (the virtio-dxg device) that
//! must run without any Vulkan driver. Copies, fills, timestamps and fences
//! execute for real on host memory; pipelines are compiled and checked by
//! naga like on the real backend, but a DISPATCH runs no shader (it is
//! counted, see [`SoftBackend::dispatches`]). Never the default.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dxvmm_protocol::escape::CreatePipeline;

use crate::backend::*;
use crate::core::Core;
use crate::engine::{Completion, Engine, Op};
use crate::error::{BackendError, Result};
use crate::shader::{self, ShaderBinding};

/// A buffer in host memory.
pub(crate) struct SoftBuffer {
    bytes: Mutex<Vec<u8>>,
    live: Arc<AtomicU64>,
}

impl Drop for SoftBuffer {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SoftBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct SoftEngine {
    adapters: Vec<AdapterInfo>,
    live: Arc<AtomicU64>,
    dispatches: AtomicU64,
    epoch: Instant,
    /// Completions run in order on this thread, never inside `execute`.
    completions: Mutex<Sender<Completion>>,
}

impl SoftEngine {
    fn new(memory_budget: u64) -> Self {
        let (tx, rx) = channel::<Completion>();
        std::thread::Builder::new()
            .name("dxvmm-soft-completion".into())
            .spawn(move || {
                for done in rx {
                    done();
                }
            })
            .expect("spawning a thread at start-up");
        let name = "dxvmm soft adapter";
        SoftEngine {
            adapters: vec![AdapterInfo {
                luid: crate::stable_luid(0, 0, name, "dxvmm", "cpu", 0),
                name: name.into(),
                vendor_id: 0,
                device_id: 0,
                kind: DeviceKind::Cpu,
                software: true,
                backend: "cpu".into(),
                driver: "dxvmm".into(),
                driver_info: env!("CARGO_PKG_VERSION").into(),
                memory_budget,
                segments: vec![SegmentInfo {
                    id: 1,
                    group: SegmentGroup::Local,
                    size: memory_budget,
                    cpu_visible: true,
                }],
                limits: AdapterLimits {
                    max_buffer_size: memory_budget,
                    max_storage_buffer_binding_size: memory_budget,
                    max_bindings: dxvmm_protocol::cmdstream::MAX_BINDINGS,
                    max_workgroups_per_dimension: 65535,
                    max_invocations_per_workgroup: 256,
                    min_storage_buffer_offset_alignment: 256,
                },
            }],
            live: Arc::new(AtomicU64::new(0)),
            dispatches: AtomicU64::new(0),
            epoch: Instant::now(),
            completions: Mutex::new(tx),
        }
    }
}

fn span(len: usize, offset: u64, size: u64) -> Result<std::ops::Range<usize>> {
    let end = offset
        .checked_add(size)
        .filter(|&e| e <= len as u64)
        .ok_or(BackendError::range("buffer range", offset, len as u64))?;
    Ok(offset as usize..end as usize)
}

impl Engine for SoftEngine {
    type Buffer = SoftBuffer;
    type Pipeline = ();

    fn adapters(&self) -> &[AdapterInfo] {
        &self.adapters
    }

    fn create_buffer(&self, _adapter: usize, size: u64) -> Result<SoftBuffer> {
        let mut v = Vec::new();
        v.try_reserve_exact(size as usize)
            .map_err(|_| BackendError::OutOfMemory {
                what: "host memory",
                size,
            })?;
        v.resize(size as usize, 0);
        self.live.fetch_add(1, Ordering::Relaxed);
        Ok(SoftBuffer {
            bytes: Mutex::new(v),
            live: self.live.clone(),
        })
    }

    fn live_buffers(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    fn write_buffer(
        &self,
        _adapter: usize,
        buffer: &SoftBuffer,
        offset: u64,
        len: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let mut b = buffer.lock();
        let r = span(b.len(), offset, len)?;
        read(0, &mut b[r])
    }

    fn read_buffer(
        &self,
        _adapter: usize,
        buffer: &SoftBuffer,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        // Work runs inside `execute`, so the contents are already final.
        let b = buffer.lock();
        let r = span(b.len(), offset, len)?;
        sink(&b[r])
    }

    fn create_pipeline(
        &self,
        _adapter: usize,
        req: &CreatePipeline,
    ) -> Result<((), Vec<ShaderBinding>)> {
        let s = shader::parse(req)?;
        let [x, y, z] = s.workgroup_size;
        let invocations = u64::from(x) * u64::from(y) * u64::from(z);
        if invocations > 256 {
            return Err(BackendError::ShaderCompile {
                message: format!("workgroup of {invocations} invocations exceeds 256"),
            });
        }
        Ok(((), s.bindings))
    }

    fn execute(&self, _adapter: usize, ops: &[Op<Self>], done: Option<Completion>) -> Result<()> {
        for op in ops {
            match op {
                Op::Copy { src, dst } => {
                    let data = {
                        let s = src.buffer.lock();
                        s[span(s.len(), src.offset, src.size)?].to_vec()
                    };
                    let mut d = dst.buffer.lock();
                    let r = span(d.len(), dst.offset, dst.size)?;
                    d[r].copy_from_slice(&data);
                }
                Op::Fill { dst, value } => {
                    let mut d = dst.buffer.lock();
                    let r = span(d.len(), dst.offset, dst.size)?;
                    for w in d[r].chunks_exact_mut(4) {
                        w.copy_from_slice(&value.to_le_bytes());
                    }
                }
                Op::Timestamp { dst } => {
                    let ns = self.epoch.elapsed().as_nanos() as u64;
                    let mut d = dst.buffer.lock();
                    let r = span(d.len(), dst.offset, 8)?;
                    d[r].copy_from_slice(&ns.to_le_bytes());
                }
                Op::Dispatch { .. } => {
                    self.dispatches.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(done) = done {
            self.completions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(done)
                .map_err(|_| BackendError::Unavailable("completion thread ended".into()))?;
        }
        Ok(())
    }
}

/// The CPU test double (see the module documentation).
pub struct SoftBackend {
    core: Core<SoftEngine>,
}

impl SoftBackend {
    /// One software adapter with a 1 GiB budget.
    pub fn new() -> Self {
        Self::with_budget(1 << 30)
    }

    /// One software adapter accepting `memory_budget` bytes of allocations.
    pub fn with_budget(memory_budget: u64) -> Self {
        SoftBackend {
            core: Core::new(SoftEngine::new(memory_budget)),
        }
    }

    /// DISPATCH commands executed so far (they run no shader).
    pub fn dispatches(&self) -> u64 {
        self.core.engine().dispatches.load(Ordering::Relaxed)
    }
}

impl Default for SoftBackend {
    fn default() -> Self {
        Self::new()
    }
}

crate::core::delegate_backend!(SoftBackend);
