//! The go-pantheon drop-in, accepted as a team running go-pantheon would take it (issue 12,
//! item 9; PROTOCOL.md §14.1): Janus run with the profile `configs.tmpl/go-pantheon/` alone —
//! the edge and broker files parsed as `janus edge --config …` / `janus broker --config …`
//! parse them, with only listen addresses, the Redis and etcd addresses and the key paths
//! overridden (asserted) — on real Redis and etcd and no NATS, two brokers behind one edge, keys
//! from the real `janus keygen` and a Lares token key as go-pantheon's configs hold it (a raw
//! 32-character string). The game service is the grpc-go Roma peer, registered in etcd as a
//! kratos app the way Roma registers itself; the players are the Go client (legacy handshake,
//! the server key taken from keygen's `server.crt`) over TCP, WebSocket and KCP with FEC and
//! two smux streams; Roma's pushes come through both of its paths: the broadcaster API called
//! by the grpc-go pusher over fabrica-kit's etcd colour filter, and Redis `PUBLISH` on the
//! route-value channel and `gate.broadcast.message`. Each push must reach exactly its sessions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use janus_broker::Broker;
use janus_broker::config::BrokerConfig;
use janus_edge::Edge;
use janus_edge::config::EdgeConfig;
use janus_edge::rendezvous_score;
use janus_integration_tests::gopeer::{self, GoProcess};
use janus_integration_tests::roma::{PUSH_MOD, PUSH_SEQ, Pusher};
use janus_integration_tests::stack::http_get;
use janus_integration_tests::{Service, etcd, janus_binary, redis};
use janus_ops::config::{parse, parse_with_overrides};
use serde_json::Value;

const EDGE_PROFILE: &str = include_str!("../../configs.tmpl/go-pantheon/edge.toml");
const BROKER_PROFILE: &str = include_str!("../../configs.tmpl/go-pantheon/broker.toml");
const EDGE_ORIGIN: &str = "configs.tmpl/go-pantheon/edge.toml";
const BROKER_ORIGIN: &str = "configs.tmpl/go-pantheon/broker.toml";

/// The gate's `account_aes_key` = Lares's `token_key`, a raw 32-character string as in
/// go-pantheon's example configs (AES-256-GCM).
const TOKEN_KEY: &str = "Qm7rTz2VwXk9pLs4NbYc8HdJf3GaEu6R";
/// The profile's colour (`discovery.colors`); Roma's instances and the players' tokens carry it.
const COLOR: &str = "local";
/// A colour no broker serves, for a session that must not get the profile colour's broadcasts.
const OTHER_COLOR: &str = "other";
/// How many brokers run the broker profile.
const BROKERS: usize = 2;

