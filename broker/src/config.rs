//! The broker's typed configuration (TOML, every field defaulted, unknown fields refused) and
//! its validation. `configs.tmpl/broker.toml` shows every field with its default.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use janus_ops::config::{IpPort, Problems, Validate};
use janus_ops::internal_tls::{InternalTlsConfig, Role};
use serde::Deserialize;
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

/// Everything a broker needs to start. Durations and listen addresses are parsed here, once:
/// the file keeps its integers (`*_secs`, `*_ms`) and `ip:port` strings.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// gRPC listen address: the edge link, both push APIs.
    #[serde_as(as = "IpPort")]
    pub listen: SocketAddr,
    /// Admin HTTP listen address (`/health`, `/ready`, `/metrics`, `/stats`, `POST /kick`).
    #[serde_as(as = "IpPort")]
    pub admin_listen: SocketAddr,
    /// A file holding the bearer token mutating admin requests (`POST /kick`) must carry
    /// (`Authorization: Bearer <token>`; whitespace around it in the file is not part of it).
    /// Empty: they are refused. Read once at start.
    pub admin_token_file: String,
    /// The `host:port` others reach this broker's gRPC server at: written into gateway routes
    /// (Roma pushes there) and used to name this broker on the bus. Defaults to `listen`, or
    /// when that is a wildcard, to the address the host name resolves to.
    pub advertise: Option<String>,
    /// Routing store.
    pub routes: RoutesConfig,
    /// Push bus.
    pub bus: BusConfig,
    /// Where game-service instances are found and this broker registers.
    pub discovery: DiscoveryConfig,
    /// Which service and tunnel each client module goes to.
    pub tunnels: TunnelsConfig,
    /// Milliseconds between HTTP/2 pings to each linked edge; an edge that leaves one
    /// unanswered for as long again is gone (crashed, or cut off by a partition): its sessions
    /// here park (resumable ones, PROTOCOL.md §13) or end.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub edge_keepalive_ms: Duration,
    /// Sessions waiting for their client to resume.
    pub resume: ResumeConfig,
    /// Mutual TLS on the gRPC listener and the tunnels (PROTOCOL.md §15).
    pub internal_tls: InternalTlsConfig,
    /// Who may call the push APIs when internal TLS is on.
    pub push_api: PushApiConfig,
    /// How server packets reach a client that reads slower than they come (PROTOCOL.md §16).
    pub delivery: DeliveryConfig,
}

/// `[delivery]`: the class of each module's server packets and what a backlogged session
/// keeps of each (PROTOCOL.md §16). With no rules every packet is an event, as before.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Events and replies a backlogged session may have waiting here; one more ends it as
    /// `slow_consumer`.
    pub max_pending: usize,
    /// State keys (module, seq, obj) a backlogged or paced session may have waiting here; past
    /// that the oldest state packet waiting is dropped (counted), the session goes on.
    pub max_state_keys: usize,
    /// Which packets are what: a rule naming a packet's seq wins over one for its whole
    /// module, and of two alike the first; unlisted ones are events.
    pub rules: Vec<DeliveryRule>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_pending: 1024,
            max_state_keys: 4096,
            rules: Vec::new(),
        }
    }
}

/// One `[[delivery.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRule {
    /// The module the rule is for.
    pub module: i32,
    /// Its seqs the rule is for; empty: all of them.
    #[serde(default)]
    pub seqs: Vec<i32>,
    /// `"state"` (latest wins per module, seq and obj) or `"event"`.
    pub class: RuleClass,
    /// State only: at most this many packets per second per key reach the client; a newer
    /// one waits (replacing an older one waiting) until its key is due. 0: no cap.
    #[serde(default)]
    pub max_rate_hz: f64,
}

/// The classes a rule may give (replies and System packets are classed by what they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleClass {
    /// Latest wins.
    State,
    /// Kept in order, bounded.
    Event,
}

/// `[push_api]`: who may call `broadcaster.service.push.v1` and `gate.service.push.v1` on
/// the gRPC listener once `[internal_tls]` is on (the edge link takes edges only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushApiConfig {
    /// Certificate roles admitted.
    pub roles: Vec<Role>,
    /// Also take plaintext connections for the push APIs (go-pantheon's Roma pushes without
    /// TLS); they are told from TLS by their first byte and reach nothing else.
    pub plaintext: bool,
}

