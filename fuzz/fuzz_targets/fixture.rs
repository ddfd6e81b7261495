//! Keys, configurations and tokens the fuzz targets share (included with `#[path]` by each
//! target): a server that accepts every handshake mode, clients of it, tokens it opens.

use std::sync::Arc;

use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_protocol::handshake::{ClientHandshakeConfig, Mode, ServerHandshakeConfig};
use janus_protocol::keys::{SigningKey, TokenKey};
use janus_protocol::token::TokenCodec;

/// The clock of every run.
pub const NOW: i64 = 1_700_000_000;

fn signing_key() -> SigningKey {
    SigningKey::from_seed(&[1; 32])
}

fn tokens() -> TokenCodec {
    TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap())
}

/// A server with v2, legacy and unencrypted sessions all enabled, so every path is reachable.
pub fn server_config() -> Arc<ServerHandshakeConfig> {
    Arc::new(ServerHandshakeConfig {
        signing_key: signing_key(),
        tokens: tokens(),
        client_cert: None,
        allowed_statuses: vec![OnlineStatus::Gate as i32],
        max_skew_secs: 5,
        allow_legacy: true,
        allow_unencrypted: true,
        cert_version: 0,
        other_signing_keys: Default::default(),
    })
}

/// A client of that server.
#[allow(dead_code, reason = "not every target makes a client")]
pub fn client_config(mode: Mode, resumable: bool) -> ClientHandshakeConfig {
    ClientHandshakeConfig {
        server_key: signing_key().verifying_key(),
        client_key: None,
        mode,
        server_id: 0,
        cert_version: 0,
        resumable,
    }
}

/// A GATE token for player 7, valid at [`NOW`], asking for an unencrypted session or not.
#[allow(dead_code, reason = "not every target makes a client")]
pub fn token(unencrypted: bool) -> String {
    tokens().seal(&AuthToken {
        account_id: 7,
        timeout: NOW + 600,
        status: OnlineStatus::Gate as i32,
        unencrypted,
        ..Default::default()
    })
}
