//! `janus-edge`: runs one edge until SIGTERM/SIGINT, then drains it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use janus_edge::Edge;
use janus_edge::config::EdgeConfig;
use janus_shared::telemetry;

/// Janus edge: terminates client connections and forwards them to brokers.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (TOML); every field has a default (see configs.tmpl/edge.toml).
    #[arg(long, env = "JANUS_EDGE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let args = Args::parse();
    let config: EdgeConfig = janus_shared::config::load(args.config.as_deref())?;
    let handshake = config.load_handshake()?;
    let grace = config.drain_grace();
    let edge = Edge::start(config, handshake)
        .await
        .context("starting the edge")?;
    telemetry::shutdown_signal().await;
    edge.drain(grace).await;
    Ok(())
}
