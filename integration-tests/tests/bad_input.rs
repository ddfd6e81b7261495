//! Bad input, one case at a time: each limit and each handshake failure closes only the
//! offending session, with the right reason (counted on `/metrics`, and told to the client where
//! the protocol allows), while a neighbouring session keeps working.

use std::time::Duration;

use bytes::BytesMut;
use futures_util::SinkExt;
use janus_client::{Client, Endpoint, unix_now};
use janus_integration_tests::stack::{Keys, Stack, assert_logout, echo, http_get, wait_metric};
use janus_proto::gate::intra::v1::OnlineStatus;
use janus_proto::message::ScServerUnexpectedErr;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::packet::Packet;
use janus_protocol::handshake::Mode;
use janus_protocol::session::{ClientSession, SessionConfig};
use janus_protocol::system;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod bad;

use bad::{
    forged_frame, framed, hello, index_out_of_order, limits, neighbour_ok, raw_refused, told,
    zip_bomb,
};

/// Waits until `/metrics` on the edge shows `series` (name and labels) at 1 or more.
async fn counted(stack: &Stack, series: &str) {
    wait_metric(stack.edge.admin_addr, series, |v| v >= 1.0).await;
}

/// Waits until the edge holds exactly `n` TCP sessions again (nothing leaked).
async fn sessions_back_to(stack: &Stack, n: u64) {
    let series = "janus_edge_sessions{transport=\"tcp\"}";
    wait_metric(stack.edge.admin_addr, series, |v| v == n as f64).await;
}

#[tokio::test]
async fn every_handshake_failure_closes_only_that_connection_with_its_reason() {
    let stack = Stack::in_memory(limits).await;
    let keys = stack.ground.keys.clone();
    let mut neighbour = stack.client(&stack.tcp(), 1).await;
    let config = keys.client_config(Mode::V2);
    let connect = |token: String, mode: Mode| {
        let endpoint = stack.tcp();
        let config = keys.client_config(mode);
        async move { Client::connect(&endpoint, &config, &token).await }
    };

    let expired = keys.token_with(10, 1, unix_now() - 1, OnlineStatus::Gate as i32);
    assert!(connect(expired, Mode::V2).await.is_err());
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"token_expired\"}",
    )
    .await;
    neighbour_ok(&mut neighbour).await;

    assert!(connect("bm90IGEgdG9rZW4=".into(), Mode::V2).await.is_err());
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"token_invalid\"}",
    )
    .await;

    let dev = keys.token_with(11, 1, unix_now() + 600, OnlineStatus::Dev as i32);
    assert!(connect(dev, Mode::V2).await.is_err());
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"status_not_allowed\"}",
    )
    .await;

    assert!(
        connect(keys.token(12), Mode::Legacy).await.is_err(),
        "legacy is off unless configured"
    );
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"mode_not_allowed\"}",
    )
    .await;
    neighbour_ok(&mut neighbour).await;

    // A clock an hour behind or an hour ahead.
    for (uid, skew) in [(13, -3600), (16, 3600)] {
        let mut out = BytesMut::new();
        ClientSession::start(
            config.handshake.clone(),
            SessionConfig::default(),
            &keys.token(uid),
            unix_now() + skew,
            &mut out,
        )
        .unwrap();
        raw_refused(&stack, &out).await;
    }
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"timestamp_skew\"}",
    )
    .await;

    raw_refused(
        &stack,
        &framed(&hello(vec![7; 31], keys.token(14), unix_now())),
    )
    .await;
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"bad_public_key\"}",
    )
    .await;

    raw_refused(
        &stack,
        &framed(&hello(vec![0; 32], keys.token(15), unix_now())),
    )
    .await;
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"zero_shared_secret\"}",
    )
    .await;

    raw_refused(&stack, &framed(&echo(b"no hello"))).await;
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"not_handshake\"}",
    )
    .await;

    raw_refused(&stack, &[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"malformed_packet\"}",
    )
    .await;

    raw_refused(&stack, &[0, 0, 0, 0]).await;
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"empty_frame\"}",
    )
    .await;

    raw_refused(&stack, &[0, 0, 0x20, 0]).await;
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"frame_too_large\"}",
    )
    .await;

    raw_refused(&stack, &[]).await;
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"handshake_timeout\"}",
    )
    .await;

    // A well-formed token sealed with another key.
    let foreign = Keys::generate().token(17);
    assert!(connect(foreign, Mode::V2).await.is_err());

    // Slowloris: the start of a frame, then silence, until the handshake timeout.
    raw_refused(&stack, &[0, 0, 0, 100, 8, 1]).await;

    neighbour_ok(&mut neighbour).await;
    sessions_back_to(&stack, 1).await;
}

