//! Per-class delivery (PROTOCOL.md §16) against a running edge, broker (routes and bus in
//! memory) and demo game: a client that stops reading for three seconds while a game service
//! pushes 2 000 state updates over 10 keys and 50 events keeps its session and then gets the
//! newest state of every key and all 50 events, in order; with events only it still ends as a
//! slow consumer; a resume in the middle of the conflation gets the same guarantees, counted
//! exactly (PROTOCOL.md §13.2); a push may ask for the state class itself; a key's rate cap
//! lets a reading client have its newest packet at that rate.

use std::collections::BTreeMap;
use std::time::Duration;

use janus_broker::Broker;
use janus_broker::config::{DeliveryRule, RuleClass};
use janus_client::Client;
use janus_integration_tests::ports;
use janus_integration_tests::stack::{
    COLOR, Game, GameKind, Ground, echo, metric, multicast, recv, tcp,
};
use janus_proto::broadcaster::service::push::v1::{
    DeliveryClass, PushBody, push_service_client::PushServiceClient,
};
use janus_proto::gate::service::push::v1 as gate;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_protocol::handshake::Mode;
use janus_protocol::system;
use prost::Message;

/// The module pushed to: seq [`STATE`] is state (latest wins per obj), seq [`EVENT`] an event.
const MODULE: i32 = 9;
const STATE: i32 = 1;
const EVENT: i32 = 2;
const KEYS: i64 = 10;
const REPLACED: &str = "janus_broker_delivery_total{class=\"state\",outcome=\"replaced\"}";

/// A broker with seq [`STATE`] of [`MODULE`] as state, an edge and the demo game.
struct Setup {
    ground: Ground,
    broker: Broker,
    edge: janus_edge::Edge,
    _game: Game,
}

/// With `rule`, the broker's `[delivery]` says seq [`STATE`] is state, at most that many
/// packets per second per key (0: no cap); without, only a push that asks for it makes a
/// packet state.
async fn start(rule: Option<f64>) -> Setup {
    let ground = Ground::in_memory();
    let listener = ports::tokio_listener();
    let broker_addr = listener.local_addr().unwrap().to_string();
    let game = Game::start_kind(GameKind::Demo, &broker_addr).await;
    let mut config = ground.broker_config(&[&game.endpoint]);
    if let Some(max_rate_hz) = rule {
        config.delivery.rules = vec![DeliveryRule {
            module: MODULE,
            seqs: vec![STATE],
            class: RuleClass::State,
            max_rate_hz,
        }];
    }
    let broker = ground.broker_on(config, listener).await;
    let edge = ground.edge(ground.edge_config(&[&broker_addr])).await;
    Setup {
        ground,
        broker,
        edge,
        _game: game,
    }
}

impl Setup {
    async fn login(&self, uid: i64, resumable: bool) -> Client {
        let keys = &self.ground.keys;
        let mut config = keys.client_config(Mode::V2);
        config.handshake.resumable = resumable;
        let mut client = Client::connect(&tcp(&self.edge), &config, &keys.token(uid))
            .await
            .unwrap_or_else(|e| panic!("uid {uid} could not log in: {e}"));
        // One round trip: the broker holds the session before the pushes start.
        let reply = client.request(echo(b"hello"), |_| {}).await.unwrap();
        assert_eq!(reply.data, b"hello");
        client
    }

    async fn pusher(&self) -> PushServiceClient<tonic::transport::Channel> {
        PushServiceClient::connect(format!("http://{}", self.broker.endpoint()))
            .await
            .unwrap()
    }

    async fn broker_metric(&self, series: &str) -> f64 {
        metric(self.broker.admin_addr, series).await.unwrap_or(0.0)
    }
}

/// An 8 KiB incompressible body whose first eight bytes are `n`: large enough that the
/// client's socket buffers (megabytes on loopback) fill within the first few hundred pushes
/// and the edge's queue reaches its backlog mark.
fn body(n: u64) -> Vec<u8> {
    let mut data: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(n as u32) >> 11) as u8)
        .collect();
    data[..8].copy_from_slice(&n.to_be_bytes());
    data
}

fn number(packet: &janus_proto::packet::Packet) -> u64 {
    u64::from_be_bytes(packet.data[..8].try_into().unwrap())
}

/// Pushes `states` state updates round the [`KEYS`] keys to `uid` and, among them, `events`
/// events, numbered in one sequence; returns the last number pushed to each key and the
/// events' numbers. Each push is answered once the broker took it. With `ask`, each state
/// body asks to be state itself (PROTOCOL.md §16).
async fn push(
    pusher: &mut PushServiceClient<tonic::transport::Channel>,
    uid: i64,
    (from, states, events): (u64, u64, u64),
    ask: bool,
) -> (BTreeMap<i64, u64>, Vec<u64>) {
    let mut latest = BTreeMap::new();
    let mut sent_events = Vec::new();
    let every = states / events.max(1);
    for i in 0..states {
        let n = from + i * 2;
        let obj = 1 + (i as i64 % KEYS);
        let mut bodies = vec![PushBody {
            data: body(n),
            obj,
            r#mod: MODULE,
            seq: STATE,
            delivery_class: if ask {
                DeliveryClass::State.into()
            } else {
                DeliveryClass::Unspecified.into()
            },
            ..Default::default()
        }];
        latest.insert(obj, n);
        if events > 0 && i % every == every - 1 && (sent_events.len() as u64) < events {
            bodies.push(PushBody {
                data: body(n + 1),
                r#mod: MODULE,
                seq: EVENT,
                ..Default::default()
            });
            sent_events.push(n + 1);
        }
        let pushed = multicast(pusher, uid, bodies).await;
        assert_eq!(pushed, [uid], "push {i} found the session");
    }
    (latest, sent_events)
}

