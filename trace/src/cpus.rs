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

/// A set of CPUs.
pub type Set = libc::cpu_set_t;

/// The CPUs the recorder's threads should run on: `None` until the device
/// thread was seen, then `Some(None)` (anywhere) or the set.
pub type Shared = OnceLock<Option<Set>>;

fn get(tid: libc::pid_t) -> Option<Set> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: Set = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; tid 0 is the
    // calling thread, the process id its main thread.
    let r = unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<Set>(), &mut set) };
    (r == 0).then_some(set)
}

/// Seen from the calling (device) thread: the process's CPUs (its main
/// thread's) less the caller's, when the caller is pinned to part of them
/// and some are left; `None` otherwise (the recorder's threads stay where
/// they are).
pub fn away_from_caller() -> Option<Set> {
    // SAFETY: no arguments.
    let main = get(unsafe { libc::getpid() })?;
    let mine = get(0)?;
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut rest: Set = unsafe { std::mem::zeroed() };
    for c in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: CPU_ISSET reads, CPU_SET writes, our own sets; `c` is
        // below CPU_SETSIZE.
        unsafe {
            if libc::CPU_ISSET(c, &main) && !libc::CPU_ISSET(c, &mine) {
                libc::CPU_SET(c, &mut rest);
            }
        }
    }
    // SAFETY: CPU_COUNT only reads the set.
    (unsafe { libc::CPU_COUNT(&rest) } > 0).then_some(rest)
}

/// Moves the calling thread to the CPUs in `shared` once they are known;
/// `done` remembers that it did (or that there was nothing to do).
pub fn follow(shared: &Shared, done: &mut bool) {
    if *done {
        return;
    }
    let Some(set) = shared.get() else { return };
    *done = true;
    if let Some(set) = set {
        // SAFETY: sets the calling thread's affinity to a valid set of the
        // size passed. Failing leaves it where it was, which only costs time.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<Set>(), set) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pinned_to_one_cpu_sends_the_others_elsewhere() {
        let all = get(0).unwrap();
        // SAFETY: reads our own set.
        let n = unsafe { libc::CPU_COUNT(&all) };
        // Not pinned: nothing to do.
        assert!(away_from_caller().is_none());
        if n < 2 {
            return;
        }
        std::thread::spawn(move || {
            let first = (0..libc::CPU_SETSIZE as usize)
                // SAFETY: reads our own set.
                .find(|&c| unsafe { libc::CPU_ISSET(c, &all) })
                .unwrap();
            // SAFETY: an all-zero cpu_set_t is a valid empty set; then
            // CPU_SET and sched_setaffinity on this thread's own set.
            let one: Set = unsafe {
                let mut s: Set = std::mem::zeroed();
                libc::CPU_SET(first, &mut s);
                assert_eq!(
                    libc::sched_setaffinity(0, std::mem::size_of::<Set>(), &s),
                    0
                );
                s
            };
            let rest = away_from_caller().expect("the other CPUs");
            // SAFETY: reads our own sets.
            unsafe {
                assert!(!libc::CPU_ISSET(first, &rest));
                assert_eq!(libc::CPU_COUNT(&rest), n - 1);
                assert!(!libc::CPU_EQUAL(&rest, &one));
            }
            // A helper follows once the set is known.
            let shared: Shared = OnceLock::new();
            let mut done = false;
            follow(&shared, &mut done);
            assert!(!done);
            let _ = shared.set(Some(rest));
            follow(&shared, &mut done);
            assert!(done);
            let now = get(0).unwrap();
            // SAFETY: reads our own sets.
            assert!(unsafe { libc::CPU_EQUAL(&now, &rest) });
        })
        .join()
        .unwrap();
    }
}
