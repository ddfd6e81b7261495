//! A gateway stack for tests: a game service (the demo game, or the Go Roma peer), brokers on
//! real Redis and NATS (or, for the suites about the edge's behaviour, on the in-memory route
//! store and bus of standalone mode), edges in front of them, and clients with valid (or
//! deliberately bad) tokens. Every part is the real one; only the addresses are ephemeral.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use janus_broker::config::{BrokerConfig, BusBackend, RoutesBackend, StaticInstance};
use janus_broker::{Broker, route::RedisRoutes};
use janus_client::{Client, ClientConfig, Endpoint, unix_now};
use janus_demo_game as demo;
use janus_edge::Edge;
use janus_edge::config::EdgeConfig;
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_protocol::handshake::{ClientHandshakeConfig, Mode};
use janus_protocol::keys::{SigningKey, TokenKey};
use janus_protocol::session::SessionConfig;
use janus_protocol::token::TokenCodec;
use tokio::net::TcpListener;

use crate::gopeer;
use crate::infra::{self, Service};

/// The colour every test session uses.
pub const COLOR: &str = "blue";

/// The bearer token of the brokers' mutating admin requests ([`Ground::broker_config`]).
pub const ADMIN_TOKEN: &str = "janus-test-admin-token";

/// The file holding [`ADMIN_TOKEN`], written once per test process (brokers of tests running
/// at once read it while it exists, never while it is being written).
fn admin_token_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("janus-admin-token-{}", std::process::id()));
        janus_protocol::keys::write_secret(&path, ADMIN_TOKEN.as_bytes()).unwrap();
        path
    })
}

/// Keys shared by the edges and the test clients.
pub struct Keys {
    /// The edges' signing key.
    pub signing: SigningKey,
    /// The Lares token key.
    pub token: TokenKey,
}

impl Keys {
    /// A fresh key set.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(),
            token: TokenKey::generate(),
        }
    }

    /// A valid token for `uid` on server 1, expiring in ten minutes.
    pub fn token(&self, uid: i64) -> String {
        self.token_with(uid, 1, unix_now() + 600, OnlineStatus::Gate as i32)
    }

    /// A token for `uid` on server `sid` with the given expiry and status.
    pub fn token_with(&self, uid: i64, sid: i64, timeout: i64, status: i32) -> String {
        TokenCodec::new(&self.token).seal(&AuthToken {
            account_id: uid,
            server_id: sid,
            color: COLOR.into(),
            timeout,
            status,
            ..Default::default()
        })
    }

    /// A v2 client configuration trusting the edges' key.
    pub fn client_config(&self, mode: Mode) -> ClientConfig {
        ClientConfig {
            handshake: ClientHandshakeConfig {
                server_key: self.signing.verifying_key(),
                client_key: None,
                mode,
                server_id: 0,
                cert_version: 0,
                resumable: false,
            },
            session: SessionConfig::default(),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// Which game service a stack runs behind its brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GameKind {
    /// The demo game (tonic, in this process).
    Demo,
    /// The Go peer written like Roma's tunnel handlers ([`gopeer::Roma`]), with these extra
    /// flags (e.g. `-kick-conflicts`).
    GoRoma(&'static [&'static str]),
}

impl GameKind {
    /// The kind `JANUS_TEST_GAME` names (`demo`, the default, or `go-roma`), so that whole
    /// suites written against [`Stack::start`] also run against the Go peer.
    pub fn from_env() -> Self {
        match std::env::var("JANUS_TEST_GAME").as_deref() {
            Err(_) | Ok("" | "demo") => Self::Demo,
            Ok("go-roma") => Self::GoRoma(&[]),
            Ok(other) => panic!("JANUS_TEST_GAME={other:?}: expected \"demo\" or \"go-roma\""),
        }
    }
}

/// The game service on an ephemeral port: the demo game on a runtime of its own, so that
/// killing it drops every connection at once like a crashed process, or the Go Roma peer.
pub struct Game {
    /// `host:port` of its gRPC server.
    pub endpoint: String,
    runner: Runner,
}

