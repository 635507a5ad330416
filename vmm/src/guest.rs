//! What dxvmm and the guest's /init agree on, whatever the engine: how the
//! command reaches the guest, how its status comes back, and how a kernel
//! panic is recognised on the console.

use std::io::{self, Write};
use std::sync::mpsc::Sender;

use base64::Engine as _;

/// The guest command as one kernel command-line word: `dxvmm.cmd=` followed
/// by the base64 of each argument with a NUL after it (see images/init).
pub fn encode_command(argv: &[String]) -> Option<String> {
    if argv.is_empty() {
        return None;
    }
    let mut raw = Vec::new();
    for a in argv {
        raw.extend_from_slice(a.as_bytes());
        raw.push(0);
    }
    Some(format!(
        "dxvmm.cmd={}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

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

/// Output sink of the control console: parses `exit N` lines from the
/// guest's init and forwards them as events.
pub struct ControlChannel {
    line: Vec<u8>,
    events: Sender<Event>,
}

impl ControlChannel {
    pub fn new(events: Sender<Event>) -> Self {
        ControlChannel {
            line: Vec::new(),
            events,
        }
    }

    fn take_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line).trim().to_string();
        self.line.clear();
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
            } else if self.line.len() < 256 {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
        let mut c = ControlChannel::new(tx);
        c.write_all(b"exi").unwrap();
        c.write_all(b"t 42\nnoise\n").unwrap();
        match rx.try_recv().unwrap() {
            Event::GuestStatus(42) => {}
            e => panic!("{e:?}"),
        }
        assert!(rx.try_recv().is_err());
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
