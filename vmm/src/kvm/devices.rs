//! The devices vCPU exits reach: the port I/O bus (COM1, the i8042's reset
//! line, ACPI sleep and reset registers) and the MMIO bus (virtio-mmio
//! windows). The PIC, PIT, IOAPIC and LAPICs live in KVM.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_mmio::MmioTransport;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::layout;
use super::{Stop, VmEvent};
use crate::guest::{Event, PanicScanner};

/// Console lines kept for error messages.
const CONSOLE_TAIL_LINES: usize = 12;

/// An interrupt raised by writing an eventfd registered as a KVM irqfd.
pub struct IrqFd(pub EventFd);

impl Trigger for IrqFd {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

impl virtio_mmio::InterruptLine for IrqFd {
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where the kernel's console (COM1) goes: the serial log, stderr with
/// --verbose, the panic scanner, and the last lines for error messages.
pub struct KernelConsole {
    log: Option<File>,
    verbose: bool,
    scanner: PanicScanner,
    partial: Vec<u8>,
    tail: Arc<Mutex<VecDeque<String>>>,
    events: Sender<VmEvent>,
}

impl KernelConsole {
    pub fn new(
        log: Option<File>,
        verbose: bool,
        tail: Arc<Mutex<VecDeque<String>>>,
        events: Sender<VmEvent>,
    ) -> Self {
        KernelConsole {
            log,
            verbose,
            scanner: PanicScanner::default(),
            partial: Vec::new(),
            tail,
            events,
        }
    }

