//! Command-line interface of `dxvmm`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::size::MemorySize;

#[derive(Parser, Debug)]
#[command(
    name = "dxvmm",
    version,
    about = "GPU paravirtualization (WSL 2 style /dev/dxg) for Linux guests on KVM or User-mode Linux",
    long_about = "dxvmm boots a Linux guest with a virtual GPU: /dev/dxg, with WSL 2's D3DKMT ioctl \
        interface, backed by the host's GPUs through Vulkan (see `dxvmm gpus`).\n\n\
        Engines: `kvm` runs Debian's cloud kernel on dxvmm's own KVM hypervisor (hosts with \
        VT-x/AMD-V); `uml` runs the guest as User-mode Linux with dxvmm's devices attached over \
        vhost-user (no hardware virtualization needed). Guest images come from `images/build.sh` \
        and live in $DXVMM_CACHE (default ~/.cache/dxvmm)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of `Run` costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a guest, run a command in it (or a shell), and exit with its status.
    #[command(after_help = EXIT_HELP)]
    Run(RunArgs),
    /// List the host GPUs the guest will see: name, LUID, graphics backend,
    /// driver and memory, the default adapter first.
    Gpus {
        /// Print a JSON array (one object per adapter) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Inspect, replay and export GPU-PV traces recorded with `run --trace`
    /// (docs/trace.md).
    Trace {
        #[command(subcommand)]
        command: TraceCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum TraceCommand {
    /// Print the decoded stream: one line per message.
    Show {
        /// The trace file.
        file: PathBuf,
        /// One JSON object per line, with each message fully decoded.
        #[arg(long)]
        json: bool,
        /// Only this guest process (its handle, in hex as `show` prints it).
        #[arg(long, value_name = "HANDLE", value_parser = parse_hex_u32)]
        process: Option<u32>,
        /// Only commands whose name contains this (any case), e.g. `lock2`.
        #[arg(long, value_name = "NAME")]
        command: Option<String>,
        /// Also the memory, memory-map and end records.
        #[arg(long)]
        all: bool,
    },
    /// Counts, failures, latencies and bytes per command.
    Stats {
        /// The trace file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-execute the recorded requests on this host's backend, without a
    /// guest, and report the first reply that differs from the recording.
    Replay {
        /// The trace file.
        file: PathBuf,
        /// The backend: the host's Vulkan adapters, or the CPU test double.
        #[arg(long, value_enum, default_value_t = ReplayBackend::Wgpu)]
        backend: ReplayBackend,
        /// Adapters to replay on, in the recorded guest's order (as `run
        /// --gpu`) [default: the first ones].
        #[arg(long, value_name = "SPEC")]
        gpu: Option<device_dxg::GpuSelection>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare two recordings call by call and report where they differ:
    /// requests or replies that differ, by field, and calls only one has
    /// (handles, request ids, adapter LUIDs, guest addresses, times and
    /// when events arrive may differ between runs).
    Diff {
        /// The first trace (A).
        a: PathBuf,
        /// The trace to compare with it (B).
        b: PathBuf,
        /// Leave out requests whose command name contains this (any case),
        /// with their replies: e.g. `waitforsyncobjectfromcpu`, which a
        /// guest sends only when its fence is not reached yet. Repeatable.
        #[arg(long, value_name = "NAME")]
        skip: Vec<String>,
        /// Report at most this many differences.
        #[arg(long, value_name = "N", default_value_t = 20)]
        max: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a pcapng capture for Wireshark (dissector:
    /// trace/wireshark/dxvmm.lua).
    ExportPcapng {
        /// The trace file.
        file: PathBuf,
        /// The capture to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReplayBackend {
    /// The host's GPUs through wgpu (Vulkan; lavapipe included).
    Wgpu,
    /// dxvmm's CPU test double.
    Soft,
}

fn parse_hex_u32(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("'{s}' is not a handle in hex"))
}

pub const EXIT_HELP: &str = "\
Exit status:
  0-255  the guest command's own exit status (a shell's, without a command)
  2      bad command-line usage
  122    the guest stopped without reporting a status (killed, or it crashed)
  123    the guest kernel panicked (the panic text is printed)
  124    --timeout expired and the guest was killed
  125    dxvmm itself failed (bad arguments, missing images, host errors)
  130    interrupted (SIGINT, or Ctrl-] on an interactive console)

Interactive console: with no command, the guest runs a shell on its virtio console; \
`exit` powers the guest off and Ctrl-] ends the VM from the host.";

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// KVM where it can run an unmodified kernel, else User-mode Linux.
    Auto,
    /// dxvmm's KVM hypervisor.
    Kvm,
    /// User-mode Linux with devices over vhost-user.
    Uml,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Read the run's settings from a TOML file (keys as the long flags:
    /// kernel, memory, gpu, inject, command, timeout, ...; see docs/ci.md).
    /// Flags given here override its values; --inject and --collect add to
    /// its lists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Put a host file or directory (recursively) into the guest before the
    /// command runs, at GUEST_PATH [default: /NAME, NAME being the host
    /// path's last component; a GUEST_PATH ending in / gets NAME appended].
    /// Modes are kept and links followed. Repeatable.
    #[arg(long, value_name = "HOST_PATH[:GUEST_PATH]")]
    pub inject: Vec<String>,

    /// Once the command exits, copy this guest file to the host, at
    /// HOST_PATH [default: the guest file's name, in the current directory;
    /// a HOST_PATH that is a directory gets the name appended]. The file
    /// appears whole or not at all; one the guest lacks is a warning.
    /// Repeatable.
    #[arg(long, value_name = "GUEST_PATH[:HOST_PATH]")]
    pub collect: Vec<String>,

    /// Which engine runs the guest's CPU [default: auto].
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,

    /// Guest kernel: a UML executable for `uml`, a bzImage or vmlinux ELF for `kvm`
    /// [default: the one images/build.sh made for the engine].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Initramfs (newc cpio, optionally gzip'd) [default: images/build.sh's].
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,

    /// Extra kernel command-line arguments, appended to dxvmm's own.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub cmdline: Option<String>,

    /// Number of vCPUs (the user-mode engine runs one) [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=255))]
    pub cpus: Option<u8>,

    /// Host CPU of a user-mode guest: UML's processes and the threads that
    /// serve its devices run there, so a system call's hops stay on one CPU
    /// (docs/uml.md). `auto`: the CPU dxvmm starts on, unless that one
    /// takes most of the host's device interrupts (then the quietest);
    /// `none`: wherever the scheduler puts them; or a CPU number
    /// [default: auto].
    #[arg(long, value_name = "CPU")]
    pub host_cpu: Option<crate::affinity::HostCpu>,

    /// Guest memory: a number of MiB, or a size with a unit (K, M, G; KiB,
    /// MiB, GiB) [default: 512M].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<MemorySize>,

    /// Kill the guest if it has not finished after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<u64>,

    /// Write the guest's whole kernel console to this file.
    #[arg(long, value_name = "FILE")]
    pub serial_log: Option<PathBuf>,

    /// Directory in which dxvmm makes its private runtime directory (device
    /// sockets) [default: $XDG_RUNTIME_DIR, else /tmp].
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// Host GPUs the guest sees through /dev/dxg: `all`, `none` (no GPU
    /// device), or a comma-separated list of indices, LUIDs (HIGH:LOW) or
    /// name fragments as `dxvmm gpus` prints them [default: all, or none
    /// when the host has no Vulkan adapter].
    #[arg(long, value_name = "SPEC")]
    pub gpu: Option<device_dxg::GpuSelection>,

    /// Record every GPU-PV message (and the guest memory the host reads at
    /// submit and writes at LOCK2) to this trace file (docs/trace.md).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// Also show the guest kernel's console on stderr.
    #[arg(short, long)]
    pub verbose: bool,

    /// The command to run in the guest, after `--`; without one, a shell.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn parse_timeout(s: &str) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of seconds"))?;
    if v == 0 {
        return Err("the timeout must be at least 1 second".to_string());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn command_after_double_dash() {
        let cli =
            Cli::try_parse_from(["dxvmm", "run", "--memory", "1G", "--", "ls", "-l", "/"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(r.command, ["ls", "-l", "/"]);
        assert_eq!(r.memory.map(|m| m.mib()), Some(1024));
        assert_eq!(r.accel, None);
    }

    #[test]
    fn zero_timeout_is_rejected() {
        assert!(Cli::try_parse_from(["dxvmm", "run", "--timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["dxvmm", "run", "--timeout", "x"]).is_err());
    }
}
