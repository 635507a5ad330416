//! Host-to-guest events: what the backend reports asynchronously, framed
//! and held until the guest has posted a buffer on the event queue.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use dxvmm_host_backend::{EventSink, Handle};
use dxvmm_protocol::abi::WinLuid;
use dxvmm_protocol::frame::{encode_frame, FrameKind};
use dxvmm_protocol::message::HostEvent;
use dxvmm_protocol::NtStatus;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Events waiting for an event-queue buffer, and the eventfd that tells the
/// device thread there are some. Never drops an event (§2.3).
pub struct EventQueue {
    pending: Mutex<VecDeque<Vec<u8>>>,
    ready: EventFd,
}

impl EventQueue {
    pub fn new() -> std::io::Result<EventQueue> {
        Ok(EventQueue {
            pending: Mutex::new(VecDeque::new()),
            ready: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Readable while events wait.
    pub fn fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    /// Clears the eventfd (the device is about to deliver what is pending).
    pub fn acknowledge(&self) {
        let _ = self.ready.read();
    }

    fn push(&self, event: HostEvent) {
        let frame = encode_frame(
            FrameKind::Event,
            0,
            WinLuid::default(),
            NtStatus::SUCCESS,
            &event.encode(),
        );
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(frame);
        if let Err(e) = self.ready.write(1) {
            tracing::warn!("cannot wake the device thread: {e}");
        }
    }

    /// The oldest event frame, if any.
    pub fn pop(&self) -> Option<Vec<u8>> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Puts back a frame that could not be delivered yet.
    pub fn unpop(&self, frame: Vec<u8>) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_front(frame);
    }

    pub fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EventSink for EventQueue {
    fn fence_signaled(&self, _process: Handle, _fence: Handle, _value: u64) {
        // The value is already in the guest's fence slot; waiters that need
        // a wake-up registered a wait and hear of it through wait_satisfied.
    }

    fn wait_satisfied(&self, process: Handle, cookie: u64) {
        self.push(HostEvent::signal(process, cookie, u64::from(process.0)));
    }
}
