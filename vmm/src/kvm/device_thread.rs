//! The device thread: what wakes the virtio devices outside a vCPU exit,
//! dispatched by rust-vmm's event-manager.
//!
//! Subscribers:
//!   - one per virtio-mmio transport ([`TransportSubscriber`]): its queues'
//!     ioeventfds (the guest's QueueNotify writes, which KVM turns into
//!     eventfd signals without a userspace exit), its device's host-side
//!     fd (console input, the dxg device's host events) while the device is
//!     active and asks for it, and a
//!     `rescan` eventfd that a vCPU signals when a register write changed
//!     what the device asks for (the driver set DRIVER_OK or reset it);
//!   - the stop eventfd ([`StopSubscriber`]), written by the supervisor.
//!
//! Nothing here polls on a timer: the thread sleeps in epoll until one of
//! those fds is signalled.

use std::cell::RefCell;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use virtio_mmio::MmioTransport;
use vmm_sys_util::eventfd::EventFd;

use super::devices::VirtioSlot;

/// `Events` data of a transport's host fd; queue events carry their index.
const HOST: u32 = u32::MAX;
/// `Events` data of a transport's rescan eventfd.
const RESCAN: u32 = u32::MAX - 1;

/// How the thread ends: set by a subscriber, read by the loop in [`run`].
/// Subscribers cannot return errors to the event manager, so they leave
/// them here.
type Exit = Rc<RefCell<Option<io::Result<()>>>>;

fn set_exit(exit: &Exit, r: io::Result<()>) {
    exit.borrow_mut().get_or_insert(r);
}

fn em_error(e: event_manager::Error) -> io::Error {
    match e {
        event_manager::Error::Epoll(errno) => io::Error::from_raw_os_error(errno.errno()),
        other => io::Error::other(other.to_string()),
    }
}

fn lock(t: &Mutex<MmioTransport>) -> MutexGuard<'_, MmioTransport> {
    // A device whose handler panicked is still usable for what this thread
    // does; do not spread the panic.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// One virtio-mmio transport's event sources.
struct TransportSubscriber {
    /// The device's index on the MMIO bus, for log messages.
    index: usize,
    transport: Arc<Mutex<MmioTransport>>,
    /// Our own handles on the transport's queue eventfds and the rescan
    /// eventfd: each stays open while it is registered.
    queue_evts: Vec<EventFd>,
    rescan: EventFd,
    /// The device's host fd we poll: the number the device gave (to tell
    /// when it asks for another) and our duplicate of it, which is what is
    /// registered. The duplicate keeps the registration valid even after
    /// the device closes its own fd (a console at EOF does), so removing it
    /// never fails and never leaves a stale entry in the event manager.
    host: Option<(RawFd, OwnedFd)>,
    exit: Exit,
}

impl TransportSubscriber {
    fn new(index: usize, slot: &VirtioSlot, exit: Exit) -> io::Result<Self> {
        let t = lock(&slot.transport);
        // Indexed by queue: an event's data is the index of its queue.
        let queue_evts = (0..t.num_queues())
            .map(|q| match t.queue_event(q) {
                Some(evt) => evt.try_clone(),
                None => Err(io::Error::other(format!("queue {q} has no eventfd"))),
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(TransportSubscriber {
            index,
            transport: slot.transport.clone(),
            queue_evts,
            rescan: slot.rescan.try_clone()?,
            host: None,
            exit,
        })
    }

    fn fail(&self, what: &str, e: event_manager::Error) {
        let e = em_error(e);
        let msg = format!("virtio device {}: cannot {what}: {e}", self.index);
        set_exit(&self.exit, Err(io::Error::new(e.kind(), msg)));
    }

    /// Polls the device's host fd exactly while the transport says so: the
    /// device is active, not broken, and asks for it (a console stops
    /// asking while it holds input the guest has no buffer for).
    fn follow_host_fd(&mut self, ops: &mut EventOps) {
        let t = lock(&self.transport);
        let want = t.host_event_fd();
        if want == self.host.as_ref().map(|(raw, _)| *raw) {
            return;
        }
        if let Some((_, dup)) = self.host.take() {
            tracing::debug!("virtio device {}: host fd no longer polled", self.index);
            if let Err(e) = ops.remove(Events::empty(&dup)) {
                tracing::debug!("virtio device {}: host fd: {e}", self.index);
            }
        }
        let Some(raw) = want else { return };
        // SAFETY: the device returned `raw` just now and we still hold the
        // transport's lock, so the device cannot close it before it is
        // duplicated here.
        let dup = match unsafe { BorrowedFd::borrow_raw(raw) }.try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                set_exit(&self.exit, Err(e));
                return;
            }
        };
        match ops.add(Events::with_data(&dup, HOST, EventSet::IN)) {
            Ok(()) => {
                tracing::debug!("virtio device {}: polling its host fd", self.index);
                self.host = Some((raw, dup));
            }
            Err(e) => self.fail("poll its host fd", e),
        }
    }
}

