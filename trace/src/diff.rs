//! `dxvmm trace diff A B`: two recordings compared call by call (a request
//! and its reply), as a researcher compares two runs of one program (two
//! hosts, two drivers, two builds of the guest library): requests and
//! replies that differ, by field; the calls only one of them has, after
//! which the two are walked side by side again; and the commands whose
//! counts differ.
//!
//! What two runs of the same work may do differently is not a difference:
//! handles (paired through the replies that make them, as a replay pairs
//! its own with the recorded ones), the guest's request ids, adapter LUIDs
//! (paired by the adapters' order in the headers), times, whether a CPU
//! wait was satisfied at once or later, and when host events arrive (they
//! are compared as a set per process, not by position). Guest memory is
//! not compared: its addresses differ between boots, and a replay checks
//! what the GPU computed.

use std::collections::BTreeMap;

use dxvmm_protocol::abi::WinLuid;
use dxvmm_protocol::frame::{Frame, FrameKind};
use dxvmm_protocol::message::{HostEvent, Reply, Request};
use dxvmm_protocol::NtStatus;
use serde::Serialize;

use crate::format::{Record, TraceHeader};
use crate::reader::Located;
use crate::remap::Remap;
use crate::replay::{compare, differ, CpuWait, Current, Diff};

/// A place where two recordings differ: a call whose request or reply
/// differs, calls only one has, or a host event only one has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The records that differ (None: that trace has no such record).
    pub index_a: Option<u64>,
    pub index_b: Option<u64>,
    /// The command (a reply: its request's).
    pub command: String,
    pub what: String,
    pub a: String,
    pub b: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |i: Option<u64>| i.map_or_else(|| "-".to_string(), |i| format!("#{i}"));
        write!(
            f,
            "A {} / B {} ({}): {}: A {}, B {}",
            at(self.index_a),
            at(self.index_b),
            self.command,
            self.what,
            self.a,
            self.b
        )
    }
}

/// A command counted differently in the two recordings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CountDifference {
    pub command: String,
    pub a: u64,
    pub b: u64,
}

/// What `diff` compared and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiffReport {
    /// Calls (a request and its reply) compared side by side.
    pub calls: u64,
    /// Host events compared.
    pub events: u64,
    /// What differs, in each process's order (up to the number asked
    /// for), then the host events.
    pub differences: Vec<Difference>,
    /// Requests and events counted per command, where the counts differ.
    pub counts: Vec<CountDifference>,
}

impl DiffReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// One message of a recording.
struct Message<'a> {
    index: u64,
    reply: bool,
    frame: &'a [u8],
}

/// The requests and replies of a recording, in order, and its events;
/// but for requests and events whose command name contains one of `skip`,
/// and those requests' replies.
fn messages<'a>(records: &'a [Located], skip: &[String]) -> (Vec<Message<'a>>, Vec<Message<'a>>) {
    let mut calls = Vec::new();
    let mut events = Vec::new();
    let skipped = |name: String| {
        let name = name.to_ascii_lowercase();
        skip.iter().any(|s| name.contains(s.as_str()))
    };
    // Whether the request whose reply comes next was left out.
    let mut skipping = false;
    for l in records {
        let (reply, frame) = match &l.record {
            Record::Request { frame, .. } => {
                skipping = skipped(raw_name(frame, FrameKind::Request));
                if skipping {
                    continue;
                }
                (false, frame)
            }
            Record::Reply { frame, .. } => {
                if std::mem::take(&mut skipping) {
                    continue;
                }
                (true, frame)
            }
            Record::Event { frame, .. } => {
                if !skipped(event_key(frame, None).0) {
                    events.push(Message {
                        index: l.index,
                        reply: false,
                        frame,
                    });
                }
                continue;
            }
            _ => continue,
        };
        calls.push(Message {
            index: l.index,
            reply,
            frame,
        });
    }
    (calls, events)
}

fn name(r: &Request) -> String {
    let n = r.name();
    n.strip_prefix("DXGK_VMBCOMMAND_").unwrap_or(n).to_string()
}

/// The payload's command name, decoded or not.
fn raw_name(frame: &[u8], kind: FrameKind) -> String {
    match Frame::parse(frame, kind) {
        Ok(f) => match Request::decode(f.payload) {
            Ok(r) => name(&r),
            Err(_) => "(undecodable command)".into(),
        },
        Err(_) => "(bad frame)".into(),
    }
}

/// What differs, A's value, B's value.
type Found = (String, String, String);

