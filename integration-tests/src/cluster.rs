//! The whole split deployment in containers on a private network, as compose runs it: Redis,
//! NATS, etcd, a game service (the demo game, or the Go peer written like Roma in a small image
//! of its own, registered in etcd as a kratos app registers Roma), three brokers (or as many as
//! asked) and two edges,
//! every Janus process from the project's own image, and Prometheus scraping them. The full-stack suite drives it and breaks
//! parts of it; this module only starts it, cuts and restores the path between one edge and one
//! broker, SIGKILLs and restarts its processes, and reads what its parts report (broker `/stats`, edge `/stats/connections`,
//! Prometheus queries, the registrations in etcd).
//!
//! Links between edges and brokers have networks of their own, so that one edge can be
//! partitioned from one broker: broker `k` advertises (registers in etcd, and so is dialled by the
//! edges at) a name that exists only on network `k`, which holds broker `k` and both edges.
//! Everything else (Redis, NATS, etcd, the game, Prometheus, the brokers' own traffic) uses the
//! main network. Taking edge `e` off network `k` cuts exactly edge `e` ↔ broker `k`.

use std::collections::BTreeMap;
use std::time::Duration;

use janus_client::{Client, Endpoint};
use janus_ops::internal_tls::{self, InternalTls, Role};
use janus_protocol::handshake::Mode;
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::gopeer;
use crate::infra::{HOW_TO_FIX, infra_image, janus_image};
use crate::pki::Pki;
use crate::stack::{COLOR, GameKind, Keys, http_get, try_http_get};
use janus_proto::broadcaster::service::push::v1 as bc;
use testcontainers::core::ContainerRequest;

/// A started container.
pub type Container = ContainerAsync<GenericImage>;

/// The stack; dropping it removes every container, then the link networks.
pub struct Cluster {
    /// The keys the edges use and the test clients trust.
    pub keys: Keys,
    /// Redis (routes).
    pub redis: Container,
    /// NATS (the push bus).
    pub nats: Container,
    /// etcd (discovery); its client port is published to the host.
    pub etcd: Container,
    /// The game service: the demo game, or the Go Roma peer under `gopeers/kratosapp`.
    pub game: Container,
    /// The brokers (three unless started with [`Cluster::start_sized`]).
    pub brokers: Vec<Container>,
    /// Two edges.
    pub edges: Vec<Container>,
    /// Prometheus with the compose stack's scrape configuration.
    pub prometheus: Container,
    /// The internal TLS material every process uses (mounted at `/pki`; kept until the
    /// containers are gone), and the `admin` certificate the suites push with.
    _pki: Pki,
    admin: InternalTls,
    /// Network `k` carries the links to broker `k`. Last, so it is dropped after the containers.
    link_networks: Networks,
}

/// A push API client.
pub type PushApi = bc::push_service_client::PushServiceClient<tonic::transport::Channel>;

/// Where [`Cluster`] mounts its internal TLS material in every container.
const PKI_MOUNT: &str = "/pki";

/// `request` with mutual TLS on its internal links: a certificate of `role` from `pki`, named
/// by the `PREFIX__INTERNAL_TLS__*` variables, the material mounted at [`PKI_MOUNT`].
fn with_internal_tls(
    request: ContainerRequest<GenericImage>,
    prefix: &str,
    pki: &Pki,
    role: Role,
) -> ContainerRequest<GenericImage> {
    let config = pki.issue(&pki.ca, role);
    let inside = |path: &str| {
        let name = std::path::Path::new(path).file_name().unwrap();
        format!("{PKI_MOUNT}/{}", name.to_string_lossy())
    };
    request
        .with_mount(Mount::bind_mount(
            pki.dir().display().to_string(),
            PKI_MOUNT,
        ))
        .with_env_var(
            format!("{prefix}__INTERNAL_TLS__CA_FILE"),
            inside(&config.ca_file),
        )
        .with_env_var(
            format!("{prefix}__INTERNAL_TLS__CERT_FILE"),
            inside(&config.cert_file),
        )
        .with_env_var(
            format!("{prefix}__INTERNAL_TLS__KEY_FILE"),
            inside(&config.key_file),
        )
}

