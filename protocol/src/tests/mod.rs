//! Tests of the encodings: golden byte vectors written out by hand from the
//! C layouts, round trips, and decoders fed bad input.

mod bytes;
mod golden_abi;
mod golden_messages;
mod golden_streams;
mod robustness;
mod roundtrip;
