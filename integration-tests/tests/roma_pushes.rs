//! Pushes sent the way go-pantheon's Roma sends them, to two brokers on real etcd, Redis and
//! NATS, with sessions of two colours on both:
//! - through `broadcaster.service.push.v1.PushService` on `janus.gate.interface`, called with
//!   grpc-go by the Go pusher (`gopeers/pusher`), which does what fabrica-kit's connection does:
//!   instances read from etcd (kratos layout), kept only if `metadata.color` is the caller's
//!   colour, and the one the caller's gateway route names picked (else another of that colour);
//!   the single-player `Push` carries no colour;
//! - by Redis `PUBLISH` of a `PushMessage`, as Roma's broadcaster does: on the channel named by
//!   the player's gateway-route value for pushes and multicasts (no colour in the message), on
//!   `gate.broadcast.message` for broadcasts (colour and sid, the `broadcast` flag unset).
//!
//! Each push must reach exactly the sessions it names, and no other; the subscription outlives
//! quiet periods and comes back after Redis is lost, loudly or silently. The keys, channels and
//! records are spelled out here and in [`janus_integration_tests::roma`] as go-pantheon spells
//! them, not taken from Janus's helpers.

use std::collections::BTreeMap;
use std::time::Duration;

use janus_broker::Broker;
use janus_broker::config::DiscoveryBackend;
use janus_client::{Client, unix_now};
use janus_edge::Edge;
use janus_integration_tests::gopeer;
use janus_integration_tests::roma::{
    BROADCAST_CHANNEL, PUSH_MOD, PUSH_SEQ, Pusher, body, wait_subscribers,
};
use janus_integration_tests::stack::{Game, Ground, echo, recv, tcp};
use janus_ops::discovery::{Discovery, EtcdDiscovery, Instance};
use janus_proto::broadcaster::service::push::v1 as bc;
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_protocol::handshake::Mode;
use janus_protocol::token::TokenCodec;
use tokio::net::TcpListener;

/// Two brokers, each behind its own edge: b1 serves blue and red, b2 red only.
struct Deployment {
    ground: Ground,
    etcd_url: String,
    _etcd: janus_integration_tests::Service,
    _game: Game,
    _game_registrations: Vec<janus_ops::discovery::Registration>,
    brokers: [Broker; 2],
    edges: [Edge; 2],
}

impl Deployment {
    async fn start() -> Self {
        let ground = Ground::start().await;
        let etcd = janus_integration_tests::etcd().await;
        let etcd_url = format!("http://{}", etcd.addr);
        let discovery = EtcdDiscovery::connect(std::slice::from_ref(&etcd_url))
            .await
            .unwrap();
        let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a1 = l1.local_addr().unwrap().to_string();
        let a2 = l2.local_addr().unwrap().to_string();
        let game = Game::start(&a1).await;
        let mut game_registrations = Vec::new();
        for color in ["blue", "red"] {
            let instance = Instance {
                id: format!("player-{color}"),
                name: "roma.player.service".into(),
                version: "test".into(),
                metadata: [("color".to_owned(), color.to_owned())].into(),
                endpoints: vec![format!("grpc://{}", game.endpoint)],
            };
            game_registrations.push(discovery.register(instance).await.unwrap());
        }
        let config = |colors: &[&str]| {
            let mut config = ground.broker_config(&[]);
            config.discovery.backend = DiscoveryBackend::Etcd;
            config.discovery.etcd_endpoints = vec![etcd_url.clone()];
            config.discovery.colors = colors.iter().map(|c| (*c).to_owned()).collect();
            config.discovery.profile = "test".into();
            config
        };
        let b1 = ground.broker_on(config(&["blue", "red"]), l1).await;
        let b2 = ground.broker_on(config(&["red"]), l2).await;
        let e1 = ground.edge(ground.edge_config(&[&a1])).await;
        let e2 = ground.edge(ground.edge_config(&[&a2])).await;
        Self {
            ground,
            etcd_url,
            _etcd: etcd,
            _game: game,
            _game_registrations: game_registrations,
            brokers: [b1, b2],
            edges: [e1, e2],
        }
    }

