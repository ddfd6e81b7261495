//! Arbitrary bytes as the frames a client sends after a successful handshake. The session is
//! unencrypted (the token asks for it and the server allows it) so the fuzzer reaches what sits
//! behind the AES-GCM tag check in production: the packet decoder, the index rule, inflation of
//! compressed packets and System-module handling. Every outcome is an event or a typed error.
#![no_main]

use std::sync::{Arc, LazyLock};

use bytes::BytesMut;
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_shared::handshake::{ClientHandshakeConfig, Mode, ServerHandshakeConfig};
use janus_shared::keys::{SigningKey, TokenKey};
use janus_shared::session::{ClientSession, ServerEvent, ServerSession, SessionConfig};
use janus_shared::token::TokenCodec;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

/// The server configuration and one client hello, made once so every run is deterministic.
static SETUP: LazyLock<(Arc<ServerHandshakeConfig>, BytesMut)> = LazyLock::new(|| {
    let signing_key = SigningKey::from_seed(&[1; 32]);
    let tokens = TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap());
    let token = tokens.seal(&AuthToken {
        account_id: 7,
        timeout: NOW + 600,
        status: OnlineStatus::Gate as i32,
        unencrypted: true,
        ..Default::default()
    });
    let client = ClientHandshakeConfig {
        server_key: signing_key.verifying_key(),
        client_key: None,
        mode: Mode::Unencrypted,
        server_id: 0,
        cert_version: 0,
        resumable: false,
    };
    let mut hello = BytesMut::new();
    ClientSession::start(client, SessionConfig::default(), &token, NOW, &mut hello).unwrap();
    let server = ServerHandshakeConfig {
        signing_key,
        tokens,
        client_cert: None,
        allowed_statuses: vec![OnlineStatus::Gate as i32],
        max_skew_secs: 5,
        allow_legacy: false,
        allow_unencrypted: true,
        cert_version: 0,
    };
    (Arc::new(server), hello)
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
