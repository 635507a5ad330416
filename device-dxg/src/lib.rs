//! The virtio-dxg device: the host side of GPU-PV for one VM.
//!
//! The guest's dxgkrnl driver sends GPU-PV messages (docs/protocol.md) on
//! the request queue, each as one descriptor chain: a readable frame (header
//! and command) and a writable buffer for the reply frame. This crate
//! decodes them with `dxvmm-protocol`, keeps the VM's tables ([`vm::Vm`]) and
//! calls the [`Backend`]. It reaches guest memory only through vm-memory and
//! knows nothing of its transport: dxvmm runs it on virtio-mmio (KVM
//! engine) and as a vhost-user device (user-mode engine).

pub mod events;
pub mod observe;
pub mod select;
pub mod vm;

use std::sync::Arc;

use dxvmm_host_backend::Backend;
use dxvmm_protocol::abi::WinLuid;
use dxvmm_protocol::frame::{
    encode_frame, Frame, FrameHeader, FrameKind, VirtioDxgConfig, EVENT_QUEUE, MAX_PAYLOAD,
    REQUEST_QUEUE, VIRTIO_ID_DXG,
};
use dxvmm_protocol::message::Request;
use dxvmm_protocol::NtStatus;
use virtio_devices::{DeviceError, QueueContext, VirtioDevice, VIRTIO_F_VERSION_1};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use zerocopy::IntoBytes;

pub use events::EventQueue;
pub use observe::{Direction, FrameObserver};
pub use select::{GpuSelection, SelectError};
pub use vm::Vm;

/// Counters a user would graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    /// Requests answered with a failure status in the frame (undecodable,
    /// refused before reaching the backend).
    pub refused: u64,
}

/// The virtio-dxg device of one VM.
pub struct DxgDevice {
    vm: Vm,
    backend: Arc<dyn Backend>,
    config: VirtioDxgConfig,
    acked_features: u64,
    stats: Stats,
    events: Arc<EventQueue>,
    /// The guest's memory as of the last notification (requests that name
    /// guest pages hand the backend a view of it).
    mem: Option<GuestMemoryMmap>,
    /// Sees every frame (`set_observer`); none by default.
    observer: Option<Arc<dyn FrameObserver>>,
}

impl DxgDevice {
    /// A device that shows the guest the adapters of `backend` listed in
    /// `luids`, in that order.
    ///
    /// The device takes the backend's event sink: one device per backend.
    pub fn new(backend: Arc<dyn Backend>, luids: &[WinLuid]) -> std::io::Result<DxgDevice> {
        let events = Arc::new(EventQueue::new()?);
        backend.set_event_sink(Some(events.clone()));
        let vm = Vm::with_events(backend.clone(), luids, events.clone());
        let shown: Vec<WinLuid> = vm.adapters().iter().map(|a| a.luid).collect();
        Ok(DxgDevice {
            config: VirtioDxgConfig::new(&shown),
            vm,
            backend,
            acked_features: 0,
            stats: Stats::default(),
            events,
            mem: None,
            observer: None,
        })
    }

    /// Lets `observer` see every request, reply and event frame from now on
    /// (`None`: stop).
    pub fn set_observer(&mut self, observer: Option<Arc<dyn FrameObserver>>) {
        self.vm.set_observer(observer.clone());
        self.observer = observer;
    }

    /// The guest memory that requests handled by [`DxgDevice::handle_frame`]
    /// see, as a notification of the request queue sets it (for tests and
    /// fuzzers that hand the device frames without a queue).
    pub fn set_guest_memory(&mut self, mem: GuestMemoryMmap) {
        self.mem = Some(mem);
    }