/// The first field where two values differ, as (path, a, b).
fn first_field(path: &str, a: &serde_json::Value, b: &serde_json::Value) -> Diff {
    use serde_json::Value;
    let short = |v: &Value| {
        let s = v.to_string();
        if s.len() > 120 {
            let head: String = s.chars().take(117).collect();
            format!("{head}... ({} characters)", s.len())
        } else {
            s
        }
    };
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => {
                        if let Some(d) = first_field(&join(k), va, vb) {
                            return Some(d);
                        }
                    }
                    None => return differ(&join(k), short(va), "(none)"),
                }
            }
            y.iter()
                .find(|(k, _)| !x.contains_key(*k))
                .and_then(|(k, vb)| differ(&join(k), "(none)", short(vb)))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| first_field(&format!("{path}[{i}]"), va, vb)),
        (Value::Array(x), Value::Array(y)) => differ(
            &format!("{path} (length)"),
            x.len(),
            format!("{} {}", y.len(), short(b)),
        ),
        _ if a == b => None,
        _ => differ(
            if path.is_empty() { "value" } else { path },
            short(a),
            short(b),
        ),
    }
}

/// Compares two request frames: A's, its handles and adapter taken to
/// B's, against B's. Returns A's request as recorded (for its reply) and
/// B's.
fn compare_requests(
    a: &[u8],
    b: &[u8],
    remap: &Remap,
    luid_for: &dyn Fn(WinLuid) -> WinLuid,
) -> Result<(Option<Request>, Option<Request>), Found> {
    let fa = Frame::parse(a, FrameKind::Request);
    let fb = Frame::parse(b, FrameKind::Request);
    let (fa, fb) = match (fa, fb) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(_), Err(_)) => return Ok((None, None)),
        (x, y) => {
            let ok = |r: &Result<_, _>| if r.is_ok() { "a frame" } else { "a bad frame" };
            return Err(("request frame".into(), ok(&x).into(), ok(&y).into()));
        }
    };
    let (ra, rb_as_sent) = match (Request::decode(fa.payload), Request::decode(fb.payload)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(_), Err(_)) if fa.payload == fb.payload => return Ok((None, None)),
        (x, y) => {
            let show = |r: Result<Request, _>| {
                r.map_or_else(|e| format!("undecodable ({e})"), |r| name(&r))
            };
            return Err(("request".into(), show(x), show(y)));
        }
    };
    if ra.name() != rb_as_sent.name() {
        return Err(("command".into(), name(&ra), name(&rb_as_sent)));
    }
    let (mut mapped, mut rb) = (ra.clone(), rb_as_sent.clone());
    remap.apply(&mut mapped);
    without_guest_addresses(&mut mapped);
    without_guest_addresses(&mut rb);
    if let Request::OpenAdapter(c) = &mut mapped {
        c.guest_adapter_luid = luid_for(c.guest_adapter_luid);
    }
    let (va, vb) = (luid_for(fa.header.vgpu_luid), fb.header.vgpu_luid);
    if va != vb {
        return Err((
            "adapter".into(),
            crate::show::luid_text(fa.header.vgpu_luid),
            crate::show::luid_text(vb),
        ));
    }
    if mapped != rb {
        let (ja, jb) = (
            serde_json::to_value(&mapped).unwrap_or_default(),
            serde_json::to_value(&rb).unwrap_or_default(),
        );
        let d = first_field("", &ja, &jb)
            .unwrap_or_else(|| ("request".into(), "(bytes)".into(), "(other bytes)".into()));
        return Err(d);
    }
    Ok((Some(ra), Some(rb_as_sent)))
}

/// Gives `b` the guest addresses `a` names where they stand for the same
/// thing (a fence's slot), so that only what else differs is compared.
fn with_guest_addresses_of(a: &Reply, b: &mut Reply) {
    if let (Reply::CreateSyncObject(x), Reply::CreateSyncObject(y)) = (a, b) {
        y.fence_storage_address = x.fence_storage_address;
    }
}

/// Zeroes what names guest memory by its address (page frames, fence
/// slots): another boot of the guest puts the same data elsewhere.
fn without_guest_addresses(r: &mut Request) {
    match r {
        Request::SetExistingSysmemPages { pfns, .. } => pfns.fill(0),
        Request::CreateSyncObject(c) => {
            let mut f = c.args.info.monitored_fence();
            f.fence_cpu_virtual_address = 0;
            c.args.info.set_monitored_fence(f);
        }
        _ => {}
    }
}

