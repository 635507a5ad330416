//! dxvmm's wire: the `/dev/dxg` ioctl ABI the guest sees, the GPU-PV
//! messages the guest driver and the host device exchange, the framing that
//! carries them over virtio, and the virtual GPU's command stream and escape
//! formats. Types and their encoding only; no I/O.
//!
//! The spec is docs/protocol.md; the C side of the same layouts is
//! guest-kernel/include/.
//!
//! - [`abi`]: D3DKMT ioctl structs and numbers (WSL 2's `d3dkmthk.h`).
//! - [`vmbus`]: `DXGK_VMBCOMMAND_*` numbers, headers and payloads
//!   (dxgkrnl's `dxgvmbus.h`).
//! - [`frame`]: our virtio framing and config space.
//! - [`message`]: decoded requests, replies and host events.
//! - [`cmdstream`]: what SUBMITCOMMAND's command buffer holds.
//! - [`escape`]: driver-private escapes (pipeline creation) and adapter info.
//! - [`stdin`]: the framing of a guest command's piped stdin on its console.
//!
//! Decoding never trusts the input: every length and count is checked
//! before use, values are copied out with zerocopy (no alignment
//! assumptions, no unsafe), and errors are [`DecodeError`]s that map to an
//! NTSTATUS for the reply.

// The layouts are those of the little-endian guests dxgkrnl exists for
// (x86_64, arm64); native-endian structs are their wire format.
#[cfg(target_endian = "big")]
compile_error!("dxvmm-protocol supports little-endian targets only");

mod layout;

pub mod abi;
pub mod cmdstream;
pub mod error;
pub mod escape;
pub mod frame;
pub mod message;
pub mod ntstatus;
pub mod stdin;
pub mod vmbus;

pub use error::DecodeError;
pub use message::{HostEvent, Reply, Request};
pub use ntstatus::NtStatus;

#[cfg(test)]
mod tests;
