//! `janus`: one binary, every role. With no subcommand it runs the standalone gateway (edge,
//! broker and demo game service in one process, no Redis/NATS/etcd needed); `edge`, `broker`
//! and `game-demo` run one role of the split deployment; `keygen`, `token`, `connect` and `push`
//! are the tools a developer needs around them.

mod bench;
mod browser_demo;
mod connect;
mod game_demo;
mod http;
mod keys;
mod push;
mod standalone;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use janus_broker::Broker;
use janus_broker::config::BrokerConfig;
use janus_edge::Edge;
use janus_edge::config::EdgeConfig;
use janus_ops::internal_tls::Role;
use janus_ops::telemetry;

/// Janus game gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration of the default (standalone) run (see configs.tmpl/standalone.toml).
    #[arg(long, env = "JANUS_STANDALONE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Edge, broker and demo game service in one process (the default).
    Standalone {
        /// Configuration file (see configs.tmpl/standalone.toml).
        #[arg(long, env = "JANUS_STANDALONE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// An edge: client transports, handshake and crypto, limits, broker links.
    Edge {
        /// Configuration file (see configs.tmpl/edge.toml).
        #[arg(long, env = "JANUS_EDGE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// A broker: routes, tunnels to game services, push fan-out.
    Broker {
        /// Configuration file (see configs.tmpl/broker.toml).
        #[arg(long, env = "JANUS_BROKER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The demo game service (echo player service, chat rooms).
    GameDemo {
        /// Configuration file (see configs.tmpl/game-demo.toml).
        #[arg(long, env = "JANUS_GAME_DEMO_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Generates a key set: server.pem (the edge's Ed25519 signing key, PKCS#8 v1 PEM),
    /// server.pub.pem (its public key, SPKI PEM, for Janus clients), server.crt (the same key in
    /// a self-signed X.509 certificate, for go-pantheon clients), token.hex (a 32-byte token key
    /// to share with Lares), client.key / client.crt (an optional client certificate), and
    /// internal/: the deployment CA (ca.pem, ca.key) and a directory per role (edge, broker,
    /// game, admin) with ca.pem, cert.pem and key.pem (mutual TLS inside the deployment).
    /// Nothing is written when a file exists (unless --force).
    Keygen {
        /// Directory to write into.
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long, conflicts_with = "if_missing")]
        force: bool,
        /// Keep the sets the directory already holds (write only a missing one).
        #[arg(long)]
        if_missing: bool,
        /// Only issue a fresh certificate and key for this role (edge, broker, game, admin)
        /// from the CA in <dir>/internal/, replacing the old pair in <dir>/internal/<role>/ (a
        /// rotation: processes reload it).
        #[arg(long, conflicts_with_all = ["force", "if_missing"])]
        issue: Option<Role>,
    },
    /// Exits 0 when an HTTP GET of URL answers 200 (container health checks).
    Probe {
        /// `http://host:port/path`.
        url: String,
    },
    /// Mints a Lares-format token.
    Token(keys::TokenArgs),
    /// Connects as a player: logs in, sends, prints replies and pushes.
    Connect(connect::ConnectArgs),
    /// Pushes to players through a broker (gRPC) or NATS.
    Push(push::PushArgs),
    /// The load generator: starts a gateway and a raw baseline, drives both, reports.
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let service = match &args.command {
        None | Some(Command::Standalone { .. }) => "janus-standalone",
        Some(Command::Edge { .. }) => "janus-edge",
        Some(Command::Broker { .. }) => "janus-broker",
        Some(Command::GameDemo { .. }) => "janus-game-demo",
        Some(_) => "janus-cli",
    };
    // The generator's own NATS subscribers would log every connection at info.
    let filter = match &args.command {
        Some(Command::Bench(_)) => "info,async_nats=warn",
        _ => "info",
    };
    let telemetry = telemetry::init(service, filter);
    let result = run(args).await;
    telemetry.shutdown();
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let default = Command::Standalone {
        config: args.config,
    };
    match args.command.unwrap_or(default) {
        Command::Standalone { config } => standalone::run(config.as_deref()).await,
        Command::Edge { config } => {
            let config: EdgeConfig = janus_ops::config::load(config.as_deref(), "JANUS_EDGE")?;
            let handshake = config.load_handshake()?;
            let grace = config.drain_grace_secs;
            let edge = Edge::start(config, handshake)
                .await
                .context("starting the edge")?;
            telemetry::shutdown_signal().await;
            edge.drain(grace).await;
            Ok(())
        }
        Command::Broker { config } => {
            let config: BrokerConfig = janus_ops::config::load(config.as_deref(), "JANUS_BROKER")?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listen: cannot bind {}", config.listen))?;
            let broker = Broker::start(config, listener)
                .await
                .context("starting the broker")?;
            telemetry::shutdown_signal().await;
            broker.shutdown(Duration::from_secs(10)).await;
            Ok(())
        }
        Command::GameDemo { config } => game_demo::run(config.as_deref()).await,
        Command::Keygen {
            dir,
            force,
            if_missing,
            issue,
        } => match issue {
            Some(role) => keys::issue(&dir, role),
            None if if_missing => {
                if dir.join(keys::SERVER_KEY).exists() {
                    println!("{} already holds keys; kept", dir.display());
                } else {
                    keys::write_key_set(&dir, false)?;
                    keys::print_key_set(&dir);
                }
                if keys::internal_dir(&dir).join(keys::CA_CERT).exists() {
                    println!("{} already holds the internal set; kept", dir.display());
                    Ok(())
                } else {
                    keys::internal_keygen(&dir, false)
                }
            }
            None => keys::keygen(&dir, force),
        },
        Command::Probe { url } => {
            let status = http::status(&url).await?;
            anyhow::ensure!(status == 200, "{url} answered {status}");
            Ok(())
        }
        Command::Token(args) => keys::token(&args),
        Command::Connect(args) => connect::run(args).await,
        Command::Push(args) => push::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}
