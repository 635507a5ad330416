//! The KVM engine: dxvmm's own hypervisor on rust-vmm crates.
//!
//! One VM with guest memory from vm-memory, an in-kernel irqchip and PIT,
//! one thread per vCPU, a 16550 UART on COM1 for the kernel's console,
//! ACPI tables that describe the CPUs and the virtio-mmio devices, and the
//! same three virtio consoles as the user-mode engine, so that the guest's
//! /init works unchanged:
//!   hvc0  the guest command's stdin and stdout
//!   hvc1  its stderr
//!   hvc2  control channel, on which /init reports the exit status
//! Queue notifications arrive on ioeventfds and interrupts leave on irqfds;
//! one device thread (`device_thread`, on rust-vmm's event-manager) serves
//! the notifications and the devices' host input; vCPU threads handle
//! register accesses.

pub mod acpi;
pub mod boot;
pub mod cpu;
pub mod detect;
mod device_thread;
mod devices;
pub mod layout;

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuExit, VcpuFd, VmFd};
use virtio_devices::console::Console;
use virtio_devices::VirtioDevice;
use virtio_mmio::{MmioTransport, NotifyRegistrar};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vm_superio::Serial;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::guest::{self, ControlChannel, Event, InputGate};
use crate::term;
use crate::{Outcome, RunConfig};
use devices::{Access, Devices, IrqFd, KernelConsole, VirtioSlot};

/// Errors of the KVM engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unavailable(detect::Support),
    #[error("kernel not found at {0} (build the images: images/build.sh)")]
    MissingKernel(PathBuf),
    #[error("initramfs not found at {0} (build the images: images/build.sh)")]
    MissingInitramfs(PathBuf),
    #[error("cannot allocate {0} MiB of guest memory: {1}")]
    Memory(u64, String),
    #[error("KVM on this host runs at most {max} vCPUs; --cpus {asked} is too many")]
    TooManyCpus { asked: u8, max: usize },
    #[error("KVM: cannot {0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error("vCPU set-up: {0}")]
    Cpu(#[from] cpu::CpuError),
    #[error("virtio-mmio: {0}")]
    Virtio(#[from] virtio_mmio::Error),
    #[error("cannot create serial log {0}: {1}")]
    SerialLog(PathBuf, io::Error),
    #[error("cannot write the ACPI tables: {0}")]
    Acpi(vm_memory::GuestMemoryError),
    #[error("the ACPI tables take {0} bytes, more than the {max} reserved for them", max = layout::ACPI_MAX)]
    AcpiTooLarge(usize),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |e| Error::Kvm(what, e)
}

/// What the supervisor of a KVM guest hears about.
pub(crate) enum VmEvent {
    Guest(Event),
    Stop(Stop),
}

/// Why the guest's CPUs stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    PowerOff,
    Reset(&'static str),
    Halted(usize),
    Failed(String),
}

/// Time the guest gets to power off after it reported its status (or
/// panicked) before it is stopped.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);
/// The null signal, never delivered: marks the end of the control relay's
/// queue when the guest has stopped (see the end of `run`).
const CONTROL_PROBE: i32 = 0;
/// dxvmm's part of the kernel command line; --cmdline is appended.
const BASE_CMDLINE: &str = "console=ttyS0 panic=1 pci=off";

/// The default guest kernel: Debian's cloud kernel from images/build.sh.
pub fn default_kernel() -> PathBuf {
    crate::images::cache_dir().join("images/cloud/vmlinuz")
}

/// The kernel command line for `cfg`.
pub fn cmdline(cfg: &RunConfig, stdio: guest::HostStdio) -> String {
    let mut words = vec![BASE_CMDLINE.to_string()];
    if let Some(w) = guest::encode_command(&cfg.command) {
        words.push(w);
    }
    if let Some(w) = cfg.collect_word() {
        words.push(w);
    }
    words.extend(stdio.cmdline_words());
    if let Some(extra) = &cfg.cmdline {
        words.push(extra.trim().to_string());
    }
    words.retain(|w| !w.is_empty());
    words.join(" ")
}

/// KVM ioeventfds for the virtio-mmio transport.
struct IoEvents<'a>(&'a VmFd);

impl NotifyRegistrar for IoEvents<'_> {
    fn register(&self, addr: u64, datamatch: u32, fd: &EventFd) -> io::Result<()> {
        self.0
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), datamatch)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

