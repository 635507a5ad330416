//! `--host-cpu`: the host CPU a user-mode guest runs on.
//!
//! Every system call of a UML guest's process is a ptrace round trip between
//! two host processes (the guest process and the UML kernel), and every
//! request to a device is a round trip between UML and the thread serving
//! the device. Left to the scheduler, those hops cross CPUs, and each one
//! waits for a sleeping CPU to wake: on a 16-core host a trivial /dev/dxg
//! ioctl took 70-80 us that way and 41 us with UML and the device threads
//! on one CPU, and tiny GPU submissions went from 1,000-2,800 to 14,000-
//! 16,700 per second (docs/uml.md). UML 6.1 runs one vCPU, so one CPU costs
//! the guest no parallelism. The GPU driver's own threads are not pinned
//! (host-backend opens devices with the process's affinity).

use std::fmt;
use std::io;
use std::str::FromStr;

/// Where the user-mode guest runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostCpu {
    /// On the CPU dxvmm starts on.
    #[default]
    Auto,
    /// Wherever the scheduler puts it.
    Free,
    /// On this CPU.
    Cpu(usize),
}

impl FromStr for HostCpu {
    type Err = String;

    fn from_str(s: &str) -> Result<HostCpu, String> {
        match s {
            "auto" => Ok(HostCpu::Auto),
            "none" => Ok(HostCpu::Free),
            n => n
                .parse::<usize>()
                .ok()
                .filter(|&c| c < libc::CPU_SETSIZE as usize)
                .map(HostCpu::Cpu)
                .ok_or_else(|| format!("'{s}' is not auto, none or a CPU number")),
        }
    }
}

impl fmt::Display for HostCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostCpu::Auto => f.write_str("auto"),
            HostCpu::Free => f.write_str("none"),
            HostCpu::Cpu(n) => write!(f, "{n}"),
        }
    }
}

/// The CPUs this process may run on.
fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the
    // calling thread, which has the process's affinity here.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads our own set; `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Resolves `--host-cpu` to a CPU, or `None` for no pinning.
pub fn choose(want: HostCpu) -> Result<Option<usize>, String> {
    let allowed = allowed().map_err(|e| format!("--host-cpu: {e}"))?;
    match want {
        HostCpu::Free => Ok(None),
        // A single allowed CPU needs no pinning.
        HostCpu::Auto if allowed.len() <= 1 => Ok(None),
        HostCpu::Auto => {
            // SAFETY: no arguments; returns the current CPU or -1.
            let now = unsafe { libc::sched_getcpu() };
            Ok(usize::try_from(now).ok().filter(|c| allowed.contains(c)))
        }
        HostCpu::Cpu(c) if allowed.contains(&c) => Ok(Some(c)),
        HostCpu::Cpu(c) => Err(format!(
            "--host-cpu {c}: not a CPU dxvmm may run on (allowed: {})",
            ranges(&allowed)
        )),
    }
}

/// "0-3,6" for [0, 1, 2, 3, 6].
fn ranges(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// Pins the calling thread (or, between fork and exec, the new process) to
/// one CPU. Makes only a system call, so it is async-signal-safe.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: CPU_SET on our own set, `cpu` checked to be below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of
    // the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["auto", "none", "0", "7"] {
            assert_eq!(s.parse::<HostCpu>().unwrap().to_string(), s);
        }
        for bad in ["", "-1", "x", "1.5", "100000"] {
            assert!(bad.parse::<HostCpu>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_are_compact() {
        assert_eq!(ranges(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(ranges(&[5]), "5");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn a_cpu_outside_the_set_is_one_line() {
        let e = choose(HostCpu::Cpu(libc::CPU_SETSIZE as usize - 1)).unwrap_err();
        assert!(e.starts_with("--host-cpu 1023: not a CPU"), "{e}");
        assert!(!e.contains('\n'));
        assert_eq!(choose(HostCpu::Free).unwrap(), None);
        let first = allowed().unwrap()[0];
        assert_eq!(choose(HostCpu::Cpu(first)).unwrap(), Some(first));
    }
}
