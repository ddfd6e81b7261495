//! The whole split deployment in containers on a private network, as compose runs it: Redis,
//! NATS, etcd, the demo game service, three brokers and two edges, every Janus process from the
//! project's own image. Players log in and echo over every transport through both edges, pushes
//! cross brokers, a broker is killed mid-session, Redis restarts, and an edge drains on SIGTERM.
//! Prometheus runs beside them with the compose stack's scrape configuration
//! (deploy/observability/prometheus.yml, the service names swapped for this run's container
//! names) and must find and scrape every edge and broker.

use std::collections::BTreeMap;
use std::time::Duration;

use janus_broker::bus::{NatsBus, PushBus, subject};
use janus_integration_tests::infra::{HOW_TO_FIX, infra_image, janus_image};
use janus_integration_tests::stack::{COLOR, Keys, echo};
use janus_proto::broadcaster::service::push::v1 as bc;
use janus_proto::message::ScServerLogout;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_shared::client::{Client, Endpoint};
use janus_shared::handshake::Mode;
use janus_shared::system;
use prost::Message;
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

type Container = ContainerAsync<GenericImage>;

struct Cluster {
    keys: Keys,
    redis: Container,
    nats: Container,
    _etcd: Container,
    _game: Container,
    brokers: Vec<Container>,
    edges: Vec<Container>,
    prometheus: Container,
}

async fn start(request: testcontainers::ContainerRequest<GenericImage>, what: &str) -> Container {
    request
        .with_startup_timeout(Duration::from_secs(90))
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}\n{HOW_TO_FIX}; the janus image: eval \"$(deploy/images.sh project <janus binary>)\""))
}