    /// A session of `uid` in `color` on server `sid`, behind edge (and broker) `at`.
    async fn client(&self, at: usize, uid: i64, color: &str, sid: i64) -> Client {
        let keys = &self.ground.keys;
        let token = TokenCodec::new(&keys.token).seal(&AuthToken {
            account_id: uid,
            server_id: sid,
            color: color.into(),
            timeout: unix_now() + 600,
            status: OnlineStatus::Gate as i32,
            ..Default::default()
        });
        let mut client =
            Client::connect(&tcp(&self.edges[at]), &keys.client_config(Mode::V2), &token)
                .await
                .unwrap_or_else(|e| panic!("client {uid} could not connect: {e}"));
        // One round trip: the session is registered on its broker once this returns.
        assert_eq!(
            client.request(echo(b"hi"), |_| {}).await.unwrap().data,
            b"hi"
        );
        client
    }
}

/// A `janus.gate.interface` node as kratos's etcd registry hands it to fabrica-kit.
#[derive(Debug)]
struct Node {
    id: String,
    address: String,
    metadata: BTreeMap<String, String>,
    endpoints: Vec<String>,
}

/// Every registered `janus.gate.interface` instance, as Roma reads them from etcd (kratos:
/// `/microservices/<name>/`, JSON values; the node address is the `grpc://` endpoint's).
async fn gate_nodes(etcd_url: &str) -> Vec<Node> {
    let mut etcd = etcd_client::Client::connect([etcd_url], None)
        .await
        .unwrap();
    let response = etcd
        .get(
            "/microservices/janus.gate.interface/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| {
            let value: serde_json::Value = serde_json::from_slice(kv.value()).unwrap();
            let endpoints: Vec<String> =
                serde_json::from_value(value["endpoints"].clone()).unwrap();
            let address = endpoints
                .iter()
                .find_map(|e| e.strip_prefix("grpc://"))
                .expect("a grpc:// endpoint")
                .to_owned();
            Node {
                id: value["id"].as_str().unwrap().to_owned(),
                address,
                metadata: serde_json::from_value(value["metadata"].clone()).unwrap(),
                endpoints,
            }
        })
        .collect()
}

/// Every push `client` receives up to the `end` marker, sorted.
async fn pushes_until_end(client: &mut Client) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let packet = recv(client).await;
        assert_eq!(
            (packet.index, packet.r#mod, packet.seq),
            (0, PUSH_MOD, PUSH_SEQ),
            "a push as its body says"
        );
        let text = String::from_utf8(packet.data).unwrap();
        if text == "end" {
            got.sort();
            return got;
        }
        got.push(text);
    }
}

