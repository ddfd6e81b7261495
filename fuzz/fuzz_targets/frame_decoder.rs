//! Arbitrary bytes into the stream frame decoder and the message frame decoder: every outcome
//! is a bounded frame, "need more", or a typed error.
#![no_main]

use bytes::{Bytes, BytesMut};
use janus_protocol::frame;
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(payload)) = frame::decode(&mut buf, MAX) {
        assert!(!payload.is_empty() && payload.len() <= MAX);
    }
    if let Ok(payload) = frame::decode_message(Bytes::copy_from_slice(data), MAX) {
        assert_eq!(payload.len() + frame::HEADER_LEN, data.len());
    }
});