/// Reads what the client gets until every key's latest state and every event came, checking
/// that a key's state never goes back and events come each once, in order. Returns how many
/// state packets arrived.
async fn read_all(client: &mut Client, latest: &BTreeMap<i64, u64>, events: &[u64]) -> usize {
    let mut seen: BTreeMap<i64, u64> = BTreeMap::new();
    let mut got_events = Vec::new();
    let mut states = 0;
    while seen != *latest || got_events.len() < events.len() {
        let packet = recv(client).await;
        assert_eq!(packet.r#mod, MODULE, "only pushes: {packet:?}");
        let n = number(&packet);
        match packet.seq {
            STATE => {
                states += 1;
                let last = seen.insert(packet.obj, n);
                assert!(
                    last.is_none_or(|last| last < n),
                    "key {} went back",
                    packet.obj
                );
            }
            EVENT => got_events.push(n),
            other => panic!("seq {other}"),
        }
        assert!(
            got_events.len() <= events.len(),
            "an event twice: {got_events:?}"
        );
    }
    assert_eq!(got_events, events, "every event once, in order");
    states
}

#[tokio::test]
async fn a_client_that_stops_reading_keeps_its_session_and_gets_the_latest_state_and_every_event() {
    let setup = start(Some(0.0)).await;
    let mut client = setup.login(30, false).await;
    let mut pusher = setup.pusher().await;
    // The client reads nothing while the pushes go on and for three seconds in all.
    let started = tokio::time::Instant::now();
    let (latest, events) = push(&mut pusher, 30, (1, 2000, 50), false).await;
    tokio::time::sleep_until(started + Duration::from_secs(3)).await;
    let states = read_all(&mut client, &latest, &events).await;
    assert!(
        states < 2000,
        "state packets were replaced while the client was backlogged ({states} of 2000 came)"
    );
    assert!(setup.broker_metric(REPLACED).await > 0.0);
    // The session goes on.
    let reply = client.request(echo(b"still here"), |_| {}).await.unwrap();
    assert_eq!(reply.data, b"still here");
    assert_eq!(
        metric(
            setup.edge.admin_addr,
            "janus_edge_closes_total{reason=\"slow_consumer\"}"
        )
        .await,
        None
    );
}

#[tokio::test]
async fn a_client_backlogged_with_events_only_still_ends_as_a_slow_consumer() {
    let setup = start(Some(0.0)).await;
    let mut client = setup.login(31, false).await;
    let mut pusher = setup.pusher().await;
    let mut ended = false;
    // Events until the broker gives up on the sleeper (its 1 024 waiting events overflow);
    // bounded in time, not in pushes, as the kernel's buffers take some first.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut n = 0u64;
    while std::time::Instant::now() < deadline {
        n += 1;
        let event = PushBody {
            data: body(n),
            r#mod: MODULE,
            seq: EVENT,
            ..Default::default()
        };
        let pushed = multicast(&mut pusher, 31, vec![event]).await;
        if pushed.is_empty() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the sleeping client was never disconnected");
    assert_eq!(
        setup
            .broker_metric("janus_broker_sessions_lost_total{reason=\"slow_consumer\"}")
            .await,
        1.0
    );
    assert_eq!(
        setup
            .broker_metric("janus_broker_delivery_total{class=\"event\",outcome=\"overflow\"}")
            .await,
        1.0
    );
    // What the client reads ends: with its logout when the edge could still write it (the
    // client was not reading, so the edge's one-second try may find no room), else with the
    // connection.
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), client.recv())
            .await
            .expect("the end within 10 s");
        match read {
            Ok(packet) if packet.r#mod == system::MODULE => {
                assert_eq!(packet.seq, system::SEQ_LOGOUT, "{packet:?}");
                let code = janus_proto::message::ScServerLogout::decode(&packet.data[..])
                    .unwrap()
                    .code;
                assert_eq!(code, LogoutCode::Server as i32);
                break;
            }
            Ok(packet) => assert_eq!(packet.seq, EVENT, "{packet:?}"),
            Err(_) => break,
        }
    }
    assert!(
        client.recv().await.is_err(),
        "nothing after the logout: the session is over"
    );
}

