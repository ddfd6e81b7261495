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
//! records are spelled out here as go-pantheon spells them, not taken from Janus's helpers.

use std::collections::BTreeMap;
use std::time::Duration;

use janus_broker::Broker;
use janus_broker::config::DiscoveryBackend;
use janus_edge::Edge;
use janus_integration_tests::gopeer;
use janus_integration_tests::stack::{Game, Ground, echo, recv, tcp};
use janus_proto::broadcaster::service::push::v1 as bc;
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_shared::client::{Client, unix_now};
use janus_shared::discovery::{Discovery, EtcdDiscovery, Instance};
use janus_shared::handshake::Mode;
use janus_shared::token::TokenCodec;
use prost::Message;
use tokio::net::TcpListener;

const BROADCAST_CHANNEL: &str = "gate.broadcast.message";

/// Two brokers, each behind its own edge: b1 serves blue and red, b2 red only.
struct Deployment {
    ground: Ground,
    etcd_url: String,
    _etcd: janus_integration_tests::Service,
    _game: Game,
    _game_registrations: Vec<janus_shared::discovery::Registration>,
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

/// What one call of the grpc-go pusher (`gopeers/pusher`) printed.
#[derive(Debug)]
struct GoPush {
    /// The nodes the colour filter kept.
    nodes: Vec<String>,
    /// The gateway route of the calling context's (colour, oid), "" without one.
    route: String,
    /// The node it called.
    node: String,
    /// `PushResponse.pushed`.
    pushed: bool,
    /// `MulticastResponse.pushed_uids`, sorted.
    pushed_uids: Vec<i64>,
}

/// A game service as Roma is built: an etcd registry, a Redis client, the broadcaster API
/// (through the grpc-go pusher, which does what fabrica-kit's connection does).
struct Roma {
    etcd_url: String,
    redis_addr: String,
    etcd: etcd_client::Client,
    redis: redis::aio::MultiplexedConnection,
}

fn body(text: &str) -> bc::PushBody {
    bc::PushBody {
        data: text.as_bytes().to_vec(),
        r#mod: 3,
        seq: 7,
        obj: 0,
        data_version: 0,
    }
}

/// `r_janus.gate.interface_{<color>}_{<uid>}`, fabrica-kit's gateway route key.
fn route_key(color: &str, uid: i64) -> String {
    format!("r_janus.gate.interface_{{{color}}}_{{{uid}}}")
}

impl Roma {
    async fn connect(deployment: &Deployment) -> Self {
        let etcd = etcd_client::Client::connect([deployment.etcd_url.as_str()], None)
            .await
            .unwrap();
        let redis_addr = deployment.ground.redis.addr.clone();
        let redis = redis::Client::open(format!("redis://{redis_addr}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Self {
            etcd_url: deployment.etcd_url.clone(),
            redis_addr,
            etcd,
            redis,
        }
    }

    /// Every registered `janus.gate.interface` instance (kratos: `/microservices/<name>/`,
    /// JSON values; the node address is the `grpc://` endpoint's).
    async fn gate_nodes(&mut self) -> Vec<Node> {
        let response = self
            .etcd
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

    /// One broadcaster call by the grpc-go pusher from the worker of `oid` in `color` (the
    /// body is [`body`]'s); what it printed, or why it failed.
    async fn go_push(&self, color: &str, oid: i64, call: &[&str]) -> Result<GoPush, String> {
        let oid = oid.to_string();
        let mut args = vec![
            "-etcd",
            &self.etcd_url,
            "-redis",
            &self.redis_addr,
            "-color",
            color,
            "-oid",
            &oid,
            "-mod",
            "3",
            "-seq",
            "7",
        ];
        args.extend_from_slice(call);
        let run = tokio::process::Command::new(gopeer::binary("pusher"))
            .args(&args)
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("the Go pusher {args:?} ran longer than 20 s"))
            .expect("the Go pusher runs");
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        let line: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("the Go pusher printed no JSON ({e}): {output:?}"));
        let strings = |v: &serde_json::Value| -> Vec<String> {
            serde_json::from_value(v.clone()).unwrap_or_default()
        };
        let pushed = GoPush {
            nodes: strings(&line["nodes"]),
            route: line["route"].as_str().unwrap_or_default().to_owned(),
            node: line["node"].as_str().unwrap_or_default().to_owned(),
            pushed: line["pushed"].as_bool().unwrap_or_default(),
            pushed_uids: serde_json::from_value(line["pushed_uids"].clone()).unwrap_or_default(),
        };
        // fabrica-kit's reader balancer: the route's node when the filter kept it.
        if pushed.nodes.contains(&pushed.route) {
            assert_eq!(pushed.node, pushed.route, "{pushed:?}");
        }
        Ok(pushed)
    }

    /// Roma's `Publisher.Push` from the worker of player `uid` in `color`: no colour, no sid.
    async fn grpc_push(&self, color: &str, uid: i64, text: &str) -> GoPush {
        let player = uid.to_string();
        self.go_push(
            color,
            uid,
            &["-call", "push", "-uid", &player, "-data", text],
        )
        .await
        .unwrap_or_else(|e| panic!("push to {uid}: {e}"))
    }

