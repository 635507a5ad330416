//! Where the guest images of `images/build.sh` live.

use std::path::PathBuf;

/// The image cache: $DXVMM_CACHE, else ~/.cache/dxvmm.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DXVMM_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/dxvmm")
}

pub fn uml_kernel() -> PathBuf {
    cache_dir().join("images/uml/linux")
}

pub fn initramfs() -> PathBuf {
    cache_dir().join("images/initramfs.cpio.gz")
}
