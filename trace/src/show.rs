//! `dxvmm trace show` and `dxvmm trace stats`: the decoded stream, one line
//! per record, and counts, latencies and bytes per command.

use std::collections::BTreeMap;
use std::io::Write;

use dxvmm_protocol::abi::WinLuid;
use dxvmm_protocol::cmdstream::CommandStream;
use dxvmm_protocol::escape::EscapeRequest;
use dxvmm_protocol::frame::{Frame, FrameKind};
use dxvmm_protocol::message::{command_name, HostEvent, Reply, Request};
use dxvmm_protocol::NtStatus;
use serde::Serialize;

use crate::format::{MemoryPurpose, Record, TraceHeader};
use crate::reader::Located;

/// One record, decoded for people.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub index: u64,
    pub t_ns: u64,
    /// request, reply, event, memory, layout, end.
    pub kind: &'static str,
    /// The process handle (hex in text).
    pub process: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vgpu: Option<String>,
    /// The DXGK_VMBCOMMAND_* name without its prefix (a reply: its
    /// request's), or what the record is.
    pub command: String,
    /// A reply's frame status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Frame or memory bytes.
    pub bytes: usize,
    /// A reply: ns since its request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ns: Option<u64>,
    /// A short summary of the content.
    pub detail: String,
    /// The decoded message (JSON form only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<serde_json::Value>,
}

pub fn luid_text(l: WinLuid) -> String {
    format!("{:08x}:{:08x}", l.b, l.a)
}

fn short(name: &str) -> String {
    name.strip_prefix("DXGK_VMBCOMMAND_")
        .unwrap_or(name)
        .to_string()
}

fn status_text(s: NtStatus) -> String {
    s.name()
        .map_or_else(|| format!("0x{:08X}", s.bits()), str::to_string)
}

