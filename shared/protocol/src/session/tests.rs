//! Both ends of a session driven against each other in memory: every handshake check and every
//! failure after it.

use std::sync::Arc;

use bytes::BytesMut;
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_proto::message::{CsHandshake, ScHandshake};
use janus_proto::packet::Packet;
use prost::Message;

use super::*;
use crate::handshake::{
    ClientHandshakeConfig, HandshakeKeys, Mode, Redeemable, ServerHandshakeConfig,
};
use crate::keys::{SigningKey, TokenKey};
use crate::system;
use crate::token::{OpenedUnder, TokenCodec};

const NOW: i64 = 1_700_000_000;

struct Fixture {
    server: ServerHandshakeConfig,
    client: ClientHandshakeConfig,
    tokens: TokenCodec,
    claims: AuthToken,
}

fn fixture() -> Fixture {
    let signing_key = SigningKey::from_seed(&[1; 32]);
    let tokens = TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap());
    Fixture {
        client: ClientHandshakeConfig {
            server_key: signing_key.verifying_key(),
            client_key: None,
            mode: Mode::V2,
            server_id: 0,
            cert_version: 1,
            resumable: false,
        },
        server: ServerHandshakeConfig {
            signing_key,
            tokens: tokens.clone(),
            client_cert: None,
            allowed_statuses: vec![OnlineStatus::Gate as i32],
            max_skew_secs: 5,
            allow_legacy: false,
            allow_unencrypted: false,
            cert_version: 1,
            other_signing_keys: Default::default(),
        },
        tokens,
        claims: AuthToken {
            rand: "x".into(),
            color: "blue".into(),
            account_id: 1001,
            server_id: 9,
            timeout: NOW + 600,
            location: 0,
            status: OnlineStatus::Gate as i32,
            unencrypted: false,
        },
    }
}

struct Pair {
    server: ServerSession,
    client: ClientSession,
    /// Bytes in flight client → server and server → client.
    c2s: BytesMut,
    s2c: BytesMut,
}

impl Fixture {
    fn token(&self) -> String {
        self.tokens.seal(&self.claims)
    }

    fn start(&self) -> Pair {
        let mut c2s = BytesMut::new();
        let client = ClientSession::start(
            self.client.clone(),
            SessionConfig::default(),
            &self.token(),
            NOW,
            &mut c2s,
        )
        .unwrap();
        Pair {
            server: ServerSession::new(Arc::new(self.server.clone()), SessionConfig::default()),
            client,
            c2s,
            s2c: BytesMut::new(),
        }
    }

    /// Runs the handshake to completion and returns the established pair.
    fn established(&self) -> Pair {
        let mut pair = self.start();
        let event = pair.server_poll().unwrap().unwrap();
        assert!(matches!(event, ServerEvent::Established(_)));
        let event = pair.client.poll(&mut pair.s2c).unwrap().unwrap();
        assert!(matches!(
            event,
            ClientEvent::Established {
                start_index: 1,
                server_time: NOW,
                resumed: false
            }
        ));
        pair
    }

    /// The server's verdict on a hello rewritten by `edit`.
    fn accept_edited(&self, edit: impl FnOnce(&mut CsHandshake)) -> Result<ServerEvent> {
        let mut pair = self.start();
        let payload = frame::decode(&mut pair.c2s, frame::DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap();
        let mut packet = Packet::decode(&payload[..]).unwrap();
        let mut hello = CsHandshake::decode(&packet.data[..]).unwrap();
        edit(&mut hello);
        packet.data = hello.encode_to_vec();
        let mut out = BytesMut::new();
        let result =
            pair.server
                .handle_frame(BytesMut::from(&packet.encode_to_vec()[..]), NOW, &mut out);
        if result.is_err() {
            assert!(out.is_empty(), "a refused handshake sends nothing");
        }
        result
    }
}

impl Pair {
    fn server_poll(&mut self) -> Result<Option<ServerEvent>> {
        self.server.poll(&mut self.c2s, NOW, &mut self.s2c)
    }