enum Runner {
    Demo(Option<tokio::runtime::Runtime>),
    Go(Box<gopeer::Roma>),
}

impl Game {
    /// Starts the game service `JANUS_TEST_GAME` names (the demo game by default); room pushes
    /// go through the broker at `push_endpoint`.
    pub async fn start(push_endpoint: &str) -> Self {
        Self::start_kind(GameKind::from_env(), push_endpoint).await
    }

    /// Starts a game service of `kind`; room pushes go through the broker at `push_endpoint`.
    pub async fn start_kind(kind: GameKind, push_endpoint: &str) -> Self {
        match kind {
            GameKind::Demo => Self::start_on(crate::ports::listener(), push_endpoint),
            GameKind::GoRoma(flags) => {
                let roma = gopeer::Roma::start_with(push_endpoint, flags);
                Self {
                    endpoint: roma.endpoint.clone(),
                    runner: Runner::Go(Box::new(roma)),
                }
            }
        }
    }

    /// Starts the demo game on `listener` (to restart it on the same address).
    pub fn start_on(listener: std::net::TcpListener, push_endpoint: &str) -> Self {
        Self::start_with_tls(listener, push_endpoint, None)
    }

    /// Starts the demo game on `listener`, serving and pushing over mutual TLS with `tls`.
    pub fn start_with_tls(
        listener: std::net::TcpListener,
        push_endpoint: &str,
        tls: Option<janus_ops::internal_tls::InternalTls>,
    ) -> Self {
        let endpoint = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let push_endpoint = push_endpoint.to_owned();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            demo::serve(listener, &push_endpoint, tls, std::future::pending())
                .await
                .unwrap();
        });
        Self {
            endpoint,
            runner: Runner::Demo(Some(runtime)),
        }
    }

    /// The Go Roma peer, when this is one (to look at what it saw).
    pub fn roma(&self) -> Option<&gopeer::Roma> {
        match &self.runner {
            Runner::Go(roma) => Some(roma),
            Runner::Demo(_) => None,
        }
    }

    /// Kills it like a crash: the listener and every connection close at once.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Game {
    fn drop(&mut self) {
        if let Runner::Demo(runtime) = &mut self.runner
            && let Some(runtime) = runtime.take()
        {
            runtime.shutdown_background();
        }
    }
}

/// Real Redis and NATS (or neither: the brokers' in-memory backends) plus the keys: the shared
/// ground of a stack.
pub struct Ground {
    /// Redis; without it, the brokers keep their routes and run their bus in memory.
    pub redis: Option<Service>,
    /// NATS, the brokers' bus; without it, the brokers' bus runs on Redis.
    pub nats: Option<Service>,
    /// Keys.
    pub keys: Arc<Keys>,
}

impl Ground {
    /// Starts Redis and NATS containers.
    pub async fn start() -> Self {
        let (redis, nats) = tokio::join!(infra::redis(), infra::nats());
        Self {
            redis: Some(redis),
            nats: Some(nats),
            keys: Arc::new(Keys::generate()),
        }
    }

    /// Starts a Redis container only: brokers keep their routes in it and run their bus on it
    /// (`[bus] backend = "redis"`), as a deployment without NATS does.
    pub async fn start_without_nats() -> Self {
        Self {
            redis: Some(infra::redis().await),
            nats: None,
            keys: Arc::new(Keys::generate()),
        }
    }

    /// No container at all: brokers keep their routes and run their bus in memory, as in
    /// standalone mode (each broker its own; for suites about the edge, not about Redis or NATS).
    pub fn in_memory() -> Self {
        Self {
            redis: None,
            nats: None,
            keys: Arc::new(Keys::generate()),
        }
    }

    /// Redis, for suites about it.
    pub fn redis(&self) -> &Service {
        self.redis
            .as_ref()
            .expect("a ground with Redis (Ground::start)")
    }