    /// Moves pending host events into the buffers the guest posted.
    fn deliver_events(&mut self, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        let mem: &GuestMemoryMmap = ctx.mem;
        let mut used_any = false;
        while let Some(frame) = self.events.pop() {
            let queue: &mut Queue = ctx
                .queues
                .get_mut(usize::from(EVENT_QUEUE))
                .ok_or(DeviceError::QueueIndex(usize::from(EVENT_QUEUE)))?;
            let Some(chain) = queue.iter(mem)?.next() else {
                self.events.unpop(frame);
                break;
            };
            let head = chain.head_index();
            let written = match chain.writer(mem) {
                Ok(mut w) if w.available_bytes() >= frame.len() => {
                    match std::io::Write::write_all(&mut w, &frame) {
                        Ok(()) => frame.len() as u32,
                        Err(e) => {
                            tracing::debug!("writing an event: {e}");
                            0
                        }
                    }
                }
                Ok(_) => {
                    // A buffer below MIN_EVENT_BUFFER: the driver broke the
                    // contract. Return it empty and keep the event.
                    tracing::debug!("event buffer too small");
                    self.events.unpop(frame);
                    queue.add_used(mem, head, 0)?;
                    used_any = true;
                    continue;
                }
                Err(e) => {
                    tracing::debug!("event chain: {e}");
                    self.events.unpop(frame);
                    queue.add_used(mem, head, 0)?;
                    used_any = true;
                    continue;
                }
            };
            if written > 0 {
                if let Some(o) = &self.observer {
                    o.observe(Direction::Event, &frame, Some(mem));
                }
            }
            queue.add_used(mem, head, written)?;
            used_any = true;
        }
        if used_any {
            ctx.notify(usize::from(EVENT_QUEUE))?;
        }
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The VM's tables (for tests and counters).
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    /// Handles one request frame (the readable part of a request chain);
    /// returns the reply frame. Any bytes at all are accepted: what is not
    /// a valid request gets a reply whose status says why.
    pub fn handle_frame(&mut self, bytes: &[u8]) -> Vec<u8> {
        let Some(observer) = self.observer.clone() else {
            return self.answer_frame(bytes);
        };
        observer.observe(Direction::Request, bytes, self.mem.as_ref());
        let reply = self.answer_frame(bytes);
        observer.observe(Direction::Reply, &reply, self.mem.as_ref());
        reply
    }

    fn answer_frame(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.stats.requests += 1;
        // The request id, if the header is there at all, so that even a
        // refusal reaches the right waiter.
        let (request_id, vgpu) = match zerocopy::FromBytes::read_from_prefix(bytes) {
            Ok((h, _)) => {
                let h: FrameHeader = h;
                (h.request_id, h.vgpu_luid)
            }
            Err(_) => (0, WinLuid::default()),
        };
        let refuse = |s: NtStatus| encode_frame(FrameKind::Reply, request_id, vgpu, s, &[]);
        let frame = match Frame::parse(bytes, FrameKind::Request) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("bad request frame: {e}");
                self.stats.refused += 1;
                return refuse(e.status());
            }
        };
        let request = match Request::decode(frame.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("bad request: {e}");
                self.stats.refused += 1;
                return refuse(e.status());
            }
        };
        let name = request.name();
        match self.vm.dispatch_with(vgpu, request, self.mem.as_ref()) {
            Ok(reply) => {
                if let dxvmm_protocol::message::Reply::Status(s) = &reply {
                    if !s.is_success() {
                        tracing::debug!(request = name, status = ?s, "failed");
                    }
                }
                let payload = reply.encode();
                tracing::trace!(request = name, reply_len = payload.len(), "done");
                encode_frame(
                    FrameKind::Reply,
                    request_id,
                    vgpu,
                    NtStatus::SUCCESS,
                    &payload,
                )
            }
            Err(s) => {
                tracing::debug!(request = name, status = ?s, "refused");
                self.stats.refused += 1;
                refuse(s)
            }
        }
    }

    fn serve_requests(&mut self, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        let mem: &GuestMemoryMmap = ctx.mem;
        self.mem = Some(mem.clone());
        let mut used_any = false;
        loop {
            let queue: &mut Queue = ctx
                .queues
                .get_mut(usize::from(REQUEST_QUEUE))
                .ok_or(DeviceError::QueueIndex(usize::from(REQUEST_QUEUE)))?;
            let Some(chain) = queue.iter(mem)?.next() else {
                break;
            };
            let head = chain.head_index();
            let written = match (chain.clone().reader(mem), chain.writer(mem)) {
                (Ok(mut reader), Ok(mut writer)) => {
                    let readable = reader.available_bytes();
                    let reply = if readable > FrameHeader::SIZE + MAX_PAYLOAD {
                        // Read just the header, for the request id.
                        let mut head_bytes = [0u8; FrameHeader::SIZE];
                        let n = std::io::Read::read(&mut reader, &mut head_bytes).unwrap_or(0);
                        let mut r = self.handle_frame(&head_bytes[..n]);
                        // handle() refused it as truncated; say why precisely.
                        if r.len() >= FrameHeader::SIZE {
                            let status = NtStatus::INVALID_PARAMETER;
                            r[20..24].copy_from_slice(status.as_bytes());
                        }
                        r
                    } else {
                        let mut buf = vec![0u8; readable];
                        let n = virtio_devices::read_fully(&mut reader, &mut buf);
                        buf.truncate(n);
                        self.handle_frame(&buf)
                    };
                    let room = writer.available_bytes();
                    write_reply(&mut writer, room, reply)
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!("request chain: {e}");
                    self.stats.refused += 1;
                    0
                }
            };
            queue.add_used(mem, head, written)?;
            used_any = true;
        }
        if used_any {
            ctx.notify(usize::from(REQUEST_QUEUE))?;
        }
        Ok(())
    }
}

