//! `dxvmm`: boots a Linux guest with dxvmm's virtual devices.

mod affinity;
mod cli;
mod collect;
mod config;
mod gpus;
mod guest;
mod images;
mod inject;
mod kvm;
mod size;
mod sys;
mod term;
mod trace;
mod uml;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;

use cli::{Accel, Cli, Command, RunArgs};
use config::Settings;
use size::MemorySize;

/// Exit statuses of `dxvmm run` besides the guest command's own.
pub mod exit {
    pub const GUEST_LOST: u8 = 122;
    pub const GUEST_PANIC: u8 = 123;
    pub const TIMEOUT: u8 = 124;
    pub const DXVMM_ERROR: u8 = 125;
    pub const INTERRUPTED: u8 = 130;
}

/// Smallest guest dxvmm boots: the kernel and the unpacked initramfs.
const MIN_MEMORY_MIB: u64 = 64;

/// A validated `dxvmm run`, whatever the engine.
#[derive(Debug)]
pub struct RunConfig {
    pub kernel: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub cpus: u8,
    pub memory: MemorySize,
    pub timeout: Option<u64>,
    pub serial_log: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    pub verbose: bool,
    pub command: Vec<String>,
    /// The virtio-dxg device's backend and the adapters the guest sees;
    /// `None`: no GPU device.
    pub gpu: Option<GpuConfig>,
    /// Receives the `--collect` files on the control console.
    pub collect: Option<Arc<Mutex<collect::Receiver>>>,
    /// The host CPU of a user-mode guest (`--host-cpu`); `None`: any.
    pub host_cpu: Option<usize>,
}

impl RunConfig {
    /// The kernel command-line word that names the `--collect` files.
    pub fn collect_word(&self) -> Option<String> {
        let files = self.collect.as_ref()?;
        let paths = files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .guest_paths();
        guest::encode_collect(&paths)
    }
}

/// What the guest's virtio-dxg device is made of.
pub struct GpuConfig {
    pub backend: Arc<dyn dxvmm_host_backend::Backend>,
    pub luids: Vec<dxvmm_protocol::abi::WinLuid>,
    /// Sees every frame of the device (`--trace`).
    pub observer: Option<Arc<dyn device_dxg::FrameObserver>>,
}

impl GpuConfig {
    /// The guest's virtio-dxg device.
    pub fn device(&self) -> std::io::Result<device_dxg::DxgDevice> {
        let mut dev = device_dxg::DxgDevice::new(self.backend.clone(), &self.luids)?;
        dev.set_observer(self.observer.clone());
        Ok(dev)
    }
}

impl std::fmt::Debug for GpuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuConfig")
            .field("luids", &self.luids)
            .finish()
    }
}