    /// A direct client of the route store, to look at what brokers wrote.
    pub fn routes(&self) -> RedisRoutes {
        RedisRoutes::standalone(
            &format!("redis://{}", self.redis().addr),
            Duration::from_secs(2),
        )
        .unwrap()
    }

    /// A broker configuration on this ground, routing to the game services at `games`; its
    /// mutating admin requests take [`ADMIN_TOKEN`].
    pub fn broker_config(&self, games: &[&str]) -> BrokerConfig {
        let mut config = BrokerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            admin_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            admin_token_file: admin_token_file().display().to_string(),
            ..BrokerConfig::default()
        };
        match (&self.redis, &self.nats) {
            (None, _) => {
                config.routes.backend = RoutesBackend::Memory;
                config.bus.backend = BusBackend::Memory;
            }
            (Some(redis), nats) => {
                config.routes.backend = RoutesBackend::Redis;
                config.routes.redis_urls = vec![format!("redis://{}", redis.addr)];
                match nats {
                    Some(nats) => {
                        config.bus.backend = BusBackend::Nats;
                        config.bus.nats_url = format!("nats://{}", nats.addr);
                    }
                    None => config.bus.backend = BusBackend::Redis,
                }
            }
        }
        for game in games {
            for name in ["roma.player.service", "roma.room.service"] {
                config.discovery.instances.push(StaticInstance {
                    name: name.into(),
                    endpoint: (*game).into(),
                    color: COLOR.into(),
                    weight: 1,
                });
            }
        }
        config
    }

    /// Starts a broker with `config` on `listener`.
    pub async fn broker_on(&self, config: BrokerConfig, listener: TcpListener) -> Broker {
        Broker::start(config, listener).await.unwrap()
    }

    /// An edge configuration linking to `brokers`, every listener on an ephemeral port.
    pub fn edge_config(&self, brokers: &[&str]) -> EdgeConfig {
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut config = EdgeConfig {
            admin_listen: any_port,
            ..EdgeConfig::default()
        };
        config.tcp.listen = any_port;
        config.websocket.listen = any_port;
        config.kcp.listen = any_port;
        config.quic.listen = any_port;
        config.brokers.endpoints = brokers.iter().map(|b| (*b).to_owned()).collect();
        config.brokers.reconnect_ms = Duration::from_millis(100);
        // Every test client dials from 127.0.0.1, and a test opens more connections in a
        // second than the production per-IP rate allows; the flood test sets its own.
        config.limits.handshakes_per_ip_per_sec = 1000;
        config
    }

    /// A v2 client of `uid` on server `sid` over `endpoint`.
    pub async fn client(&self, endpoint: &Endpoint, uid: i64, sid: i64) -> Client {
        let keys = &self.keys;
        let token = keys.token_with(uid, sid, unix_now() + 600, OnlineStatus::Gate as i32);
        Client::connect(endpoint, &keys.client_config(Mode::V2), &token)
            .await
            .unwrap_or_else(|e| panic!("client {uid} could not connect: {e}"))
    }

    /// Starts an edge with `config` and waits for a broker link.
    pub async fn edge(&self, config: EdgeConfig) -> Edge {
        self.edge_with_client_cert(config, None).await
    }

    /// Starts an edge that, with `client_cert`, requires clients to sign with its key.
    pub async fn edge_with_client_cert(
        &self,
        config: EdgeConfig,
        client_cert: Option<janus_protocol::keys::VerifyingKey>,
    ) -> Edge {
        let handshake =
            config.handshake_config(self.keys.signing.clone(), &self.keys.token, client_cert);
        let edge = Edge::start(config, Arc::new(handshake)).await.unwrap();
        assert!(
            edge.wait_for_broker(Duration::from_secs(10)).await,
            "edge never linked to a broker"
        );
        edge
    }
}

/// One edge, one broker, one demo game: the smallest whole gateway.
pub struct Stack {
    /// Redis, NATS, keys.
    pub ground: Ground,
    /// The game service.
    pub game: Game,
    /// The broker.
    pub broker: Broker,
    /// The edge.
    pub edge: Edge,
}