/// A host event's kind, process and the rest of its payload.
type EventKey = (String, u32, Vec<u8>);

/// A host event as compared: its kind, its process (A's taken to B's),
/// and the rest of its payload.
fn event_key(frame: &[u8], remap: Option<&Remap>) -> EventKey {
    let Ok(f) = Frame::parse(frame, FrameKind::Event) else {
        return ("(bad frame)".into(), 0, frame.to_vec());
    };
    let process = |p: dxvmm_protocol::abi::D3dkmtHandle| remap.map_or(p, |m| m.get(p)).0;
    // Past the 24-byte command header (its process is compared apart).
    let rest = f.payload.get(24..).unwrap_or_default().to_vec();
    match HostEvent::decode(f.payload) {
        Ok(HostEvent::SignalGuestEvent(c)) => {
            ("SIGNALGUESTEVENT".into(), process(c.hdr.process), rest)
        }
        Ok(HostEvent::SignalGuestEventPassive(c)) => (
            "SIGNALGUESTEVENTPASSIVE".into(),
            process(c.hdr.process),
            rest,
        ),
        Ok(HostEvent::SetGuestData(c)) => ("SETGUESTDATA".into(), process(c.hdr.process), rest),
        Err(_) => ("(undecodable event)".into(), 0, f.payload.to_vec()),
    }
}

/// Requests (by command) and events (by kind) in a recording.
fn counts(calls: &[Message], events: &[Message]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in calls.iter().filter(|c| !c.reply) {
        *m.entry(raw_name(c.frame, FrameKind::Request)).or_default() += 1;
    }
    for e in events {
        *m.entry(format!("event {}", event_key(e.frame, None).0))
            .or_default() += 1;
    }
    m
}

/// A request and its reply (none at the end of a recording that stopped
/// before it).
struct Call<'a> {
    request: &'a Message<'a>,
    reply: Option<&'a Message<'a>>,
    command: String,
}

/// Units of this many calls alike in command, in a row, are where two
/// streams that parted meet again.
const RESYNC_RUN: usize = 3;
/// How far ahead, in calls of each stream, a meeting point is looked for.
const RESYNC_WINDOW: usize = 64;

/// Where streams `a` (from `i`) and `b` (from `j`) meet again: the
/// fewest calls to leave out of both, then of A, such that what follows
/// agrees in command for [`RESYNC_RUN`] calls (or up to both ends).
fn meeting(a: &[Call], b: &[Call], i: usize, j: usize) -> Option<(usize, usize)> {
    let agree = |x: usize, y: usize| {
        (0..RESYNC_RUN).all(|k| match (a.get(x + k), b.get(y + k)) {
            (Some(p), Some(q)) => p.command == q.command,
            (None, None) => true,
            _ => false,
        })
    };
    (1..=2 * RESYNC_WINDOW).find_map(|total| {
        (0..=total.min(RESYNC_WINDOW))
            .map(|ka| (ka, total - ka))
            .filter(|&(_, kb)| kb <= RESYNC_WINDOW)
            .filter(|&(ka, kb)| i + ka <= a.len() && j + kb <= b.len())
            .find(|&(ka, kb)| agree(i + ka, j + kb))
    })
}

/// A list of calls, shortened.
fn listed(calls: &[Call]) -> String {
    let mut s: Vec<String> = calls.iter().take(8).map(|c| c.command.clone()).collect();
    if calls.len() > 8 {
        s.push(format!("... ({} in all)", calls.len()));
    }
    s.join(", ")
}

/// Compares two streams of calls: calls with the same command side by
/// side, field by field; where the commands part, the calls one stream
/// has and the other has not, until they meet again ([`meeting`]).
/// Differences go to `report`, up to `max` in all. `remap` learns the
/// handles B's replies make for A's.
fn walk(
    a: &[Call],
    b: &[Call],
    remap: &mut Remap,
    luid_for: &dyn Fn(WinLuid) -> WinLuid,
    report: &mut DiffReport,
    max: usize,
) {
    let (mut i, mut j) = (0, 0);
    while (i < a.len() || j < b.len()) && report.differences.len() < max {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.command == y.command => {
                report.calls += 1;
                if let Some(d) = compare_calls(x, y, remap, luid_for) {
                    report.differences.push(d);
                }
                i += 1;
                j += 1;
                continue;
            }
            _ => {}
        }
        let (ka, kb) = meeting(a, b, i, j).unwrap_or((a.len() - i, b.len() - j));
        let (only_a, only_b) = (&a[i..i + ka], &b[j..j + kb]);
        let none = || "(none)".to_string();
        let count = |n: usize| format!("{n} call(s)");
        report.differences.push(Difference {
            index_a: only_a.first().map(|c| c.request.index),
            index_b: only_b.first().map(|c| c.request.index),
            command: only_a
                .first()
                .or(only_b.first())
                .map_or_else(none, |c| c.command.clone()),
            what: match (ka, kb) {
                (_, 0) => format!("only in A: {}", count(ka)),
                (0, _) => format!("only in B: {}", count(kb)),
                _ => format!("A has {} where B has {}", count(ka), count(kb)),
            },
            a: if ka == 0 { none() } else { listed(only_a) },
            b: if kb == 0 { none() } else { listed(only_b) },
        });
        i += ka;
        j += kb;
    }
}