impl Default for PushApiConfig {
    fn default() -> Self {
        Self {
            roles: vec![Role::Game, Role::Admin],
            plaintext: false,
        }
    }
}

/// `[resume]`: what this broker keeps of resumable sessions (PROTOCOL.md §13).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResumeConfig {
    /// Server packets kept per session until its client acknowledges them; a resume needing
    /// an older one gets `resume_gap`, and a parked session that would forget one ends
    /// (`resume_overflow`).
    pub retain_packets: usize,
    /// Sessions this broker keeps parked at once; a session that loses its connection beyond
    /// that ends (`resume_limit`) as if it held no ticket.
    pub max_parked: usize,
}

impl Default for ResumeConfig {
    fn default() -> Self {
        Self {
            retain_packets: 1024,
            max_parked: 100_000,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 17100)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 18101)),
            admin_token_file: String::new(),
            advertise: None,
            routes: RoutesConfig::default(),
            bus: BusConfig::default(),
            discovery: DiscoveryConfig::default(),
            tunnels: TunnelsConfig::default(),
            edge_keepalive_ms: Duration::from_millis(2000),
            resume: ResumeConfig::default(),
            internal_tls: InternalTlsConfig::default(),
            push_api: PushApiConfig::default(),
            delivery: DeliveryConfig::default(),
        }
    }
}

impl BrokerConfig {
    /// The endpoint written into routes: `advertise`, else `listen`.
    pub fn endpoint(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

/// Route store selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutesBackend {
    /// In-process map (standalone mode).
    Memory,
    /// A standalone Redis.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
}

/// `[routes]`.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// `memory`, `redis` or `redis_cluster`.
    pub backend: RoutesBackend,
    /// Redis URLs (`redis://host:port/db`); the first for standalone, seeds for a cluster.
    pub redis_urls: Vec<String>,
    /// Deadline of every Redis call, milliseconds.
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub timeout_ms: Duration,
    /// TTL of gateway routes, seconds; renewed at half of it.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub gate_ttl_secs: Duration,
    /// TTL of app routes this broker creates, seconds.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub app_ttl_secs: Duration,
    /// With routes in Redis: also take pushes published on Redis, as go-pantheon's broadcaster
    /// sends them (SUBSCRIBE to this broker's route value and to `gate.broadcast.message`).
    pub redis_pushes: bool,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            backend: RoutesBackend::Memory,
            redis_urls: vec!["redis://127.0.0.1:6379".into()],
            timeout_ms: Duration::from_millis(500),
            gate_ttl_secs: Duration::from_secs(600),
            app_ttl_secs: Duration::from_secs(600),
            redis_pushes: true,
        }
    }
}

/// Push bus selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusBackend {
    /// In-process (standalone mode).
    Memory,
    /// NATS.
    Nats,
    /// The route store's Redis (`[routes] redis_urls`, standalone or cluster): for deployments
    /// with Redis and no NATS (PROTOCOL.md §12).
    Redis,
}

/// `[bus]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `memory`, `nats` or `redis` (needs routes in Redis: it runs on `[routes] redis_urls`).
    pub backend: BusBackend,
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            backend: BusBackend::Memory,
            nats_url: "nats://127.0.0.1:4222".into(),
        }
    }
}

/// Discovery selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryBackend {
    /// The instances listed in `[[discovery.instances]]`; this broker registers nowhere.
    Static,
    /// etcd, kratos layout: instances watched, this broker registered with a lease.
    Etcd,
}

/// `[discovery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// `static` or `etcd`.
    pub backend: DiscoveryBackend,
    /// etcd endpoints.
    pub etcd_endpoints: Vec<String>,
    /// Game-service instances for the static backend.
    pub instances: Vec<StaticInstance>,
    /// The colours this broker serves: it registers as `janus.gate.interface` once per colour
    /// (game services keep only gateways whose `metadata.color` is the player's), and a push
    /// that names no colour is looked up under each of them (PROTOCOL.md §12).
    pub colors: Vec<String>,
    /// `metadata.profile` of those registrations (go-pantheon's `label.profile`).
    pub profile: String,
    /// Client endpoints listed in those registrations before `http://` and `grpc://`, as the
    /// go-pantheon gate lists its listeners (e.g. `tcp://gate.example:7001`); informational.
    pub client_endpoints: Vec<String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            backend: DiscoveryBackend::Static,
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            instances: Vec::new(),
            colors: vec![String::new()],
            profile: "dev".into(),
            client_endpoints: Vec::new(),
        }
    }
}

