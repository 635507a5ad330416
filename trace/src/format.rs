//! The trace file format, version 1 (docs/trace.md is its specification).
//!
//! ```text
//! file    = preamble header-body record*
//! preamble: magic "DXVTRACE" (8) | version u16 | flags u16 (0) | header length u32
//! record  = varint length (of what follows) | kind u8 | varint t (ns since start) | body
//! ```
//!
//! All integers are little endian; varints are unsigned LEB128 (at most 10
//! bytes). Frames are stored raw, exactly as they crossed the device.

use dxvmm_protocol::abi::WinLuid;

use crate::error::TraceError;

/// The first eight bytes of every trace.
pub const MAGIC: [u8; 8] = *b"DXVTRACE";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes before the header body.
pub const PREAMBLE_SIZE: usize = 16;
/// Largest header body a reader accepts.
pub const MAX_HEADER: u32 = 1 << 20;
/// Largest record a reader accepts (a memory record is split well below).
pub const MAX_RECORD: u64 = 16 << 20;
/// Largest memory record body a writer makes.
pub const MAX_MEMORY_CHUNK: usize = 1 << 20;

/// Record kinds.
pub mod kind {
    pub const REQUEST: u8 = 1;
    pub const REPLY: u8 = 2;
    pub const EVENT: u8 = 3;
    pub const MEMORY: u8 = 4;
    pub const LAYOUT: u8 = 5;
    pub const END: u8 = 6;
}

/// What a memory record's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryPurpose {
    /// What the guest left in its pages for the backend to read (a command
    /// stream, data to upload): a replay writes it before the next request.
    Input = 0,
    /// What the backend wrote into the pages while answering the previous
    /// request (LOCK2's results): a replay compares.
    Result = 1,
}

/// A host adapter the recorded guest saw.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AdapterEntry {
    /// The vGPU LUID the frames name.
    pub luid: WinLuid,
    pub vendor_id: u32,
    pub device_id: u32,
    pub software: bool,
    pub name: String,
    pub driver: String,
}

/// The header after the preamble.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TraceHeader {
    /// Wall-clock start of the recording, ns since the Unix epoch.
    pub start_unix_ns: u64,
    /// `DXGV_FRAME_VERSION` of the frames inside.
    pub frame_version: u32,
    /// What made the trace ("dxvmm 0.1.0").
    pub producer: String,
    /// The recording host's name.
    pub host: String,
    /// The adapters the guest saw, in its order.
    pub adapters: Vec<AdapterEntry>,
}

/// One record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Request {
        t: u64,
        /// The command header's process handle (0: none, or undecodable).
        process: u32,
        frame: Vec<u8>,
    },
    Reply {
        t: u64,
        /// The process of the request it answers.
        process: u32,
        frame: Vec<u8>,
    },
    Event {
        t: u64,
        frame: Vec<u8>,
    },
    Memory {
        t: u64,
        purpose: MemoryPurpose,
        gpa: u64,
        bytes: Vec<u8>,
    },
    /// The guest's physical memory map: (start, length) pairs.
    Layout {
        t: u64,
        regions: Vec<(u64, u64)>,
    },
    /// The recording finished cleanly after `records` records.
    End {
        t: u64,
        records: u64,
    },
}

impl Record {
    /// Nanoseconds since the start of the recording.
    pub fn t(&self) -> u64 {
        match self {
            Record::Request { t, .. }
            | Record::Reply { t, .. }
            | Record::Event { t, .. }
            | Record::Memory { t, .. }
            | Record::Layout { t, .. }
            | Record::End { t, .. } => *t,
        }
    }

    pub fn kind(&self) -> u8 {
        match self {
            Record::Request { .. } => kind::REQUEST,
            Record::Reply { .. } => kind::REPLY,
            Record::Event { .. } => kind::EVENT,
            Record::Memory { .. } => kind::MEMORY,
            Record::Layout { .. } => kind::LAYOUT,
            Record::End { .. } => kind::END,
        }
    }

