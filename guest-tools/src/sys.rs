//! The few system calls the test suites need beyond libdxg: fork, pipes,
//! signals, and memory mappings with known properties (read-only,
//! inaccessible) to hand the driver as bad pointers.
//!
//! dxgtest is single-threaded, which is what makes `fork` without `exec`
//! sound here: the child gets the only thread, holding no locks.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Which side of a fork this is.
pub enum Forked {
    Child,
    Parent(libc::pid_t),
}

/// fork(2).
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the process is single-threaded (see the module comment), so
    // the child's copy of every lock and allocator state is consistent.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// Ends a forked child at once, without running the parent's destructors
/// or flushing its copies of the parent's buffers.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// SIGKILL to `pid`.
pub fn kill9(pid: libc::pid_t) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    check(unsafe { libc::kill(pid, libc::SIGKILL) })?;
    Ok(())
}

/// Waits for child `pid`; its raw wait status.
pub fn wait(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc >= 0 {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// True when a wait status says the child exited with status 0.
pub fn exited_ok(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Blocks until a signal ends the process.
pub fn sleep_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// A pipe, both ends close-on-exec.
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 succeeded: both are new descriptors nobody owns yet.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write })
    }
}

/// A new eventfd (counter 0, close-on-exec).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: eventfd succeeded: a new descriptor nobody owns yet.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes all of `buf` to `fd`.
pub fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes from `fd` within `timeout`; fewer when
/// the writers close first (the count read is returned).
pub fn read_full(fd: &OwnedFd, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if rc == 0 {
            continue;
        }
        let rest = &mut buf[got..];
        // SAFETY: `rest` is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok(got)
}

/// An anonymous private mapping, unmapped on drop. Its pages are this
/// program's alone, so letting the kernel write any bytes into the
/// accessible ones is harmless.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

/// The page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

impl Mapping {
    /// `len` bytes (rounded up to pages) with protection `prot`.
    pub fn new(len: usize, prot: libc::c_int) -> io::Result<Mapping> {
        let page = page_size();
        let len = len.div_ceil(page).max(1) * page;
        // SAFETY: a new anonymous mapping at an address the kernel picks
        // replaces nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or(io::ErrorKind::AddrNotAvailable)?;
        Ok(Mapping { ptr, len })
    }

    /// A read-write area of `len` bytes followed by one inaccessible guard
    /// page, so that a driver writing past what it was told stops at the
    /// guard (EFAULT) instead of in someone else's memory.
    /// Returns the mapping and how many bytes before the guard are usable.
    pub fn guarded(len: usize) -> io::Result<(Mapping, usize)> {
        let page = page_size();
        let len = len.div_ceil(page).max(1) * page;
        let m = Mapping::new(len + page, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: the last page lies inside our own mapping.
        let guard = unsafe { m.ptr.as_ptr().add(len) };
        // SAFETY: changes the protection of a page of a mapping we own.
        check(unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) })?;
        Ok((m, len))
    }

    /// Changes the protection of the whole mapping.
    pub fn protect(&self, prot: libc::c_int) -> io::Result<()> {
        // SAFETY: changes the protection of a mapping we own; no reference
        // into it outlives a call that could fault.
        check(unsafe { libc::mprotect(self.ptr.as_ptr().cast(), self.len, prot) })?;
        Ok(())
    }

    /// Copies `bytes` to the start of the mapping (which must be writable).
    pub fn fill_from(&self, bytes: &[u8]) {
        let n = bytes.len().min(self.len);
        // SAFETY: `n` bytes fit the mapping; `bytes` cannot overlap it
        // (it is a Rust slice, the mapping is ours and unborrowed).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr(), n) };
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; nothing borrows it
        // past `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
