//! What the object model needs from "the hardware": buffers, pipelines and
//! in-order execution of resolved commands with a completion callback. The
//! GPU-PV object model ([`crate::core`]) is written once over this trait;
//! the wgpu engine and the CPU test double implement it.

use std::sync::Arc;

use dxvmm_protocol::escape::CreatePipeline;

use crate::backend::AdapterInfo;
use crate::error::Result;
use crate::memory::HostSpan;
use crate::shader::ShaderBinding;

/// Runs once the work it was attached to has completed, on the engine's
/// completion thread (never inside [`Engine::execute`]).
pub(crate) type Completion = Box<dyn FnOnce() + Send>;

/// How a read into the CPU's memory reports how far it has got: where its
/// pieces end (growing byte offsets from the start of the read, the last
/// one its length), and a callback that hears each end once the piece
/// before it has landed.
pub(crate) type Progress<'a> = (&'a [u64], &'a mut dyn FnMut(u64));

/// A buffer range of a command, resolved from GPU virtual addresses.
pub(crate) struct Range<E: Engine + ?Sized> {
    pub buffer: Arc<E::Buffer>,
    /// Unique for the life of the backend, for caches keyed by buffer.
    pub buffer_id: u64,
    pub offset: u64,
    pub size: u64,
}

impl<E: Engine + ?Sized> Clone for Range<E> {
    fn clone(&self) -> Self {
        Range {
            buffer: self.buffer.clone(),
            buffer_id: self.buffer_id,
            offset: self.offset,
            size: self.size,
        }
    }
}

/// One command, checked and resolved to buffers.
pub(crate) enum Op<E: Engine + ?Sized> {
    Copy {
        src: Range<E>,
        dst: Range<E>,
    },
    Fill {
        dst: Range<E>,
        value: u32,
    },
    Dispatch {
        pipeline: Arc<E::Pipeline>,
        groups: [u32; 3],
        /// Sorted by slot; exactly the shader's bindings.
        bindings: Vec<(u32, Range<E>)>,
    },
    Timestamp {
        dst: Range<E>,
    },
}

pub(crate) trait Engine: Send + Sync + 'static {
    type Buffer: Send + Sync + 'static;
    type Pipeline: Send + Sync + 'static;

    /// Every adapter, in the order the guest sees them.
    fn adapters(&self) -> &[AdapterInfo];

    /// A zeroed buffer of `size` bytes (a multiple of 4).
    fn create_buffer(&self, adapter: usize, size: u64) -> Result<Self::Buffer>;

    /// Buffers alive, including those only in-flight work holds.
    fn live_buffers(&self) -> u64;

    /// Writes `len` bytes at `offset`, ordered before the next
    /// [`Engine::execute`]; `read(at, buf)` supplies the bytes at `at`
    /// (relative to `offset`), possibly in several chunks.
    fn write_buffer(
        &self,
        adapter: usize,
        buffer: &Self::Buffer,
        offset: u64,
        len: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()>;

    /// Waits for all work executed so far and hands `len` bytes at
    /// `offset` to `sink`.
    fn read_buffer(
        &self,
        adapter: usize,
        buffer: &Self::Buffer,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()>;

    /// Like [`Engine::write_buffer`] for bytes in host mappings, which the
    /// GPU copies itself (the span offsets are buffer offsets). `Ok(false)`:
    /// this engine cannot reach these spans and nothing was done; the caller
    /// copies through [`Engine::write_buffer`] instead.
    fn write_buffer_direct(
        &self,
        adapter: usize,
        buffer: &Self::Buffer,
        spans: &[HostSpan],
    ) -> Result<bool> {
        let _ = (adapter, buffer, spans);
        Ok(false)
    }

    /// Returns once the GPU has done every read of host memory that
    /// [`Engine::write_buffer_direct`] queued for `buffer`: after it, the
    /// memory may change.
    fn finish_direct_reads(&self, adapter: usize, buffer: &Self::Buffer) -> Result<()> {
        let _ = (adapter, buffer);
        Ok(())
    }

    /// Like [`Engine::read_buffer`] into host mappings, written by the GPU
    /// itself; returns once they hold the bytes. `Ok(false)` as for
    /// [`Engine::write_buffer_direct`]. With `progress`, the copy goes in
    /// its pieces (buffer offsets), and the callback hears the end of each
    /// once it has landed.
    fn read_buffer_direct(
        &self,
        adapter: usize,
        buffer: &Self::Buffer,
        spans: &[HostSpan],
        progress: Option<Progress<'_>>,
    ) -> Result<bool> {
        let _ = (adapter, buffer, spans, progress);
        Ok(false)
    }

    /// Compiles a compute pipeline; returns it with its bindings.
    fn create_pipeline(
        &self,
        adapter: usize,
        req: &CreatePipeline,
    ) -> Result<(Self::Pipeline, Vec<ShaderBinding>)>;

    /// Queues `ops` after everything executed before on this adapter and
    /// runs `done` (if any) once they have completed.
    fn execute(&self, adapter: usize, ops: &[Op<Self>], done: Option<Completion>) -> Result<()>;
}
