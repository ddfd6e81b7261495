//! Arbitrary bytes as a client's first frames into a server session (v2, legacy and unencrypted
//! all enabled, so every parser path is reachable): it must refuse or accept, never panic.
#![no_main]

use std::sync::{Arc, LazyLock};

use bytes::BytesMut;
use janus_proto::gate::intra::v1::OnlineStatus;
use janus_shared::handshake::ServerHandshakeConfig;
use janus_shared::keys::{SigningKey, TokenKey};
use janus_shared::session::{ServerSession, SessionConfig};
use janus_shared::token::TokenCodec;
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<Arc<ServerHandshakeConfig>> = LazyLock::new(|| {
    Arc::new(ServerHandshakeConfig {
        signing_key: SigningKey::from_seed(&[1; 32]),
        tokens: TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap()),
        client_cert: None,
        allowed_statuses: vec![OnlineStatus::Gate as i32],
        max_skew_secs: 5,
        allow_legacy: true,
        allow_unencrypted: true,
        cert_version: 0,
    })
});

fuzz_target!(|data: &[u8]| {
    let mut session = ServerSession::new(CONFIG.clone(), SessionConfig::default());
    let mut input = BytesMut::from(data);
    let mut out = BytesMut::new();
    while let Ok(Some(_)) = session.poll(&mut input, 1_700_000_000, &mut out) {}
});
