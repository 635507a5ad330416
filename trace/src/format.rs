//! The trace file format, version 2 (docs/trace.md is its specification;
//! version 1 lacks the result digest, and is still read).
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
/// The format version this build writes, and the newest it reads.
pub const VERSION: u16 = 2;
/// The first version with result digests ([`Record::Digest`]).
pub const DIGEST_VERSION: u16 = 2;
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

/// The purpose byte of a memory record that holds a result's digest
/// ([`Record::Digest`]) instead of its bytes.
pub const PURPOSE_RESULT_DIGEST: u8 = 2;

/// Largest range one digest record covers: a replay hashes it at once.
pub const MAX_DIGEST_LEN: u64 = 1 << 30;

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
    /// A result (as [`MemoryPurpose::Result`]) recorded as the digest of
    /// `len` bytes at `gpa` ([`crate::digest`]): whole pages, `gpa` page
    /// aligned. A memory record of purpose [`PURPOSE_RESULT_DIGEST`].
    Digest {
        t: u64,
        gpa: u64,
        len: u64,
        digest: u128,
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
    /// Sets the record's time (ns since the start of the recording).
    pub fn set_time(&mut self, to: u64) {
        match self {
            Record::Request { t, .. }
            | Record::Reply { t, .. }
            | Record::Event { t, .. }
            | Record::Memory { t, .. }
            | Record::Digest { t, .. }
            | Record::Layout { t, .. }
            | Record::End { t, .. } => *t = to,
        }
    }

    /// Nanoseconds since the start of the recording.
    pub fn t(&self) -> u64 {
        match self {
            Record::Request { t, .. }
            | Record::Reply { t, .. }
            | Record::Event { t, .. }
            | Record::Memory { t, .. }
            | Record::Digest { t, .. }
            | Record::Layout { t, .. }
            | Record::End { t, .. } => *t,
        }
    }

    pub fn kind(&self) -> u8 {
        match self {
            Record::Request { .. } => kind::REQUEST,
            Record::Reply { .. } => kind::REPLY,
            Record::Event { .. } => kind::EVENT,
            Record::Memory { .. } | Record::Digest { .. } => kind::MEMORY,
            Record::Layout { .. } => kind::LAYOUT,
            Record::End { .. } => kind::END,
        }
    }

    /// Appends the encoded record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let tail = self.head_into(out);
        out.extend_from_slice(tail);
    }

    /// The record as its encoded head (length, kind, time, fields) and the
    /// bytes after it (a frame or memory), which it owns: a writer can
    /// write the two without copying the bulk into one buffer first.
    pub fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        let mut head = Vec::new();
        self.head_into(&mut head);
        let tail = match self {
            Record::Request { frame, .. }
            | Record::Reply { frame, .. }
            | Record::Event { frame, .. } => frame,
            Record::Memory { bytes, .. } => bytes,
            Record::Digest { .. } | Record::Layout { .. } | Record::End { .. } => Vec::new(),
        };
        (head, tail)
    }

    /// Appends the encoded head to `out`; returns the tail it announces.
    pub fn head_into(&self, out: &mut Vec<u8>) -> &[u8] {
        match self {
            Record::Request { t, process, frame } => {
                frame_head(out, kind::REQUEST, *t, Some(*process), frame.len());
                frame
            }
            Record::Reply { t, process, frame } => {
                frame_head(out, kind::REPLY, *t, Some(*process), frame.len());
                frame
            }
            Record::Event { t, frame } => {
                frame_head(out, kind::EVENT, *t, None, frame.len());
                frame
            }
            Record::Memory {
                t,
                purpose,
                gpa,
                bytes,
            } => {
                memory_head(out, *t, *purpose, *gpa, bytes.len());
                bytes
            }
            Record::Digest {
                t,
                gpa,
                len,
                digest,
            } => {
                head(out, 0, |body| {
                    body.push(kind::MEMORY);
                    put_varint(body, *t);
                    body.push(PURPOSE_RESULT_DIGEST);
                    put_varint(body, *gpa);
                    put_varint(body, *len);
                    body.extend_from_slice(&digest.to_le_bytes());
                });
                &[]
            }
            Record::Layout { t, regions } => {
                head(out, 0, |body| {
                    body.push(kind::LAYOUT);
                    put_varint(body, *t);
                    put_varint(body, regions.len() as u64);
                    for (start, len) in regions {
                        put_varint(body, *start);
                        put_varint(body, *len);
                    }
                });
                &[]
            }
            Record::End { t, records } => {
                head(out, 0, |body| {
                    body.push(kind::END);
                    put_varint(body, *t);
                    put_varint(body, *records);
                });
                &[]
            }
        }
    }

    /// Decodes one record body (after its length) of a trace of this
    /// build's version; `offset` is where the record starts in the file,
    /// for error messages.
    pub fn decode(body: &[u8], offset: u64) -> Result<Record, TraceError> {
        Record::decode_version(body, offset, VERSION)
    }

    /// Decodes one record body of a trace of format `version`.
    pub fn decode_version(body: &[u8], offset: u64, version: u16) -> Result<Record, TraceError> {
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
                    Some(PURPOSE_RESULT_DIGEST) if version >= DIGEST_VERSION => {
                        return Record::decode_digest(&mut c, t, offset);
                    }
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

impl Record {
    /// The rest of a result digest record.
    fn decode_digest(c: &mut Cursor<'_>, t: u64, offset: u64) -> Result<Record, TraceError> {
        let corrupt = |why: String| TraceError::Corrupt { offset, why };
        let gpa = c
            .varint()
            .ok_or_else(|| corrupt("bad guest address".into()))?;
        let len = c
            .varint()
            .ok_or_else(|| corrupt("bad digest length".into()))?;
        let page = crate::digest::PAGE as u64;
        if !gpa.is_multiple_of(page) || !len.is_multiple_of(page) || len == 0 {
            return Err(corrupt(format!(
                "a digest of {len:#x} bytes at {gpa:#x}: not whole pages"
            )));
        }
        if len > MAX_DIGEST_LEN || gpa.checked_add(len).is_none() {
            return Err(corrupt(format!(
                "a digest of {len:#x} bytes at {gpa:#x}: too large"
            )));
        }
        let digest = c
            .take(16)
            .and_then(|b| b.try_into().ok())
            .map(u128::from_le_bytes)
            .ok_or_else(|| corrupt("a digest cut short".into()))?;
        c.finish()
            .ok_or_else(|| corrupt("bytes after the digest".into()))?;
        Ok(Record::Digest {
            t,
            gpa,
            len,
            digest,
        })
    }
}

/// Appends `v` as unsigned LEB128.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    // A byte at a time: the recorder writes a few short ones per record,
    // where a copy of a slice was a call into memcpy each.
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `v` as an unsigned LEB128: the bytes and how many of them count.
fn varint(mut v: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            bytes[n] = byte;
            return (bytes, n + 1);
        }
        bytes[n] = byte | 0x80;
        n += 1;
    }
}