/// The command's name from the raw payload header, even when the command
/// does not decode.
fn raw_command(payload: &[u8]) -> String {
    let word = |at: usize| {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match (word(12), word(16)) {
        (Some(ch), Some(cmd)) => command_name(ch & 0xff, cmd)
            .map_or_else(|| format!("command {cmd} (channel {})", ch & 0xff), short),
        _ => "(no command header)".into(),
    }
}

fn request_detail(r: &Request) -> String {
    match r {
        Request::CreateAllocation { alloc_info, .. } => {
            format!("{} allocation(s)", alloc_info.len())
        }
        Request::SetExistingSysmemPages { cmd, pfns } => format!(
            "allocation {:#x} pages {}..{}",
            cmd.allocation.0,
            cmd.alloc_offset_in_pages,
            u64::from(cmd.alloc_offset_in_pages) + pfns.len() as u64
        ),
        Request::Lock2(c) => format!("allocation {:#x}", c.args.allocation.0),
        Request::Unlock2(c) => format!("allocation {:#x}", c.args.allocation.0),
        Request::MapGpuVirtualAddress(c) => format!(
            "allocation {:#x} {} page(s)",
            c.args.allocation.0, c.args.size_in_pages
        ),
        Request::SubmitCommand { cmd, .. } => format!(
            "stream at {:#x}, {} bytes",
            cmd.args.command_buffer, cmd.args.command_length
        ),
        Request::SubmitCommandToHwQueue { cmd, .. } => format!(
            "queue {:#x} stream at {:#x}, {} bytes, progress {}",
            cmd.args.hwqueue.0,
            cmd.args.command_buffer,
            cmd.args.command_length,
            cmd.args.hwqueue_progress_fence_id
        ),
        Request::SignalSyncObject {
            objects,
            fence_values,
            cmd,
            ..
        } => format!(
            "{} object(s) to {:?}",
            objects.len(),
            if fence_values.is_empty() {
                vec![cmd.fence_value]
            } else {
                fence_values.clone()
            }
        ),
        Request::WaitForSyncObjectFromCpu {
            objects,
            fence_values,
            cmd,
        } => format!(
            "{} object(s) for {:?}, cookie {:#x}",
            objects.len(),
            fence_values,
            cmd.guest_event_pointer
        ),
        Request::Escape { priv_drv_data, .. } => match EscapeRequest::decode(priv_drv_data) {
            Ok(EscapeRequest::CreatePipeline(p)) => format!(
                "CREATE_PIPELINE {:?} entry {:?}, {} bytes of source",
                p.language,
                p.entry_point,
                p.source.len()
            ),
            Ok(EscapeRequest::DestroyPipeline { pipeline }) => {
                format!("DESTROY_PIPELINE {pipeline}")
            }
            Err(e) => format!("{} bytes ({e})", priv_drv_data.len()),
        },
        Request::QueryAdapterInfo { cmd, .. } => format!("type {:#x}", cmd.query_type),
        _ => String::new(),
    }
}

fn reply_detail(r: &Reply) -> String {
    match r {
        Reply::Status(s) => status_text(*s),
        Reply::CreateProcess(r) => format!("process {:#x}", r.hprocess.0),
        Reply::CreateDevice(r) => format!("device {:#x}", r.device.0),
        Reply::OpenAdapter(r) => format!(
            "adapter {:#x} {}",
            r.host_adapter_handle.0,
            status_text(r.status)
        ),
        Reply::CreateAllocation {
            allocation_info, ..
        } => allocation_info
            .iter()
            .map(|a| format!("{:#x} ({} bytes)", a.allocation.0, a.allocation_size))
            .collect::<Vec<_>>()
            .join(", "),
        Reply::CreateContextVirtual { cmd, .. } => format!("context {:#x}", cmd.context.0),
        Reply::CreateHwQueue { cmd, .. } => format!(
            "queue {:#x} fence {:#x} {}",
            cmd.hwqueue.0,
            cmd.hwqueue_progress_fence.0,
            status_text(cmd.status)
        ),
        Reply::CreatePagingQueue(r) => format!("paging queue {:#x}", r.paging_queue.0),
        Reply::CreateSyncObject(r) => format!("fence {:#x}", r.sync_object.0),
        Reply::Lock2(r) => status_text(r.status),
        Reply::MapGpuVirtualAddress(r) => {
            format!("va {:#x} {}", r.virtual_address, status_text(r.status))
        }
        Reply::ReserveGpuVirtualAddress(r) => format!("va {:#x}", r.virtual_address),
        Reply::QueryAdapterInfo { status, .. } => status_text(*status),
        Reply::Escape { priv_drv_data } => {
            match dxvmm_protocol::escape::EscapeResponse::decode(priv_drv_data) {
                Ok(resp) if resp.error.is_empty() => {
                    format!("{} pipeline {}", status_text(resp.status), resp.pipeline)
                }
                Ok(resp) => format!(
                    "{}: {}",
                    status_text(resp.status),
                    resp.error.lines().next().unwrap_or("")
                ),
                Err(e) => format!("({e})"),
            }
        }
        _ => String::new(),
    }
}

/// Decodes every record; `json` adds the decoded messages.
pub fn messages(records: &[Located], json: bool) -> Vec<Message> {
    let mut out = Vec::with_capacity(records.len());
    let mut last: Option<(Option<Request>, String, u64)> = None;
    for l in records {
        let mut m = Message {
            index: l.index,
            t_ns: l.record.t(),
            kind: "",
            process: 0,
            request_id: None,
            vgpu: None,
            command: String::new(),
            status: None,
            bytes: 0,
            latency_ns: None,
            detail: String::new(),
            message: None,
        };
        match &l.record {
            Record::Request { process, frame, .. } => {
                m.kind = "request";
                m.process = *process;
                m.bytes = frame.len();
                match Frame::parse(frame, FrameKind::Request) {
                    Ok(f) => {
                        m.request_id = Some(f.header.request_id);
                        m.vgpu = Some(luid_text(f.header.vgpu_luid));
                        match Request::decode(f.payload) {
                            Ok(r) => {
                                m.command = short(r.name());
                                m.detail = request_detail(&r);
                                if r.is_async() {
                                    // The guest did not wait for the reply.
                                    m.detail.push_str(" (async)");
                                }
                                if json {
                                    m.message = serde_json::to_value(&r).ok();
                                    if let Request::SubmitCommand { .. }
                                    | Request::SubmitCommandToHwQueue { .. } = r
                                    {
                                        // The stream itself is in memory
                                        // records; see `show --memory`.
                                    }
                                }
                                last = Some((Some(r), m.command.clone(), m.t_ns));
                            }
                            Err(e) => {
                                m.command = raw_command(f.payload);
                                m.detail = format!("undecodable: {e}");
                                last = Some((None, m.command.clone(), m.t_ns));
                            }
                        }
                    }
                    Err(e) => {
                        m.command = "(bad frame)".into();
                        m.detail = e.to_string();
                        last = Some((None, m.command.clone(), m.t_ns));
                    }
                }
            }
            Record::Reply { process, frame, .. } => {
                m.kind = "reply";
                m.process = *process;
                m.bytes = frame.len();
                let (req, name, t0) = last.take().unwrap_or((None, "(no request)".into(), m.t_ns));
                m.command = name;
                m.latency_ns = Some(m.t_ns.saturating_sub(t0));
                match Frame::parse(frame, FrameKind::Reply) {
                    Ok(f) => {
                        m.request_id = Some(f.header.request_id);
                        m.status = Some(status_text(f.header.status));
                        if let Some(req) = &req {
                            if f.header.status.is_success() {
                                match Reply::decode(req, f.payload) {
                                    Ok(r) => {
                                        m.detail = reply_detail(&r);
                                        if json {
                                            m.message = serde_json::to_value(&r).ok();
                                        }
                                    }
                                    Err(e) => m.detail = format!("undecodable: {e}"),
                                }
                            }
                        }
                    }
                    Err(e) => m.detail = format!("bad frame: {e}"),
                }
            }
            Record::Event { frame, .. } => {
                m.kind = "event";
                m.bytes = frame.len();
                match Frame::parse(frame, FrameKind::Event)
                    .map(|f| (f, HostEvent::decode(f.payload)))
                {
                    Ok((_, Ok(ev))) => {
                        let (name, c) = match &ev {
                            HostEvent::SignalGuestEvent(c) => ("SIGNALGUESTEVENT", Some(c)),
                            HostEvent::SignalGuestEventPassive(c) => {
                                ("SIGNALGUESTEVENTPASSIVE", Some(c))
                            }
                            HostEvent::SetGuestData(_) => ("SETGUESTDATA", None),
                        };
                        m.command = name.into();
                        if let Some(c) = c {
                            m.process = c.hdr.process.0;
                            m.detail = format!("cookie {:#x}", c.event);
                        }
                        if json {
                            m.message = serde_json::to_value(&ev).ok();
                        }
                    }
                    Ok((_, Err(e))) => {
                        m.command = "(bad event)".into();
                        m.detail = e.to_string();
                    }
                    Err(e) => {
                        m.command = "(bad frame)".into();
                        m.detail = e.to_string();
                    }
                }
            }
            Record::Memory {
                purpose,
                gpa,
                bytes,
                ..
            } => {
                m.kind = "memory";
                m.bytes = bytes.len();
                m.command = match purpose {
                    MemoryPurpose::Input => "memory in".into(),
                    MemoryPurpose::Result => "memory result".into(),
                };
                m.detail = format!("gpa {gpa:#x}");
                // A page that starts with a command stream says so.
                if let Ok(s) = CommandStream::decode(trim_stream(bytes)) {
                    m.detail.push_str(&format!(
                        ", command stream of {} command(s)",
                        s.commands.len()
                    ));
                }
            }
            Record::Digest {
                gpa, len, digest, ..
            } => {
                m.kind = "memory";
                // What the trace holds: the digest.
                m.bytes = 16;
                m.command = "memory result digest".into();
                m.detail = format!(
                    "gpa {gpa:#x}, {len} bytes, digest {}",
                    crate::digest::hex(*digest)
                );
            }
            Record::Layout { regions, .. } => {
                m.kind = "layout";
                m.command = "guest memory".into();
                m.detail = regions
                    .iter()
                    .map(|(s, l)| format!("{s:#x}+{l:#x}"))
                    .collect::<Vec<_>>()
                    .join(" ");
            }
            Record::End { records, .. } => {
                m.kind = "end";
                m.command = "end".into();
                m.detail = format!("{records} records");
            }
        }
        out.push(m);
    }
    out
}

/// A command stream's header gives its own length; the rest of the page is
/// not part of it.
fn trim_stream(bytes: &[u8]) -> &[u8] {
    let len = bytes
        .get(8..12)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(0);
    bytes.get(..len).unwrap_or(bytes)
}

/// Which records `show` prints.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this process's requests, replies and events.
    pub process: Option<u32>,
    /// Only commands whose name contains this (any case).
    pub command: Option<String>,
    /// Also memory, layout and end records.
    pub all: bool,
}