/// A key directory as a go-pantheon operator would make it: `janus keygen` (server.pem,
/// server.crt, …) and the gate's `account_aes_key` file holding the raw key string.
fn key_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("janus-dropin-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(janus_binary())
        .arg("keygen")
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("janus keygen runs");
    assert!(out.status.success(), "janus keygen failed: {out:?}");
    let pem = std::fs::read_to_string(dir.join("server.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    std::fs::write(dir.join("account_aes_key"), format!("{TOKEN_KEY}\n")).unwrap();
    dir
}

/// The only fields a deployment of the profile has to set: where it listens, where its Redis
/// and etcd are, where its key files are.
fn edge_overrides(etcd_url: &str, keys: &Path) -> Vec<(String, String)> {
    let loopback = "\"127.0.0.1:0\"".to_owned();
    [
        ("JANUS_EDGE__TCP__LISTEN", loopback.clone()),
        ("JANUS_EDGE__WEBSOCKET__LISTEN", loopback.clone()),
        ("JANUS_EDGE__KCP__LISTEN", loopback.clone()),
        ("JANUS_EDGE__ADMIN_LISTEN", loopback.clone()),
        (
            "JANUS_EDGE__BROKERS__ETCD_ENDPOINTS",
            format!("[\"{etcd_url}\"]"),
        ),
        (
            "JANUS_EDGE__KEYS__SIGNING_KEY_FILE",
            format!("{:?}", keys.join("server.pem").display().to_string()),
        ),
        (
            "JANUS_EDGE__KEYS__TOKEN_KEY_FILE",
            format!("{:?}", keys.join("account_aes_key").display().to_string()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// See [`edge_overrides`].
fn broker_overrides(redis_url: &str, etcd_url: &str) -> Vec<(String, String)> {
    let loopback = "\"127.0.0.1:0\"".to_owned();
    [
        ("JANUS_BROKER__LISTEN", loopback.clone()),
        ("JANUS_BROKER__ADMIN_LISTEN", loopback),
        (
            "JANUS_BROKER__ROUTES__REDIS_URLS",
            format!("[\"{redis_url}\"]"),
        ),
        (
            "JANUS_BROKER__DISCOVERY__ETCD_ENDPOINTS",
            format!("[\"{etcd_url}\"]"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Asserts that every override names an address or a key path.
fn assert_only_addresses_and_paths(overrides: &[(String, String)]) {
    for (name, _) in overrides {
        assert!(
            ["_LISTEN", "_ENDPOINTS", "_URLS", "_FILE"]
                .iter()
                .any(|end| name.ends_with(end)),
            "{name} is neither an address nor a key path"
        );
    }
}

/// The edge profile with `overrides` (as the CLI applies `JANUS_EDGE__…`), after asserting that
/// it differs from the profile in exactly the overridden fields.
fn edge_config(overrides: &[(String, String)]) -> EdgeConfig {
    assert_only_addresses_and_paths(overrides);
    let profile: EdgeConfig = parse(EDGE_PROFILE, EDGE_ORIGIN).unwrap();
    let config: EdgeConfig = parse_with_overrides(
        EDGE_PROFILE,
        EDGE_ORIGIN,
        "JANUS_EDGE",
        overrides.iter().cloned(),
    )
    .unwrap();
    let mut back = config.clone();
    back.tcp.listen.clone_from(&profile.tcp.listen);
    back.websocket.listen.clone_from(&profile.websocket.listen);
    back.kcp.listen.clone_from(&profile.kcp.listen);
    back.admin_listen.clone_from(&profile.admin_listen);
    back.brokers
        .etcd_endpoints
        .clone_from(&profile.brokers.etcd_endpoints);
    back.keys
        .signing_key_file
        .clone_from(&profile.keys.signing_key_file);
    back.keys
        .token_key_file
        .clone_from(&profile.keys.token_key_file);
    assert_eq!(
        format!("{back:?}"),
        format!("{profile:?}"),
        "the overrides changed only their fields"
    );
    config
}

/// See [`edge_config`].
fn broker_config(overrides: &[(String, String)]) -> BrokerConfig {
    assert_only_addresses_and_paths(overrides);
    let profile: BrokerConfig = parse(BROKER_PROFILE, BROKER_ORIGIN).unwrap();
    let config: BrokerConfig = parse_with_overrides(
        BROKER_PROFILE,
        BROKER_ORIGIN,
        "JANUS_BROKER",
        overrides.iter().cloned(),
    )
    .unwrap();
    let mut back = config.clone();
    back.listen.clone_from(&profile.listen);
    back.admin_listen.clone_from(&profile.admin_listen);
    back.routes
        .redis_urls
        .clone_from(&profile.routes.redis_urls);
    back.discovery
        .etcd_endpoints
        .clone_from(&profile.discovery.etcd_endpoints);
    assert_eq!(
        format!("{back:?}"),
        format!("{profile:?}"),
        "the overrides changed only their fields"
    );
    config
}

#[test]
fn a_deployment_of_the_profile_sets_only_addresses_and_key_paths() {
    let edge = edge_config(&edge_overrides(
        "http://127.0.0.1:2379",
        Path::new("/etc/janus"),
    ));
    assert_eq!(edge.keys.signing_key_file, "/etc/janus/server.pem");
    let broker = broker_config(&broker_overrides(
        "redis://127.0.0.1:6379",
        "http://127.0.0.1:2379",
    ));
    assert_eq!(broker.listen.to_string(), "127.0.0.1:0");
}

/// The profile deployed: Redis, etcd, brokers, one edge, Roma registered in etcd.
struct Dropin {
    redis: Service,
    etcd_url: String,
    _etcd: Service,
    keys: PathBuf,
    brokers: Vec<Broker>,
    edge: Edge,
    roma: gopeer::Roma,
    other_roma: gopeer::Roma,
}

impl Dropin {
    async fn start() -> Self {
        let (redis, etcd) = tokio::join!(redis(), etcd());
        let redis_url = format!("redis://{}", redis.addr);
        let etcd_url = format!("http://{}", etcd.addr);
        let keys = key_dir();

        let mut brokers = Vec::new();
        for _ in 0..BROKERS {
            // As `janus broker` starts one.
            let config = broker_config(&broker_overrides(&redis_url, &etcd_url));
            let listener = tokio::net::TcpListener::bind(&config.listen).await.unwrap();
            brokers.push(Broker::start(config, listener).await.unwrap());
        }
        // Roma's services as kratos apps in the etcd the brokers discover them in: the
        // profile's colour, and one colour the brokers do not serve.
        let push = brokers[0].endpoint().to_owned();
        let (roma, other_roma) = tokio::join!(
            gopeer::Roma::start_registered(&etcd_url, COLOR, &push, &[]),
            gopeer::Roma::start_registered(&etcd_url, OTHER_COLOR, &push, &[]),
        );

        // As `janus edge` starts one.
        let config = edge_config(&edge_overrides(&etcd_url, &keys));
        let handshake = config.load_handshake().unwrap();
        let edge = Edge::start(config, handshake).await.unwrap();
        let dropin = Self {
            redis,
            etcd_url,
            _etcd: etcd,
            keys,
            brokers,
            edge,
            roma,
            other_roma,
        };
        dropin.wait_for_links().await;
        dropin
    }

    /// Waits until the edge, which found the brokers in etcd, has a link up to each.
    async fn wait_for_links(&self) {
        let mut last = Value::Null;
        for _ in 0..200 {
            let (_, body) = http_get(self.edge.admin_addr, "/stats/connections").await;
            last = serde_json::from_str(&body).unwrap();
            let up = last["by_broker"]
                .as_array()
                .map_or(0, |b| b.iter().filter(|l| l["up"] == true).count());
            if up == BROKERS {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the edge never linked to {BROKERS} brokers: {last}");
    }

    /// The broker the edge sends `uid` to (its rendezvous hash over the brokers).
    fn home(&self, uid: i64) -> usize {
        (0..self.brokers.len())
            .max_by_key(|b| rendezvous_score(uid, self.brokers[*b].endpoint()))
            .unwrap()
    }

    /// The first uid from `from` whose session lands on broker `at`.
    fn uid_on(&self, at: usize, from: i64) -> i64 {
        (from..).find(|uid| self.home(*uid) == at).unwrap()
    }

    /// The Go client over `transport` as `uid` in `color` on server `sid`, with the server key
    /// from keygen's certificate, staying for `pushes` pushes per session after its checks.
    fn client(&self, transport: &str, uid: i64, color: &str, sid: i64, pushes: usize) -> GoProcess {
        let addr = match transport {
            "tcp" => self.edge.tcp_addr.unwrap().to_string(),
            // The profile's path, as go-pantheon's clients dial it.
            "ws" => format!("ws://{}/ws", self.edge.ws_addr.unwrap()),
            "kcp" => self.edge.kcp_addr.unwrap().to_string(),
            other => panic!("no transport {other}"),
        };
        let cert = self.keys.join("server.crt").display().to_string();
        let (uid, sid, pushes) = (uid.to_string(), sid.to_string(), pushes.to_string());
        GoProcess::spawn(&[
            "-transport",
            transport,
            "-addr",
            &addr,
            "-server-pub",
            &cert,
            "-token-key",
            TOKEN_KEY,
            "-uid",
            &uid,
            "-color",
            color,
            "-sid",
            &sid,
            "-await-pushes",
            &pushes,
        ])
    }
}

/// A player: which Go client process, which of its sessions.
#[derive(Debug, Clone, Copy)]
struct Player {
    uid: i64,
    color: &'static str,
    client: usize,
    session: usize,
}

/// The (colour, uid) of each of `players`, as Roma's broadcaster looks up their routes.
fn routed(players: &[Player]) -> Vec<(&'static str, i64)> {
    players.iter().map(|p| (p.color, p.uid)).collect()
}

/// Waits until each of `players` received the push `text`.
async fn delivered(clients: &mut [GoProcess], players: &[Player], text: &str) {
    for p in players {
        let line = clients[p.client]
            .wait_line(
                |l| l["check"] == "received" && l["session"] == p.session && l["data"] == text,
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(
            (&line["uid"], &line["mod"], &line["seq"]),
            (&p.uid.into(), &PUSH_MOD.into(), &PUSH_SEQ.into()),
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_go_pantheon_deployment_runs_on_the_drop_in_profile_alone() {
    let started = std::time::Instant::now();
    let dropin = Dropin::start().await;
    let mut roma = Pusher::connect(&dropin.etcd_url, &dropin.redis, BROKERS).await;

    // Players of the profile's colour on both brokers, on every go-pantheon transport: a
    // KCP session (FEC + smux) opens two smux streams, uids u and u + 1, each a session.
    let kcp = (1000..)
        .find(|uid| dropin.home(*uid) == 0 && dropin.home(uid + 1) == 1)
        .unwrap();
    let tcp = dropin.uid_on(0, 2000);
    let ws = dropin.uid_on(1, 3000);
    let tcp_sid2 = dropin.uid_on(1, 4000);
    let other = 5000;
    // (transport, uid, colour, sid, sessions, pushes each session waits for)
    let runs = [
        ("tcp", tcp, COLOR, 1, 1, 4),
        ("ws", ws, COLOR, 1, 1, 3),
        ("kcp", kcp, COLOR, 1, 2, 4),
        ("tcp", tcp_sid2, COLOR, 2, 1, 4),
        ("tcp", other, OTHER_COLOR, 1, 1, 1),
    ];
    let mut clients: Vec<GoProcess> = runs
        .iter()
        .map(|(transport, uid, color, sid, _, pushes)| {
            dropin.client(transport, *uid, color, *sid, *pushes)
        })
        .collect();
    for (client, run) in clients.iter_mut().zip(&runs) {
        client.wait_ready(run.4, Duration::from_secs(30)).await;
    }
    let player = |client: usize, session: usize| Player {
        uid: runs[client].1 + session as i64,
        color: runs[client].2,
        client,
        session,
    };
    let (a, b, c, d, e, f) = (
        player(0, 0),
        player(1, 0),
        player(2, 0),
        player(2, 1),
        player(3, 0),
        player(4, 0),
    );
    let mut homes = Vec::new();
    for p in [a, b, c, d, e, f] {
        let home = dropin.home(p.uid);
        assert_eq!(
            roma.route(p.color, p.uid).await.as_deref(),
            Some(dropin.brokers[home].endpoint()),
            "{p:?} is on the broker the edge's hash picks"
        );
        homes.push(home);
    }
    homes.sort_unstable();
    homes.dedup();
    assert_eq!(homes, [0, 1], "players on both brokers");

    // (a) The broadcaster API, called by grpc-go over fabrica-kit's colour-filtered connection.
    let push = roma.grpc_push(COLOR, a.uid, "grpc push").await;
    let mut endpoints: Vec<String> = dropin
        .brokers
        .iter()
        .map(|b| b.endpoint().to_owned())
        .collect();
    endpoints.sort();
    assert_eq!(
        push.nodes, endpoints,
        "both brokers registered under the profile's colour"
    );
    assert_eq!(push.node, dropin.brokers[dropin.home(a.uid)].endpoint());
    assert!(push.pushed, "{push:?}");
    delivered(&mut clients, &[a], "grpc push").await;
    let push = roma.grpc_push(COLOR, d.uid, "grpc push").await;
    assert!(push.pushed, "{push:?}");
    delivered(&mut clients, &[d], "grpc push").await;

    let multicast = roma
        .grpc_multicast(COLOR, a.uid, &[b.uid, c.uid, e.uid, 9999], "grpc multicast")
        .await;
    let mut want = vec![b.uid, c.uid, e.uid];
    want.sort_unstable();
    assert_eq!(multicast.pushed_uids, want, "{multicast:?}");
    delivered(&mut clients, &[b, c, e], "grpc multicast").await;

    roma.grpc_broadcast(COLOR, a.uid, 1, "grpc broadcast").await;
    delivered(&mut clients, &[a, b, c, d], "grpc broadcast").await;

    let refused = roma
        .call(
            OTHER_COLOR,
            f.uid,
            &["-call", "push", "-uid", &f.uid.to_string(), "-data", "x"],
        )
        .await
        .unwrap_err();
    assert!(
        refused.contains("no janus.gate.interface node of color"),
        "no broker serves {OTHER_COLOR}, so fabrica-kit's filter finds no node: {refused}"
    );

    // (b) Redis PUBLISH, as Roma's broadcaster sends them.
    roma.wait_brokers(dropin.brokers.iter().map(Broker::endpoint))
        .await;
    roma.redis_multicast(&routed(&[c]), "redis push").await;
    delivered(&mut clients, &[c], "redis push").await;
    roma.redis_multicast(&routed(&[a, d, e]), "redis multicast")
        .await;
    delivered(&mut clients, &[a, d, e], "redis multicast").await;
    roma.redis_broadcast(COLOR, 2, "redis broadcast").await;
    delivered(&mut clients, &[e], "redis broadcast").await;

    // The end: whatever reached a session it should not have came before this.
    roma.redis_multicast(&routed(&[a, b, c, d, e, f]), "end")
        .await;
    let mut finished = Vec::new();
    for client in clients {
        finished.push(client.finish(Duration::from_secs(20)).await);
    }
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    for (p, want) in [
        (
            a,
            strings(&["grpc push", "grpc broadcast", "redis multicast", "end"]),
        ),
        (b, strings(&["grpc multicast", "grpc broadcast", "end"])),
        (
            c,
            strings(&["grpc multicast", "grpc broadcast", "redis push", "end"]),
        ),
        (
            d,
            strings(&["grpc push", "grpc broadcast", "redis multicast", "end"]),
        ),
        (
            e,
            strings(&[
                "grpc multicast",
                "redis multicast",
                "redis broadcast",
                "end",
            ]),
        ),
        (f, strings(&["end"])),
    ] {
        assert_eq!(
            finished[p.client].received(p.session),
            want,
            "what {p:?} received: {:#?}",
            finished[p.client]
        );
    }

    // Every check of every session passed, the heartbeats answered by Roma (the profile's
    // "game" heartbeat mode).
    for (run, (transport, uid, _, _, sessions, _)) in finished.iter().zip(&runs) {
        run.assert_sessions(*uid, *sessions);
        assert_eq!(run.check("done")["transport"], *transport, "{run:#?}");
    }
    assert_eq!(
        dropin.roma.events_of("heartbeat").len(),
        5,
        "one per session of {COLOR}"
    );
    assert_eq!(dropin.other_roma.events_of("heartbeat").len(), 1);
    eprintln!("the drop-in acceptance ran in {:?}", started.elapsed());
}