    /// Appends the encoded record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (head, tail) = self.head();
        out.extend_from_slice(&head);
        out.extend_from_slice(tail);
    }

    /// The record as its encoded head (length, kind, time, fields) and the
    /// bytes after it (a frame or memory), which it owns: a writer can
    /// write the two without copying the bulk into one buffer first.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        let head = self.head().0;
        let tail = match self {
            Record::Request { frame, .. }
            | Record::Reply { frame, .. }
            | Record::Event { frame, .. } => frame,
            Record::Memory { bytes, .. } => bytes,
            Record::Layout { .. } | Record::End { .. } => Vec::new(),
        };
        (head, tail)
    }

    /// The encoded head and the tail it announces.
    fn head(&self) -> (Vec<u8>, &[u8]) {
        let mut body = Vec::with_capacity(16);
        body.push(self.kind());
        put_varint(&mut body, self.t());
        let tail: &[u8] = match self {
            Record::Request { process, frame, .. } | Record::Reply { process, frame, .. } => {
                put_varint(&mut body, u64::from(*process));
                frame
            }
            Record::Event { frame, .. } => frame,
            Record::Memory {
                purpose,
                gpa,
                bytes,
                ..
            } => {
                body.push(*purpose as u8);
                put_varint(&mut body, *gpa);
                bytes
            }
            Record::Layout { regions, .. } => {
                put_varint(&mut body, regions.len() as u64);
                for (start, len) in regions {
                    put_varint(&mut body, *start);
                    put_varint(&mut body, *len);
                }
                &[]
            }
            Record::End { records, .. } => {
                put_varint(&mut body, *records);
                &[]
            }
        };
        let mut head = Vec::with_capacity(body.len() + 10);
        put_varint(&mut head, (body.len() + tail.len()) as u64);
        head.extend_from_slice(&body);
        (head, tail)
    }

    /// Decodes one record body (after its length); `offset` is where the
    /// record starts in the file, for error messages.
    pub fn decode(body: &[u8], offset: u64) -> Result<Record, TraceError> {
        let corrupt = |why: String| TraceError::Corrupt { offset, why };
        let mut c = Cursor { b: body, at: 0 };
        let k = c.u8().ok_or_else(|| corrupt("empty record".into()))?;
        let t = c.varint().ok_or_else(|| corrupt("bad timestamp".into()))?;
        let rec = match k {
            kind::REQUEST | kind::REPLY => {
                let process = c
                    .varint()
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| corrupt("bad process handle".into()))?;
                let frame = c.rest().to_vec();
                if k == kind::REQUEST {
                    Record::Request { t, process, frame }
                } else {
                    Record::Reply { t, process, frame }
                }
            }
            kind::EVENT => Record::Event {
                t,
                frame: c.rest().to_vec(),
            },
            kind::MEMORY => {
                let purpose = match c.u8() {
                    Some(0) => MemoryPurpose::Input,
                    Some(1) => MemoryPurpose::Result,
                    p => return Err(corrupt(format!("unknown memory purpose {p:?}"))),
                };
                let gpa = c
                    .varint()
                    .ok_or_else(|| corrupt("bad guest address".into()))?;
                let bytes = c.rest().to_vec();
                if gpa.checked_add(bytes.len() as u64).is_none() {
                    return Err(corrupt(format!("memory at {gpa:#x} wraps around")));
                }
                Record::Memory {
                    t,
                    purpose,
                    gpa,
                    bytes,
                }
            }
            kind::LAYOUT => {
                let n = c
                    .varint()
                    .filter(|n| *n <= 1024)
                    .ok_or_else(|| corrupt("bad region count".into()))?;
                let mut regions = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let start = c.varint().ok_or_else(|| corrupt("bad region".into()))?;
                    let len = c.varint().ok_or_else(|| corrupt("bad region".into()))?;
                    if start.checked_add(len).is_none() {
                        return Err(corrupt(format!("region at {start:#x} wraps around")));
                    }
                    regions.push((start, len));
                }
                c.finish()
                    .ok_or_else(|| corrupt("bytes after the layout".into()))?;
                Record::Layout { t, regions }
            }
            kind::END => {
                let records = c
                    .varint()
                    .ok_or_else(|| corrupt("bad record count".into()))?;
                c.finish()
                    .ok_or_else(|| corrupt("bytes after the end".into()))?;
                Record::End { t, records }
            }
            k => return Err(corrupt(format!("unknown record kind {k}"))),
        };
        Ok(rec)
    }
}

