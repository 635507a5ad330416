//! CPU affinity of the threads the backend starts.
//!
//! dxvmm pins the thread that serves a user-mode guest to the guest's host
//! CPU (`--host-cpu`), and calls the backend from it. Threads started from
//! there inherit the pin: a GPU driver's workers must not (they would share
//! one CPU), and the backend's completion thread must not run on the
//! guest's CPU at all (Linux places a woken thread next to its waker; on
//! the H100 machine that thread took an eighth of the guest CPU's time and
//! made tiny submissions vary by half from run to run). The trace
//! recorder's threads follow the same rule (`dxvmm-trace`'s `cpus.rs`).

/// A set of CPUs.
pub type CpuSet = libc::cpu_set_t;

fn get(tid: libc::pid_t) -> Option<CpuSet> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: CpuSet = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; tid 0 is the
    // calling thread, the process id its main thread.
    let r = unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<CpuSet>(), &mut set) };
    (r == 0).then_some(set)
}

/// The calling thread's CPUs.
pub fn current() -> Option<CpuSet> {
    get(0)
}

/// The process's CPUs (its main thread's).
pub fn process() -> Option<CpuSet> {
    // SAFETY: no arguments.
    get(unsafe { libc::getpid() })
}

/// Runs the calling thread on `set`; false if the kernel refused (the
/// thread stays where it was, which only costs time).
pub fn set_current(set: &CpuSet) -> bool {
    // SAFETY: sets the calling thread's affinity to a valid set of the
    // size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<CpuSet>(), set) == 0 }
}

/// The first CPU of `set`, alone (for tests that pin a thread to one).
pub fn first_of(set: &CpuSet) -> Option<CpuSet> {
    let first = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set; `c` is below CPU_SETSIZE.
        .find(|&c| unsafe { libc::CPU_ISSET(c, set) })?;
    // SAFETY: an all-zero cpu_set_t is a valid empty set; CPU_SET writes
    // our own, `first` below CPU_SETSIZE.
    Some(unsafe {
        let mut one: CpuSet = std::mem::zeroed();
        libc::CPU_SET(first, &mut one);
        one
    })
}

fn equal(a: &CpuSet, b: &CpuSet) -> bool {
    // SAFETY: CPU_EQUAL only reads both sets.
    unsafe { libc::CPU_EQUAL(a, b) }
}

/// The process's CPUs less the calling thread's, when the caller is pinned
/// to part of them and some are left; `None` otherwise.
pub fn away_from_caller() -> Option<CpuSet> {
    let main = process()?;
    let mine = current()?;
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut rest: CpuSet = unsafe { std::mem::zeroed() };
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

/// While alive, the calling thread runs with the process's CPUs; its own
/// come back on drop. Threads it starts meanwhile keep the process's.
pub(crate) struct Unpinned(Option<CpuSet>);

impl Unpinned {
    pub(crate) fn enter() -> Unpinned {
        match (current(), process()) {
            (Some(mine), Some(main)) if !equal(&mine, &main) => {
                Unpinned(set_current(&main).then_some(mine))
            }
            _ => Unpinned(None),
        }
    }
}

impl Drop for Unpinned {
    fn drop(&mut self) {
        if let Some(mine) = &self.0 {
            set_current(mine);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_sends_others_elsewhere_and_unpins_for_a_while() {
        let all = process().unwrap();
        // SAFETY: reads our own set.
        let n = unsafe { libc::CPU_COUNT(&all) } as usize;
        std::thread::spawn(move || {
            // Not pinned: nothing to keep away from.
            assert!(away_from_caller().is_none());
            if n < 2 {
                return;
            }
            let one = first_of(&all).unwrap();
            assert!(set_current(&one));
            let rest = away_from_caller().expect("the other CPUs");
            // SAFETY: reads our own sets.
            unsafe {
                assert_eq!(libc::CPU_COUNT(&one), 1);
                assert!(!equal(&rest, &one));
                assert_eq!(libc::CPU_COUNT(&rest) as usize, n - 1);
            }
            {
                let _u = Unpinned::enter();
                assert!(equal(&current().unwrap(), &all));
            }
            assert!(equal(&current().unwrap(), &one));
        })
        .join()
        .unwrap();
    }
}
