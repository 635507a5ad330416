//! Whether this host's /dev/kvm can run an unmodified guest kernel.
//!
//! Some hosts expose a /dev/kvm that is software only: `kvm_pvm` (nested
//! virtualization without VT-x/AMD-V) runs small guests but executes a stock
//! kernel's supervisor code through KVM's instruction emulator, far too
//! slowly to boot. dxvmm then falls back to the user-mode engine unless
//! `--accel kvm` insists.

use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Overrides the KVM device path (tests use it to simulate a host without
/// KVM).
pub const DEVICE_ENV: &str = "DXVMM_KVM_DEVICE";
const DEFAULT_DEVICE: &str = "/dev/kvm";

/// The KVM device dxvmm opens.
pub fn device_path() -> PathBuf {
    std::env::var_os(DEVICE_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DEVICE))
}

/// What the host's KVM can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Hardware virtualization: runs an unmodified kernel.
    Hardware,
    /// /dev/kvm opens but has no hardware virtualization behind it.
    SoftwareOnly { device: PathBuf, why: String },
    /// /dev/kvm cannot be used at all.
    Unavailable { device: PathBuf, why: String },
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Hardware => write!(f, "KVM with hardware virtualization"),
            Support::SoftwareOnly { device, why } => {
                write!(f, "{} is software-only ({why})", device.display())
            }
            Support::Unavailable { device, why } => {
                write!(f, "{} is unavailable ({why})", device.display())
            }
        }
    }
}

/// Why `path` cannot be opened for KVM, if it cannot.
pub fn open_problem(path: &Path) -> Option<String> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    match kvm_ioctls::Kvm::new_with_path(&c) {
        Ok(kvm) if kvm.get_api_version() == kvm_bindings::KVM_API_VERSION as i32 => None,
        Ok(_) => Some("not a KVM device".to_string()),
        Err(e) => Some(match e.errno() {
            libc::ENOENT => "no such device: is the kvm module loaded?".to_string(),
            libc::EACCES | libc::EPERM => {
                "permission denied: add yourself to the group that owns it (usually kvm)"
                    .to_string()
            }
            _ => e.to_string(),
        }),
    }
}

/// Detects what the host offers from its real files.
pub fn detect() -> Support {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    classify(
        &device_path(),
        Path::new("/sys/module/kvm_pvm").exists(),
        &cpuinfo,
    )
}

/// The decision, apart from the host's files so that tests can feed it.
pub fn classify(device: &Path, pvm_loaded: bool, cpuinfo: &str) -> Support {
    if let Some(why) = open_problem(device) {
        return Support::Unavailable {
            device: device.to_path_buf(),
            why,
        };
    }
    let software = |why: &str| Support::SoftwareOnly {
        device: device.to_path_buf(),
        why: why.to_string(),
    };
    if pvm_loaded {
        return software("kvm_pvm");
    }
    if !has_virt_flag(cpuinfo) {
        return software("no vmx or svm flag in /proc/cpuinfo");
    }
    Support::Hardware
}

fn has_virt_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_unavailable() {
        let s = classify(Path::new("/nonexistent/kvm"), false, "flags : fpu vmx\n");
        match &s {
            Support::Unavailable { why, .. } => assert!(why.contains("no such device"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(s.to_string().starts_with("/nonexistent/kvm is unavailable"));
    }

    #[test]
    fn a_file_that_is_not_kvm_is_unavailable() {
        // /dev/null opens, but is not KVM: the API version ioctl fails.
        assert!(matches!(
            classify(Path::new("/dev/null"), false, "flags : vmx\n"),
            Support::Unavailable { .. }
        ));
    }

    #[test]
    fn virt_flags_are_whole_words() {
        assert!(has_virt_flag("processor : 0\nflags : fpu vme svm sse\n"));
        assert!(has_virt_flag("flags\t\t: vmx\n"));
        assert!(!has_virt_flag("flags : fpu vmxx svm_lock\n"));
        assert!(!has_virt_flag("model name : vmx svm\n"));
    }

    #[test]
    fn this_hosts_kvm() {
        // Whatever this host has, detection gives one line and no panic.
        let s = detect();
        assert!(!s.to_string().contains('\n'));
        if Path::new("/sys/module/kvm_pvm").exists() && open_problem(&device_path()).is_none() {
            assert_eq!(
                s,
                Support::SoftwareOnly {
                    device: device_path(),
                    why: "kvm_pvm".into()
                }
            );
        }
    }
}
