//! NTSTATUS, the result type of every GPU-PV reply, with the values dxgkrnl
//! uses and its mapping to Linux errno values.

use serde::{Deserialize, Serialize};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A Windows NTSTATUS (`struct ntstatus`): negative is failure, zero or
/// positive is success (and positive values such as `STATUS_TIMEOUT` are
/// returned to user space as the ioctl's result).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Serialize,
    Deserialize,
)]
#[repr(transparent)]
#[serde(transparent)]
pub struct NtStatus(pub i32);

// The values are the well-known Windows ones; `as i32` reinterprets the
// 0xC... bit patterns as the negative numbers NTSTATUS is.
impl NtStatus {
    pub const SUCCESS: NtStatus = NtStatus(0);
    pub const TIMEOUT: NtStatus = NtStatus(0x0000_0102);
    pub const PENDING: NtStatus = NtStatus(0x0000_0103);
    pub const BUFFER_OVERFLOW: NtStatus = NtStatus(0x8000_0005_u32 as i32);
    pub const UNSUCCESSFUL: NtStatus = NtStatus(0xC000_0001_u32 as i32);
    pub const NOT_IMPLEMENTED: NtStatus = NtStatus(0xC000_0002_u32 as i32);
    pub const INVALID_HANDLE: NtStatus = NtStatus(0xC000_0008_u32 as i32);
    pub const INVALID_PARAMETER: NtStatus = NtStatus(0xC000_000D_u32 as i32);
    pub const INVALID_DEVICE_REQUEST: NtStatus = NtStatus(0xC000_0010_u32 as i32);
    pub const NO_MEMORY: NtStatus = NtStatus(0xC000_0017_u32 as i32);
    pub const ILLEGAL_INSTRUCTION: NtStatus = NtStatus(0xC000_001D_u32 as i32);
    pub const ACCESS_DENIED: NtStatus = NtStatus(0xC000_0022_u32 as i32);
    pub const BUFFER_TOO_SMALL: NtStatus = NtStatus(0xC000_0023_u32 as i32);
    pub const OBJECT_TYPE_MISMATCH: NtStatus = NtStatus(0xC000_0024_u32 as i32);
    pub const OBJECT_NAME_INVALID: NtStatus = NtStatus(0xC000_0033_u32 as i32);
    pub const OBJECT_NAME_NOT_FOUND: NtStatus = NtStatus(0xC000_0034_u32 as i32);
    pub const OBJECT_NAME_COLLISION: NtStatus = NtStatus(0xC000_0035_u32 as i32);
    pub const INTEGER_OVERFLOW: NtStatus = NtStatus(0xC000_0095_u32 as i32);
    pub const INSUFFICIENT_RESOURCES: NtStatus = NtStatus(0xC000_009A_u32 as i32);
    pub const NOT_SUPPORTED: NtStatus = NtStatus(0xC000_00BB_u32 as i32);
    pub const CANCELLED: NtStatus = NtStatus(0xC000_0120_u32 as i32);
    pub const DEVICE_REMOVED: NtStatus = NtStatus(0xC000_02B6_u32 as i32);
    pub const GRAPHICS_NO_VIDEO_MEMORY: NtStatus = NtStatus(0xC01E_0100_u32 as i32);
    pub const GRAPHICS_ALLOCATION_BUSY: NtStatus = NtStatus(0xC01E_0102_u32 as i32);

    /// `NT_SUCCESS()`.
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// The raw 32-bit pattern, as written in tables (`0xC000000D`).
    pub const fn bits(self) -> u32 {
        self.0 as u32
    }

    /// The value the guest driver returns from the ioctl: the status itself
    /// when it is a success (positive values pass through), else a negative
    /// errno, with the same table as dxgkrnl's `ntstatus2int`.
    pub const fn to_errno_result(self) -> i32 {
        if self.is_success() {
            return self.0;
        }
        const EINVAL: i32 = 22;
        -match self.bits() {
            0xC000_0035 => 17,              // EEXIST
            0xC000_0017 => 12,              // ENOMEM
            0xC000_000D => EINVAL,          // EINVAL
            0xC000_0033 | 0xC000_0034 => 2, // ENOENT
            0xC000_0023 => 75,              // EOVERFLOW
            0xC000_02B6 => 19,              // ENODEV
            0xC000_0022 => 13,              // EACCES
            0xC000_00BB | 0xC000_0002 => 1, // EPERM
            0xC000_001D => 95,              // EOPNOTSUPP
            0xC000_0008 => 9,               // EBADF
            0xC01E_0102 => 115,             // EINPROGRESS
            0xC000_0024 => 91,              // EPROTOTYPE
            _ => EINVAL,
        }
    }

