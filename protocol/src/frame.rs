//! dxvmm's framing: what wraps every GPU-PV message on the virtio queues, and
//! the device's configuration space.
//!
//! VMBus gave dxgkrnl packets with a transaction id and a completion; virtio
//! gives descriptor chains. A request chain is one readable buffer (frame
//! header + command) followed by one writable buffer that the device fills
//! with a reply frame (header + the command's return struct). Host events
//! arrive in buffers the guest posts on the event queue, one frame each.

use serde::{Deserialize, Serialize};
use zerocopy::IntoBytes;

use crate::abi::WinLuid;
use crate::error::{DecodeError, Reader};
use crate::layout::{flags_word, wire_struct};
use crate::ntstatus::NtStatus;
use crate::vmbus::{
    DXGK_VMBUS_INTERFACE_VERSION, DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION,
    DXG_MAX_VM_BUS_PACKET_SIZE,
};

/// Virtio device id of the dxg device. Not assigned by the virtio
/// specification (1.3 stops well below it); below 64 so that a virtio-pci
/// transport could carry it too.
pub const VIRTIO_ID_DXG: u32 = 61;

/// Queue 0: guest-to-host requests (readable request + writable reply).
pub const REQUEST_QUEUE: u16 = 0;
/// Queue 1: host-to-guest events, in writable buffers the guest posts.
pub const EVENT_QUEUE: u16 = 1;
/// Smallest event buffer the guest must post: a frame header and the
/// largest host event.
pub const MIN_EVENT_BUFFER: usize = FrameHeader::SIZE + 64;

/// "DXGV" in little-endian byte order.
pub const DXGV_FRAME_MAGIC: u32 = u32::from_le_bytes(*b"DXGV");
/// Framing version. A receiver rejects other versions; the dxgkrnl interface
/// version inside is negotiated separately by OPENADAPTER.
pub const DXGV_FRAME_VERSION: u16 = 1;
/// Largest payload after the frame header (dxgkrnl's packet limit).
pub const MAX_PAYLOAD: usize = DXG_MAX_VM_BUS_PACKET_SIZE;

flags_word! {
    /// Frame flags.
    pub struct FrameFlags(u16) {
        /// A reply, written by the device into the request's writable buffer.
        const REPLY = 0;
        /// A host event on the event queue.
        const EVENT = 1;
    }
}

impl FrameFlags {
    const KNOWN: u16 = FrameFlags::REPLY.0 | FrameFlags::EVENT.0;
}

wire_struct! {
    /// The 32-byte frame header in front of every message.
    #[repr(C)]
    pub struct FrameHeader [32] {
        /// [`DXGV_FRAME_MAGIC`].
        pub magic: u32 => 0,
        /// [`DXGV_FRAME_VERSION`].
        pub version: u16 => 4,
        pub flags: FrameFlags => 6,
        /// Chosen by the guest, echoed in the reply (VMBus's transaction
        /// id). 0 in host events.
        pub request_id: u64 => 8,
        /// Bytes after the header.
        pub payload_len: u32 => 16,
        /// Requests: 0. Replies: `STATUS_SUCCESS` when the command was
        /// decoded and dispatched (its own result is in the payload), else
        /// why not, with an empty payload.
        pub status: NtStatus => 20,
        /// The adapter a vGPU command is for (dxgkrnl's extended header
        /// carries the same LUID); zero for global commands and events.
        pub vgpu_luid: WinLuid => 24,
    }
}

/// Which kind of frame a parser expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameKind {
    Request,
    Reply,
    Event,
}

/// A parsed frame: its header and a borrowed payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub header: FrameHeader,
    pub payload: &'a [u8],
}

impl FrameHeader {
    /// A header for a frame of `kind` with `payload_len` bytes after it.
    pub fn new(kind: FrameKind, request_id: u64, payload_len: usize, vgpu_luid: WinLuid) -> Self {
        let flags = match kind {
            FrameKind::Request => FrameFlags(0),
            FrameKind::Reply => FrameFlags::REPLY,
            FrameKind::Event => FrameFlags::EVENT,
        };
        FrameHeader {
            magic: DXGV_FRAME_MAGIC,
            version: DXGV_FRAME_VERSION,
            flags,
            request_id,
            // Callers never build payloads over MAX_PAYLOAD; saturate rather
            // than wrap so a bug is caught by the receiver's length check.
            payload_len: u32::try_from(payload_len).unwrap_or(u32::MAX),
            status: NtStatus::SUCCESS,
            vgpu_luid,
        }
    }

    /// The kind the flags say this is.
    pub fn kind(&self) -> Result<FrameKind, DecodeError> {
        match self.flags.0 {
            0 => Ok(FrameKind::Request),
            f if f == FrameFlags::REPLY.0 => Ok(FrameKind::Reply),
            f if f == FrameFlags::EVENT.0 => Ok(FrameKind::Event),
            f => Err(DecodeError::InvalidValue {
                what: "frame flags",
                value: f.into(),
            }),
        }
    }
}