/// The guest's memory, and KVM told where it is.
fn create_memory(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, Error> {
    let mem = GuestMemoryMmap::from_ranges(&layout::ram_regions(size))
        .map_err(|e| Error::Memory(size >> 20, e.to_string()))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| Error::Memory(size >> 20, e.to_string()))?;
        advise_huge_pages(host, region.len() as usize);
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping of `memory_size` bytes owned
        // by `mem`, which outlives the VM: it is dropped only after every
        // vCPU thread has been joined at the end of `run`.
        unsafe { vm.set_user_memory_region(r) }.map_err(kvm_err("register guest memory"))?;
    }
    Ok(mem)
}

/// Asks for transparent huge pages behind guest RAM. Where THP is
/// `madvise` (Debian's default), anonymous memory gets 4 KiB pages unless
/// asked: every guest TLB miss then walks both the guest's tables and 4 KiB
/// host tables, and the GPU's import of guest RAM pins 4 KiB pages. A host
/// that refuses (THP `never`) leaves RAM as it was, so the answer is only
/// logged.
fn advise_huge_pages(host: *mut u8, len: usize) {
    // SAFETY: `host..host+len` is one live anonymous mapping owned by the
    // guest memory; madvise only changes how the kernel backs it.
    let r = unsafe { libc::madvise(host.cast(), len, libc::MADV_HUGEPAGE) };
    if r != 0 {
        tracing::debug!(
            "guest RAM stays in small pages: {}",
            io::Error::last_os_error()
        );
    }
}

/// A no-op handler: the signal only kicks a vCPU thread out of KVM_RUN.
extern "C" fn kick_handler(_: libc::c_int) {}

fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

fn install_kick_handler() -> io::Result<()> {
    // SAFETY: sigaction with a zeroed struct plus a handler that does
    // nothing, so it is async-signal-safe. No SA_RESTART: KVM_RUN must
    // return EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = kick_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Describes a KVM_EXIT_INTERNAL_ERROR: its suberror and where the guest was.
fn internal_error(vcpu: &mut VcpuFd) -> String {
    // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, so `internal` is
    // the union member KVM filled in; it is plain integers.
    let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
    let what = match suberror {
        1 => "the hypervisor could not emulate an instruction",
        2 => "an exception while delivering another",
        3 => "an event could not be delivered",
        4 => "an unexpected exit",
        _ => "unknown suberror",
    };
    let rip = vcpu
        .get_regs()
        .map(|r| format!(" at rip {:#x}", r.rip))
        .unwrap_or_default();
    format!("{what} ({suberror}){rip}")
}

/// Runs one vCPU until the guest stops or `stop` is set.
fn vcpu_loop(
    index: usize,
    mut vcpu: VcpuFd,
    devices: Arc<Devices>,
    stop: Arc<AtomicBool>,
    events: Sender<VmEvent>,
) {
    let fail = |why: String| {
        let _ = events.send(VmEvent::Stop(Stop::Failed(why)));
    };
    while !stop.load(Ordering::Acquire) {
        let access = match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                devices.pio_read(port, data);
                Access::Continue
            }
            Ok(VcpuExit::IoOut(port, data)) => devices.pio_write(port, data),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                devices.mmio_read(addr, data);
                Access::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                devices.mmio_write(addr, data);
                Access::Continue
            }
            Ok(VcpuExit::Hlt) => {
                let _ = events.send(VmEvent::Stop(Stop::Halted(index)));
                Access::Stop
            }
            Ok(VcpuExit::Shutdown) => {
                let _ = events.send(VmEvent::Stop(Stop::Reset("a triple fault")));
                Access::Stop
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                let why = match kind {
                    kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Stop::PowerOff,
                    kvm_bindings::KVM_SYSTEM_EVENT_RESET => Stop::Reset("a KVM reset event"),
                    k => Stop::Failed(format!("KVM system event {k}")),
                };
                let _ = events.send(VmEvent::Stop(why));
                Access::Stop
            }
            Ok(VcpuExit::Intr) => Access::Continue,
            Ok(VcpuExit::InternalError) => {
                let why = internal_error(&mut vcpu);
                fail(format!("vCPU {index}: KVM internal error: {why}"));
                Access::Stop
            }
            Ok(VcpuExit::FailEntry(reason, _)) => {
                fail(format!(
                    "vCPU {index}: KVM refused to enter the guest (reason {reason:#x})"
                ));
                Access::Stop
            }
            Ok(other) => {
                fail(format!("vCPU {index}: unexpected exit {other:?}"));
                Access::Stop
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Access::Continue,
            Err(e) => {
                fail(format!("vCPU {index}: KVM_RUN: {e}"));
                Access::Stop
            }
        };
        if access == Access::Stop {
            // This vCPU is done; the supervisor stops the others.
            stop.store(true, Ordering::Release);
            break;
        }
    }
    // Where the guest was, for diagnosing a guest that hung or died.
    if let Ok(regs) = vcpu.get_regs() {
        tracing::debug!("vCPU {index} stopped at rip {:#x}", regs.rip);
    }
}