impl Stack {
    /// Starts everything with the game service `JANUS_TEST_GAME` names (the demo game by
    /// default, see [`GameKind::from_env`]); `tune` may change the edge configuration first.
    pub async fn start(tune: impl FnOnce(&mut EdgeConfig)) -> Self {
        Self::start_with_game(GameKind::from_env(), tune).await
    }

    /// Starts everything without a container: the broker's routes and bus in memory
    /// ([`Ground::in_memory`]), the game service `JANUS_TEST_GAME` names; `tune` may change the
    /// edge configuration first. For the suites about the edge's behaviour.
    pub async fn in_memory(tune: impl FnOnce(&mut EdgeConfig)) -> Self {
        Self::start_on(Ground::in_memory(), GameKind::from_env(), tune).await
    }

    /// Starts everything with a game service of `kind`; `tune` may change the edge
    /// configuration first.
    pub async fn start_with_game(kind: GameKind, tune: impl FnOnce(&mut EdgeConfig)) -> Self {
        Self::start_on(Ground::start().await, kind, tune).await
    }

    /// Starts a broker, an edge and a game service of `kind` on `ground` (e.g. with keys of
    /// the test's choosing); `tune` may change the edge configuration first.
    pub async fn start_on(
        ground: Ground,
        kind: GameKind,
        tune: impl FnOnce(&mut EdgeConfig),
    ) -> Self {
        let listener = crate::ports::tokio_listener();
        let broker_addr = listener.local_addr().unwrap().to_string();
        let game = Game::start_kind(kind, &broker_addr).await;
        let broker = ground
            .broker_on(ground.broker_config(&[&game.endpoint]), listener)
            .await;
        let mut config = ground.edge_config(&[&broker_addr]);
        tune(&mut config);
        let edge = ground.edge(config).await;
        Self {
            ground,
            game,
            broker,
            edge,
        }
    }

    /// The TCP endpoint of the edge.
    pub fn tcp(&self) -> Endpoint {
        tcp(&self.edge)
    }

    /// The WebSocket endpoint of the edge.
    pub fn ws(&self) -> Endpoint {
        ws(&self.edge)
    }

    /// A v2 client of `uid` over `endpoint`.
    pub async fn client(&self, endpoint: &Endpoint, uid: i64) -> Client {
        self.ground.client(endpoint, uid, 1).await
    }

    /// A client of `uid` over `endpoint` speaking handshake `mode`.
    pub async fn client_with(&self, endpoint: &Endpoint, uid: i64, mode: Mode) -> Client {
        let keys = &self.ground.keys;
        Client::connect(endpoint, &keys.client_config(mode), &keys.token(uid))
            .await
            .unwrap_or_else(|e| panic!("client {uid} ({mode:?}) could not connect: {e}"))
    }
}

/// The TCP endpoint of `edge`.
pub fn tcp(edge: &Edge) -> Endpoint {
    Endpoint::Tcp(edge.tcp_addr.expect("TCP enabled").to_string())
}

/// The WebSocket endpoint of `edge`.
pub fn ws(edge: &Edge) -> Endpoint {
    Endpoint::WebSocket(format!(
        "ws://{}/ws",
        edge.ws_addr.expect("WebSocket enabled")
    ))
}

/// The KCP endpoint of `edge`.
pub fn kcp(edge: &Edge) -> Endpoint {
    Endpoint::Kcp(edge.kcp_addr.expect("KCP enabled").to_string())
}

/// The QUIC endpoint of `edge` (its development certificate is accepted; the Janus handshake
/// authenticates the edge).
pub fn quic(edge: &Edge) -> Endpoint {
    Endpoint::Quic {
        addr: edge.quic_addr.expect("QUIC enabled").to_string(),
        server_name: "localhost".into(),
        ca_pem: None,
    }
}

