//! libdxg: D3DKMT-style calls over the `/dev/dxg` ioctls of a dxvmm guest
//! (the same ABI as WSL 2's dxgkrnl).
//!
//! ```no_run
//! let dxg = libdxg::Dxg::open()?;
//! for adapter in dxg.adapters()? {
//!     let info = adapter.host_adapter()?;
//!     let device = adapter.create_device()?;
//!     println!("{} device {:?}", dxvmm_protocol::escape::get_str(&info.name), device.handle());
//! }
//! # Ok::<(), libdxg::Error>(())
//! ```
//!
//! Layout: [`ioctl`] maps argument structs (the protocol crate's, so each
//! layout has one definition) to command words; [`Dxg`] issues them, from
//! raw words with any pointer up to checked D3DKMT calls on plain handle
//! values; [`Adapter`] and [`Device`] own handles and release them on drop.
//! The compute profile's ioctls (allocations, LOCK2, GPU VAs, contexts,
//! hardware queues, submission, escapes, fences) are more `*_raw` methods
//! on `Dxg`; [`Gpu`], [`Buffer`], [`Pipeline`], [`Commands`], [`Fence`] and
//! [`HwQueue`] are the user-mode driver on top of them.
//!
//! Whatever the driver returns is checked before use: counts against the
//! room given, magic and version of dxvmm's answers, handles against null.

mod adapter;
mod calls;
mod compute;
mod dxg;
mod error;
pub mod ioctl;
pub mod stream;

pub use adapter::{Adapter, Device};
pub use calls::{GpuVa, HwQueueInfo, PagingQueueInfo, SyncObjectInfo, ALLOCATION_PRIORITY_NORMAL};
pub use compute::{
    Bind, BufRange, Buffer, Commands, Fence, Gpu, HwQueue, Pipeline, PAGE_SIZE, PIECES,
    PIECEWISE_MIN,
};
pub use dxg::{Dxg, VideoMemoryInfo, DXG_PATH};
pub use error::{Errno, Error, Result};

/// The protocol crate, for the argument structs and answer layouts.
pub use dxvmm_protocol as protocol;
