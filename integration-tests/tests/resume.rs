//! Session resume against a running edge, broker (routes and bus in memory) and demo game: a client loses
//! its TCP connection while a game service pushes, comes back over WebSocket, then moves to QUIC
//! while still connected; every push arrives exactly once and in order, and the broker session
//! and its tunnel are the ones from before. The same holds when the client comes back at another
//! edge (which asks the session's broker directly), and when the edge it was at drains: a
//! resumable client is not logged out, its broker parks the session. A session nobody resumes
//! ends when its window does.

use std::sync::Arc;
use std::time::Duration;

use janus_edge::Edge;

use janus_client::{Client, Endpoint, Reconnect, unix_now};
use janus_integration_tests::ports;
use janus_integration_tests::stack::{
    COLOR, Game, GameKind, Ground, Stack, assert_logout, echo, metric, multicast, quic, recv, tcp,
    wait_metric, ws,
};
use janus_proto::broadcaster::service::push::v1::{
    MulticastRequest, PushBody, push_service_client::PushServiceClient,
};
use janus_proto::message::CsHeartbeat;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_protocol::handshake::Mode;
use janus_protocol::keys::SigningKey;
use janus_protocol::system;
use prost::Message;

const PUSHES: u32 = 400;
const BROKER_SESSIONS: &str = "janus_broker_live{what=\"sessions\"}";
const PARKED: &str = "janus_broker_sessions_parked";
const PLAYER_TUNNELS: &str =
    "janus_broker_tunnel_opens_total{result=\"ok\",service=\"roma.player.service\"}";

/// Player `uid` logged in at `endpoint`, asking for a resume ticket.
async fn login_resumable(stack: &Stack, endpoint: &Endpoint, uid: i64) -> Client {
    let keys = &stack.ground.keys;
    let mut config = keys.client_config(Mode::V2);
    config.handshake.resumable = true;
    Client::connect(endpoint, &config, &keys.token(uid))
        .await
        .unwrap_or_else(|e| panic!("uid {uid} could not log in at {endpoint:?}: {e}"))
}

async fn round_trip(client: &mut Client, text: &str) {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(echo(text.as_bytes()), |push| {
            panic!("no push expected during {text}: {push:?}")
        }),
    )
    .await
    .expect("an answer within 10 s")
    .expect("the session answers");
    assert_eq!(reply.data, text.as_bytes());
}

