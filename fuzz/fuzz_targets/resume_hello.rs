//! Arbitrary bytes as the first frames of a connection that asks to resume a real, resumable
//! session: the hello is parsed and checked, and a resume request is finished against that
//! session (proof, ticket, index). It must refuse or resume, never panic, and a refused resume
//! must leave the session able to be resumed.
#![no_main]

use std::sync::{Arc, LazyLock};

use bytes::BytesMut;
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_shared::handshake::{ClientHandshakeConfig, Mode, ResumeOffer, ServerHandshakeConfig};
use janus_shared::keys::{SigningKey, TokenKey};
use janus_shared::session::{ClientSession, ServerEvent, ServerSession, SessionConfig};
use janus_shared::token::TokenCodec;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

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

fn offer(ticket: &[u8]) -> ResumeOffer {
    ResumeOffer {
        ticket: ticket.to_vec(),
        window_secs: 30,
    }
}

/// A session whose client asked for, and got, a ticket.
fn resumable() -> ServerSession {
    let client = ClientHandshakeConfig {
        server_key: SigningKey::from_seed(&[1; 32]).verifying_key(),
        client_key: None,
        mode: Mode::V2,
        server_id: 0,
        cert_version: 0,
        resumable: true,
    };
    let token = TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap()).seal(&AuthToken {
        account_id: 1,
        timeout: NOW + 600,
        status: OnlineStatus::Gate as i32,
        ..Default::default()
    });
    let mut hello = BytesMut::new();
    ClientSession::start(client, SessionConfig::default(), &token, NOW, &mut hello).unwrap();
    let mut server = ServerSession::new(CONFIG.clone(), SessionConfig::default())
        .with_resume_offer(offer(b"ticket-1"));
    server.poll(&mut hello, NOW, &mut BytesMut::new()).unwrap();
    assert!(server.resume_key().is_some());
    server
}

fuzz_target!(|data: &[u8]| {
    let mut session = resumable();
    let mut fresh = ServerSession::new(CONFIG.clone(), SessionConfig::default());
    let mut input = BytesMut::from(data);
    let mut out = BytesMut::new();
    while let Ok(Some(event)) = fresh.poll(&mut input, NOW, &mut out) {
        if let ServerEvent::ResumeRequested { .. } = event {
            let finished = fresh.finish_resume(&mut session, &offer(b"ticket-2"), &mut out);
            assert_eq!(
                finished.is_err(),
                session.resume_key().is_some(),
                "only a finished resume spends the ticket"
            );
        }
    }
});
