//! The user-mode engine: the guest kernel runs as a User-mode Linux process
//! and dxvmm serves its virtio devices over vhost-user sockets in a private
//! runtime directory.
//!
//! Devices, in the order the guest numbers them:
//!   hvc0  virtio-console: the guest command's stdin and stdout
//!   hvc1  virtio-console: the guest command's stderr
//!   hvc2  virtio-console: control channel, on which /init reports the status
//!   dxg   virtio-dxg (id 61): the GPU, unless `--gpu none` or no host GPU
//! The UML kernel's own console (printk) goes to a pipe that dxvmm reads for
//! `--serial-log`, `--verbose` and panic detection.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use virtio_devices::console::Console;
use virtio_devices::VirtioDevice;
use vmm_sys_util::eventfd::EventFd;

use crate::guest::{self, ControlChannel, Event, InputGate, PanicScanner};
use crate::term;
use crate::{Outcome, RunConfig};

/// Errors of the user-mode engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("UML kernel not found at {0} (build the images: images/build.sh)")]
    MissingKernel(PathBuf),
    #[error("initramfs not found at {0} (build the images: images/build.sh)")]
    MissingInitramfs(PathBuf),
    #[error("the user-mode engine runs one vCPU; use --cpus 1")]
    Cpus,
    #[error("cannot create a runtime directory in {0}: {1}")]
    RuntimeDir(PathBuf, io::Error),
    #[error("socket path {0} is too long for a Unix socket; pick a shorter --runtime-dir")]
    SocketPathTooLong(PathBuf),
    #[error("cannot listen on {0}: {1}")]
    Listen(PathBuf, io::Error),
    #[error("cannot start the UML kernel {0}: {1}")]
    Spawn(PathBuf, io::Error),
    #[error("the guest exited before connecting its devices ({status}){tail}")]
    DiedEarly { status: String, tail: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Time the guest gets to power off after it reported its status (or
/// panicked) before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);
/// Console lines kept for error messages.
const CONSOLE_TAIL_LINES: usize = 12;
/// Unix socket paths are limited by sockaddr_un.sun_path.
const SUN_PATH_MAX: usize = 107;

/// A private directory for the device sockets, removed on drop.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    fn create(parent: Option<&Path>) -> Result<RuntimeDir, Error> {
        let parent = parent
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from))
            .unwrap_or_else(std::env::temp_dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!("dxvmm-{}-{nanos:08x}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::RuntimeDir(parent, e))?;
        Ok(RuntimeDir(dir))
    }
}

