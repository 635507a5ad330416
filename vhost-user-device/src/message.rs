//! vhost-user wire format (the "Vhost-user Protocol" of QEMU's docs/interop),
//! the subset a device backend needs. Every payload is decoded from bytes
//! with its length checked; nothing is cast from the socket buffer.

use crate::Error;

pub const HEADER_SIZE: usize = 12;
/// Largest payload accepted from a frontend: the biggest message we take is a
/// configuration-space access (12 bytes + up to 256 bytes of config).
pub const MAX_PAYLOAD: usize = 4096;
/// Regions in one SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS).
pub const MAX_MEM_REGIONS: usize = 8;

pub const VERSION: u32 = 0x1;
pub const FLAG_REPLY: u32 = 1 << 2;
pub const FLAG_NEED_REPLY: u32 = 1 << 3;
const VERSION_MASK: u32 = 0x3;

/// Feature bit that says the backend speaks the protocol-feature extension.
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
pub const PROTOCOL_F_MQ: u64 = 1 << 0;
pub const PROTOCOL_F_REPLY_ACK: u64 = 1 << 3;
/// A backend-to-frontend request channel. We never send on it, but UML's
/// virtio_uml (6.1) allocates the IRQ its call fds use only when this is
/// negotiated; without it every queue's IRQ request collides with the timer.
pub const PROTOCOL_F_BACKEND_REQ: u64 = 1 << 5;
pub const PROTOCOL_F_CONFIG: u64 = 1 << 9;

/// The vring index travels in the low byte; bit 8 says "no fd attached".
pub const VRING_INDEX_MASK: u64 = 0xff;
pub const VRING_NOFD_MASK: u64 = 1 << 8;

/// Frontend requests (front-end message types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Request {
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetLogBase = 6,
    SetLogFd = 7,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
    SetBackendReqFd = 21,
    GetConfig = 24,
    SetConfig = 25,
}

impl Request {
    pub fn from_u32(v: u32) -> Option<Request> {
        use Request::*;
        Some(match v {
            1 => GetFeatures,
            2 => SetFeatures,
            3 => SetOwner,
            4 => ResetOwner,
            5 => SetMemTable,
            6 => SetLogBase,
            7 => SetLogFd,
            8 => SetVringNum,
            9 => SetVringAddr,
            10 => SetVringBase,
            11 => GetVringBase,
            12 => SetVringKick,
            13 => SetVringCall,
            14 => SetVringErr,
            15 => GetProtocolFeatures,
            16 => SetProtocolFeatures,
            17 => GetQueueNum,
            18 => SetVringEnable,
            21 => SetBackendReqFd,
            24 => GetConfig,
            25 => SetConfig,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub request: u32,
    pub flags: u32,
    pub size: u32,
}

impl Header {
    pub fn decode(b: &[u8; HEADER_SIZE]) -> Result<Header, Error> {
        let h = Header {
            request: le_u32(b, 0)?,
            flags: le_u32(b, 4)?,
            size: le_u32(b, 8)?,
        };
        if h.flags & VERSION_MASK != VERSION {
            return Err(Error::Protocol(format!(
                "unsupported version in flags {:#x}",
                h.flags
            )));
        }
        if h.size as usize > MAX_PAYLOAD {
            return Err(Error::Protocol(format!("payload of {} bytes", h.size)));
        }
        Ok(h)
    }

    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }

    /// A reply header for `request` with a payload of `size` bytes.
    pub fn reply(request: u32, size: usize) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        out[0..4].copy_from_slice(&request.to_le_bytes());
        out[4..8].copy_from_slice(&(VERSION | FLAG_REPLY).to_le_bytes());
        out[8..12].copy_from_slice(&(size as u32).to_le_bytes());
        out
    }
}

pub fn le_u32(b: &[u8], at: usize) -> Result<u32, Error> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| Error::Protocol(format!("payload too short for u32 at {at}")))?;
    Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

pub fn le_u64(b: &[u8], at: usize) -> Result<u64, Error> {
    let s = b
        .get(at..at + 8)
        .ok_or_else(|| Error::Protocol(format!("payload too short for u64 at {at}")))?;
    Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// `struct vhost_vring_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VringState {
    pub index: u32,
    pub num: u32,
}

impl VringState {
    pub fn decode(p: &[u8]) -> Result<Self, Error> {
        Ok(VringState {
            index: le_u32(p, 0)?,
            num: le_u32(p, 4)?,
        })
    }

    pub fn encode(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.index.to_le_bytes());
        out[4..].copy_from_slice(&self.num.to_le_bytes());
        out
    }
}

/// `struct vhost_vring_addr`: ring addresses in the frontend's address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VringAddr {
    pub index: u32,
    pub flags: u32,
    pub desc: u64,
    pub used: u64,
    pub avail: u64,
    pub log: u64,
}

