//! Arbitrary bytes as a client's first frames into a server session (v2, legacy and unencrypted
//! all enabled, so every parser path is reachable): it must refuse or accept, never panic.
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use std::sync::{Arc, LazyLock};

use bytes::BytesMut;
use janus_protocol::handshake::ServerHandshakeConfig;
use janus_protocol::session::{ServerSession, SessionConfig};
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<Arc<ServerHandshakeConfig>> = LazyLock::new(fixture::server_config);

fuzz_target!(|data: &[u8]| {
    let mut session = ServerSession::new(CONFIG.clone(), SessionConfig::default());
    let mut input = BytesMut::from(data);
    let mut out = BytesMut::new();
    while let Ok(Some(_)) = session.poll(&mut input, fixture::NOW, &mut out) {}
});