/// Compares two calls of the same command: the request (A's handles taken
/// to B's), then the reply, as a replay compares its own.
fn compare_calls(
    a: &Call,
    b: &Call,
    remap: &mut Remap,
    luid_for: &dyn Fn(WinLuid) -> WinLuid,
) -> Option<Difference> {
    let found = |d: Found| Difference {
        index_a: Some(a.request.index),
        index_b: Some(b.request.index),
        command: a.command.clone(),
        what: d.0,
        a: d.1,
        b: d.2,
    };
    let (ra, rb) = match compare_requests(a.request.frame, b.request.frame, remap, luid_for) {
        Ok(r) => r,
        Err(d) => return Some(found(d)),
    };
    let (fa, fb) = match (a.reply, b.reply) {
        (Some(x), Some(y)) => (x.frame, y.frame),
        (None, None) => return None,
        (x, y) => {
            let has = |m: Option<&Message>| if m.is_some() { "a reply" } else { "no reply" };
            return Some(found(("reply".into(), has(x).into(), has(y).into())));
        }
    };
    let index = |d: Difference| Difference {
        index_a: a.reply.map(|m| m.index),
        index_b: b.reply.map(|m| m.index),
        ..d
    };
    // B's reply as the outcome a replay would have had.
    let outcome = match Frame::parse(fb, FrameKind::Reply) {
        Err(e) => Err(e.status()),
        Ok(f) if f.header.status != NtStatus::SUCCESS => Err(f.header.status),
        Ok(f) => match &rb {
            Some(rb) => Reply::decode(rb, f.payload).map_err(|_| NtStatus::INVALID_PARAMETER),
            None => Err(f.header.status),
        },
    };
    // Guest addresses in B's reply are taken as A's (another boot).
    let outcome = outcome.map(|mut r| {
        if let (Some(ra), Ok(f)) = (&ra, Frame::parse(fa, FrameKind::Reply)) {
            if let Ok(recorded) = Reply::decode(ra, f.payload) {
                with_guest_addresses_of(&recorded, &mut r);
            }
        }
        r
    });
    let cur = Current {
        index: a.request.index,
        name: a.command.clone(),
        process: 0,
        recorded: ra,
        outcome,
    };
    // Satisfied at once or later: timing, whichever run.
    let mut on_wait = |_: CpuWait| -> Diff { None };
    compare(&cur, fa, remap, &mut on_wait).map(|d| index(found(d)))
}

/// A recording's calls by the guest process that sent them (its handle
/// in the command header; 0 for global commands sent before a process
/// has one), in the order each process first appears: processes that run
/// at once interleave differently from run to run, each one's own
/// requests do not.
fn streams<'a>(calls: &'a [Message<'a>]) -> Vec<(u32, Vec<Call<'a>>)> {
    let mut out: Vec<(u32, Vec<Call>)> = Vec::new();
    let mut last: Option<usize> = None;
    for m in calls {
        if m.reply {
            // The reply of the request just before it, if that has none.
            if let Some(c) = last
                .and_then(|s| out[s].1.last_mut())
                .filter(|c| c.reply.is_none())
            {
                c.reply = Some(m);
            }
            continue;
        }
        let process = crate::recorder::frame_process(m.frame);
        let call = Call {
            request: m,
            reply: None,
            command: raw_name(m.frame, FrameKind::Request),
        };
        let s = match out.iter().position(|(p, _)| *p == process) {
            Some(s) => s,
            None => {
                out.push((process, Vec::new()));
                out.len() - 1
            }
        };
        out[s].1.push(call);
        last = Some(s);
    }
    out
}

