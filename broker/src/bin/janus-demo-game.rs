//! `janus-demo-game`: the demo game service (see `janus_broker::demo`) as a process.

use anyhow::Context;
use clap::Parser;
use janus_broker::demo::{EchoPlayer, Rooms};
use janus_proto::player::intra::v1::tunnel_service_server::TunnelServiceServer as PlayerServer;
use janus_proto::room::intra::v1::tunnel_service_server::TunnelServiceServer as RoomServer;
use janus_shared::telemetry;

/// The demo game service: an echoing player service and chat rooms.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// gRPC listen address.
    #[arg(long, env = "JANUS_DEMO_LISTEN", default_value = "0.0.0.0:17200")]
    listen: String,
    /// A broker's gRPC endpoint, for room pushes.
    #[arg(long, env = "JANUS_DEMO_PUSH", default_value = "127.0.0.1:17100")]
    push: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let args = Args::parse();
    let addr = args.listen.parse().context("--listen: not ip:port")?;
    let rooms = Rooms::new(&args.push).context("--push: not host:port")?;
    tracing::info!(%addr, push = %args.push, "demo game service started");
    tonic::transport::Server::builder()
        .add_service(PlayerServer::new(EchoPlayer))
        .add_service(RoomServer::new(rooms))
        .serve_with_shutdown(addr, telemetry::shutdown_signal())
        .await?;
    Ok(())
}
