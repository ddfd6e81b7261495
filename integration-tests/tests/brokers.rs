//! Two brokers on one real Redis and one real NATS, each behind its own edge: pushes reach
//! exactly the sessions they name wherever those live, a login on another broker kicks the
//! older one, and pushes to a session that has gone are reported as not pushed. The pushes and
//! the kick run again with no NATS at all, the brokers' bus on Redis (`[bus] backend =
//! "redis"`), as a go-pantheon deployment has it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use janus_broker::Broker;
use janus_broker::bus::{NatsBus, PushBus, RedisBus, subject};
use janus_broker::route::{RouteStore, gate_route_key};
use janus_client::Client;
use janus_edge::Edge;
use janus_integration_tests::ports;
use janus_integration_tests::stack::{
    self, COLOR, Game, Ground, assert_logout, echo, http_get, metric, recv, tcp, wait_metric, ws,
};
use janus_proto::broadcaster::service::push::v1 as bc;
use janus_proto::gate::service::push::v1 as gate;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;

struct Pair {
    ground: Ground,
    _game: Game,
    brokers: [Broker; 2],
    edges: [Edge; 2],
}

impl Pair {
    async fn start() -> Self {
        Self::start_on(Ground::start().await).await
    }

    async fn start_on(ground: Ground) -> Self {
        let (game, [b1, b2], [a1, a2]) = two_brokers(&ground, 0).await;
        // Each edge knows one broker, so the test decides where every session lives.
        let e1 = ground.edge(ground.edge_config(&[&a1])).await;
        let e2 = ground.edge(ground.edge_config(&[&a2])).await;
        Self {
            ground,
            _game: game,
            brokers: [b1, b2],
            edges: [e1, e2],
        }
    }

    async fn client(&self, edge: usize, uid: i64, sid: i64) -> Client {
        let mut client = self.ground.client(&tcp(&self.edges[edge]), uid, sid).await;
        // One round trip: the session is registered on its broker once this returns.
        let reply = client.request(echo(b"hi"), |_| {}).await.unwrap();
        assert_eq!(reply.data, b"hi");
        client
    }

    async fn push_client(
        &self,
        broker: usize,
    ) -> bc::push_service_client::PushServiceClient<Channel> {
        let url = format!("http://{}", self.brokers[broker].endpoint());
        bc::push_service_client::PushServiceClient::connect(url)
            .await
            .unwrap()
    }
}

fn body(text: &str) -> bc::PushBody {
    bc::PushBody {
        data: text.as_bytes().to_vec(),
        r#mod: 9,
        seq: 1,
        ..Default::default()
    }
}

/// Two brokers on fresh loopback ports, and a game service both reach that pushes through
/// broker `game_via`; with the brokers' addresses.
async fn two_brokers(ground: &Ground, game_via: usize) -> (Game, [Broker; 2], [String; 2]) {
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = [
        l1.local_addr().unwrap().to_string(),
        l2.local_addr().unwrap().to_string(),
    ];
    let game = Game::start(&addrs[game_via]).await;
    let b1 = ground
        .broker_on(ground.broker_config(&[&game.endpoint]), l1)
        .await;
    let b2 = ground
        .broker_on(ground.broker_config(&[&game.endpoint]), l2)
        .await;
    (game, [b1, b2], addrs)
}

/// Every push `client` receives up to and including the `end` marker.
async fn pushes_until_end(client: &mut Client) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let packet = recv(client).await;
        assert_eq!(packet.index, 0, "pushes carry index 0");
        let text = String::from_utf8(packet.data).unwrap();
        if text == "end" {
            return got;
        }
        got.push(text);
    }
}

#[tokio::test]
async fn pushes_reach_exactly_the_named_sessions_across_brokers() {
    pushes_reach_exactly_the_named_sessions(Pair::start().await).await;
}

#[tokio::test]
async fn pushes_reach_exactly_the_named_sessions_across_brokers_on_a_redis_bus() {
    pushes_reach_exactly_the_named_sessions(
        Pair::start_on(Ground::start_without_nats().await).await,
    )
    .await;
}