impl VringAddr {
    pub fn decode(p: &[u8]) -> Result<Self, Error> {
        Ok(VringAddr {
            index: le_u32(p, 0)?,
            flags: le_u32(p, 4)?,
            desc: le_u64(p, 8)?,
            used: le_u64(p, 16)?,
            avail: le_u64(p, 24)?,
            log: le_u64(p, 32)?,
        })
    }
}

/// One `struct vhost_user_memory_region`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    pub guest_addr: u64,
    pub size: u64,
    pub user_addr: u64,
    pub mmap_offset: u64,
}

/// Decodes SET_MEM_TABLE. The payload is `num`, padding and `num` regions;
/// frontends may send room for more regions than `num` says (UML always sends
/// two), so only a payload *shorter* than `num` regions is an error.
pub fn decode_mem_table(p: &[u8]) -> Result<Vec<MemRegion>, Error> {
    let num = le_u32(p, 0)? as usize;
    if num == 0 || num > MAX_MEM_REGIONS {
        return Err(Error::Protocol(format!("SET_MEM_TABLE with {num} regions")));
    }
    (0..num)
        .map(|i| {
            let at = 8 + i * 32;
            Ok(MemRegion {
                guest_addr: le_u64(p, at)?,
                size: le_u64(p, at + 8)?,
                user_addr: le_u64(p, at + 16)?,
                mmap_offset: le_u64(p, at + 24)?,
            })
        })
        .collect()
}

/// `struct vhost_user_config` header: offset, size, flags, then `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigAccess {
    pub offset: u32,
    pub size: u32,
    pub flags: u32,
}

/// Config space reachable through GET/SET_CONFIG.
pub const MAX_CONFIG_SIZE: u32 = 256;

impl ConfigAccess {
    pub fn decode(p: &[u8]) -> Result<Self, Error> {
        let c = ConfigAccess {
            offset: le_u32(p, 0)?,
            size: le_u32(p, 4)?,
            flags: le_u32(p, 8)?,
        };
        let end = c.offset.checked_add(c.size);
        if end.is_none_or(|e| e > MAX_CONFIG_SIZE) {
            return Err(Error::Protocol(format!(
                "config access at {} of {} bytes",
                c.offset, c.size
            )));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uml_mem_table_with_room_for_two_regions_is_accepted() {
        // What UML's virtio_uml sends: num = 1, padding, two region slots (72 bytes).
        let mut p = vec![0u8; 72];
        p[0..4].copy_from_slice(&1u32.to_le_bytes());
        p[8..16].copy_from_slice(&0x40_0000u64.to_le_bytes());
        p[16..24].copy_from_slice(&0x1000_0000u64.to_le_bytes());
        p[24..32].copy_from_slice(&0x40_0000u64.to_le_bytes());
        p[32..40].copy_from_slice(&0x40_0000u64.to_le_bytes());
        let regions = decode_mem_table(&p).unwrap();
        assert_eq!(
            regions,
            vec![MemRegion {
                guest_addr: 0x40_0000,
                size: 0x1000_0000,
                user_addr: 0x40_0000,
                mmap_offset: 0x40_0000
            }]
        );
    }

    #[test]
    fn short_or_silly_mem_tables_are_rejected() {
        let mut p = vec![0u8; 40];
        p[0..4].copy_from_slice(&2u32.to_le_bytes());
        assert!(decode_mem_table(&p).is_err());
        p[0..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode_mem_table(&p).is_err());
        p[0..4].copy_from_slice(&9u32.to_le_bytes());
        assert!(decode_mem_table(&vec![0u8; 8 + 9 * 32]).is_err());
        assert!(decode_mem_table(&[1, 0]).is_err());
    }

    #[test]
    fn header_checks_version_and_size() {
        let mut b = [0u8; HEADER_SIZE];
        b[0] = 1;
        b[4] = 1;
        assert_eq!(
            Header::decode(&b).unwrap(),
            Header {
                request: 1,
                flags: 1,
                size: 0
            }
        );
        b[4] = 2;
        assert!(Header::decode(&b).is_err());
        b[4] = 1;
        b[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(Header::decode(&b).is_err());
    }

    #[test]
    fn config_access_is_bounded() {
        let mut p = [0u8; 12];
        p[0..4].copy_from_slice(&250u32.to_le_bytes());
        p[4..8].copy_from_slice(&6u32.to_le_bytes());
        assert!(ConfigAccess::decode(&p).is_ok());
        p[4..8].copy_from_slice(&7u32.to_le_bytes());
        assert!(ConfigAccess::decode(&p).is_err());
        p[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ConfigAccess::decode(&p).is_err());
    }

    #[test]
    fn reply_header_layout() {
        let h = Header::reply(Request::GetFeatures as u32, 8);
        assert_eq!(h, [1, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0]);
    }
}