fn spawn_signal_forwarder(events: Sender<VmEvent>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if events.send(VmEvent::Guest(Event::Signal(sig))).is_err() {
                    break;
                }
            }
        });
}

/// The pieces of a VM that is ready to run.
struct Vm {
    // Field order is drop order: threads hold clones of what follows.
    vcpus: Vec<VcpuFd>,
    devices: Arc<Devices>,
    _vm: VmFd,
    _mem: GuestMemoryMmap,
}

/// Everything from opening /dev/kvm to vCPUs with registers set: the part
/// whose duration the benchmark reports as set-up time.
fn build_vm(cfg: &RunConfig, events: &Sender<VmEvent>, io: VmIo) -> Result<Vm, Error> {
    let device = detect::device_path();
    if let Some(why) = detect::open_problem(&device) {
        return Err(Error::Unavailable(detect::Support::Unavailable {
            device,
            why,
        }));
    }
    let kernel_path = cfg.kernel.clone().unwrap_or_else(default_kernel);
    if !kernel_path.is_file() {
        return Err(Error::MissingKernel(kernel_path));
    }
    let initramfs = match &cfg.initramfs {
        Some(p) => Some(p.clone()),
        None => Some(crate::images::initramfs()),
    };
    if let Some(p) = &initramfs {
        if !p.is_file() {
            return Err(Error::MissingInitramfs(p.clone()));
        }
    }
    let path = CString::new(device.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Io(io::Error::other("KVM device path contains a NUL byte")))?;
    let kvm = Kvm::new_with_path(&path).map_err(kvm_err("open the KVM device"))?;
    let max = kvm.get_max_vcpus();
    if cfg.cpus as usize > max {
        return Err(Error::TooManyCpus {
            asked: cfg.cpus,
            max,
        });
    }
    let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;
    let mem_size = cfg.memory.bytes();
    let mem = create_memory(&vm, mem_size)?;
    vm.set_tss_address(layout::KVM_TSS_ADDR as usize)
        .map_err(kvm_err("set the TSS address"))?;
    // Only Intel's real-mode support uses the identity map; AMD and
    // software KVMs may refuse it, which is harmless.
    if let Err(e) = vm.set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDR) {
        tracing::debug!("identity map address: {e}");
    }
    vm.create_irq_chip()
        .map_err(kvm_err("create the interrupt controllers"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("create the PIT"))?;

    // The kernel first: a bad file is the likeliest error.
    let kernel = boot::load_kernel(&mem, &kernel_path)?;
    let initrd = match &initramfs {
        Some(p) => Some(boot::load_initramfs(&mem, p, mem_size, &kernel)?),
        None => None,
    };
    let cmdline = cmdline(cfg, io.stdio);
    boot::write_cmdline(&mem, &kernel, &cmdline)?;
    tracing::debug!(%cmdline, "kernel command line");

    // COM1.
    let uart_irq = EventFd::new(EFD_NONBLOCK)?;
    vm.register_irqfd(&uart_irq, layout::COM1_GSI)
        .map_err(kvm_err("register COM1's interrupt"))?;
    let console = KernelConsole::new(io.serial_log, cfg.verbose, io.tail, events.clone());
    let uart = Serial::new(IrqFd(uart_irq), console);

    // The virtio consoles, in the order the guest numbers them.
    let mut virtio: Vec<Box<dyn VirtioDevice>> = vec![
        Box::new(Console::new(
            "stdio",
            Box::new(io::stdout()),
            Some(io.stdin),
        )),
        Box::new(Console::new("stderr", Box::new(io::stderr()), None)),
        Box::new(Console::new(
            "control",
            Box::new(
                ControlChannel::new(io.control, io.gate.clone()).collecting(cfg.collect.clone()),
            ),
            io.control_input,
        )),
    ];
    // The GPU, served by the device thread like the consoles.
    if let Some(gpu) = &cfg.gpu {
        virtio.push(Box::new(gpu.device()?));
    }
    let mut slots = Vec::new();
    let mut acpi_devices = Vec::new();
    for (i, dev) in virtio.into_iter().enumerate() {
        let base = layout::virtio_mmio_addr(i);
        let gsi = layout::VIRTIO_GSIS[i];
        let irq = EventFd::new(EFD_NONBLOCK)?;
        vm.register_irqfd(&irq, gsi)
            .map_err(kvm_err("register a virtio interrupt"))?;
        let t = MmioTransport::new(dev, mem.clone(), Arc::new(IrqFd(irq)))?;
        t.register_notifiers(base, &IoEvents(&vm))?;
        slots.push(VirtioSlot {
            base,
            transport: Arc::new(Mutex::new(t)),
            rescan: EventFd::new(EFD_NONBLOCK)?,
        });
        acpi_devices.push(acpi::MmioDevice {
            addr: base,
            size: virtio_mmio::MMIO_WINDOW_SIZE,
            gsi,
        });
    }
    let devices = Arc::new(Devices::new(uart, slots, events.clone()));

    let tables = acpi::build(layout::ACPI_ADDR, cfg.cpus, &acpi_devices);
    if tables.bytes.len() > layout::ACPI_MAX {
        return Err(Error::AcpiTooLarge(tables.bytes.len()));
    }
    mem.write_slice(&tables.bytes, GuestAddress(layout::ACPI_ADDR))
        .map_err(Error::Acpi)?;
    let info = boot::BootInfo {
        cmdline_len: cmdline.len() + 1,
        initramfs: initrd,
        mem_size,
        rsdp_addr: tables.rsdp_addr,
    };
    match kernel.entry {
        boot::Entry::Linux64(_) => boot::write_boot_params(&mem, &kernel, &info)?,
        boot::Entry::Pvh(_) => boot::write_pvh_info(&mem, &info)?,
    }

    let base_cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("read the supported CPUID"))?;
    let mut vcpus = Vec::new();
    for id in 0..cfg.cpus {
        let vcpu = vm
            .create_vcpu(id as u64)
            .map_err(kvm_err("create a vCPU"))?;
        cpu::setup_common(&vcpu, &cpu::cpuid_for(&base_cpuid, id, cfg.cpus))?;
        if id == 0 {
            cpu::setup_boot_cpu(&vcpu, &mem, kernel.entry)?;
        }
        vcpus.push(vcpu);
    }
    Ok(Vm {
        vcpus,
        devices,
        _vm: vm,
        _mem: mem,
    })
}