    /// The constant's name, for traces and error lines.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SUCCESS => "STATUS_SUCCESS",
            Self::TIMEOUT => "STATUS_TIMEOUT",
            Self::PENDING => "STATUS_PENDING",
            Self::BUFFER_OVERFLOW => "STATUS_BUFFER_OVERFLOW",
            Self::UNSUCCESSFUL => "STATUS_UNSUCCESSFUL",
            Self::NOT_IMPLEMENTED => "STATUS_NOT_IMPLEMENTED",
            Self::INVALID_HANDLE => "STATUS_INVALID_HANDLE",
            Self::INVALID_PARAMETER => "STATUS_INVALID_PARAMETER",
            Self::INVALID_DEVICE_REQUEST => "STATUS_INVALID_DEVICE_REQUEST",
            Self::NO_MEMORY => "STATUS_NO_MEMORY",
            Self::ILLEGAL_INSTRUCTION => "STATUS_ILLEGAL_INSTRUCTION",
            Self::ACCESS_DENIED => "STATUS_ACCESS_DENIED",
            Self::BUFFER_TOO_SMALL => "STATUS_BUFFER_TOO_SMALL",
            Self::OBJECT_TYPE_MISMATCH => "STATUS_OBJECT_TYPE_MISMATCH",
            Self::OBJECT_NAME_INVALID => "STATUS_OBJECT_NAME_INVALID",
            Self::OBJECT_NAME_NOT_FOUND => "STATUS_OBJECT_NAME_NOT_FOUND",
            Self::OBJECT_NAME_COLLISION => "STATUS_OBJECT_NAME_COLLISION",
            Self::INTEGER_OVERFLOW => "STATUS_INTEGER_OVERFLOW",
            Self::INSUFFICIENT_RESOURCES => "STATUS_INSUFFICIENT_RESOURCES",
            Self::NOT_SUPPORTED => "STATUS_NOT_SUPPORTED",
            Self::CANCELLED => "STATUS_CANCELLED",
            Self::DEVICE_REMOVED => "STATUS_DEVICE_REMOVED",
            Self::GRAPHICS_NO_VIDEO_MEMORY => "STATUS_GRAPHICS_NO_VIDEO_MEMORY",
            Self::GRAPHICS_ALLOCATION_BUSY => "STATUS_GRAPHICS_ALLOCATION_BUSY",
            _ => return None,
        })
    }
}

impl core::fmt::Display for NtStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:08X})", self.bits()),
            None => write!(f, "NTSTATUS 0x{:08X}", self.bits()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_errno() {
        assert_eq!(NtStatus::INVALID_PARAMETER.bits(), 0xC000_000D);
        assert!(!NtStatus::INVALID_PARAMETER.is_success());
        assert!(NtStatus::TIMEOUT.is_success());
        assert_eq!(NtStatus::TIMEOUT.to_errno_result(), 0x102);
        assert_eq!(NtStatus::INVALID_PARAMETER.to_errno_result(), -22);
        assert_eq!(NtStatus::NO_MEMORY.to_errno_result(), -12);
        assert_eq!(NtStatus::INVALID_HANDLE.to_errno_result(), -9);
        assert_eq!(NtStatus(0xC000_9999_u32 as i32).to_errno_result(), -22);
        assert_eq!(
            NtStatus::INVALID_PARAMETER.to_string(),
            "STATUS_INVALID_PARAMETER (0xC000000D)"
        );
        assert_eq!(NtStatus::INVALID_PARAMETER.as_bytes(), &[0x0d, 0, 0, 0xc0]);
    }
}
