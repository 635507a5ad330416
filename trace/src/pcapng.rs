//! `dxvmm trace export-pcapng`: a trace as a pcapng capture for Wireshark,
//! one packet per record, link type [`LINKTYPE`] (LINKTYPE_USER0), which
//! `trace/wireshark/dxvmm.lua` dissects.
//!
//! Each packet is a [`PSEUDO_HEADER_SIZE`]-byte pseudo-header and the
//! record's bytes:
//!
//! ```text
//! 0  u8   pseudo-header version (1)
//! 1  u8   record kind (1 request, 2 reply, 3 event, 4 memory)
//! 2  u8   memory purpose (0 input, 1 result, 2 result digest; else 0)
//! 3  u8   reserved (0)
//! 4  u32  process handle
//! 8  u64  record index in the trace
//! 16 u32  channel of the command (a reply: its request's)
//! 20 u32  DXGK_VMBCOMMAND_* number (a reply: its request's)
//! 24 ...  the frame (request, reply, event), or u64 guest address + bytes (memory),
//!         or u64 guest address + u64 length + the 16-byte digest (result digest)
//! ```
//!
//! All little endian. Timestamps are the recording's wall clock, in ns.

use std::io::Write;

use crate::format::{Record, TraceHeader};
use crate::reader::Located;

/// LINKTYPE_USER0 (DLT_USER0): private use, dissected by our Lua script.
pub const LINKTYPE: u16 = 147;
pub const PSEUDO_HEADER_SIZE: usize = 24;
/// Packet bytes kept of a memory record (Wireshark reads packets up to
/// 256 KiB); the original length is recorded in full.
pub const MAX_MEMORY_CAPTURE: usize = 64 * 1024;

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    pad4(out);
}

fn block(w: &mut dyn Write, kind: u32, body: &[u8]) -> std::io::Result<()> {
    let total = (12 + body.len()) as u32;
    w.write_all(&kind.to_le_bytes())?;
    w.write_all(&total.to_le_bytes())?;
    w.write_all(body)?;
    w.write_all(&total.to_le_bytes())
}

fn command_of(frame: &[u8]) -> (u32, u32) {
    let word = |at: usize| {
        frame
            .get(at..at + 4)
            .map_or(u32::MAX, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    (word(32 + 12) & 0xff, word(32 + 16))
}

/// Writes the capture; returns the number of packets.
pub fn export(
    w: &mut dyn Write,
    header: &TraceHeader,
    records: &[Located],
) -> std::io::Result<u64> {
    // Section header.
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    option(
        &mut shb,
        4,
        format!("{} (dxvmm trace export)", header.producer).as_bytes(),
    );
    option(&mut shb, 0, &[]);
    block(w, 0x0A0D_0D0A, &shb)?;
    // Interface: the virtio-dxg device, ns timestamps.
    let mut idb = Vec::new();
    idb.extend_from_slice(&LINKTYPE.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    option(&mut idb, 2, b"virtio-dxg");
    option(&mut idb, 9, &[9]);
    option(&mut idb, 0, &[]);
    block(w, 1, &idb)?;

    let mut packets = 0;
    let mut last_command = (u32::MAX, u32::MAX);
    for l in records {
        let (kind, purpose, process, command, payload): (u8, u8, u32, (u32, u32), Vec<u8>) =
            match &l.record {
                Record::Request { process, frame, .. } => {
                    last_command = command_of(frame);
                    (1, 0, *process, last_command, frame.clone())
                }
                Record::Reply { process, frame, .. } => {
                    (2, 0, *process, last_command, frame.clone())
                }
                Record::Event { frame, .. } => {
                    let c = command_of(frame);
                    let process = frame
                        .get(40..44)
                        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                    (3, 0, process, c, frame.clone())
                }
                Record::Memory {
                    purpose,
                    gpa,
                    bytes,
                    ..
                } => {
                    let mut p = gpa.to_le_bytes().to_vec();
                    p.extend_from_slice(bytes);
                    (4, *purpose as u8, 0, (u32::MAX, u32::MAX), p)
                }
                Record::Digest {
                    gpa, len, digest, ..
                } => {
                    let mut p = gpa.to_le_bytes().to_vec();
                    p.extend_from_slice(&len.to_le_bytes());
                    p.extend_from_slice(&digest.to_le_bytes());
                    (
                        4,
                        crate::format::PURPOSE_RESULT_DIGEST,
                        0,
                        (u32::MAX, u32::MAX),
                        p,
                    )
                }
                Record::Layout { .. } | Record::End { .. } => continue,
            };
        let mut data = Vec::with_capacity(PSEUDO_HEADER_SIZE + payload.len());
        data.push(1);
        data.push(kind);
        data.push(purpose);
        data.push(0);
        data.extend_from_slice(&process.to_le_bytes());
        data.extend_from_slice(&l.index.to_le_bytes());
        data.extend_from_slice(&command.0.to_le_bytes());
        data.extend_from_slice(&command.1.to_le_bytes());
        data.extend_from_slice(&payload);
        let original = data.len();
        data.truncate(PSEUDO_HEADER_SIZE + MAX_MEMORY_CAPTURE + 8);
        let ts = header.start_unix_ns.saturating_add(l.record.t());
        let mut epb = Vec::with_capacity(20 + data.len() + 4);
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ts as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(original as u32).to_le_bytes());
        epb.extend_from_slice(&data);
        pad4(&mut epb);
        block(w, 6, &epb)?;
        packets += 1;
    }
    Ok(packets)
}