/// Writes the reply frame into the chain's writable part. A reply that does
/// not fit becomes a bare STATUS_BUFFER_TOO_SMALL header; without room even
/// for that, nothing is written. Returns the bytes written.
fn write_reply(writer: &mut impl std::io::Write, room: usize, mut reply: Vec<u8>) -> u32 {
    if reply.len() > room {
        reply.truncate(FrameHeader::SIZE);
        if reply.len() < FrameHeader::SIZE || room < FrameHeader::SIZE {
            return 0;
        }
        reply[16..20].copy_from_slice(&0u32.to_le_bytes());
        reply[20..24].copy_from_slice(NtStatus::BUFFER_TOO_SMALL.as_bytes());
    }
    match std::io::Write::write_all(writer, &reply) {
        Ok(()) => reply.len() as u32,
        Err(e) => {
            tracing::debug!("writing a reply: {e}");
            0
        }
    }
}

impl VirtioDevice for DxgDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_DXG
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
        virtio_devices::read_config_bytes(self.config.as_bytes(), offset, data);
    }

    fn queue_notify(&mut self, index: usize, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        match index {
            i if i == usize::from(REQUEST_QUEUE) => self.serve_requests(ctx),
            // New event buffers: deliver what waited for them.
            i if i == usize::from(EVENT_QUEUE) => self.deliver_events(ctx),
            i => Err(DeviceError::QueueIndex(i)),
        }
    }

    fn host_event_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.events.fd())
    }

    fn host_event(&mut self, ctx: &mut QueueContext) -> Result<(), DeviceError> {
        self.events.acknowledge();
        self.deliver_events(ctx)
    }

    fn reset(&mut self) {
        self.vm.reset();
        while self.events.pop().is_some() {}
        self.mem = None;
        self.acked_features = 0;
    }
}