/// Compares recording `b` with recording `a`, but for requests and
/// events whose command name contains one of `skip` (lower case), and
/// those requests' replies; reports up to `max` differences of calls.
pub fn diff(
    (header_a, records_a): (&TraceHeader, &[Located]),
    (header_b, records_b): (&TraceHeader, &[Located]),
    skip: &[String],
    max: usize,
) -> DiffReport {
    let skip: Vec<String> = skip.iter().map(|s| s.to_ascii_lowercase()).collect();
    let (calls_a, events_a) = messages(records_a, &skip);
    let (calls_b, events_b) = messages(records_b, &skip);
    let mut report = DiffReport::default();
    let (count_a, count_b) = (counts(&calls_a, &events_a), counts(&calls_b, &events_b));
    for k in count_a
        .keys()
        .chain(count_b.keys().filter(|k| !count_a.contains_key(*k)))
    {
        let (a, b) = (
            count_a.get(k).copied().unwrap_or(0),
            count_b.get(k).copied().unwrap_or(0),
        );
        if a != b {
            report.counts.push(CountDifference {
                command: k.clone(),
                a,
                b,
            });
        }
    }
    let luid_for = |l: WinLuid| -> WinLuid {
        header_a
            .adapters
            .iter()
            .position(|x| x.luid == l)
            .and_then(|i| header_b.adapters.get(i))
            .map_or(l, |x| x.luid)
    };
    report.counts.sort_by(|x, y| x.command.cmp(&y.command));
    let mut remap = Remap::default();
    // Process by process, paired through the handles the global stream's
    // CREATEPROCESS replies made (it comes first).
    let (streams_a, mut streams_b) = (streams(&calls_a), streams(&calls_b));
    for (pa, sa) in &streams_a {
        let pb = remap.get(dxvmm_protocol::abi::D3dkmtHandle(*pa)).0;
        let sb = match streams_b.iter().position(|(p, _)| *p == pb) {
            Some(i) => streams_b.swap_remove(i).1,
            None => Vec::new(),
        };
        walk(sa, &sb, &mut remap, &luid_for, &mut report, max);
    }
    // Processes only B has.
    for (_, sb) in &streams_b {
        walk(&[], sb, &mut remap, &luid_for, &mut report, max);
    }
    {
        // Events, as a set per process and kind: when each arrives is
        // timing.
        let mut ka: Vec<_> = events_a
            .iter()
            .map(|e| (event_key(e.frame, Some(&remap)), e.index))
            .collect();
        let mut kb: Vec<_> = events_b
            .iter()
            .map(|e| (event_key(e.frame, None), e.index))
            .collect();
        ka.sort();
        kb.sort();
        report.events = ka.len().min(kb.len()) as u64;
        let first = ka
            .iter()
            .map(Some)
            .chain(std::iter::repeat(None))
            .zip(kb.iter().map(Some).chain(std::iter::repeat(None)))
            .take(ka.len().max(kb.len()))
            .find(|(x, y)| x.map(|x| &x.0) != y.map(|y| &y.0));
        if let Some((x, y)) = first {
            let show = |e: Option<&(EventKey, u64)>| {
                e.map_or_else(
                    || "(none)".to_string(),
                    |((kind, p, rest), _)| format!("{kind} process {p:#x} {}", hex(rest)),
                )
            };
            let command = x.or(y).map_or(String::new(), |e| e.0 .0.clone());
            report.differences.push(Difference {
                index_a: x.map(|e| e.1),
                index_b: y.map(|e| e.1),
                command,
                what:
                    "host event (the first, in order of process and content, that only one run has)"
                        .into(),
                a: show(x),
                b: show(y),
            });
        }
    }
    report
}

