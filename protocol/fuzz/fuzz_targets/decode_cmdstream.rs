//! Feeds arbitrary bytes to the command stream and escape decoders, which
//! read guest memory the host backend then acts on.
#![no_main]

use dxvmm_protocol::cmdstream::CommandStream;
use dxvmm_protocol::escape::{EscapeRequest, EscapeResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(stream) = CommandStream::decode(data) {
        assert_eq!(stream.encode(), data);
    }
    if let Ok(req) = EscapeRequest::decode(data) {
        let resp = EscapeResponse {
            status: dxvmm_protocol::NtStatus::SUCCESS,
            pipeline: 1,
            error: "x".repeat(data.len() % 64),
        };
        let out = resp.encode_into_request(data).expect("a decoded request takes a response");
        assert_eq!(out.len(), data.len());
        let _ = req;
    }
    let _ = EscapeResponse::decode(data);
});