impl<'a> Frame<'a> {
    /// Parses exactly one frame from `bytes` and checks that it is of
    /// `expect` kind. Bytes past the payload are an error: the readable part
    /// of a request chain is exactly one frame.
    pub fn parse(bytes: &'a [u8], expect: FrameKind) -> Result<Frame<'a>, DecodeError> {
        let mut r = Reader::new(bytes, "frame");
        let header: FrameHeader = r.read()?;
        if header.magic != DXGV_FRAME_MAGIC {
            return Err(DecodeError::BadMagic {
                what: "frame header",
                found: header.magic,
            });
        }
        if header.version != DXGV_FRAME_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "frame",
                found: header.version.into(),
                supported: DXGV_FRAME_VERSION.into(),
            });
        }
        if header.flags.0 & !FrameFlags::KNOWN != 0 {
            return Err(DecodeError::InvalidValue {
                what: "frame flags",
                value: header.flags.0.into(),
            });
        }
        let kind = header.kind()?;
        if kind != expect {
            return Err(DecodeError::InvalidValue {
                what: "frame kind",
                value: header.flags.0.into(),
            });
        }
        let len = header.payload_len as usize;
        if len > MAX_PAYLOAD {
            return Err(DecodeError::TooLarge {
                what: "frame payload",
                len,
                max: MAX_PAYLOAD,
            });
        }
        if kind == FrameKind::Request && header.status != NtStatus::SUCCESS {
            return Err(DecodeError::InvalidValue {
                what: "request status",
                value: header.status.bits().into(),
            });
        }
        if kind == FrameKind::Reply && !header.status.is_success() && len != 0 {
            return Err(DecodeError::InvalidValue {
                what: "payload of a failed reply",
                value: len as u64,
            });
        }
        let payload = r.bytes(len)?;
        r.finish()?;
        Ok(Frame { header, payload })
    }

    /// Serialises header and payload into one buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FrameHeader::SIZE + self.payload.len());
        out.extend_from_slice(self.header.as_bytes());
        out.extend_from_slice(self.payload);
        out
    }
}

/// Builds a request frame around an encoded command.
pub fn encode_frame(
    kind: FrameKind,
    request_id: u64,
    vgpu_luid: WinLuid,
    status: NtStatus,
    payload: &[u8],
) -> Vec<u8> {
    let mut header = FrameHeader::new(kind, request_id, payload.len(), vgpu_luid);
    header.status = status;
    Frame { header, payload }.to_bytes()
}

flags_word! {
    /// Host capabilities in the config space (dxgkrnl reads the same kind
    /// of word from the vGPU's PCI config space).
    pub struct HostCaps(u32) {
        /// Allocations are backed by guest pages handed over with
        /// SETEXISTINGSYSMEMPAGES (always set by dxvmm).
        const MAP_GUEST_MEMORY = 0;
        /// The request queue may carry async (no reply) messages.
        const ASYNC_MSG = 1;
    }
}

/// Adapters the config space can list.
pub const MAX_ADAPTERS: usize = 16;

wire_struct! {
    /// The device's virtio configuration space (read-only for the guest).
    /// dxgkrnl finds the same facts in each vGPU's PCI config space: the
    /// interface version and the vGPU's LUID.
    #[repr(C)]
    pub struct VirtioDxgConfig [152] {
        /// [`DXGV_FRAME_MAGIC`].
        pub magic: u32 => 0,
        /// [`DXGV_FRAME_VERSION`] the device speaks.
        pub frame_version: u16 => 4,
        /// Valid entries of `adapter_luids`.
        pub num_adapters: u16 => 6,
        /// [`DXGK_VMBUS_INTERFACE_VERSION`] the host offers.
        pub vmbus_interface_version: u32 => 8,
        pub vmbus_last_compatible_interface_version: u32 => 12,
        pub host_caps: HostCaps => 16,
        /// Largest frame payload the device accepts.
        pub max_payload: u32 => 20,
        /// One vGPU LUID per adapter; OPENADAPTER names one of them.
        pub adapter_luids: [WinLuid; MAX_ADAPTERS] => 24,
    }
}

impl VirtioDxgConfig {
    /// The config a dxvmm host presents for `adapters`.
    pub fn new(adapters: &[WinLuid]) -> Self {
        let mut cfg = VirtioDxgConfig {
            magic: DXGV_FRAME_MAGIC,
            frame_version: DXGV_FRAME_VERSION,
            num_adapters: 0,
            vmbus_interface_version: DXGK_VMBUS_INTERFACE_VERSION,
            vmbus_last_compatible_interface_version: DXGK_VMBUS_LAST_COMPATIBLE_INTERFACE_VERSION,
            host_caps: HostCaps::MAP_GUEST_MEMORY,
            max_payload: MAX_PAYLOAD as u32,
            adapter_luids: [WinLuid::default(); MAX_ADAPTERS],
        };
        for (slot, luid) in cfg.adapter_luids.iter_mut().zip(adapters) {
            *slot = *luid;
            cfg.num_adapters += 1;
        }
        cfg
    }

    /// The adapters the config lists, after checking the header fields.
    pub fn adapters(&self) -> Result<&[WinLuid], DecodeError> {
        if self.magic != DXGV_FRAME_MAGIC {
            return Err(DecodeError::BadMagic {
                what: "config space",
                found: self.magic,
            });
        }
        if self.frame_version != DXGV_FRAME_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "config space",
                found: self.frame_version.into(),
                supported: DXGV_FRAME_VERSION.into(),
            });
        }
        let n = usize::from(self.num_adapters);
        self.adapter_luids
            .get(..n)
            .ok_or(DecodeError::CountTooLarge {
                what: "config num_adapters",
                count: n as u64,
                max: MAX_ADAPTERS as u64,
            })
    }
}

/// Picks the interface version both sides speak, as OPENADAPTER's reply
/// does: the lower of the two current versions, provided each side's is at
/// least the other's oldest compatible one.
pub fn negotiate_version(
    guest_version: u32,
    guest_last_compatible: u32,
    host_version: u32,
    host_last_compatible: u32,
) -> Option<u32> {
    let agreed = guest_version.min(host_version);
    (agreed >= guest_last_compatible && agreed >= host_last_compatible).then_some(agreed)
}
