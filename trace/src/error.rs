//! Errors of this crate: each reads as one line for the user.

use std::path::PathBuf;

/// What is wrong with a trace file, or with reading or writing one.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a dxvmm trace (no DXVTRACE magic)")]
    BadMagic,
    #[error(
        "the trace is of format version {found}; this dxvmm reads version {supported} and older"
    )]
    NewerVersion { found: u16, supported: u16 },
    #[error("the trace is truncated at byte {offset} (in {what}): the recording did not finish")]
    Truncated { offset: u64, what: &'static str },
    #[error(
        "the trace ends at byte {offset} without its end record: the recording did not finish"
    )]
    Unfinished { offset: u64 },
    #[error("the trace is corrupt at byte {offset}: {why}")]
    Corrupt { offset: u64, why: String },
    #[error("the recorder stopped: {0}")]
    Recorder(String),
}

impl TraceError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TraceError {
        TraceError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why a replay could not run at all (a divergence is a result, not an
/// error).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("the trace needs {need} GPU adapter(s); this host has {have}")]
    NotEnoughAdapters { need: usize, have: usize },
    #[error("the trace's guest memory map cannot be rebuilt here: {0}")]
    Memory(String),
    #[error("the replay's event queue cannot be made: {0}")]
    Events(#[source] std::io::Error),
}
