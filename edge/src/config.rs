//! The edge's typed configuration (TOML, every field defaulted, unknown fields refused) and its
//! validation, plus loading the key material it names. `configs.tmpl/edge.toml` shows every
//! field with its default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use janus_ops::config::{IpPort, Problems, Validate};
use janus_ops::internal_tls::InternalTlsConfig;
use janus_proto::gate::intra::v1::OnlineStatus;
use janus_protocol::compress::Compression;
use janus_protocol::handshake::ServerHandshakeConfig;
use janus_protocol::keys::{SigningKey, TokenKey, TokenKeyFormat, VerifyingKey};
use janus_protocol::session::SessionConfig;
use janus_protocol::token::TokenCodec;
use janus_transport::kcp::KcpSettings;
use serde::Deserialize;
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use crate::error::{Error, Result};

/// Everything an edge needs to start. Durations and listen addresses are parsed here, once:
/// the file keeps its integers (`*_secs`, `*_ms`) and `ip:port` strings.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// This edge's id, sent to brokers (defaults to `edge-<host name>-<6 random hex digits>`).
    pub id: Option<String>,
    /// TCP listener.
    pub tcp: TcpConfig,
    /// WebSocket listener.
    pub websocket: WebSocketConfig,
    /// KCP (reliable UDP) listener.
    pub kcp: KcpConfig,
    /// QUIC listener.
    pub quic: QuicConfig,
    /// Admin HTTP listen address (`/health`, `/ready`, `/metrics`, `/stats`, `/stats/connections`).
    #[serde_as(as = "IpPort")]
    pub admin_listen: SocketAddr,
    /// Key material.
    pub keys: KeysConfig,
    /// Handshake rules.
    pub handshake: HandshakeRules,
    /// Per-session behaviour and limits.
    pub session: SessionRules,
    /// Session resume (PROTOCOL.md §13).
    pub resume: ResumeRules,
    /// Process-wide limits.
    pub limits: Limits,
    /// Brokers to link to.
    pub brokers: BrokersConfig,
    /// Mutual TLS on the links to brokers (PROTOCOL.md §15).
    pub internal_tls: InternalTlsConfig,
    /// Seconds sessions may go on after SIGTERM before they are logged out (a client holding a
    /// resume ticket is not logged out: its session parks at its broker).
    #[serde_as(as = "DurationSeconds<u64>")]
    pub drain_grace_secs: Duration,
    /// Seconds over which a draining edge tells its resumable clients to reconnect elsewhere
    /// (`SCReconnect`), each at its own moment, so the other edges are not stormed; a spread
    /// longer than `drain_grace_secs` is cut to it.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub drain_spread_secs: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            id: None,
            tcp: TcpConfig::default(),
            websocket: WebSocketConfig::default(),
            kcp: KcpConfig::default(),
            quic: QuicConfig::default(),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 18100)),
            keys: KeysConfig::default(),
            handshake: HandshakeRules::default(),
            session: SessionRules::default(),
            resume: ResumeRules::default(),
            limits: Limits::default(),
            brokers: BrokersConfig::default(),
            internal_tls: InternalTlsConfig::default(),
            drain_grace_secs: Duration::from_secs(30),
            drain_spread_secs: Duration::from_secs(10),
        }
    }
}

/// `[tcp]`.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Whether it listens at all.
    pub enabled: bool,
    /// `ip:port`.
    #[serde_as(as = "IpPort")]
    pub listen: SocketAddr,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 17001)),
        }
    }
}

/// `[websocket]`.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Whether it listens at all.
    pub enabled: bool,
    /// `ip:port`.
    #[serde_as(as = "IpPort")]
    pub listen: SocketAddr,
    /// The HTTP path of the upgrade.
    pub path: String,
    /// Allowed `Origin` values: exact matches, or `*` for any (requests without an Origin
    /// header, i.e. non-browser clients, are always allowed).
    pub allowed_origins: Vec<String>,
    /// TLS certificate chain (PEM): when set with the key, the listener speaks wss only.
    pub tls_cert_file: Option<String>,
    /// TLS private key (PEM).
    pub tls_key_file: Option<String>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 17002)),
            path: "/ws".into(),
            allowed_origins: vec!["*".into()],
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// `[kcp]`.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KcpConfig {
    /// Whether it listens at all.
    pub enabled: bool,
    /// UDP `ip:port`.
    #[serde_as(as = "IpPort")]
    pub listen: SocketAddr,
    /// KCP parameters (`[kcp.params]`); go-pantheon's by default.
    pub params: KcpSettings,
}

impl Default for KcpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 17003)),
            params: KcpSettings::default(),
        }
    }
}