impl RuntimeDir {
    fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// One vhost-user device served on its own thread.
struct DeviceThread {
    stop: EventFd,
    handle: JoinHandle<()>,
}

fn spawn_device(
    name: &'static str,
    socket: &Path,
    mut device: Box<dyn VirtioDevice>,
    connected: Arc<AtomicUsize>,
    events: Sender<Event>,
    cpu: Option<usize>,
) -> Result<DeviceThread, Error> {
    if socket.as_os_str().len() > SUN_PATH_MAX {
        return Err(Error::SocketPathTooLong(socket.to_path_buf()));
    }
    let listener =
        UnixListener::bind(socket).map_err(|e| Error::Listen(socket.to_path_buf(), e))?;
    let stop = EventFd::new(libc::EFD_NONBLOCK)?;
    let stop_for_thread = stop.try_clone()?;
    let handle = std::thread::Builder::new()
        .name(format!("vhost-user-{name}"))
        .spawn(move || {
            if let Some(cpu) = cpu {
                if let Err(e) = crate::affinity::pin_to_cpu(cpu) {
                    tracing::warn!("device {name} not pinned to CPU {cpu}: {e}");
                }
            }
            let r = vhost_user_device::serve_listener(
                &listener,
                device.as_mut(),
                &stop_for_thread,
                || {
                    connected.fetch_add(1, Ordering::SeqCst);
                    let _ = events.send(Event::DeviceConnected);
                },
            );
            let _ = events.send(Event::DeviceEnded(
                name.to_string(),
                r.err().map(|e| e.to_string()),
            ));
        })?;
    Ok(DeviceThread { stop, handle })
}

/// Reads the UML kernel's console: serial log, --verbose echo, panic text.
fn spawn_console_reader(
    console: OwnedFd,
    mut log: Option<File>,
    verbose: bool,
    tail: Arc<Mutex<VecDeque<String>>>,
    events: Sender<Event>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("uml-console".into())
        .spawn(move || {
            let mut input = File::from(console);
            let mut scanner = PanicScanner::default();
            let mut buf = [0u8; 4096];
            let mut partial = Vec::new();
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                if let Some(f) = log.as_mut() {
                    let _ = f.write_all(chunk);
                }
                if verbose {
                    let _ = io::stderr().write_all(chunk);
                }
                if let Some(text) = scanner.feed(chunk) {
                    let _ = events.send(Event::Panic(text));
                }
                partial.extend_from_slice(chunk);
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=pos).collect();
                    t.push_back(String::from_utf8_lossy(&line).trim_end().to_string());
                    if t.len() > CONSOLE_TAIL_LINES {
                        t.pop_front();
                    }
                }
            }
            if let Some(text) = scanner.finish() {
                let _ = events.send(Event::Panic(text));
            }
            if let Some(f) = log.as_mut() {
                let _ = f.flush();
            }
        })
}

