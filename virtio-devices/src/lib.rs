//! Virtio device models of dxvmm.
//!
//! A device here knows its virtio id, features, configuration space and how to
//! serve its queues; it knows nothing of the transport. The same device object
//! is served to a UML guest over vhost-user (`vhost-user-device`) and to a KVM
//! guest over virtio-mmio (`vmm`). Guest memory is reached only through
//! `vm-memory`, and every descriptor chain is walked with `virtio-queue`, whose
//! readers and writers bound every access by the lengths the guest gave.

pub mod console;

use std::os::fd::RawFd;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Virtio feature bit every modern device offers (virtio 1.x layout).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Errors of a device model.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("queue index {0} out of range")]
    QueueIndex(usize),
    #[error("virtqueue: {0}")]
    Queue(#[from] virtio_queue::Error),
    #[error("descriptor chain: {0}")]
    Chain(String),
    #[error("host I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot notify the guest: {0}")]
    Notify(std::io::Error),
}

/// How a device tells the driver that it used buffers of a queue. The
/// transport supplies it: a write to the vhost-user call fd, or an irqfd of the
/// KVM engine.
pub trait Interrupt: Send + Sync {
    fn signal_used_queue(&self, queue_index: usize) -> std::io::Result<()>;
}

/// Everything a device touches while it serves a notification: the guest's
/// memory, its queues as the driver configured them, and the interrupt line.
pub struct QueueContext<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub queues: &'a mut [Queue],
    pub interrupt: &'a dyn Interrupt,
}

impl QueueContext<'_> {
    /// Raises the queue's interrupt if the driver asked for one.
    pub fn notify(&mut self, index: usize) -> Result<(), DeviceError> {
        use virtio_queue::QueueT;
        let queue = self
            .queues
            .get_mut(index)
            .ok_or(DeviceError::QueueIndex(index))?;
        if queue.needs_notification(self.mem)? {
            self.interrupt
                .signal_used_queue(index)
                .map_err(DeviceError::Notify)?;
        }
        Ok(())
    }
}

/// A virtio device model, driven by a transport.
pub trait VirtioDevice: Send {
    /// Virtio device id (virtio spec 1.2, section 5).
    fn device_type(&self) -> u32;
    /// Number of virtqueues.
    fn num_queues(&self) -> usize;
    /// Largest size the driver may give a queue.
    fn queue_max_size(&self) -> u16 {
        256
    }
    /// Feature bits the device offers.
    fn device_features(&self) -> u64;
    /// Feature bits the driver accepted (a subset of `device_features`).
    fn set_acked_features(&mut self, features: u64);
    /// Reads the device configuration space; bytes past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; the default ignores writes.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver made buffers available on queue `index`.
    fn queue_notify(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceError>;
    /// A file descriptor the transport polls for host-side work (input that
    /// arrived for the guest); `host_event` is called when it is readable.
    fn host_event_fd(&self) -> Option<RawFd> {
        None
    }
    /// Host-side work is ready (see `host_event_fd`).
    fn host_event(&mut self, _ctx: &mut QueueContext) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The driver reset the device or went away.
    fn reset(&mut self) {}
}

/// Reads until `buf` is full or the reader runs dry; returns the bytes read.
/// For descriptor chains, whose stated lengths a guest may not back: take
/// what is there.
pub fn read_fully(reader: &mut impl std::io::Read, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done
}

/// Copies `src` into a configuration-space read of `data` at `offset`,
/// reading zeros past the end of `src`.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= src.len() {
        return;
    }
    let n = data.len().min(src.len() - start);
    data[..n].copy_from_slice(&src[start..start + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded() {
        let cfg = [1u8, 2, 3, 4];
        let mut out = [0xffu8; 3];
        read_config_bytes(&cfg, 2, &mut out);
        assert_eq!(out, [3, 4, 0]);
        read_config_bytes(&cfg, 9, &mut out);
        assert_eq!(out, [0, 0, 0]);
        read_config_bytes(&cfg, u64::MAX, &mut out);
        assert_eq!(out, [0, 0, 0]);
    }
}