/// `[quic]`.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuicConfig {
    /// Whether it listens at all.
    pub enabled: bool,
    /// UDP `ip:port`.
    #[serde_as(as = "IpPort")]
    pub listen: SocketAddr,
    /// TLS certificate chain, PEM. With no certificate and key a self-signed pair for
    /// `localhost` is generated at start (development only; clients then rely on the Janus
    /// handshake alone to authenticate the edge).
    pub tls_cert_file: Option<String>,
    /// TLS private key, PEM.
    pub tls_key_file: Option<String>,
    /// QUIC endpoints (each its own UDP socket and driver task) sharing `listen` through
    /// `SO_REUSEPORT`; the kernel spreads clients over them by address. Defaults to the
    /// number of CPUs.
    pub endpoints: usize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 17004)),
            tls_cert_file: None,
            tls_key_file: None,
            endpoints: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// `[keys]`: file paths.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// The server's Ed25519 signing key, PKCS#8 PEM.
    pub signing_key_file: String,
    /// The token key shared with Lares: 16, 24 or 32 bytes (AES-128/192/256-GCM), written as
    /// `token_key_format` says.
    pub token_key_file: String,
    /// `hex` (32, 48 or 64 hex digits) or `raw` (the key string exactly as go-pantheon's
    /// configs hold it; one trailing line end is ignored). PROTOCOL.md §6.
    pub token_key_format: TokenKeyFormat,
    /// When set, clients must sign their handshake key with this certificate's key (X.509 PEM).
    pub client_cert_file: Option<String>,
    /// A token-key rollover (PROTOCOL.md §6): the previous token key, in `token_key_format`,
    /// which still opens tokens until `previous_token_key_until`. Empty: none.
    pub previous_token_key_file: String,
    /// Unix seconds until which the previous token key opens tokens (required with it).
    pub previous_token_key_until: i64,
    /// A signing-key rollover (PROTOCOL.md §3.4): more signing keys, each answering the
    /// clients that ask for its `cert_version`; `signing_key_file` is `handshake.cert_version`.
    pub other_signing_keys: Vec<OtherSigningKey>,
}

/// One `[[keys.other_signing_keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtherSigningKey {
    /// The `CSHandshake.cert_version` of the clients that pin this key.
    pub cert_version: i32,
    /// The Ed25519 key, PKCS#8 PEM.
    pub file: String,
}

/// `[handshake]`.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandshakeRules {
    /// Seconds a client has from connecting to finishing the handshake.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub timeout_secs: Duration,
    /// Largest accepted difference between client and server clocks, seconds (handshake and
    /// heartbeats).
    pub max_skew_secs: i64,
    /// Accept go-pantheon v1 (legacy) clients.
    pub allow_legacy: bool,
    /// Accept unencrypted sessions (development only).
    pub allow_unencrypted: bool,
    /// Token statuses accepted (`OnlineStatus` numbers; go-pantheon accepts GATE only).
    pub allowed_statuses: Vec<i32>,
    /// The version of `keys.signing_key_file`, told to clients as `SCHandshake.cert_version`
    /// (PROTOCOL.md §3.4).
    pub cert_version: i32,
}

impl Default for HandshakeRules {
    fn default() -> Self {
        Self {
            timeout_secs: Duration::from_secs(10),
            max_skew_secs: 5,
            allow_legacy: false,
            allow_unencrypted: false,
            allowed_statuses: vec![OnlineStatus::Gate as i32],
            cert_version: 0,
        }
    }
}

/// `[session]`.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionRules {
    /// Seconds without any frame from the client before the session is closed.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub idle_timeout_secs: Duration,
    /// Largest frame payload, bytes.
    pub max_frame: usize,
    /// Server-to-client data at least this long is zlib-compressed, bytes.
    pub compress_threshold: usize,
    /// Largest inflated size of compressed client data, bytes.
    pub max_inflated: usize,
    /// Packets that may wait to be written to one client; when full the client is too slow and
    /// is disconnected.
    pub outbound_queue: usize,
    /// Packets waiting to be written to one client at which the edge tells its broker the
    /// client is backlogged (and again once they are written): the broker then holds the
    /// session's packets and keeps only the newest of each state key (PROTOCOL.md §16). At or
    /// above `outbound_queue` it is never reached: the client is cut off first, as before.
    pub backlog_mark: usize,
    /// Bytes a TCP or WebSocket client's socket may hold not yet sent (`TCP_NOTSENT_LOWAT`);
    /// 0: the kernel's own buffers (megabytes once tuned up), in which a slow client's backlog
    /// hides from the edge. Per-class delivery (PROTOCOL.md §16) needs it bounded.
    pub unsent_limit_bytes: usize,
    /// Seconds one write to the client may take before it counts as a slow consumer.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub write_timeout_secs: Duration,
    /// Sustained client packets per second.
    pub messages_per_sec: u32,
    /// Burst of client packets above the sustained rate.
    pub message_burst: u32,
    /// Sustained client bytes per second.
    pub bytes_per_sec: u32,
    /// Burst of client bytes above the sustained rate.
    pub byte_burst: u32,
    /// Who answers heartbeats: the edge (`edge`, within `handshake.max_skew_secs`) or the game
    /// service, as in go-pantheon (`game`: forwarded like any packet; the edge still counts them
    /// against the idle timeout). PROTOCOL.md §7.
    pub heartbeats: HeartbeatMode,
}