#[tokio::test]
async fn every_session_limit_closes_only_the_offender_and_says_why() {
    let stack = Stack::in_memory(limits).await;
    let mut neighbour = stack.client(&stack.tcp(), 1).await;

    let mut flooder = stack.client(&stack.tcp(), 20).await;
    for _ in 0..15 {
        if flooder.send(echo(b"flood")).await.is_err() {
            break;
        }
    }
    let mut seen = Vec::new();
    while let Ok(Ok(packet)) = tokio::time::timeout(Duration::from_secs(5), flooder.recv()).await {
        seen.push(packet);
    }
    let texts: Vec<String> = seen
        .iter()
        .filter(|p| p.seq == system::SEQ_UNEXPECTED_ERR && p.r#mod == system::MODULE)
        .map(|p| ScServerUnexpectedErr::decode(&p.data[..]).unwrap().msg)
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("message_rate")),
        "{texts:?}"
    );
    counted(&stack, "janus_edge_closes_total{reason=\"message_rate\"}").await;
    neighbour_ok(&mut neighbour).await;

    let mut hog = stack.client(&stack.tcp(), 21).await;
    let noise: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for _ in 0..3 {
        let _ = hog.send(echo(&noise)).await;
    }
    let mut closed_for_bytes = false;
    while let Ok(Ok(packet)) = tokio::time::timeout(Duration::from_secs(5), hog.recv()).await {
        if packet.seq == system::SEQ_UNEXPECTED_ERR && packet.r#mod == system::MODULE {
            closed_for_bytes = ScServerUnexpectedErr::decode(&packet.data[..])
                .unwrap()
                .msg
                .contains("byte_rate");
        }
    }
    assert!(closed_for_bytes, "the byte bucket closed the session");
    counted(&stack, "janus_edge_closes_total{reason=\"byte_rate\"}").await;

    let mut big = stack.client(&stack.tcp(), 22).await;
    big.send_raw(&[0, 0, 0x20, 0]).await.unwrap();
    told(&mut big, "exceeds the maximum").await;
    counted(
        &stack,
        "janus_edge_closes_total{reason=\"frame_too_large\"}",
    )
    .await;

    index_out_of_order(&stack, 23).await;
    counted(&stack, "janus_edge_closes_total{reason=\"index_mismatch\"}").await;

    forged_frame(&stack, 24).await;
    counted(&stack, "janus_edge_closes_total{reason=\"decrypt_failed\"}").await;

    zip_bomb(&stack, 25).await;
    counted(
        &stack,
        "janus_edge_closes_total{reason=\"inflate_too_large\"}",
    )
    .await;
    neighbour_ok(&mut neighbour).await;

    let ws = Endpoint::WebSocket(format!("ws://{}/ws", stack.edge.ws_addr.unwrap()));
    let (mut raw_ws, _) = tokio_tungstenite::connect_async(match &ws {
        Endpoint::WebSocket(url) => url.as_str(),
        _ => unreachable!(),
    })
    .await
    .unwrap();
    raw_ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "hello".into(),
        ))
        .await
        .unwrap();
    counted(
        &stack,
        "janus_edge_handshakes_total{result=\"text_message\"}",
    )
    .await;

    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws",
            stack.edge.ws_addr.unwrap()
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(request).await.is_err(),
        "a foreign Origin is refused"
    );
    counted(
        &stack,
        "janus_edge_refused_total{reason=\"websocket_upgrade\"}",
    )
    .await;
    neighbour_ok(&mut neighbour).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_not_buffered() {
    let stack = Stack::in_memory(limits).await;
    let mut neighbour = stack.client(&stack.tcp(), 1).await;
    let mut sleeper = stack.client(&stack.tcp(), 30).await;
    // One round trip: the broker holds the session before the pushes start.
    neighbour_ok(&mut sleeper).await;
    let mut push = janus_proto::broadcaster::service::push::v1::push_service_client::PushServiceClient::connect(
        format!("http://{}", stack.broker.endpoint()),
    )
    .await
    .unwrap();
    // Incompressible 3 KiB bodies until the edge gives up on the sleeper: its socket buffers
    // fill (megabytes on loopback), then its write waits past the write timeout or its 8-packet
    // outbound queue overflows, and it is cut off. Bounded in time, not in pushes: how many it
    // takes depends on the kernel's buffer sizes.
    let body: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let mut cut_off = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let request = janus_proto::broadcaster::service::push::v1::MulticastRequest {
            bodies: vec![janus_proto::broadcaster::service::push::v1::PushBody {
                data: body.clone(),
                r#mod: 9,
                ..Default::default()
            }],
            uids: vec![30],
            color: janus_integration_tests::stack::COLOR.into(),
        };
        let pushed = push
            .multicast(request)
            .await
            .unwrap()
            .into_inner()
            .pushed_uids;
        if pushed.is_empty() {
            cut_off = true;
            break;
        }
    }
    assert!(cut_off, "the sleeping client was never disconnected");
    counted(&stack, "janus_edge_closes_total{reason=\"slow_consumer\"}").await;
    neighbour_ok(&mut neighbour).await;
}

