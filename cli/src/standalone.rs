//! The standalone gateway: an edge (all four transports), a broker and the demo game service in
//! one process, wired through the in-memory route store, the in-process bus and static
//! discovery — the same session, routing, tunnel and push code as the split deployment, only
//! the seams differ. Development keys are created in `keys_dir` on first start and reused.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use janus_broker::Broker;
use janus_broker::config::{BrokerConfig, StaticInstance};
use janus_edge::Edge;
use janus_edge::config::EdgeConfig;
use janus_ops::config::{Problems, Validate};
use janus_ops::telemetry;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{browser_demo, keys};

/// `configs.tmpl/standalone.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StandaloneConfig {
    /// Where the development keys live (created on first start).
    keys_dir: String,
    /// The demo game service's gRPC address.
    game_listen: String,
    /// The browser demo's HTTP address (the SDK, a demo page, dev tokens); empty: off.
    demo_listen: String,
    /// The edge (its `keys` and `brokers` are filled in by the standalone mode).
    edge: EdgeConfig,
    /// The broker (its backends default to memory, its discovery to the demo game).
    broker: BrokerConfig,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        let mut broker = BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 17100)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 18101)),
            ..BrokerConfig::default()
        };
        broker.discovery.instances.clear();
        Self {
            keys_dir: ".janus".into(),
            game_listen: "127.0.0.1:17200".into(),
            demo_listen: "127.0.0.1:17080".into(),
            edge: EdgeConfig::default(),
            broker,
        }
    }
}

impl StandaloneConfig {
    /// The edge configuration with the dev keys and the in-process broker filled in.
    fn edge(&self) -> EdgeConfig {
        let mut edge = self.edge.clone();
        let dir = Path::new(&self.keys_dir);
        if edge.keys.signing_key_file.is_empty() {
            edge.keys.signing_key_file = dir.join(keys::SERVER_KEY).display().to_string();
        }
        if edge.keys.token_key_file.is_empty() {
            edge.keys.token_key_file = dir.join(keys::TOKEN_KEY).display().to_string();
        }
        edge.brokers.endpoints = vec![self.broker.endpoint()];
        edge
    }

    /// The broker configuration routing every module to the demo game.
    fn broker(&self) -> BrokerConfig {
        let mut broker = self.broker.clone();
        for service in broker.tunnels.services.values() {
            broker.discovery.instances.push(StaticInstance {
                name: service.name.clone(),
                endpoint: self.game_listen.clone(),
                color: String::new(),
                weight: 1,
            });
        }
        broker
    }
}

impl Validate for StandaloneConfig {
    fn validate(&self, problems: &mut Problems) {
        problems.check(!self.keys_dir.is_empty(), "keys_dir", "must not be empty");
        problems.check_addr("game_listen", &self.game_listen);
        if !self.demo_listen.is_empty() {
            problems.check_addr("demo_listen", &self.demo_listen);
        }
        problems.section("edge", &self.edge());
        problems.section("broker", &self.broker());
    }
}

/// Runs the standalone gateway until SIGTERM/SIGINT.
pub(crate) async fn run(config: Option<&Path>) -> anyhow::Result<()> {
    let config: StandaloneConfig = janus_ops::config::load(config, "JANUS_STANDALONE")?;
    let (server_key, token_key) = keys::ensure_dev_keys(Path::new(&config.keys_dir))?;

    let broker_listener = tokio::net::TcpListener::bind(config.broker.listen)
        .await
        .with_context(|| format!("broker.listen: cannot bind {}", config.broker.listen))?;
    let game_listener = tokio::net::TcpListener::bind(&config.game_listen)
        .await
        .with_context(|| format!("game_listen: cannot bind {}", config.game_listen))?;
    let push_endpoint = config.broker.endpoint();
    let game_stop = CancellationToken::new();
    let shutdown = game_stop.clone().cancelled_owned();
    let game = tokio::spawn(async move {
        janus_demo_game::serve(game_listener, &push_endpoint, None, shutdown).await
    });
    let broker = Broker::start(config.broker(), broker_listener)
        .await
        .context("starting the broker")?;
    let edge_config = config.edge();
    let handshake = edge_config.load_handshake()?;
    let edge_keys = edge_config.keys.clone();
    let grace = edge_config.drain_grace_secs;
    let edge = Edge::start(edge_config, handshake)
        .await
        .context("starting the edge")?;
    let demo = match (config.demo_listen.as_str(), edge.ws_addr) {
        ("", _) | (_, None) => None,
        (listen, Some(ws)) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("demo_listen: cannot bind {listen}"))?;
            let addr = listener.local_addr()?;
            let server_key = keys::read_signing_key(Path::new(&edge_keys.signing_key_file))?
                .verifying_key()
                .to_public_key_pem()?;
            let codec = janus_protocol::token::TokenCodec::new(&keys::read_token_key(
                Path::new(&edge_keys.token_key_file),
                edge_keys.token_key_format,
            )?);
            let stop = game_stop.clone();
            let path = config.edge.websocket.path.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    browser_demo::serve(listener, ws, path, server_key, codec, stop).await
                {
                    tracing::warn!(error = %e, "the browser demo stopped");
                }
            });
            Some(addr)
        }
    };

    let show =
        |addr: Option<std::net::SocketAddr>| addr.map_or("off".to_owned(), |a| a.to_string());
    println!("Janus standalone is up.");
    println!("  tcp        {}", show(edge.tcp_addr));
    println!(
        "  websocket  {} (path {})",
        show(edge.ws_addr),
        config.edge.websocket.path
    );
    println!("  kcp        {}", show(edge.kcp_addr));
    println!("  quic       {}", show(edge.quic_addr));
    println!(
        "  admin      http://{}/metrics (edge), http://{}/metrics (broker)",
        edge.admin_addr, broker.admin_addr
    );
    println!(
        "  dev keys   {} (server signing key), {} (token key)",
        server_key.display(),
        token_key.display()
    );
    println!("Connect as player 1 (type lines to echo; /join 7, /say 7 hi, /quit):");
    println!("  cargo run --release -- connect --uid 1");
    if let Some(demo) = demo {
        println!(
            "Or open http://{demo}/ in a browser (the JavaScript SDK's demo; it hands out \
             development tokens: standalone only)"
        );
    }

    telemetry::shutdown_signal().await;
    edge.drain(grace).await;
    broker.shutdown(Duration::from_secs(5)).await;
    game_stop.cancel();
    let _ = game.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use janus_ops::config::parse;

    use super::*;

    #[test]
    fn the_template_parses_and_matches_the_defaults() {
        let text = include_str!("../../configs.tmpl/standalone.toml");
        let template: StandaloneConfig = parse(text, "configs.tmpl/standalone.toml").unwrap();
        let defaults: StandaloneConfig = parse("", "defaults").unwrap();
        assert_eq!(format!("{template:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn the_edge_uses_the_dev_keys_and_the_broker_routes_to_the_demo_game() {
        let config = StandaloneConfig::default();
        let edge = config.edge();
        assert_eq!(edge.keys.signing_key_file, ".janus/server.pem");
        assert_eq!(edge.brokers.endpoints, vec!["127.0.0.1:17100".to_owned()]);
        let broker = config.broker();
        assert!(
            broker
                .discovery
                .instances
                .iter()
                .all(|i| i.endpoint == "127.0.0.1:17200")
        );
        assert_eq!(
            broker.discovery.instances.len(),
            broker.tunnels.services.len()
        );
    }
}