/// One `[[discovery.instances]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticInstance {
    /// Discovery name, e.g. `roma.player.service`.
    pub name: String,
    /// gRPC `host:port`.
    pub endpoint: String,
    /// Colour the instance serves (empty: the default colour).
    #[serde(default)]
    pub color: String,
    /// Weight for smooth weighted round-robin (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl StaticInstance {
    /// The registry record of the `index`-th static instance.
    pub fn to_instance(&self, index: usize) -> janus_ops::discovery::Instance {
        janus_ops::discovery::Instance {
            id: format!("static-{index}"),
            name: self.name.clone(),
            version: String::new(),
            metadata: [
                ("color".to_owned(), self.color.clone()),
                ("weight".to_owned(), self.weight.to_string()),
            ]
            .into(),
            endpoints: vec![format!("grpc://{}", self.endpoint)],
        }
    }
}

/// The kind of Roma tunnel a service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelKind {
    /// `player.intra.v1.TunnelService`: obj must be the session's uid (or 0).
    Player,
    /// `room.intra.v1.TunnelService`.
    Room,
}

/// `[tunnels.services.<alias>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Discovery name.
    pub name: String,
    /// Tunnel API it serves.
    pub tunnel: TunnelKind,
    /// Tunnels to it stay plaintext when `[internal_tls]` is on (go-pantheon's Roma serves
    /// plaintext gRPC); otherwise they are mutual TLS and its certificate must name `game`.
    #[serde(default)]
    pub plaintext: bool,
}

/// `[tunnels]`: module → service table, and how the tunnels' channels behave.
#[serde_as]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelsConfig {
    /// Service alias for modules not listed in `modules`.
    pub default_service: String,
    /// Module number (as a string key) → service alias.
    pub modules: BTreeMap<String, String>,
    /// Service alias → service.
    pub services: BTreeMap<String, ServiceConfig>,
    /// Requests a tunnel may have waiting to be sent before the session is closed.
    pub queue: usize,
    /// Seconds between HTTP/2 pings on each channel to a game-service instance (one channel
    /// carries every tunnel to that instance), so idle channels stay open through NATs and
    /// proxies and a dead instance is noticed.
    #[serde_as(as = "DurationSeconds<u64>")]
    pub keepalive_secs: Duration,
}

impl Default for TunnelsConfig {
    fn default() -> Self {
        let service = |name: &str, tunnel| ServiceConfig {
            name: name.into(),
            tunnel,
            plaintext: false,
        };
        Self {
            default_service: "player".into(),
            modules: BTreeMap::from([("6".into(), "room".into())]),
            services: BTreeMap::from([
                (
                    "player".into(),
                    service("roma.player.service", TunnelKind::Player),
                ),
                (
                    "room".into(),
                    service("roma.room.service", TunnelKind::Room),
                ),
            ]),
            queue: 256,
            keepalive_secs: Duration::from_secs(20),
        }
    }
}

/// `[tunnels]` resolved once: each module's service, found per client packet without
/// allocating. Services are numbered by their discovery name ([`ServiceId`]), so two aliases
/// naming the same service share a session's tunnel per object, as when tunnels were keyed by
/// the name.
#[derive(Debug, Clone)]
pub struct Services {
    /// By alias order: the service's id and its configuration.
    services: Vec<(ServiceId, Arc<ServiceConfig>)>,
    /// Module number → index into `services`.
    by_module: HashMap<i32, usize>,
    default: usize,
}

/// A service's number in [`Services`]: one per discovery name.
pub type ServiceId = usize;

