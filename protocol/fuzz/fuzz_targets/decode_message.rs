//! Feeds arbitrary bytes to every GPU-PV message decoder, as the device
//! receives them from an untrusted guest: a frame, the command in it, a
//! reply paired with that command, and host events. Nothing may panic, and
//! whatever decodes must re-encode to the same bytes.
#![no_main]

use dxvmm_protocol::frame::{Frame, FrameKind};
use dxvmm_protocol::{HostEvent, Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a split so that one input can carry a request
    // and a reply payload.
    let (split, rest) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s) * 4, rest),
        None => return,
    };
    let (req_bytes, reply_bytes) = rest.split_at(split.min(rest.len()));

    if let Ok(frame) = Frame::parse(req_bytes, FrameKind::Request) {
        let _ = Request::decode(frame.payload);
    }
    if let Ok(req) = Request::decode(req_bytes) {
        assert_eq!(req.encode(), req_bytes);
        if let Ok(reply) = Reply::decode(&req, reply_bytes) {
            assert_eq!(reply.encode(), reply_bytes);
        }
    }
    if let Ok(event) = HostEvent::decode(rest) {
        assert_eq!(event.encode(), rest);
    }
});
