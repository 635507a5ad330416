//! The backend's one error type.
//!
//! Every failure a caller can provoke with bad input is one of these, never
//! a panic, and leaves every other object as it was. [`BackendError::status`]
//! turns it into the NTSTATUS that goes back to the guest.

use dxvmm_protocol::{DecodeError, NtStatus};

/// Kinds of object the backend hands out handles for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ObjectKind {
    Process,
    Adapter,
    Device,
    PagingQueue,
    Allocation,
    Context,
    HwQueue,
    SyncObject,
    Pipeline,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ObjectKind::Process => "process",
            ObjectKind::Adapter => "adapter",
            ObjectKind::Device => "device",
            ObjectKind::PagingQueue => "paging queue",
            ObjectKind::Allocation => "allocation",
            ObjectKind::Context => "context",
            ObjectKind::HwQueue => "hardware queue",
            ObjectKind::SyncObject => "sync object",
            ObjectKind::Pipeline => "pipeline",
        };
        f.write_str(s)
    }
}

/// What went wrong in a backend call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The handle names no live object of that kind in the caller's process
    /// (null, stale, of another process, or of another kind).
    #[error("invalid {kind} handle {handle:#x}")]
    InvalidHandle { kind: ObjectKind, handle: u64 },
    /// An offset, length, address or count outside what the object allows.
    #[error("{what} out of range: {value:#x} (limit {limit:#x})")]
    OutOfRange {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    /// A value that is not allowed at all (misaligned, zero, reserved bits).
    #[error("invalid {what}: {value:#x}")]
    InvalidParameter { what: &'static str, value: u64 },
    /// A GPU virtual address range that is not (wholly) mapped to one
    /// allocation.
    #[error("GPU virtual address range {va:#x}+{size:#x} is not mapped")]
    UnmappedVa { va: u64, size: u64 },
    /// The adapter's memory budget, the GPU VA space, or the host ran out.
    #[error("out of memory: {what} of {size:#x} bytes")]
    OutOfMemory { what: &'static str, size: u64 },
    /// The shader did not compile; `message` is the compiler's.
    #[error("shader compile error: {message}")]
    ShaderCompile { message: String },
    /// A command stream or escape that does not decode.
    #[error("malformed {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: DecodeError,
    },
    /// Guest memory behind an allocation could not be read or written.
    #[error("guest memory access at offset {offset:#x}: {message}")]
    Memory { offset: u64, message: String },
    /// A CPU wait ran out of time.
    #[error("wait timed out")]
    Timeout,
    /// The object is still in use (for example an allocation a lock cannot
    /// reach because its writer waits on a fence).
    #[error("{0} is busy")]
    Busy(&'static str),
    /// No host adapter, or the GPU driver failed.
    #[error("GPU unavailable: {0}")]
    Unavailable(String),
    /// A valid request this backend does not implement.
    #[error("not supported: {0}")]
    NotSupported(&'static str),
}

impl BackendError {
    pub(crate) fn handle(kind: ObjectKind, handle: impl Into<u64>) -> Self {
        BackendError::InvalidHandle {
            kind,
            handle: handle.into(),
        }
    }

    pub(crate) fn range(what: &'static str, value: u64, limit: u64) -> Self {
        BackendError::OutOfRange { what, value, limit }
    }

    pub(crate) fn param(what: &'static str, value: u64) -> Self {
        BackendError::InvalidParameter { what, value }
    }

    /// The NTSTATUS the device puts in its reply.
    pub fn status(&self) -> NtStatus {
        match self {
            BackendError::InvalidHandle { .. } => NtStatus::INVALID_HANDLE,
            BackendError::OutOfRange { .. }
            | BackendError::InvalidParameter { .. }
            | BackendError::UnmappedVa { .. }
            | BackendError::ShaderCompile { .. }
            | BackendError::Memory { .. } => NtStatus::INVALID_PARAMETER,
            BackendError::Decode { source, .. } => source.status(),
            BackendError::OutOfMemory { .. } => NtStatus::NO_MEMORY,
            BackendError::Timeout => NtStatus::TIMEOUT,
            BackendError::Busy(_) => NtStatus::GRAPHICS_ALLOCATION_BUSY,
            BackendError::Unavailable(_) => NtStatus::DEVICE_REMOVED,
            BackendError::NotSupported(_) => NtStatus::NOT_SUPPORTED,
        }
    }
}

/// Result of every backend call.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;