/// Docker networks made outside testcontainers; removed on drop (containers on them must be gone
/// by then).
struct Networks(Vec<String>);

impl Networks {
    fn create(names: impl IntoIterator<Item = String>) -> Self {
        let mut made = Self(Vec::new());
        for name in names {
            docker_blocking(&["network", "create", &name]).unwrap_or_else(|e| panic!("{e}"));
            made.0.push(name);
        }
        made
    }
}

impl Drop for Networks {
    fn drop(&mut self) {
        for name in &self.0 {
            // An endpoint of a container removed a moment ago can linger briefly.
            let mut removed = docker_blocking(&["network", "rm", name]);
            for _ in 0..10 {
                if removed.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
                removed = docker_blocking(&["network", "rm", name]);
            }
            if let Err(e) = removed {
                eprintln!("cluster: network {name} left behind: {e}");
            }
        }
    }
}

/// Runs the Docker CLI; its standard output, or what it said on failure.
fn docker_blocking(args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// [`docker_blocking`] without holding up the runtime (the load steps' sessions run on it).
async fn docker(args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        docker_blocking(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// What container `id` has written to stdout and stderr so far.
pub async fn container_logs(id: &str) -> String {
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("docker")
            .args(["logs", &id])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_else(|e| format!("docker logs: {e}"))
    })
    .await
    .unwrap_or_default()
}

/// One broker link as an edge's `/stats/connections` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStats {
    /// The broker's endpoint (as registered in etcd).
    pub endpoint: String,
    /// Whether the link is up.
    pub up: bool,
    /// Sessions of this edge on that broker.
    pub sessions: usize,
}

/// What a broker's `/stats` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerStats {
    /// The endpoint it registered (`ip:port`), the one edges hash uids over.
    pub endpoint: String,
    /// Sessions it holds.
    pub sessions: usize,
}

async fn start(request: testcontainers::ContainerRequest<GenericImage>, what: &str) -> Container {
    request
        .with_startup_timeout(Duration::from_secs(90))
        .start()
        .await
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}\n{HOW_TO_FIX}; the janus image: JANUS_IMAGE=janus:test deploy/images.sh project <janus binary>"))
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) % 1_000_000
}

/// The Go Roma peer's image (`integration-tests/go/Dockerfile`): its static binaries on
/// `JANUS_BASE_IMAGE`, tagged by their content so that a machine never runs a stale build and
/// concurrent runs of different trees do not share a tag. Built when missing.
async fn go_roma_image() -> GenericImage {
    let binaries = ["roma", "kratosapp"].map(gopeer::binary);
    let mut tag = std::hash::DefaultHasher::new();
    for binary in &binaries {
        std::hash::Hash::hash(&std::fs::read(binary).unwrap(), &mut tag);
    }
    let dockerfile = include_str!("../go/Dockerfile");
    std::hash::Hash::hash(dockerfile, &mut tag);
    let base =
        std::env::var("JANUS_BASE_IMAGE").unwrap_or_else(|_| "debian:bookworm-slim".to_owned());
    std::hash::Hash::hash(&base, &mut tag);
    let tag = format!("{:016x}", std::hash::Hasher::finish(&tag));
    let image = format!("janus-test/go-roma:{tag}");
    if docker(&["image", "inspect", &image]).await.is_err() {
        let context = std::env::temp_dir().join(format!("janus-go-roma-{tag}-{}", rand_suffix()));
        std::fs::create_dir_all(&context).unwrap();
        for binary in &binaries {
            std::fs::copy(binary, context.join(binary.file_name().unwrap())).unwrap();
        }
        std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        let built = docker(&[
            "build",
            "-q",
            "-t",
            &image,
            "--build-arg",
            &format!("BASE_IMAGE={base}"),
            &context.display().to_string(),
        ])
        .await;
        let _ = std::fs::remove_dir_all(&context);
        built.unwrap_or_else(|e| {
            panic!("cannot build the Go Roma image on {base}: {e}\n{HOW_TO_FIX}")
        });
    }
    GenericImage::new("janus-test/go-roma", tag.as_str())
}

