//! The edge session's machine against a real client session, in memory: plain values for the
//! time, no socket, no broker, no runtime.

use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_proto::message::ScHeartbeat;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_protocol::handshake::{ClientHandshakeConfig, ServerHandshakeConfig};
use janus_protocol::keys::{SigningKey, TokenKey};
use janus_protocol::session::{ClientEvent, ClientSession, SessionConfig};
use janus_protocol::token::TokenCodec;

use super::*;

const UNIX: i64 = 1_700_000_000;
const UID: i64 = 1001;

/// A machine and the client connected to it, the time standing still unless moved.
struct Pair {
    machine: Machine,
    client: ClientSession,
    c2s: BytesMut,
    now: Now,
}

fn config(edit: impl FnOnce(&mut EdgeConfig)) -> EdgeConfig {
    let mut config = EdgeConfig::default();
    edit(&mut config);
    config
}

fn start(config: EdgeConfig, resumable: bool) -> Pair {
    let signing_key = SigningKey::from_seed(&[1; 32]);
    let tokens = TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap());
    let client = ClientHandshakeConfig {
        server_key: signing_key.verifying_key(),
        client_key: None,
        mode: Mode::V2,
        server_id: 0,
        cert_version: 1,
        resumable,
    };
    let server = ServerHandshakeConfig {
        signing_key,
        tokens: tokens.clone(),
        client_cert: None,
        allowed_statuses: vec![OnlineStatus::Gate as i32],
        max_skew_secs: config.handshake.max_skew_secs,
        allow_legacy: false,
        allow_unencrypted: false,
        cert_version: 1,
        other_signing_keys: Default::default(),
    };
    let token = tokens.seal(&AuthToken {
        rand: "x".into(),
        color: "blue".into(),
        account_id: UID,
        server_id: 9,
        timeout: UNIX + 600,
        location: 0,
        status: OnlineStatus::Gate as i32,
        unencrypted: false,
    });
    let mut c2s = BytesMut::new();
    let client =
        ClientSession::start(client, SessionConfig::default(), &token, UNIX, &mut c2s).unwrap();
    let now = Now {
        at: Instant::now(),
        unix_ms: UNIX * 1000,
    };
    let proto = ServerSession::new(Arc::new(server), config.session.session_config());
    let offer: Arc<dyn IssueTicket> = Arc::new(ResumeOffer {
        ticket: b"ticket".to_vec(),
        window_secs: 30,
    });
    let machine = Machine::new(
        Arc::new(config),
        proto,
        Some(offer),
        (7, "10.1.2.3:5000".parse().unwrap(), Transport::Tcp),
        Traffic::new(&Metrics::new(), Transport::Tcp),
        now.at,
    );
    Pair {
        machine,
        client,
        c2s,
        now,
    }
}

impl Pair {
    /// A session past its login.
    fn logged_in(config: EdgeConfig, resumable: bool) -> Self {
        let mut pair = start(config, resumable);
        match pair.input() {
            Ok(Some(Action::Opened { resumed: false, .. })) => {}
            other => panic!("expected a login, got {other:?}"),
        }
        assert!(matches!(
            pair.client_events()[..],
            [ClientEvent::Established { resumed: false, .. }]
        ));
        assert_eq!(pair.client.resume_ticket().is_some(), resumable);
        pair
    }

    /// Feeds what the client wrote to the machine, as one read.
    fn input(&mut self) -> Result<Option<Action>, Close> {
        self.machine.on_read(self.c2s.len(), &self.now)?;
        self.machine.poll_input(&mut self.c2s, &self.now)
    }

    /// The client sends `packet`; what the machine makes of it.
    fn send(&mut self, packet: Packet) -> Result<Option<Action>, Close> {
        self.client.send(packet, &mut self.c2s).unwrap();
        self.input()
    }

    /// What the client makes of everything the machine wrote.
    fn client_events(&mut self) -> Vec<ClientEvent> {
        let s2c = self.machine.transmit();
        let mut events = Vec::new();
        while let Some(event) = self.client.poll(s2c).unwrap() {
            events.push(event);
        }
        events
    }

    fn client_packets(&mut self) -> Vec<Packet> {
        self.client_events()
            .into_iter()
            .map(|event| match event {
                ClientEvent::Packet(packet) => packet,
                other => panic!("expected a packet, got {other:?}"),
            })
            .collect()
    }

    fn later(&mut self, by: Duration) {
        self.now.at += by;
        self.now.unix_ms += i64::try_from(by.as_millis()).unwrap();
    }
}

fn game_packet(seq: i32) -> Packet {
    Packet {
        r#mod: 100,
        seq,
        obj: 1,
        data: b"hi".to_vec(),
        ..Default::default()
    }
}