/// Appends a record's head to `out`: its length (of the body that `body`
/// writes, plus `tail_len` bytes that follow the head) and the body. The
/// body is written in place, behind room for the longest length, and moved
/// up to the length's end: no buffer of its own to allocate.
fn head(out: &mut Vec<u8>, tail_len: usize, body: impl FnOnce(&mut Vec<u8>)) {
    const ROOM: usize = 10;
    let start = out.len();
    out.resize(start + ROOM, 0);
    body(out);
    let body_len = out.len() - start - ROOM;
    let (len, n) = varint((body_len + tail_len) as u64);
    out[start..start + n].copy_from_slice(&len[..n]);
    let at = start + n;
    out.copy_within(start + ROOM.., at);
    out.truncate(at + body_len);
}

/// Appends the head of a memory record of `len` bytes at `gpa`; the bytes
/// go right after it (the recorder encodes a stream's diff this way, from
/// bytes it keeps).
pub fn memory_head(out: &mut Vec<u8>, t: u64, purpose: MemoryPurpose, gpa: u64, len: usize) {
    head(out, len, |body| {
        body.push(kind::MEMORY);
        put_varint(body, t);
        body.push(purpose as u8);
        put_varint(body, gpa);
    });
}

/// Appends the head of a frame record (request, reply or event: `kind`)
/// whose frame is `frame_len` bytes; the frame goes right after it. The
/// recorder encodes frames it borrows this way, without copying them into
/// a [`Record`] first.
pub fn frame_head(out: &mut Vec<u8>, kind: u8, t: u64, process: Option<u32>, frame_len: usize) {
    head(out, frame_len, |body| {
        body.push(kind);
        put_varint(body, t);
        if let Some(p) = process {
            put_varint(body, u64::from(p));
        }
    });
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

    /// Checks a preamble: returns the header body's length and the format
    /// version.
    pub fn check_preamble(p: &[u8; PREAMBLE_SIZE]) -> Result<(u32, u16), TraceError> {
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
        Ok((len, version))
    }

    /// Decodes a header body. Bytes after the known fields are allowed (a
    /// later writer of the same version may add fields at the end).
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
            Record::Digest {
                t: 10,
                gpa: 0x20_0000,
                len: 256 << 12,
                digest: 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
            },
            Record::End { t: 9, records: 5 },
        ];
        for r in records {
            let mut b = Vec::new();
            r.encode_into(&mut b);
            let (len, n) = get_varint(&b).unwrap();
            assert_eq!(len as usize, b.len() - n);
            assert_eq!(Record::decode(&b[n..], 0).unwrap(), r);
            // In parts, the same bytes.
            let (head, tail) = r.into_parts();
            assert_eq!([head, tail].concat(), b);
        }
        // A frame encoded from a borrow is the record's encoding; a frame
        // of 200 bytes takes a two-byte length.
        let frame = vec![0x5a; 200];
        let mut b = vec![0xee];
        frame_head(&mut b, kind::REPLY, 1 << 40, Some(0x8000_0040), frame.len());
        b.extend_from_slice(&frame);
        let mut want = vec![0xee];
        Record::Reply {
            t: 1 << 40,
            process: 0x8000_0040,
            frame,
        }
        .encode_into(&mut want);
        assert_eq!(b, want);
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
        let (n, version) = TraceHeader::check_preamble(&p).unwrap();
        assert_eq!(version, VERSION);
        assert_eq!(
            TraceHeader::decode(&b[PREAMBLE_SIZE..][..n as usize]).unwrap(),
            h
        );
        let mut older = p;
        older[8] = 1;
        assert_eq!(TraceHeader::check_preamble(&older).unwrap(), (n, 1));
        let mut newer = p;
        newer[8] = 3;
        assert_eq!(
            TraceHeader::check_preamble(&newer).unwrap_err().to_string(),
            "the trace is of format version 3; this dxvmm reads version 2 and older"
        );
        let mut bad = p;
        bad[0] = b'X';
        assert!(matches!(
            TraceHeader::check_preamble(&bad),
            Err(TraceError::BadMagic)
        ));
    }
}

