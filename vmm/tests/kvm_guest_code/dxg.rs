//! Test guests that drive the virtio-dxg device (virtio id 61) through its
//! request queue with no guest kernel: the request frames are built here,
//! on the host, with dxvmm-protocol and embedded in the guest image as
//! data; the guest lays out a split virtqueue, publishes a two-descriptor
//! chain [readable request frame][writable reply buffer] (docs/protocol.md
//! §2, §7), kicks the queue through QueueNotify (which KVM turns into an
//! ioeventfd signal) and polls the used ring. Interrupts are suppressed
//! (VRING_AVAIL_F_NO_INTERRUPT): nothing in these guests handles them.

use dxvmm_protocol::abi::{D3dkmtHandle, WinLuid};
use dxvmm_protocol::escape::{qai_type, DxgvHostObjects};
use dxvmm_protocol::frame::{encode_frame, FrameHeader, FrameKind, VIRTIO_ID_DXG};
use dxvmm_protocol::vmbus::{
    createprocess_flags, global, vgpu, DxgkvmbCommandCreateProcess,
    DxgkvmbCommandCreateProcessReturn, DxgkvmbCommandQueryAdapterInfo, DxgkvmbCommandVgpuToHost,
    DxgkvmbCommandVmToHost,
};
use dxvmm_protocol::{NtStatus, Request};

use super::{rings, Asm, Label, Rings, QUEUE_SIZE, VIRTIO_BASE};

/// The dxg device's virtio-mmio window: the fourth, after the three
/// consoles (layout::virtio_mmio_addr(3) in dxvmm).
pub const DXG_DEVICE: u64 = 3;
/// Its registers.
pub const DXG_REGS: u64 = VIRTIO_BASE + DXG_DEVICE * 0x1000;
/// Room the guest gives the device for one reply frame.
pub const REPLY_ROOM: u32 = 0x1000;

const VIRTQ_DESC_F_NEXT: u32 = 1;
const VIRTQ_DESC_F_WRITE: u32 = 2;
const VRING_AVAIL_F_NO_INTERRUPT: u32 = 1;
/// The device's configuration space: VirtioDxgConfig, whose
/// `adapter_luids[0]` is at offset 24.
const CONFIG: u64 = DXG_REGS + 0x100;
const CONFIG_FIRST_LUID: u64 = CONFIG + 24;
/// Where a frame header keeps its vGPU LUID.
const HEADER_LUID: u64 = 24;

/// The dxg device's request queue (0) in the test guest.
pub fn request_queue() -> Rings {
    rings(DXG_DEVICE)
}

/// A CREATEPROCESS request frame, as dxgkrnl sends when a process first
/// opens /dev/dxg.
pub fn create_process_frame(request_id: u64) -> Vec<u8> {
    let mut cmd = DxgkvmbCommandCreateProcess {
        hdr: DxgkvmbCommandVmToHost::new(global::DXGK_VMBCOMMAND_CREATEPROCESS, D3dkmtHandle::NULL),
        process: 0x1234,
        process_id: 1,
        flags: createprocess_flags::LINUX_PROCESS,
        ..Default::default()
    };
    for (slot, c) in cmd.process_name.iter_mut().zip("kvmguest".encode_utf16()) {
        *slot = c;
    }
    let payload = Request::CreateProcess(Box::new(cmd)).encode();
    encode_frame(
        FrameKind::Request,
        request_id,
        WinLuid::default(),
        NtStatus::SUCCESS,
        &payload,
    )
}

/// The reply a successful CREATEPROCESS gets, with a null process handle
/// (the handle is the host's to choose; the guest checks it is not null).
pub fn create_process_reply(request_id: u64) -> Vec<u8> {
    let ret = [0u8; DxgkvmbCommandCreateProcessReturn::SIZE];
    encode_frame(
        FrameKind::Reply,
        request_id,
        WinLuid::default(),
        NtStatus::SUCCESS,
        &ret,
    )
}

