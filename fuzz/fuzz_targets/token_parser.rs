//! Arbitrary strings as tokens: base64, length, AES-GCM and protobuf checks must all fail
//! cleanly.
#![no_main]

use std::sync::LazyLock;

use janus_protocol::keys::TokenKey;
use janus_protocol::token::{self, TokenCodec};
use libfuzzer_sys::fuzz_target;

static CODEC: LazyLock<TokenCodec> =
    LazyLock::new(|| TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap()));

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(claims) = CODEC.open(text)
    {
        let _ = token::check(&claims, 1_700_000_000, &[1]);
    }
});