impl Services {
    /// Resolves `tunnels`; refused, naming the field, when a module key is not a number or an
    /// alias names no service (what validation reports for a configuration file).
    pub fn resolve(tunnels: &TunnelsConfig) -> crate::error::Result<Self> {
        let aliases: Vec<&String> = tunnels.services.keys().collect();
        let place = |field: String, alias: &String| {
            aliases
                .iter()
                .position(|a| *a == alias)
                .ok_or(crate::error::Error::Config {
                    field,
                    reason: format!("{alias:?} is not in tunnels.services"),
                })
        };
        let mut names: Vec<&str> = Vec::new();
        let services = tunnels
            .services
            .values()
            .map(|service| {
                let id = names
                    .iter()
                    .position(|name| *name == service.name)
                    .unwrap_or_else(|| {
                        names.push(&service.name);
                        names.len() - 1
                    });
                (id, Arc::new(service.clone()))
            })
            .collect();
        let mut by_module = HashMap::new();
        for (module, alias) in &tunnels.modules {
            let field = format!("tunnels.modules.{module}");
            let number = module.parse().map_err(|_| crate::error::Error::Config {
                field: field.clone(),
                reason: "keys are module numbers".into(),
            })?;
            by_module.insert(number, place(field, alias)?);
        }
        Ok(Self {
            services,
            by_module,
            default: place("tunnels.default_service".into(), &tunnels.default_service)?,
        })
    }

    /// The service a packet of `module` goes to, and its id.
    pub fn service_for(&self, module: i32) -> (ServiceId, &Arc<ServiceConfig>) {
        let place = self.by_module.get(&module).copied().unwrap_or(self.default);
        let (id, service) = &self.services[place];
        (*id, service)
    }
}

