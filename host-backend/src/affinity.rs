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

/// The process's CPUs less the calling thread's and those sharing a core
/// with them, when the caller is pinned to part of them and some are left
/// (less the caller's alone when only its cores' other threads are left);
/// `None` otherwise. A hashing thread on the guest CPU's other hardware
/// thread takes half of that core from the guest.
pub fn away_from_caller() -> Option<CpuSet> {
    let main = process()?;
    let mine = current()?;
    let in_set = |c: usize, set: &CpuSet| {
        // SAFETY: CPU_ISSET reads the set; callers pass `c` below
        // CPU_SETSIZE.
        unsafe { libc::CPU_ISSET(c, set) }
    };
    let cpus = 0..libc::CPU_SETSIZE as usize;
    let mut cores = mine;
    for c in cpus.clone().filter(|&c| in_set(c, &mine)) {
        for s in siblings(c).into_iter().filter(|&s| s < cpus.end) {
            // SAFETY: CPU_SET writes our own set; `s` is below CPU_SETSIZE.
            unsafe { libc::CPU_SET(s, &mut cores) };
        }
    }
    let less = |away: &CpuSet| {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut rest: CpuSet = unsafe { std::mem::zeroed() };
        for c in cpus
            .clone()
            .filter(|&c| in_set(c, &main) && !in_set(c, away))
        {
            // SAFETY: CPU_SET writes our own set; `c` is below CPU_SETSIZE.
            unsafe { libc::CPU_SET(c, &mut rest) };
        }
        // SAFETY: CPU_COUNT only reads the set.
        (unsafe { libc::CPU_COUNT(&rest) } > 0).then_some(rest)
    };
    less(&cores).or_else(|| less(&mine))
}

/// The CPUs that share CPU `cpu`'s core, itself included, as sysfs lists
/// them (just `cpu` where it does not).
fn siblings(cpu: usize) -> Vec<usize> {
    let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| parse_cpu_list(&s))
        .unwrap_or_else(|| vec![cpu])
}

/// A kernel CPU list ("0-3,8,10-11") as its CPUs; `None` if malformed.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi): (usize, usize) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
            None => {
                let c = part.parse().ok()?;
                (c, c)
            }
        };
        // A bogus range is not walked: sysfs lists CPUs that exist.
        if hi < lo || hi - lo > libc::CPU_SETSIZE as usize {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    Some(cpus)
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
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
        // Every CPU lists itself among its core's threads.
        assert!(siblings(0).contains(&0));
    }

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
            }
            // Away from the pinned CPU's core too, where others are left.
            let cpu = (0..libc::CPU_SETSIZE as usize)
                // SAFETY: reads our own set; `c` is below CPU_SETSIZE.
                .find(|&c| unsafe { libc::CPU_ISSET(c, &one) })
                .unwrap();
            let core = siblings(cpu)
                .into_iter()
                // SAFETY: reads our own set; sysfs CPUs are below CPU_SETSIZE.
                .filter(|&c| unsafe { libc::CPU_ISSET(c, &all) })
                .count();
            let left = if n > core { n - core } else { n - 1 };
            // SAFETY: reads our own set.
            assert_eq!(unsafe { libc::CPU_COUNT(&rest) } as usize, left);
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