impl MutEventSubscriber for TransportSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        for (q, evt) in self.queue_evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, q as u32, EventSet::IN)) {
                return self.fail("watch a queue notification", e);
            }
        }
        if let Err(e) = ops.add(Events::with_data(&self.rescan, RESCAN, EventSet::IN)) {
            return self.fail("watch its state", e);
        }
        self.follow_host_fd(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let r = match events.data() {
            HOST => lock(&self.transport).host_event(),
            RESCAN => {
                let _ = self.rescan.read();
                Ok(())
            }
            q => match self.queue_evts.get(q as usize) {
                Some(evt) => {
                    // Read (reset) the counter before serving the queue: a
                    // notification that lands while we serve it wakes us
                    // again instead of being lost.
                    let _ = evt.read();
                    lock(&self.transport).process_queue(q as usize)
                }
                None => Ok(()),
            },
        };
        if let Err(e) = r {
            tracing::warn!("virtio device {}: {e}", self.index);
        }
        // Serving a queue or input may change what the device asks for.
        self.follow_host_fd(ops);
    }
}

/// Ends the thread when the supervisor writes the stop eventfd.
struct StopSubscriber {
    stop: EventFd,
    exit: Exit,
}

impl MutEventSubscriber for StopSubscriber {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.stop, EventSet::IN)) {
            set_exit(&self.exit, Err(em_error(e)));
        }
    }

    fn process(&mut self, _: Events, _: &mut EventOps) {
        set_exit(&self.exit, Ok(()));
    }
}

/// Serves the devices in `slots` until `stop` is written.
pub(super) fn run(slots: &[VirtioSlot], stop: EventFd) -> io::Result<()> {
    let exit: Exit = Rc::default();
    let mut em: EventManager<Box<dyn MutEventSubscriber>> =
        EventManager::new().map_err(em_error)?;
    em.add_subscriber(Box::new(StopSubscriber {
        stop,
        exit: exit.clone(),
    }));
    for (i, slot) in slots.iter().enumerate() {
        let sub = TransportSubscriber::new(i, slot, exit.clone())?;
        em.add_subscriber(Box::new(sub));
    }
    loop {
        if let Some(r) = exit.borrow_mut().take() {
            return r;
        }
        // EINTR comes back as zero events; the loop just waits again.
        em.run().map_err(em_error)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    #[test]
    fn stop_ends_the_thread() {
        let stop = EventFd::new(0).unwrap();
        stop.write(1).unwrap();
        run(&[], stop).unwrap();
    }

    #[test]
    fn removing_a_host_fd_the_device_closed_succeeds() {
        // What follow_host_fd relies on: a registered duplicate stays valid
        // after the device closes the original (a console at EOF), so it
        // can be removed without an error.
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 succeeded; both descriptors are ours alone.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let dup = r.try_clone().unwrap();
        drop(r);
        drop(w);
        let exit: Exit = Rc::default();
        struct Probe(OwnedFd, Exit);
        impl MutEventSubscriber for Probe {
            fn init(&mut self, ops: &mut EventOps) {
                ops.add(Events::new(&self.0, EventSet::IN)).unwrap();
                let r = ops.remove(Events::empty(&self.0)).map_err(em_error);
                set_exit(&self.1, r);
            }
            fn process(&mut self, _: Events, _: &mut EventOps) {}
        }
        let mut em: EventManager<Probe> = EventManager::new().unwrap();
        em.add_subscriber(Probe(dup, exit.clone()));
        exit.borrow_mut().take().unwrap().unwrap();
        assert_eq!(em.run_with_timeout(0).unwrap(), 0);
    }
}