impl Drop for DxgDevice {
    fn drop(&mut self) {
        self.vm.reset();
        self.backend.set_event_sink(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dxvmm_host_backend::SoftBackend;
    use dxvmm_protocol::message::Reply;
    use dxvmm_protocol::vmbus::DxgkvmbCommandCreateProcess;
    use std::sync::Mutex;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    #[derive(Default)]
    struct Irqs(Mutex<Vec<usize>>);
    impl virtio_devices::Interrupt for Irqs {
        fn signal_used_queue(&self, q: usize) -> std::io::Result<()> {
            self.0.lock().unwrap().push(q);
            Ok(())
        }
    }

    const VIRTQ_DESC_F_NEXT: u16 = 1;
    const VIRTQ_DESC_F_WRITE: u16 = 2;

    /// Sends `request` through the request queue in a chain with `reply_room`
    /// writable bytes; returns what the device wrote.
    fn round_trip(dev: &mut DxgDevice, request: &[u8], reply_room: u32) -> Vec<u8> {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40000)]).unwrap();
        let vq = MockSplitQueue::new(&m, 16);
        m.write_slice(request, GuestAddress(0x10000)).unwrap();
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(
                0x10000,
                request.len() as u32,
                VIRTQ_DESC_F_NEXT,
                1,
            )),
            RawDescriptor::from(SplitDescriptor::new(
                0x20000,
                reply_room,
                VIRTQ_DESC_F_WRITE,
                0,
            )),
        ];
        vq.build_desc_chain(&descs).unwrap();
        let events = MockSplitQueue::create(&m, GuestAddress(0x30000), 16);
        let mut queues = vec![vq.create_queue().unwrap(), events.create_queue().unwrap()];
        let irqs = Irqs::default();
        let mut ctx = QueueContext {
            mem: &m,
            queues: &mut queues,
            interrupt: &irqs,
        };
        dev.queue_notify(0, &mut ctx).unwrap();
        assert_eq!(*irqs.0.lock().unwrap(), vec![0]);
        let used = vq.used();
        let elem = used.ring().ref_at(0).unwrap().load();
        let len = elem.len();
        let mut out = vec![0u8; len as usize];
        m.read_slice(&mut out, GuestAddress(0x20000)).unwrap();
        out
    }

    fn create_process_request() -> Request {
        let mut cmd: Box<DxgkvmbCommandCreateProcess> = Box::new(zerocopy::FromZeros::new_zeroed());
        cmd.hdr.channel_type = dxvmm_protocol::vmbus::DXGKVMB_VM_TO_HOST;
        cmd.hdr.command_type = dxvmm_protocol::vmbus::global::DXGK_VMBCOMMAND_CREATEPROCESS;
        Request::CreateProcess(cmd)
    }

    fn device() -> DxgDevice {
        let backend: Arc<dyn Backend> = Arc::new(SoftBackend::new());
        let luid = backend.adapters()[0].luid;
        DxgDevice::new(backend, &[luid]).unwrap()
    }

    #[test]
    fn config_space_lists_the_adapters() {
        let dev = device();
        let mut cfg = [0u8; VirtioDxgConfig::SIZE];
        dev.read_config(0, &mut cfg);
        let cfg: VirtioDxgConfig = zerocopy::FromBytes::read_from_bytes(&cfg[..]).unwrap();
        assert_eq!(cfg.adapters().unwrap(), &[dev.vm().adapters()[0].luid]);
    }

    #[test]
    fn a_request_gets_its_reply_in_the_same_chain() {
        let mut dev = device();
        let cmd = create_process_request();
        let frame = encode_frame(
            FrameKind::Request,
            42,
            WinLuid::default(),
            NtStatus::SUCCESS,
            &cmd.encode(),
        );
        let out = round_trip(&mut dev, &frame, 64);
        let reply = Frame::parse(&out, FrameKind::Reply).unwrap();
        assert_eq!(reply.header.request_id, 42);
        assert_eq!(reply.header.status, NtStatus::SUCCESS);
        match Reply::decode(&cmd, reply.payload).unwrap() {
            Reply::CreateProcess(r) => assert_ne!(r.hprocess.0, 0),
            r => panic!("{r:?}"),
        }
        assert_eq!(dev.vm().counts().processes, 1);
    }

    #[test]
    fn garbage_gets_an_error_status_and_the_device_goes_on() {
        let mut dev = device();
        // Not a frame at all.
        let out = round_trip(&mut dev, b"garbage that is not a frame at all....", 64);
        let reply = Frame::parse(&out, FrameKind::Reply).unwrap();
        assert!(!reply.header.status.is_success());
        // A good header around an unknown command.
        let mut payload = vec![0u8; 24];
        payload[12..16].copy_from_slice(&2u32.to_le_bytes());
        payload[16..20].copy_from_slice(&9999u32.to_le_bytes());
        let frame = encode_frame(
            FrameKind::Request,
            7,
            WinLuid::default(),
            NtStatus::SUCCESS,
            &payload,
        );
        let out = round_trip(&mut dev, &frame, 64);
        let reply = Frame::parse(&out, FrameKind::Reply).unwrap();
        assert_eq!(reply.header.request_id, 7);
        assert!(!reply.header.status.is_success());
        // No room for a reply: nothing written, nothing crashes.
        let cmd = create_process_request();
        let frame = encode_frame(
            FrameKind::Request,
            8,
            WinLuid::default(),
            NtStatus::SUCCESS,
            &cmd.encode(),
        );
        assert!(round_trip(&mut dev, &frame, 8).is_empty());
        // Room for the header only: BUFFER_TOO_SMALL.
        let out = round_trip(&mut dev, &frame, 32);
        let reply = Frame::parse(&out, FrameKind::Reply).unwrap();
        assert_eq!(reply.header.status, NtStatus::BUFFER_TOO_SMALL);
        assert_eq!(dev.stats().requests, 4);
    }
}