    fn request(&mut self, data: &[u8]) -> i32 {
        let packet = Packet {
            r#mod: 3,
            seq: 1,
            data: data.to_vec(),
            ..Default::default()
        };
        self.client.send(packet, &mut self.c2s).unwrap()
    }
}

#[test]
fn v2_session_carries_requests_replies_and_pushes() {
    let f = fixture();
    let mut pair = f.established();
    let identity = pair.server.identity().unwrap().clone();
    assert_eq!(
        (
            identity.uid,
            identity.sid,
            identity.color.as_str(),
            identity.mode
        ),
        (1001, 9, "blue", Mode::V2)
    );
    assert_eq!(identity.token_expiry, NOW + 600);
    for i in 0..3 {
        let index = pair.request(format!("req {i}").as_bytes());
        assert_eq!(index, 1 + i);
        let Some(ServerEvent::Packet(req)) = pair.server_poll().unwrap() else {
            panic!("a packet")
        };
        assert_eq!(
            (req.index, req.data),
            (index, format!("req {i}").into_bytes())
        );
        pair.server
            .send(
                &Packet {
                    index,
                    data: b"reply".to_vec(),
                    ..Default::default()
                },
                &mut pair.s2c,
            )
            .unwrap();
        pair.server.send(&system::logout(4), &mut pair.s2c).unwrap();
        let Some(ClientEvent::Packet(reply)) = pair.client.poll(&mut pair.s2c).unwrap() else {
            panic!()
        };
        assert_eq!((reply.index, reply.data.as_slice()), (index, &b"reply"[..]));
        let Some(ClientEvent::Packet(push)) = pair.client.poll(&mut pair.s2c).unwrap() else {
            panic!()
        };
        assert_eq!((push.r#mod, push.seq, push.index), (1, 4, 0));
    }
    assert!(pair.server_poll().unwrap().is_none());
}

#[test]
fn legacy_and_unencrypted_sessions_work_when_enabled() {
    let mut f = fixture();
    f.server.allow_legacy = true;
    f.client.mode = Mode::Legacy;
    let mut pair = f.established();
    assert_eq!(pair.server.identity().unwrap().mode, Mode::Legacy);
    pair.request(b"old client");
    assert!(
        matches!(pair.server_poll().unwrap(), Some(ServerEvent::Packet(p)) if p.data == b"old client")
    );

    let mut f = fixture();
    f.server.allow_unencrypted = true;
    f.client.mode = Mode::Unencrypted;
    f.claims.unencrypted = true;
    let mut pair = f.established();
    assert_eq!(pair.server.identity().unwrap().mode, Mode::Unencrypted);
    pair.request(b"plain");
    assert!(
        pair.c2s.windows(5).any(|w| w == b"plain"),
        "really unencrypted on the wire"
    );
    assert!(
        matches!(pair.server_poll().unwrap(), Some(ServerEvent::Packet(p)) if p.data == b"plain")
    );
}

#[test]
fn modes_are_refused_unless_enabled() {
    let mut f = fixture();
    f.client.mode = Mode::Legacy;
    assert!(matches!(
        f.start().server_poll(),
        Err(Error::ModeNotAllowed("legacy"))
    ));
    let mut f = fixture();
    f.claims.unencrypted = true;
    assert!(matches!(
        f.start().server_poll(),
        Err(Error::ModeNotAllowed("unencrypted"))
    ));
    let f = fixture();
    assert!(matches!(
        f.accept_edited(|h| h.version = 3),
        Err(Error::UnknownVersion(3))
    ));
}

#[test]
fn token_problems_are_reported_as_such() {
    let mut f = fixture();
    f.claims.timeout = NOW - 1;
    assert!(matches!(
        f.start().server_poll(),
        Err(Error::TokenExpired { .. })
    ));
    let mut f = fixture();
    f.claims.status = OnlineStatus::Admin as i32;
    assert!(matches!(
        f.start().server_poll(),
        Err(Error::StatusNotAllowed(3))
    ));
    let f = fixture();
    let foreign = TokenCodec::new(&TokenKey::from_bytes(&[3; 32]).unwrap()).seal(&f.claims);
    assert!(matches!(
        f.accept_edited(|h| h.token = foreign),
        Err(Error::TokenInvalid(_))
    ));
}

#[test]
fn a_token_of_the_previous_key_logs_in_until_the_rollover_grace_ends() {
    let mut f = fixture();
    let previous = TokenKey::from_bytes(&[3; 32]).unwrap();
    let old = TokenCodec::new(&previous).seal(&f.claims);
    f.server.tokens = f.server.tokens.clone().with_previous(&previous, NOW + 1);
    let token = old.clone();
    assert!(matches!(
        f.accept_edited(|h| h.token = token),
        Ok(ServerEvent::Established(_))
    ));
    // The login says which key opened its token (the edge counts it, §6).
    let current = f.established();
    assert_eq!(
        current.server.handshake_keys().map(|k| k.token_key),
        Some(Some(OpenedUnder::Current))
    );
    let current_codec = std::mem::replace(&mut f.tokens, TokenCodec::new(&previous));
    assert_eq!(
        f.established().server.handshake_keys().map(|k| k.token_key),
        Some(Some(OpenedUnder::Previous))
    );
    f.tokens = current_codec;
    f.server.tokens = f.server.tokens.clone().with_previous(&previous, NOW);
    assert!(matches!(
        f.accept_edited(|h| h.token = old),
        Err(Error::TokenInvalid(_))
    ));
}

/// A server whose current key (version 2) is new, holding the old key (version 1) for the
/// clients that pin it (§3.4).
fn rolled_over(f: &mut Fixture) -> SigningKey {
    let old = f.server.signing_key.clone();
    f.server.signing_key = SigningKey::from_seed(&[4; 32]);
    f.server.cert_version = 2;
    f.server.other_signing_keys.insert(1, old.clone());
    old
}

/// The reply's `cert_version`, and whether the client took the reply.
fn answered(f: &Fixture) -> (i32, Result<Option<ClientEvent>>) {
    let mut pair = f.start();
    pair.server_poll().unwrap();
    let keys = pair.server.handshake_keys().expect("a login's keys");
    assert_eq!(keys.token_key, Some(OpenedUnder::Current));
    let mut frame = pair.s2c.clone();
    let reply = crate::frame::decode(&mut frame, 1 << 20)
        .unwrap()
        .expect("one frame");
    let packet = Packet::decode(&reply[..]).unwrap();
    let version = ScHandshake::decode(&packet.data[..]).unwrap().cert_version;
    assert_eq!(
        keys.cert_version, version,
        "the session says which key answered"
    );
    (version, pair.client.poll(&mut pair.s2c))
}

#[test]
fn a_client_is_answered_with_the_signing_key_its_cert_version_names() {
    let mut f = fixture();
    let old = rolled_over(&mut f);
    let new = f.server.signing_key.clone();
    // A client that ships the old key asks for version 1 and gets it, in both modes.
    f.client.server_key = old.verifying_key();
    let (version, event) = answered(&f);
    assert_eq!(version, 1);
    assert!(matches!(event, Ok(Some(ClientEvent::Established { .. }))));
    f.server.allow_legacy = true;
    f.client.mode = Mode::Legacy;
    assert!(matches!(
        answered(&f).1,
        Ok(Some(ClientEvent::Established { .. }))
    ));
    f.client.mode = Mode::V2;
    // One that ships the new key asks for 2, or for nothing (0), or for a version the edge does
    // not hold: the current key answers.
    f.client.server_key = new.verifying_key();
    for asked in [2, 0, 7] {
        f.client.cert_version = asked;
        let (version, event) = answered(&f);
        assert_eq!(version, 2, "asked for {asked}");
        assert!(matches!(event, Ok(Some(ClientEvent::Established { .. }))));
    }
    // A client that asks for 1 but ships the new key is refused by itself: no key is mixed up.
    f.client.cert_version = 1;
    assert!(matches!(answered(&f).1, Err(Error::BadServerSignature)));
}

#[test]
fn clock_skew_beyond_the_limit_is_refused_both_ways() {
    let f = fixture();
    assert!(f.accept_edited(|h| h.timestamp = NOW + 5).is_ok());
    assert!(f.accept_edited(|h| h.timestamp = NOW - 5).is_ok());
    assert!(matches!(
        f.accept_edited(|h| h.timestamp = NOW + 6),
        Err(Error::TimestampSkew {
            skew: 6,
            max: 5,
            ..
        })
    ));
    assert!(matches!(
        f.accept_edited(|h| h.timestamp = NOW - 6),
        Err(Error::TimestampSkew { skew: 6, .. })
    ));
    assert!(matches!(
        f.accept_edited(|h| h.timestamp = i64::MIN),
        Err(Error::TimestampSkew { .. })
    ));
}

#[test]
fn public_keys_are_checked() {
    let f = fixture();
    assert!(matches!(
        f.accept_edited(|h| h.r#pub.truncate(31)),
        Err(Error::BadPublicKeyLength(31))
    ));
    assert!(matches!(
        f.accept_edited(|h| h.r#pub.clear()),
        Err(Error::BadPublicKeyLength(0))
    ));
    assert!(matches!(
        f.accept_edited(|h| h.r#pub = vec![0; 32]),
        Err(Error::ZeroSharedSecret)
    ));
    // A low-order point (order 8 on Curve25519) also yields the zero secret.
    let mut low_order = [0u8; 32];
    low_order[0] = 1;
    assert!(matches!(
        f.accept_edited(|h| h.r#pub = low_order.to_vec()),
        Err(Error::ZeroSharedSecret)
    ));
}

#[test]
fn client_certificate_signatures_are_required_when_configured() {
    let client_key = SigningKey::from_seed(&[7; 32]);
    let mut f = fixture();
    f.server.client_cert = Some(client_key.verifying_key());
    assert!(
        matches!(f.start().server_poll(), Err(Error::BadClientSignature)),
        "unsigned"
    );
    f.client.client_key = Some(SigningKey::from_seed(&[8; 32]));
    assert!(
        matches!(f.start().server_poll(), Err(Error::BadClientSignature)),
        "wrong key"
    );
    f.client.client_key = Some(client_key);
    let mut pair = f.established();
    pair.request(b"signed");
    assert!(matches!(
        pair.server_poll().unwrap(),
        Some(ServerEvent::Packet(_))
    ));
}

#[test]
fn the_first_frame_must_be_a_handshake() {
    let f = fixture();
    let mut server = ServerSession::new(Arc::new(f.server.clone()), SessionConfig::default());
    let mut out = BytesMut::new();
    let heartbeat = Packet {
        r#mod: 1,
        seq: 2,
        ..Default::default()
    }
    .encode_to_vec();
    assert!(matches!(
        server.handle_frame(BytesMut::from(&heartbeat[..]), NOW, &mut out),
        Err(Error::NotHandshake { module: 1, seq: 2 })
    ));
    assert!(matches!(
        server.handle_frame(BytesMut::from(&[0xff, 0xff, 0xff][..]), NOW, &mut out),
        Err(Error::Decode { what: "packet", .. })
    ));
    let not_hello = system::packet(system::SEQ_HANDSHAKE, 0, vec![0xff; 3]).encode_to_vec();
    assert!(matches!(
        server.handle_frame(BytesMut::from(&not_hello[..]), NOW, &mut out),
        Err(Error::Decode {
            what: "CSHandshake",
            ..
        })
    ));
    assert!(matches!(
        server.send(&Packet::default(), &mut out),
        Err(Error::UnexpectedState(_))
    ));
    assert!(out.is_empty());
}

#[test]
fn the_index_must_follow_the_counter() {
    let f = fixture();
    let mut pair = f.established();
    pair.request(b"one");
    pair.server_poll().unwrap();
    let skipped = Packet {
        index: 5,
        ..Default::default()
    };
    pair.client.send_unchecked(skipped, &mut pair.c2s).unwrap();
    assert!(matches!(
        pair.server_poll(),
        Err(Error::IndexMismatch {
            expected: 2,
            got: 5
        })
    ));
}

#[test]
fn tampered_replayed_and_reordered_frames_end_the_session() {
    let f = fixture();
    let mut pair = f.established();
    pair.request(b"a");
    let replay = pair.c2s.clone();
    assert!(matches!(
        pair.server_poll(),
        Ok(Some(ServerEvent::Packet(_)))
    ));
    pair.c2s = replay;
    assert!(
        matches!(pair.server_poll(), Err(Error::Decrypt)),
        "replayed"
    );

    let mut pair = f.established();
    pair.request(b"a");
    pair.c2s.clear();
    pair.request(b"b");
    assert!(
        matches!(pair.server_poll(), Err(Error::Decrypt)),
        "first frame dropped"
    );

    let mut pair = f.established();
    pair.request(b"a");
    let last = pair.c2s.len() - 1;
    pair.c2s[last] ^= 0x80;
    assert!(
        matches!(pair.server_poll(), Err(Error::Decrypt)),
        "bit flipped"
    );
}

#[test]
fn a_forged_server_reply_is_refused_by_the_client() {
    let mut f = fixture();
    f.client.server_key = SigningKey::from_seed(&[9; 32]).verifying_key();
    let mut pair = f.start();
    pair.server_poll().unwrap();
    assert!(matches!(
        pair.client.poll(&mut pair.s2c),
        Err(Error::BadServerSignature)
    ));

    let mut f = fixture();
    f.server.allow_legacy = true;
    f.client.mode = Mode::Legacy;
    f.client.server_key = SigningKey::from_seed(&[9; 32]).verifying_key();
    let mut pair = f.start();
    pair.server_poll().unwrap();
    assert!(matches!(
        pair.client.poll(&mut pair.s2c),
        Err(Error::BadServerSignature)
    ));
}

#[test]
fn a_reply_with_a_bad_public_key_is_refused_by_the_client() {
    let f = fixture();
    let mut pair = f.start();
    pair.server_poll().unwrap();
    let payload = frame::decode(&mut pair.s2c, frame::DEFAULT_MAX_FRAME)
        .unwrap()
        .unwrap();
    let mut packet = Packet::decode(&payload[..]).unwrap();
    let mut reply = ScHandshake::decode(&packet.data[..]).unwrap();
    reply.r#pub = vec![0; 32];
    packet.data = reply.encode_to_vec();
    assert!(matches!(
        pair.client
            .handle_frame(BytesMut::from(&packet.encode_to_vec()[..])),
        Err(Error::ZeroSharedSecret)
    ));
}

#[test]
fn large_data_is_compressed_on_the_wire_and_bombs_are_refused() {
    let f = fixture();
    let mut pair = f.established();
    let big = vec![b'z'; 12_000];
    pair.server
        .send(
            &Packet {
                data: big.clone(),
                ..Default::default()
            },
            &mut pair.s2c,
        )
        .unwrap();
    assert!(pair.s2c.len() < 1_000, "12 KB of one byte compresses well");
    let Some(ClientEvent::Packet(got)) = pair.client.poll(&mut pair.s2c).unwrap() else {
        panic!()
    };
    assert_eq!((got.data, got.compress), (big, false));

    let bomb = crate::compress::Compression::deflate(&vec![0u8; 2 << 20]);
    let packet = Packet {
        data: bomb,
        compress: true,
        index: 1,
        ..Default::default()
    };
    pair.client.send_unchecked(packet, &mut pair.c2s).unwrap();
    assert!(matches!(
        pair.server_poll(),
        Err(Error::InflateTooLarge { .. })
    ));

    let mut pair = f.established();
    let packet = Packet {
        data: b"not zlib".to_vec(),
        compress: true,
        index: 1,
        ..Default::default()
    };
    pair.client.send_unchecked(packet, &mut pair.c2s).unwrap();
    assert!(matches!(pair.server_poll(), Err(Error::InflateCorrupt(_))));
}

#[test]
fn sid_comes_from_the_hello_when_given() {
    let mut f = fixture();
    f.client.server_id = 77;
    let pair = f.established();
    assert_eq!(pair.server.identity().unwrap().sid, 77);
}

#[test]
fn sends_before_the_handshake_are_refused() {
    let f = fixture();
    let mut pair = f.start();
    assert!(matches!(
        pair.client.send(Packet::default(), &mut pair.c2s),
        Err(Error::UnexpectedState(_))
    ));
}

/// A resumable v2 pair: the server offers `ticket`, the client asks for one.
fn resumable_pair(f: &mut Fixture, ticket: &[u8]) -> Pair {
    f.client.resumable = true;
    let mut pair = f.start();
    pair.server = ServerSession::new(Arc::new(f.server.clone()), SessionConfig::default())
        .with_tickets(Arc::new(ResumeOffer {
            ticket: ticket.to_vec(),
            window_secs: 30,
        }));
    assert!(matches!(
        pair.server_poll().unwrap(),
        Some(ServerEvent::Established(_))
    ));
    pair.client.poll(&mut pair.s2c).unwrap().unwrap();
    pair
}

/// Sends the client's resume hello to a fresh server session; returns it and the bytes.
fn resume_hello(pair: &mut Pair, f: &Fixture) -> ServerSession {
    let mut hello = BytesMut::new();
    pair.client.start_resume(NOW, &mut hello).unwrap();
    let mut fresh = ServerSession::new(Arc::new(f.server.clone()), SessionConfig::default());
    let mut out = BytesMut::new();
    let event = fresh.poll(&mut hello, NOW, &mut out).unwrap();
    assert!(
        matches!(event, Some(ServerEvent::ResumeRequested { .. })),
        "{event:?}"
    );
    assert!(
        out.is_empty(),
        "nothing is replied before the session decides"
    );
    fresh
}

/// What a session's holder keeps to decide a resume of `server`'s session.
fn holder(server: &ServerSession) -> Redeemable {
    Redeemable {
        ticket: server.resume_ticket().expect("a ticket").to_vec(),
        key: *server.resume_key().expect("a key"),
    }
}

/// What the holder of `previous`'s session does with the resume `fresh` was asked for: decides
/// it under `holder`, then `fresh` goes on with `previous`'s identity and index.
fn redeem(
    fresh: &mut ServerSession,
    holder: &mut Redeemable,
    previous: &ServerSession,
    next: &ResumeOffer,
    out: &mut BytesMut,
) -> Result<()> {
    let claim = fresh.pending_resume().expect("a resume hello").claim();
    let key = fresh.prepare_resume(next.clone())?;
    holder.redeem(
        &claim,
        Redeemable {
            ticket: next.ticket.clone(),
            key,
        },
    )?;
    fresh.complete_resume(
        previous.identity().unwrap().clone(),
        previous.next_index().unwrap(),
        out,
    )
}

#[test]
fn a_resumed_session_keeps_its_identity_and_indices_under_new_keys() {
    let mut f = fixture();
    let mut pair = resumable_pair(&mut f, b"ticket-1");
    let ticket = pair.client.resume_ticket().unwrap().clone();
    assert_eq!(ticket.offer.ticket, b"ticket-1");
    assert_eq!(ticket.offer.window_secs, 30);
    assert_eq!(pair.server.resume_ticket(), Some(&b"ticket-1"[..]));

    // Request 1 arrives and is answered; request 2 is lost with the connection.
    pair.request(b"one");
    let Some(ServerEvent::Packet(one)) = pair.server_poll().unwrap() else {
        panic!("a packet")
    };
    pair.server
        .send(
            &Packet {
                index: one.index,
                data: b"re one".to_vec(),
                ..Default::default()
            },
            &mut pair.s2c,
        )
        .unwrap();
    let Some(ClientEvent::Packet(_)) = pair.client.poll(&mut pair.s2c).unwrap() else {
        panic!("the reply")
    };
    assert_eq!(pair.client.received(), 1);
    pair.request(b"two");
    pair.c2s.clear();

    let mut fresh = resume_hello(&mut pair, &f);
    assert_eq!(fresh.pending_resume().unwrap().received(), 1);
    let next = ResumeOffer {
        ticket: b"ticket-2".to_vec(),
        window_secs: 30,
    };
    let mut reply = BytesMut::new();
    let mut held = holder(&pair.server);
    redeem(&mut fresh, &mut held, &pair.server, &next, &mut reply).unwrap();
    assert_eq!(fresh.identity().unwrap().uid, 1001);
    assert_eq!(fresh.resume_ticket(), Some(&b"ticket-2"[..]));
    assert_eq!(held.ticket, b"ticket-2", "the old ticket is spent");
    assert_eq!(Some(&held.key), fresh.resume_key());
    let event = pair.client.poll(&mut reply).unwrap().unwrap();
    assert_eq!(
        event,
        ClientEvent::Established {
            start_index: 2,
            server_time: NOW,
            resumed: true
        }
    );
    assert_eq!(
        pair.client.resume_ticket().unwrap().offer.ticket,
        b"ticket-2"
    );

    // The client sends request 2 again under the new keys; the index rule goes on from there.
    let mut resend = BytesMut::new();
    pair.client.take_resend(&mut resend);
    let Some(ServerEvent::Packet(two)) = fresh.poll(&mut resend, NOW, &mut reply).unwrap() else {
        panic!("the resent request")
    };
    assert_eq!((two.index, two.data.as_slice()), (2, &b"two"[..]));
    pair.server = fresh;
    assert_eq!(pair.request(b"three"), 3);
    let Some(ServerEvent::Packet(three)) = pair.server_poll().unwrap() else {
        panic!("a packet")
    };
    assert_eq!(three.index, 3);
}

#[test]
fn a_resume_is_signed_with_the_key_the_client_pins() {
    let mut f = fixture();
    let old = rolled_over(&mut f);
    f.client.server_key = old.verifying_key();
    let mut pair = resumable_pair(&mut f, b"ticket-1");
    let mut fresh = resume_hello(&mut pair, &f);
    let next = ResumeOffer {
        ticket: b"ticket-2".to_vec(),
        window_secs: 30,
    };
    let mut reply = BytesMut::new();
    let mut held = holder(&pair.server);
    redeem(&mut fresh, &mut held, &pair.server, &next, &mut reply).unwrap();
    assert!(matches!(
        pair.client.poll(&mut reply),
        Ok(Some(ClientEvent::Established { resumed: true, .. }))
    ));
    // The resumed session says which key answered; a resume presents no token.
    assert_eq!(
        fresh.handshake_keys(),
        Some(HandshakeKeys {
            cert_version: 1,
            token_key: None
        })
    );
}

#[test]
fn a_resume_without_the_session_keys_or_with_a_spent_ticket_is_denied() {
    let mut f = fixture();
    let mut pair = resumable_pair(&mut f, b"ticket-1");
    let mut stolen = pair.client.resume_ticket().unwrap().clone();
    stolen.key[0] ^= 1;

    // A ticket whose proof was made without the session's key.
    let mut thief = ClientSession::start(
        f.client.clone(),
        SessionConfig::default(),
        &f.token(),
        NOW,
        &mut BytesMut::new(),
    )
    .unwrap();
    thief.resume.ticket = Some(stolen);
    thief.state = ClientState::Open(Box::new(ClientOpen {
        sealer: Sealer::plain(),
        opener: Opener::plain(),
    }));
    let mut hello = BytesMut::new();
    thief.start_resume(NOW, &mut hello).unwrap();
    let mut fresh = ServerSession::new(Arc::new(f.server.clone()), SessionConfig::default());
    let mut out = BytesMut::new();
    fresh.poll(&mut hello, NOW, &mut out).unwrap();
    let next = ResumeOffer {
        ticket: b"ticket-2".to_vec(),
        window_secs: 30,
    };
    let mut held = holder(&pair.server);
    let before = held.clone();
    assert_eq!(
        redeem(&mut fresh, &mut held, &pair.server, &next, &mut out)
            .unwrap_err()
            .kind(),
        "resume_denied"
    );
    assert!(out.is_empty(), "nothing is replied to a denied resume");
    assert!(held == before, "a denied resume leaves the session alone");

    // The real client resumes once; its old ticket cannot be used again, nor can it be made to
    // prove the new key.
    let spent = pair.client.resume_ticket().unwrap().clone();
    let mut first = resume_hello(&mut pair, &f);
    redeem(&mut first, &mut held, &pair.server, &next, &mut out).unwrap();
    pair.client.resume.ticket = Some(spent.clone());
    let mut again = resume_hello(&mut pair, &f);
    let refused = redeem(&mut again, &mut held, &pair.server, &next, &mut out);
    assert_eq!(refused.unwrap_err().kind(), "resume_unknown");
    let mut forged = spent;
    forged.offer.ticket = next.ticket.clone();
    pair.client.resume.ticket = Some(forged);
    let mut again = resume_hello(&mut pair, &f);
    let refused = redeem(&mut again, &mut held, &pair.server, &next, &mut out);
    assert_eq!(
        refused.unwrap_err().kind(),
        "resume_denied",
        "the spent ticket's key does not prove the new one"
    );
}

#[test]
fn only_a_v2_client_that_asks_gets_a_ticket() {
    let f = fixture();
    let mut pair = f.start();
    pair.server = ServerSession::new(Arc::new(f.server.clone()), SessionConfig::default())
        .with_tickets(Arc::new(ResumeOffer {
            ticket: b"t".to_vec(),
            window_secs: 30,
        }));
    pair.server_poll().unwrap();
    pair.client.poll(&mut pair.s2c).unwrap();
    assert!(pair.server.resume_key().is_none());
    assert!(pair.client.resume_ticket().is_none());
    assert!(!pair.client.ack_due());
}

#[test]
fn a_resumable_client_acknowledges_every_few_packets() {
    let mut f = fixture();
    let mut pair = resumable_pair(&mut f, b"ticket-1");
    for n in 0..ACK_EVERY {
        assert!(!pair.client.ack_due(), "after {n}");
        pair.server.send(&system::logout(0), &mut pair.s2c).unwrap();
        pair.client.poll(&mut pair.s2c).unwrap().unwrap();
    }
    assert!(pair.client.ack_due());
    pair.server
        .send(&system::heartbeat_reply(1, 7, NOW, 1), &mut pair.s2c)
        .unwrap();
    pair.client.poll(&mut pair.s2c).unwrap().unwrap();
    assert_eq!(
        pair.client.received(),
        ACK_EVERY,
        "heartbeat replies are not counted"
    );
    pair.client.ack(&mut pair.c2s).unwrap();
    assert!(!pair.client.ack_due());
    let Some(ServerEvent::Packet(ack)) = pair.server_poll().unwrap() else {
        panic!("the ack")
    };
    assert_eq!(
        (ack.r#mod, ack.seq),
        (system::MODULE, system::SEQ_RESUME_ACK)
    );
    assert_eq!(
        janus_proto::message::CsResumeAck::decode(&ack.data[..])
            .unwrap()
            .received,
        ACK_EVERY
    );
}

#[test]
fn a_resume_whose_hello_was_lost_can_be_tried_again() {
    let mut f = fixture();
    let mut pair = resumable_pair(&mut f, b"ticket-1");
    let mut lost = BytesMut::new();
    pair.client.start_resume(NOW, &mut lost).unwrap();
    let mut fresh = resume_hello(&mut pair, &f);
    let mut reply = BytesMut::new();
    let next = ResumeOffer {
        ticket: b"ticket-2".to_vec(),
        window_secs: 30,
    };
    redeem(
        &mut fresh,
        &mut holder(&pair.server),
        &pair.server,
        &next,
        &mut reply,
    )
    .unwrap();
    assert!(matches!(
        pair.client.poll(&mut reply).unwrap(),
        Some(ClientEvent::Established { resumed: true, .. })
    ));
}

/// `frame` (a plaintext handshake reply) with its `SCHandshake` rewritten by `edit`.
fn edited_reply(frame: &[u8], edit: impl FnOnce(&mut ScHandshake)) -> BytesMut {
    let mut frame = BytesMut::from(frame);
    let payload = frame::decode(&mut frame, frame::DEFAULT_MAX_FRAME)
        .unwrap()
        .unwrap();
    let mut packet = Packet::decode(&payload[..]).unwrap();
    let mut reply = ScHandshake::decode(&packet.data[..]).unwrap();
    edit(&mut reply);
    packet.data = reply.encode_to_vec();
    let mut out = BytesMut::new();
    Sealer::plain()
        .seal(&packet, frame::DEFAULT_MAX_FRAME, &mut out)
        .unwrap();
    out
}

/// A named change to a handshake reply on the path.
type ReplyEdit = (&'static str, Box<dyn Fn(&mut ScHandshake)>);

/// Every field a reply says about the session's continuation, changed on the path.
fn continuation_edits() -> Vec<ReplyEdit> {
    vec![
        ("start_index", Box::new(|r| r.start_index += 1)),
        ("resume_ticket", Box::new(|r| r.resume_ticket[0] ^= 1)),
        ("resume_window", Box::new(|r| r.resume_window = 3600)),
        ("resumed", Box::new(|r| r.resumed = !r.resumed)),
        (
            "no ticket",
            Box::new(|r| {
                r.resume_ticket.clear();
                r.resume_window = 0;
            }),
        ),
    ]
}

#[test]
fn a_login_reply_binds_its_ticket_and_window() {
    let mut f = fixture();
    f.client.resumable = true;
    let token = f.token();
    const EPHEMERAL: [u8; 32] = [7; 32];
    let start = || {
        let mut hello = BytesMut::new();
        let client = ClientSession::start_with_ephemeral(
            f.client.clone(),
            SessionConfig::default(),
            &token,
            NOW,
            EPHEMERAL,
            &mut hello,
        )
        .unwrap();
        (client, hello)
    };
    let (_, mut hello) = start();
    let mut server = ServerSession::new(Arc::new(f.server.clone()), SessionConfig::default())
        .with_tickets(Arc::new(ResumeOffer {
            ticket: b"ticket-1".to_vec(),
            window_secs: 30,
        }));
    let mut reply = BytesMut::new();
    server.poll(&mut hello, NOW, &mut reply).unwrap().unwrap();
    for (field, edit) in continuation_edits() {
        let (mut client, _) = start();
        let mut edited = edited_reply(&reply, edit);
        assert!(
            matches!(client.poll(&mut edited), Err(Error::BadServerSignature)),
            "a login reply whose {field} was changed must not verify"
        );
    }
    let (mut client, _) = start();
    assert!(matches!(
        client.poll(&mut reply).unwrap(),
        Some(ClientEvent::Established {
            start_index: 1,
            resumed: false,
            ..
        })
    ));
    assert_eq!(client.resume_ticket().unwrap().offer.window_secs, 30);
}

#[test]
fn a_resume_reply_binds_its_index_ticket_window_and_flag() {
    let mut f = fixture();
    let mut pair = resumable_pair(&mut f, b"ticket-1");
    pair.request(b"one");
    pair.server_poll().unwrap().unwrap();
    const EPHEMERAL: [u8; 32] = [8; 32];
    let mut hello = BytesMut::new();
    pair.client
        .start_resume_with_ephemeral(NOW, EPHEMERAL, &mut hello)
        .unwrap();
    let mut fresh = ServerSession::new(Arc::new(f.server.clone()), SessionConfig::default());
    fresh.poll(&mut hello, NOW, &mut BytesMut::new()).unwrap();
    let next = ResumeOffer {
        ticket: b"ticket-2".to_vec(),
        window_secs: 30,
    };
    let mut reply = BytesMut::new();
    let mut held = holder(&pair.server);
    redeem(&mut fresh, &mut held, &pair.server, &next, &mut reply).unwrap();
    for (field, edit) in continuation_edits() {
        // The same hello again (same secret and clock), so the reply answers it.
        pair.client
            .start_resume_with_ephemeral(NOW, EPHEMERAL, &mut BytesMut::new())
            .unwrap();
        let mut edited = edited_reply(&reply, edit);
        assert!(
            matches!(
                pair.client.poll(&mut edited),
                Err(Error::BadServerSignature)
            ),
            "a resume reply whose {field} was changed must not verify"
        );
    }
    pair.client
        .start_resume_with_ephemeral(NOW, EPHEMERAL, &mut BytesMut::new())
        .unwrap();
    assert_eq!(
        pair.client.poll(&mut reply).unwrap(),
        Some(ClientEvent::Established {
            start_index: 2,
            server_time: NOW,
            resumed: true
        })
    );
    // Both ends derived their keys from the same reply hash: the session goes on.
    pair.server = fresh;
    let mut resend = BytesMut::new();
    pair.client.take_resend(&mut resend);
    assert!(resend.is_empty(), "request 1 reached the server");
    assert_eq!(pair.request(b"two"), 2);
    let Some(ServerEvent::Packet(two)) = pair.server_poll().unwrap() else {
        panic!("a packet")
    };
    assert_eq!(two.data, b"two");
}

#[test]
fn a_login_without_a_ticket_signs_the_transcript_alone() {
    let f = fixture();
    let token = f.token();
    let mut hello = BytesMut::new();
    let client_secret = [9u8; 32];
    let mut client = ClientSession::start_with_ephemeral(
        f.client.clone(),
        SessionConfig::default(),
        &token,
        NOW,
        client_secret,
        &mut hello,
    )
    .unwrap();
    let mut server = ServerSession::new(Arc::new(f.server.clone()), SessionConfig::default());
    let mut reply = BytesMut::new();
    server.poll(&mut hello, NOW, &mut reply).unwrap().unwrap();
    let payload = frame::decode(&mut reply.clone(), frame::DEFAULT_MAX_FRAME)
        .unwrap()
        .unwrap();
    let sc = ScHandshake::decode(&Packet::decode(&payload[..]).unwrap().data[..]).unwrap();
    let client_pub =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(client_secret));
    let th = crate::handshake::transcript_hash(
        client_pub.as_bytes(),
        sc.r#pub.as_slice().try_into().unwrap(),
        sc.timestamp,
        &token,
    );
    assert!(f.server.signing_key.verifying_key().verifies(&th, &sc.sign));
    assert!(sc.resume_ticket.is_empty() && !sc.resumed);
    client.poll(&mut reply).unwrap().unwrap();
}