async fn pushes_reach_exactly_the_named_sessions(pair: Pair) {
    let mut u1 = pair.client(0, 101, 1).await;
    let mut u2 = pair.client(1, 102, 1).await;
    let mut u3 = pair.client(1, 103, 1).await;
    let mut u4 = pair.client(0, 104, 2).await;
    let mut via_b1 = pair.push_client(0).await;
    let mut via_b2 = pair.push_client(1).await;

    via_b1
        .push(bc::PushRequest {
            bodies: vec![body("unicast")],
            color: COLOR.into(),
            sid: 1,
            uid: 102,
        })
        .await
        .unwrap();
    let pushed = via_b1
        .multicast(bc::MulticastRequest {
            bodies: vec![body("multicast")],
            uids: vec![101, 102, 404],
            color: COLOR.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pushed_uids;
    let pushed: std::collections::BTreeSet<i64> = pushed.into_iter().collect();
    assert_eq!(
        pushed,
        [101, 102].into(),
        "uid 404 has no session and is not reported pushed"
    );
    via_b2
        .broadcast(bc::BroadcastRequest {
            bodies: vec![body("broadcast")],
            color: COLOR.into(),
            sid: 1,
        })
        .await
        .unwrap();

    let mut gate_push = gate::push_service_client::PushServiceClient::connect(format!(
        "http://{}",
        pair.brokers[1].endpoint()
    ))
    .await
    .unwrap();
    let mut request = tonic::Request::new(gate::PushRequest {
        body: Some(gate::PushBody {
            data: b"gate".to_vec(),
            r#mod: 9,
            seq: 2,
            ..Default::default()
        }),
    });
    request
        .metadata_mut()
        .insert("x-md-global-uid", "101".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-md-global-color", COLOR.parse().unwrap());
    assert!(gate_push.push(request).await.unwrap().into_inner().pushed);

    // A push on the bus's ingress subject, as a game service with a bus client sends it.
    let stop_bus = CancellationToken::new();
    let bus: Box<dyn PushBus> = match &pair.ground.nats {
        Some(nats) => Box::new(
            NatsBus::connect(&format!("nats://{}", nats.addr), "test")
                .await
                .unwrap(),
        ),
        None => Box::new(
            RedisBus::connect(
                &[format!("redis://{}", pair.ground.redis().addr)],
                false,
                Duration::from_secs(2),
                (&TaskTracker::new(), stop_bus.clone()),
            )
            .await
            .unwrap(),
        ),
    };
    let ingress = bc::PushMessage {
        bodies: vec![body("ingress")],
        uids: vec![103],
        color: COLOR.into(),
        ..Default::default()
    };
    bus.publish(subject::INGRESS, Bytes::from(ingress.encode_to_vec()))
        .await
        .unwrap();
    // Give the ingress message time to be resolved before the end markers overtake it (it takes
    // a few milliseconds; the margin is for loaded CI machines).
    tokio::time::sleep(Duration::from_millis(1000)).await;

    via_b1
        .multicast(bc::MulticastRequest {
            bodies: vec![body("end")],
            uids: vec![101, 102, 103, 104],
            color: COLOR.into(),
        })
        .await
        .unwrap();

    let mut got = BTreeMap::new();
    for (uid, client) in [
        (101, &mut u1),
        (102, &mut u2),
        (103, &mut u3),
        (104, &mut u4),
    ] {
        got.insert(uid, pushes_until_end(client).await);
    }
    let want = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut sorted = got.clone();
    for pushes in sorted.values_mut() {
        pushes.sort();
    }
    assert_eq!(sorted[&101], want(&["broadcast", "gate", "multicast"]));
    assert_eq!(sorted[&102], want(&["broadcast", "multicast", "unicast"]));
    assert_eq!(sorted[&103], want(&["broadcast", "ingress"]));
    assert_eq!(
        sorted[&104],
        want(&[]),
        "sid 2 is outside the broadcast and named by nothing"
    );
    stop_bus.cancel();
}

#[tokio::test]
async fn a_login_through_another_broker_kicks_the_older_session() {
    a_login_elsewhere_kicks_the_older_session(Pair::start().await).await;
}

#[tokio::test]
async fn a_login_through_another_broker_kicks_the_older_session_on_a_redis_bus() {
    a_login_elsewhere_kicks_the_older_session(
        Pair::start_on(Ground::start_without_nats().await).await,
    )
    .await;
}

async fn a_login_elsewhere_kicks_the_older_session(pair: Pair) {
    let mut first = pair.client(0, 201, 1).await;
    let mut second = pair.ground.client(&ws(&pair.edges[1]), 201, 1).await;
    let logout = recv(&mut first).await;
    assert_logout(&logout, LogoutCode::ConflictingLogin);
    let reply = second.request(echo(b"still here"), |_| {}).await.unwrap();
    assert_eq!(reply.data, b"still here");
    let routes = pair.ground.routes();
    let owner = routes.get(&gate_route_key(COLOR, 201)).await.unwrap();
    assert_eq!(
        owner.as_deref(),
        Some(pair.brokers[1].endpoint()),
        "the newer broker owns the route"
    );
}

#[tokio::test]
async fn a_push_to_a_session_that_ended_is_reported_not_pushed() {
    let pair = Pair::start().await;
    let client = pair.client(1, 301, 1).await;
    client.close().await.unwrap();
    let routes = pair.ground.routes();
    for _ in 0..50 {
        if routes
            .get(&gate_route_key(COLOR, 301))
            .await
            .unwrap()
            .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for broker in 0..2 {
        let pushed = pair
            .push_client(broker)
            .await
            .multicast(bc::MulticastRequest {
                bodies: vec![body("late")],
                uids: vec![301],
                color: COLOR.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .pushed_uids;
        assert!(
            pushed.is_empty(),
            "broker {broker} reported a push to a closed session"
        );
    }
}

#[tokio::test]
async fn a_renewal_that_finds_another_owner_kicks_the_local_session() {
    let ground = Ground::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let game = Game::start(&addr).await;
    let mut config = ground.broker_config(&[&game.endpoint]);
    config.routes.gate_ttl_secs = Duration::from_secs(2);
    let _broker = ground.broker_on(config, listener).await;
    let edge = ground.edge(ground.edge_config(&[&addr])).await;
    let mut client = ground.client(&tcp(&edge), 801, 1).await;
    assert_eq!(client.request(echo(b"x"), |_| {}).await.unwrap().data, b"x");

    // Another gateway (say, one not speaking our bus) took the player over.
    ground
        .routes()
        .swap(
            &gate_route_key(COLOR, 801),
            "10.9.9.9:17100",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let logout = recv(&mut client).await;
    assert_logout(&logout, LogoutCode::ConflictingLogin);
    let owner = ground
        .routes()
        .get(&gate_route_key(COLOR, 801))
        .await
        .unwrap();
    assert_eq!(
        owner.as_deref(),
        Some("10.9.9.9:17100"),
        "the newer owner's route is left alone"
    );
}

#[tokio::test]
async fn an_administrator_kicks_a_player_through_any_broker() {
    let pair = Pair::start().await;
    let mut player = pair.client(0, 901, 1).await;
    let mut bystander = pair.client(0, 902, 1).await;
    let path = format!("/kick?uid=901&color={COLOR}");
    let admin = pair.brokers[1].admin_addr;
    // Without the token, or with a wrong one: refused, counted, nobody kicked.
    let (status, body) = stack::http(admin, "POST", &path).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = stack::http_as(admin, "POST", &path, Some("guess")).await;
    assert_eq!(status, 401);
    let (_, metrics) = stack::http(admin, "GET", "/metrics").await;
    for reason in ["missing_token", "wrong_token"] {
        let line = format!("janus_broker_admin_refused_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let (status, body) = stack::http_as(admin, "POST", &path, Some(stack::ADMIN_TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    let logout = recv(&mut player).await;
    assert_logout(&logout, LogoutCode::AdminKickOut);
    assert_eq!(
        bystander.request(echo(b"ok"), |_| {}).await.unwrap().data,
        b"ok"
    );
    let (status, _) = stack::http_as(
        pair.brokers[0].admin_addr,
        "POST",
        "/kick?uid=4242",
        Some(stack::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 404, "no session, nothing to kick");
}

#[tokio::test]
async fn mutating_admin_requests_are_off_without_a_token_and_an_unusable_token_file_is_named() {
    let ground = Ground::in_memory();
    let mut config = ground.broker_config(&[]);
    config.admin_token_file = String::new();
    let broker = ground
        .broker_on(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await;
    let (status, body) = stack::http_as(
        broker.admin_addr,
        "POST",
        "/kick?uid=1",
        Some(stack::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin_token_file"), "{body}");
    assert_eq!(
        metric(
            broker.admin_addr,
            "janus_broker_admin_refused_total{reason=\"no_token_configured\"}"
        )
        .await,
        Some(1.0)
    );
    let (status, _) = stack::http(broker.admin_addr, "GET", "/stats").await;
    assert_eq!(status, 200, "reading stays open");
    // A token file that is empty stops the broker at start, naming the field.
    let empty = std::env::temp_dir().join(format!("janus-empty-token-{}", std::process::id()));
    std::fs::write(&empty, "\n").unwrap();
    let mut config = ground.broker_config(&[]);
    config.admin_token_file = empty.display().to_string();
    let Err(refused) = Broker::start(config, TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    else {
        panic!("an empty token file is refused");
    };
    assert_eq!(
        refused.to_string(),
        format!("admin_token_file {}: is empty", empty.display())
    );
}

/// A broker added to a running deployment takes its share of the existing sessions: after it
/// comes up, every session the rendezvous hash now gives it moves there (paced over the edge's
/// `rebalance_spread_secs`), resumable or not, while numbered pushes flow to all of them. No
/// client notices: nobody is logged out or reconnects, every push arrives exactly once and in
/// order, and each session answers requests at its new broker (PROTOCOL.md §13.5).
#[tokio::test]
async fn sessions_move_to_a_broker_added_later_with_nothing_lost_or_repeated() {
    const PLAYERS: i64 = 40;
    const PUSHES: usize = 150;
    let ground = Ground::start().await;
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a1 = l1.local_addr().unwrap().to_string();
    // The second broker's address, known to the edge from the start; nothing listens there yet.
    let a2 = ports::address();
    let game = Game::start(&a1).await;
    let b1 = ground
        .broker_on(ground.broker_config(&[&game.endpoint]), l1)
        .await;
    let mut config = ground.edge_config(&[&a1, &a2]);
    config.brokers.rebalance_spread_secs = Duration::from_secs(2);
    let edge = ground.edge(config).await;

    let moving: Vec<i64> = (1..=PLAYERS)
        .map(|i| 700 + i)
        .filter(|uid| {
            janus_edge::rendezvous_score(*uid, &a2) > janus_edge::rendezvous_score(*uid, &a1)
        })
        .collect();
    assert!(
        !moving.is_empty() && moving.len() < PLAYERS as usize,
        "the hash gives the new broker a share: {moving:?}"
    );

    let mut readers = Vec::new();
    for i in 1..=PLAYERS {
        let uid = 700 + i;
        let keys = &ground.keys;
        let mut client_config = keys.client_config(janus_protocol::handshake::Mode::V2);
        // Half hold a resume ticket, half are go-pantheon-style sessions without one.
        client_config.handshake.resumable = i % 2 == 0;
        let mut client = Client::connect(&tcp(&edge), &client_config, &keys.token(uid))
            .await
            .unwrap();
        let reply = client.request(echo(b"hi"), |_| {}).await.unwrap();
        assert_eq!(reply.data, b"hi");
        readers.push(tokio::spawn(async move {
            let got = pushes_until_end(&mut client).await;
            let reply = client.request(echo(b"after"), |_| {}).await.unwrap();
            assert_eq!(reply.data, b"after", "uid {uid} answers at its new broker");
            assert!(
                client.take_resumed().is_empty(),
                "uid {uid} never reconnected"
            );
            (uid, got, client)
        }));
    }
    assert_eq!(b1.sessions(), PLAYERS as usize);

    let uids: Vec<i64> = (1..=PLAYERS).map(|i| 700 + i).collect();
    let mut push = {
        let url = format!("http://{}", b1.endpoint());
        bc::push_service_client::PushServiceClient::connect(url)
            .await
            .unwrap()
    };
    // Pushes `text` to every player; the uids it found.
    let mut multicast = async |text: &str| {
        let request = bc::MulticastRequest {
            bodies: vec![body(text)],
            uids: uids.clone(),
            color: COLOR.into(),
        };
        let pushed = push.multicast(request).await.unwrap();
        pushed.into_inner().pushed_uids
    };
    let mut b2 = None;
    for n in 0..PUSHES {
        if n == 20 {
            let l2 = ports::rebind(&a2).await;
            b2 = Some(
                ground
                    .broker_on(ground.broker_config(&[&game.endpoint]), l2)
                    .await,
            );
        }
        let pushed = multicast(&n.to_string()).await;
        assert_eq!(pushed.len(), uids.len(), "push {n} found every session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b2 = b2.unwrap();
    let moves = "janus_edge_session_moves_total";
    let admin = edge.admin_addr;
    wait_metric(admin, moves, |n| n >= moving.len() as f64).await;
    let pushed = multicast("end").await;
    assert_eq!(pushed.len(), uids.len());

    let want: Vec<String> = (0..PUSHES).map(|n| n.to_string()).collect();
    let mut clients = Vec::new();
    for reader in readers {
        let (uid, got, client) = reader.await.unwrap();
        assert_eq!(got, want, "uid {uid}: every push once, in order, no logout");
        clients.push(client);
    }
    assert_eq!(
        metric(admin, moves).await,
        Some(moving.len() as f64),
        "exactly the sessions the hash gives the new broker moved, once each"
    );
    assert_eq!(b2.sessions(), moving.len());
    let routes = ground.routes();

    // A moved player's ticket still names the first broker: its resume goes to the broker the
    // hash picks, where the session now is.
    let uid = *moving
        .iter()
        .find(|uid| *uid % 2 == 0)
        .expect("a resumable mover");
    let client = &mut clients[usize::try_from(uid - 701).unwrap()];
    client.disconnect();
    wait_metric(b2.admin_addr, "janus_broker_sessions_parked", |n| n == 1.0).await;
    client
        .resume(&tcp(&edge), Duration::from_secs(5))
        .await
        .expect("the moved session resumes");
    let resumed = |result: &str| format!("janus_edge_resumes_total{{result=\"{result}\"}}");
    assert_eq!(metric(admin, &resumed("ok")).await, Some(1.0));
    let reply = client.request(echo(b"resumed"), |_| {}).await.unwrap();
    assert_eq!(reply.data, b"resumed");

    for uid in &moving {
        assert_eq!(
            routes.get(&gate_route_key(COLOR, *uid)).await.unwrap(),
            Some(b2.endpoint().to_owned()),
            "uid {uid}'s gateway route names its new broker"
        );
    }
}

/// A parked session outlives its broker: the broker keeps a copy of it in the route store
/// while the client is away (kept pushes included), so when that broker is redeployed, the
/// client's resume at the other broker restores the session there with every push, and the
/// broadcasts sent while it was nowhere, exactly once and in order, and no new login
/// (PROTOCOL.md §13.5).
#[tokio::test]
async fn a_parked_session_resumes_at_another_broker_after_its_own_went_away() {
    parked_session_outlives_its_broker(Ground::start().await).await;
}

#[tokio::test]
async fn a_parked_session_resumes_at_another_broker_after_its_own_went_away_on_a_redis_bus() {
    parked_session_outlives_its_broker(Ground::start_without_nats().await).await;
}

async fn parked_session_outlives_its_broker(ground: Ground) {
    // The game service pushes through the broker that stays.
    let (_game, [b1, b2], [a1, a2]) = two_brokers(&ground, 1).await;
    let edge = ground.edge(ground.edge_config(&[&a1, &a2])).await;
    links_up(&edge, 2).await;
    // A player the hash gives to the first broker.
    let uid = (900..)
        .find(|uid| {
            janus_edge::rendezvous_score(*uid, &a1) > janus_edge::rendezvous_score(*uid, &a2)
        })
        .unwrap();
    let keys = &ground.keys;
    let mut config = keys.client_config(janus_protocol::handshake::Mode::V2);
    config.handshake.resumable = true;
    let mut client = Client::connect(&tcp(&edge), &config, &keys.token(uid))
        .await
        .unwrap();
    let reply = client.request(echo(b"hi"), |_| {}).await.unwrap();
    assert_eq!(reply.data, b"hi");
    assert_eq!((b1.sessions(), b2.sessions()), (1, 0));

    // Push number `n` to the player through the broker at `via`.
    let send = async |via: &Broker, n: usize| {
        let api = format!("http://{}", via.endpoint());
        let mut push = bc::push_service_client::PushServiceClient::connect(api)
            .await
            .unwrap();
        push.push(bc::PushRequest {
            bodies: vec![body(&n.to_string())],
            color: COLOR.into(),
            sid: 1,
            uid,
        })
        .await
        .unwrap();
    };
    let mut got = Vec::new();
    for n in 0..10 {
        send(&b2, n).await;
        got.push(String::from_utf8(recv(&mut client).await.data).unwrap());
    }
    client.disconnect();
    wait_metric(b1.admin_addr, "janus_broker_sessions_parked", |n| n == 1.0).await;
    // Now through the broker holding the session: a push call is answered once the parked
    // session's copy in the route store holds the push (PROTOCOL.md §13.5).
    for n in 10..20 {
        send(&b1, n).await;
    }
    // The copy is in the route store while the broker is still up, not written on the way
    // out: as the last call returned, it counted the echo reply and all 20 pushes.
    let routes = ground.routes();
    let key = janus_broker::route::parked_key(uid);
    let counted = routes.get(&key).await.unwrap().map(|encoded| {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let open = janus_proto::janus::internal::v1::SessionOpen::decode(&bytes[..]).unwrap();
        open.continuity.unwrap().sent
    });
    assert_eq!(
        counted,
        Some(21),
        "the parked session's copy holds every confirmed push"
    );

    b1.shutdown(Duration::from_secs(2)).await;
    links_up(&edge, 1).await;
    // Broadcasts while the session's broker is gone and the session nowhere: the first finds
    // the broker gone and is followed by a notice naming it, the second names it itself; the
    // broker that takes the session delivers both (PROTOCOL.md §13.5).
    let mut broadcaster =
        bc::push_service_client::PushServiceClient::connect(format!("http://{}", b2.endpoint()))
            .await
            .unwrap();
    for n in 0..2 {
        broadcaster
            .broadcast(bc::BroadcastRequest {
                bodies: vec![body(&format!("broadcast {n}"))],
                color: COLOR.into(),
                sid: 1,
            })
            .await
            .unwrap();
    }
    assert_eq!(
        metric(
            b2.admin_addr,
            "janus_broker_missed_broadcasts_total{result=\"noticed\"}"
        )
        .await,
        Some(1.0),
        "the first broadcast found the broker gone"
    );
    client
        .resume(&tcp(&edge), Duration::from_secs(5))
        .await
        .expect("the session resumes at the other broker");
    while got.len() < 22 {
        got.push(String::from_utf8(recv(&mut client).await.data).unwrap());
    }
    send(&b2, 20).await;
    got.push(String::from_utf8(recv(&mut client).await.data).unwrap());
    let want: Vec<String> = (0..20)
        .map(|n| n.to_string())
        .chain(["broadcast 0".into(), "broadcast 1".into(), "20".into()])
        .collect();
    assert_eq!(
        got, want,
        "every push and broadcast once, in order, across the broker's end"
    );
    assert_eq!(
        metric(
            b2.admin_addr,
            "janus_broker_missed_broadcasts_total{result=\"delivered\"}"
        )
        .await,
        Some(2.0)
    );
    let reply = client.request(echo(b"after"), |_| {}).await.unwrap();
    assert_eq!(reply.data, b"after");
    assert_eq!(b2.sessions(), 1);
    assert_eq!(
        routes.get(&gate_route_key(COLOR, uid)).await.unwrap(),
        Some(b2.endpoint().to_owned())
    );
    assert_eq!(
        routes.get(&key).await.unwrap(),
        None,
        "the copy is gone once the session is back"
    );
}

/// Waits until `edge` has exactly `n` broker links up (its `/stats/connections`).
async fn links_up(edge: &Edge, n: usize) {
    for _ in 0..200 {
        let (_, body) = http_get(edge.admin_addr, "/stats/connections").await;
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        let up = stats["by_broker"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["up"] == true)
            .count();
        if up == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the edge never had {n} broker links up");
}