impl Cluster {
    /// A push API client of broker `broker` (published port), over mutual TLS with the
    /// `admin` certificate.
    pub async fn push_api(&self, broker: usize) -> PushApi {
        let port = self.brokers[broker]
            .get_host_port_ipv4(17100.tcp())
            .await
            .unwrap();
        let channel = internal_tls::channel(
            &format!("127.0.0.1:{port}"),
            Some(&self.admin),
            Role::Broker,
            |e| e.connect_timeout(Duration::from_secs(5)),
        )
        .unwrap();
        PushApi::new(channel)
    }

    /// Starts every container with the demo game and waits until each says it is ready (edges:
    /// a broker link is up).
    pub async fn start() -> Self {
        Self::start_with(GameKind::Demo).await
    }

    /// [`Cluster::start`] with the game service `game`.
    pub async fn start_with(game: GameKind) -> Self {
        Self::start_sized(game, 3).await
    }

    /// [`Cluster::start_with`] with `brokers` brokers instead of three.
    pub async fn start_sized(game: GameKind, brokers: usize) -> Self {
        Self::start_on_bus(game, brokers, "nats").await
    }

    /// [`Cluster::start_sized`] with the brokers' `[bus] backend` `bus` (`nats`, or `redis`:
    /// the route store's Redis, as a go-pantheon deployment has no NATS).
    pub async fn start_on_bus(game: GameKind, brokers: usize, bus: &str) -> Self {
        let broker_count = brokers;
        let id = format!("{}-{}", std::process::id(), rand_suffix());
        let net = format!("janus-fs-{id}");
        let name = |role: &str| format!("{role}-{id}");
        // Made first, so that a failed start drops it after the containers started so far.
        let link_networks = Networks::create((0..broker_count).map(|k| format!("{net}-b{k}")));
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
            ))
            .with_exposed_port(2379.tcp());
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

        // Every internal link is mutual TLS, as in compose; the Go Roma peer serves and pushes
        // plaintext, as Roma does (PROTOCOL.md §15.3).
        let pki = Pki::new();
        let admin = pki.issue(&pki.ca, Role::Admin);
        let admin = InternalTls::load(&admin).unwrap().expect("internal TLS on");
        let plaintext_game = matches!(game, GameKind::GoRoma(_));

        // Room pushes go to broker 0, which forwards them to the others.
        let push = format!("{}:17100", name("broker-0"));
        let game = match game {
            GameKind::Demo => {
                let game = janus_image()
                    .with_wait_for(WaitFor::message_on_stdout("demo game service started"))
                    .with_exposed_port(17200.tcp());
                let game = on_net(game, "game")
                    .with_cmd(["game-demo"])
                    .with_env_var("JANUS_GAME_DEMO__PUSH", push)
                    .with_env_var(
                        "JANUS_GAME_DEMO__ETCD_ENDPOINTS",
                        format!("[\"{etcd_url}\"]"),
                    )
                    .with_env_var("JANUS_GAME_DEMO__COLOR", COLOR);
                let game = with_internal_tls(game, "JANUS_GAME_DEMO", &pki, Role::Game);
                start(game, "game-demo").await
            }
            GameKind::GoRoma(flags) => {
                // kratosapp registers the peer under its container name once it listens, with a
                // lease it keeps alive, as a kratos app registers Roma's services.
                let game = go_roma_image()
                    .await
                    .with_wait_for(WaitFor::message_on_stdout("\"event\":\"registered\""))
                    .with_exposed_port(17200.tcp());
                let advertise = format!("{}:17200", name("game"));
                let mut cmd = vec![
                    "-etcd",
                    &etcd_url,
                    "-advertise",
                    &advertise,
                    "-color",
                    COLOR,
                    "--",
                    "/usr/local/bin/roma",
                    "-listen",
                    "0.0.0.0:17200",
                    "-push",
                    &push,
                ];
                cmd.extend_from_slice(flags);
                let cmd: Vec<String> = cmd.into_iter().map(str::to_owned).collect();
                start(on_net(game, "game").with_cmd(cmd), "the Go Roma peer").await
            }
        };

        let mut brokers = Vec::new();
        for i in 0..broker_count {
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
                .with_env_var("JANUS_BROKER__BUS__BACKEND", bus)
                .with_env_var(
                    "JANUS_BROKER__BUS__NATS_URL",
                    format!("nats://{}:4222", name("nats")),
                )
                .with_env_var("JANUS_BROKER__DISCOVERY__BACKEND", "etcd")
                .with_env_var(
                    "JANUS_BROKER__DISCOVERY__ETCD_ENDPOINTS",
                    format!("[\"{etcd_url}\"]"),
                )
                // A name that only the broker's link network knows (see the module docs).
                .with_env_var(
                    "JANUS_BROKER__ADVERTISE",
                    format!("{}:17100", name(&format!("broker-{i}-link"))),
                );
            let mut broker = with_internal_tls(broker, "JANUS_BROKER", &pki, Role::Broker);
            if plaintext_game {
                let service = |alias: &str| {
                    format!(
                        "{alias} = {{ name = \"roma.{alias}.service\", tunnel = \"{alias}\", plaintext = true }}"
                    )
                };
                broker = broker
                    .with_env_var("JANUS_BROKER__PUSH_API__PLAINTEXT", "true")
                    .with_env_var(
                        "JANUS_BROKER__TUNNELS__SERVICES",
                        format!("{{ {}, {} }}", service("player"), service("room")),
                    );
            }
            let broker = start(broker, "broker").await;
            let alias = name(&format!("broker-{i}-link"));
            docker(&[
                "network",
                "connect",
                "--alias",
                &alias,
                &link_networks.0[i],
                broker.id(),
            ])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            brokers.push(broker);
        }

        let keys = Keys::generate();
        let dir = std::env::temp_dir().join(format!("janus-fs-keys-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.pem"), keys.signing.to_pkcs8_pem().unwrap()).unwrap();
        std::fs::write(dir.join("token.hex"), hex::encode(keys.token.as_bytes())).unwrap();
        let mut edges = Vec::new();
        for i in 0..2 {
            // Its broker links come up only once it is on the link networks, after the start.
            let edge = janus_image()
                .with_wait_for(WaitFor::message_on_stdout("edge started"))
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
                // Every test client reaches the edges from the one Docker gateway address: the
                // continuity suite logs 500 players in, and all of them resume at one edge at
                // once when the other is killed.
                .with_env_var("JANUS_EDGE__LIMITS__HANDSHAKES_PER_IP_PER_SEC", "1000")
                .with_env_var("JANUS_EDGE__LIMITS__MAX_SESSIONS_PER_IP", "2000")
                // The chaos steps send echo requests back to back, above the default
                // per-session message rate.
                .with_env_var("JANUS_EDGE__SESSION__MESSAGES_PER_SEC", "10000")
                // Sessions move to a broker that comes (back) up within seconds, not a minute.
                .with_env_var("JANUS_EDGE__BROKERS__REBALANCE_SPREAD_SECS", "3");
            let edge = with_internal_tls(edge, "JANUS_EDGE", &pki, Role::Edge);
            let edge = start(edge, "edge").await;
            for network in &link_networks.0 {
                docker(&["network", "connect", network, edge.id()])
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            edges.push(edge);
        }

        let shipped = include_str!("../../deploy/observability/prometheus.yml");
        let names = |role: &str, n: usize| {
            let names: Vec<String> = (0..n).map(|i| name(&format!("{role}-{i}"))).collect();
            format!("names: [{}]", names.join(", "))
        };
        let config = shipped
            .replace("names: [edge]", &names("edge", 2))
            .replace("names: [broker]", &names("broker", broker_count));
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
        let cluster = Self {
            keys,
            redis,
            nats,
            etcd,
            game,
            brokers,
            edges,
            prometheus,
            _pki: pki,
            admin,
            link_networks,
        };
        for edge in 0..cluster.edges.len() {
            let mut links = Vec::new();
            for _ in 0..120 {
                links = cluster.edge_links(edge).await;
                if links.len() == cluster.brokers.len() && links.iter().all(|l| l.up) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            assert!(
                links.len() == cluster.brokers.len() && links.iter().all(|l| l.up),
                "edge {edge} links every broker: {links:?}\n{}",
                cluster.diagnostics()
            );
        }
        cluster
    }

    /// Takes edge `edge` off broker `broker`'s link network: the link between the two is cut,
    /// nothing else is.
    pub async fn partition(&self, edge: usize, broker: usize) {
        let network = &self.link_networks.0[broker];
        docker(&["network", "disconnect", network, self.edges[edge].id()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Puts edge `edge` back on broker `broker`'s link network.
    pub async fn heal(&self, edge: usize, broker: usize) {
        let network = &self.link_networks.0[broker];
        docker(&["network", "connect", network, self.edges[edge].id()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `docker kill` (SIGKILL) of `container`: the process dies at once, nothing of it runs a
    /// shutdown path (`stop_with_timeout(Some(0))` sends SIGTERM first, which an edge takes as
    /// a drain).
    pub async fn sigkill(&self, container: &Container) {
        docker(&["kill", "--signal", "KILL", container.id()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts edge `edge` again after it stopped (its networks stay attached; its published
    /// ports change, so [`Cluster::endpoints`] must be asked again) and waits until it links
    /// every running broker.
    pub async fn restart_edge(&self, edge: usize) {
        self.edges[edge]
            .start()
            .await
            .unwrap_or_else(|e| panic!("cannot start edge {edge} again: {e}"));
        let mut running = 0;
        for broker in &self.brokers {
            running += usize::from(broker.is_running().await.unwrap_or(false));
        }
        let mut links = Vec::new();
        for _ in 0..120 {
            links = self.edge_links(edge).await;
            if links.iter().filter(|l| l.up).count() == running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "edge {edge} restarted but links {running} brokers: {links:?}\n{}",
            self.diagnostics()
        );
    }

    /// Starts broker `broker` again after it stopped (its link-network name stays, so it comes
    /// back at the endpoint it had) and waits until every edge links it.
    pub async fn restart_broker(&self, broker: usize) {
        self.brokers[broker]
            .start()
            .await
            .unwrap_or_else(|e| panic!("cannot start broker {broker} again: {e}"));
        for _ in 0..120 {
            let mut linked = 0;
            for edge in 0..self.edges.len() {
                let links = self.edge_links(edge).await;
                if links.len() == self.brokers.len() && links.iter().all(|l| l.up) {
                    linked += 1;
                }
            }
            if linked == self.edges.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "broker {broker} restarted but not every edge links it\n{}",
            self.diagnostics()
        );
    }

    /// Edge `edge`'s `/stats/connections` (JSON null if it does not answer).
    async fn edge_connections(&self, edge: usize) -> serde_json::Value {
        let Ok(port) = self.edges[edge].get_host_port_ipv4(18100.tcp()).await else {
            return serde_json::Value::Null;
        };
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let stats = try_http_get(addr, "/stats/connections").await;
        stats
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    /// The id edge `edge` goes by, from its `/stats/connections` (empty if it does not answer).
    pub async fn edge_id(&self, edge: usize) -> String {
        let json = self.edge_connections(edge).await;
        json["edge_id"].as_str().unwrap_or_default().to_owned()
    }

    /// Edge `edge`'s broker links, from its `/stats/connections` (empty if it does not answer).
    pub async fn edge_links(&self, edge: usize) -> Vec<LinkStats> {
        let json = self.edge_connections(edge).await;
        let Some(brokers) = json["by_broker"].as_array() else {
            return Vec::new();
        };
        brokers
            .iter()
            .map(|b| LinkStats {
                endpoint: b["endpoint"].as_str().unwrap_or_default().to_owned(),
                up: b["up"].as_bool().unwrap_or(false),
                sessions: b["sessions"].as_u64().unwrap_or(0) as usize,
            })
            .collect()
    }

    /// Waits up to 40 s (scrapes and DNS refreshes run every 5 s) until the PromQL `query`
    /// evaluates to `want`; returns what it last evaluated to.
    pub async fn prometheus_until(&self, query: &str, want: f64) -> Option<f64> {
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
            let (_, body) = http_get(addr, &format!("/api/v1/query?query={encoded}")).await;
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

    /// The client endpoints of edge `edge`, named by transport.
    pub async fn endpoints(&self, edge: usize) -> [(&'static str, Endpoint); 4] {
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

    /// Logs `uid` in at `endpoint`; panics if that fails.
    pub async fn login(&self, endpoint: &Endpoint, uid: i64) -> Client {
        self.try_login(endpoint, uid)
            .await
            .unwrap_or_else(|e| panic!("uid {uid} cannot log in at {endpoint:?}: {e}"))
    }

    /// Logs `uid` in at `endpoint`.
    pub async fn try_login(&self, endpoint: &Endpoint, uid: i64) -> janus_client::Result<Client> {
        Client::connect(
            endpoint,
            &self.keys.client_config(Mode::V2),
            &self.keys.token(uid),
        )
        .await
    }

    /// Each broker's `/stats`, `None` for a broker that is not running.
    pub async fn broker_stats(&self) -> Vec<Option<BrokerStats>> {
        let mut all = Vec::new();
        for broker in &self.brokers {
            let Ok(port) = broker.get_host_port_ipv4(18101.tcp()).await else {
                all.push(None);
                continue;
            };
            let addr = format!("127.0.0.1:{port}").parse().unwrap();
            let (_, stats) = http_get(addr, "/stats").await;
            let json: serde_json::Value = serde_json::from_str(&stats)
                .unwrap_or_else(|e| panic!("broker /stats is not JSON ({e}): {stats}"));
            all.push(Some(BrokerStats {
                endpoint: json["endpoint"].as_str().unwrap_or_default().to_owned(),
                sessions: json["sessions"].as_u64().unwrap_or(0) as usize,
            }));
        }
        all
    }

    /// Sessions per broker, from each broker's `/stats` (0 for a broker that is not running).
    pub async fn sessions_by_broker(&self) -> Vec<usize> {
        self.broker_stats()
            .await
            .into_iter()
            .map(|s| s.map_or(0, |s| s.sessions))
            .collect()
    }

    /// The warnings, errors and session closes the edges and brokers logged (the last 30 lines
    /// of each), for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        let roles = self.edges.iter().map(|c| ("edge", c));
        let roles = roles.chain(self.brokers.iter().map(|c| ("broker", c)));
        for (role, container) in roles {
            let logs = std::process::Command::new("docker")
                .args(["logs", container.id()])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr)
                })
                .unwrap_or_else(|e| format!("docker logs: {e}"));
            let noteworthy: Vec<&str> = logs
                .lines()
                .filter(|l| {
                    l.contains("session closed")
                        || !(l.contains("\"level\":\"INFO\"") || l.contains("\"level\":\"DEBUG\""))
                })
                .collect();
            let tail = &noteworthy[noteworthy.len().saturating_sub(30)..];
            out += &format!("--- {role} {}:\n{}\n", container.id(), tail.join("\n"));
        }
        out
    }

    /// Every registration in etcd (key → lease id), read through etcd's published port; an
    /// error while etcd does not answer.
    pub async fn registrations(&self) -> Result<BTreeMap<String, i64>, String> {
        let port = self
            .etcd
            .get_host_port_ipv4(2379.tcp())
            .await
            .map_err(|e| e.to_string())?;
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(1));
        let read = async {
            let mut client =
                etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], Some(options))
                    .await?;
            let response = client
                .get(
                    "/microservices/",
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await?;
            Ok::<_, etcd_client::Error>(
                response
                    .kvs()
                    .iter()
                    .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.lease()))
                    .collect(),
            )
        };
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(read) => read.map_err(|e| e.to_string()),
            Err(_) => Err("etcd did not answer within 2 s".into()),
        }
    }
}