impl Cluster {
    async fn start() -> Self {
        let id = format!("{}-{}", std::process::id(), rand_suffix());
        let net = format!("janus-fs-{id}");
        let name = |role: &str| format!("{role}-{id}");
        let on_net = |image: GenericImage, role: &str| {
            image
                .with_network(net.clone())
                .with_container_name(name(role))
        };

        let redis = infra_image("JANUS_REDIS_IMAGE", "redis:7.2-alpine").with_wait_for(
            WaitFor::message_on_either_std("Ready to accept connections"),
        );
        let nats = infra_image("JANUS_NATS_IMAGE", "nats:2.10-alpine")
            .with_wait_for(WaitFor::message_on_either_std("Server is ready"))
            .with_exposed_port(4222.tcp());
        let etcd = infra_image("JANUS_ETCD_IMAGE", "gcr.io/etcd-development/etcd:v3.5.17")
            .with_wait_for(WaitFor::message_on_either_std(
                "ready to serve client requests",
            ));
        let etcd_cmd = [
            "etcd",
            "--data-dir=/tmp/etcd-data",
            "--listen-client-urls=http://0.0.0.0:2379",
            &format!("--advertise-client-urls=http://{}:2379", name("etcd")),
        ]
        .map(str::to_owned);
        let (redis, nats, etcd) = tokio::join!(
            start(on_net(redis, "redis"), "redis"),
            start(on_net(nats, "nats"), "nats"),
            start(on_net(etcd, "etcd").with_cmd(etcd_cmd), "etcd"),
        );
        let etcd_url = format!("http://{}:2379", name("etcd"));

        let game = janus_image()
            .with_wait_for(WaitFor::message_on_stdout("demo game service started"))
            .with_exposed_port(17200.tcp());
        let game = on_net(game, "game")
            .with_cmd(["game-demo"])
            .with_env_var(
                "JANUS_GAME_DEMO__PUSH",
                format!("{}:17100", name("broker-0")),
            )
            .with_env_var(
                "JANUS_GAME_DEMO__ETCD_ENDPOINTS",
                format!("[\"{etcd_url}\"]"),
            )
            .with_env_var("JANUS_GAME_DEMO__COLOR", COLOR);
        let game = start(game, "game-demo").await;

        let mut brokers = Vec::new();
        for i in 0..3 {
            let broker = janus_image()
                .with_wait_for(WaitFor::message_on_stdout("broker started"))
                .with_exposed_port(17100.tcp())
                .with_exposed_port(18101.tcp());
            let broker = on_net(broker, &format!("broker-{i}"))
                .with_cmd(["broker"])
                .with_env_var("JANUS_BROKER__ROUTES__BACKEND", "redis")
                .with_env_var(
                    "JANUS_BROKER__ROUTES__REDIS_URLS",
                    format!("[\"redis://{}:6379\"]", name("redis")),
                )
                .with_env_var("JANUS_BROKER__ROUTES__TIMEOUT_MS", "1000")
                .with_env_var("JANUS_BROKER__BUS__BACKEND", "nats")
                .with_env_var(
                    "JANUS_BROKER__BUS__NATS_URL",
                    format!("nats://{}:4222", name("nats")),
                )
                .with_env_var("JANUS_BROKER__DISCOVERY__BACKEND", "etcd")
                .with_env_var(
                    "JANUS_BROKER__DISCOVERY__ETCD_ENDPOINTS",
                    format!("[\"{etcd_url}\"]"),
                );
            brokers.push(start(broker, "broker").await);
        }

        let keys = Keys::generate();
        let dir = std::env::temp_dir().join(format!("janus-fs-keys-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.pem"), keys.signing.to_pkcs8_pem().unwrap()).unwrap();
        std::fs::write(dir.join("token.hex"), hex::encode(keys.token.as_bytes())).unwrap();
        let mut edges = Vec::new();
        for i in 0..2 {
            let edge = janus_image()
                .with_wait_for(WaitFor::message_on_stdout("broker link up"))
                .with_exposed_port(17001.tcp())
                .with_exposed_port(17002.tcp())
                .with_exposed_port(17003.udp())
                .with_exposed_port(17004.udp())
                .with_exposed_port(18100.tcp());
            let edge = on_net(edge, &format!("edge-{i}"))
                .with_cmd(["edge"])
                .with_mount(Mount::bind_mount(dir.display().to_string(), "/keys"))
                .with_env_var("JANUS_EDGE__KEYS__SIGNING_KEY_FILE", "/keys/server.pem")
                .with_env_var("JANUS_EDGE__KEYS__TOKEN_KEY_FILE", "/keys/token.hex")
                .with_env_var("JANUS_EDGE__BROKERS__DISCOVERY", "etcd")
                .with_env_var(
                    "JANUS_EDGE__BROKERS__ETCD_ENDPOINTS",
                    format!("[\"{etcd_url}\"]"),
                )
                .with_env_var("JANUS_EDGE__DRAIN_GRACE_SECS", "1")
                // Every test client reaches the edges from the one Docker gateway address.
                .with_env_var("JANUS_EDGE__LIMITS__HANDSHAKES_PER_IP_PER_SEC", "1000");
            edges.push(start(edge, "edge").await);
        }

        let shipped = include_str!("../../deploy/observability/prometheus.yml");
        let names = |role: &str, n: usize| {
            let names: Vec<String> = (0..n).map(|i| name(&format!("{role}-{i}"))).collect();
            format!("names: [{}]", names.join(", "))
        };
        let config = shipped
            .replace("names: [edge]", &names("edge", 2))
            .replace("names: [broker]", &names("broker", 3));
        assert_ne!(
            config, shipped,
            "the scrape configuration names the edge and broker services"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let prometheus = infra_image("JANUS_PROMETHEUS_IMAGE", "prom/prometheus:v2.53.2")
            .with_wait_for(WaitFor::message_on_either_std(
                "Server is ready to receive web requests",
            ))
            .with_exposed_port(9090.tcp());
        let prometheus = on_net(prometheus, "prometheus").with_mount(Mount::bind_mount(
            dir.join("prometheus.yml").display().to_string(),
            "/etc/prometheus/prometheus.yml",
        ));
        let prometheus = start(prometheus, "prometheus").await;
        Self {
            keys,
            redis,
            nats,
            _etcd: etcd,
            _game: game,
            brokers,
            edges,
            prometheus,
        }
    }

    /// Waits up to 40 s (scrapes and DNS refreshes run every 5 s) until the PromQL `query`
    /// evaluates to `want`; returns what it last evaluated to.
    async fn prometheus_until(&self, query: &str, want: f64) -> Option<f64> {
        let port = self
            .prometheus
            .get_host_port_ipv4(9090.tcp())
            .await
            .unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut last = None;
        for _ in 0..80 {
            let (_, body) = janus_integration_tests::stack::http_get(
                addr,
                &format!("/api/v1/query?query={encoded}"),
            )
            .await;
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            last = json["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok());
            if last == Some(want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        last
    }

    async fn endpoints(&self, edge: usize) -> [(&'static str, Endpoint); 4] {
        let c = &self.edges[edge];
        let port = |p: u16, udp: bool| async move {
            if udp {
                c.get_host_port_ipv4(p.udp()).await.unwrap()
            } else {
                c.get_host_port_ipv4(p.tcp()).await.unwrap()
            }
        };
        [
            (
                "tcp",
                Endpoint::Tcp(format!("127.0.0.1:{}", port(17001, false).await)),
            ),
            (
                "websocket",
                Endpoint::WebSocket(format!("ws://127.0.0.1:{}/ws", port(17002, false).await)),
            ),
            (
                "kcp",
                Endpoint::Kcp(format!("127.0.0.1:{}", port(17003, true).await)),
            ),
            (
                "quic",
                Endpoint::Quic {
                    addr: format!("127.0.0.1:{}", port(17004, true).await),
                    server_name: "localhost".into(),
                    ca_pem: None,
                },
            ),
        ]
    }

    async fn login(&self, endpoint: &Endpoint, uid: i64) -> Client {
        Client::connect(
            endpoint,
            &self.keys.client_config(Mode::V2),
            &self.keys.token(uid),
        )
        .await
        .unwrap_or_else(|e| panic!("uid {uid} cannot log in at {endpoint:?}: {e}"))
    }

    /// Sessions per broker, from each broker's /stats.
    async fn sessions_by_broker(&self) -> Vec<usize> {
        let mut counts = Vec::new();
        for broker in &self.brokers {
            let Ok(port) = broker.get_host_port_ipv4(18101.tcp()).await else {
                counts.push(0);
                continue;
            };
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            let (_, stats) = janus_integration_tests::stack::http_get(addr, "/stats").await;
            let n = stats
                .split("\"sessions\":")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            counts.push(n);
        }
        counts
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) % 1_000_000
}

async fn round_trip(client: &mut Client, text: &str) {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(echo(text.as_bytes()), |_| {}),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to {text}"))
    .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(reply.data, text.as_bytes());
}

#[tokio::test]
async fn the_split_deployment_in_containers() {
    let cluster = Cluster::start().await;

    // Every transport through both edges.
    let mut players: BTreeMap<i64, Client> = BTreeMap::new();
    let mut uid = 100;
    for edge in 0..2 {
        for (name, endpoint) in cluster.endpoints(edge).await {
            uid += 1;
            let mut client = cluster.login(&endpoint, uid).await;
            round_trip(&mut client, &format!("{name} via edge {edge}")).await;
            players.insert(uid, client);
        }
    }
    let spread = cluster.sessions_by_broker().await;
    assert_eq!(spread.iter().sum::<usize>(), players.len(), "{spread:?}");
    assert!(
        spread.iter().filter(|n| **n > 0).count() >= 2,
        "sessions spread over brokers: {spread:?}"
    );

    // Prometheus finds every edge and broker by DNS and sees the sessions they hold.
    for (query, want) in [
        ("count(up{job=\"janus-edge\"} == 1)", 2.0),
        ("count(up{job=\"janus-broker\"} == 1)", 3.0),
        ("sum(janus_edge_sessions)", players.len() as f64),
        (
            "sum(janus_broker_live{what=\"sessions\"})",
            players.len() as f64,
        ),
    ] {
        let seen = cluster.prometheus_until(query, want).await;
        assert_eq!(seen, Some(want), "Prometheus: {query}");
    }

    // A multicast through one broker reaches players on every broker.
    let port = cluster.brokers[0]
        .get_host_port_ipv4(17100.tcp())
        .await
        .unwrap();
    let mut push =
        bc::push_service_client::PushServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
    let uids: Vec<i64> = players.keys().copied().collect();
    let request = bc::MulticastRequest {
        bodies: vec![bc::PushBody {
            data: b"to all".to_vec(),
            r#mod: 9,
            ..Default::default()
        }],
        uids: uids.clone(),
        color: COLOR.into(),
    };
    let mut pushed = push
        .multicast(request)
        .await
        .unwrap()
        .into_inner()
        .pushed_uids;
    pushed.sort();
    assert_eq!(pushed, uids);
    for (uid, client) in players.iter_mut() {
        let packet = tokio::time::timeout(Duration::from_secs(10), client.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(packet.data, b"to all", "uid {uid}");
    }

    // Kill the broker holding the most sessions: its sessions re-attach, the rest never notice.
    let before = cluster.sessions_by_broker().await;
    let victim = (0..3).max_by_key(|i| before[*i]).unwrap();
    cluster.brokers[victim]
        .stop_with_timeout(Some(0))
        .await
        .unwrap();
    for (uid, client) in players.iter_mut() {
        let mut answered = false;
        for attempt in 0..20 {
            client
                .send(echo(format!("after kill {attempt}").as_bytes()))
                .await
                .unwrap();
            if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), client.recv()).await
            {
                assert_ne!(
                    (reply.r#mod, reply.seq),
                    (system::MODULE, system::SEQ_LOGOUT),
                    "uid {uid} was logged out"
                );
                answered = true;
                break;
            }
        }
        assert!(answered, "uid {uid} never answered after the broker died");
    }
    let after = cluster.sessions_by_broker().await;
    assert_eq!(after[victim], 0, "{after:?}");

    // Redis restarts: open sessions go on, new ones work once it is back.
    cluster.redis.stop().await.unwrap();
    cluster.redis.start().await.unwrap();
    for client in players.values_mut() {
        round_trip(client, "after redis restart").await;
    }
    let [(_, tcp0), ..] = cluster.endpoints(0).await;
    let mut late = None;
    for _ in 0..30 {
        let mut client = cluster.login(&tcp0, 999).await;
        client.send(echo(b"late")).await.unwrap();
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), client.recv()).await
            && reply.data == b"late"
        {
            late = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(late.is_some(), "no new session after Redis came back");

    // NATS restarts: open sessions never notice, and pushes published on NATS reach players
    // again once the brokers have reconnected (NATS delivers at most once: what is published
    // while it is down is lost, so the test publishes until one arrives).
    cluster.nats.stop().await.unwrap();
    for client in players.values_mut() {
        round_trip(client, "nats down").await;
    }
    cluster.nats.start().await.unwrap();
    let back = std::time::Instant::now();
    let port = cluster.nats.get_host_port_ipv4(4222.tcp()).await.unwrap();
    let bus = NatsBus::connect(&format!("nats://127.0.0.1:{port}"), "fullstack")
        .await
        .unwrap();
    let (&uid, client) = players.iter_mut().next().unwrap();
    let message = bc::PushMessage {
        bodies: vec![bc::PushBody {
            data: b"via nats".to_vec(),
            r#mod: 9,
            ..Default::default()
        }],
        uids: vec![uid],
        color: COLOR.into(),
        ..Default::default()
    };
    let mut resumed = None;
    for _ in 0..150 {
        bus.publish(subject::INGRESS, message.encode_to_vec().into())
            .await
            .unwrap();
        if let Ok(Ok(push)) = tokio::time::timeout(Duration::from_millis(200), client.recv()).await
            && push.data == b"via nats"
        {
            resumed = Some(back.elapsed());
            break;
        }
    }
    let resumed = resumed.expect("pushes over NATS resume after a restart");
    eprintln!("chaos: NATS restart: pushes over NATS resumed {resumed:?} after it was back");

    // Drain edge 1 with SIGTERM: its players are logged out, edge 0's are untouched, exit 0.
    let edge1 = cluster.edges[1].id().to_owned();
    cluster.edges[1].stop_with_timeout(Some(30)).await.unwrap();
    for (uid, client) in players.iter_mut() {
        if *uid > 104 {
            let logout = tokio::time::timeout(Duration::from_secs(10), client.recv()).await;
            let Ok(Ok(logout)) = logout else {
                let logs = std::process::Command::new("docker")
                    .args(["logs", &edge1])
                    .output()
                    .unwrap();
                panic!(
                    "uid {uid}: no logout ({logout:?}); edge log:\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            };
            assert_eq!(
                (logout.r#mod, logout.seq),
                (system::MODULE, system::SEQ_LOGOUT),
                "uid {uid}"
            );
            assert_eq!(
                ScServerLogout::decode(&logout.data[..]).unwrap().code,
                LogoutCode::Server as i32
            );
        } else {
            round_trip(client, "edge 1 drained").await;
        }
    }
    let exit = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.ExitCode}}", &edge1])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&exit.stdout).trim(),
        "0",
        "a drained edge exits 0"
    );
}
