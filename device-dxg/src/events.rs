//! Host-to-guest events: what the backend reports asynchronously, framed
//! and held until the guest has posted a buffer on the event queue, and the
//! CPU waits (§2.6.8) that are owed one.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

use dxvmm_host_backend::{EventSink, Handle};
use dxvmm_protocol::abi::WinLuid;
use dxvmm_protocol::frame::{encode_frame, FrameKind};
use dxvmm_protocol::message::HostEvent;
use dxvmm_protocol::NtStatus;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Most CPU waits one guest process may have pending at once. Each is a
/// guest thread asleep in the driver; a guest that registers waits without
/// end gets STATUS_INSUFFICIENT_RESOURCES, not the host's memory.
pub const MAX_PENDING_WAITS: usize = 4096;

/// Why a CPU wait could not be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackError {
    /// The process already has a pending wait under this cookie.
    Duplicate,
    /// The process has [`MAX_PENDING_WAITS`] pending waits.
    TooMany,
}

/// Pending CPU waits: for each process, each wait's cookie and the fences
/// it names.
type Waits = HashMap<Handle, HashMap<u64, Vec<Handle>>>;

/// Events waiting for an event-queue buffer, and the eventfd that tells the
/// device thread there are some. Never drops an event (§2.3).
///
/// It also keeps the CPU waits that replied STATUS_PENDING, so that each
/// gets exactly one SIGNALGUESTEVENT: when the backend reports it satisfied
/// ([`EventSink::wait_satisfied`]), or when it can no longer be because a
/// fence it names or its process was destroyed ([`EventQueue::end_waits`]).
/// The backend reports only the first; a wait on a destroyed fence would
/// otherwise leave its guest thread asleep for good.
pub struct EventQueue {
    pending: Mutex<VecDeque<Vec<u8>>>,
    ready: EventFd,
    waits: Mutex<Waits>,
}

impl EventQueue {
    pub fn new() -> std::io::Result<EventQueue> {
        Ok(EventQueue {
            pending: Mutex::new(VecDeque::new()),
            ready: EventFd::new(EFD_NONBLOCK)?,
            waits: Mutex::new(HashMap::new()),
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

    fn waits(&self) -> std::sync::MutexGuard<'_, Waits> {
        self.waits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a CPU wait of `process` on `fences` under `cookie`. Called
    /// before the wait is handed to the backend, which may report it
    /// satisfied at once.
    pub fn track_wait(
        &self,
        process: Handle,
        cookie: u64,
        fences: Vec<Handle>,
    ) -> Result<(), TrackError> {
        let mut waits = self.waits();
        let of = waits.entry(process).or_default();
        if of.contains_key(&cookie) {
            return Err(TrackError::Duplicate);
        }
        if of.len() >= MAX_PENDING_WAITS {
            return Err(TrackError::TooMany);
        }
        of.insert(cookie, fences);
        Ok(())
    }

    /// Forgets a wait without an event (the backend refused it).
    pub fn untrack_wait(&self, process: Handle, cookie: u64) {
        let mut waits = self.waits();
        if let Some(of) = waits.get_mut(&process) {
            of.remove(&cookie);
            if of.is_empty() {
                waits.remove(&process);
            }
        }
    }

    /// Takes the wait out of the table; true if it was there (it is owed
    /// its one event).
    fn take_wait(&self, process: Handle, cookie: u64) -> bool {
        let mut waits = self.waits();
        let Some(of) = waits.get_mut(&process) else {
            return false;
        };
        let had = of.remove(&cookie).is_some();
        if of.is_empty() {
            waits.remove(&process);
        }
        had
    }

    /// Ends every pending wait of `process` that names a fence for which
    /// `gone` is true: each gets its SIGNALGUESTEVENT now and is forgotten
    /// (the guest driver tells it from a satisfied one, §2.6.8). Returns
    /// how many ended.
    pub fn end_waits(&self, process: Handle, gone: impl Fn(Handle) -> bool) -> usize {
        // The fences are checked outside the lock: `gone` may ask the
        // backend, whose completion thread takes the lock to report.
        let named: Vec<(u64, Vec<Handle>)> = match self.waits().get(&process) {
            Some(of) => of.iter().map(|(c, f)| (*c, f.clone())).collect(),
            None => return 0,
        };
        let mut ended = 0;
        for (cookie, fences) in named {
            // A wait satisfied meanwhile already had its event.
            if fences.iter().any(|f| gone(*f)) && self.take_wait(process, cookie) {
                self.push(Self::signal(process, cookie));
                ended += 1;
            }
        }
        ended
    }

    /// Ends every pending wait of `process` (it was destroyed).
    pub fn end_process_waits(&self, process: Handle) -> usize {
        let of = self.waits().remove(&process).unwrap_or_default();
        for cookie in of.keys() {
            self.push(Self::signal(process, *cookie));
        }
        of.len()
    }

    /// Forgets every pending wait without events (device reset: the guest
    /// driver has failed its waiters already).
    pub fn forget_waits(&self) {
        self.waits().clear();
    }

    /// Pending waits of `process`.
    pub fn pending_waits(&self, process: Handle) -> usize {
        self.waits().get(&process).map_or(0, HashMap::len)
    }

    fn signal(process: Handle, cookie: u64) -> HostEvent {
        HostEvent::signal(process, cookie, u64::from(process.0))
    }
}

impl EventSink for EventQueue {
    fn fence_signaled(&self, _process: Handle, _fence: Handle, _value: u64) {
        // The value is already in the guest's fence slot; waiters that need
        // a wake-up registered a wait and hear of it through wait_satisfied.
    }

    fn wait_satisfied(&self, process: Handle, cookie: u64) {
        // A wait the device no longer tracks already had its event (it was
        // ended when a fence it names was destroyed): one event per wait.
        if self.take_wait(process, cookie) {
            self.push(Self::signal(process, cookie));
        } else {
            tracing::debug!(?process, cookie, "late wait_satisfied dropped");
        }
    }
}
