//! Janus against real go-pantheon-style peers written in Go (built from Debian's Go packages,
//! see `janus_integration_tests::gopeer`): a game service on grpc-go written like Roma's
//! tunnel handlers behind a whole gateway stack, and a Go client doing what a fabrica-net
//! client does.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use janus_client::unix_now;
use janus_demo_game as demo;
use janus_edge::config::{EdgeConfig, HeartbeatMode};
use janus_integration_tests::gopeer;
use janus_integration_tests::stack::{
    COLOR, GameKind, Ground, Keys, Stack, assert_quiet, recv, request,
};
use janus_proto::gate::intra::v1::OnlineStatus;
use janus_proto::message::{CsHeartbeat, ScHeartbeat, ScServerUnexpectedErr, sc_heartbeat};
use janus_proto::packet::Packet;
use janus_protocol::keys::{SigningKey, TokenKey, TokenKeyFormat};
use janus_protocol::system;
use prost::Message;
use serde_json::Value;

/// A packet a test did not expect, with the text of an SCServerUnexpectedErr spelled out.
fn unexpected(p: &Packet) -> ! {
    if (p.r#mod, p.seq) == (system::MODULE, system::SEQ_UNEXPECTED_ERR) {
        let err = ScServerUnexpectedErr::decode(&p.data[..]).unwrap_or_default();
        panic!("SCServerUnexpectedErr {err:?}");
    }
    panic!("unexpected packet {p:?}");
}

async fn go_roma_stack() -> Stack {
    Stack::start_with_game(GameKind::GoRoma(&[]), |config| {
        // A DEV token gets through the edge, so the Go service's own status check is reached.
        config.handshake.allowed_statuses =
            vec![OnlineStatus::Gate as i32, OnlineStatus::Dev as i32];
    })
    .await
}

/// The metadata the Go service read on the `service` stream of object `oid`.
async fn stream_metadata(stack: &Stack, service: &str, oid: i64) -> Value {
    let roma = stack.game.roma().expect("the Go Roma peer");
    let oid = oid.to_string();
    let opened = roma
        .wait_event("stream", |e| {
            e["service"] == service && e["metadata"]["x-md-global-oid"] == oid.as_str()
        })
        .await;
    opened["metadata"].clone()
}