/// Who answers `CSHeartbeat` (`[session] heartbeats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatMode {
    /// The edge answers, checking the client's clock against `handshake.max_skew_secs`.
    #[default]
    Edge,
    /// Forwarded to the game service (the player tunnel), which answers with its game clock.
    Game,
}

impl Default for SessionRules {
    fn default() -> Self {
        Self {
            idle_timeout_secs: Duration::from_secs(60),
            max_frame: janus_protocol::frame::DEFAULT_MAX_FRAME,
            compress_threshold: Compression::default().threshold,
            max_inflated: Compression::default().max_inflated,
            outbound_queue: 1024,
            backlog_mark: 32,
            unsent_limit_bytes: 0,
            write_timeout_secs: Duration::from_secs(10),
            messages_per_sec: 50,
            message_burst: 100,
            bytes_per_sec: 256 * 1024,
            byte_burst: 1024 * 1024,
            heartbeats: HeartbeatMode::Edge,
        }
    }
}

/// `[resume]`.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResumeRules {
    /// Seconds a session that lost its connection waits, parked at its broker, for its client
    /// to resume it; 0 turns resume off (no tickets are issued).
    #[serde_as(as = "DurationSeconds<u64>")]
    pub window_secs: Duration,
    /// Server-to-client packets this edge keeps a copy of per connected session until the
    /// client acknowledges them (handed to a new broker when the session re-attaches).
    pub retain_packets: usize,
}

impl Default for ResumeRules {
    fn default() -> Self {
        Self {
            window_secs: Duration::from_secs(30),
            retain_packets: 1024,
        }
    }
}

impl SessionRules {
    /// The sans-IO session's framing and compression settings.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            max_frame: self.max_frame,
            compression: Compression {
                threshold: self.compress_threshold,
                max_inflated: self.max_inflated,
            },
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sessions this edge holds at most.
    pub max_sessions: usize,
    /// Sessions one client IP may hold at most.
    pub max_sessions_per_ip: usize,
    /// Connections one client IP may open per second.
    pub handshakes_per_ip_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 100_000,
            max_sessions_per_ip: 64,
            handshakes_per_ip_per_sec: 20,
        }
    }
}

/// Where the edge learns its brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerDiscovery {
    /// `brokers.endpoints`.
    Static,
    /// Brokers registered in etcd under `janus.broker`, watched.
    Etcd,
}

/// `[brokers]`.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokersConfig {
    /// `static` or `etcd`.
    pub discovery: BrokerDiscovery,
    /// Broker gRPC endpoints (`host:port`), for static discovery.
    pub endpoints: Vec<String>,
    /// etcd endpoints, for etcd discovery.
    pub etcd_endpoints: Vec<String>,
    /// Frames that may wait for one broker link; when full, reading from clients pauses.
    pub link_queue: usize,
    /// Most frames in one batch on the link.
    pub max_batch: usize,
    /// Milliseconds between reconnect attempts to a broker.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub reconnect_ms: Duration,
    /// Milliseconds between HTTP/2 pings on each broker link; a ping unanswered for as long
    /// again marks the link down and its sessions move to another broker (a broker that died
    /// without closing its connections, or a partition, is noticed within about twice this).
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub keepalive_ms: Duration,
    /// Seconds a session whose broker went away waits for any broker to be up before it ends
    /// (`no_broker`): brokers replaced all at once (a redeploy) cost no session.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub reattach_grace_secs: Duration,
    /// Seconds over which sessions move, after a broker came up (a scale-out, or one back from
    /// a restart), to the broker the rendezvous hash picks now (PROTOCOL.md §13.5); 0 leaves
    /// them where they are.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub rebalance_spread_secs: Duration,
}

impl Default for BrokersConfig {
    fn default() -> Self {
        Self {
            discovery: BrokerDiscovery::Static,
            endpoints: vec!["127.0.0.1:17100".into()],
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            link_queue: 8192,
            max_batch: 256,
            reconnect_ms: Duration::from_millis(500),
            keepalive_ms: Duration::from_millis(2000),
            reattach_grace_secs: Duration::from_secs(30),
            rebalance_spread_secs: Duration::from_secs(60),
        }
    }
}

/// `edge-<host>-<the low 24 bits of random, in hex>`.
fn default_edge_id(host: Option<String>, random: u32) -> String {
    let host = host.unwrap_or_else(|| "unnamed".to_owned());
    format!("edge-{host}-{:06x}", random & 0xff_ffff)
}

impl EdgeConfig {
    /// The id this edge goes by: `id`, else one drawn once per process,
    /// `edge-<host name>-<6 random hex digits>` (unique across hosts and containers, where
    /// every process may have the same pid). Borrowed, never built per call: `Edge::start`
    /// resolves it once into the edge's shared state.
    pub fn edge_id(&self) -> &str {
        static DEFAULT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        self.id.as_deref().unwrap_or_else(|| {
            DEFAULT
                .get_or_init(|| default_edge_id(janus_ops::discovery::host_name(), rand::random()))
        })
    }

