//! What dxvmm and the guest's /init agree on, whatever the engine: how the
//! command reaches the guest, when it may be given input, how its status
//! comes back, and how a kernel panic is recognised on the console.
//!
//! The control console (hvc2) carries lines from /init: `ready` once the
//! command's terminal is set up (host input is held back until then: a tty
//! that is not yet open or still echoing would lose or reflect it), then
//! `exit N` with the command's status; between the two, after the command
//! exits, the `--collect` files (see collect.rs).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};

use base64::Engine as _;
use dxvmm_protocol::stdin as stdin_framing;

use crate::collect::Receiver;

/// The guest command as one kernel command-line word: `dxvmm.cmd=` followed
/// by the base64 of each argument with a NUL after it (see images/init).
pub fn encode_command(argv: &[String]) -> Option<String> {
    encode_words("dxvmm.cmd", argv)
}

/// The `--collect` guest paths, as `dxvmm.collect=` in the form of
/// [`encode_command`]: the order numbers the files in /init's replies.
pub fn encode_collect(paths: &[String]) -> Option<String> {
    encode_words("dxvmm.collect", paths)
}

/// `KEY=` and the base64 of the NUL-terminated words: one command-line word
/// whatever the words hold (spaces, quotes, newlines).
fn encode_words(key: &str, words: &[String]) -> Option<String> {
    if words.is_empty() {
        return None;
    }
    let mut raw = Vec::new();
    for w in words {
        raw.extend_from_slice(w.as_bytes());
        raw.push(0);
    }
    Some(format!(
        "{key}={}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

/// The longest control line taken: `file I CHUNK` with busybox base64's
/// 76-column chunks fits with room to spare. A longer line is dropped
/// whole rather than cut (a cut chunk would still decode).
const MAX_CONTROL_LINE: usize = 256;

/// What the supervisor of a running guest hears about.
#[derive(Debug)]
pub enum Event {
    /// The guest's init reported the command's exit status.
    GuestStatus(i32),
    /// The guest kernel panicked; the text is the panic line and what followed.
    Panic(String),
    /// The engine's guest process ended (wait status).
    Exited(std::process::ExitStatus),
    /// A signal asked dxvmm to stop.
    Signal(i32),
    /// A vhost-user device's frontend connected.
    DeviceConnected,
    /// A vhost-user device lost its frontend or failed.
    DeviceEnded(String, Option<String>),
}

/// Opens once the guest is ready for host input.
#[derive(Clone, Default)]
pub struct InputGate(Arc<(Mutex<bool>, Condvar)>);

impl InputGate {
    pub fn open(&self) {
        let (lock, cond) = &*self.0;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cond.notify_all();
    }

    #[cfg(test)]
    fn is_open(&self) -> bool {
        *self.0 .0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait(&self) {
        let (lock, cond) = &*self.0;
        let mut open = lock.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = cond.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Output sink of the control console: parses the lines of the guest's
/// init (`ready`, `file...` for `--collect`, `exit N`) and acts on them.
pub struct ControlChannel {
    line: Vec<u8>,
    overlong: bool,
    events: Sender<Event>,
    gate: InputGate,
    files: Option<Arc<Mutex<Receiver>>>,
}

impl ControlChannel {
    pub fn new(events: Sender<Event>, gate: InputGate) -> Self {
        ControlChannel {
            line: Vec::new(),
            overlong: false,
            events,
            gate,
            files: None,
        }
    }

    /// Also receives the `--collect` files. /init sends them before `exit
    /// N`, on this same console, so they are written before the status is.
    pub fn collecting(mut self, files: Option<Arc<Mutex<Receiver>>>) -> Self {
        self.files = files;
        self
    }

    fn take_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line).trim().to_string();
        self.line.clear();
        if std::mem::take(&mut self.overlong) {
            tracing::warn!("overlong control line from the guest dropped");
            return;
        }
        if line.starts_with("file") {
            if let Some(files) = &self.files {
                let mut files = files.lock().unwrap_or_else(|p| p.into_inner());
                if files.line(&line) {
                    return;
                }
            }
        }
        if line == "ready" {
            self.gate.open();
            return;
        }
        // Our own size line, echoed if it reached the console before /init
        // turned echo off there.
        if line.starts_with("winsize ") {
            return;
        }
        if let Some(rest) = line.strip_prefix("exit ") {
            if let Ok(status) = rest.trim().parse::<i32>() {
                let _ = self.events.send(Event::GuestStatus(status));
                return;
            }
        }
        if !line.is_empty() {
            tracing::warn!("unexpected control message from the guest: {line:?}");
        }
    }
}

impl Write for ControlChannel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.take_line();
            } else if self.line.len() < MAX_CONTROL_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the host's standard streams are, which the guest's `/init` must
/// know to set up the command's console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostStdio {
    pub stdin_tty: bool,
    pub stdout_tty: bool,
    /// The terminal's (columns, rows), when both are terminals.
    pub size: Option<(u16, u16)>,
}

impl HostStdio {
    pub fn detect() -> HostStdio {
        let stdin_tty = crate::term::is_tty(0);
        let stdout_tty = crate::term::is_tty(1);
        HostStdio {
            stdin_tty,
            stdout_tty,
            size: if stdin_tty && stdout_tty {
                crate::term::window_size(1)
            } else {
                None
            },
        }
    }

    /// The kernel command-line words that tell `/init`: `dxvmm.tty=1` (a
    /// terminal both ways: keep the console cooked) and its size
    /// `dxvmm.winsize=COLSxROWS`, or `dxvmm.stdin=pipe` (stdin is a file or
    /// pipe: it comes framed, with an end).
    pub fn cmdline_words(self) -> Vec<String> {
        let mut words = Vec::new();
        if self.stdin_tty && self.stdout_tty {
            words.push("dxvmm.tty=1".to_string());
            if let Some((cols, rows)) = self.size {
                words.push(format!("dxvmm.winsize={cols}x{rows}"));
            }
        } else if !self.stdin_tty {
            words.push("dxvmm.stdin=pipe".to_string());
        }
        words
    }
}

/// Keeps the guest's terminal size in step with the host's: every change
/// (SIGWINCH) becomes a `winsize COLS ROWS` line on the control console's
/// input, which `/init` applies to the command's terminal (the guest kernel
/// then sends the command its own SIGWINCH). The size at boot travels as a
/// kernel command-line word ([`HostStdio::cmdline_words`]). Returns the
/// control console's input, `None` unless the host has a terminal size.
pub fn forward_window_size(stdio: HostStdio) -> io::Result<Option<OwnedFd>> {
    let Some(mut last) = stdio.size else {
        return Ok(None);
    };
    let (r, w) = crate::sys::input_pipe()?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])?;
    std::thread::Builder::new()
        .name("winsize".into())
        .spawn(move || {
            let mut out = File::from(w);
            for _ in signals.forever() {
                let Some(now) = crate::term::window_size(1) else {
                    continue;
                };
                if now != last {
                    last = now;
                    if out.write_all(winsize_line(now).as_bytes()).is_err() {
                        break;
                    }
                }
            }
        })?;
    Ok(Some(r))
}