// The outbound queue overflowing (rather than a write timing out) is counted on its own.
#[tokio::test]
async fn an_outbound_queue_overflow_is_counted() {
    let stack = Stack::in_memory(|config| {
        limits(config);
        config.session.write_timeout_secs = Duration::from_secs(30);
    })
    .await;
    let mut sleeper = stack.client(&stack.tcp(), 31).await;
    neighbour_ok(&mut sleeper).await;
    let mut push = janus_proto::broadcaster::service::push::v1::push_service_client::PushServiceClient::connect(
        format!("http://{}", stack.broker.endpoint()),
    )
    .await
    .unwrap();
    let body: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    // Until the session is cut off (its socket buffers full, its queue overflowing), however
    // many pushes the kernel's buffers take.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let request = janus_proto::broadcaster::service::push::v1::MulticastRequest {
            bodies: vec![janus_proto::broadcaster::service::push::v1::PushBody {
                data: body.clone(),
                r#mod: 9,
                ..Default::default()
            }],
            uids: vec![31],
            color: janus_integration_tests::stack::COLOR.into(),
        };
        if push
            .multicast(request)
            .await
            .unwrap()
            .into_inner()
            .pushed_uids
            .is_empty()
        {
            break;
        }
    }
    counted(
        &stack,
        "janus_edge_queue_overflows_total{queue=\"session_outbound\"}",
    )
    .await;
}

#[tokio::test]
async fn an_idle_session_is_closed_and_told_while_an_active_one_stays() {
    let stack =
        Stack::in_memory(|config| config.session.idle_timeout_secs = Duration::from_secs(1)).await;
    let mut idle = stack.client(&stack.tcp(), 40).await;
    let mut active = stack.client(&stack.tcp(), 41).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        neighbour_ok(&mut active).await;
    }
    told(&mut idle, "idle_timeout").await;
    counted(&stack, "janus_edge_closes_total{reason=\"idle_timeout\"}").await;
}

