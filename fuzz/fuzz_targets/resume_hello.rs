//! Arbitrary bytes as the first frames of a connection that asks to resume a real, resumable
//! session: the hello is parsed and checked, and a resume request is finished against that
//! session (proof, ticket, index). It must refuse or resume, never panic, and a refused resume
//! must leave the session able to be resumed.
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use std::sync::{Arc, LazyLock};

use bytes::BytesMut;
use fixture::NOW;
use janus_protocol::handshake::{Mode, Redeemable, ResumeOffer, ServerHandshakeConfig};
use janus_protocol::session::{ClientSession, ServerEvent, ServerSession, SessionConfig};
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<Arc<ServerHandshakeConfig>> = LazyLock::new(fixture::server_config);

fn offer(ticket: &[u8]) -> ResumeOffer {
    ResumeOffer {
        ticket: ticket.to_vec(),
        window_secs: 30,
    }
}

/// A session whose client asked for, and got, a ticket.
fn resumable() -> ServerSession {
    let client = fixture::client_config(Mode::V2, true);
    let mut hello = BytesMut::new();
    ClientSession::start(
        client,
        SessionConfig::default(),
        &fixture::token(false),
        NOW,
        &mut hello,
    )
    .unwrap();
    let mut server = ServerSession::new(CONFIG.clone(), SessionConfig::default())
        .with_tickets(Arc::new(offer(b"ticket-1")));
    server.poll(&mut hello, NOW, &mut BytesMut::new()).unwrap();
    assert!(server.resume_key().is_some());
    server
}

fuzz_target!(|data: &[u8]| {
    let session = resumable();
    let mut held = Redeemable {
        ticket: session.resume_ticket().unwrap().to_vec(),
        key: *session.resume_key().unwrap(),
    };
    let before = held.clone();
    let mut fresh = ServerSession::new(CONFIG.clone(), SessionConfig::default());
    let mut input = BytesMut::from(data);
    let mut out = BytesMut::new();
    while let Ok(Some(event)) = fresh.poll(&mut input, NOW, &mut out) {
        if let ServerEvent::ResumeRequested { .. } = event {
            let claim = fresh.pending_resume().unwrap().claim();
            let key = fresh.prepare_resume(offer(b"ticket-2")).unwrap();
            let next = Redeemable {
                ticket: b"ticket-2".to_vec(),
                key,
            };
            let redeemed = held.redeem(&claim, next);
            assert_eq!(
                redeemed.is_err(),
                held == before,
                "only a redeemed resume spends the ticket"
            );
            if redeemed.is_ok() {
                fresh
                    .complete_resume(session.identity().unwrap().clone(), 1, &mut out)
                    .unwrap();
            }
        }
    }
});