    /// The end of the console: reports a panic whose context was cut short.
    pub fn finish(&mut self) {
        if let Some(text) = self.scanner.finish() {
            let _ = self.events.send(VmEvent::Guest(Event::Panic(text)));
        }
        if let Some(f) = self.log.as_mut() {
            let _ = f.flush();
        }
    }
}

impl Write for KernelConsole {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = self.log.as_mut() {
            let _ = f.write_all(buf);
        }
        if self.verbose {
            let _ = io::stderr().write_all(buf);
        }
        if let Some(text) = self.scanner.feed(buf) {
            let _ = self.events.send(VmEvent::Guest(Event::Panic(text)));
        }
        for &b in buf {
            if b != b'\n' {
                if self.partial.len() < 1024 {
                    self.partial.push(b);
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.partial)
                .trim_end()
                .to_string();
            self.partial.clear();
            let mut t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            t.push_back(line);
            if t.len() > CONSOLE_TAIL_LINES {
                t.pop_front();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub type Uart = Serial<IrqFd, NoEvents, KernelConsole>;

/// A virtio-mmio device on the MMIO bus.
pub struct VirtioSlot {
    pub base: u64,
    pub transport: Arc<Mutex<MmioTransport>>,
    /// Written when a register access changed the host fd the device wants
    /// polled (the driver activated or reset it): the device thread sleeps
    /// in epoll and has no other way to learn of it.
    pub rescan: EventFd,
}

/// Every device a vCPU exit can reach.
pub struct Devices {
    pub uart: Mutex<Uart>,
    pub virtio: Vec<VirtioSlot>,
    events: Sender<VmEvent>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A device whose handler panicked is still in a usable state for the
    // register accesses we do; do not spread the panic to every vCPU.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the vCPU that made an access must stop running the guest.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Continue,
    Stop,
}

impl Devices {
    pub fn new(uart: Uart, virtio: Vec<VirtioSlot>, events: Sender<VmEvent>) -> Self {
        Devices {
            uart: Mutex::new(uart),
            virtio,
            events,
        }
    }

    fn stop(&self, why: Stop) -> Access {
        let _ = self.events.send(VmEvent::Stop(why));
        Access::Stop
    }

    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        let com1 = layout::COM1_PORT..layout::COM1_PORT + 8;
        match port {
            p if com1.contains(&p) && data.len() == 1 => {
                data[0] = lock(&self.uart).read((p - layout::COM1_PORT) as u8);
            }
            // i8042 status: input buffer empty, no data; data port: nothing.
            layout::I8042_CMD_PORT | layout::I8042_DATA_PORT => data.fill(0),
            layout::ACPI_SLEEP_STATUS_PORT | layout::ACPI_SLEEP_CONTROL_PORT => data.fill(0),
            // Nothing else is there: an ISA bus floats high.
            _ => data.fill(0xff),
        }
    }

    pub fn pio_write(&self, port: u16, data: &[u8]) -> Access {
        let com1 = layout::COM1_PORT..layout::COM1_PORT + 8;
        match (port, data) {
            (p, [v]) if com1.contains(&p) => {
                if let Err(e) = lock(&self.uart).write((p - layout::COM1_PORT) as u8, *v) {
                    tracing::debug!("COM1: {e:?}");
                }
                Access::Continue
            }
            (layout::I8042_CMD_PORT, [0xfe]) => {
                self.stop(Stop::Reset("the keyboard controller's reset line"))
            }
            (layout::ACPI_RESET_PORT, [v]) if *v == layout::ACPI_RESET_VALUE => {
                self.stop(Stop::Reset("the ACPI reset register"))
            }
            (layout::ACPI_SLEEP_CONTROL_PORT, [v]) => {
                let slp_en = v & 0x20 != 0;
                let slp_typ = (v >> 2) & 0x7;
                if slp_en && slp_typ == layout::ACPI_S5_SLP_TYP {
                    self.stop(Stop::PowerOff)
                } else {
                    Access::Continue
                }
            }
            _ => Access::Continue,
        }
    }

    /// Host input for COM1: what fits in its receive FIFO. The rest is
    /// dropped, as a UART without flow control does: a kernel reads COM1 only
    /// while a process has ttyS0 open, and input must not wait on it.
    pub fn feed_uart(&self, bytes: &[u8]) -> usize {
        let mut uart = lock(&self.uart);
        let n = uart.fifo_capacity().min(bytes.len());
        if n == 0 {
            return 0;
        }
        match uart.enqueue_raw_bytes(&bytes[..n]) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("COM1 input: {e:?}");
                0
            }
        }
    }

    fn virtio_at(&self, addr: u64) -> Option<(&VirtioSlot, u64)> {
        self.virtio.iter().find_map(|s| {
            let off = addr.checked_sub(s.base)?;
            (off < virtio_mmio::MMIO_WINDOW_SIZE).then_some((s, off))
        })
    }

    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        match self.virtio_at(addr) {
            Some((s, off)) => lock(&s.transport).read(off, data),
            None => data.fill(0xff),
        }
    }

    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if let Some((s, off)) = self.virtio_at(addr) {
            let mut t = lock(&s.transport);
            let before = t.host_event_fd();
            t.write(off, data);
            if t.host_event_fd() != before {
                let _ = s.rescan.write(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    fn devices() -> (
        Devices,
        std::sync::mpsc::Receiver<VmEvent>,
        Arc<Mutex<VecDeque<String>>>,
    ) {
        let (tx, rx) = channel();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let console = KernelConsole::new(None, false, tail.clone(), tx.clone());
        let uart = Serial::new(IrqFd(EventFd::new(0).unwrap()), console);
        (Devices::new(uart, vec![], tx), rx, tail)
    }

    #[test]
    fn uart_output_reaches_the_console() {
        let (d, _rx, tail) = devices();
        for b in b"Linux version 6.1\n" {
            assert_eq!(d.pio_write(0x3f8, &[*b]), Access::Continue);
        }
        assert_eq!(tail.lock().unwrap().back().unwrap(), "Linux version 6.1");
        // Line status: transmitter empty.
        let mut lsr = [0u8];
        d.pio_read(0x3fd, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }

    #[test]
    fn uart_input_fills_the_fifo_and_drops_the_rest() {
        let (d, _, _) = devices();
        assert_eq!(d.feed_uart(b"hi"), 2);
        let mut lsr = [0u8];
        d.pio_read(0x3fd, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut b = [0u8];
        d.pio_read(0x3f8, &mut b);
        assert_eq!(b[0], b'h');
        let big = [b'x'; 200];
        let n = d.feed_uart(&big);
        assert!(n < 200 && n > 0);
        assert_eq!(d.feed_uart(&big), 0);
    }

    #[test]
    fn panic_on_the_console_is_reported() {
        let (d, rx, _) = devices();
        let text = "Kernel panic - not syncing: VFS: Unable to mount root fs\n";
        for b in text.bytes() {
            d.pio_write(0x3f8, &[b]);
        }
        lock(&d.uart).writer_mut().finish();
        match rx.try_recv() {
            Ok(VmEvent::Guest(Event::Panic(t))) => assert!(t.contains("Unable to mount")),
            _ => panic!("no panic event"),
        }
    }

    #[test]
    fn acpi_and_i8042_stop_the_vm() {
        let (d, rx, _) = devices();
        // S5 with SLP_EN: power off.
        assert_eq!(d.pio_write(0x600, &[(5 << 2) | 0x20]), Access::Stop);
        assert!(matches!(rx.try_recv(), Ok(VmEvent::Stop(Stop::PowerOff))));
        // SLP_TYP without SLP_EN, or another state: nothing.
        assert_eq!(d.pio_write(0x600, &[5 << 2]), Access::Continue);
        assert_eq!(d.pio_write(0x600, &[(3 << 2) | 0x20]), Access::Continue);
        assert_eq!(d.pio_write(0x604, &[1]), Access::Stop);
        assert!(matches!(rx.try_recv(), Ok(VmEvent::Stop(Stop::Reset(_)))));
        assert_eq!(d.pio_write(0x64, &[0xfe]), Access::Stop);
        assert_eq!(d.pio_write(0x64, &[0xaa]), Access::Continue);
        assert!(matches!(rx.try_recv(), Ok(VmEvent::Stop(Stop::Reset(_)))));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn unclaimed_addresses_float_high() {
        let (d, _, _) = devices();
        let mut b = [0u8; 2];
        d.pio_read(0xcf8, &mut b);
        assert_eq!(b, [0xff, 0xff]);
        let mut m = [0u8; 4];
        d.mmio_read(0xd000_0000, &mut m);
        assert_eq!(m, [0xff; 4]);
        d.mmio_write(0xd000_0000, &m);
    }
}
