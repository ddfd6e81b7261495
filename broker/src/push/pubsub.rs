//! Redis pub/sub ingress: the pushes go-pantheon's broadcaster (`roma.broadcaster.service`)
//! publishes (PROTOCOL.md §12.2). A broker subscribes to its own channel, named by its
//! gateway-route value (its advertised `host:port`), where the broadcaster publishes pushes for
//! the players whose routes name this broker, and to [`BROADCAST_CHANNEL`], which every gateway
//! receives. Messages are the bus's own `broadcaster.service.push.v1.PushMessage` and go through the bus handlers of
//! the same meaning: the own channel through the ingress path (players that moved are re-resolved
//! and forwarded), the broadcast channel through the broadcast-subject path (each broker
//! delivers to its matching sessions). It owns the subscription connection only: lost, it is
//! re-made and re-subscribed until shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Pusher;
use crate::error::{Error, Result};

/// The channel go-pantheon's broadcaster publishes broadcasts on.
const BROADCAST_CHANNEL: &str = "gate.broadcast.message";

/// Messages read from Redis and not yet delivered. Deliveries never wait on an edge (a full edge
/// queue drops the push), so this fills only if route lookups or NATS stall; when full, the
/// message is dropped and counted (`janus_broker_push_dropped_total{reason="redis_ingress_full"}`),
/// like a push that finds its edge queue full.
const QUEUE: usize = 1024;
/// Pause between attempts to (re)subscribe.
const RETRY: Duration = Duration::from_secs(1);
/// How often the subscription connection is checked with a PING (a connection that died
/// silently would otherwise look like a quiet channel).
const PING_EVERY: Duration = Duration::from_secs(5);

/// One message taken from Redis.
struct Received {
    broadcast: bool,
    payload: Vec<u8>,
}

fn redis_err(e: impl std::fmt::Display) -> Error {
    Error::RouteStore(format!("push subscription: {e}"))
}

impl Pusher {
    /// Subscribes to this broker's Redis push channels through the servers at `urls` (tried in
    /// turn; any node of a cluster carries every publication) and serves them until shutdown.
    pub fn serve_redis(&self, urls: Vec<String>, timeout: Duration) {
        let (tx, mut rx) = mpsc::channel::<Received>(QUEUE);
        let pusher = self.clone();
        self.state.tasks.spawn(async move {
            while let Some(message) = rx.recv().await {
                if let Err(e) = pusher.on_redis(&message).await {
                    tracing::warn!(error = %e, "bad push from Redis");
                }
            }
        });
        let pusher = self.clone();
        self.state.tasks.spawn(async move {
            let shutdown = pusher.state.shutdown.clone();
            for url in urls.iter().cycle() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    Err(e) = pusher.subscribed(url, timeout, &tx) => {
                        tracing::warn!(%url, error = %e, "Redis push subscription lost; subscribing again");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        });
    }

    /// Subscribes through `url` and forwards messages to `tx` until the connection fails.
    async fn subscribed(
        &self,
        url: &str,
        timeout: Duration,
        tx: &mpsc::Sender<Received>,
    ) -> Result<()> {
        let client = redis::Client::open(url).map_err(redis_err)?;
        let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
            .await
            .map_err(|_| redis_err("timed out connecting"))?
            .map_err(redis_err)?;
        let (mut sink, mut stream) = pubsub.split();
        let own = self.state.endpoint.as_str();
        tokio::time::timeout(timeout, sink.subscribe(&[own, BROADCAST_CHANNEL]))
            .await
            .map_err(|_| redis_err("timed out subscribing"))?
            .map_err(redis_err)?;
        tracing::info!(%url, channel = %own, broadcast = BROADCAST_CHANNEL, "subscribed to Redis pushes");
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let message = message.ok_or_else(|| redis_err("connection closed"))?;
                    let received = Received {
                        broadcast: message.get_channel_name() == BROADCAST_CHANNEL,
                        payload: message.get_payload_bytes().to_vec(),
                    };
                    if tx.try_send(received).is_err() {
                        self.state
                            .metrics
                            .push_dropped
                            .with_label_values(&["redis_ingress_full"])
                            .inc();
                        tracing::warn!("Redis push queue full; push dropped");
                    }
                }
                _ = ping.tick() => {
                    tokio::time::timeout(timeout, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| redis_err("PING timed out"))?
                        .map_err(redis_err)?;
                }
            }
        }
    }

    /// Delivers one message from Redis: a broadcast (Roma leaves the `broadcast` flag unset;
    /// the channel says it) to the matching sessions here, anything else as an ingress push.
    async fn on_redis(&self, message: &Received) -> Result<()> {
        if message.broadcast {
            self.on_broadcast(&message.payload)
        } else {
            self.on_ingress(&message.payload).await
        }
    }
}