impl Filter {
    pub fn admits(&self, m: &Message) -> bool {
        let framed = matches!(m.kind, "request" | "reply" | "event");
        if !framed && (!self.all || self.process.is_some() || self.command.is_some()) {
            return false;
        }
        if let Some(p) = self.process {
            if m.process != p {
                return false;
            }
        }
        if let Some(c) = &self.command {
            if !m
                .command
                .to_ascii_lowercase()
                .contains(&c.to_ascii_lowercase())
            {
                return false;
            }
        }
        true
    }
}

/// Writes the header and the admitted records, one line each.
pub fn show(
    out: &mut dyn Write,
    header: &TraceHeader,
    records: &[Located],
    filter: &Filter,
    json: bool,
) -> std::io::Result<()> {
    if json {
        for m in messages(records, true).iter().filter(|m| filter.admits(m)) {
            writeln!(out, "{}", serde_json::to_string(m).unwrap_or_default())?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "# {} on {}, {} adapter(s): {}",
        header.producer,
        if header.host.is_empty() {
            "?"
        } else {
            &header.host
        },
        header.adapters.len(),
        header
            .adapters
            .iter()
            .map(|a| format!("{} [{}]", a.name, luid_text(a.luid)))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "{:>6} {:>12} {:<7} {:>8} {:>6} {:<26} {:<26} DETAIL",
        "#", "TIME(ms)", "KIND", "PROCESS", "ID", "COMMAND", "STATUS"
    )?;
    for m in messages(records, false).iter().filter(|m| filter.admits(m)) {
        writeln!(
            out,
            "{:>6} {:>12.6} {:<7} {:>8} {:>6} {:<26} {:<26} {}",
            m.index,
            m.t_ns as f64 / 1e6,
            m.kind,
            if m.process == 0 {
                "-".into()
            } else {
                format!("{:x}", m.process)
            },
            m.request_id.map_or("-".into(), |i| i.to_string()),
            m.command,
            m.status.as_deref().unwrap_or(""),
            m.detail
        )?;
    }
    Ok(())
}

/// Per-command figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CommandStats {
    pub command: String,
    pub count: u64,
    /// Replies whose frame status is a failure.
    pub failed: u64,
    pub request_bytes: u64,
    pub reply_bytes: u64,
    pub latency_min_ns: u64,
    pub latency_median_ns: u64,
    pub latency_p99_ns: u64,
    pub latency_max_ns: u64,
    #[serde(skip)]
    latencies: Vec<u64>,
}

