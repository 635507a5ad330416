//! dxvmm's host backend: the host half of GPU-PV, the "kernel-mode driver
//! plus hardware" the virtio-dxg device calls.
//!
//! - [`Backend`]: the GPU-PV object model (adapters, processes, devices,
//!   paging queues, allocations, contexts and hardware queues, GPU virtual
//!   address spaces, monitored fences, submission, escapes).
//! - [`WgpuBackend`]: the implementation on a real adapter through wgpu
//!   (Vulkan: a GPU's driver, or Mesa's lavapipe).
//! - [`SoftBackend`]: a CPU test double for code above the trait.
//! - [`HostVisibleMemory`]: how CPU-side memory (the guest's pages) is
//!   handed in; [`GuestRanges`] does it through vm-memory.
//!
//! docs/host-backend.md describes the design and the coherency rules.

pub mod affinity;
mod backend;
mod core;
mod engine;
mod error;
mod gpu;
mod import;
mod memory;
mod report;
mod shader;
mod soft;

pub use self::core::MAX_FENCES_PER_CALL;
pub use backend::*;
pub use error::{BackendError, ObjectKind, Result};
pub use gpu::{host_adapters, WgpuBackend, BATCH_ENV, MEMORY_BUDGET_ENV};
pub use import::HOST_IMPORT_ENV;
pub use memory::{
    GuestRanges, HostRegion, HostSpan, HostVisibleMemory, VecMemory, GUEST_PAGE_SIZE,
};
pub use report::{adapter_report, adapters_json, adapters_table, AdapterReport};
pub use soft::SoftBackend;

pub use dxvmm_protocol::abi::WinLuid;

/// 64-bit FNV-1a: a hash whose value is fixed by its definition, unlike
/// std's `DefaultHasher`, so LUIDs stay the same across builds and runs.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate the parts, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The LUID of a host adapter: a hash of what identifies it (vendor and
/// device ids, name, driver, the graphics API, and its ordinal among
/// otherwise identical adapters), so it is the same every run on the same
/// machine. Never zero (a zero LUID means "none" in the ABI).
pub fn stable_luid(
    vendor_id: u32,
    device_id: u32,
    name: &str,
    driver: &str,
    backend: &str,
    ordinal: u32,
) -> WinLuid {
    let h = fnv1a(&[
        &vendor_id.to_le_bytes(),
        &device_id.to_le_bytes(),
        name.as_bytes(),
        driver.as_bytes(),
        backend.as_bytes(),
        &ordinal.to_le_bytes(),
    ]);
    // LUIDs made by Windows are small numbers in `a` with `b` zero; keep
    // `b` non-zero so ours never collide with a real one, and `a` below
    // 2^31 because some tools print the pair as signed.
    WinLuid {
        a: (h as u32) & 0x7fff_ffff,
        b: ((h >> 32) as u32) | 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luid_is_stable_and_distinguishes_adapters() {
        let a = stable_luid(
            0x10de,
            0x2330,
            "NVIDIA H100 80GB HBM3",
            "NVIDIA",
            "vulkan",
            0,
        );
        // Fixed by FNV-1a's definition: a change here changes every
        // guest's adapter LUIDs.
        assert_eq!(
            a,
            stable_luid(
                0x10de,
                0x2330,
                "NVIDIA H100 80GB HBM3",
                "NVIDIA",
                "vulkan",
                0
            )
        );
        assert_ne!(
            a,
            stable_luid(
                0x10de,
                0x2330,
                "NVIDIA H100 80GB HBM3",
                "NVIDIA",
                "vulkan",
                1
            )
        );
        assert_ne!(
            a,
            stable_luid(
                0x10de,
                0x2331,
                "NVIDIA H100 80GB HBM3",
                "NVIDIA",
                "vulkan",
                0
            )
        );
        assert_ne!(a.b, 0);
        assert!(a.a < 0x8000_0000);
    }
}