    /// Reads the key files and builds the handshake configuration.
    pub fn load_handshake(&self) -> Result<Arc<ServerHandshakeConfig>> {
        let read = |field: &str, path: &str| {
            std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("{field}: cannot read {path:?}: {e}")))
        };
        let signing_key = SigningKey::from_pkcs8_pem(&read(
            "keys.signing_key_file",
            &self.keys.signing_key_file,
        )?)
        .map_err(|e| Error::Config(format!("keys.signing_key_file: {e}")))?;
        for (field, file) in [
            ("keys.signing_key_file", &self.keys.signing_key_file),
            ("keys.token_key_file", &self.keys.token_key_file),
            (
                "keys.previous_token_key_file",
                &self.keys.previous_token_key_file,
            ),
        ] {
            if !file.is_empty() {
                janus_protocol::keys::warn_if_exposed(std::path::Path::new(file), field);
            }
        }
        let token_key = self.read_token_key("keys.token_key_file", &self.keys.token_key_file)?;
        let previous_token_key = match self.keys.previous_token_key_file.as_str() {
            "" => None,
            path => Some(self.read_token_key("keys.previous_token_key_file", path)?),
        };
        let client_cert = match &self.keys.client_cert_file {
            None => None,
            Some(path) => Some(
                VerifyingKey::from_certificate_pem(&read("keys.client_cert_file", path)?)
                    .map_err(|e| Error::Config(format!("keys.client_cert_file: {e}")))?,
            ),
        };
        let mut handshake = self.handshake_config(signing_key, &token_key, client_cert);
        for (i, other) in self.keys.other_signing_keys.iter().enumerate() {
            let field = format!("keys.other_signing_keys[{i}].file");
            let key = std::fs::read_to_string(&other.file)
                .map_err(|e| format!("cannot read {:?}: {e}", other.file))
                .and_then(|pem| SigningKey::from_pkcs8_pem(&pem).map_err(|e| e.to_string()))
                .map_err(|e| Error::Config(format!("{field}: {e}")))?;
            janus_protocol::keys::warn_if_exposed(std::path::Path::new(&other.file), &field);
            handshake.other_signing_keys.insert(other.cert_version, key);
        }
        if let Some(previous) = previous_token_key {
            handshake.tokens = handshake
                .tokens
                .with_previous(&previous, self.keys.previous_token_key_until);
        }
        Ok(Arc::new(handshake))
    }

    /// The token key in the file `path` (config field `field`), as `keys.token_key_format` says.
    fn read_token_key(&self, field: &str, path: &str) -> Result<TokenKey> {
        let format = self.keys.token_key_format;
        std::fs::read(path)
            .map_err(|e| format!("cannot read {path:?}: {e}"))
            .and_then(|contents| {
                TokenKey::parse(&contents, format)
                    .map_err(|e| format!("{path:?}: {e} (keys.token_key_format = \"{format}\")"))
            })
            .map_err(|e| Error::Config(format!("{field}: {e}")))
    }

    /// The handshake configuration from these rules and the given keys.
    pub fn handshake_config(
        &self,
        signing_key: SigningKey,
        token_key: &TokenKey,
        client_cert: Option<VerifyingKey>,
    ) -> ServerHandshakeConfig {
        let rules = &self.handshake;
        ServerHandshakeConfig {
            signing_key,
            tokens: TokenCodec::new(token_key),
            client_cert,
            allowed_statuses: rules.allowed_statuses.clone(),
            max_skew_secs: rules.max_skew_secs,
            allow_legacy: rules.allow_legacy,
            allow_unencrypted: rules.allow_unencrypted,
            cert_version: rules.cert_version,
            other_signing_keys: Default::default(),
        }
    }

    /// Drain spread: how long the reconnect hints take to go out (within the grace).
    pub fn drain_spread(&self) -> Duration {
        self.drain_spread_secs.min(self.drain_grace_secs)
    }
}

