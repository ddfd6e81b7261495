//! `janus push`: sends a push to players through a broker's gRPC `PushService` or through NATS
//! (the ingress subject every broker listens to), as a game service would.

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use janus_broker::bus::{Confirm, NatsBus, Sent, subject};
use janus_proto::broadcaster::service::push::v1 as bc;
use prost::Message;
use std::path::PathBuf;
use std::time::Duration;

use janus_ops::internal_tls::{self, InternalTls, InternalTlsConfig, Role};

use crate::keys;

/// How long `--nats` waits to connect.
const NATS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `--nats` waits for a broker to say it holds the push (a broker waits up to two
/// seconds for each edge, and three for each other broker).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// `janus push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// Players to push to (repeat for a multicast).
    #[arg(long = "uid")]
    uids: Vec<i64>,
    /// Push to every session of --color and --sid instead.
    #[arg(long, conflicts_with = "uids")]
    broadcast: bool,
    /// Deployment colour.
    #[arg(long, default_value = "")]
    color: String,
    /// Game server (zone) id, for broadcasts.
    #[arg(long, default_value_t = 1)]
    sid: i64,
    /// Module and sequence the client sees.
    #[arg(long, default_value_t = 9)]
    module: i32,
    /// Sequence id the client sees.
    #[arg(long, default_value_t = 1)]
    seq: i32,
    /// The text to push.
    #[arg(long)]
    text: String,
    /// A broker's gRPC endpoint.
    #[arg(long, default_value = "127.0.0.1:17100", conflicts_with = "nats")]
    broker: String,
    /// Publish on NATS instead (e.g. nats://127.0.0.1:4222).
    #[arg(long)]
    nats: Option<String>,
    /// Reach the broker over mutual TLS with the certificate of this directory (ca.pem,
    /// cert.pem, key.pem: the `internal/admin/` a `janus keygen` wrote). Not used with --nats.
    #[arg(long, env = "JANUS_INTERNAL_TLS_DIR")]
    internal_tls: Option<PathBuf>,
}

/// Runs `janus push`.
pub(crate) async fn run(args: PushArgs) -> anyhow::Result<()> {
    if args.uids.is_empty() && !args.broadcast {
        bail!("name players with --uid (repeatable) or use --broadcast");
    }
    let body = bc::PushBody {
        data: args.text.clone().into_bytes(),
        r#mod: args.module,
        seq: args.seq,
        ..Default::default()
    };
    if let Some(url) = &args.nats {
        let bus = NatsBus::connect_now(url, "janus-cli", NATS_TIMEOUT).await?;
        let message = bc::PushMessage {
            bodies: vec![body],
            uids: args.uids.clone(),
            broadcast: args.broadcast,
            color: args.color.clone(),
            sid: args.sid,
        };
        // A request asking for `Janus-Confirm: held`: the broker that takes it answers once the
        // push is held (PROTOCOL.md §12), with the uids pushed.
        let answer = bus
            .request(
                subject::INGRESS,
                Bytes::from(message.encode_to_vec()),
                Confirm::Held,
                CONFIRM_TIMEOUT,
            )
            .await?;
        match answer {
            Ok(_) if args.broadcast => println!("broadcast held ({url})"),
            Ok(answer) => {
                let response = bc::MulticastResponse::decode(answer)
                    .context("the broker's answer is not a MulticastResponse")?;
                println!("pushed to {:?} ({url})", response.pushed_uids);
            }
            Err(Sent::NoSubscriber) => bail!(
                "no broker listens on {} at {url}: start one with the same [bus] nats_url",
                subject::INGRESS
            ),
            Err(_) => bail!(
                "no broker confirmed the push within {CONFIRM_TIMEOUT:?}: it may or may not have been delivered"
            ),
        }
        return Ok(());
    }
    let tls = match &args.internal_tls {
        Some(dir) => {
            let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
            InternalTls::load(&InternalTlsConfig {
                ca_file: file(keys::CA_CERT),
                cert_file: file(keys::ROLE_CERT),
                key_file: file(keys::ROLE_KEY),
                ..Default::default()
            })?
        }
        None => None,
    };
    let channel = internal_tls::channel(&args.broker, tls.as_ref(), Role::Broker, |e| e)
        .with_context(|| format!("--broker {}", args.broker))?;
    let mut client = bc::push_service_client::PushServiceClient::new(channel);
    let reach = || format!("the broker at {}", args.broker);
    if args.broadcast {
        let request = bc::BroadcastRequest {
            bodies: vec![body],
            color: args.color,
            sid: args.sid,
        };
        client.broadcast(request).await.with_context(reach)?;
        println!("broadcast sent");
    } else {
        let request = bc::MulticastRequest {
            bodies: vec![body],
            uids: args.uids,
            color: args.color,
        };
        let pushed = client
            .multicast(request)
            .await
            .with_context(reach)?
            .into_inner()
            .pushed_uids;
        println!("pushed to {pushed:?}");
    }
    Ok(())
}