#[tokio::test]
async fn roma_pushes_reach_exactly_the_right_sessions_by_grpc_and_by_redis() {
    // Built before anything starts: a first build takes a while and would hold up the brokers
    // and sessions on this runtime.
    gopeer::binary("pusher");
    let deployment = Deployment::start().await;
    let [b1, b2] = &deployment.brokers;
    let mut roma = Pusher::connect(
        &deployment.etcd_url,
        deployment.ground.redis(),
        deployment.brokers.len(),
    )
    .await;

    // What Roma finds in etcd: the go-pantheon gate's record, once per colour served.
    let nodes = gate_nodes(&deployment.etcd_url).await;
    let mut seen: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.address.clone(), n.metadata["color"].clone()))
        .collect();
    seen.sort();
    let mut want = vec![
        (b1.endpoint().to_owned(), "blue".to_owned()),
        (b1.endpoint().to_owned(), "red".to_owned()),
        (b2.endpoint().to_owned(), "red".to_owned()),
    ];
    want.sort();
    assert_eq!(seen, want, "one record per broker and colour: {nodes:?}");
    for node in &nodes {
        let keys: Vec<&str> = node.metadata.keys().map(String::as_str).collect();
        assert_eq!(keys, ["color", "profile", "svc", "ver"], "{node:?}");
        assert_eq!(node.metadata["svc"], "janus.gate.interface");
        assert_eq!(node.metadata["profile"], "test");
        assert_eq!(
            node.endpoints.last().map(String::as_str),
            Some(format!("grpc://{}", node.address).as_str())
        );
        assert!(
            node.endpoints.iter().any(|e| e.starts_with("http://")),
            "{node:?}"
        );
        assert_eq!(
            nodes.iter().filter(|n| n.id == node.id).count(),
            1,
            "ids are unique"
        );
    }

    // Sessions: blue and red on b1; red (servers 1 and 2) and blue on b2, which serves no blue.
    let mut u1 = deployment.client(0, 1001, "blue", 1).await;
    let mut u2 = deployment.client(0, 1002, "red", 1).await;
    let mut u3 = deployment.client(1, 1003, "red", 1).await;
    let mut u4 = deployment.client(1, 1004, "blue", 1).await;
    let mut u5 = deployment.client(1, 1005, "red", 2).await;
    roma.wait_brokers([b1.endpoint(), b2.endpoint()]).await;

    // (a) The broadcaster API, called with grpc-go as fabrica-kit's connection calls it: the
    // colour filter keeps b1 for blue, both brokers for red; the route's node is the one called.
    let (n1, n2) = (b1.endpoint().to_owned(), b2.endpoint().to_owned());
    let mut red_nodes = vec![n1.clone(), n2.clone()];
    red_nodes.sort();
    let push = roma.grpc_push("blue", 1001, "grpc push").await;
    assert!(push.pushed, "on its own broker: {push:?}");
    assert_eq!(
        (&push.nodes, &push.node),
        (&vec![n1.clone()], &n1),
        "{push:?}"
    );
    let push = roma.grpc_push("blue", 1004, "grpc push").await;
    assert!(
        push.pushed && push.route == n2 && push.node == n1,
        "no blue node is b2, so b1 takes the colourless push and finds 1004 by its blue route: \
         {push:?}"
    );
    let push = roma.grpc_push("red", 1003, "grpc push").await;
    assert!(push.pushed, "{push:?}");
    assert_eq!((&push.nodes, &push.node), (&red_nodes, &n2), "{push:?}");
    let push = roma.grpc_push("red", 4040, "nobody").await;
    assert!(
        !push.pushed && push.route.is_empty(),
        "no session, no route: not pushed: {push:?}"
    );
    let multicast = roma
        .grpc_multicast("red", 1002, &[1002, 1003, 1005, 4040], "grpc multicast")
        .await;
    assert_eq!(multicast.pushed_uids, [1002, 1003, 1005], "{multicast:?}");
    assert_eq!(multicast.node, n1, "the route of 1002: {multicast:?}");
    let broadcast = roma
        .grpc_broadcast("red", 1003, 1, "grpc broadcast red")
        .await;
    assert_eq!(broadcast.node, n2, "the route of 1003: {broadcast:?}");
    roma.grpc_broadcast("blue", 1001, 1, "grpc broadcast blue")
        .await;
    // A colour no broker serves: the filter keeps no node and the call fails, as every Roma push
    // did while brokers registered no colour.
    let lost = roma
        .call(
            "green",
            1001,
            &["-call", "push", "-uid", "1001", "-data", "lost"],
        )
        .await
        .expect_err("no green node");
    assert!(
        lost.contains("no janus.gate.interface node of color \"green\""),
        "{lost}"
    );

    // (b) Redis PUBLISH, as Roma's broadcaster sends them.
    roma.redis_multicast(&[("blue", 1004)], "redis push").await;
    roma.redis_multicast(&[("red", 1002)], "redis push").await;
    roma.redis_multicast(
        &[("red", 1002), ("red", 1003), ("red", 1005)],
        "redis multicast",
    )
    .await;
    roma.redis_broadcast("red", 2, "redis broadcast red 2")
        .await;
    roma.redis_broadcast("blue", 1, "redis broadcast blue")
        .await;
    // Roma caches routes for 10 s: a push can still name the broker a player has left. b1 finds
    // 1003 (red, on b2) under the colours it serves and forwards it.
    let stale = bc::PushMessage {
        bodies: vec![body("redis stale route")],
        uids: vec![1003],
        ..Default::default()
    };
    assert_eq!(roma.publish(b1.endpoint(), &stale).await, 1);

    // A lost Redis connection: the brokers subscribe again and take pushes again.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(roma.redis())
        .await
        .unwrap();
    assert_eq!(killed, 2, "both brokers' subscriptions cut");
    roma.wait_brokers([b1.endpoint(), b2.endpoint()]).await;
    roma.redis_multicast(&[("blue", 1001)], "redis after reconnect")
        .await;

    // Anything misdirected has had time to arrive before the end marker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    roma.redis_multicast(&[("blue", 1001), ("blue", 1004)], "end")
        .await;
    roma.redis_multicast(&[("red", 1002), ("red", 1003), ("red", 1005)], "end")
        .await;

    let strings = |list: &[&str]| {
        let mut list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        list.sort();
        list
    };
    assert_eq!(
        pushes_until_end(&mut u1).await,
        strings(&[
            "grpc push",
            "grpc broadcast blue",
            "redis broadcast blue",
            "redis after reconnect"
        ])
    );
    assert_eq!(
        pushes_until_end(&mut u2).await,
        strings(&[
            "grpc multicast",
            "grpc broadcast red",
            "redis push",
            "redis multicast"
        ])
    );
    assert_eq!(
        pushes_until_end(&mut u3).await,
        strings(&[
            "grpc push",
            "grpc multicast",
            "grpc broadcast red",
            "redis multicast",
            "redis stale route"
        ])
    );
    assert_eq!(
        pushes_until_end(&mut u4).await,
        strings(&[
            "grpc push",
            "grpc broadcast blue",
            "redis push",
            "redis broadcast blue"
        ])
    );
    assert_eq!(
        pushes_until_end(&mut u5).await,
        strings(&["grpc multicast", "redis multicast", "redis broadcast red 2"])
    );
}

