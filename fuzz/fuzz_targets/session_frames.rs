//! Arbitrary bytes as the frames a client sends after a successful handshake. The session is
//! unencrypted (the token asks for it and the server allows it) so the fuzzer reaches what sits
//! behind the AES-GCM tag check in production: the packet decoder, the index rule, inflation of
//! compressed packets and System-module handling. Every outcome is an event or a typed error.
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use std::sync::{Arc, LazyLock};

use bytes::BytesMut;
use fixture::NOW;
use janus_protocol::handshake::{Mode, ServerHandshakeConfig};
use janus_protocol::session::{ClientSession, ServerEvent, ServerSession, SessionConfig};
use libfuzzer_sys::fuzz_target;

/// The server configuration and one client hello, made once so every run is deterministic.
static SETUP: LazyLock<(Arc<ServerHandshakeConfig>, BytesMut)> = LazyLock::new(|| {
    let client = fixture::client_config(Mode::Unencrypted, false);
    let mut hello = BytesMut::new();
    ClientSession::start(
        client,
        SessionConfig::default(),
        &fixture::token(true),
        NOW,
        &mut hello,
    )
    .unwrap();
    (fixture::server_config(), hello)
});

fuzz_target!(|data: &[u8]| {
    let (config, hello) = &*SETUP;
    let mut session = ServerSession::new(config.clone(), SessionConfig::default());
    let mut input = hello.clone();
    let mut out = BytesMut::new();
    let established = session.poll(&mut input, NOW, &mut out);
    assert!(
        matches!(established, Ok(Some(ServerEvent::Established(_)))),
        "the fixed handshake must succeed: {established:?}"
    );
    input.extend_from_slice(data);
    while let Ok(Some(_)) = session.poll(&mut input, NOW, &mut out) {}
});
