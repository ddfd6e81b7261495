//! The whole path with real parts: client library → edge (TCP or WebSocket) → broker (routes
//! and bus in memory, as in standalone mode; the route's test keeps it in a real Redis) → demo
//! game service, and back.

use std::time::Duration;

use janus_broker::route::{RouteStore, gate_route_key};
use janus_client::{Client, Endpoint, unix_now};
use janus_demo_game as demo;
use janus_integration_tests::stack::{
    COLOR, Stack, all_transports, assert_logout, assert_quiet, http_get, multicast, recv, request,
    wait_metric,
};
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::message::{
    CsHeartbeat, ScHeartbeat, ScServerLogout, ScServerUnexpectedErr, sc_heartbeat,
};
use janus_protocol::handshake::Mode;
use janus_protocol::system;
use prost::Message;

async fn echo_round_trip(stack: &Stack, endpoint: Endpoint, uid: i64, mode: Mode) {
    let mut client = stack.client_with(&endpoint, uid, mode).await;
    for n in 0..3u8 {
        let sent = request(2, 7, 0, &[n; 100]);
        let reply = client
            .request(sent, |p| panic!("unexpected push {p:?}"))
            .await
            .unwrap();
        assert_eq!(
            (reply.r#mod, reply.seq, reply.obj),
            (2, 7, uid),
            "echoed with obj = uid"
        );
        assert_eq!(reply.data, vec![n; 100]);
    }
    let big = vec![b'x'; 12_000];
    let reply = client
        .request(request(2, 8, uid, &big), |_| {})
        .await
        .unwrap();
    assert_eq!(
        reply.data, big,
        "large replies are compressed by the edge and inflated by the client"
    );

    let beat = CsHeartbeat {
        client_time: unix_now(),
    };
    let reply = client
        .request(
            system::packet(system::SEQ_HEARTBEAT, 0, beat.encode_to_vec()),
            |_| {},
        )
        .await
        .unwrap();
    let beat = ScHeartbeat::decode(&reply.data[..]).unwrap();
    assert_eq!(beat.code, sc_heartbeat::Code::Succeeded as i32);
    assert!((beat.server_time - unix_now()).abs() <= 2);
    client.close().await.unwrap();
}

#[tokio::test]
async fn every_transport_and_handshake_mode_carries_echo_heartbeat_pushes_and_kicks() {
    let stack = Stack::in_memory(|config| config.handshake.allow_legacy = true).await;
    let mut push = janus_proto::broadcaster::service::push::v1::push_service_client::PushServiceClient::connect(
        format!("http://{}", stack.broker.endpoint()),
    )
    .await
    .unwrap();
    let mut uid = 1100;
    for (name, endpoint) in all_transports(&stack.edge) {
        for mode in [Mode::V2, Mode::Legacy] {
            uid += 1;
            let context = format!("{name} {mode:?}");
            echo_round_trip(&stack, endpoint.clone(), uid, mode).await;

            let mut client = stack.client_with(&endpoint, uid, mode).await;
            let reply = client
                .request(request(2, demo::ECHO_AND_PUSH, 0, b"p"), |_| {})
                .await
                .unwrap();
            assert_eq!(reply.data, b"p", "{context}");
            assert_eq!(
                recv(&mut client).await.data,
                b"pushed",
                "{context}: tunnel push"
            );
            let body = janus_proto::broadcaster::service::push::v1::PushBody {
                data: b"from a service".to_vec(),
                r#mod: 9,
                ..Default::default()
            };
            let pushed = multicast(&mut push, uid, vec![body]).await;
            assert_eq!(pushed, vec![uid], "{context}");
            assert_eq!(
                recv(&mut client).await.data,
                b"from a service",
                "{context}: broker push"
            );

            let _newer = stack.client(&stack.tcp(), uid).await;
            let logout = recv(&mut client).await;
            assert_eq!(
                (logout.r#mod, logout.seq),
                (system::MODULE, system::SEQ_LOGOUT),
                "{context}"
            );
            let code = ScServerLogout::decode(&logout.data[..]).unwrap().code;
            assert_eq!(
                code,
                LogoutCode::ConflictingLogin as i32,
                "{context}: kicked"
            );
        }
    }
}

#[tokio::test]
async fn a_heartbeat_with_a_skewed_clock_gets_err_time() {
    let stack = Stack::in_memory(|_| {}).await;
    let mut client = stack.client(&stack.tcp(), 1010).await;
    let beat = CsHeartbeat {
        client_time: unix_now() - 3600,
    };
    let reply = client
        .request(
            system::packet(system::SEQ_HEARTBEAT, 0, beat.encode_to_vec()),
            |_| {},
        )
        .await
        .unwrap();
    let beat = ScHeartbeat::decode(&reply.data[..]).unwrap();
    assert_eq!(beat.code, sc_heartbeat::Code::ErrTime as i32);
}

#[tokio::test]
async fn the_gateway_route_lives_in_redis_while_the_session_does() {
    // About Redis itself: the one suite of this file on containers.
    let stack = Stack::start(|_| {}).await;
    let routes = stack.ground.routes();
    let key = gate_route_key(COLOR, 1020);
    let mut client = stack.client(&stack.tcp(), 1020).await;
    client
        .request(request(2, 1, 0, b"x"), |_| {})
        .await
        .unwrap();
    assert_eq!(
        routes.get(&key).await.unwrap().as_deref(),
        Some(stack.broker.endpoint())
    );
    client.close().await.unwrap();
    let mut gone = false;
    for _ in 0..50 {
        if routes.get(&key).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the route is deleted when the session ends");
}

#[tokio::test]
async fn a_second_login_kicks_the_first_with_conflicting_login() {
    let stack = Stack::in_memory(|_| {}).await;
    let mut first = stack.client(&stack.tcp(), 1030).await;
    first.request(request(2, 1, 0, b"a"), |_| {}).await.unwrap();
    let mut second = stack.client(&stack.ws(), 1030).await;
    let logout = recv(&mut first).await;
    assert_logout(&logout, LogoutCode::ConflictingLogin);
    let reply = second
        .request(request(2, 1, 0, b"b"), |_| {})
        .await
        .unwrap();
    assert_eq!(reply.data, b"b");
}

#[tokio::test]
async fn another_players_object_is_refused_and_the_session_goes_on() {
    let stack = Stack::in_memory(|_| {}).await;
    let mut client = stack.client(&stack.tcp(), 1040).await;
    client.send(request(2, 5, 999, b"steal")).await.unwrap();
    let refused = recv(&mut client).await;
    assert_eq!(
        (refused.r#mod, refused.seq),
        (system::MODULE, system::SEQ_UNEXPECTED_ERR)
    );
    let err = ScServerUnexpectedErr::decode(&refused.data[..]).unwrap();
    assert_eq!((err.r#mod, err.seq), (2, 5));
    let reply = client
        .request(request(2, 6, 0, b"mine"), |_| {})
        .await
        .unwrap();
    assert_eq!(reply.data, b"mine");
    let (_, metrics) = http_get(stack.broker.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("janus_broker_packets_refused_total{reason=\"foreign_object\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn room_chat_is_multicast_to_the_other_members_only() {
    let stack = Stack::in_memory(|_| {}).await;
    let room = 77;
    let mut alice = stack.client(&stack.tcp(), 2001).await;
    let mut bob = stack.client(&stack.ws(), 2002).await;
    let mut carol = stack.client(&stack.tcp(), 2003).await;
    for client in [&mut alice, &mut bob] {
        let ok = client
            .request(request(6, demo::JOIN, room, b""), |_| {})
            .await
            .unwrap();
        assert_eq!(ok.data, b"ok");
    }
    let ok = alice
        .request(request(6, demo::SAY, room, b"hello"), |_| {})
        .await
        .unwrap();
    assert_eq!(ok.data, b"ok");
    let push = recv(&mut bob).await;
    assert_eq!(
        (push.r#mod, push.seq, push.obj, push.index),
        (6, demo::SAID, room, 0)
    );
    assert_eq!(push.data, b"2001: hello");
    assert_quiet(&mut carol, "carol, not in the room,").await;
    assert_quiet(&mut alice, "alice, who said it,").await;
}

#[tokio::test]
async fn a_room_request_with_obj_0_goes_to_the_players_own_room_object() {
    // go-pantheon's rule: obj 0 is the player's uid in every module (PROTOCOL.md §14.4), so two
    // players asking for room object 0 reach two rooms, not one shared room 0.
    let stack = Stack::in_memory(|_| {}).await;
    let mut alice = stack.client(&stack.tcp(), 2101).await;
    let mut bob = stack.client(&stack.tcp(), 2102).await;
    for (client, uid) in [(&mut alice, 2101), (&mut bob, 2102)] {
        let ok = client
            .request(request(6, demo::JOIN, 0, b""), |_| {})
            .await
            .unwrap();
        assert_eq!((ok.data.as_slice(), ok.obj), (&b"ok"[..], uid));
    }
    // Were they in one room, bob would hear alice.
    let ok = alice
        .request(request(6, demo::SAY, 0, b"alone"), |_| {})
        .await
        .unwrap();
    assert_eq!(ok.obj, 2101);
    assert_quiet(&mut bob, "bob, in his own room,").await;
}

#[tokio::test]
async fn a_push_on_a_tunnel_reaches_the_client_after_the_reply() {
    let stack = Stack::in_memory(|_| {}).await;
    let mut client = stack.client(&stack.tcp(), 1050).await;
    let reply = client
        .request(request(2, demo::ECHO_AND_PUSH, 0, b"hello"), |p| {
            panic!("push before reply {p:?}")
        })
        .await
        .unwrap();
    assert_eq!(reply.data, b"hello");
    let push = recv(&mut client).await;
    assert_eq!(
        (push.r#mod, push.seq, push.index),
        (2, demo::ECHO_AND_PUSH, 0)
    );
    assert_eq!(push.data, b"pushed");
}

#[tokio::test]
async fn a_drain_keeps_sessions_for_the_grace_period_then_logs_them_out() {
    let stack = Stack::in_memory(|_| {}).await;
    let Stack {
        edge,
        ground,
        broker,
        game,
    } = stack;
    let endpoint = janus_integration_tests::stack::tcp(&edge);
    let admin = edge.admin_addr;
    let mut client = ground.client(&endpoint, 1060, 1).await;
    assert_eq!(
        client
            .request(request(2, 1, 0, b"before"), |_| {})
            .await
            .unwrap()
            .data,
        b"before"
    );

    let drain = tokio::spawn(edge.drain(Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = janus_integration_tests::stack::http_get(admin, "/ready").await;
    assert_eq!(status, 503, "not ready while draining");
    let keys = &ground.keys;
    let late = Client::connect(&endpoint, &keys.client_config(Mode::V2), &keys.token(1061)).await;
    assert!(late.is_err(), "no new sessions while draining");
    assert_eq!(
        client
            .request(request(2, 1, 0, b"during"), |_| {})
            .await
            .unwrap()
            .data,
        b"during",
        "sessions go on during the grace period"
    );
    let logout = recv(&mut client).await;
    assert_logout(&logout, LogoutCode::Server);
    drain.await.unwrap();
    drop((broker, game));
}

#[tokio::test]
async fn websocket_over_tls_when_a_certificate_is_configured() {
    let dir = std::env::temp_dir().join(format!("janus-wss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("ws.crt"), dir.join("ws.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let stack = Stack::in_memory(|config| {
        config.websocket.tls_cert_file = Some(cert.display().to_string());
        config.websocket.tls_key_file = Some(key.display().to_string());
    })
    .await;
    let addr = stack.edge.ws_addr.unwrap();

    janus_transport::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://localhost:{}/ws", addr.port());
    let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(tls));
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
            .await
            .unwrap();
    let keys = &stack.ground.keys;
    let mut client = Client::over_websocket(ws, &keys.client_config(Mode::V2), &keys.token(1070))
        .await
        .unwrap();
    assert_eq!(
        client
            .request(request(2, 1, 0, b"secure"), |_| {})
            .await
            .unwrap()
            .data,
        b"secure"
    );

    let plain = Client::connect(
        &stack.ws(),
        &keys.client_config(Mode::V2),
        &keys.token(1071),
    )
    .await;
    assert!(plain.is_err(), "a wss listener does not speak plain ws");
}

#[tokio::test]
async fn a_client_that_closes_ends_its_session_at_once_on_every_transport() {
    let stack = Stack::in_memory(|_| {}).await;
    for (uid, (name, endpoint)) in (1300..).zip(all_transports(&stack.edge)) {
        let client = stack.client(&endpoint, uid).await;
        client.close().await.unwrap();
        // KCP has no close of its own: without the client's CSBye the edge would only learn of
        // it at the idle timeout (60 s).
        wait_metric(
            stack.edge.admin_addr,
            &format!("janus_edge_sessions{{transport=\"{name}\"}}"),
            |v| v == 0.0,
        )
        .await;
    }
    wait_metric(
        stack.edge.admin_addr,
        "janus_edge_closes_total{reason=\"client_closed\"}",
        |v| v == 4.0,
    )
    .await;
}
