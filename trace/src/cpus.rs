//! Where the recorder's own threads (the writer, the capture helpers) run.
//!
//! `dxvmm run --host-cpu` pins a user-mode guest and the device threads
//! to one host CPU, so that a request's hops stay on it. The recorder's
//! threads are not pinned, but Linux tends to place a thread woken by
//! another next to its waker: the device thread wakes them, and they would
//! often run on the guest's CPU, where the device thread and the guest
//! then wait for them, while other CPUs idle. So once the recorder sees
//! that the device thread is pinned to part of the process's CPUs, its
//! threads move to the rest.

use std::sync::OnceLock;

pub use dxvmm_host_backend::affinity::away_from_caller;

/// A set of CPUs.
pub type Set = dxvmm_host_backend::affinity::CpuSet;

/// The CPUs the recorder's threads should run on: `None` until the device
/// thread was seen, then `Some(None)` (anywhere) or the set.
pub type Shared = OnceLock<Option<Set>>;

/// Moves the calling thread to the CPUs in `shared` once they are known;
/// `done` remembers that it did (or that there was nothing to do).
pub fn follow(shared: &Shared, done: &mut bool) {
    if *done {
        return;
    }
    let Some(set) = shared.get() else { return };
    *done = true;
    if let Some(set) = set {
        // Failing leaves it where it was, which only costs time.
        dxvmm_host_backend::affinity::set_current(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dxvmm_host_backend::affinity::{current, first_of, set_current};

    #[test]
    fn a_thread_follows_once_the_set_is_known() {
        std::thread::spawn(|| {
            let all = current().unwrap();
            let one = first_of(&all).unwrap();
            let shared: Shared = OnceLock::new();
            let mut done = false;
            follow(&shared, &mut done);
            assert!(!done);
            let _ = shared.set(Some(one));
            follow(&shared, &mut done);
            assert!(done);
            // SAFETY: reads our own sets.
            assert!(unsafe { libc::CPU_EQUAL(&current().unwrap(), &one) });
            // Anywhere: nothing moves.
            set_current(&all);
            let (anywhere, mut done): (Shared, bool) = (OnceLock::new(), false);
            let _ = anywhere.set(None);
            follow(&anywhere, &mut done);
            assert!(done);
            // SAFETY: reads our own sets.
            assert!(unsafe { libc::CPU_EQUAL(&current().unwrap(), &all) });
        })
        .join()
        .unwrap();
    }
}