/// How a guest run ended.
#[derive(Debug)]
pub enum Outcome {
    Status(i32),
    Panic(String),
    Timeout(u64),
    Interrupted(i32),
    Lost(String),
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("guest memory of {0} is too small (at least {MIN_MEMORY_MIB} MiB)")]
    MemoryTooSmall(MemorySize),
    #[error("guest memory of {0} is more than this host has ({1} MiB)")]
    MemoryTooLarge(MemorySize, u64),
    #[error(transparent)]
    Kvm(#[from] kvm::Error),
    #[error(transparent)]
    Uml(#[from] uml::Error),
    #[error("--gpu: {0}")]
    GpuSelect(#[from] device_dxg::SelectError),
    #[error("--gpu: {0}")]
    GpuBackend(dxvmm_host_backend::BackendError),
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Inject(#[from] inject::Error),
    #[error(transparent)]
    Collect(#[from] collect::Error),
    #[error("--trace: {0}")]
    Trace(#[from] dxvmm_trace::TraceError),
    #[error("--trace: the guest has no GPU device to record (--gpu none, or no Vulkan adapter)")]
    TraceWithoutGpu,
    #[error("{0}")]
    HostCpu(String),
}

/// Opens the host GPUs for the guest. Without `--gpu`, a host with no
/// Vulkan adapter still boots guests (without /dev/dxg), and says so.
fn gpu_config(selection: Option<&device_dxg::GpuSelection>) -> Result<Option<GpuConfig>, Error> {
    if selection == Some(&device_dxg::GpuSelection::None) {
        return Ok(None);
    }
    let backend = match dxvmm_host_backend::WgpuBackend::new() {
        Ok(b) => b,
        Err(e) if selection.is_none() => {
            eprintln!("dxvmm: {e}: the guest gets no GPU");
            return Ok(None);
        }
        Err(e) => return Err(Error::GpuBackend(e)),
    };
    let backend: Arc<dyn dxvmm_host_backend::Backend> = Arc::new(backend);
    let default = device_dxg::GpuSelection::All;
    let luids = selection.unwrap_or(&default).resolve(&backend.adapters())?;
    Ok(Some(GpuConfig {
        backend,
        luids,
        observer: None,
    }))
}

fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn run(args: RunArgs) -> Result<Outcome, Error> {
    let trace_path = args.trace.clone();
    let args: Settings = config::resolve(args)?;
    if args.memory.mib() < MIN_MEMORY_MIB {
        return Err(Error::MemoryTooSmall(args.memory));
    }
    if let Some(host) = host_memory_mib() {
        if args.memory.mib() > host {
            return Err(Error::MemoryTooLarge(args.memory, host));
        }
    }
    // Injected files: the image's initramfs and their archive, in memory,
    // for as long as the guest runs.
    let injected = if args.inject.is_empty() {
        None
    } else {
        let base = args.initramfs.clone().unwrap_or_else(images::initramfs);
        Some(inject::Initramfs::build(&base, &args.inject)?)
    };
    // Checked before booting: a run must not end with nowhere to put them.
    let collect = match collect::plan(&args.collect)? {
        wanted if wanted.is_empty() => None,
        // A file cannot be larger than the guest's memory, which held it.
        wanted => Some(Arc::new(Mutex::new(collect::Receiver::new(
            wanted,
            args.memory.mib() << 20,
        )))),
    };
    let mut gpu = gpu_config(args.gpu.as_ref())?;
    let recorder = match (&trace_path, &mut gpu) {
        (None, _) => None,
        (Some(_), None) => return Err(Error::TraceWithoutGpu),
        (Some(path), Some(gpu)) => {
            let r = trace::recorder(path, gpu)?;
            gpu.observer = Some(r.clone());
            Some(r)
        }
    };
    let cfg = RunConfig {
        kernel: args.kernel,
        initramfs: injected.as_ref().map(|i| i.path()).or(args.initramfs),
        cmdline: args.cmdline,
        cpus: args.cpus,
        memory: args.memory,
        timeout: args.timeout,
        serial_log: args.serial_log,
        runtime_dir: args.runtime_dir,
        verbose: args.verbose,
        command: args.command,
        gpu,
        collect,
        host_cpu: affinity::choose(args.host_cpu).map_err(Error::HostCpu)?,
    };
    let outcome = match args.accel {
        Accel::Kvm => kvm::run(&cfg).map_err(Error::from),
        Accel::Uml => uml::run(&cfg).map_err(Error::from),
        Accel::Auto => match kvm::detect::detect() {
            kvm::detect::Support::Hardware => kvm::run(&cfg).map_err(Error::from),
            other => {
                eprintln!("dxvmm: {other}: using the user-mode engine");
                uml::run(&cfg).map_err(Error::from)
            }
        },
    };
    if let (Some(r), Some(path)) = (recorder, &trace_path) {
        trace::finish(&r, path);
    }
    let outcome = match (outcome, &cfg.collect) {
        (Ok(outcome), Some(files)) => collected(outcome, files),
        (outcome, _) => outcome,
    };
    // The process is about to exit: let it take the GPU backend down
    // rather than its destructors. NVIDIA's Vulkan driver aborts the
    // process ("free(): invalid pointer") when its device is destroyed at
    // exit, which would replace the guest's status with SIGABRT; every
    // guest object was already freed when the device was dropped.
    if let Some(gpu) = cfg.gpu {
        std::mem::forget(gpu.backend);
    }
    outcome
}

/// Says what became of the `--collect` files: a missing one is a warning and
/// leaves the command's status; one dxvmm failed to deliver replaces it.
fn collected(outcome: Outcome, files: &Mutex<collect::Receiver>) -> Result<Outcome, Error> {
    let finished = matches!(outcome, Outcome::Status(_));
    let report = files
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .finish(finished);
    for w in &report.warnings {
        eprintln!("dxvmm: {w}");
    }
    match report.error {
        Some(e) if finished => Err(e.into()),
        Some(e) => {
            eprintln!("dxvmm: {e}");
            Ok(outcome)
        }
        None => Ok(outcome),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();

    let cli = Cli::parse();
    match cli.command {
        Command::Gpus { json } => gpus::run(json),
        Command::Trace { command } => trace::run(command),
        Command::Run(args) => match run(args) {
            Ok(Outcome::Status(s)) => ExitCode::from((s & 0xff) as u8),
            Ok(Outcome::Panic(text)) => {
                eprintln!("dxvmm: guest kernel panic:\n{text}");
                ExitCode::from(exit::GUEST_PANIC)
            }
            Ok(Outcome::Timeout(secs)) => {
                eprintln!("dxvmm: the guest did not finish within {secs} s and was killed");
                ExitCode::from(exit::TIMEOUT)
            }
            Ok(Outcome::Interrupted(sig)) => {
                tracing::info!("stopped by signal {sig}");
                ExitCode::from(exit::INTERRUPTED)
            }
            Ok(Outcome::Lost(why)) => {
                eprintln!("dxvmm: {why}");
                ExitCode::from(exit::GUEST_LOST)
            }
            Err(e) => {
                eprintln!("dxvmm: {e}");
                ExitCode::from(exit::DXVMM_ERROR)
            }
        },
    }
}
