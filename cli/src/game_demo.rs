//! `janus game-demo`: the demo game service as a process, configured like every role (a TOML
//! file plus `JANUS_GAME_DEMO__FIELD` overrides), optionally registered in etcd so brokers find
//! it.

use std::path::Path;

use anyhow::Context;
use janus_ops::config::{Problems, Validate};
use janus_ops::discovery::{Discovery, EtcdDiscovery, Instance, own_address};
use janus_ops::internal_tls::{InternalTls, InternalTlsConfig};
use janus_ops::telemetry;
use serde::Deserialize;

/// `configs.tmpl/game-demo.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GameDemoConfig {
    /// gRPC listen address.
    listen: String,
    /// A broker's gRPC endpoint, for room pushes.
    push: String,
    /// etcd endpoints to register in (kratos layout); empty: register nowhere.
    etcd_endpoints: Vec<String>,
    /// The address to register; default: the host name's address and the listen port.
    advertise: Option<String>,
    /// Colour served.
    color: String,
    /// Mutual TLS for the tunnels it serves and the pushes it sends (PROTOCOL.md §15).
    internal_tls: InternalTlsConfig,
}

impl Default for GameDemoConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:17200".into(),
            push: "127.0.0.1:17100".into(),
            etcd_endpoints: Vec::new(),
            advertise: None,
            color: String::new(),
            internal_tls: InternalTlsConfig::default(),
        }
    }
}

impl Validate for GameDemoConfig {
    fn validate(&self, problems: &mut Problems) {
        problems.check_addr("listen", &self.listen);
        self.internal_tls.check(problems);
        problems.check(
            self.push.contains(':'),
            "push",
            format!("{:?} is not host:port", self.push),
        );
        for (i, endpoint) in self.etcd_endpoints.iter().enumerate() {
            problems.check(
                endpoint.starts_with("http://") || endpoint.starts_with("https://"),
                &format!("etcd_endpoints[{i}]"),
                format!("{endpoint:?} is not an http(s) URL"),
            );
        }
    }
}

/// The services the demo game registers as.
const SERVICES: [&str; 2] = ["roma.player.service", "roma.room.service"];

/// Runs the demo game service until SIGTERM/SIGINT.
pub(crate) async fn run(config: Option<&Path>) -> anyhow::Result<()> {
    let config: GameDemoConfig = janus_ops::config::load(config, "JANUS_GAME_DEMO")?;
    let tls = InternalTls::load(&config.internal_tls)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", config.listen))?;
    let port = listener.local_addr()?.port();
    let mut registrations = Vec::new();
    if !config.etcd_endpoints.is_empty() {
        let advertise = match &config.advertise {
            Some(advertise) => advertise.clone(),
            None => own_address(port).await,
        };
        let discovery = EtcdDiscovery::connect(&config.etcd_endpoints).await?;
        for name in SERVICES {
            let instance = Instance {
                id: format!("demo-{}", advertise.replace([':', '.'], "-")),
                name: name.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                metadata: [("color".to_owned(), config.color.clone())].into(),
                endpoints: vec![format!("grpc://{advertise}")],
            };
            registrations.push(discovery.register(instance).await?);
        }
        tracing::info!(%advertise, "registered in etcd");
    }
    tracing::info!(listen = %config.listen, push = %config.push, "demo game service started");
    let served =
        janus_demo_game::serve(listener, &config.push, tls, telemetry::shutdown_signal()).await;
    for registration in registrations {
        registration.deregister().await;
    }
    served.map_err(|e| anyhow::anyhow!("demo game service: {e}"))
}

#[cfg(test)]
mod tests {
    use janus_ops::config::parse;

    use super::*;

    #[test]
    fn the_template_parses_and_matches_the_defaults() {
        let text = include_str!("../../configs.tmpl/game-demo.toml");
        let template: GameDemoConfig = parse(text, "configs.tmpl/game-demo.toml").unwrap();
        let defaults: GameDemoConfig = parse("", "defaults").unwrap();
        assert_eq!(format!("{template:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn problems_name_their_fields() {
        let err = parse::<GameDemoConfig>(
            "listen = \"x\"\netcd_endpoints = [\"etcd:2379\"]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("listen:") && err.contains("etcd_endpoints[0]:"),
            "{err}"
        );
    }
}