/// Appends `v` as unsigned LEB128.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads an unsigned LEB128 from the front of `b`: (value, bytes used).
pub fn get_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()?;
        String::from_utf8(self.take(usize::from(n))?.to_vec()).ok()
    }
    fn varint(&mut self) -> Option<u64> {
        let (v, n) = get_varint(self.b.get(self.at..)?)?;
        self.at += n;
        Some(v)
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = self.b.get(self.at..).unwrap_or(&[]);
        self.at = self.b.len();
        s
    }
    fn finish(&self) -> Option<()> {
        (self.at == self.b.len()).then_some(())
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names longer than 64 KiB are cut (at a character boundary).
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

impl TraceHeader {
    /// The preamble and header body.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.start_unix_ns.to_le_bytes());
        body.extend_from_slice(&self.frame_version.to_le_bytes());
        put_str(&mut body, &self.producer);
        put_str(&mut body, &self.host);
        let n = self.adapters.len().min(u16::MAX as usize);
        body.extend_from_slice(&(n as u16).to_le_bytes());
        for a in self.adapters.iter().take(n) {
            body.extend_from_slice(&a.luid.a.to_le_bytes());
            body.extend_from_slice(&a.luid.b.to_le_bytes());
            body.extend_from_slice(&a.vendor_id.to_le_bytes());
            body.extend_from_slice(&a.device_id.to_le_bytes());
            body.push(u8::from(a.software));
            put_str(&mut body, &a.name);
            put_str(&mut body, &a.driver);
        }
        let mut out = Vec::with_capacity(PREAMBLE_SIZE + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Checks a preamble: returns the header body's length.
    pub fn check_preamble(p: &[u8; PREAMBLE_SIZE]) -> Result<u32, TraceError> {
        if p[..8] != MAGIC {
            return Err(TraceError::BadMagic);
        }
        let version = u16::from_le_bytes([p[8], p[9]]);
        if version > VERSION {
            return Err(TraceError::NewerVersion {
                found: version,
                supported: VERSION,
            });
        }
        if version == 0 {
            return Err(TraceError::Corrupt {
                offset: 8,
                why: "format version 0".into(),
            });
        }
        let flags = u16::from_le_bytes([p[10], p[11]]);
        if flags != 0 {
            return Err(TraceError::Corrupt {
                offset: 10,
                why: format!("unknown header flags {flags:#x}"),
            });
        }
        let len = u32::from_le_bytes([p[12], p[13], p[14], p[15]]);
        if len > MAX_HEADER {
            return Err(TraceError::Corrupt {
                offset: 12,
                why: format!("header of {len} bytes"),
            });
        }
        Ok(len)
    }

    /// Decodes a header body. Bytes after the known fields are allowed (a
    /// later version 1 writer may add fields at the end).
    pub fn decode(body: &[u8]) -> Result<TraceHeader, TraceError> {
        let bad = || TraceError::Corrupt {
            offset: PREAMBLE_SIZE as u64,
            why: "malformed header".into(),
        };
        let mut c = Cursor { b: body, at: 0 };
        let start_unix_ns = c.u64().ok_or_else(bad)?;
        let frame_version = c.u32().ok_or_else(bad)?;
        let producer = c.str().ok_or_else(bad)?;
        let host = c.str().ok_or_else(bad)?;
        let n = c.u16().ok_or_else(bad)?;
        let mut adapters = Vec::with_capacity(usize::from(n).min(64));
        for _ in 0..n {
            let a = c.u32().ok_or_else(bad)?;
            let b = c.u32().ok_or_else(bad)?;
            adapters.push(AdapterEntry {
                luid: WinLuid { a, b },
                vendor_id: c.u32().ok_or_else(bad)?,
                device_id: c.u32().ok_or_else(bad)?,
                software: c.u8().ok_or_else(bad)? != 0,
                name: c.str().ok_or_else(bad)?,
                driver: c.str().ok_or_else(bad)?,
            });
        }
        Ok(TraceHeader {
            start_unix_ns,
            frame_version,
            producer,
            host,
            adapters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_overlong_input() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(get_varint(&b), Some((v, b.len())));
        }
        assert_eq!(get_varint(&[0x80; 11]), None);
        assert_eq!(
            get_varint(&[0xff; 9].iter().copied().chain([2]).collect::<Vec<_>>()),
            None
        );
        assert_eq!(get_varint(&[0x80]), None);
    }

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Request {
                t: 5,
                process: 0x8000_0040,
                frame: vec![1, 2, 3],
            },
            Record::Reply {
                t: 6,
                process: 7,
                frame: vec![],
            },
            Record::Event {
                t: 7,
                frame: vec![9; 80],
            },
            Record::Memory {
                t: 8,
                purpose: MemoryPurpose::Result,
                gpa: 0x1234_5000,
                bytes: vec![0xab; 4096],
            },
            Record::Layout {
                t: 0,
                regions: vec![(0, 1 << 29), (1 << 32, 4096)],
            },
            Record::End { t: 9, records: 5 },
        ];
        for r in records {
            let mut b = Vec::new();
            r.encode_into(&mut b);
            let (len, n) = get_varint(&b).unwrap();
            assert_eq!(len as usize, b.len() - n);
            assert_eq!(Record::decode(&b[n..], 0).unwrap(), r);
        }
    }

    #[test]
    fn header_round_trips_and_versions_are_checked() {
        let h = TraceHeader {
            start_unix_ns: 1,
            frame_version: 1,
            producer: "dxvmm test".into(),
            host: "h".into(),
            adapters: vec![AdapterEntry {
                luid: WinLuid { a: 3, b: 4 },
                vendor_id: 0x10de,
                device_id: 0x2330,
                software: false,
                name: "GPU".into(),
                driver: "drv".into(),
            }],
        };
        let b = h.encode();
        let p: [u8; PREAMBLE_SIZE] = b[..PREAMBLE_SIZE].try_into().unwrap();
        let n = TraceHeader::check_preamble(&p).unwrap() as usize;
        assert_eq!(TraceHeader::decode(&b[PREAMBLE_SIZE..][..n]).unwrap(), h);
        let mut newer = p;
        newer[8] = 2;
        assert_eq!(
            TraceHeader::check_preamble(&newer).unwrap_err().to_string(),
            "the trace is of format version 2; this dxvmm reads version 1 and older"
        );
        let mut bad = p;
        bad[0] = b'X';
        assert!(matches!(
            TraceHeader::check_preamble(&bad),
            Err(TraceError::BadMagic)
        ));
    }
}