#[tokio::test]
async fn a_resume_in_the_middle_of_conflation_gets_the_latest_state_and_every_event_once() {
    let setup = start(Some(0.0)).await;
    let mut client = setup.login(32, true).await;
    let mut pusher = setup.pusher().await;
    let (mut latest, mut events) = push(&mut pusher, 32, (1, 600, 20), false).await;
    assert!(
        setup.broker_metric(REPLACED).await > 0.0,
        "the broker was conflating when the connection dropped"
    );
    // The connection drops with the stage full; the session parks, and more comes meanwhile.
    client.disconnect();
    let parked = "janus_broker_sessions_parked";
    janus_integration_tests::stack::wait_metric(setup.broker.admin_addr, parked, |v| v == 1.0)
        .await;
    let (later, later_events) = push(&mut pusher, 32, (10_001, 20, 5), false).await;
    latest.extend(later);
    events.extend(later_events);
    // The replay is the whole unacknowledged tail, over 4 MiB here: the link takes it.
    client
        .resume(&tcp(&setup.edge), Duration::from_secs(5))
        .await
        .unwrap();
    let states = read_all(&mut client, &latest, &events).await;
    assert!(states < 620, "{states} state packets came");
    // Counted exactly: a request after it all gets its reply, and a second resume finds
    // nothing missing or repeated.
    let reply = client
        .request(echo(b"after"), |p| panic!("{p:?}"))
        .await
        .unwrap();
    assert_eq!(reply.data, b"after");
    let received = client.received();
    client
        .resume(&tcp(&setup.edge), Duration::from_secs(5))
        .await
        .unwrap();
    let reply = client
        .request(echo(b"again"), |p| panic!("{p:?}"))
        .await
        .unwrap();
    assert_eq!(reply.data, b"again");
    assert_eq!(client.received(), received + 1);
}

#[tokio::test]
async fn a_push_may_ask_for_the_state_class_itself_through_either_push_api() {
    // No rule: only the pushes' own word makes their packets state.
    let setup = start(None).await;
    let mut client = setup.login(33, false).await;
    let mut pusher = setup.pusher().await;
    let started = tokio::time::Instant::now();
    let (mut latest, events) = push(&mut pusher, 33, (1, 1000, 10), true).await;
    // Through go-pantheon's gate push API, the class rides in the call's metadata.
    let mut gate_push = gate::push_service_client::PushServiceClient::connect(format!(
        "http://{}",
        setup.broker.endpoint()
    ))
    .await
    .unwrap();
    let gate_request = |class: &str| {
        let mut request = tonic::Request::new(gate::PushRequest {
            body: Some(gate::PushBody {
                data: body(5_000_001),
                obj: 1,
                r#mod: MODULE,
                seq: STATE,
                ..Default::default()
            }),
        });
        let metadata = request.metadata_mut();
        metadata.insert("x-md-global-uid", "33".parse().unwrap());
        metadata.insert("x-md-global-color", COLOR.parse().unwrap());
        metadata.insert("x-md-janus-delivery-class", class.parse().unwrap());
        request
    };
    let refused = gate_push.push(gate_request("latest")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("x-md-janus-delivery-class"),
        "{refused:?}"
    );
    assert!(
        gate_push
            .push(gate_request("state"))
            .await
            .unwrap()
            .into_inner()
            .pushed
    );
    latest.insert(1, 5_000_001);
    tokio::time::sleep_until(started + Duration::from_secs(3)).await;
    let states = read_all(&mut client, &latest, &events).await;
    assert!(states < 1001, "{states} state packets came");
    assert!(setup.broker_metric(REPLACED).await > 0.0);
}

#[tokio::test]
async fn a_paced_key_reaches_a_reading_client_at_its_rate_ending_with_its_newest_packet() {
    // At most 4 packets a second of each key: one every 250 ms.
    let setup = start(Some(4.0)).await;
    let mut client = setup.login(34, false).await;
    let mut pusher = setup.pusher().await;
    let pushing = tokio::spawn(async move {
        let started = std::time::Instant::now();
        for n in 1..=40u64 {
            let update = PushBody {
                data: body(n),
                obj: 1,
                r#mod: MODULE,
                seq: STATE,
                ..Default::default()
            };
            assert_eq!(multicast(&mut pusher, 34, vec![update]).await, [34]);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        started.elapsed()
    });
    // The client reads all the while: what it gets is what the cap lets through.
    let mut got = Vec::new();
    while got.last() != Some(&40) {
        let packet = recv(&mut client).await;
        assert_eq!((packet.r#mod, packet.seq, packet.obj), (MODULE, STATE, 1));
        got.push(number(&packet));
    }
    let took = pushing.await.unwrap();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert_eq!(got[0], 1, "the first goes out at once");
    // One at the start, then at most one per 250 ms of pushing, and the newest at the end.
    let allowed = 2 + (took.as_millis() / 250) as usize;
    assert!(
        got.len() <= allowed && got.len() < 40,
        "{} of 40 came in {took:?} (at most {allowed}): {got:?}",
        got.len()
    );
    assert!(
        setup
            .broker_metric("janus_broker_delivery_total{class=\"state\",outcome=\"paced\"}")
            .await
            > 0.0
    );
}
