//! virtio-mmio transport, version 2 (virtio 1.2, section 4.2), for dxvmm's
//! KVM engine.
//!
//! The transport owns one [`VirtioDevice`] and knows nothing of what it does:
//! it implements the register file the driver programs (feature negotiation,
//! queue setup, status, configuration space), activates the device's queues
//! once the driver sets DRIVER_OK, and hands queue notifications to the
//! device. Two things come from the VMM through small traits, so that the
//! register semantics can be tested without KVM:
//!   - [`InterruptLine`]: how the device's interrupt reaches the guest (an
//!     irqfd in dxvmm);
//!   - [`NotifyRegistrar`]: how a write to QueueNotify becomes a wake-up of an
//!     eventfd without a userspace exit (an ioeventfd in dxvmm).
//!
//! Everything the driver writes is untrusted: unknown offsets read as zero
//! and writes to them are ignored, widths other than 32 bits on registers are
//! ignored, queue sizes are checked against the device's maximum, and a queue
//! whose rings lie outside guest memory keeps the device from activating.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_devices::{DeviceError, Interrupt, QueueContext, VirtioDevice};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Size of a device's register window in the guest-physical address space.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// "virt" in little endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern (non-legacy) virtio-mmio layout.
pub const VERSION: u32 = 2;
/// Vendor id reported to the driver ("DXVM" would not fit the 16 bits a PCI
/// vendor has; virtio-mmio allows any 32-bit value).
pub const VENDOR_ID: u32 = 0x4d56_5844;

/// Register offsets (virtio 1.2, table 4.1).
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio 1.2, section 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// InterruptStatus bits.
pub const INT_VRING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("device has {0} queues; virtio-mmio supports at most 1024")]
    TooManyQueues(usize),
    #[error("device offers queue size {0}, which is not a power of two")]
    QueueMaxSize(u16),
    #[error("cannot create a queue eventfd: {0}")]
    EventFd(io::Error),
    #[error("cannot register the notification of queue {0}: {1}")]
    RegisterNotify(usize, io::Error),
    #[error("device: {0}")]
    Device(#[from] DeviceError),
}

/// The interrupt line of one device: asserting it must make the guest see
/// the device's interrupt (dxvmm: a write to an irqfd).
pub trait InterruptLine: Send + Sync {
    fn trigger(&self) -> io::Result<()>;
}

/// Turns a guest write of `datamatch` to `addr` into a signal on `fd`
/// without a userspace exit (dxvmm: KVM ioeventfd).
pub trait NotifyRegistrar {
    fn register(&self, addr: u64, datamatch: u32, fd: &EventFd) -> io::Result<()>;
}

/// The interrupt state shared between the transport and the device's
/// queue handlers: InterruptStatus plus the line that signals it.
pub struct MmioInterrupt {
    status: AtomicU32,
    line: Arc<dyn InterruptLine>,
}

impl MmioInterrupt {
    fn raise(&self, bits: u32) -> io::Result<()> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.line.trigger()
    }

    /// InterruptStatus as the driver reads it.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }
}

impl Interrupt for MmioInterrupt {
    fn signal_used_queue(&self, _queue_index: usize) -> io::Result<()> {
        self.raise(INT_VRING)
    }
}

/// One virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    /// Queues given a size they cannot have.
    bad_size: Vec<bool>,
    interrupt: Arc<MmioInterrupt>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    shm_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
    /// Set when the device failed while serving the driver; the driver sees
    /// DEVICE_NEEDS_RESET and the device is not driven until it resets.
    broken: bool,
}