/// The control line of a terminal size.
fn winsize_line((cols, rows): (u16, u16)) -> String {
    format!("winsize {cols} {rows}\n")
}

/// Copies the host's stdin to `input` (the stdio console's input pipe) once
/// `gate` opens, holding what arrives earlier. `also` sees every chunk at
/// once (the KVM engine's COM1). On a terminal (`tty`), Ctrl-] calls
/// `interrupt` and stops forwarding: the terminal is raw, so Ctrl-C belongs
/// to the guest. `framed` (the host's stdin is a file or pipe): the input
/// goes framed, ending with the end mark (dxvmm-protocol's `stdin`), which
/// the guest's `/init` turns into the end of the command's stdin.
pub fn spawn_stdin_forwarder(
    input: OwnedFd,
    tty: bool,
    framed: bool,
    gate: InputGate,
    interrupt: impl FnOnce() + Send + 'static,
    mut also: impl FnMut(&[u8]) + Send + 'static,
) {
    let (tx, rx) = channel::<Vec<u8>>();
    let _ = std::thread::Builder::new()
        .name("stdin-writer".into())
        .spawn(move || {
            gate.wait();
            let mut out = File::from(input);
            for chunk in rx {
                if out.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
    let _ = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        // A file or pipe ended: say so (a console cannot).
                        if framed {
                            let _ = tx.send(stdin_framing::END_MARK.to_vec());
                        }
                        break;
                    }
                    Ok(n) => n,
                };
                if tty && buf[..n].contains(&0x1d) {
                    interrupt();
                    break;
                }
                also(&buf[..n]);
                let chunk = if framed {
                    let mut out = Vec::with_capacity(n + 16);
                    stdin_framing::encode(&buf[..n], &mut out);
                    out
                } else {
                    buf[..n].to_vec()
                };
                if tx.send(chunk).is_err() {
                    break;
                }
            }
        });
}