#[tokio::test]
async fn without_redis_pushes_a_broker_subscribes_to_nothing() {
    let ground = Ground::start().await;
    let mut config = ground.broker_config(&[]);
    config.routes.redis_pushes = false;
    let broker = ground
        .broker_on(config, TcpListener::bind("127.0.0.1:0").await.unwrap())
        .await;
    let mut redis = ground.redis().redis_connection().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, own, _, broadcast): (String, i64, String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(broker.endpoint())
        .arg(BROADCAST_CHANNEL)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!((own, broadcast), (0, 0));
}

/// The ids of the Redis connections in subscriber mode.
async fn subscriber_ids(redis: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(redis)
        .await
        .unwrap();
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_quiet_subscription_stays_and_a_silent_redis_loss_is_noticed() {
    let ground = Ground::start().await;
    let broker = ground
        .broker_on(
            ground.broker_config(&[]),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
        .await;
    let mut redis = ground.redis().redis_connection().await;
    let endpoint = broker.endpoint().to_owned();
    wait_subscribers(&mut redis, &endpoint, 1).await;
    let first = subscriber_ids(&mut redis).await;
    assert_eq!(first.len(), 1, "one subscription connection: {first:?}");

    // Longer than the PING period: the answered PING keeps the same connection.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(subscriber_ids(&mut redis).await, first);

    // Redis frozen: no FIN, no RST, just silence. The unanswered PING ends the subscription,
    // and once Redis answers again the broker subscribes on a new connection.
    ground.redis().container.pause().await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    ground.redis().container.unpause().await.unwrap();
    let mut renewed = Vec::new();
    for _ in 0..100 {
        renewed = subscriber_ids(&mut redis).await;
        if renewed.len() == 1 && renewed != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        renewed.len() == 1 && renewed != first,
        "a new subscription replaced {first:?}: {renewed:?}"
    );
    wait_subscribers(&mut redis, &endpoint, 1).await;
}
