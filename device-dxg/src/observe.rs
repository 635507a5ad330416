//! A hook that sees every frame crossing the device, for recorders
//! (`dxvmm run --trace`, docs/trace.md) and other instruments.
//!
//! The device calls it on its own thread: with each request frame before
//! dispatching it, with the reply frame after, and with each host event frame
//! once it is in a guest buffer. The guest memory passed along is the
//! device's view of it at that moment, so an observer can copy what the
//! backend is about to read (command streams, uploads) or has just written
//! (LOCK2 results). An observer only reads: it must not change what the guest
//! sees. A device without one pays one branch per frame.

use vm_memory::GuestMemoryMmap;

/// Which way a frame crossed the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Guest to host, before the device acts on it.
    Request,
    /// The device's answer to the request just observed (before it is fitted
    /// into the guest's reply buffer).
    Reply,
    /// Host to guest on the event queue, as delivered.
    Event,
}

/// Something that watches the device's frames.
pub trait FrameObserver: Send + Sync {
    /// Called with each frame; `mem` is the guest's memory when the device
    /// has it (always, on a running VM).
    fn observe(&self, direction: Direction, frame: &[u8], mem: Option<&GuestMemoryMmap>);

    /// Asked after a LOCK2 request was observed, before the device acts
    /// on it: whether to hear how far its result lands
    /// ([`FrameObserver::lock_progress`]). Hearing it makes the backend
    /// copy a large result in pieces, which costs a little more.
    fn wants_lock_progress(&self) -> bool {
        false
    }

    /// While the device acts on the LOCK2 last observed (when
    /// [`FrameObserver::wants_lock_progress`] said so): the first `bytes`
    /// bytes of its allocation hold what the guest will find there once it
    /// has the reply, if the LOCK2 succeeds. Calls come with growing
    /// counts, possibly none; the reply is observed as usual after them.
    fn lock_progress(&self, bytes: u64) {
        let _ = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DxgDevice;
    use dxvmm_host_backend::{Backend, SoftBackend};
    use dxvmm_protocol::abi::WinLuid;
    use dxvmm_protocol::frame::{encode_frame, Frame, FrameKind};
    use dxvmm_protocol::NtStatus;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Seen(Mutex<Vec<(Direction, Vec<u8>)>>);
    impl FrameObserver for Seen {
        fn observe(&self, direction: Direction, frame: &[u8], _mem: Option<&GuestMemoryMmap>) {
            self.0.lock().unwrap().push((direction, frame.to_vec()));
        }
    }

    #[test]
    fn the_observer_sees_each_request_and_its_reply_unchanged() {
        let backend: Arc<dyn Backend> = Arc::new(SoftBackend::new());
        let luid = backend.adapters()[0].luid;
        let mut dev = DxgDevice::new(backend, &[luid]).unwrap();
        let seen = Arc::new(Seen::default());
        let request = encode_frame(
            FrameKind::Request,
            5,
            WinLuid::default(),
            NtStatus::SUCCESS,
            b"not a command",
        );
        let unobserved = dev.handle_frame(&request);
        dev.set_observer(Some(seen.clone()));
        let reply = dev.handle_frame(&request);
        assert_eq!(reply, unobserved);
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], (Direction::Request, request));
        assert_eq!(seen[1], (Direction::Reply, reply.clone()));
        let parsed = Frame::parse(&reply, FrameKind::Reply).unwrap();
        assert_eq!(parsed.header.request_id, 5);
    }
}