/// QUERYADAPTERINFO(HOST_OBJECTS) from the driver itself (process 0), the
/// request `dxgtest roundtrip` times in a guest: the device answers from its
/// tables without touching the GPU, and repeating it leaves no state behind.
/// The frame's vGPU LUID is zero here: the host's adapter LUID is known only
/// in the guest (config space), which fills it in.
pub fn host_objects_frame(request_id: u64) -> Vec<u8> {
    let cmd = DxgkvmbCommandQueryAdapterInfo {
        hdr: DxgkvmbCommandVgpuToHost::new(
            vgpu::DXGK_VMBCOMMAND_QUERYADAPTERINFO,
            D3dkmtHandle::NULL,
        ),
        query_type: qai_type::HOST_OBJECTS,
        private_data_size: DxgvHostObjects::SIZE as u32,
    };
    let request = Request::QueryAdapterInfo {
        cmd,
        private_data: vec![0; DxgvHostObjects::SIZE],
    };
    encode_frame(
        FrameKind::Request,
        request_id,
        WinLuid::default(),
        NtStatus::SUCCESS,
        &request.encode(),
    )
}

/// Offset of the frame status in a frame header.
pub const HEADER_STATUS: u64 = 20;
/// Size of a frame header.
pub const HEADER_SIZE: u64 = FrameHeader::SIZE as u64;

impl Asm {
    /// Brings up the dxg device as a driver does (reset, ACKNOWLEDGE,
    /// DRIVER, VERSION_1, FEATURES_OK, queue 0, DRIVER_OK) after checking
    /// that window 3 holds one, and asks for no used-buffer interrupts.
    pub fn virtio_dxg_init(&mut self, fail: Label) {
        self.virtio_init(DXG_DEVICE, VIRTIO_ID_DXG, 0, fail);
        let q = request_queue();
        self.write32(q.avail, VRING_AVAIL_F_NO_INTERRUPT); // flags; idx 0
    }

    /// Writes the request chain (descriptor 0: the `len`-byte frame at
    /// `frame`, device-readable; descriptor 1: the reply buffer, device-
    /// writable) and points every avail ring entry at its head, so that each
    /// later submission only moves avail.idx.
    pub fn dxg_chain(&mut self, frame: u64, len: u32) {
        let q = request_queue();
        for (i, (addr, len, flags, next)) in [
            (frame, len, VIRTQ_DESC_F_NEXT, 1),
            (q.buffer, REPLY_ROOM, VIRTQ_DESC_F_WRITE, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let d = q.desc + i as u64 * 16;
            self.write32(d, addr as u32);
            self.write32(d + 4, (addr >> 32) as u32);
            self.write32(d + 8, len);
            self.write32(d + 12, flags | (next << 16));
        }
        for slot in 0..u64::from(QUEUE_SIZE) / 2 {
            self.write32(q.avail + 4 + slot * 4, 0); // two entries: head 0
        }
    }

    /// Copies the first adapter's LUID from the config space into the
    /// header of the frame at `frame` (a vGPU command names its adapter).
    pub fn dxg_set_luid(&mut self, frame: u64) {
        for half in [0, 4] {
            self.mov_rax(CONFIG_FIRST_LUID + half);
            self.load_ebx();
            self.mov_rax(frame + HEADER_LUID + half);
            self.store_ebx();
        }
    }

    /// Submits the chain as avail.idx `n`, kicks queue 0 and spins until
    /// used.idx is `n`.
    pub fn dxg_submit(&mut self, n: u16) {
        let q = request_queue();
        self.write32(q.avail, VRING_AVAIL_F_NO_INTERRUPT | (u32::from(n) << 16));
        self.write32(DXG_REGS + 0x50, 0); // QueueNotify(0)
        self.wait16(q.used + 2, n);
    }

    /// `n` submissions of the chain in a loop, after `done` earlier ones:
    /// each moves avail.idx on by one (16-bit, wrapping as the ring indices
    /// do, so nothing needs resetting), kicks queue 0 and spins on used.idx
    /// until the device has caught up. Without `kick`, the same loop with
    /// only the avail.idx update: the baseline a benchmark subtracts.
    /// Clobbers rax, ebx, ecx, esi.
    pub fn dxg_loop(&mut self, done: u16, n: u32, kick: bool) {
        let q = request_queue();
        let top = self.label();
        let wait = self.label();
        self.mov_esi(u32::from(done));
        self.mov_ecx(n.max(1));
        self.bind(top);
        if n > 0 {
            self.inc_esi();
            self.mov_rax(q.avail + 2);
            self.store_si(); // avail.idx
            if kick {
                self.write32(DXG_REGS + 0x50, 0); // QueueNotify(0)
                self.bind(wait);
                self.mov_rax(q.used + 2);
                self.load_ebx_u16(); // used.idx
                self.cmp_bx_si();
                self.jne(wait);
            }
        }
        self.loop_ecx(top);
    }
}
