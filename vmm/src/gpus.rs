//! `dxvmm gpus`: the host adapters as the guest will see them.

use std::process::ExitCode;

use crate::exit;

/// Prints the adapter list; fails (exit 125) when the host has no Vulkan
/// adapter, so scripts can tell "no GPU" from "GPU present".
pub fn run(json: bool) -> ExitCode {
    let adapters = dxvmm_host_backend::host_adapters();
    if json {
        println!("{}", dxvmm_host_backend::adapters_json(&adapters));
    } else if !adapters.is_empty() {
        print!("{}", dxvmm_host_backend::adapters_table(&adapters));
    }
    if adapters.is_empty() {
        eprintln!(
            "dxvmm: no Vulkan adapter found (install the GPU's Vulkan driver, or Mesa's \
             lavapipe: mesa-vulkan-drivers, and libvulkan1)"
        );
        return ExitCode::from(exit::DXVMM_ERROR);
    }
    ExitCode::SUCCESS
}