#[tokio::test]
async fn connection_limits_refuse_before_the_handshake() {
    let stack = Stack::in_memory(|config| config.limits.max_sessions_per_ip = 2).await;
    let mut first = stack.client(&stack.tcp(), 50).await;
    let _second = stack.client(&stack.ws(), 51).await;
    let keys = &stack.ground.keys;
    let third = Client::connect(&stack.tcp(), &keys.client_config(Mode::V2), &keys.token(52)).await;
    assert!(third.is_err(), "a third session from one IP is refused");
    counted(
        &stack,
        "janus_edge_refused_total{reason=\"max_sessions_per_ip\"}",
    )
    .await;
    neighbour_ok(&mut first).await;

    let stack = Stack::in_memory(|config| config.limits.max_sessions = 1).await;
    let mut only = stack.client(&stack.tcp(), 60).await;
    let keys = &stack.ground.keys;
    assert!(
        Client::connect(&stack.tcp(), &keys.client_config(Mode::V2), &keys.token(61))
            .await
            .is_err()
    );
    counted(&stack, "janus_edge_refused_total{reason=\"max_sessions\"}").await;
    neighbour_ok(&mut only).await;

    let stack = Stack::in_memory(|config| config.limits.handshakes_per_ip_per_sec = 2).await;
    let keys = &stack.ground.keys;
    let mut refused = 0;
    for uid in 70..75 {
        if Client::connect(
            &stack.tcp(),
            &keys.client_config(Mode::V2),
            &keys.token(uid),
        )
        .await
        .is_err()
        {
            refused += 1;
        }
    }
    assert!(
        refused >= 3,
        "only 2 connections per second per IP ({refused} refused of 5)"
    );
    counted(
        &stack,
        "janus_edge_refused_total{reason=\"handshake_rate\"}",
    )
    .await;
}

