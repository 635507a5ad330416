//! Serves a dxvmm virtio device model to a vhost-user frontend.
//!
//! The frontend (UML's `virtio_uml`, or QEMU) owns the driver side; we are the
//! backend ("slave"): we receive the guest's memory as file descriptors, map
//! them with `mmap(fd, offset)` exactly as given, and run the device's queues
//! on the kick eventfds, signalling completions on the call fds.
//!
//! rust-vmm's `vhost` crate insists that SET_MEM_TABLE carries exactly `num`
//! regions, while UML always sends room for two with `num = 1`; so the
//! protocol is handled here, following what real frontends send rather than
//! the strictest reading of the spec. Everything the frontend sends is
//! checked: payload sizes, ring indices, ring sizes and addresses, region
//! layout; a bad message is answered with a failure (when the frontend asked
//! for an ack) and logged, and the device keeps serving.

pub mod message;

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use virtio_devices::{Interrupt, QueueContext, VirtioDevice};
use virtio_queue::{Queue, QueueT};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use message::*;

/// Errors of the vhost-user backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("vhost-user protocol: {0}")]
    Protocol(String),
    #[error("vhost-user socket: {0}")]
    Socket(io::Error),
    #[error("mapping guest memory: {0}")]
    Memory(String),
    #[error("epoll: {0}")]
    Epoll(io::Error),
}

const TOKEN_SOCKET: u64 = 0;
const TOKEN_STOP: u64 = 1;
const TOKEN_HOST: u64 = 2;
const TOKEN_KICK_BASE: u64 = 16;
/// Rings above this index are refused.
const MAX_QUEUES: usize = 64;

/// Call fds: UML hands us the write end of a pipe, QEMU an eventfd; both take
/// an 8-byte write.
struct CallFds(Vec<Option<File>>);

impl Interrupt for CallFds {
    fn signal_used_queue(&self, index: usize) -> io::Result<()> {
        if let Some(Some(f)) = self.0.get(index) {
            match (&*f).write(&1u64.to_ne_bytes()) {
                Ok(_) => {}
                // A full pipe already holds a pending interrupt.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Backend state of one frontend connection.
struct Connection<'a> {
    sock: UnixStream,
    device: &'a mut dyn VirtioDevice,
    epoll: Epoll,
    acked_features: u64,
    protocol_features: u64,
    mem: Option<GuestMemoryMmap>,
    regions: Vec<MemRegion>,
    queues: Vec<Queue>,
    kicks: Vec<Option<File>>,
    enabled: Vec<bool>,
    calls: CallFds,
    host_fd: Option<RawFd>,
    /// Backend-to-frontend channel; kept open for the frontend's sake.
    backend_req: Option<File>,
}

/// Waits for one frontend on `listener`, then serves `device` to it until the
/// frontend disconnects or `stop` is signalled; `on_connect` runs once the
/// frontend is accepted. Returns Ok(false) if `stop` came before any frontend
/// connected.
pub fn serve_listener(
    listener: &UnixListener,
    device: &mut dyn VirtioDevice,
    stop: &EventFd,
    on_connect: impl FnOnce(),
) -> Result<bool, Error> {
    let epoll = Epoll::new().map_err(Error::Epoll)?;
    add(&epoll, listener.as_raw_fd(), TOKEN_SOCKET)?;
    add(&epoll, stop.as_raw_fd(), TOKEN_STOP)?;
    let mut events = [EpollEvent::default(); 2];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Epoll(e)),
        };
        if events[..n].iter().any(|e| e.data() == TOKEN_STOP) {
            return Ok(false);
        }
        if n > 0 {
            break;
        }
    }
    let (sock, _) = listener.accept().map_err(Error::Socket)?;
    on_connect();
    serve(sock, device, stop)?;
    Ok(true)
}

