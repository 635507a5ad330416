//! `dxvmm run --trace`: the device's [`FrameObserver`] that writes a trace.
//!
//! The device thread encodes each record and hands it to a writer thread
//! through a bounded channel; when the writer falls behind, the device
//! thread waits for room (a trace is complete or it is nothing). Besides the
//! frames, it copies the guest memory the backend reads or writes at the
//! points the protocol defines (see [`crate::capture`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use device_dxg::{Direction, FrameObserver};
use dxvmm_host_backend::AdapterInfo;
use dxvmm_protocol::frame::DXGV_FRAME_VERSION;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::capture::Capture;
use crate::error::TraceError;
use crate::format::{AdapterEntry, Record, TraceHeader};

/// Records in flight between the device thread and the writer.
const CHANNEL_DEPTH: usize = 4096;

/// The writer's buffer: small records (frames, scattered pages) gather
/// into one write; memory runs at least this large go to the file
/// directly, without a copy into the buffer.
const WRITE_BUFFER: usize = 256 << 10;

/// An encoded record: its head and the bytes after it, handed to the writer
/// as the recorder made them (the bulk of a memory record is not copied
/// into a second buffer).
type Encoded = (Vec<u8>, Vec<u8>);

/// The process handle in a request frame's command header (0 if none).
pub fn frame_process(frame: &[u8]) -> u32 {
    frame
        .get(32 + 8..32 + 12)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl TraceHeader {
    /// The header of a recording of a guest that sees `adapters`.
    pub fn new(adapters: &[AdapterInfo], producer: &str) -> TraceHeader {
        let start_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        TraceHeader {
            start_unix_ns,
            frame_version: u32::from(DXGV_FRAME_VERSION),
            producer: producer.to_string(),
            host,
            adapters: adapters
                .iter()
                .map(|a| AdapterEntry {
                    luid: a.luid,
                    vendor_id: a.vendor_id,
                    device_id: a.device_id,
                    software: a.software,
                    name: a.name.clone(),
                    driver: a.driver.clone(),
                })
                .collect(),
        }
    }
}

struct State {
    tx: Option<SyncSender<Encoded>>,
    records: u64,
    /// The process of the request being answered.
    process: u32,
    layout: Vec<(u64, u64)>,
    capture: Capture,
    /// Times the device thread found the channel full.
    waits: u64,
}

/// Writes a trace of everything the device it observes sees.
pub struct Recorder {
    start: Instant,
    path: PathBuf,
    state: Mutex<State>,
    writer: Mutex<Option<JoinHandle<Result<u64, std::io::Error>>>>,
}

/// What a finished recording wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
    /// Records the device thread had to wait to hand over.
    pub waits: u64,
}

fn writer_thread(
    rx: Receiver<Encoded>,
    mut out: BufWriter<File>,
    head: u64,
) -> std::io::Result<u64> {
    let mut bytes = head;
    let mut failed: Option<std::io::Error> = None;
    // Drain the channel even after a write error, so that the device thread
    // never waits on a writer that stopped.
    for (head, tail) in rx {
        if failed.is_none() {
            match out.write_all(&head).and_then(|()| out.write_all(&tail)) {
                Ok(()) => bytes += (head.len() + tail.len()) as u64,
                Err(e) => failed = Some(e),
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(bytes)
}

impl Recorder {
    /// Creates `path` (replacing it) and writes the header.
    pub fn create(path: &Path, header: &TraceHeader) -> Result<Arc<Recorder>, TraceError> {
        let file = File::create(path).map_err(|e| TraceError::io(path, e))?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        let head = header.encode();
        out.write_all(&head).map_err(|e| TraceError::io(path, e))?;
        let (tx, rx) = sync_channel(CHANNEL_DEPTH);
        let writer = std::thread::Builder::new()
            .name("dxvmm-trace".into())
            .spawn(move || writer_thread(rx, out, head.len() as u64))
            .map_err(|e| TraceError::io(path, e))?;
        Ok(Arc::new(Recorder {
            start: Instant::now(),
            path: path.to_path_buf(),
            state: Mutex::new(State {
                tx: Some(tx),
                records: 0,
                process: 0,
                layout: Vec::new(),
                capture: Capture::default(),
                waits: 0,
            }),
            writer: Mutex::new(Some(writer)),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Writes the end record, waits for the writer and closes the file.
    /// Frames observed afterwards are ignored.
    pub fn finish(&self) -> Result<Summary, TraceError> {
        let (records, waits) = {
            let mut st = self.lock();
            let t = self.now();
            let records = st.records;
            emit(&mut st, Record::End { t, records });
            st.tx = None;
            (records, st.waits)
        };
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(handle) = handle else {
            return Err(TraceError::Recorder("already finished".into()));
        };
        let bytes = handle
            .join()
            .map_err(|_| TraceError::Recorder("the writer thread panicked".into()))?
            .map_err(|e| TraceError::io(&self.path, e))?;
        Ok(Summary {
            records,
            bytes,
            waits,
        })
    }
}

/// Encodes `rec` and hands it to the writer (waiting for room if need be).
fn emit(st: &mut State, rec: Record) {
    let Some(tx) = &st.tx else { return };
    match tx.try_send(rec.into_parts()) {
        Ok(()) => {}
        Err(std::sync::mpsc::TrySendError::Full(parts)) => {
            st.waits += 1;
            if tx.send(parts).is_err() {
                st.tx = None;
                return;
            }
        }
        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
            st.tx = None;
            return;
        }
    }
    st.records += 1;
}

impl FrameObserver for Recorder {
    fn observe(&self, direction: Direction, frame: &[u8], mem: Option<&GuestMemoryMmap>) {
        let t = self.now();
        let mut st = self.lock();
        if st.tx.is_none() {
            return;
        }
        match direction {
            Direction::Request => {
                if let Some(mem) = mem {
                    let regions: Vec<(u64, u64)> =
                        mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
                    if regions != st.layout {
                        st.layout = regions.clone();
                        emit(&mut st, Record::Layout { t, regions });
                    }
                }
                let process = frame_process(frame);
                st.process = process;
                let mut inputs = Vec::new();
                st.capture.before_request(frame, mem, &mut inputs);
                for (gpa, bytes) in inputs {
                    emit(
                        &mut st,
                        Record::Memory {
                            t,
                            purpose: crate::format::MemoryPurpose::Input,
                            gpa,
                            bytes,
                        },
                    );
                }
                emit(
                    &mut st,
                    Record::Request {
                        t,
                        process,
                        frame: frame.to_vec(),
                    },
                );
            }
            Direction::Reply => {
                let process = st.process;
                emit(
                    &mut st,
                    Record::Reply {
                        t,
                        process,
                        frame: frame.to_vec(),
                    },
                );
                let mut results = Vec::new();
                st.capture.after_reply(frame, mem, &mut results);
                for (gpa, bytes) in results {
                    emit(
                        &mut st,
                        Record::Memory {
                            t,
                            purpose: crate::format::MemoryPurpose::Result,
                            gpa,
                            bytes,
                        },
                    );
                }
            }
            Direction::Event => emit(
                &mut st,
                Record::Event {
                    t,
                    frame: frame.to_vec(),
                },
            ),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // A recording nobody finished still gets its end record and a
        // flushed file.
        if self.writer.lock().map(|w| w.is_some()).unwrap_or(false) {
            if let Err(e) = self.finish() {
                tracing::warn!("trace: {e}");
            }
        }
    }
}
