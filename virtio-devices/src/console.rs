//! virtio-console (device id 3), single port, no optional features.
//!
//! Queue 0 (receiveq) carries host input to the guest, queue 1 (transmitq)
//! carries guest output to the host. dxvmm uses consoles as the guest's stdio
//! (hvc0), its stderr (hvc1) and the control channel on which the guest's init
//! reports the command's exit status (hvc2).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use virtio_queue::{Queue, QueueT};

use crate::{DeviceError, QueueContext, VirtioDevice, VIRTIO_F_VERSION_1};

pub const VIRTIO_ID_CONSOLE: u32 = 3;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
/// Input read from the host but not yet placed in a guest buffer.
const INPUT_CHUNK: usize = 4096;

/// A single-port virtio console.
pub struct Console {
    name: String,
    output: Box<dyn Write + Send>,
    /// Host input (non-blocking read end of a pipe); `None` once it hit EOF.
    input: Option<File>,
    pending: Vec<u8>,
    acked_features: u64,
    bytes_out: u64,
    bytes_in: u64,
}

impl Console {
    /// A console that writes guest output to `output` and, if `input` is given,
    /// feeds bytes read from it to the guest. `input` must be non-blocking.
    pub fn new(name: &str, output: Box<dyn Write + Send>, input: Option<OwnedFd>) -> Self {
        Console {
            name: name.to_string(),
            output,
            input: input.map(File::from),
            pending: Vec::new(),
            acked_features: 0,
            bytes_out: 0,
            bytes_in: 0,
        }
    }