/// Serves `device` on a connected frontend socket until it disconnects or
/// `stop` is signalled.
pub fn serve(sock: UnixStream, device: &mut dyn VirtioDevice, stop: &EventFd) -> Result<(), Error> {
    let epoll = Epoll::new().map_err(Error::Epoll)?;
    add(&epoll, sock.as_raw_fd(), TOKEN_SOCKET)?;
    add(&epoll, stop.as_raw_fd(), TOKEN_STOP)?;
    let nq = device.num_queues().min(MAX_QUEUES);
    let max = device.queue_max_size();
    let queues = (0..nq)
        .map(|_| Queue::new(max).map_err(|e| Error::Protocol(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut conn = Connection {
        sock,
        device,
        epoll,
        acked_features: 0,
        protocol_features: 0,
        mem: None,
        regions: Vec::new(),
        queues,
        kicks: (0..nq).map(|_| None).collect(),
        enabled: vec![false; nq],
        calls: CallFds((0..nq).map(|_| None).collect()),
        host_fd: None,
        backend_req: None,
    };
    conn.run()
}

fn add(epoll: &Epoll, fd: RawFd, token: u64) -> Result<(), Error> {
    epoll
        .ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
        .map_err(Error::Epoll)
}

impl Connection<'_> {
    fn run(&mut self) -> Result<(), Error> {
        let mut events = [EpollEvent::default(); 16];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Epoll(e)),
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => {
                        // The guest may have kicked just before it went away:
                        // serve what it left in the rings before stopping.
                        for i in 0..self.queues.len() {
                            self.kick(i);
                        }
                        return Ok(());
                    }
                    TOKEN_SOCKET => {
                        if !self.handle_message()? {
                            tracing::debug!("vhost-user frontend disconnected");
                            self.device.reset();
                            return Ok(());
                        }
                    }
                    TOKEN_HOST => self.with_ctx(|dev, ctx| dev.host_event(ctx)),
                    t => {
                        let index = (t - TOKEN_KICK_BASE) as usize;
                        self.kick(index);
                    }
                }
            }
            self.sync_host_fd()?;
        }
    }

    fn active(&self) -> bool {
        self.mem.is_some()
            && self
                .queues
                .iter()
                .zip(&self.enabled)
                .all(|(q, &en)| q.ready() && en)
    }

    /// Polls the device's host-side fd only while the device is live and asks
    /// for it.
    fn sync_host_fd(&mut self) -> Result<(), Error> {
        let want = if self.active() {
            self.device.host_event_fd()
        } else {
            None
        };
        if want != self.host_fd {
            if let Some(old) = self.host_fd.take() {
                let _ = self
                    .epoll
                    .ctl(ControlOperation::Delete, old, EpollEvent::default());
            }
            if let Some(fd) = want {
                add(&self.epoll, fd, TOKEN_HOST)?;
                self.host_fd = Some(fd);
            }
        }
        Ok(())
    }

    fn with_ctx(
        &mut self,
        f: impl FnOnce(
            &mut dyn VirtioDevice,
            &mut QueueContext,
        ) -> Result<(), virtio_devices::DeviceError>,
    ) {
        let Some(mem) = self.mem.as_ref() else {
            return;
        };
        let mut ctx = QueueContext {
            mem,
            queues: &mut self.queues,
            interrupt: &self.calls,
        };
        if let Err(e) = f(&mut *self.device, &mut ctx) {
            tracing::warn!("device: {e}");
        }
    }

    fn kick(&mut self, index: usize) {
        if let Some(Some(k)) = self.kicks.get(index) {
            let mut buf = [0u8; 8];
            let _ = (&*k).read(&mut buf);
        }
        let ready = self.queues.get(index).is_some_and(|q| q.ready())
            && self.enabled.get(index).copied().unwrap_or(false);
        if ready {
            self.with_ctx(|dev, ctx| dev.queue_notify(index, ctx));
        }
    }

    /// Reads and handles one message; Ok(false) when the frontend hung up.
    fn handle_message(&mut self) -> Result<bool, Error> {
        let mut hdr = [0u8; HEADER_SIZE];
        let mut fds = [-1 as RawFd; MAX_MEM_REGIONS];
        let mut iov = [libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: HEADER_SIZE,
        }];
        // SAFETY: the iovec points at `hdr`, which lives across the call and
        // has exactly `iov_len` bytes of room.
        let (n, nfds) = match unsafe { self.sock.recv_with_fds(&mut iov, &mut fds) } {
            Ok(r) => r,
            Err(e) if e.errno() == libc::ECONNRESET => return Ok(false),
            Err(e) => return Err(Error::Socket(io::Error::from_raw_os_error(e.errno()))),
        };
        // SAFETY: recvmsg gave us these `nfds` descriptors; nothing else owns them.
        let files: Vec<File> = fds[..nfds]
            .iter()
            .map(|&fd| unsafe { File::from_raw_fd(fd) })
            .collect();
        if n == 0 {
            return Ok(false);
        }
        if n < HEADER_SIZE {
            self.sock.read_exact(&mut hdr[n..]).map_err(Error::Socket)?;
        }
        let header = Header::decode(&hdr)?;
        let mut payload = vec![0u8; header.size as usize];
        self.sock.read_exact(&mut payload).map_err(Error::Socket)?;

        let request = Request::from_u32(header.request);
        let result = match request {
            Some(r) => self.dispatch(r, &payload, files),
            None => Err(Error::Protocol(format!(
                "unknown request {}",
                header.request
            ))),
        };
        let replies_itself = matches!(
            request,
            Some(
                Request::GetFeatures
                    | Request::GetProtocolFeatures
                    | Request::GetQueueNum
                    | Request::GetVringBase
                    | Request::GetConfig
            )
        );
        if let Err(e) = &result {
            tracing::warn!("vhost-user request {}: {e}", header.request);
        }
        if header.need_reply() && !replies_itself {
            let status: u64 = if result.is_ok() { 0 } else { 1 };
            self.reply(header.request, &status.to_le_bytes())?;
        }
        Ok(true)
    }

    fn reply(&mut self, request: u32, payload: &[u8]) -> Result<(), Error> {
        let mut msg = Header::reply(request, payload.len()).to_vec();
        msg.extend_from_slice(payload);
        self.sock.write_all(&msg).map_err(Error::Socket)
    }

    fn queue_index(&self, index: u64) -> Result<usize, Error> {
        let i = (index & VRING_INDEX_MASK) as usize;
        if i >= self.queues.len() {
            return Err(Error::Protocol(format!("vring index {i}")));
        }
        Ok(i)
    }

    fn dispatch(&mut self, request: Request, p: &[u8], mut files: Vec<File>) -> Result<(), Error> {
        tracing::trace!(?request, len = p.len(), fds = files.len(), "vhost-user");
        match request {
            Request::GetFeatures => {
                let f = self.device.device_features() | F_PROTOCOL_FEATURES;
                self.reply(request as u32, &f.to_le_bytes())?;
            }
            Request::SetFeatures => {
                let f = le_u64(p, 0)?;
                self.acked_features = f;
                self.device.set_acked_features(f & !F_PROTOCOL_FEATURES);
            }
            Request::GetProtocolFeatures => {
                let f = PROTOCOL_F_MQ
                    | PROTOCOL_F_REPLY_ACK
                    | PROTOCOL_F_CONFIG
                    | PROTOCOL_F_BACKEND_REQ;
                self.reply(request as u32, &f.to_le_bytes())?;
            }
            Request::SetProtocolFeatures => self.protocol_features = le_u64(p, 0)?,
            Request::GetQueueNum => {
                let n = self.queues.len() as u64;
                self.reply(request as u32, &n.to_le_bytes())?;
            }
            Request::SetOwner => {}
            Request::ResetOwner => self.reset(),
            Request::SetMemTable => self.set_mem_table(p, files)?,
            Request::SetVringNum => {
                let s = VringState::decode(p)?;
                let i = self.queue_index(s.index.into())?;
                let size = u16::try_from(s.num)
                    .map_err(|_| Error::Protocol(format!("vring size {}", s.num)))?;
                self.queues[i]
                    .try_set_size(size)
                    .map_err(|e| Error::Protocol(format!("vring {i} size {size}: {e}")))?;
            }
            Request::SetVringAddr => {
                let a = VringAddr::decode(p)?;
                let i = self.queue_index(a.index.into())?;
                let desc = self.translate(a.desc)?;
                let avail = self.translate(a.avail)?;
                let used = self.translate(a.used)?;
                let q = &mut self.queues[i];
                q.try_set_desc_table_address(desc)
                    .and_then(|_| q.try_set_avail_ring_address(avail))
                    .and_then(|_| q.try_set_used_ring_address(used))
                    .map_err(|e| Error::Protocol(format!("vring {i} address: {e}")))?;
            }
            Request::SetVringBase => {
                let s = VringState::decode(p)?;
                let i = self.queue_index(s.index.into())?;
                let base = u16::try_from(s.num)
                    .map_err(|_| Error::Protocol(format!("vring base {}", s.num)))?;
                self.queues[i].set_next_avail(base);
                self.queues[i].set_next_used(base);
            }
            Request::GetVringBase => {
                let s = VringState::decode(p)?;
                let i = self.queue_index(s.index.into())?;
                let base = self.queues[i].next_avail();
                self.stop_ring(i);
                let reply = VringState {
                    index: i as u32,
                    num: base.into(),
                };
                self.reply(request as u32, &reply.encode())?;
            }
            Request::SetVringKick => {
                let v = le_u64(p, 0)?;
                let i = self.queue_index(v)?;
                let fd = take_ring_fd(v, &mut files)?;
                if let Some(old) = self.kicks[i].take() {
                    let _ = self.epoll.ctl(
                        ControlOperation::Delete,
                        old.as_raw_fd(),
                        EpollEvent::default(),
                    );
                }
                let Some(kick) = fd else {
                    return Err(Error::Protocol(
                        "in-band kicks were not negotiated".to_string(),
                    ));
                };
                // Reads of it must never block (the stop path drains rings
                // without waiting for a kick).
                set_nonblocking(kick.as_raw_fd());
                add(&self.epoll, kick.as_raw_fd(), TOKEN_KICK_BASE + i as u64)?;
                self.kicks[i] = Some(kick);
                // A ring starts when it has a kick fd (and, with protocol
                // features, once enabled).
                self.queues[i].set_ready(true);
                if self.protocol_features == 0 && self.acked_features & F_PROTOCOL_FEATURES == 0 {
                    self.enabled[i] = true;
                }
                self.kick(i);
            }
            Request::SetVringCall => {
                let v = le_u64(p, 0)?;
                let i = self.queue_index(v)?;
                let fd = take_ring_fd(v, &mut files)?;
                if let Some(f) = &fd {
                    set_nonblocking(f.as_raw_fd());
                }
                self.calls.0[i] = fd;
            }
            Request::SetVringErr => {
                let v = le_u64(p, 0)?;
                self.queue_index(v)?;
            }
            Request::SetVringEnable => {
                let s = VringState::decode(p)?;
                let i = self.queue_index(s.index.into())?;
                self.enabled[i] = s.num != 0;
                if self.enabled[i] {
                    self.kick(i);
                }
            }
            Request::GetConfig => {
                let c = ConfigAccess::decode(p)?;
                let mut out = p.get(..12).unwrap_or_default().to_vec();
                let mut data = vec![0u8; c.size as usize];
                self.device.read_config(c.offset.into(), &mut data);
                out.extend_from_slice(&data);
                self.reply(request as u32, &out)?;
            }
            Request::SetConfig => {
                let c = ConfigAccess::decode(p)?;
                let data = p
                    .get(12..12 + c.size as usize)
                    .ok_or_else(|| Error::Protocol("SET_CONFIG payload too short".into()))?;
                self.device.write_config(c.offset.into(), data);
            }
            Request::SetBackendReqFd => {
                let fd = files.pop().ok_or_else(|| {
                    Error::Protocol("SET_BACKEND_REQ_FD without an fd".to_string())
                })?;
                self.backend_req = Some(fd);
            }
            Request::SetLogBase | Request::SetLogFd => {
                return Err(Error::Protocol("dirty logging is not supported".into()));
            }
        }
        Ok(())
    }

    fn set_mem_table(&mut self, p: &[u8], files: Vec<File>) -> Result<(), Error> {
        let regions = decode_mem_table(p)?;
        if files.len() != regions.len() {
            return Err(Error::Protocol(format!(
                "SET_MEM_TABLE: {} regions but {} fds",
                regions.len(),
                files.len()
            )));
        }
        let mut mapped = Vec::with_capacity(regions.len());
        for (r, file) in regions.iter().zip(files) {
            let size = usize::try_from(r.size)
                .ok()
                .filter(|&s| s > 0)
                .ok_or_else(|| Error::Memory(format!("region of {} bytes", r.size)))?;
            r.guest_addr
                .checked_add(r.size)
                .ok_or_else(|| Error::Memory("region wraps the address space".into()))?;
            let mmap = MmapRegion::from_file(FileOffset::new(file, r.mmap_offset), size)
                .map_err(|e| Error::Memory(format!("mmap at offset {:#x}: {e}", r.mmap_offset)))?;
            let region = GuestRegionMmap::new(mmap, GuestAddress(r.guest_addr))
                .ok_or_else(|| Error::Memory("region past the end of the address space".into()))?;
            mapped.push(region);
        }
        let mem = GuestMemoryMmap::from_regions(mapped)
            .map_err(|e| Error::Memory(format!("overlapping regions: {e}")))?;
        tracing::debug!(regions = ?regions, "guest memory mapped");
        self.mem = Some(mem);
        self.regions = regions;
        Ok(())
    }

    /// Frontend address (its `user_addr` space) to guest physical address.
    fn translate(&self, addr: u64) -> Result<GuestAddress, Error> {
        self.regions
            .iter()
            .find(|r| addr >= r.user_addr && addr - r.user_addr < r.size)
            .map(|r| GuestAddress(addr - r.user_addr + r.guest_addr))
            .ok_or_else(|| Error::Protocol(format!("ring address {addr:#x} outside guest memory")))
    }

    fn stop_ring(&mut self, i: usize) {
        self.queues[i].set_ready(false);
        if let Some(k) = self.kicks[i].take() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                k.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        if self.queues.iter().all(|q| !q.ready()) {
            self.device.reset();
        }
    }

    fn reset(&mut self) {
        for i in 0..self.queues.len() {
            self.stop_ring(i);
            self.queues[i].reset();
            self.enabled[i] = false;
            self.calls.0[i] = None;
        }
        self.device.reset();
    }
}

/// The fd a SET_VRING_KICK/CALL carries, unless its NOFD bit says there is none.
fn take_ring_fd(v: u64, files: &mut Vec<File>) -> Result<Option<File>, Error> {
    if v & VRING_NOFD_MASK != 0 {
        return Ok(None);
    }
    if files.len() != 1 {
        return Err(Error::Protocol(format!(
            "vring fd message with {} fds",
            files.len()
        )));
    }
    Ok(files.pop())
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own, with flags only read and set.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}