fn hex(b: &[u8]) -> String {
    let end = b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
    let mut s: String = b[..end.min(32)]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    if end > 32 {
        s.push_str("...");
    }
    if s.is_empty() {
        s.push_str("zeros");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Record;
    use dxvmm_protocol::frame::encode_frame;

    fn corpus(name: &str) -> (TraceHeader, Vec<Located>) {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(name);
        crate::read_all(&p).unwrap()
    }

    #[test]
    fn a_recording_is_like_itself() {
        for name in ["compute.dxtrace", "roundtrip.dxtrace"] {
            let (h, r) = corpus(name);
            let report = diff((&h, &r), (&h, &r), &[], 20);
            assert_eq!(report.differences, vec![], "{name}");
            assert!(report.calls > 0 && report.counts.is_empty());
        }
    }

    /// B is A with one submit's stream length changed: the diff names
    /// that request and the field; leaving submits out, B is like A.
    #[test]
    fn a_changed_field_is_named_where_it_first_differs() {
        let (h, a) = corpus("compute.dxtrace");
        let mut b = a.clone();
        let mut changed = None;
        for l in b.iter_mut() {
            let Record::Request { frame, .. } = &mut l.record else {
                continue;
            };
            let f = Frame::parse(frame, FrameKind::Request).unwrap();
            let (id, luid) = (f.header.request_id, f.header.vgpu_luid);
            if let Ok(Request::SubmitCommand {
                mut cmd,
                history_buffers,
                priv_drv_data,
            }) = Request::decode(f.payload)
            {
                cmd.args.command_length += 4;
                let r = Request::SubmitCommand {
                    cmd,
                    history_buffers,
                    priv_drv_data,
                };
                *frame = encode_frame(FrameKind::Request, id, luid, NtStatus::SUCCESS, &r.encode());
                changed = Some(l.index);
                break;
            }
        }
        let report = diff((&h, &a), (&h, &b), &[], 20);
        assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
        let d = &report.differences[0];
        assert_eq!((d.index_a, d.index_b), (changed, changed));
        assert_eq!(d.command, "SUBMITCOMMAND");
        assert!(d.what.ends_with("command_length"), "{d}");
        assert_eq!(d.b.parse::<u64>().unwrap(), d.a.parse::<u64>().unwrap() + 4);
        let skipped = diff((&h, &a), (&h, &b), &["submitcommand".into()], 20);
        assert_eq!(skipped.differences, vec![]);
    }

    /// B is A with its processes' requests one process after the other
    /// instead of interleaved: alike, process by process.
    #[test]
    fn processes_are_compared_each_in_its_own_order() {
        let (h, a) = corpus("procs.dxtrace");
        let mut by_process: Vec<(u32, Vec<Located>)> = Vec::new();
        let mut process = 0;
        for l in &a {
            match &l.record {
                Record::Request { frame, .. } => process = crate::recorder::frame_process(frame),
                Record::Reply { .. } => {}
                _ => continue,
            }
            match by_process.iter_mut().find(|(p, _)| *p == process) {
                Some((_, v)) => v.push(l.clone()),
                None => by_process.push((process, vec![l.clone()])),
            }
        }
        assert!(by_process.len() >= 3, "a trace of several processes");
        let b: Vec<Located> = by_process.into_iter().flat_map(|(_, v)| v).collect();
        assert!(b.iter().map(|l| l.index).ne(a.iter().map(|l| l.index)));
        let report = diff((&h, &a), (&h, &b), &[], 20);
        assert_eq!(report.differences, vec![]);
    }

    /// B is A without one of its calls: that call is the one difference,
    /// and the rest are compared side by side again after it.
    #[test]
    fn a_call_only_one_recording_has_is_named_and_the_rest_still_compared() {
        let (h, a) = corpus("compute.dxtrace");
        let name = |l: &Located| match &l.record {
            Record::Request { frame, .. } => raw_name(frame, FrameKind::Request),
            _ => String::new(),
        };
        let waits: Vec<usize> = (0..a.len())
            .filter(|&i| name(&a[i]) == "WAITFORSYNCOBJECTFROMCPU")
            .collect();
        let gone = waits[waits.len() / 2];
        assert!(matches!(a[gone + 1].record, Record::Reply { .. }));
        let b: Vec<Located> = a
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != gone && *i != gone + 1)
            .map(|(_, l)| l.clone())
            .collect();
        let all = diff((&h, &a), (&h, &a), &[], 20).calls;
        let report = diff((&h, &a), (&h, &b), &[], 20);
        assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
        let d = &report.differences[0];
        assert_eq!(d.what, "only in A: 1 call(s)");
        assert_eq!(d.command, "WAITFORSYNCOBJECTFROMCPU");
        assert_eq!(d.index_a, Some(a[gone].index));
        assert_eq!(report.calls, all - 1);
    }

    /// B stops early, and has one request fewer: the count and where A
    /// goes on.
    #[test]
    fn a_shorter_recording_ends_where_the_other_goes_on() {
        let (h, a) = corpus("roundtrip.dxtrace");
        let cut = a.len() / 2;
        let b = a[..cut].to_vec();
        let report = diff((&h, &a), (&h, &b), &[], 20);
        let d = report.differences.last().expect("a difference");
        assert!(d.what.starts_with("only in A"), "{d}");
        assert!(d.index_a.is_some() && d.index_b.is_none());
        assert!(!report.counts.is_empty());
    }
}