impl Validate for EdgeConfig {
    fn validate(&self, problems: &mut Problems) {
        self.internal_tls.check(problems);
        problems.check(
            self.tcp.enabled || self.websocket.enabled || self.kcp.enabled || self.quic.enabled,
            "tcp.enabled",
            "at least one listener (tcp, websocket, kcp, quic) must be enabled",
        );
        // The listen addresses are parsed already (`IpPort`): a bad one never gets here.
        if self.kcp.enabled {
            problems.section("kcp.params", &self.kcp.params);
        }
        if self.quic.enabled {
            problems.check(
                self.quic.tls_cert_file.is_some() == self.quic.tls_key_file.is_some(),
                "quic.tls_key_file",
                "tls_cert_file and tls_key_file go together",
            );
            problems.check(
                self.quic.endpoints >= 1,
                "quic.endpoints",
                "must be at least 1, got 0",
            );
        }
        let ws = &self.websocket;
        if ws.enabled {
            problems.check(
                ws.path.starts_with('/'),
                "websocket.path",
                format!("{:?} must start with /", ws.path),
            );
        }
        problems.check(
            !self.keys.signing_key_file.is_empty(),
            "keys.signing_key_file",
            "is required",
        );
        problems.check(
            !self.keys.token_key_file.is_empty(),
            "keys.token_key_file",
            "is required",
        );
        problems.check(
            self.keys.previous_token_key_file.is_empty() || self.keys.previous_token_key_until > 0,
            "keys.previous_token_key_until",
            "is required with keys.previous_token_key_file (unix seconds: when the previous key stops opening tokens)",
        );
        let mut versions = std::collections::BTreeSet::from([self.handshake.cert_version]);
        for (i, other) in self.keys.other_signing_keys.iter().enumerate() {
            // 0 is what a client naming no key sends (PROTOCOL.md §3.4): it gets the current key.
            problems.check(
                other.cert_version > 0,
                &format!("keys.other_signing_keys[{i}].cert_version"),
                "must be positive (a client sending 0 names no key and gets signing_key_file)",
            );
            problems.check(
                versions.insert(other.cert_version),
                &format!("keys.other_signing_keys[{i}].cert_version"),
                format!(
                    "{} is already handshake.cert_version or another key's",
                    other.cert_version
                ),
            );
            problems.check(
                !other.file.is_empty(),
                &format!("keys.other_signing_keys[{i}].file"),
                "is required",
            );
        }
        problems.check_nonzero("handshake.timeout_secs", self.handshake.timeout_secs);
        problems.check_positive("handshake.max_skew_secs", self.handshake.max_skew_secs);
        problems.check(
            !self.handshake.allowed_statuses.is_empty(),
            "handshake.allowed_statuses",
            "must not be empty",
        );
        let s = &self.session;
        problems.check_nonzero("session.idle_timeout_secs", s.idle_timeout_secs);
        problems.check(
            (64..=16 * 1024 * 1024).contains(&s.max_frame),
            "session.max_frame",
            format!("must be between 64 and 16777216, got {}", s.max_frame),
        );
        problems.check_positive("session.max_inflated", s.max_inflated);
        problems.check_positive("session.outbound_queue", s.outbound_queue);
        problems.check_positive("session.backlog_mark", s.backlog_mark);
        problems.check_nonzero("session.write_timeout_secs", s.write_timeout_secs);
        problems.check_positive("session.messages_per_sec", s.messages_per_sec);
        problems.check(
            s.message_burst >= 1,
            "session.message_burst",
            "must be at least 1",
        );
        problems.check_positive("session.bytes_per_sec", s.bytes_per_sec);
        problems.check(
            s.byte_burst as usize >= s.max_frame,
            "session.byte_burst",
            format!(
                "must be at least session.max_frame ({}), or a full frame could never pass",
                s.max_frame
            ),
        );
        problems.check(
            self.resume.window_secs <= Duration::from_secs(3600),
            "resume.window_secs",
            format!(
                "must be at most 3600, got {}",
                self.resume.window_secs.as_secs()
            ),
        );
        problems.check(
            self.resume.window_secs.is_zero() || self.resume.retain_packets > 0,
            "resume.retain_packets",
            "must be positive while resume.window_secs is",
        );
        problems.check_positive("limits.max_sessions", self.limits.max_sessions);
        problems.check_positive(
            "limits.max_sessions_per_ip",
            self.limits.max_sessions_per_ip,
        );
        problems.check_positive(
            "limits.handshakes_per_ip_per_sec",
            self.limits.handshakes_per_ip_per_sec,
        );
        problems.check(
            !self.brokers.endpoints.is_empty(),
            "brokers.endpoints",
            "at least one broker is needed",
        );
        for (i, endpoint) in self.brokers.endpoints.iter().enumerate() {
            problems.check(
                endpoint
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
                &format!("brokers.endpoints[{i}]"),
                format!("{endpoint:?} is not host:port"),
            );
        }
        problems.check_positive("brokers.link_queue", self.brokers.link_queue);
        problems.check_nonzero("brokers.keepalive_ms", self.brokers.keepalive_ms);
        problems.check_positive("brokers.max_batch", self.brokers.max_batch);
        problems.check_nonzero("brokers.reconnect_ms", self.brokers.reconnect_ms);
    }
}

#[cfg(test)]
mod tests {
    use janus_ops::config::parse;

    use super::*;

    const KEYS: &str = "[keys]\nsigning_key_file = \"k.pem\"\ntoken_key_file = \"t.hex\"\n";
    const TEMPLATE_KEYS: &str =
        "[keys]\nsigning_key_file = \"keys/server.pem\"\ntoken_key_file = \"keys/token.hex\"\n";