impl Validate for BrokerConfig {
    fn validate(&self, problems: &mut Problems) {
        // `listen` and `admin_listen` are parsed already (`IpPort`): a bad one never gets here.
        problems.check_nonzero("edge_keepalive_ms", self.edge_keepalive_ms);
        self.internal_tls.check(problems);
        problems.check(
            (1..=65_536).contains(&self.resume.retain_packets),
            "resume.retain_packets",
            "must be between 1 and 65536",
        );
        if let Some(advertise) = &self.advertise {
            problems.check_host_port("advertise", advertise);
        }
        let routes = &self.routes;
        problems.check_nonzero("routes.timeout_ms", routes.timeout_ms);
        problems.check(
            routes.gate_ttl_secs >= Duration::from_secs(2),
            "routes.gate_ttl_secs",
            "must be at least 2",
        );
        problems.check_nonzero("routes.app_ttl_secs", routes.app_ttl_secs);
        problems.check(
            routes.backend == RoutesBackend::Memory || !routes.redis_urls.is_empty(),
            "routes.redis_urls",
            "at least one URL is needed for a Redis backend",
        );
        for (i, url) in routes.redis_urls.iter().enumerate() {
            problems.check(
                url.starts_with("redis://") || url.starts_with("rediss://"),
                &format!("routes.redis_urls[{i}]"),
                format!("{url:?} is not a redis:// URL"),
            );
        }
        problems.check(
            self.bus.backend != BusBackend::Nats || self.bus.nats_url.starts_with("nats://"),
            "bus.nats_url",
            format!("{:?} is not a nats:// URL", self.bus.nats_url),
        );
        problems.check(
            self.bus.backend != BusBackend::Redis || routes.backend != RoutesBackend::Memory,
            "bus.backend",
            "\"redis\" runs on the route store's Redis: set routes.backend to \"redis\" or \"redis_cluster\"",
        );
        problems.check(
            self.discovery.backend == DiscoveryBackend::Static
                || !self.discovery.etcd_endpoints.is_empty(),
            "discovery.etcd_endpoints",
            "at least one endpoint is needed for the etcd backend",
        );
        for (i, instance) in self.discovery.instances.iter().enumerate() {
            let field = format!("discovery.instances[{i}]");
            problems.check(
                instance.endpoint.contains(':'),
                &format!("{field}.endpoint"),
                format!("{:?} is not host:port", instance.endpoint),
            );
            problems.check_positive(&format!("{field}.weight"), instance.weight);
        }
        let colors = &self.discovery.colors;
        problems.check(
            !colors.is_empty(),
            "discovery.colors",
            "at least one colour is needed (\"\" is the default colour)",
        );
        for (i, color) in colors.iter().enumerate() {
            problems.check(
                !colors[..i].contains(color),
                &format!("discovery.colors[{i}]"),
                format!("{color:?} is listed twice"),
            );
        }
        for (i, endpoint) in self.discovery.client_endpoints.iter().enumerate() {
            problems.check(
                endpoint.contains("://"),
                &format!("discovery.client_endpoints[{i}]"),
                format!("{endpoint:?} is not scheme://address"),
            );
        }
        let tunnels = &self.tunnels;
        problems.check(
            tunnels.services.contains_key(&tunnels.default_service),
            "tunnels.default_service",
            format!("{:?} is not in tunnels.services", tunnels.default_service),
        );
        for (module, alias) in &tunnels.modules {
            let field = format!("tunnels.modules.{module}");
            problems.check(
                module
                    .parse::<i32>()
                    .is_ok_and(|m| m != janus_protocol::system::MODULE),
                &field,
                "keys are module numbers other than 1 (System, answered by the edge)",
            );
            problems.check(
                tunnels.services.contains_key(alias),
                &field,
                format!("{alias:?} is not in tunnels.services"),
            );
        }
        problems.check_positive("tunnels.queue", tunnels.queue);
        problems.check_nonzero("tunnels.keepalive_secs", tunnels.keepalive_secs);
        let delivery = &self.delivery;
        problems.check_positive("delivery.max_pending", delivery.max_pending);
        problems.check_positive("delivery.max_state_keys", delivery.max_state_keys);
        for (i, rule) in delivery.rules.iter().enumerate() {
            let field = format!("delivery.rules[{i}]");
            problems.check(
                rule.module != janus_protocol::system::MODULE,
                &format!("{field}.module"),
                "System packets (module 1) are control: never held or replaced",
            );
            problems.check(
                rule.max_rate_hz.is_finite() && rule.max_rate_hz >= 0.0,
                &format!("{field}.max_rate_hz"),
                "must be a number of packets per second, 0 for no cap",
            );
            problems.check(
                rule.max_rate_hz == 0.0 || rule.class == RuleClass::State,
                &format!("{field}.max_rate_hz"),
                "only state packets are paced (an event is never skipped)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use janus_ops::config::parse;

    use super::*;

    #[test]
    fn defaults_are_valid_and_route_room_to_the_room_service() {
        let config: BrokerConfig = parse("", "defaults").unwrap();
        let services = Services::resolve(&config.tunnels).unwrap();
        assert_eq!(services.service_for(6).1.tunnel, TunnelKind::Room);
        assert_eq!(services.service_for(2).1.name, "roma.player.service");
        assert_ne!(services.service_for(6).0, services.service_for(2).0);
        assert_eq!(services.service_for(2).0, services.service_for(77).0);
        // Two aliases of one service share its id (and so a session's tunnel per object).
        let mut tunnels = config.tunnels.clone();
        let player = tunnels.services["player"].clone();
        tunnels.services.insert("also_player".into(), player);
        tunnels.modules.insert("9".into(), "also_player".into());
        let services = Services::resolve(&tunnels).unwrap();
        assert_eq!(services.service_for(9).0, services.service_for(2).0);
        assert_ne!(services.service_for(9).0, services.service_for(6).0);
        // Unvalidated input is refused with the field, not a panic.
        tunnels.modules.insert("nine".into(), "player".into());
        let err = Services::resolve(&tunnels).unwrap_err().to_string();
        assert!(err.starts_with("tunnels.modules.nine:"), "{err}");
        assert_eq!(config.endpoint(), "0.0.0.0:17100");
    }

    #[test]
    fn every_problem_names_its_field() {
        let text = r#"
            [routes]
            backend = "redis"
            redis_urls = ["http://nope"]
            [tunnels]
            default_service = "missing"
            [discovery]
            colors = ["blue", "blue"]
            client_endpoints = ["gate:7001"]
            [tunnels.modules]
            1 = "player"
        "#;
        let err = parse::<BrokerConfig>(text, "t.toml")
            .unwrap_err()
            .to_string();
        for field in [
            "routes.redis_urls[0]:",
            "tunnels.default_service:",
            "tunnels.modules.1:",
            "discovery.colors[1]:",
            "discovery.client_endpoints[0]:",
        ] {
            assert!(err.contains(field), "{field} missing from {err}");
        }
        // A listen address is parsed, not validated: a bad one is refused before validation
        // runs (as a mistyped field is), still naming its field and quoting what was written.
        let err = parse::<BrokerConfig>("listen = \"x\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen:"), "listen: missing from {err}");
        assert!(err.contains("\"x\" is not a socket address"), "{err}");
    }

    #[test]
    fn durations_are_read_in_the_files_units_and_the_tunnel_keepalive_is_one() {
        let defaults: BrokerConfig = parse("", "defaults").unwrap();
        assert_eq!(defaults.tunnels.keepalive_secs, Duration::from_secs(20));
        assert_eq!(defaults.routes.timeout_ms, Duration::from_millis(500));
        let text =
            "edge_keepalive_ms = 1500\n[routes]\ntimeout_ms = 250\n[tunnels]\nkeepalive_secs = 5\n";
        let config: BrokerConfig = parse(text, "t.toml").unwrap();
        assert_eq!(config.edge_keepalive_ms, Duration::from_millis(1500));
        assert_eq!(config.routes.timeout_ms, Duration::from_millis(250));
        assert_eq!(config.tunnels.keepalive_secs, Duration::from_secs(5));
        let text = "[routes]\ngate_ttl_secs = 1\napp_ttl_secs = 0\n[tunnels]\nkeepalive_secs = 0\n";
        let err = parse::<BrokerConfig>(text, "t.toml")
            .unwrap_err()
            .to_string();
        for problem in [
            "routes.gate_ttl_secs: must be at least 2",
            "routes.app_ttl_secs: must be greater than 0, got 0",
            "tunnels.keepalive_secs: must be greater than 0, got 0",
        ] {
            assert!(err.contains(problem), "{problem} missing from {err}");
        }
        let err = parse::<BrokerConfig>("admin_listen = \"broker:18101\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin_listen: \"broker:18101\" is not a socket address (ip:port)"),
            "{err}"
        );
    }

    #[test]
    fn a_redis_bus_needs_routes_in_redis() {
        let err = parse::<BrokerConfig>("[bus]\nbackend = \"redis\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bus.backend:"), "{err}");
        assert!(err.contains("routes.backend"), "{err}");
        for routes in ["redis", "redis_cluster"] {
            let text = format!("[bus]\nbackend = \"redis\"\n[routes]\nbackend = \"{routes}\"\n");
            let config: BrokerConfig = parse(&text, "t.toml").unwrap();
            assert_eq!(config.bus.backend, BusBackend::Redis);
        }
    }