#[tokio::test]
async fn a_player_tunnel_to_a_grpc_go_service_echoes_pushes_and_carries_romas_metadata() {
    let stack = go_roma_stack().await;
    let uid = 3001;
    let mut client = stack.ground.client(&stack.tcp(), uid, 7).await;
    let reply = client
        .request(request(2, 1, 0, b"hello go"), |p| unexpected(&p))
        .await
        .unwrap();
    assert_eq!(
        (reply.r#mod, reply.seq, reply.obj, reply.data.as_slice()),
        (2, 1, uid, &b"hello go"[..]),
        "echoed by the Go service with obj = uid"
    );

    let reply = client
        .request(request(2, demo::ECHO_AND_PUSH, 0, b"p"), |p| {
            panic!("push before the reply {p:?}")
        })
        .await
        .unwrap();
    assert_eq!(reply.data, b"p");
    let push = recv(&mut client).await;
    assert_eq!(
        (
            push.r#mod,
            push.seq,
            push.obj,
            push.index,
            push.data.as_slice()
        ),
        (2, demo::ECHO_AND_PUSH, uid, 0, &b"pushed"[..]),
        "a push on the stream"
    );

    let md = stream_metadata(&stack, "player", uid).await;
    let text = |key: &str| md[key].as_str().unwrap_or_default().to_owned();
    assert_eq!(text("x-md-global-uid"), uid.to_string(), "{md}");
    assert_eq!(text("x-md-global-sid"), "7", "{md}");
    assert_eq!(text("x-md-global-status"), "1", "{md}");
    assert_eq!(text("x-md-global-color"), COLOR, "{md}");
    assert!(
        text("x-md-global-client-ip").starts_with("127.0.0.1"),
        "{md}"
    );
    let referer = text("x-md-global-gate-referer");
    assert_eq!(text("x-md-global-referer"), referer, "{md}");
    let (endpoint, worker) = referer
        .split_once('#')
        .expect("<gate endpoint>#<worker id>");
    assert_eq!(endpoint, stack.broker.endpoint(), "{md}");
    assert!(worker.parse::<u64>().is_ok(), "{md}");
    client.close().await.unwrap();
}

#[tokio::test]
async fn room_chat_through_a_grpc_go_service_reaches_exactly_the_other_members() {
    let stack = go_roma_stack().await;
    let room = 88;
    let mut alice = stack.client(&stack.tcp(), 3101).await;
    let mut bob = stack.client(&stack.ws(), 3102).await;
    let mut carol = stack.client(&stack.tcp(), 3103).await;
    for client in [&mut alice, &mut bob] {
        let ok = client
            .request(request(6, demo::JOIN, room, b""), |p| unexpected(&p))
            .await
            .unwrap();
        assert_eq!(
            (ok.r#mod, ok.obj, ok.data.as_slice()),
            (6, room, &b"ok"[..])
        );
    }
    let ok = alice
        .request(request(6, demo::SAY, room, b"hello"), |_| {})
        .await
        .unwrap();
    assert_eq!(ok.data, b"ok", "the Go service's Multicast call succeeded");
    let push = recv(&mut bob).await;
    assert_eq!(
        (
            push.r#mod,
            push.seq,
            push.obj,
            push.index,
            push.data.as_slice()
        ),
        (6, demo::SAID, room, 0, &b"3101: hello"[..])
    );
    let roma = stack.game.roma().unwrap();
    let multicast = roma.wait_event("multicast", |_| true).await;
    assert_eq!(
        (&multicast["uids"], &multicast["pushed"]),
        (&serde_json::json!([3102]), &serde_json::json!([3102])),
        "the broker's PushService answered a grpc-go client: {multicast}"
    );
    let md = stream_metadata(&stack, "room", room).await;
    assert_eq!(md["x-md-global-uid"], "3101", "{md}");

    assert_quiet(&mut carol, "carol, not in the room,").await;
    assert_quiet(&mut alice, "alice, who said it,").await;
}

#[tokio::test]
async fn a_grpc_go_service_refuses_a_tunnel_whose_status_is_not_gate() {
    let stack = go_roma_stack().await;
    let uid = 3201;
    let keys = &stack.ground.keys;
    let token = keys.token_with(uid, 1, unix_now() + 600, OnlineStatus::Dev as i32);
    let mut client = janus_client::Client::connect(
        &stack.tcp(),
        &keys.client_config(janus_protocol::handshake::Mode::V2),
        &token,
    )
    .await
    .unwrap();
    client.send(request(2, 5, 0, b"dev")).await.unwrap();
    let refused = recv(&mut client).await;
    assert_eq!(
        (refused.r#mod, refused.seq),
        (system::MODULE, system::SEQ_UNEXPECTED_ERR),
        "{refused:?}"
    );
    let err = ScServerUnexpectedErr::decode(&refused.data[..]).unwrap();
    assert_eq!((err.r#mod, err.seq), (2, 5), "{err:?}");
    let roma = stack.game.roma().unwrap();
    let rejected = roma.wait_event("rejected", |_| true).await;
    assert_eq!(
        rejected["error"], "must be called by Gateway. status=2",
        "{rejected}"
    );
}

/// A go-pantheon config holds its Lares token key as a raw string: 32 bytes → AES-256-GCM.
const RAW_TOKEN_KEY: &str = "go-pantheon-lares-token-key-32by";

/// A legacy-mode stack with a game service of `kind` whose token key is [`RAW_TOKEN_KEY`]'s
/// bytes, and the server key written as a PEM PUBLIC KEY and as an X.509 certificate for the Go
/// client; `tune` may change the edge configuration further.
async fn legacy_stack(
    kind: GameKind,
    tune: impl FnOnce(&mut EdgeConfig),
) -> (Stack, std::path::PathBuf, std::path::PathBuf) {
    legacy_stack_with_key(kind, RAW_TOKEN_KEY, tune).await
}

/// [`legacy_stack`] whose token key is `raw_key`'s bytes, read as a go-pantheon config holds
/// it (`token_key_format = "raw"`).
async fn legacy_stack_with_key(
    kind: GameKind,
    raw_key: &str,
    tune: impl FnOnce(&mut EdgeConfig),
) -> (Stack, std::path::PathBuf, std::path::PathBuf) {
    let mut ground = Ground::start().await;
    let signing = SigningKey::generate();
    let dir = janus_integration_tests::scratch_dir("go-client").keep();
    let public = dir.join("server.pub.pem");
    std::fs::write(
        &public,
        signing.verifying_key().to_public_key_pem().unwrap(),
    )
    .unwrap();
    let key_pair = rcgen::KeyPair::from_pem(&signing.to_pkcs8_pem().unwrap()).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key_pair)
        .unwrap();
    let certificate = dir.join("server.crt");
    std::fs::write(&certificate, cert.pem()).unwrap();
    ground.keys = Arc::new(Keys {
        signing,
        token: TokenKey::parse(format!("{raw_key}\n").as_bytes(), TokenKeyFormat::Raw).unwrap(),
    });
    let stack = Stack::start_on(ground, kind, |config| {
        config.handshake.allow_legacy = true;
        tune(config);
    })
    .await;
    (stack, public, certificate)
}

/// The Go client's flags for `transport` at `addr` logging in as `uid`.
fn go_client_args(transport: &str, addr: &str, server_pub: &Path, uid: i64) -> Vec<String> {
    [
        "-transport",
        transport,
        "-addr",
        addr,
        "-server-pub",
        &server_pub.display().to_string(),
        "-token-key",
        RAW_TOKEN_KEY,
        "-uid",
        &uid.to_string(),
        "-color",
        COLOR,
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn run_go_client(args: &[String]) -> gopeer::ClientRun {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    gopeer::client(&args, Duration::from_secs(60)).await
}

/// Asserts every check of one session of the Go client, over `transport`.
fn assert_go_session(run: &gopeer::ClientRun, transport: &str, uid: i64) {
    run.assert_sessions(uid, 1);
    assert_eq!(run.check("done")["transport"], transport, "{run:#?}");
}

#[tokio::test]
async fn a_go_pantheon_client_in_legacy_mode_over_tcp_and_websocket() {
    let (stack, public, certificate) = legacy_stack(GameKind::Demo, |_| {}).await;
    let tcp = stack.edge.tcp_addr.unwrap().to_string();
    let ws = format!("ws://{}/ws", stack.edge.ws_addr.unwrap());
    for (uid, transport, addr, key) in [
        (4001, "tcp", &tcp, &public),
        (4002, "ws", &ws, &public),
        (4003, "tcp", &tcp, &certificate),
        (4004, "ws", &ws, &certificate),
    ] {
        let run = run_go_client(&go_client_args(transport, addr, key, uid)).await;
        assert_go_session(&run, transport, uid);
    }
}

#[tokio::test]
async fn lares_style_tokens_sealed_with_raw_keys_of_16_24_and_32_bytes_open() {
    // go-pantheon takes the configured string's bytes as the AES key: AES-128/192/256-GCM.
    for (uid, raw_key) in [
        (4201, "lares-key-16-by!"),
        (4202, "go-pantheon-lares-key-24"),
        (4203, RAW_TOKEN_KEY),
    ] {
        let (stack, public, _) = legacy_stack_with_key(GameKind::Demo, raw_key, |_| {}).await;
        let tcp = stack.edge.tcp_addr.unwrap().to_string();
        let mut args = go_client_args("tcp", &tcp, &public, uid);
        let key = args.iter().position(|a| a == RAW_TOKEN_KEY).unwrap();
        args[key] = raw_key.into();
        assert_go_session(&run_go_client(&args).await, "tcp", uid);
    }
}

#[tokio::test]
async fn a_go_client_refuses_the_wrong_server_key_and_janus_the_wrong_token_key() {
    let (stack, public, _) = legacy_stack(GameKind::Demo, |_| {}).await;
    let tcp = stack.edge.tcp_addr.unwrap().to_string();

    let other = std::env::temp_dir().join(format!("janus-go-other-{}.pem", std::process::id()));
    std::fs::write(
        &other,
        SigningKey::generate()
            .verifying_key()
            .to_public_key_pem()
            .unwrap(),
    )
    .unwrap();
    let run = run_go_client(&go_client_args("tcp", &tcp, &other, 4101)).await;
    assert!(!run.success, "{run:#?}");
    assert!(
        run.stderr
            .contains("signature over its key does not verify"),
        "{run:#?}"
    );

    let mut args = go_client_args("tcp", &tcp, &public, 4102);
    let key = args.iter().position(|a| a == RAW_TOKEN_KEY).unwrap();
    args[key] = "another-lares-token-key-32-bytes".into();
    let run = run_go_client(&args).await;
    assert!(!run.success, "{run:#?}");
    assert!(run.stderr.contains("handshake"), "{run:#?}");
    assert!(run.lines.is_empty(), "no check passed: {run:#?}");
}

/// A heartbeat request with the client's clock at `client_time`.
fn heartbeat(client_time: i64) -> Packet {
    let beat = CsHeartbeat { client_time };
    system::packet(system::SEQ_HEARTBEAT, 0, beat.encode_to_vec())
}

#[tokio::test]
async fn in_the_go_pantheon_heartbeat_mode_a_grpc_go_service_answers_with_romas_rules() {
    let stack = Stack::start_with_game(GameKind::GoRoma(&[]), |config| {
        config.session.heartbeats = HeartbeatMode::Game;
    })
    .await;
    let uid = 3301;
    let mut client = stack.client(&stack.tcp(), uid).await;
    let mut beat = async |client_time: i64| {
        let reply = client
            .request(heartbeat(client_time), |p| unexpected(&p))
            .await
            .unwrap();
        assert_eq!(
            (reply.r#mod, reply.seq, reply.obj),
            (system::MODULE, system::SEQ_HEARTBEAT, uid),
            "Roma's reply carries obj = uid"
        );
        ScHeartbeat::decode(&reply.data[..]).unwrap()
    };
    // Sixty seconds off: the edge would refuse it (±5 s); Roma takes the first one whatever it
    // says, then holds the client to ±30 s.
    let first = beat(unix_now() - 60).await;
    assert_eq!(
        first.code,
        sc_heartbeat::Code::Succeeded as i32,
        "{first:?}"
    );
    assert!((first.server_time - unix_now()).abs() <= 2, "{first:?}");
    let second = beat(unix_now() - 60).await;
    assert_eq!(
        second.code,
        sc_heartbeat::Code::ErrTime as i32,
        "{second:?}"
    );
    let third = beat(unix_now() - 20).await;
    assert_eq!(
        third.code,
        sc_heartbeat::Code::Succeeded as i32,
        "{third:?}"
    );
    let roma = stack.game.roma().unwrap();
    roma.wait_event("heartbeat", |e| e["code"] == 2).await;
    // Roma's events come through its standard output, read apart from the replies: the
    // third's may arrive a moment after its reply.
    for _ in 0..100 {
        if roma.events_of("heartbeat").len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        roma.events_of("heartbeat").len(),
        3,
        "every heartbeat reached the game service"
    );
}

#[tokio::test]
async fn a_go_pantheon_client_through_janus_to_a_grpc_go_service() {
    let (stack, public, _) = legacy_stack(GameKind::GoRoma(&[]), |config| {
        config.session.heartbeats = HeartbeatMode::Game;
    })
    .await;
    let tcp = stack.edge.tcp_addr.unwrap().to_string();
    let ws = format!("ws://{}/ws", stack.edge.ws_addr.unwrap());
    for (uid, transport, addr) in [(4201, "tcp", &tcp), (4202, "ws", &ws)] {
        let run = run_go_client(&go_client_args(transport, addr, &public, uid)).await;
        assert_go_session(&run, transport, uid);
        let md = stream_metadata(&stack, "player", uid).await;
        assert_eq!(md["x-md-global-color"], COLOR, "{md}");
    }
    let roma = stack.game.roma().unwrap();
    assert_eq!(
        roma.events_of("heartbeat").len(),
        2,
        "the Go service answered both clients' heartbeats"
    );
}

#[tokio::test]
async fn with_romas_conflict_rule_room_requests_with_obj_0_reach_each_players_own_room_object() {
    let stack = Stack::start_with_game(GameKind::GoRoma(&["-kick-conflicts"]), |_| {}).await;
    let (alice, bob) = (5001, 5002);
    let mut clients = [
        (alice, stack.client(&stack.tcp(), alice).await),
        (bob, stack.client(&stack.ws(), bob).await),
    ];
    for seq in [demo::JOIN, demo::LEAVE] {
        for (uid, client) in &mut clients {
            let ok = client
                .request(request(6, seq, 0, b""), |p| unexpected(&p))
                .await
                .unwrap();
            assert_eq!(
                (ok.r#mod, ok.obj, ok.data.as_slice()),
                (6, *uid, &b"ok"[..]),
                "room object = the player's uid"
            );
        }
    }
    stream_metadata(&stack, "room", alice).await;
    stream_metadata(&stack, "room", bob).await;
    let roma = stack.game.roma().unwrap();
    assert_eq!(
        roma.events_of("kicked"),
        Vec::<Value>::new(),
        "nobody kicked"
    );

    // The rule is real: two players' tunnels to one room object, and the older one is ended.
    for (_, client) in &mut clients {
        client.send(request(6, demo::JOIN, 99, b"")).await.unwrap();
    }
    let kicked = roma.wait_event("kicked", |_| true).await;
    assert_eq!(
        (&kicked["service"], &kicked["oid"]),
        (&"room".into(), &99.into())
    );
}