/// Host-side ends the VM's devices are wired to.
struct VmIo {
    serial_log: Option<File>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stdin: OwnedFd,
    control: Sender<Event>,
    gate: InputGate,
    stdio: guest::HostStdio,
    /// The control console's input (terminal size changes).
    control_input: Option<OwnedFd>,
}

/// Boots the guest on KVM and supervises it until it ends.
pub fn run(cfg: &RunConfig) -> Result<Outcome, Error> {
    let started = Instant::now();
    let serial_log = match &cfg.serial_log {
        Some(p) => Some(File::create(p).map_err(|e| Error::SerialLog(p.clone(), e))?),
        None => None,
    };
    let (events_tx, events) = channel::<VmEvent>();
    // The control console speaks guest::Event; relay it.
    let (control_tx, control_rx) = channel::<Event>();
    let control_probe = control_tx.clone();
    {
        let tx = events_tx.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for ev in control_rx {
                    if tx.send(VmEvent::Guest(ev)).is_err() {
                        break;
                    }
                }
            })?;
    }
    let stdio = guest::HostStdio::detect();
    let stdin_tty = stdio.stdin_tty;
    let (stdin_r, stdin_w) = crate::sys::input_pipe()?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let gate = InputGate::default();
    let io = VmIo {
        serial_log,
        tail: tail.clone(),
        stdin: stdin_r,
        control: control_tx,
        gate: gate.clone(),
        stdio,
        control_input: guest::forward_window_size(stdio)?,
    };
    let mut vm = build_vm(cfg, &events_tx, io)?;
    tracing::debug!("VM set up in {:?}", started.elapsed());

    install_kick_handler()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (i, vcpu) in vm.vcpus.drain(..).enumerate() {
        let (d, s, e) = (vm.devices.clone(), stop.clone(), events_tx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || vcpu_loop(i, vcpu, d, s, e))?,
        );
    }
    let device_stop = EventFd::new(EFD_NONBLOCK)?;
    let device_thread = {
        let devices = vm.devices.clone();
        let stop_evt = device_stop.try_clone()?;
        let e = events_tx.clone();
        std::thread::Builder::new()
            .name("devices".into())
            .spawn(move || {
                if let Err(err) = device_thread::run(&devices.virtio, stop_evt) {
                    let _ = e.send(VmEvent::Stop(Stop::Failed(format!("device thread: {err}"))));
                }
            })?
    };
    spawn_signal_forwarder(events_tx.clone());
    let raw_terminal = if cfg.command.is_empty() || stdin_tty {
        term::RawTerminal::enter(0)
    } else {
        None
    };
    // COM1 gets input at once: a guest on ttyS0 (no virtio consoles, or a
    // test guest) never says `ready`.
    let interrupt = events_tx.clone();
    let devices = vm.devices.clone();
    guest::spawn_stdin_forwarder(
        stdin_w,
        raw_terminal.is_some(),
        !stdin_tty,
        gate,
        move || {
            let _ = interrupt.send(VmEvent::Guest(Event::Signal(libc::SIGINT)));
        },
        move |chunk| {
            devices.feed_uart(chunk);
        },
    );
    drop(events_tx);

    // Supervise.
    let timeout_at = cfg.timeout.map(|s| started + Duration::from_secs(s));
    let mut grace_at: Option<Instant> = None;
    let mut status: Option<i32> = None;
    let mut panic: Option<String> = None;
    let mut stopped_by: Option<Outcome> = None;
    let mut stop_reason: Option<Stop> = None;
    loop {
        let deadline = [timeout_at, grace_at].into_iter().flatten().min();
        let ev = match deadline {
            Some(d) => events.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match ev {
            Ok(VmEvent::Guest(Event::GuestStatus(s))) => {
                status.get_or_insert(s);
                grace_at.get_or_insert(Instant::now() + POWEROFF_GRACE);
            }
            Ok(VmEvent::Guest(Event::Panic(text))) => {
                panic.get_or_insert(text);
                grace_at.get_or_insert(Instant::now() + POWEROFF_GRACE);
            }
            Ok(VmEvent::Guest(Event::Signal(sig))) => {
                stopped_by = Some(Outcome::Interrupted(sig));
                break;
            }
            Ok(VmEvent::Guest(_)) => {}
            Ok(VmEvent::Stop(why)) => {
                stop_reason = Some(why);
                break;
            }
            Err(RecvTimeoutError::Timeout) => {
                if timeout_at.is_some_and(|t| Instant::now() >= t) {
                    stopped_by = Some(Outcome::Timeout(cfg.timeout.unwrap_or_default()));
                }
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }

    // Stop every vCPU: set the flag, then kick each thread out of KVM_RUN
    // until it has left (a kick that lands just before KVM_RUN is lost, so
    // it is repeated).
    stop.store(true, Ordering::Release);
    let kick_deadline = Instant::now() + Duration::from_secs(2);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < kick_deadline {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            // SAFETY: the thread is alive (not finished, and not joined, so
            // its pthread_t is valid); the signal's handler does nothing.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut stuck = false;
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
        } else {
            stuck = true;
        }
    }
    let _ = device_stop.write(1);
    let _ = device_thread.join();
    drop(raw_terminal);
    vm.devices
        .uart
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .writer_mut()
        .finish();
    // Late events: the panic text may end only now, and the guest's status
    // may still be on its way through the control relay (a guest that
    // reports its status and powers off at once races it). Nothing writes
    // the control channel any more, so a probe sent behind the status comes
    // out of the relay after it: take everything up to the probe.
    let _ = control_probe.send(Event::Signal(CONTROL_PROBE));
    let drain_until = Instant::now() + Duration::from_secs(1);
    while let Ok(ev) = events.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
        match ev {
            VmEvent::Guest(Event::Signal(CONTROL_PROBE)) => break,
            VmEvent::Guest(Event::GuestStatus(s)) => status = status.or(Some(s)),
            VmEvent::Guest(Event::Panic(text)) => panic = panic.or(Some(text)),
            _ => {}
        }
    }
    tracing::debug!(?stop_reason, "guest stopped after {:?}", started.elapsed());
    if stuck {
        // A vCPU thread still in KVM_RUN may touch guest memory: never
        // unmap it under that thread; the process ends soon anyway.
        tracing::warn!("a vCPU did not stop; leaving the VM to process exit");
        std::mem::forget(vm);
    }

    if let Some(outcome) = stopped_by {
        return Ok(outcome);
    }
    if let Some(text) = panic {
        return Ok(Outcome::Panic(text));
    }
    if let Some(s) = status {
        return Ok(Outcome::Status(s));
    }
    let last_line = || {
        tail.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!("; last console line: {}", l.trim()))
            .unwrap_or_default()
    };
    Ok(match stop_reason {
        Some(Stop::PowerOff) if cfg.command.is_empty() => Outcome::Status(0),
        Some(Stop::Reset(_)) if cfg.command.is_empty() => Outcome::Status(0),
        Some(Stop::PowerOff) => {
            Outcome::Lost("the guest powered off without reporting a status".into())
        }
        Some(Stop::Reset(how)) => Outcome::Lost(format!(
            "the guest reset through {how} without reporting a status{}",
            last_line()
        )),
        Some(Stop::Halted(cpu)) => Outcome::Lost(format!(
            "vCPU {cpu} halted with interrupts off, without a status{}",
            last_line()
        )),
        Some(Stop::Failed(why)) => {
            Outcome::Lost(format!("the guest stopped: {why}{}", last_line()))
        }
        None => Outcome::Lost(format!(
            "the guest stopped without reporting a status{}",
            last_line()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::MemorySize;

    fn cfg(command: &[&str], extra: Option<&str>) -> RunConfig {
        RunConfig {
            kernel: None,
            initramfs: None,
            cmdline: extra.map(String::from),
            cpus: 1,
            memory: MemorySize::from_mib(256),
            timeout: None,
            serial_log: None,
            runtime_dir: None,
            verbose: false,
            command: command.iter().map(|s| s.to_string()).collect(),
            gpu: None,
            collect: None,
            host_cpu: None,
        }
    }

    /// The VmFlags of the mapping that starts at `addr`, from smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{addr:x}-");
        smaps
            .lines()
            .skip_while(|l| !l.starts_with(&head))
            .find_map(|l| l.strip_prefix("VmFlags:"))
            .expect("the mapping in smaps")
            .to_string()
    }

    #[test]
    fn guest_ram_asks_for_huge_pages() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&layout::ram_regions(64 << 20)).unwrap();
        let region = mem.iter().next().unwrap();
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .unwrap();
        advise_huge_pages(host, region.len() as usize);
        // "hg": the mapping carries MADV_HUGEPAGE, whatever the host's THP
        // setting then makes of it.
        let flags = vm_flags(host as usize);
        assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
    }

    #[test]
    fn cmdline_carries_console_command_and_extras() {
        let terminal = guest::HostStdio {
            stdin_tty: true,
            stdout_tty: true,
            size: Some((132, 43)),
        };
        let c = cmdline(&cfg(&["true"], Some(" earlyprintk=serial ")), terminal);
        assert!(c.starts_with("console=ttyS0 "));
        assert!(c.contains(" dxvmm.cmd=dHJ1ZQA= "), "{c}");
        assert!(c.contains(" dxvmm.tty=1 dxvmm.winsize=132x43 "), "{c}");
        assert!(c.ends_with(" earlyprintk=serial"));
        let to_file = guest::HostStdio {
            stdin_tty: true,
            stdout_tty: false,
            size: None,
        };
        assert_eq!(cmdline(&cfg(&[], None), to_file), BASE_CMDLINE);
        let piped = guest::HostStdio {
            stdin_tty: false,
            stdout_tty: true,
            size: None,
        };
        assert!(cmdline(&cfg(&[], None), piped).ends_with(" dxvmm.stdin=pipe"));
    }
}