    /// Roma's `Publisher.Multicast` from the worker of `oid` in `color`.
    async fn grpc_multicast(&self, color: &str, oid: i64, uids: &[i64], text: &str) -> GoPush {
        let list: Vec<String> = uids.iter().map(i64::to_string).collect();
        let list = list.join(",");
        self.go_push(
            color,
            oid,
            &["-call", "multicast", "-uids", &list, "-data", text],
        )
        .await
        .unwrap_or_else(|e| panic!("multicast to {list}: {e}"))
    }

    /// Roma's `Publisher.Broadcast` from the worker of `oid` in `color` on server `sid`.
    async fn grpc_broadcast(&self, color: &str, oid: i64, sid: i64, text: &str) -> GoPush {
        let sid = sid.to_string();
        self.go_push(
            color,
            oid,
            &["-call", "broadcast", "-sid", &sid, "-data", text],
        )
        .await
        .unwrap_or_else(|e| panic!("broadcast to {color}/{sid}: {e}"))
    }

    /// PUBLISH `message` on `channel`; the number of subscribers that received it.
    async fn publish(&mut self, channel: &str, message: &bc::PushMessage) -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message.encode_to_vec())
            .query_async(&mut self.redis)
            .await
            .unwrap()
    }

    /// Roma's broadcaster `Push`/`Multicast`: the players' gateway routes, then one message
    /// per route value (the gateway's `host:port`), carrying only uids and bodies.
    async fn redis_multicast(&mut self, color: &str, uids: &[i64], text: &str) {
        let keys: Vec<String> = uids.iter().map(|uid| route_key(color, *uid)).collect();
        let routes: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.redis)
            .await
            .unwrap();
        let mut by_gate: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (uid, route) in uids.iter().zip(routes) {
            by_gate
                .entry(route.expect("every player here has a route"))
                .or_default()
                .push(*uid);
        }
        for (gate, uids) in by_gate {
            let message = bc::PushMessage {
                bodies: vec![body(text)],
                uids,
                ..Default::default()
            };
            assert_eq!(
                self.publish(&gate, &message).await,
                1,
                "exactly one subscriber, the broker at {gate}, takes its channel"
            );
        }
    }

    /// Roma's broadcaster `Broadcast`: colour and sid, the `broadcast` flag left unset.
    async fn redis_broadcast(&mut self, color: &str, sid: i64, text: &str) {
        let message = bc::PushMessage {
            bodies: vec![body(text)],
            color: color.into(),
            sid,
            ..Default::default()
        };
        assert_eq!(
            self.publish(BROADCAST_CHANNEL, &message).await,
            2,
            "both brokers subscribe to the broadcast channel"
        );
    }

    /// Waits until `channel` has `want` subscribers.
    async fn wait_subscribers(&mut self, channel: &str, want: i64) {
        wait_subscribers(&mut self.redis, channel, want).await;
    }
}

/// Waits until `channel` has `want` subscribers.
async fn wait_subscribers(redis: &mut redis::aio::MultiplexedConnection, channel: &str, want: i64) {
    for _ in 0..100 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(redis)
            .await
            .unwrap();
        if n == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{channel} never had {want} subscribers");
}

/// Every push `client` receives up to the `end` marker, sorted.
async fn pushes_until_end(client: &mut Client) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let packet = recv(client).await;
        assert_eq!(
            (packet.index, packet.r#mod, packet.seq),
            (0, 3, 7),
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
    let mut roma = Roma::connect(&deployment).await;

    // What Roma finds in etcd: the go-pantheon gate's record, once per colour served.
    let nodes = roma.gate_nodes().await;
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
    roma.wait_subscribers(b1.endpoint(), 1).await;
    roma.wait_subscribers(b2.endpoint(), 1).await;
    roma.wait_subscribers(BROADCAST_CHANNEL, 2).await;

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
        .go_push(
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
    roma.redis_multicast("blue", &[1004], "redis push").await;
    roma.redis_multicast("red", &[1002], "redis push").await;
    roma.redis_multicast("red", &[1002, 1003, 1005], "redis multicast")
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
        .query_async(&mut roma.redis)
        .await
        .unwrap();
    assert_eq!(killed, 2, "both brokers' subscriptions cut");
    roma.wait_subscribers(b1.endpoint(), 1).await;
    roma.wait_subscribers(b2.endpoint(), 1).await;
    roma.wait_subscribers(BROADCAST_CHANNEL, 2).await;
    roma.redis_multicast("blue", &[1001], "redis after reconnect")
        .await;

    // Anything misdirected has had time to arrive before the end marker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    roma.redis_multicast("blue", &[1001, 1004], "end").await;
    roma.redis_multicast("red", &[1002, 1003, 1005], "end")
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
    let mut redis = redis::Client::open(format!("redis://{}", ground.redis.addr))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
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
    let mut redis = redis::Client::open(format!("redis://{}", ground.redis.addr))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let endpoint = broker.endpoint().to_owned();
    wait_subscribers(&mut redis, &endpoint, 1).await;
    let first = subscriber_ids(&mut redis).await;
    assert_eq!(first.len(), 1, "one subscription connection: {first:?}");

    // Longer than the PING period: the answered PING keeps the same connection.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(subscriber_ids(&mut redis).await, first);

    // Redis frozen: no FIN, no RST, just silence. The unanswered PING ends the subscription,
    // and once Redis answers again the broker subscribes on a new connection.
    ground.redis.container.pause().await.unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    ground.redis.container.unpause().await.unwrap();
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