#[cfg(test)]
mod digest_tests {
    use super::*;

    fn digest_body(gpa: u64, len: u64, tail: &[u8]) -> Vec<u8> {
        let mut b = vec![kind::MEMORY, 0, PURPOSE_RESULT_DIGEST];
        put_varint(&mut b, gpa);
        put_varint(&mut b, len);
        b.extend_from_slice(tail);
        b
    }

    #[test]
    fn digest_records_are_checked() {
        let ok = digest_body(0x1000, 0x2000, &[7; 16]);
        assert!(matches!(
            Record::decode(&ok, 0),
            Ok(Record::Digest {
                gpa: 0x1000,
                len: 0x2000,
                ..
            })
        ));
        // A version 1 trace has no digests.
        let e = Record::decode_version(&ok, 0, 1).unwrap_err().to_string();
        assert!(e.contains("unknown memory purpose"), "{e}");
        for (body, why) in [
            (digest_body(0x1001, 0x1000, &[0; 16]), "not whole pages"),
            (digest_body(0x1000, 0x10, &[0; 16]), "not whole pages"),
            (digest_body(0x1000, 0, &[0; 16]), "not whole pages"),
            (digest_body(0x1000, 2 << 30, &[0; 16]), "too large"),
            (digest_body(u64::MAX - 0xfff, 0x1000, &[0; 16]), "too large"),
            (digest_body(0x1000, 0x1000, &[0; 15]), "cut short"),
            (digest_body(0x1000, 0x1000, &[0; 17]), "bytes after"),
            (
                vec![kind::MEMORY, 0, PURPOSE_RESULT_DIGEST, 0x80],
                "guest address",
            ),
        ] {
            let e = Record::decode(&body, 9).unwrap_err();
            assert!(matches!(e, TraceError::Corrupt { offset: 9, .. }), "{e}");
            assert!(e.to_string().contains(why), "{e}: want {why}");
        }
    }
}