    /// Bytes the guest wrote and the host read, for counters.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_out, self.bytes_in)
    }

    fn drain_tx(&mut self, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        let queue = ctx
            .queues
            .get_mut(TX_QUEUE)
            .ok_or(DeviceError::QueueIndex(TX_QUEUE))?;
        let mut used_any = false;
        while let Some(chain) = queue.pop_descriptor_chain(ctx.mem) {
            let head = chain.head_index();
            let mut reader = chain
                .reader(ctx.mem)
                .map_err(|e| DeviceError::Chain(e.to_string()))?;
            let mut buf = vec![0u8; reader.available_bytes()];
            // A chain that lies about its lengths yields fewer bytes: take what is there.
            let n = crate::read_fully(&mut reader, &mut buf);
            if let Err(e) = self.output.write_all(&buf[..n]) {
                tracing::debug!(console = %self.name, "host output closed: {e}");
            }
            self.bytes_out += n as u64;
            queue.add_used(ctx.mem, head, 0)?;
            used_any = true;
        }
        let _ = self.output.flush();
        if used_any {
            ctx.notify(TX_QUEUE)?;
        }
        Ok(())
    }

    /// Moves pending host input into the guest's receive buffers.
    fn fill_rx(&mut self, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        let mut used_any = false;
        loop {
            if self.pending.is_empty() {
                self.read_input();
                if self.pending.is_empty() {
                    break;
                }
            }
            let queue: &mut Queue = ctx
                .queues
                .get_mut(RX_QUEUE)
                .ok_or(DeviceError::QueueIndex(RX_QUEUE))?;
            let Some(chain) = queue.pop_descriptor_chain(ctx.mem) else {
                break;
            };
            let head = chain.head_index();
            let mut writer = chain
                .writer(ctx.mem)
                .map_err(|e| DeviceError::Chain(e.to_string()))?;
            let n = writer.available_bytes().min(self.pending.len());
            let written = writer.write(&self.pending[..n]).unwrap_or(0);
            self.pending.drain(..written);
            self.bytes_in += written as u64;
            queue.add_used(ctx.mem, head, written as u32)?;
            used_any = true;
        }
        if used_any {
            ctx.notify(RX_QUEUE)?;
        }
        Ok(())
    }

    fn read_input(&mut self) {
        let Some(input) = self.input.as_mut() else {
            return;
        };
        let mut buf = [0u8; INPUT_CHUNK];
        match input.read(&mut buf) {
            Ok(0) => self.input = None,
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(console = %self.name, "host input closed: {e}");
                self.input = None;
            }
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn num_queues(&self) -> usize {
        2
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.device_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr: meaningful only with features we
        // do not offer.
        crate::read_config_bytes(&[0u8; 12], offset, data);
    }

    fn queue_notify(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        match index {
            RX_QUEUE => self.fill_rx(ctx),
            TX_QUEUE => self.drain_tx(ctx),
            _ => Err(DeviceError::QueueIndex(index)),
        }
    }

    fn host_event_fd(&self) -> Option<RawFd> {
        // Poll the input only while there is room to put what it yields.
        if self.pending.is_empty() {
            self.input.as_ref().map(|f| f.as_raw_fd())
        } else {
            None
        }
    }

    fn host_event(&mut self, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        self.fill_rx(ctx)
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.acked_features = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct CountingInterrupt(Mutex<Vec<usize>>);
    impl crate::Interrupt for CountingInterrupt {
        fn signal_used_queue(&self, q: usize) -> std::io::Result<()> {
            self.0.lock().unwrap().push(q);
            Ok(())
        }
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn guest_output_reaches_host() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let text = b"hello from the guest\n";
        vm_memory::Bytes::write_slice(&m, text, GuestAddress(0x4000)).unwrap();
        let desc = RawDescriptor::from(SplitDescriptor::new(0x4000, text.len() as u32, 0, 0));
        vq.build_desc_chain(&[desc]).unwrap();
        let rx = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        let mut queues = vec![
            rx.create_queue::<Queue>().unwrap(),
            vq.create_queue().unwrap(),
        ];

        let sink = Sink::default();
        let mut console = Console::new("test", Box::new(sink.clone()), None);
        let irq = CountingInterrupt::default();
        let mut ctx = QueueContext {
            mem: &m,
            queues: &mut queues,
            interrupt: &irq,
        };
        console.queue_notify(TX_QUEUE, &mut ctx).unwrap();
        assert_eq!(sink.0.lock().unwrap().as_slice(), text);
        assert_eq!(*irq.0.lock().unwrap(), vec![TX_QUEUE]);
        assert_eq!(console.bytes().0, text.len() as u64);
    }

    #[test]
    fn descriptor_outside_memory_is_an_error_not_a_panic() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let desc = RawDescriptor::from(SplitDescriptor::new(0xfff0, 0x1000, 0, 0));
        vq.build_desc_chain(&[desc]).unwrap();
        let rx = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        let mut queues = vec![
            rx.create_queue::<Queue>().unwrap(),
            vq.create_queue().unwrap(),
        ];
        let mut console = Console::new("test", Box::new(Sink::default()), None);
        let irq = CountingInterrupt::default();
        let mut ctx = QueueContext {
            mem: &m,
            queues: &mut queues,
            interrupt: &irq,
        };
        assert!(console.queue_notify(TX_QUEUE, &mut ctx).is_err());
        assert!(console.queue_notify(7, &mut ctx).is_err());
    }

    #[test]
    fn host_input_fills_guest_buffers() {
        let m = mem();
        let rx = MockSplitQueue::new(&m, 16);
        let desc = RawDescriptor::from(SplitDescriptor::new(
            0x5000,
            8,
            virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
            0,
        ));
        rx.build_desc_chain(&[desc]).unwrap();
        let tx = MockSplitQueue::create(&m, GuestAddress(0x8000), 16);
        let mut queues = vec![
            rx.create_queue::<Queue>().unwrap(),
            tx.create_queue().unwrap(),
        ];

        let (r, w) = vmm_sys_util_pipe();
        let mut console = Console::new("test", Box::new(Sink::default()), Some(r));
        File::from(w).write_all(b"0123456789").unwrap();
        let irq = CountingInterrupt::default();
        let mut ctx = QueueContext {
            mem: &m,
            queues: &mut queues,
            interrupt: &irq,
        };
        console.host_event(&mut ctx).unwrap();
        let mut got = [0u8; 8];
        vm_memory::Bytes::read_slice(&m, &mut got, GuestAddress(0x5000)).unwrap();
        assert_eq!(&got, b"01234567");
        // Two bytes wait for the next buffer, so the input is not polled.
        assert!(console.host_event_fd().is_none());
        assert_eq!(console.bytes().1, 8);
    }

    fn vmm_sys_util_pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        use std::os::fd::FromRawFd;
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }
}