#[tokio::test]
async fn client_certificates_and_unencrypted_sessions_are_enforced() {
    let ground = janus_integration_tests::stack::Ground::in_memory();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let game = janus_integration_tests::stack::Game::start(&addr).await;
    let _broker = ground
        .broker_on(ground.broker_config(&[&game.endpoint]), listener)
        .await;
    let client_key = janus_protocol::keys::SigningKey::generate();
    let edge = ground
        .edge_with_client_cert(
            ground.edge_config(&[&addr]),
            Some(client_key.verifying_key()),
        )
        .await;
    let endpoint = janus_integration_tests::stack::tcp(&edge);
    let keys = &ground.keys;
    let with_key = |key: Option<janus_protocol::keys::SigningKey>| {
        let mut config = keys.client_config(Mode::V2);
        config.handshake.client_key = key;
        config
    };

    let mut signed = Client::connect(
        &endpoint,
        &with_key(Some(client_key.clone())),
        &keys.token(90),
    )
    .await
    .unwrap();
    assert_eq!(
        signed.request(echo(b"signed"), |_| {}).await.unwrap().data,
        b"signed"
    );
    assert!(
        Client::connect(&endpoint, &with_key(None), &keys.token(91))
            .await
            .is_err()
    );
    let stranger = janus_protocol::keys::SigningKey::generate();
    assert!(
        Client::connect(&endpoint, &with_key(Some(stranger)), &keys.token(92))
            .await
            .is_err()
    );

    let plain_token = janus_protocol::token::TokenCodec::new(&keys.token).seal(
        &janus_proto::gate::intra::v1::AuthToken {
            account_id: 93,
            server_id: 1,
            color: janus_integration_tests::stack::COLOR.into(),
            timeout: unix_now() + 600,
            status: OnlineStatus::Gate as i32,
            unencrypted: true,
            ..Default::default()
        },
    );
    let mut unencrypted = with_key(Some(client_key));
    unencrypted.handshake.mode = Mode::Unencrypted;
    assert!(
        Client::connect(&endpoint, &unencrypted, &plain_token)
            .await
            .is_err(),
        "unencrypted is off unless enabled"
    );

    let (_, metrics) = http_get(edge.admin_addr, "/metrics").await;
    let count = |series: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    assert_eq!(
        count("janus_edge_handshakes_total{result=\"bad_client_signature\"}"),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        count("janus_edge_handshakes_total{result=\"mode_not_allowed\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        signed.request(echo(b"still"), |_| {}).await.unwrap().data,
        b"still"
    );
}

/// A session speaking the protocol by hand over raw TCP, so the test holds the sealed bytes.
struct RawSession {
    tcp: TcpStream,
    client: ClientSession,
    input: BytesMut,
}

impl RawSession {
    async fn open(stack: &Stack, uid: i64) -> Self {
        let keys = &stack.ground.keys;
        let mut tcp = TcpStream::connect(stack.edge.tcp_addr.unwrap())
            .await
            .unwrap();
        let mut out = BytesMut::new();
        let mut client = ClientSession::start(
            keys.client_config(Mode::V2).handshake,
            SessionConfig::default(),
            &keys.token(uid),
            unix_now(),
            &mut out,
        )
        .unwrap();
        tcp.write_all(&out).await.unwrap();
        let mut input = BytesMut::new();
        loop {
            if client.poll(&mut input).unwrap().is_some() {
                break;
            }
            assert_ne!(
                tcp.read_buf(&mut input).await.unwrap(),
                0,
                "handshake reply"
            );
        }
        Self { tcp, client, input }
    }

    /// `packet` sealed as the next frame, not yet sent.
    fn seal(&mut self, packet: Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        self.client.send(packet, &mut out).unwrap();
        out.to_vec()
    }

    /// The reason the edge gives (SCServerUnexpectedErr), then its logout and the close.
    async fn told(&mut self, reason: &str) {
        let mut packets = Vec::new();
        loop {
            while let Some(event) = self.client.poll(&mut self.input).unwrap() {
                if let janus_protocol::session::ClientEvent::Packet(packet) = event {
                    packets.push(packet);
                }
            }
            let read =
                tokio::time::timeout(Duration::from_secs(5), self.tcp.read_buf(&mut self.input))
                    .await
                    .expect("the edge answers and closes");
            if read.unwrap_or(0) == 0 {
                break;
            }
        }
        let why = packets
            .iter()
            .find(|p| (p.r#mod, p.seq) == (system::MODULE, system::SEQ_UNEXPECTED_ERR))
            .unwrap_or_else(|| panic!("no reason among {packets:?}"));
        let msg = ScServerUnexpectedErr::decode(&why.data[..]).unwrap().msg;
        assert!(msg.contains(reason), "{msg:?} does not mention {reason}");
        assert_logout(packets.last().unwrap(), LogoutCode::Server);
    }
}

#[tokio::test]
async fn replayed_reordered_and_mislabelled_frames_close_only_that_session() {
    let stack = Stack::in_memory(limits).await;
    let mut neighbour = stack.client(&stack.tcp(), 1).await;

    // A frame sent twice: the copy's counter nonce is already spent.
    let mut replayer = RawSession::open(&stack, 30).await;
    let frame = replayer.seal(echo(b"once"));
    replayer.tcp.write_all(&frame).await.unwrap();
    replayer.tcp.write_all(&frame).await.unwrap();
    replayer.told("decrypt").await;
    neighbour_ok(&mut neighbour).await;

    // Two frames swapped: the second one arrives first and fails to open.
    let mut reorderer = RawSession::open(&stack, 31).await;
    let first = reorderer.seal(echo(b"first"));
    let second = reorderer.seal(echo(b"second"));
    reorderer.tcp.write_all(&second).await.unwrap();
    reorderer.tcp.write_all(&first).await.unwrap();
    reorderer.told("decrypt").await;
    counted(&stack, "janus_edge_closes_total{reason=\"decrypt_failed\"}").await;
    neighbour_ok(&mut neighbour).await;

    // A packet flagged compressed whose data is not zlib.
    let mut liar = stack.client(&stack.tcp(), 32).await;
    liar.send(Packet {
        compress: true,
        ..echo(b"not zlib at all")
    })
    .await
    .unwrap();
    told(&mut liar, "not valid zlib").await;
    counted(
        &stack,
        "janus_edge_closes_total{reason=\"inflate_corrupt\"}",
    )
    .await;

    neighbour_ok(&mut neighbour).await;
    sessions_back_to(&stack, 1).await;
}

#[tokio::test]
async fn half_a_frame_then_silence_ends_at_the_idle_timeout_while_a_busy_neighbour_goes_on() {
    let stack = Stack::in_memory(|config| {
        limits(config);
        config.session.idle_timeout_secs = Duration::from_secs(2);
    })
    .await;
    let mut neighbour = stack.client(&stack.tcp(), 1).await;
    let mut slow = RawSession::open(&stack, 33).await;
    slow.tcp.write_all(&[0, 0, 0, 64, 1, 2]).await.unwrap();
    let busy = async {
        for _ in 0..8 {
            neighbour_ok(&mut neighbour).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::join!(slow.told("idle_timeout"), busy);
    counted(&stack, "janus_edge_closes_total{reason=\"idle_timeout\"}").await;
    sessions_back_to(&stack, 1).await;
}
