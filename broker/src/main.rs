//! `janus-broker`: runs one broker until SIGTERM/SIGINT, then shuts it down.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use janus_broker::Broker;
use janus_broker::config::BrokerConfig;
use janus_shared::telemetry;

/// Janus broker: session routing, game-service tunnels and push fan-out.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); every field has a default (see configs.tmpl/broker.toml).
    #[arg(long, env = "JANUS_BROKER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let args = Args::parse();
    let config: BrokerConfig = janus_shared::config::load(args.config.as_deref())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", config.listen))?;
    let broker = Broker::start(config, listener)
        .await
        .context("starting the broker")?;
    telemetry::shutdown_signal().await;
    broker.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
