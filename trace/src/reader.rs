//! Reading a trace: every length, kind and field is checked; a short,
//! corrupt or newer file is a [`TraceError`], never a panic.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::TraceError;
use crate::format::{get_varint, Record, TraceHeader, MAX_RECORD, PREAMBLE_SIZE};

/// A record and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// 0 for the first record after the header.
    pub index: u64,
    /// Byte offset of the record in the file.
    pub offset: u64,
    pub record: Record,
}

/// Reads records one at a time.
pub struct TraceReader<R: Read> {
    r: R,
    path: PathBuf,
    pub header: TraceHeader,
    /// The file's format version (records are read as that version's).
    pub version: u16,
    offset: u64,
    index: u64,
    ended: bool,
    failed: bool,
}

impl TraceReader<BufReader<File>> {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let f = File::open(path).map_err(|e| TraceError::io(path, e))?;
        TraceReader::new(BufReader::with_capacity(1 << 16, f), path)
    }
}

/// Fills `buf`; Ok(n) with n < buf.len() only at end of file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl<R: Read> TraceReader<R> {
    /// Reads the header from `r`; `path` names the source in errors.
    pub fn new(mut r: R, path: &Path) -> Result<Self, TraceError> {
        let mut pre = [0u8; PREAMBLE_SIZE];
        let n = read_full(&mut r, &mut pre).map_err(|e| TraceError::io(path, e))?;
        if n < PREAMBLE_SIZE {
            let m = n.min(8);
            if pre[..m] == crate::format::MAGIC[..m] {
                return Err(TraceError::Truncated {
                    offset: n as u64,
                    what: "the file header",
                });
            }
            return Err(TraceError::BadMagic);
        }
        let (len, version) = TraceHeader::check_preamble(&pre)?;
        let mut body = vec![0u8; len as usize];
        let got = read_full(&mut r, &mut body).map_err(|e| TraceError::io(path, e))?;
        if got < body.len() {
            return Err(TraceError::Truncated {
                offset: (PREAMBLE_SIZE + got) as u64,
                what: "the file header",
            });
        }
        let header = TraceHeader::decode(&body)?;
        Ok(TraceReader {
            r,
            path: path.to_path_buf(),
            header,
            version,
            offset: PREAMBLE_SIZE as u64 + u64::from(len),
            index: 0,
            ended: false,
            failed: false,
        })
    }

    fn next_record(&mut self) -> Result<Option<Located>, TraceError> {
        let start = self.offset;
        // The length varint, byte by byte: end of file before its first
        // byte is the end of the trace.
        let mut len_bytes = Vec::with_capacity(10);
        loop {
            let mut b = [0u8; 1];
            let n = read_full(&mut self.r, &mut b).map_err(|e| TraceError::io(&self.path, e))?;
            if n == 0 {
                if len_bytes.is_empty() {
                    if self.ended {
                        return Ok(None);
                    }
                    return Err(TraceError::Unfinished { offset: start });
                }
                return Err(TraceError::Truncated {
                    offset: start + len_bytes.len() as u64,
                    what: "a record length",
                });
            }
            len_bytes.push(b[0]);
            if b[0] & 0x80 == 0 || len_bytes.len() == 10 {
                break;
            }
        }
        if self.ended {
            return Err(TraceError::Corrupt {
                offset: start,
                why: "bytes after the end record".into(),
            });
        }
        let (len, used) = get_varint(&len_bytes).ok_or_else(|| TraceError::Corrupt {
            offset: start,
            why: "bad record length".into(),
        })?;
        if len == 0 || len > MAX_RECORD {
            return Err(TraceError::Corrupt {
                offset: start,
                why: format!("record of {len} bytes"),
            });
        }
        let mut body = vec![0u8; len as usize];
        let got = read_full(&mut self.r, &mut body).map_err(|e| TraceError::io(&self.path, e))?;
        if got < body.len() {
            return Err(TraceError::Truncated {
                offset: start + used as u64 + got as u64,
                what: "a record",
            });
        }
        let record = Record::decode_version(&body, start, self.version)?;
        self.offset = start + used as u64 + len;
        if let Record::End { records, .. } = record {
            if records != self.index {
                return Err(TraceError::Corrupt {
                    offset: start,
                    why: format!(
                        "the end record counts {records} records, the file has {}",
                        self.index
                    ),
                });
            }
            self.ended = true;
        }
        let located = Located {
            index: self.index,
            offset: start,
            record,
        };
        self.index += 1;
        Ok(Some(located))
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Located, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole trace into memory.
pub fn read_all(path: &Path) -> Result<(TraceHeader, Vec<Located>), TraceError> {
    let mut r = TraceReader::open(path)?;
    let mut out = Vec::new();
    for rec in &mut r {
        out.push(rec?);
    }
    Ok((r.header.clone(), out))
}

/// Reads a trace held in memory (tests, fuzzing).
pub fn read_bytes(bytes: &[u8]) -> Result<(TraceHeader, Vec<Located>), TraceError> {
    let mut r = TraceReader::new(bytes, Path::new("<memory>"))?;
    let mut out = Vec::new();
    for rec in &mut r {
        out.push(rec?);
    }
    Ok((r.header.clone(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{AdapterEntry, TraceHeader};

    fn sample() -> Vec<u8> {
        let h = TraceHeader {
            start_unix_ns: 0,
            frame_version: 1,
            producer: "test".into(),
            host: "h".into(),
            adapters: vec![AdapterEntry {
                luid: Default::default(),
                vendor_id: 1,
                device_id: 2,
                software: true,
                name: "n".into(),
                driver: "d".into(),
            }],
        };
        let mut b = h.encode();
        Record::Request {
            t: 1,
            process: 0,
            frame: vec![7; 40],
        }
        .encode_into(&mut b);
        Record::End { t: 2, records: 1 }.encode_into(&mut b);
        b
    }

    #[test]
    fn a_whole_trace_reads_back() {
        let (_, recs) = read_bytes(&sample()).unwrap();
        assert_eq!(recs.len(), 2);
    }

    #[test]
    fn every_truncation_is_one_clear_error() {
        let b = sample();
        for cut in 0..b.len() {
            let e = read_bytes(&b[..cut]).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(
                    e,
                    TraceError::Truncated { .. }
                        | TraceError::Unfinished { .. }
                        | TraceError::BadMagic
                ),
                "cut at {cut}: {msg}"
            );
            assert!(!msg.contains('\n'));
        }
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let b = sample();
        for i in 0..b.len() {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut c = b.clone();
                c[i] = v;
                let _ = read_bytes(&c);
            }
        }
        let mut tail = b.clone();
        tail.push(1);
        assert!(read_bytes(&tail)
            .unwrap_err()
            .to_string()
            .contains("after the end"));
        assert!(matches!(
            read_bytes(b"GARBAGE!GARBAGE!"),
            Err(TraceError::BadMagic)
        ));
    }
}
