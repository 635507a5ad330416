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
//! (host-backend opens devices with the process's affinity), and its
//! completion thread keeps off the guest's CPU (host-backend's affinity).
//!
//! `auto` avoids the CPU that takes the host's device interrupts (a GPU's
//! completions arrive there): on the H100 machine a guest on it ran tiny
//! submissions at 11,800/s, on any other CPU at 18,700-27,600/s.

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
            let now = usize::try_from(now).ok().filter(|c| allowed.contains(c));
            let irqs = std::fs::read_to_string("/proc/interrupts")
                .map(|t| device_interrupts(&t))
                .unwrap_or_default();
            Ok(now.map(|c| away_from_interrupts(c, &allowed, &irqs)))
        }
        HostCpu::Cpu(c) if allowed.contains(&c) => Ok(Some(c)),
        HostCpu::Cpu(c) => Err(format!(
            "--host-cpu {c}: not a CPU dxvmm may run on (allowed: {})",
            ranges(&allowed)
        )),
    }
}

/// Device interrupts taken so far by each CPU, from the text of
/// /proc/interrupts: the lines of numbered IRQs (not the architecture's
/// counters: local timer, IPIs, ...), by the CPU numbers of the header.
fn device_interrupts(text: &str) -> std::collections::HashMap<usize, u64> {
    let mut lines = text.lines();
    let cpus: Vec<usize> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("CPU")?.parse().ok())
        .collect();
    let mut out = std::collections::HashMap::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(label) = words.next() else { continue };
        if label.trim_end_matches(':').parse::<u64>().is_err() {
            continue;
        }
        for (&cpu, w) in cpus.iter().zip(words) {
            let Ok(n) = w.parse::<u64>() else { break };
            *out.entry(cpu).or_insert(0) += n;
        }
    }
    out
}

/// `start`, unless it takes most of the device interrupts of the
/// `allowed` CPUs: then the allowed CPU that takes the fewest. A guest on
/// the CPU that takes a GPU's interrupts ran tiny submissions at half the
/// rate of any other CPU on the H100 machine.
fn away_from_interrupts(
    start: usize,
    allowed: &[usize],
    irqs: &std::collections::HashMap<usize, u64>,
) -> usize {
    let count = |c: &usize| irqs.get(c).copied().unwrap_or(0);
    let total: u64 = allowed.iter().map(count).sum();
    let mine = count(&start);
    if mine * 2 <= total || mine < 1000 {
        return start;
    }
    allowed.iter().copied().min_by_key(count).unwrap_or(start)
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
    fn auto_keeps_off_the_cpu_that_takes_device_interrupts() {
        let text = "           CPU0       CPU1       CPU2       CPU3
  0:         44          0          0          0   IO-APIC   2-edge      timer
 42:          0          0     248636          0  PCI-MSIX-0000:00:06   0-edge      nvidia
 43:         10          3          0          0  PCI-MSIX-0000:00:07   1-edge      virtio0
NMI:          0          0          0          0   Non-maskable interrupts
LOC:    9000000    9000000    9000000          9   Local timer interrupts
";
        let irqs = device_interrupts(text);
        assert_eq!(irqs[&0], 54);
        assert_eq!(irqs[&2], 248_636);
        assert_eq!(irqs[&3], 0);
        let all = [0, 1, 2, 3];
        // Starting on the GPU's interrupt CPU: the quietest instead.
        assert_eq!(away_from_interrupts(2, &all, &irqs), 3);
        // Elsewhere: where it started.
        assert_eq!(away_from_interrupts(0, &all, &irqs), 0);
        assert_eq!(away_from_interrupts(1, &all, &irqs), 1);
        // Only the CPUs allowed count.
        assert_eq!(away_from_interrupts(2, &[1, 2], &irqs), 1);
        // Nothing known: where it started.
        let none = device_interrupts("");
        assert_eq!(away_from_interrupts(2, &all, &none), 2);
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