    #[test]
    fn the_default_id_names_the_host_and_a_random_suffix() {
        assert_eq!(
            default_edge_id(Some("gw-7f3a".into()), 0x12ab_cdef),
            "edge-gw-7f3a-abcdef"
        );
        assert_eq!(default_edge_id(None, 0x5), "edge-unnamed-000005");
        // Drawn once: every part of this process's edge goes by the same id.
        let config: EdgeConfig = parse(KEYS, "t.toml").unwrap();
        assert_eq!(config.edge_id(), config.edge_id());
        let set: EdgeConfig = parse(&format!("id = \"e1\"\n{KEYS}"), "t.toml").unwrap();
        assert_eq!(set.edge_id(), "e1");
    }

    #[test]
    fn defaults_with_keys_are_valid_and_match_the_spec() {
        let config: EdgeConfig = parse(KEYS, "t.toml").unwrap();
        assert_eq!(config.tcp.listen.to_string(), "0.0.0.0:17001");
        assert_eq!(config.websocket.listen.to_string(), "0.0.0.0:17002");
        assert_eq!(config.websocket.path, "/ws");
        assert_eq!(config.admin_listen.to_string(), "0.0.0.0:18100");
        assert_eq!(config.handshake.timeout_secs, Duration::from_secs(10));
        assert_eq!(config.session.idle_timeout_secs, Duration::from_secs(60));
        assert_eq!(config.session.max_frame, 16384);
    }

    #[test]
    fn every_problem_names_its_field() {
        let text =
            "[session]\nmax_frame = 10\nbyte_burst = 1\n[brokers]\nendpoints = [\"nohost\"]\n";
        let err = parse::<EdgeConfig>(text, "t.toml").unwrap_err().to_string();
        for field in [
            "keys.signing_key_file:",
            "keys.token_key_file:",
            "session.max_frame:",
            "brokers.endpoints[0]:",
        ] {
            assert!(err.contains(field), "{field} missing from {err}");
        }
    }

    #[test]
    fn missing_key_files_are_named() {
        let config: EdgeConfig = parse(KEYS, "t.toml").unwrap();
        let err = config.load_handshake().unwrap_err().to_string();
        assert!(err.contains("keys.signing_key_file"), "{err}");
    }