/// Every transport of `edge`, with its name.
pub fn all_transports(edge: &Edge) -> [(&'static str, Endpoint); 4] {
    [
        ("tcp", tcp(edge)),
        ("websocket", ws(edge)),
        ("kcp", kcp(edge)),
        ("quic", quic(edge)),
    ]
}

/// The next packet `client` receives, within ten seconds.
pub async fn recv(client: &mut Client) -> janus_proto::packet::Packet {
    tokio::time::timeout(Duration::from_secs(10), client.recv())
        .await
        .expect("a packet within 10 s")
        .expect("the connection stays up")
}

/// Pushes `bodies` to `uid` (of [`COLOR`]) through the broker's broadcaster push API; returns
/// the uids that had a live session to take them.
pub async fn multicast(
    push: &mut janus_proto::broadcaster::service::push::v1::push_service_client::PushServiceClient<
        tonic::transport::Channel,
    >,
    uid: i64,
    bodies: Vec<janus_proto::broadcaster::service::push::v1::PushBody>,
) -> Vec<i64> {
    let request = janus_proto::broadcaster::service::push::v1::MulticastRequest {
        bodies,
        uids: vec![uid],
        color: COLOR.into(),
    };
    push.multicast(request)
        .await
        .unwrap()
        .into_inner()
        .pushed_uids
}

/// The value of `series` (a metric name with its labels, as `/metrics` prints them) on the
/// admin endpoint at `addr`.
pub async fn metric(addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    let (_, metrics) = http_get(addr, "/metrics").await;
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Waits up to five seconds for `series` on the admin endpoint at `addr` to satisfy `want`;
/// panics with the last value otherwise.
pub async fn wait_metric(addr: std::net::SocketAddr, series: &str, want: impl Fn(f64) -> bool) {
    let mut last = None;
    for _ in 0..50 {
        last = metric(addr, series).await;
        if last.is_some_and(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{series} is {last:?}");
}

/// `GET path` on `addr` over HTTP/1.0: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path).await
}

/// `method path` on `addr` over HTTP/1.0 with an empty body: the status code and the body.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_as(addr, method, path, None).await
}

/// [`http`] with `Authorization: Bearer <bearer>` when given.
pub async fn http_as(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let response = try_http(addr, method, path, bearer)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The body of `GET path` on `addr` over HTTP/1.0, `None` if the server does not answer (a
/// container that is starting, say: its published port may accept and reset).
pub async fn try_http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let response = try_http(addr, "GET", path, None).await.ok()?;
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

async fn try_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// A packet for the game service: module `module`, `seq`, object `obj`, body `data`.
pub fn request(module: i32, seq: i32, obj: i64, data: &[u8]) -> janus_proto::packet::Packet {
    janus_proto::packet::Packet {
        r#mod: module,
        seq,
        obj,
        data: data.to_vec(),
        ..Default::default()
    }
}

/// A request the demo game's player service echoes (mod 2, seq 1).
pub fn echo(data: &[u8]) -> janus_proto::packet::Packet {
    janus_proto::packet::Packet {
        r#mod: 2,
        seq: 1,
        data: data.to_vec(),
        ..Default::default()
    }
}

/// Asserts that `who` has nothing waiting: an echo's reply is the next packet it gets.
pub async fn assert_quiet(client: &mut Client, who: &str) {
    let reply = client
        .request(echo(b"quiet"), |p| panic!("{who} got {p:?}"))
        .await
        .unwrap();
    assert_eq!(reply.data, b"quiet", "{who}");
}

/// Asserts that `packet` is SCServerLogout with `code`.
pub fn assert_logout(packet: &janus_proto::packet::Packet, code: LogoutCode) {
    use prost::Message;
    let system = (
        janus_protocol::system::MODULE,
        janus_protocol::system::SEQ_LOGOUT,
    );
    assert_eq!(
        (packet.r#mod, packet.seq),
        system,
        "not a logout: {packet:?}"
    );
    let got = janus_proto::message::ScServerLogout::decode(&packet.data[..])
        .expect("an SCServerLogout body")
        .code;
    assert_eq!(got, code as i32, "logout code");
}
