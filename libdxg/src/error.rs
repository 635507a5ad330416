//! libdxg's errors: what failed (the ioctl, by name and command word) and
//! how (the errno the driver returned, or what was wrong with its answer).

use std::fmt;

use std::time::Duration;

use dxvmm_protocol::{DecodeError, NtStatus};

/// An errno value as the kernel returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The symbolic name (`EINVAL`) of the values dxgkrnl returns and of
    /// those a bad pointer or an unknown ioctl gives.
    pub fn name(self) -> Option<&'static str> {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::E2BIG => "E2BIG",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::EINVAL => "EINVAL",
            libc::ENOTTY => "ENOTTY",
            libc::ENOSPC => "ENOSPC",
            libc::ERANGE => "ERANGE",
            libc::ENOSYS => "ENOSYS",
            libc::EOVERFLOW => "EOVERFLOW",
            libc::EPROTOTYPE => "EPROTOTYPE",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::EINPROGRESS => "EINPROGRESS",
            _ => return None,
        };
        Some(name)
    }

    /// The errno of the calling thread's last failed system call.
    pub(crate) fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // std's text is strerror's plus " (os error N)"; the name says that.
        let full = std::io::Error::from_raw_os_error(self.0).to_string();
        let text = full.split(" (os error").next().unwrap_or(&full);
        match self.name() {
            Some(name) => write!(f, "{name} ({text})"),
            None => write!(f, "errno {} ({text})", self.0),
        }
    }
}

/// What went wrong in a libdxg call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/dxg` could not be opened.
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The driver refused an ioctl.
    #[error("{ioctl} (0x{cmd:08x}) failed: {errno}")]
    Ioctl {
        /// `LX_DX...`, or "unknown ioctl".
        ioctl: &'static str,
        cmd: u32,
        errno: Errno,
    },
    /// The driver answered, but its answer is not a valid one (bad magic,
    /// version, size, count). What the kernel returns is checked like any
    /// other input.
    #[error("{ioctl}: the driver's answer is malformed: {source}")]
    Decode {
        ioctl: &'static str,
        #[source]
        source: DecodeError,
    },
    /// As [`Error::Decode`], for checks the protocol crate does not make.
    #[error("{ioctl}: the driver's answer is malformed: {what}")]
    BadAnswer { ioctl: &'static str, what: String },
    /// An argument this library cannot encode (a buffer over 4 GiB, a size
    /// that does not fit an ioctl command word).
    #[error("{ioctl}: {what}")]
    BadArgument {
        ioctl: &'static str,
        what: &'static str,
    },
    /// A shader the host could not compile; `message` is the compiler's.
    #[error("the shader does not compile ({status}): {message}")]
    Compile { status: NtStatus, message: String },
    /// An escape the host answered with a failure status.
    #[error("{what}: the host answered {status}")]
    Host {
        what: &'static str,
        status: NtStatus,
    },
    /// A CPU wait that ran out of time.
    #[error("fence {fence:#x} did not reach {value} within {timeout:?} (at {current})")]
    Timeout {
        fence: u32,
        value: u64,
        current: u64,
        timeout: Duration,
    },
    /// A buffer range or command the compute API refuses before anything
    /// reaches the driver (out of the buffer, misaligned, mismatched sizes).
    #[error("{0}")]
    Range(String),
    /// A system call of the compute API other than an ioctl (eventfd, poll).
    #[error("{call}: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The errno, for errors the driver returned.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Ioctl { errno, .. } => Some(*errno),
            Error::Open { source, .. } => source.raw_os_error().map(Errno),
            _ => None,
        }
    }

    /// True when `/dev/dxg` does not exist (the driver is not loaded).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// libdxg's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_errors_name_the_call_and_the_errno() {
        let e = Error::Ioctl {
            ioctl: "LX_DXOPENADAPTERFROMLUID",
            cmd: 0xc00c_4701,
            errno: Errno(libc::ENOENT),
        };
        assert_eq!(e.errno(), Some(Errno(libc::ENOENT)));
        let text = e.to_string();
        assert!(
            text.starts_with("LX_DXOPENADAPTERFROMLUID (0xc00c4701) failed: ENOENT ("),
            "{text}"
        );
        assert_eq!(Errno(9999).name(), None);
        assert!(Errno(9999).to_string().starts_with("errno 9999"));
        assert_eq!(Errno(libc::ENOTTY).name(), Some("ENOTTY"));
    }

    #[test]
    fn open_errors_say_not_found() {
        let e = Error::Open {
            path: "/dev/dxg".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert!(e.is_not_found());
        assert_eq!(e.errno(), Some(Errno(libc::ENOENT)));
        let e = Error::Open {
            path: "/dev/dxg".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(!e.is_not_found());
        let e = Error::BadAnswer {
            ioctl: "LX_DXENUMADAPTERS3",
            what: "70 adapters for room for 64".into(),
        };
        assert_eq!(e.errno(), None);
    }
}