fn heartbeat_code(packet: &Packet) -> i32 {
    assert_eq!(
        (packet.r#mod, packet.seq),
        (system::MODULE, system::SEQ_HEARTBEAT)
    );
    ScHeartbeat::decode(&packet.data[..]).unwrap().code
}

#[test]
fn a_login_opens_the_session_at_a_broker_with_the_player_and_its_continuity() {
    let pair = Pair::logged_in(EdgeConfig::default(), true);
    let frame = pair
        .machine
        .open(Opening::New, "edge-1", &pair.now)
        .unwrap();
    assert_eq!(frame.session_id, 7);
    let Some(edge_frame::Kind::Open(open)) = frame.kind else {
        panic!("an open frame");
    };
    assert_eq!(
        (open.uid, open.sid, open.edge_id.as_str()),
        (UID, 9, "edge-1")
    );
    assert_eq!(open.client_ip, "10.1.2.3");
    let continuity = open.continuity.expect("a resumable session");
    assert_eq!(continuity.ticket, b"ticket");
    assert_eq!(continuity.rate.unwrap().at_ms, UNIX * 1000);
}

#[test]
fn heartbeats_are_answered_here_and_a_skewed_clock_gets_err_time() {
    let mut pair = Pair::logged_in(EdgeConfig::default(), false);
    assert!(pair.send(system::heartbeat(UNIX + 2)).unwrap().is_none());
    let replies = pair.client_packets();
    assert_eq!(heartbeat_code(&replies[0]), HeartbeatCode::Succeeded as i32);
    assert!(pair.send(system::heartbeat(UNIX + 60)).unwrap().is_none());
    let replies = pair.client_packets();
    assert_eq!(heartbeat_code(&replies[0]), HeartbeatCode::ErrTime as i32);
}

#[test]
fn in_go_pantheons_mode_heartbeats_go_to_the_game() {
    let game = config(|c| c.session.heartbeats = HeartbeatMode::Game);
    let mut pair = Pair::logged_in(game, false);
    assert!(matches!(
        pair.send(system::heartbeat(UNIX)),
        Ok(Some(Action::Forward(_)))
    ));
    assert!(pair.client_packets().is_empty());
}

#[test]
fn game_packets_are_forwarded_until_the_message_bucket_is_empty() {
    let strict = config(|c| {
        c.session.message_burst = 2;
        c.session.messages_per_sec = 1;
    });
    let mut pair = Pair::logged_in(strict, false);
    for seq in 1..=2 {
        let Ok(Some(Action::Forward(frame))) = pair.send(game_packet(seq)) else {
            panic!("packet {seq} forwarded");
        };
        let Some(edge_frame::Kind::Packet(client)) = frame.kind else {
            panic!("a client packet");
        };
        assert_eq!(client.packet.unwrap().seq, seq);
    }
    assert_eq!(
        pair.send(game_packet(3)).unwrap_err(),
        Close::RateLimited("message_rate")
    );
}

#[test]
fn bytes_beyond_the_byte_bucket_close_the_session() {
    let strict = config(|c| {
        c.session.byte_burst = 100;
        c.session.bytes_per_sec = 1;
    });
    let mut pair = Pair::logged_in(strict, false);
    assert!(pair.machine.on_read(100, &pair.now).is_ok());
    assert_eq!(
        pair.machine.on_read(1, &pair.now).unwrap_err(),
        Close::RateLimited("byte_rate")
    );
}

#[test]
fn a_hello_must_come_within_the_handshake_timeout() {
    let mut pair = start(EdgeConfig::default(), false);
    let timeout = EdgeConfig::default().handshake.timeout_secs;
    assert_eq!(pair.machine.deadline(), Some(pair.now.at + timeout));
    pair.later(timeout - Duration::from_millis(1));
    assert!(pair.machine.on_timeout(&pair.now).is_ok());
    pair.later(Duration::from_millis(1));
    assert_eq!(
        pair.machine.on_timeout(&pair.now).unwrap_err(),
        Close::HandshakeTimeout
    );
}

#[test]
fn any_read_moves_the_idle_deadline_and_silence_ends_the_session() {
    let mut pair = Pair::logged_in(EdgeConfig::default(), false);
    let idle = EdgeConfig::default().session.idle_timeout_secs;
    assert_eq!(pair.machine.deadline(), Some(pair.now.at + idle));
    pair.later(idle / 2);
    pair.machine.on_read(0, &pair.now).unwrap();
    assert_eq!(pair.machine.deadline(), Some(pair.now.at + idle));
    pair.later(idle - Duration::from_millis(1));
    assert!(pair.machine.on_timeout(&pair.now).is_ok());
    pair.later(Duration::from_millis(1));
    assert_eq!(pair.machine.on_timeout(&pair.now).unwrap_err(), Close::Idle);
}

#[test]
fn the_brokers_downlink_is_sealed_for_the_client_and_its_verdicts_end_or_move_the_session() {
    let mut pair = Pair::logged_in(EdgeConfig::default(), false);
    let push = Arc::new(game_packet(5));
    assert!(
        pair.machine
            .on_downlink(Some(Downlink::Packet(push)), &pair.now)
            .unwrap()
            .is_none()
    );
    assert_eq!(pair.client_packets()[0].seq, 5);
    assert!(matches!(
        pair.machine
            .on_downlink(Some(Downlink::LinkLost), &pair.now),
        Ok(Some(Action::Reattach))
    ));
    assert!(matches!(
        pair.machine.on_downlink(None, &pair.now),
        Ok(Some(Action::Reattach))
    ));
    // A broker added later: the session is handed over (PROTOCOL.md §13.5).
    assert!(matches!(
        pair.machine.on_downlink(Some(Downlink::Move), &pair.now),
        Ok(Some(Action::Move))
    ));
    let handover = pair.machine.handover();
    let Some(edge_frame::Kind::Close(close)) = handover.kind else {
        panic!("a close frame")
    };
    assert!(
        close.handover && !close.resumable,
        "a handover, not a park: {close:?}"
    );
    assert!(
        pair.machine
            .on_downlink(Some(Downlink::HandedOver), &pair.now)
            .unwrap()
            .is_none()
    );
    let kick = Downlink::Kick(Box::new((3, "another login".into())));
    assert_eq!(
        pair.machine.on_downlink(Some(kick), &pair.now).unwrap_err(),
        Close::Kicked(3, "another login".into())
    );
    assert_eq!(
        pair.machine
            .on_downlink(Some(Downlink::Release), &pair.now)
            .unwrap_err(),
        Close::Moved
    );
}

#[test]
fn acknowledgements_and_heartbeats_of_a_resumable_session_are_reported_to_its_broker() {
    let mut pair = Pair::logged_in(EdgeConfig::default(), true);
    for seq in 1..=3 {
        let push = Arc::new(game_packet(seq));
        pair.machine
            .on_downlink(Some(Downlink::Packet(push)), &pair.now)
            .unwrap();
    }
    assert_eq!(pair.client_packets().len(), 3);
    pair.client.ack(&mut pair.c2s).unwrap();
    let Ok(Some(Action::Report(frame))) = pair.input() else {
        panic!("the ack is reported");
    };
    let Some(edge_frame::Kind::Progress(progress)) = frame.kind else {
        panic!("a progress frame");
    };
    assert_eq!((progress.received, progress.next_index), (3, 2));
    let frame = pair
        .machine
        .open(Opening::Reattach, "edge-1", &pair.now)
        .unwrap();
    let Some(edge_frame::Kind::Open(open)) = frame.kind else {
        panic!("an open frame");
    };
    assert!(open.reattach && !open.handed_over);
    let frame = pair
        .machine
        .open(Opening::HandedOver, "edge-1", &pair.now)
        .unwrap();
    let Some(edge_frame::Kind::Open(moved)) = frame.kind else {
        panic!("an open frame");
    };
    assert!(
        moved.reattach && moved.handed_over,
        "a move from a broker that answered its handover says so"
    );
    let continuity = open.continuity.unwrap();
    assert_eq!(
        (continuity.sent, continuity.tail.len()),
        (3, 0),
        "acknowledged"
    );
    assert!(matches!(
        pair.send(system::heartbeat(UNIX)),
        Ok(Some(Action::Report(_)))
    ));
}

#[test]
fn a_drain_hints_a_resumable_client_at_its_moment_then_ends_it() {
    let mut pair = Pair::logged_in(
        config(|c| c.drain_spread_secs = Duration::from_secs(10)),
        true,
    );
    let spread = Duration::from_secs(10);
    let since = pair.now.at;
    pair.machine.on_phase(Phase::Draining { since });
    let (hint, step) = drain::next_step(pair.machine.drain, 7, true, None, spread).unwrap();
    assert_eq!(step, drain::Step::Hint);
    assert_eq!(pair.machine.deadline(), Some(hint));
    pair.now.at = hint;
    pair.machine.on_timeout(&pair.now).unwrap();
    let told = pair.client_packets();
    assert_eq!(
        (told[0].r#mod, told[0].seq),
        (system::MODULE, system::SEQ_RECONNECT)
    );
    assert_eq!(
        pair.machine.deadline(),
        Some(hint + drain::LEAVE_AFTER_HINT)
    );
    pair.now.at = hint + drain::LEAVE_AFTER_HINT;
    assert_eq!(
        pair.machine.on_timeout(&pair.now).unwrap_err(),
        Close::Shutdown
    );
}

#[test]
fn a_session_that_cannot_resume_stays_through_the_drain_until_the_logout() {
    let mut pair = Pair::logged_in(EdgeConfig::default(), false);
    let idle = pair.machine.deadline();
    pair.machine
        .on_phase(Phase::Draining { since: pair.now.at });
    assert_eq!(pair.machine.deadline(), idle, "no hint for it");
    pair.later(Duration::from_secs(30));
    pair.machine.on_read(0, &pair.now).unwrap();
    pair.machine
        .on_phase(Phase::LoggingOut { since: pair.now.at });
    assert_eq!(pair.machine.deadline(), Some(pair.now.at));
    assert_eq!(
        pair.machine.on_timeout(&pair.now).unwrap_err(),
        Close::Shutdown
    );
}

#[test]
fn a_close_logs_out_what_cannot_resume_and_parks_what_can() {
    let mut plain = Pair::logged_in(EdgeConfig::default(), false);
    let farewell = plain.machine.close(&Close::Idle, &plain.now);
    assert!(farewell.logout);
    let told = plain.client_packets();
    assert_eq!(
        told[0].seq,
        system::SEQ_UNEXPECTED_ERR,
        "why, then the logout"
    );
    assert_eq!(told[1].seq, system::SEQ_LOGOUT);
    let Some(edge_frame::Kind::Close(close)) = farewell.to_broker.unwrap().kind else {
        panic!("a close frame");
    };
    assert_eq!(
        (close.reason.as_str(), close.resumable),
        ("idle_timeout", false)
    );
    assert!(close.rate.is_none());

    let mut kicked = Pair::logged_in(EdgeConfig::default(), false);
    let code = LogoutCode::Server as i32 + 1;
    assert!(
        kicked
            .machine
            .close(&Close::Kicked(code, "admin".into()), &kicked.now)
            .logout
    );
    let told = kicked.client_packets();
    assert_eq!(told.len(), 1, "a kick is not explained");
    assert_eq!(told[0].seq, system::SEQ_LOGOUT);

    let mut parked = Pair::logged_in(EdgeConfig::default(), true);
    let farewell = parked.machine.close(&Close::ClientClosed, &parked.now);
    assert!(!farewell.logout);
    let Some(edge_frame::Kind::Close(close)) = farewell.to_broker.unwrap().kind else {
        panic!("a close frame");
    };
    assert!(close.resumable);
    assert_eq!(close.rate.unwrap().at_ms, UNIX * 1000);

    let mut moved = Pair::logged_in(EdgeConfig::default(), true);
    let farewell = moved.machine.close(&Close::Moved, &moved.now);
    assert!(
        !farewell.logout && farewell.to_broker.is_none(),
        "it goes on elsewhere"
    );

    let mut early = start(EdgeConfig::default(), false);
    let farewell = early.machine.close(&Close::HandshakeTimeout, &early.now);
    assert!(!farewell.logout && farewell.to_broker.is_none());
    assert!(early.machine.deadline().is_none());
}

/// A resumable client back on a new connection, its resume request made for the driver.
fn resuming() -> Pair {
    let first = Pair::logged_in(config(|_| {}), true);
    let mut pair = start(config(|_| {}), true);
    pair.client = first.client;
    pair.c2s.clear();
    pair.client.start_resume(UNIX, &mut pair.c2s).unwrap();
    assert!(
        matches!(pair.input(), Ok(Some(Action::Redeem(_)))),
        "the ticket goes to the driver"
    );
    let next = ResumeOffer {
        ticket: b"next".to_vec(),
        window_secs: 30,
    };
    pair.machine.resume_request(UID, next).unwrap();
    pair
}

fn unknown() -> Option<Downlink> {
    Some(Downlink::Refused(Box::new("resume_unknown".to_owned())))
}

#[test]
fn a_resume_unknown_to_the_first_broker_asks_the_second_once_then_closes() {
    let mut pair = resuming();
    pair.machine.ask_again_if_unknown();
    assert!(matches!(
        pair.machine.on_downlink(unknown(), &pair.now),
        Ok(Some(Action::RedeemElsewhere))
    ));
    assert!(pair.machine.redeeming(), "still deciding");
    assert!(matches!(
        pair.machine.on_downlink(unknown(), &pair.now),
        Err(Close::Protocol("resume_unknown", _))
    ));
}

#[test]
fn a_resume_with_no_second_broker_closes_at_the_first_refusal() {
    let mut pair = resuming();
    assert!(matches!(
        pair.machine.on_downlink(unknown(), &pair.now),
        Err(Close::Protocol("resume_unknown", _))
    ));
}