/// The whole trace's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub records: u64,
    pub duration_ns: u64,
    pub requests: u64,
    pub events: u64,
    pub memory_records: u64,
    pub memory_bytes: u64,
    /// Memory records that hold a result's digest, and the guest bytes
    /// they cover.
    pub result_digests: u64,
    pub digested_bytes: u64,
    pub commands: Vec<CommandStats>,
}

pub fn stats(records: &[Located]) -> Stats {
    let msgs = messages(records, false);
    let mut by: BTreeMap<String, CommandStats> = BTreeMap::new();
    let mut s = Stats {
        records: records.len() as u64,
        duration_ns: records.last().map_or(0, |r| r.record.t()),
        ..Default::default()
    };
    for l in records {
        if let Record::Digest { len, .. } = &l.record {
            s.result_digests += 1;
            s.digested_bytes += len;
        }
    }
    for m in &msgs {
        match m.kind {
            "request" => {
                s.requests += 1;
                let c = by.entry(m.command.clone()).or_default();
                c.count += 1;
                c.request_bytes += m.bytes as u64;
            }
            "reply" => {
                let c = by.entry(m.command.clone()).or_default();
                c.reply_bytes += m.bytes as u64;
                if m.status.as_deref().is_some_and(|s| s != "STATUS_SUCCESS") {
                    c.failed += 1;
                }
                if let Some(l) = m.latency_ns {
                    c.latencies.push(l);
                }
            }
            "event" => {
                s.events += 1;
                let c = by.entry(format!("event {}", m.command)).or_default();
                c.count += 1;
                c.reply_bytes += m.bytes as u64;
            }
            "memory" => {
                s.memory_records += 1;
                s.memory_bytes += m.bytes as u64;
            }
            _ => {}
        }
    }
    for (name, mut c) in by {
        c.command = name;
        c.latencies.sort_unstable();
        if let (Some(first), Some(last)) = (c.latencies.first(), c.latencies.last()) {
            let n = c.latencies.len();
            c.latency_min_ns = *first;
            c.latency_max_ns = *last;
            c.latency_median_ns = c.latencies[n / 2];
            c.latency_p99_ns = c.latencies[((n * 99) / 100).min(n - 1)];
        }
        s.commands.push(c);
    }
    s.commands
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.command.cmp(&b.command)));
    s
}

pub fn write_stats(out: &mut dyn Write, s: &Stats, json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(s).unwrap_or_default()
        );
    }
    writeln!(
        out,
        "{} records over {:.3} ms: {} requests, {} events, {} memory records ({} bytes; {} of them result digests over {} bytes)",
        s.records,
        s.duration_ns as f64 / 1e6,
        s.requests,
        s.events,
        s.memory_records,
        s.memory_bytes,
        s.result_digests,
        s.digested_bytes
    )?;
    writeln!(
        out,
        "{:<30} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "COMMAND",
        "COUNT",
        "FAILED",
        "REQ BYTES",
        "REP BYTES",
        "MIN us",
        "MEDIAN us",
        "P99 us",
        "MAX us"
    )?;
    let us = |ns: u64| ns as f64 / 1e3;
    for c in &s.commands {
        writeln!(
            out,
            "{:<30} {:>7} {:>6} {:>10} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            c.command,
            c.count,
            c.failed,
            c.request_bytes,
            c.reply_bytes,
            us(c.latency_min_ns),
            us(c.latency_median_ns),
            us(c.latency_p99_ns),
            us(c.latency_max_ns)
        )?;
    }
    Ok(())
}