impl MmioTransport {
    /// Wraps `device`; its interrupt goes out on `line`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        line: Arc<dyn InterruptLine>,
    ) -> Result<Self, Error> {
        let n = device.num_queues();
        if n > 1024 {
            return Err(Error::TooManyQueues(n));
        }
        let max = device.queue_max_size();
        let mut queues = Vec::with_capacity(n);
        let mut queue_evts = Vec::with_capacity(n);
        for _ in 0..n {
            queues.push(Queue::new(max).map_err(|_| Error::QueueMaxSize(max))?);
            queue_evts.push(EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?);
        }
        Ok(MmioTransport {
            device,
            mem,
            queues,
            queue_evts,
            bad_size: vec![false; n],
            interrupt: Arc::new(MmioInterrupt {
                status: AtomicU32::new(0),
                line,
            }),
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            shm_sel: 0,
            status: 0,
            config_generation: 0,
            activated: false,
            broken: false,
        })
    }

    /// Registers each queue's eventfd for writes of its index to QueueNotify
    /// of the window at `base`.
    pub fn register_notifiers(
        &self,
        base: u64,
        registrar: &dyn NotifyRegistrar,
    ) -> Result<(), Error> {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            registrar
                .register(base + reg::QUEUE_NOTIFY, i as u32, evt)
                .map_err(|e| Error::RegisterNotify(i, e))?;
        }
        Ok(())
    }

    /// The eventfd a notification of queue `index` signals.
    pub fn queue_event(&self, index: usize) -> Option<&EventFd> {
        self.queue_evts.get(index)
    }

    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// Whether the driver set DRIVER_OK and the queues are live.
    pub fn activated(&self) -> bool {
        self.activated
    }

    pub fn interrupt(&self) -> &MmioInterrupt {
        &self.interrupt
    }

    /// The device's host-side event source, polled only while it is active.
    pub fn host_event_fd(&self) -> Option<RawFd> {
        if self.activated && !self.broken {
            self.device.host_event_fd()
        } else {
            None
        }
    }

    /// The driver notified queue `index` (by ioeventfd or a QueueNotify
    /// write that exited to userspace).
    pub fn process_queue(&mut self, index: usize) -> Result<(), Error> {
        if !self.activated || self.broken || index >= self.queues.len() {
            return Ok(());
        }
        let mut ctx = QueueContext {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: self.interrupt.as_ref(),
        };
        let r = self.device.queue_notify(index, &mut ctx);
        self.check(r)
    }

    /// The device's host event fd became readable.
    pub fn host_event(&mut self) -> Result<(), Error> {
        if !self.activated || self.broken {
            return Ok(());
        }
        let mut ctx = QueueContext {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: self.interrupt.as_ref(),
        };
        let r = self.device.host_event(&mut ctx);
        self.check(r)
    }

    /// A device error caused by what the driver put in a queue marks the
    /// device as needing a reset (virtio 1.2, 2.1.1) instead of ending the VM.
    fn check(&mut self, r: Result<(), DeviceError>) -> Result<(), Error> {
        match r {
            Ok(()) => Ok(()),
            Err(e @ (DeviceError::Io(_) | DeviceError::Notify(_))) => Err(e.into()),
            Err(e) => {
                tracing::warn!(
                    "virtio device {}: {e}; it needs a reset",
                    self.device.device_type()
                );
                self.broken = true;
                self.status |= status::DEVICE_NEEDS_RESET;
                if self.status & status::DRIVER_OK != 0 {
                    let _ = self.interrupt.raise(INT_CONFIG);
                }
                Ok(())
            }
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only while the queue is not ready and the
    /// driver has not finished (virtio 1.2, 4.2.2.2).
    fn queue_writable(&mut self) -> Option<&mut Queue> {
        if self.status & status::DRIVER_OK != 0 {
            return None;
        }
        self.selected_queue().filter(|q| !q.ready())
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 {
            return;
        }
        let v: u32 = match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.device_features() as u32,
                1 => (self.device.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size() as u32),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready() as u32),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            // No shared memory regions: a length of all ones says "absent".
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// A guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            if self.status & status::DRIVER != 0 && !self.broken {
                self.device.write_config(offset - reg::CONFIG, data);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(bytes);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            // Features are fixed once FEATURES_OK is set.
            reg::DRIVER_FEATURES
                if self.status & status::FEATURES_OK == 0 && self.status & status::DRIVER != 0 =>
            {
                let v = v as u64;
                match self.driver_features_sel {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v,
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM => {
                let sel = self.queue_sel as usize;
                if self.queue_writable().is_some() {
                    // A size of zero, above the maximum or not a power of two
                    // leaves the queue unusable: activation then fails.
                    let ok = u16::try_from(v)
                        .ok()
                        .and_then(|n| self.queues[sel].try_set_size(n).ok())
                        .is_some();
                    self.bad_size[sel] = !ok;
                }
            }
            reg::QUEUE_READY if self.status & status::DRIVER_OK == 0 => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            reg::QUEUE_DESC_LOW => self
                .queue_writable()
                .map_or((), |q| q.set_desc_table_address(Some(v), None)),
            reg::QUEUE_DESC_HIGH => self
                .queue_writable()
                .map_or((), |q| q.set_desc_table_address(None, Some(v))),
            reg::QUEUE_DRIVER_LOW => self
                .queue_writable()
                .map_or((), |q| q.set_avail_ring_address(Some(v), None)),
            reg::QUEUE_DRIVER_HIGH => self
                .queue_writable()
                .map_or((), |q| q.set_avail_ring_address(None, Some(v))),
            reg::QUEUE_DEVICE_LOW => self
                .queue_writable()
                .map_or((), |q| q.set_used_ring_address(Some(v), None)),
            reg::QUEUE_DEVICE_HIGH => self
                .queue_writable()
                .map_or((), |q| q.set_used_ring_address(None, Some(v))),
            reg::QUEUE_NOTIFY => {
                // Reached only when no ioeventfd caught the write.
                if let Err(e) = self.process_queue(v as usize) {
                    tracing::warn!("virtio device {}: {e}", self.device.device_type());
                }
            }
            reg::INTERRUPT_ACK => {
                self.interrupt.status.fetch_and(!v, Ordering::SeqCst);
            }
            reg::STATUS => self.set_status(v),
            reg::SHM_SEL => self.shm_sel = v,
            _ => {}
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // The driver may only add bits (virtio 1.2, 3.1.1); a write that
        // clears one is a driver bug and is ignored.
        if v & old != old {
            return;
        }
        let mut new = v;
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let offered = self.device.device_features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if ok {
                self.device.set_acked_features(self.driver_features);
            } else {
                // Leaving FEATURES_OK clear tells the driver we refuse.
                new &= !status::FEATURES_OK;
            }
        }
        if new & status::DRIVER_OK != 0 && old & status::DRIVER_OK == 0 {
            if new & status::FEATURES_OK == 0 {
                new &= !status::DRIVER_OK;
            } else {
                self.activate();
                if !self.activated {
                    new |= status::DEVICE_NEEDS_RESET;
                }
            }
        }
        self.status = new;
    }

    fn activate(&mut self) {
        let event_idx = self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0;
        for (i, q) in self.queues.iter_mut().enumerate() {
            if !q.ready() {
                continue;
            }
            if self.bad_size[i] || !q.is_valid(&self.mem) {
                tracing::warn!(
                    "virtio device {}: queue {i} is not valid in guest memory",
                    self.device.device_type()
                );
                self.broken = true;
                return;
            }
            q.set_event_idx(event_idx);
        }
        self.activated = true;
        tracing::debug!("virtio device {} activated", self.device.device_type());
    }

    fn reset(&mut self) {
        if self.activated || self.status != 0 {
            self.device.reset();
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.bad_size.fill(false);
        self.activated = false;
        self.broken = false;
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt.status.store(0, Ordering::SeqCst);
    }

    /// Bumps ConfigGeneration and tells the driver the configuration changed.
    pub fn config_changed(&mut self) -> io::Result<()> {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt.raise(INT_CONFIG)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