    /// A key directory of its own under the system's temporary directory.
    fn key_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("janus-edge-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("server.pem"),
            SigningKey::generate().to_pkcs8_pem().unwrap(),
        )
        .unwrap();
        dir
    }

    fn keys_toml(dir: &std::path::Path, format: &str) -> String {
        format!(
            "[keys]\nsigning_key_file = {:?}\ntoken_key_file = {:?}\ntoken_key_format = {format:?}\n",
            dir.join("server.pem"),
            dir.join("token.key")
        )
    }

    #[test]
    fn go_pantheon_token_keys_are_taken_raw_at_every_aes_size() {
        let dir = key_dir("raw");
        // A 32-character key of hex digits is still 32 raw bytes (AES-256), as in go-pantheon.
        for key in [
            "0123456789abcdef",
            "lares-key-of-24-chars!!!",
            "0123456789abcdef0123456789abcdef",
        ] {
            std::fs::write(dir.join("token.key"), format!("{key}\n")).unwrap();
            let config: EdgeConfig = parse(&keys_toml(&dir, "raw"), "t.toml").unwrap();
            let handshake = config.load_handshake().unwrap();
            let lares = TokenCodec::new(&TokenKey::from_bytes(key.as_bytes()).unwrap());
            let token = lares.seal(&janus_proto::gate::intra::v1::AuthToken {
                account_id: 7,
                ..Default::default()
            });
            assert_eq!(
                handshake.tokens.open(&token).unwrap().account_id,
                7,
                "{}-byte raw key",
                key.len()
            );
        }
        std::fs::write(dir.join("token.key"), "twenty-bytes-of-key!").unwrap();
        let config: EdgeConfig = parse(&keys_toml(&dir, "raw"), "t.toml").unwrap();
        let err = config.load_handshake().unwrap_err().to_string();
        assert!(
            err.contains("keys.token_key_file") && err.contains("got 20 bytes"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_previous_token_key_opens_tokens_until_its_time_and_needs_one() {
        let dir = key_dir("previous");
        std::fs::write(dir.join("token.key"), "02".repeat(32)).unwrap();
        std::fs::write(dir.join("old.key"), "01".repeat(32)).unwrap();
        let text = format!(
            "{}previous_token_key_file = {:?}\nprevious_token_key_until = 2000\n",
            keys_toml(&dir, "hex"),
            dir.join("old.key")
        );
        let config: EdgeConfig = parse(&text, "t.toml").unwrap();
        let handshake = config.load_handshake().unwrap();
        let old = TokenCodec::new(&TokenKey::from_bytes(&[1; 32]).unwrap());
        let token = old.seal(&Default::default());
        assert!(handshake.tokens.open_at(&token, 1999).is_ok());
        assert!(handshake.tokens.open_at(&token, 2000).is_err());
        // A previous key without its end is refused, naming the field.
        let text = text.replace("previous_token_key_until = 2000\n", "");
        let err = parse::<EdgeConfig>(&text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("keys.previous_token_key_until"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn other_signing_keys_are_loaded_by_version_and_problems_name_the_entry() {
        let dir = key_dir("other-signing");
        std::fs::write(dir.join("token.key"), "02".repeat(32)).unwrap();
        let old = SigningKey::generate();
        std::fs::write(dir.join("old.pem"), old.to_pkcs8_pem().unwrap()).unwrap();
        let with = |entries: &str| {
            format!(
                "{}{entries}\n[handshake]\ncert_version = 2\n",
                keys_toml(&dir, "hex")
            )
        };
        let entry = |version: i32, file: &str| {
            format!(
                "[[keys.other_signing_keys]]\ncert_version = {version}\nfile = {:?}\n",
                dir.join(file)
            )
        };
        let config: EdgeConfig = parse(&with(&entry(1, "old.pem")), "t.toml").unwrap();
        let handshake = config.load_handshake().unwrap();
        let (version, key) = handshake.signer(1);
        assert_eq!(version, 1);
        assert_eq!(key.verifying_key(), old.verifying_key());
        assert_eq!(handshake.signer(0).0, 2);

        let twice = format!("{}{}", entry(1, "old.pem"), entry(1, "old.pem"));
        let err = parse::<EdgeConfig>(&with(&twice), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keys.other_signing_keys[1].cert_version"),
            "{err}"
        );
        for taken_or_unnamed in [2, 0] {
            let err = parse::<EdgeConfig>(&with(&entry(taken_or_unnamed, "old.pem")), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("keys.other_signing_keys[0].cert_version"),
                "{err}"
            );
        }
        let config: EdgeConfig = parse(&with(&entry(1, "missing.pem")), "t.toml").unwrap();
        let err = config.load_handshake().unwrap_err().to_string();
        assert!(err.contains("keys.other_signing_keys[0].file"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hex_token_keys_stay_the_default_and_say_what_they_found() {
        let dir = key_dir("hex");
        std::fs::write(dir.join("token.key"), "09".repeat(24)).unwrap();
        let text = keys_toml(&dir, "hex").replace("token_key_format = \"hex\"\n", "");
        let config: EdgeConfig = parse(&text, "t.toml").unwrap();
        assert_eq!(config.keys.token_key_format, TokenKeyFormat::Hex);
        let handshake = config.load_handshake().unwrap();
        let token =
            TokenCodec::new(&TokenKey::from_bytes(&[9; 24]).unwrap()).seal(&Default::default());
        assert!(handshake.tokens.open(&token).is_ok());

        std::fs::write(dir.join("token.key"), "abc").unwrap();
        let err = config.load_handshake().unwrap_err().to_string();
        assert!(
            err.contains("keys.token_key_file") && err.contains("got 3 characters"),
            "{err}"
        );
        let err = parse::<EdgeConfig>(&keys_toml(&dir, "base64"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("token_key_format"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn kcp_problems_name_their_fields() {
        let text = format!(
            "{KEYS}[kcp.params]\nfec_data_shards = 4\nfec_parity_shards = 0\nsmux_version = 7\n"
        );
        let err = parse::<EdgeConfig>(&text, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kcp.params.fec_parity_shards"), "{err}");
        assert!(err.contains("kcp.params.smux_version"), "{err}");
        // Plain KCP is a valid choice.
        let plain = format!(
            "{KEYS}[kcp.params]\nfec_data_shards = 0\nfec_parity_shards = 0\nsmux = false\n"
        );
        let config: EdgeConfig = parse(&plain, "t.toml").unwrap();
        assert_eq!(
            config.kcp.params,
            janus_transport::kcp::KcpSettings::plain()
        );
    }

    #[test]
    fn quic_endpoints_default_to_the_cpus_and_zero_is_named() {
        let config: EdgeConfig = parse(KEYS, "t.toml").unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(config.quic.endpoints, cpus);
        let two: EdgeConfig = parse(&format!("{KEYS}[quic]\nendpoints = 2\n"), "t.toml").unwrap();
        assert_eq!(two.quic.endpoints, 2);
        let err = parse::<EdgeConfig>(&format!("{KEYS}[quic]\nendpoints = 0\n"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("quic.endpoints: must be at least 1"), "{err}");
        // A disabled listener's count is not its business.
        let off = format!("{KEYS}[quic]\nenabled = false\nendpoints = 0\n");
        assert!(parse::<EdgeConfig>(&off, "t.toml").is_ok());
    }

    #[test]
    fn a_table_may_give_only_some_of_its_fields() {
        let text = format!(
            "{KEYS}\n[tcp]\nlisten = \"127.0.0.1:7001\"\n[session]\nheartbeats = \"game\"\n"
        );
        let config: EdgeConfig = parse(&text, "t.toml").unwrap();
        assert!(config.tcp.enabled);
        assert_eq!(config.tcp.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.session.heartbeats, HeartbeatMode::Game);
        assert_eq!(config.session.idle_timeout_secs, Duration::from_secs(60));
    }

    #[test]
    fn durations_and_addresses_are_read_in_the_files_units_and_named_when_bad() {
        let text = format!(
            "{KEYS}[brokers]\nreconnect_ms = 250\nreattach_grace_secs = 7\n[tcp]\nlisten = \"[::1]:7001\"\n"
        );
        let config: EdgeConfig = parse(&text, "t.toml").unwrap();
        assert_eq!(config.brokers.reconnect_ms, Duration::from_millis(250));
        assert_eq!(config.brokers.reattach_grace_secs, Duration::from_secs(7));
        assert_eq!(
            config.tcp.listen,
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 7001))
        );
        // The environment's overrides are TOML values, or strings when they are not one.
        let overrides = [
            ("JANUS_EDGE__TCP__LISTEN", "127.0.0.1:9"),
            ("JANUS_EDGE__SESSION__IDLE_TIMEOUT_SECS", "90"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config: EdgeConfig = janus_ops::config::parse_with_overrides(
            KEYS,
            "t.toml",
            "JANUS_EDGE",
            overrides.into_iter(),
        )
        .unwrap();
        assert_eq!(config.tcp.listen, SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(config.session.idle_timeout_secs, Duration::from_secs(90));
        // Zero is still refused by validation, in the same words.
        let err = parse::<EdgeConfig>(&format!("{KEYS}[brokers]\nkeepalive_ms = 0\n"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("brokers.keepalive_ms: must be greater than 0, got 0"),
            "{err}"
        );
        // What does not parse is refused by its path, an address quoted (a disabled listener's
        // too: the field is an address whether or not it is used).
        for (text, expected) in [
            (
                "admin_listen = \"nowhere\"\n",
                "admin_listen: \"nowhere\" is not a socket address (ip:port)",
            ),
            (
                "[quic]\nenabled = false\nlisten = \"localhost:7004\"\n",
                "quic.listen: \"localhost:7004\" is not a socket address (ip:port)",
            ),
            (
                "[session]\nidle_timeout_secs = -1\n",
                "session.idle_timeout_secs:",
            ),
            ("[brokers]\nreconnect_ms = 0.5\n", "brokers.reconnect_ms:"),
        ] {
            let err = parse::<EdgeConfig>(&format!("{text}{KEYS}"), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{expected} missing from {err}");
        }
    }

    #[test]
    fn the_go_pantheon_profile_parses_and_turns_on_the_drop_in() {
        let text = include_str!("../../configs.tmpl/go-pantheon/edge.toml");
        let profile: EdgeConfig = parse(text, "configs.tmpl/go-pantheon/edge.toml").unwrap();
        let [tcp, websocket, kcp] = [
            profile.tcp.listen,
            profile.websocket.listen,
            profile.kcp.listen,
        ]
        .map(|listen| listen.to_string());
        let listens = [
            (profile.tcp.enabled, tcp.as_str()),
            (profile.websocket.enabled, websocket.as_str()),
            (profile.kcp.enabled, kcp.as_str()),
        ];
        assert_eq!(
            listens,
            [
                (true, "0.0.0.0:7001"),
                (true, "0.0.0.0:7002"),
                (true, "0.0.0.0:7003")
            ],
            "go-pantheon's ports"
        );
        assert_eq!(profile.websocket.path, "/ws");
        assert!(!profile.quic.enabled);
        let kcp = &profile.kcp.params;
        assert_eq!(
            (
                kcp.fec_data_shards,
                kcp.fec_parity_shards,
                kcp.smux,
                kcp.smux_version
            ),
            (10, 3, true, 2),
            "fabrica-net's KCP"
        );
        assert_eq!(profile.keys.token_key_format, TokenKeyFormat::Raw);
        assert!(profile.handshake.allow_legacy);
        assert_eq!(profile.handshake.cert_version, 1);
        assert_eq!(profile.session.heartbeats, HeartbeatMode::Game);
        assert_eq!(profile.brokers.discovery, BrokerDiscovery::Etcd);
    }

    #[test]
    fn the_template_parses_and_matches_the_defaults() {
        let text = include_str!("../../configs.tmpl/edge.toml");
        let template: EdgeConfig = parse(text, "configs.tmpl/edge.toml").unwrap();
        let defaults: EdgeConfig = parse(TEMPLATE_KEYS, "defaults").unwrap();
        assert_eq!(format!("{template:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn the_templates_signing_key_example_parses_when_uncommented() {
        let text = include_str!("../../configs.tmpl/edge.toml");
        let example = ["[[keys.other_signing_keys]]", "cert_version = 1", "file = "];
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if example.iter().any(|start| rest.starts_with(start)) => rest,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        assert_ne!(uncommented, text, "the template shows the example");
        let config: EdgeConfig = parse(&uncommented, "edge.toml").unwrap();
        assert_eq!(config.keys.other_signing_keys.len(), 1);
        assert_eq!(config.keys.other_signing_keys[0].cert_version, 1);
        assert_eq!(
            config.handshake.timeout_secs,
            Duration::from_secs(10),
            "[handshake] is still its own table"
        );
    }
}