/// Boots the guest under UML and supervises it until it ends.
pub fn run(cfg: &RunConfig) -> Result<Outcome, Error> {
    let kernel = cfg.kernel.clone().unwrap_or_else(crate::images::uml_kernel);
    let initramfs = cfg
        .initramfs
        .clone()
        .unwrap_or_else(crate::images::initramfs);
    if !kernel.is_file() {
        return Err(Error::MissingKernel(kernel));
    }
    if !initramfs.is_file() {
        return Err(Error::MissingInitramfs(initramfs));
    }
    if cfg.cpus != 1 {
        return Err(Error::Cpus);
    }
    let serial_log = match &cfg.serial_log {
        Some(p) => Some(File::create(p).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create serial log {}: {e}", p.display()),
            )
        })?),
        None => None,
    };

    let runtime = RuntimeDir::create(cfg.runtime_dir.as_deref())?;
    let (events_tx, events) = channel::<Event>();
    let connected = Arc::new(AtomicUsize::new(0));

    // Devices. The stdio console's input is a pipe fed from our stdin.
    let stdio = guest::HostStdio::detect();
    let stdin_tty = stdio.stdin_tty;
    let (stdin_r, stdin_w) = crate::sys::input_pipe()?;
    let control_input = guest::forward_window_size(stdio)?;
    let gate = InputGate::default();
    let mut devices: Vec<(&'static str, Box<dyn VirtioDevice>)> = vec![
        (
            "stdio",
            Box::new(Console::new("stdio", Box::new(io::stdout()), Some(stdin_r))),
        ),
        (
            "stderr",
            Box::new(Console::new("stderr", Box::new(io::stderr()), None)),
        ),
        (
            "control",
            Box::new(Console::new(
                "control",
                Box::new(
                    ControlChannel::new(events_tx.clone(), gate.clone())
                        .collecting(cfg.collect.clone()),
                ),
                control_input,
            )),
        ),
    ];
    if let Some(gpu) = &cfg.gpu {
        devices.push(("gpu", Box::new(gpu.device()?)));
    }
    let mut args: Vec<String> = vec![
        format!("mem={}M", cfg.memory.mib()),
        format!("initrd={}", initramfs.display()),
        "con=null".into(),
        "ssl=null".into(),
        "con0=null,fd:1".into(),
    ];
    // UML's processes and the threads serving its devices share one CPU
    // (crate::affinity says why).
    let cpu = cfg.host_cpu;
    let mut threads = Vec::new();
    for (name, dev) in devices {
        let sock = runtime.0.join(format!("{name}.sock"));
        let id = dev.device_type();
        threads.push(spawn_device(
            name,
            &sock,
            dev,
            connected.clone(),
            events_tx.clone(),
            cpu,
        )?);
        args.push(format!("virtio_uml.device={}:{id}", sock.display()));
    }
    let ndevices = threads.len();
    if let Some(word) = guest::encode_command(&cfg.command) {
        args.push(word);
    }
    if let Some(word) = cfg.collect_word() {
        args.push(word);
    }
    args.extend(stdio.cmdline_words());
    if let Some(extra) = &cfg.cmdline {
        args.extend(extra.split_whitespace().map(String::from));
    }
    tracing::debug!(?args, "starting UML");

    // The kernel's console: UML's stdout and stderr, both into one pipe.
    let (console_r, console_w) = crate::sys::pipe()?;
    let console_w2 = console_w.try_clone()?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let console_thread = spawn_console_reader(
        console_r,
        serial_log,
        cfg.verbose,
        tail.clone(),
        events_tx.clone(),
    )?;

    let mut command = Command::new(&kernel);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(console_w))
        .stderr(Stdio::from(console_w2))
        // Own process group: UML forks helpers, and teardown kills them all.
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl and sched_setaffinity, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            // Die with dxvmm, even when dxvmm is SIGKILLed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(cpu) = cpu {
                crate::affinity::pin_to_cpu(cpu)?;
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| Error::Spawn(kernel.clone(), e))?;
    drop(command); // closes our copies of the console pipe's write end
    let pgid = child.id() as i32;
    let _watchdog = spawn_group_watchdog(pgid)?;
    {
        let events = events_tx.clone();
        std::thread::Builder::new()
            .name("uml-wait".into())
            .spawn(move || {
                if let Ok(status) = child.wait() {
                    let _ = events.send(Event::Exited(status));
                }
            })?;
    }
    spawn_signal_forwarder(events_tx.clone());
    let raw_terminal = if cfg.command.is_empty() || stdin_tty {
        term::RawTerminal::enter(0)
    } else {
        None
    };
    let interrupt = events_tx.clone();
    guest::spawn_stdin_forwarder(
        stdin_w,
        raw_terminal.is_some(),
        !stdin_tty,
        gate,
        move || {
            let _ = interrupt.send(Event::Signal(libc::SIGINT));
        },
        |_| {},
    );
    drop(events_tx);

    // Supervise.
    let kill_group = || {
        // SAFETY: kill with a negative pid signals the process group we
        // created for UML; it touches no memory of ours.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    };
    let timeout_at = cfg.timeout.map(|s| started + Duration::from_secs(s));
    let mut grace_at: Option<Instant> = None;
    let mut status: Option<i32> = None;
    let mut panic: Option<String> = None;
    let mut stopped_by: Option<Outcome> = None;
    let exit_status = loop {
        let deadline = [timeout_at, grace_at].into_iter().flatten().min();
        let ev = match deadline {
            Some(d) => events.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match ev {
            Ok(Event::GuestStatus(s)) => {
                status = Some(s);
                grace_at.get_or_insert(Instant::now() + POWEROFF_GRACE);
            }
            Ok(Event::Panic(text)) => {
                panic = Some(text);
                grace_at.get_or_insert(Instant::now() + POWEROFF_GRACE);
            }
            Ok(Event::Exited(st)) => break Some(st),
            Ok(Event::Signal(sig)) => {
                stopped_by.get_or_insert(Outcome::Interrupted(sig));
                kill_group();
            }
            Ok(Event::DeviceConnected) => {
                // Once every device is connected the sockets have done their
                // job: remove them now, so that not even a SIGKILL of dxvmm
                // can leave them behind.
                if connected.load(Ordering::SeqCst) == ndevices {
                    runtime.remove();
                }
            }
            Ok(Event::DeviceEnded(name, err)) => match err {
                Some(e) => tracing::warn!("device {name}: {e}"),
                None => tracing::debug!("device {name} ended"),
            },
            Err(RecvTimeoutError::Timeout) => {
                if timeout_at.is_some_and(|t| Instant::now() >= t) && stopped_by.is_none() {
                    stopped_by = Some(Outcome::Timeout(cfg.timeout.unwrap_or_default()));
                }
                kill_group();
                grace_at = None;
                if timeout_at.is_some_and(|t| Instant::now() >= t) {
                    // Let the wait thread report; nothing else is pending.
                    match events.recv_timeout(POWEROFF_GRACE) {
                        Ok(Event::Exited(st)) => break Some(st),
                        Ok(_) => continue,
                        Err(_) => break None,
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => break None,
        }
    };
    // Whatever UML left behind (helpers, user processes) goes with it.
    kill_group();
    drop(raw_terminal);
    for t in &threads {
        let _ = t.stop.write(1);
    }
    for t in threads {
        let _ = t.handle.join();
    }
    let _ = console_thread.join();
    // Late events: the panic text may be completed only now.
    for ev in events.try_iter() {
        match ev {
            Event::GuestStatus(s) => status = status.or(Some(s)),
            Event::Panic(text) => panic = panic.or(Some(text)),
            _ => {}
        }
    }
    drop(runtime);

    if let Some(outcome) = stopped_by {
        return Ok(outcome);
    }
    if let Some(text) = panic {
        return Ok(Outcome::Panic(text));
    }
    if let Some(s) = status {
        return Ok(Outcome::Status(s));
    }
    let how = match exit_status {
        Some(st) => match st.signal() {
            Some(sig) => format!("killed by signal {sig}"),
            None => format!("exit status {}", st.code().unwrap_or(-1)),
        },
        None => "lost".to_string(),
    };
    if connected.load(Ordering::SeqCst) < ndevices {
        let lines: Vec<String> = tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let tail = match lines.iter().rev().find(|l| !l.trim().is_empty()) {
            Some(last) => format!(": {last}"),
            None => String::new(),
        };
        return Err(Error::DiedEarly { status: how, tail });
    }
    if cfg.command.is_empty() && exit_status.is_some_and(|s| s.success()) {
        // An interactive guest that was powered off from inside.
        return Ok(Outcome::Status(0));
    }
    Ok(Outcome::Lost(format!(
        "the guest stopped without reporting a status ({how})"
    )))
}

/// Forks a watchdog that kills UML's process group once dxvmm is gone, even
/// when dxvmm itself is SIGKILLed: UML's helper and user processes do not die
/// with their parent, and PR_SET_PDEATHSIG reaches only the UML main process.
fn spawn_group_watchdog(pgid: i32) -> io::Result<OwnedFd> {
    let (alive_r, alive_w) = crate::sys::pipe()?;
    // SAFETY: fork in a threaded process; the child calls only
    // async-signal-safe functions (close, read, kill, _exit) before it exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the forked child, on descriptors it inherited; `b` is a
        // one-byte buffer that outlives the read.
        unsafe {
            // Hold nothing of dxvmm's but the pipe: no socket, no pipe end
            // may outlive dxvmm through us.
            let keep = alive_r.as_raw_fd() as libc::c_uint;
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                keep - 1,
                0 as libc::c_uint,
            );
            libc::syscall(
                libc::SYS_close_range,
                keep + 1,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            );
            let mut b = 0u8;
            // EOF comes when every copy of the write end (dxvmm's) is closed.
            while libc::read(alive_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) != 0 {
                if *libc::__errno_location() != libc::EINTR {
                    break;
                }
            }
            libc::kill(-pgid, libc::SIGKILL);
            libc::_exit(0);
        }
    }
    Ok(alive_w)
}

fn spawn_signal_forwarder(events: Sender<Event>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if events.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        });
}