/// The game service pushes [`PUSHES`] numbered messages to `uid`, 3 ms apart, each of which
/// must find the session.
async fn push_numbered(stack: &Stack, uid: i64) -> tokio::task::JoinHandle<()> {
    let mut push = PushServiceClient::connect(format!("http://{}", stack.broker.endpoint()))
        .await
        .unwrap();
    tokio::spawn(async move {
        for n in 0..PUSHES {
            let body = PushBody {
                data: n.to_string().into_bytes(),
                r#mod: 9,
                ..Default::default()
            };
            let pushed = multicast(&mut push, uid, vec![body]).await;
            assert_eq!(pushed, vec![uid], "push {n} found the session");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

/// Receives the rest of the numbered pushes (`got` holds those received so far, the first
/// `parked_at` before the first drop) and checks that every one arrived exactly once, in order.
async fn all_pushes_once_in_order(
    client: &mut Client,
    mut got: Vec<u32>,
    pusher: tokio::task::JoinHandle<()>,
    parked_at: usize,
) {
    collect(client, &mut got, PUSHES as usize).await;
    pusher.await.unwrap();
    let expected: Vec<u32> = (0..PUSHES).collect();
    assert_eq!(
        got, expected,
        "every push exactly once, in order (parked after {parked_at})"
    );
}

/// The broker at `broker` holds one session, with the one player tunnel it ever opened: the
/// resumes went on with the session instead of making a new one.
async fn one_broker_session_and_tunnel_all_along(broker: std::net::SocketAddr) {
    assert_eq!(
        metric(broker, BROKER_SESSIONS).await,
        Some(1.0),
        "the same broker session"
    );
    assert_eq!(
        metric(broker, PLAYER_TUNNELS).await,
        Some(1.0),
        "the same tunnel"
    );
}

/// Receives pushes until `got` holds `until` of them.
async fn collect(client: &mut Client, got: &mut Vec<u32>, until: usize) {
    while got.len() < until {
        let push = recv(client).await;
        let n = std::str::from_utf8(&push.data)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a numbered push: {push:?}"));
        got.push(n);
    }
}

#[tokio::test]
async fn a_session_resumes_over_other_transports_without_losing_or_repeating_a_push() {
    let stack = Stack::in_memory(|_| {}).await;
    let (edge, broker) = (stack.edge.admin_addr, stack.broker.admin_addr);
    let uid = 4242;
    let mut client = login_resumable(&stack, &stack.tcp(), uid).await;
    let window = client.resume_ticket().expect("a ticket").offer.window_secs;
    assert_eq!(window, 30, "the default window");
    round_trip(&mut client, "before").await;
    wait_metric(broker, PLAYER_TUNNELS, |v| v == 1.0).await;

    // The game service pushes numbered messages, paced so the stream spans both moves.
    let pusher = push_numbered(&stack, uid).await;

    // The TCP connection drops mid-stream, unread pushes in flight; the edge parks the session
    // and keeps what the game pushes meanwhile.
    let mut got = Vec::new();
    collect(&mut client, &mut got, 100).await;
    // A heartbeat whose reply is lost with the connection: heartbeat replies are not replayed
    // (a replayed one would break the count of numbered pushes below).
    let beat = CsHeartbeat {
        client_time: unix_now(),
    };
    client
        .send(system::packet(
            system::SEQ_HEARTBEAT,
            0,
            beat.encode_to_vec(),
        ))
        .await
        .unwrap();
    client.disconnect();
    wait_metric(broker, PARKED, |v| v == 1.0).await;
    let parked_at = got.len();

    // Back over WebSocket.
    client
        .resume(&stack.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    wait_metric(broker, PARKED, |v| v == 0.0).await;
    collect(&mut client, &mut got, 250).await;

    // Over to QUIC while the WebSocket is still up (the edge learns of the move from the
    // resume itself).
    client
        .resume(&quic(&stack.edge), Duration::from_secs(5))
        .await
        .unwrap();
    all_pushes_once_in_order(&mut client, got, pusher, parked_at).await;

    // A request sent just before the connection drops, with nothing else going on: its reply
    // comes with the resume (from the edge's kept packets, or the request is sent again).
    let index = client.send(echo(b"in flight")).await.unwrap();
    client.disconnect();
    wait_metric(broker, PARKED, |v| v == 1.0).await;
    client
        .resume(&stack.tcp(), Duration::from_secs(5))
        .await
        .unwrap();
    let reply = recv(&mut client).await;
    assert_eq!(
        (reply.index, reply.data.as_slice()),
        (index, &b"in flight"[..])
    );
    round_trip(&mut client, "after").await;
    assert_eq!(
        client.received(),
        u64::from(PUSHES) + 3,
        "the pushes and three replies, each counted once across four connections"
    );
    assert_eq!(
        metric(edge, "janus_edge_resumes_total{result=\"ok\"}").await,
        Some(3.0)
    );
    one_broker_session_and_tunnel_all_along(broker).await;
    assert_eq!(
        metric(broker, "janus_broker_resumes_total{result=\"ok\"}").await,
        Some(3.0),
        "every resume was decided by the session's broker"
    );
    assert_eq!(
        metric(broker, "janus_broker_kicks_total{code=\"Server\"}").await,
        None,
        "nobody was logged out on the way"
    );

    // A resumable client that leaves says so: its session ends at once.
    client.close().await.unwrap();
    wait_metric(broker, BROKER_SESSIONS, |v| v == 0.0).await;
    assert_eq!(metric(broker, PARKED).await, Some(0.0));
}

#[tokio::test]
async fn a_session_nobody_resumes_ends_with_its_window_and_its_ticket_is_refused() {
    let stack = Stack::in_memory(|config| config.resume.window_secs = Duration::from_secs(1)).await;
    let (edge, broker) = (stack.edge.admin_addr, stack.broker.admin_addr);
    let mut neighbour = stack.client(&stack.tcp(), 11).await;
    let mut client = login_resumable(&stack, &stack.tcp(), 12).await;
    round_trip(&mut client, "before").await;
    client.disconnect();
    wait_metric(
        broker,
        "janus_broker_sessions_lost_total{reason=\"resume_expired\"}",
        |v| v == 1.0,
    )
    .await;
    wait_metric(broker, BROKER_SESSIONS, |v| v == 1.0).await;
    assert_eq!(metric(broker, PARKED).await, Some(0.0));

    let late = client.resume(&stack.ws(), Duration::from_secs(5)).await;
    assert!(late.is_err(), "an expired session cannot be resumed");
    wait_metric(
        edge,
        "janus_edge_resumes_total{result=\"resume_unknown\"}",
        |v| v == 1.0,
    )
    .await;
    neighbour.send(echo(b"still here")).await.unwrap();
    assert_eq!(recv(&mut neighbour).await.data, b"still here");
}

#[tokio::test]
async fn a_session_resumes_at_any_edge_and_outlives_the_edge_it_was_at() {
    let stack = Stack::in_memory(|_| {}).await;
    let config = stack.ground.edge_config(&[stack.broker.endpoint()]);
    let other = stack.ground.edge(config).await;
    let broker = stack.broker.admin_addr;
    let uid = 4343;
    let mut client = login_resumable(&stack, &stack.tcp(), uid).await;
    round_trip(&mut client, "before").await;
    let pusher = push_numbered(&stack, uid).await;

    // The client's address changes and the load balancer sends it to the other edge, over
    // WebSocket this time; that edge asks the session's broker, nothing is forwarded.
    let mut got = Vec::new();
    collect(&mut client, &mut got, 100).await;
    client.disconnect();
    wait_metric(broker, PARKED, |v| v == 1.0).await;
    let parked_at = got.len();
    client
        .resume(&ws(&other), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        metric(other.admin_addr, "janus_edge_resumes_total{result=\"ok\"}").await,
        Some(1.0),
        "resumed at the edge the client reached"
    );
    collect(&mut client, &mut got, 200).await;

    // That edge is deployed (drained) while pushes keep coming: a resumable client is not
    // logged out, its broker parks the session, and the client comes back at the first edge.
    other.drain(Duration::ZERO).await;
    wait_metric(broker, PARKED, |v| v == 1.0).await;
    client
        .resume(&quic(&stack.edge), Duration::from_secs(5))
        .await
        .unwrap();
    all_pushes_once_in_order(&mut client, got, pusher, parked_at).await;
    round_trip(&mut client, "after the deploy").await;
    assert_eq!(client.received(), u64::from(PUSHES) + 2);
    one_broker_session_and_tunnel_all_along(broker).await;
    assert_eq!(
        metric(broker, "janus_broker_kicks_total{code=\"Server\"}").await,
        None,
        "nobody was logged out"
    );
    client.close().await.unwrap();
    wait_metric(broker, BROKER_SESSIONS, |v| v == 0.0).await;
}

#[tokio::test]
async fn a_draining_edge_moves_resumable_clients_to_another_edge_and_logs_out_only_the_rest() {
    let stack = Stack::in_memory(|config| config.drain_spread_secs = Duration::from_secs(1)).await;
    let config = stack.ground.edge_config(&[stack.broker.endpoint()]);
    let other = stack.ground.edge(config).await;
    let broker = stack.broker.admin_addr;
    let uid = 4545;
    let mut client = login_resumable(&stack, &stack.tcp(), uid).await;
    client.reconnect_with(Reconnect::to(vec![stack.tcp(), tcp(&other)]));
    let mut legacy = stack.client(&stack.tcp(), 4546).await;
    round_trip(&mut client, "before").await;
    let pusher = push_numbered(&stack, uid).await;
    let mut got = Vec::new();
    collect(&mut client, &mut got, 100).await;

    // The first edge is deployed: it tells the resumable client to reconnect (within the 1 s
    // spread), and the client resumes at the other edge by itself, missing nothing.
    let Stack {
        edge,
        ground: _ground,
        broker: _broker,
        game: _game,
    } = stack;
    let draining = tokio::spawn(edge.drain(Duration::from_secs(3)));
    let parked_at = got.len();
    all_pushes_once_in_order(&mut client, got, pusher, parked_at).await;
    let resumed = client.take_resumed();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(resumed[0].endpoint, tcp(&other));
    assert!(
        resumed[0].cause.starts_with("reconnect hint"),
        "{resumed:?}"
    );
    round_trip(&mut client, "after the deploy").await;

    // A client without a ticket cannot move: it is logged out at the end of the grace, as
    // before.
    let logout = recv(&mut legacy).await;
    assert_logout(&logout, LogoutCode::Server);
    draining.await.unwrap();
    assert_eq!(
        metric(broker, "janus_broker_resumes_total{result=\"ok\"}").await,
        Some(1.0)
    );
    // The logged-out session is gone; the moved one is the one from before, tunnel and all.
    wait_metric(broker, BROKER_SESSIONS, |v| v == 1.0).await;
    one_broker_session_and_tunnel_all_along(broker).await;
}

#[tokio::test]
async fn sessions_wait_for_a_replaced_broker_and_go_on_with_everything_they_had() {
    let stack = Stack::in_memory(|_| {}).await;
    let uid = 4747;
    let mut client = login_resumable(&stack, &stack.tcp(), uid).await;
    let mut plain = stack.client(&stack.tcp(), 4748).await;
    round_trip(&mut client, "before").await;
    round_trip(&mut plain, "before").await;
    let pushed = push_numbered(&stack, uid).await;
    let mut got = Vec::new();
    collect(&mut client, &mut got, PUSHES as usize).await;
    pushed.await.unwrap();

    // The only broker is replaced (a redeploy): for a moment no broker is up at all.
    let Stack {
        edge,
        ground,
        broker,
        game,
    } = stack;
    let endpoint = broker.endpoint().to_owned();
    broker.shutdown(Duration::ZERO).await;
    wait_metric(
        edge.admin_addr,
        "janus_edge_sessions_waiting_for_broker",
        |v| v == 2.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listener = ports::rebind(&endpoint).await;
    let config = ground.broker_config(&[&game.endpoint]);
    let broker = ground.broker_on(config, listener).await;
    wait_metric(
        edge.admin_addr,
        "janus_edge_sessions_waiting_for_broker",
        |v| v == 0.0,
    )
    .await;

    // Both sessions go on at the new broker; the resumable one keeps its count, so a resume
    // there replays exactly what it missed.
    round_trip(&mut plain, "after").await;
    round_trip(&mut client, "after").await;
    assert_eq!(client.received(), u64::from(PUSHES) + 2);
    client.disconnect();
    let pushed_while_away = {
        let mut push = PushServiceClient::connect(format!("http://{endpoint}"))
            .await
            .unwrap();
        push.multicast(MulticastRequest {
            bodies: vec![PushBody {
                data: b"while away".to_vec(),
                r#mod: 9,
                ..Default::default()
            }],
            uids: vec![uid],
            color: COLOR.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pushed_uids
    };
    assert_eq!(
        pushed_while_away,
        vec![uid],
        "the parked session took the push"
    );
    client
        .resume(&tcp(&edge), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(recv(&mut client).await.data, b"while away");
    assert_eq!(
        metric(
            edge.admin_addr,
            "janus_edge_closes_total{reason=\"no_broker\"}"
        )
        .await,
        None,
        "no session ended"
    );
    assert_eq!(
        metric(broker.admin_addr, BROKER_SESSIONS).await,
        Some(2.0),
        "both re-attached"
    );
}

#[tokio::test]
async fn a_resume_does_not_refill_the_rate_buckets() {
    let stack = Stack::in_memory(|config| {
        config.session.messages_per_sec = 1;
        config.session.message_burst = 6;
    })
    .await;
    let mut client = login_resumable(&stack, &stack.tcp(), 4848).await;
    for n in 0..6 {
        round_trip(&mut client, &format!("burst {n}")).await;
    }
    // The burst is spent; coming back on a new connection does not give it back.
    client.disconnect();
    client
        .resume(&stack.tcp(), Duration::from_secs(5))
        .await
        .unwrap();
    for _ in 0..3 {
        if client.send(echo(b"more")).await.is_err() {
            break;
        }
    }
    wait_metric(
        stack.edge.admin_addr,
        "janus_edge_closes_total{reason=\"message_rate\"}",
        |v| v == 1.0,
    )
    .await;
}

#[tokio::test]
async fn a_broker_parks_at_most_its_limit_and_ends_the_rest_with_a_reason() {
    let ground = Ground::in_memory();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker_addr = listener.local_addr().unwrap().to_string();
    let game = Game::start_kind(GameKind::from_env(), &broker_addr).await;
    let mut config = ground.broker_config(&[&game.endpoint]);
    config.resume.max_parked = 1;
    let broker = ground.broker_on(config, listener).await;
    let edge = ground.edge(ground.edge_config(&[&broker_addr])).await;
    let keys = &ground.keys;
    let mut resumable = keys.client_config(Mode::V2);
    resumable.handshake.resumable = true;
    let mut first = Client::connect(&tcp(&edge), &resumable, &keys.token(4901))
        .await
        .unwrap();
    let mut second = Client::connect(&tcp(&edge), &resumable, &keys.token(4902))
        .await
        .unwrap();
    round_trip(&mut first, "first").await;
    round_trip(&mut second, "second").await;
    first.disconnect();
    wait_metric(broker.admin_addr, PARKED, |v| v == 1.0).await;
    second.disconnect();
    wait_metric(
        broker.admin_addr,
        "janus_broker_sessions_lost_total{reason=\"resume_limit\"}",
        |v| v == 1.0,
    )
    .await;
    assert_eq!(metric(broker.admin_addr, PARKED).await, Some(1.0));
    assert!(
        second
            .resume(&tcp(&edge), Duration::from_secs(5))
            .await
            .is_err(),
        "the session beyond the limit is gone"
    );
    first
        .resume(&tcp(&edge), Duration::from_secs(5))
        .await
        .unwrap();
    round_trip(&mut first, "back").await;
}

#[tokio::test]
async fn clients_pinning_either_signing_key_log_in_and_resume_across_a_rollover() {
    // PROTOCOL.md §3.4: edges before the flip sign with the old key (version 1) and hold the
    // new one (version 2); edges after it the other way round. Clients ship either key.
    let stack = Stack::in_memory(|_| {}).await;
    let ground = &stack.ground;
    let (old, new) = (ground.keys.signing.clone(), SigningKey::generate());
    let edge = async |current: &SigningKey, version: i32, other: &SigningKey, other_version| {
        let mut config = ground.edge_config(&[stack.broker.endpoint()]);
        config.handshake.cert_version = version;
        let mut handshake = config.handshake_config(current.clone(), &ground.keys.token, None);
        handshake
            .other_signing_keys
            .insert(other_version, other.clone());
        let edge = Edge::start(config, Arc::new(handshake)).await.unwrap();
        assert!(edge.wait_for_broker(Duration::from_secs(10)).await);
        edge
    };
    let before = edge(&old, 1, &new, 2).await;
    let after = edge(&new, 2, &old, 1).await;
    let client = async |pinned: &SigningKey, version: i32, at: &Edge, uid: i64| {
        let mut config = ground.keys.client_config(Mode::V2);
        config.handshake.server_key = pinned.verifying_key();
        config.handshake.cert_version = version;
        config.handshake.resumable = true;
        Client::connect(&tcp(at), &config, &ground.keys.token(uid))
            .await
            .unwrap_or_else(|e| panic!("uid {uid} pinning version {version}: {e}"))
    };
    for (pinned, version, first, then, uid) in [
        (&old, 1, &before, &after, 4801),
        (&old, 1, &after, &before, 4802),
        (&new, 2, &before, &after, 4803),
        (&new, 2, &after, &before, 4804),
    ] {
        let mut player = client(pinned, version, first, uid).await;
        round_trip(&mut player, "logged in").await;
        // Its ticket was sealed under the first edge's current key; the other edge opens it
        // and signs the resume with the key the client pins.
        player.disconnect();
        player
            .resume(&tcp(then), Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("uid {uid} resuming: {e}"));
        round_trip(&mut player, "resumed").await;
        player.close().await.unwrap();
    }
    // A client that pins the old key but asks for no version gets the current key of the
    // edge after the flip, and refuses it: versions, not guesses, pick the key.
    let mut config = ground.keys.client_config(Mode::V2);
    config.handshake.server_key = old.verifying_key();
    let refused = Client::connect(&tcp(&after), &config, &ground.keys.token(4805)).await;
    assert!(refused.is_err(), "a reply signed with the old key");
    // Each edge counts the handshakes it answered by kind and the key that answered, which is
    // how an operator sees when no client asks for the old version any more (step 4).
    let answered = async |edge: &Edge, kind: &str, version: i32| {
        let token = if kind == "login" { "current" } else { "none" };
        let series = format!(
            "janus_edge_handshake_keys_total{{cert_version=\"{version}\",kind=\"{kind}\",token_key=\"{token}\"}}"
        );
        metric(edge.admin_addr, &series).await.unwrap_or(0.0)
    };
    assert_eq!(answered(&before, "login", 1).await, 1.0, "4801");
    assert_eq!(answered(&before, "login", 2).await, 1.0, "4803");
    assert_eq!(answered(&before, "resume", 1).await, 1.0, "4802");
    assert_eq!(answered(&before, "resume", 2).await, 1.0, "4804");
    assert_eq!(answered(&after, "login", 1).await, 1.0, "4802");
    assert_eq!(answered(&after, "resume", 1).await, 1.0, "4801");
    assert_eq!(answered(&after, "resume", 2).await, 1.0, "4803");
    assert_eq!(
        answered(&after, "login", 2).await,
        2.0,
        "4804, and 4805 whose client refused the reply"
    );
}