    #[test]
    fn an_unknown_backend_is_refused_by_name() {
        let err = parse::<BrokerConfig>("[routes]\nbackend = \"mongo\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("routes.backend"), "{err}");
    }

    #[test]
    fn the_go_pantheon_profile_parses_and_needs_only_redis_and_etcd() {
        let text = include_str!("../../configs.tmpl/go-pantheon/broker.toml");
        let profile: BrokerConfig = parse(text, "configs.tmpl/go-pantheon/broker.toml").unwrap();
        let (listen, admin_listen) = (profile.listen.to_string(), profile.admin_listen.to_string());
        assert_eq!(
            (listen.as_str(), admin_listen.as_str()),
            ("0.0.0.0:9100", "0.0.0.0:8100"),
            "go-pantheon's gate gRPC and HTTP ports"
        );
        assert_eq!(profile.routes.backend, RoutesBackend::Redis);
        assert!(profile.routes.redis_pushes);
        assert_eq!(
            (profile.routes.gate_ttl_secs, profile.routes.app_ttl_secs),
            (Duration::from_secs(600), Duration::from_secs(600))
        );
        assert_eq!(profile.bus.backend, BusBackend::Redis, "no NATS");
        assert_eq!(profile.discovery.backend, DiscoveryBackend::Etcd);
        assert_eq!(profile.discovery.colors, ["local"]);
        assert_eq!(profile.discovery.profile, "DEV");
    }

    #[test]
    fn the_template_parses_and_matches_the_defaults() {
        let text = include_str!("../../configs.tmpl/broker.toml");
        let template: BrokerConfig = parse(text, "configs.tmpl/broker.toml").unwrap();
        let defaults: BrokerConfig = parse("", "defaults").unwrap();
        assert_eq!(format!("{template:?}"), format!("{defaults:?}"));
    }
}
