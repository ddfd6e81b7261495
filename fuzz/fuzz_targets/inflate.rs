//! Arbitrary bytes as zlib data: inflation must stay under the cap or fail with a typed error.
#![no_main]

use janus_protocol::compress::Compression;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cap = Compression {
        threshold: usize::MAX,
        max_inflated: 64 * 1024,
    };
    if let Ok(out) = cap.inflate(data) {
        assert!(out.len() <= cap.max_inflated);
    }
});