/// Watches the kernel console line by line for a panic.
#[derive(Default)]
pub struct PanicScanner {
    line: Vec<u8>,
    panic: Option<Vec<String>>,
}

/// Lines of console kept after the panic line.
const PANIC_CONTEXT_LINES: usize = 8;

impl PanicScanner {
    /// Feeds console bytes; returns the panic text once it is complete.
    pub fn feed(&mut self, buf: &[u8]) -> Option<String> {
        let mut done = None;
        for &b in buf {
            if b != b'\n' {
                if self.line.len() < 1024 {
                    self.line.push(b);
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_string();
            self.line.clear();
            match &mut self.panic {
                Some(lines) => {
                    lines.push(line);
                    if lines.len() == PANIC_CONTEXT_LINES + 1 {
                        done = Some(lines.join("\n"));
                    }
                }
                None if line.contains("Kernel panic - not syncing") => {
                    self.panic = Some(vec![line]);
                }
                None => {}
            }
        }
        done
    }

    /// The panic seen so far, if any (for a console that ended early).
    pub fn finish(&mut self) -> Option<String> {
        let lines = self.panic.as_ref()?;
        if lines.len() > PANIC_CONTEXT_LINES {
            return None; // already reported by feed()
        }
        Some(lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn command_encoding_round_trips() {
        let argv = vec![
            "sh".to_string(),
            "-c".to_string(),
            "echo 'a b'; exit 3".to_string(),
        ];
        let word = encode_command(&argv).unwrap();
        let b64 = word.strip_prefix("dxvmm.cmd=").unwrap();
        assert!(!b64.contains(' '));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(raw, b"sh\0-c\0echo 'a b'; exit 3\0");
        assert_eq!(encode_command(&[]), None);
    }

    #[test]
    fn control_channel_reports_status() {
        let (tx, rx) = channel();
        let gate = InputGate::default();
        let mut c = ControlChannel::new(tx, gate.clone());
        c.write_all(b"rea").unwrap();
        assert!(!gate.is_open());
        c.write_all(b"dy\n").unwrap();
        assert!(gate.is_open());
        c.write_all(b"exi").unwrap();
        c.write_all(b"t 42\nnoise\n").unwrap();
        match rx.try_recv().unwrap() {
            Event::GuestStatus(42) => {}
            e => panic!("{e:?}"),
        }
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn control_channel_takes_collected_files_and_drops_overlong_lines() {
        let dir = std::env::temp_dir().join(format!("dxvmm-guest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let host = dir.join("f");
        let spec = crate::collect::CollectSpec::parse(&format!("/f:{}", host.display())).unwrap();
        let wanted = crate::collect::plan(&[spec]).unwrap();
        let files = Arc::new(Mutex::new(Receiver::new(wanted, 1 << 20)));
        let (tx, rx) = channel();
        let mut c = ControlChannel::new(tx, InputGate::default()).collecting(Some(files.clone()));
        // A cut chunk would decode to fewer bytes, still valid base64.
        let long = format!("file 0 {}\n", "QUJD".repeat(100));
        c.write_all(long.as_bytes()).unwrap();
        c.write_all(b"file 0 aGk=\r\nfile-end 0 2\nexit 0\n")
            .unwrap();
        assert!(matches!(rx.try_recv(), Ok(Event::GuestStatus(0))));
        let report = files.lock().unwrap().finish(true);
        assert!(report.error.is_none() && report.warnings.is_empty());
        assert_eq!(std::fs::read(&host).unwrap(), b"hi");
        assert_eq!(
            encode_collect(&["/tmp/j.xml".into()]).unwrap(),
            "dxvmm.collect=L3RtcC9qLnhtbAA="
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn panic_text_is_collected() {
        let mut s = PanicScanner::default();
        assert!(s
            .feed(b"booting\nKernel panic - not syncing: sysrq triggered crash\n")
            .is_none());
        let mut text = None;
        for i in 0..PANIC_CONTEXT_LINES {
            text = text.or(s.feed(format!("line {i}\n").as_bytes()));
        }
        let text = text.unwrap();
        assert!(text.starts_with("Kernel panic - not syncing: sysrq triggered crash"));
        assert!(s.finish().is_none());
        let mut early = PanicScanner::default();
        early.feed(b"Kernel panic - not syncing: x\n");
        assert!(early.finish().unwrap().contains("not syncing: x"));
    }
}
