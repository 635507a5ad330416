//! Recording, inspecting, replaying and exporting the GPU-PV message stream
//! of dxvmm's virtio-dxg device (docs/trace.md).
//!
//! - [`format`]: the versioned trace file format; [`digest`]: how it
//!   records large results without their bytes.
//! - [`Recorder`]: the device's frame observer behind `dxvmm run --trace`;
//!   [`capture`] decides which guest memory goes into the trace.
//! - [`reader`]: reading a trace back, every byte checked.
//! - [`show`]: `dxvmm trace show` and `stats`.
//! - [`replay`]: `dxvmm trace replay`, with handles remapped by [`remap`].
//! - [`diff`]: `dxvmm trace diff`, two recordings compared the same way.
//! - [`pcapng`]: `dxvmm trace export-pcapng`, for `wireshark/dxvmm.lua`.

pub mod capture;
mod cpus;
pub mod diff;
pub mod digest;
pub mod error;
pub mod format;
#[cfg(test)]
mod guest_tests;
pub mod pcapng;
pub mod reader;
pub mod recorder;
pub mod remap;
pub mod replay;
pub mod show;
mod ticks;

pub use error::{ReplayError, TraceError};
pub use format::{Record, TraceHeader};
pub use reader::{read_all, read_bytes, Located, TraceReader};
pub use recorder::{Options as RecordOptions, Recorder, Spent, Summary};

/// The request frames of a trace, in order (for fuzzers and corpus tests).
pub fn request_frames(records: &[Located]) -> Vec<&[u8]> {
    records
        .iter()
        .filter_map(|l| match &l.record {
            Record::Request { frame, .. } => Some(frame.as_slice()),
            _ => None,
        })
        .collect()
}
