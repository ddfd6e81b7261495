//! Redis pub/sub ingress: the pushes go-pantheon's broadcaster (`roma.broadcaster.service`)
//! publishes (PROTOCOL.md §12.2). A broker subscribes to its own channel, named by its
//! gateway-route value (its advertised `host:port`), where the broadcaster publishes pushes for
//! the players whose routes name this broker, and to [`BROADCAST_CHANNEL`], which every gateway
//! receives. Messages are the bus's own `broadcaster.service.push.v1.PushMessage`: the own
//! channel's go the way of an ingress push nobody waits for (players that moved are re-resolved
//! and forwarded), the broadcast channel's to the matching sessions here only (every broker
//! receives it). The connection is the shared
//! [`Subscription`], re-made and re-subscribed after a loss until shutdown.

use std::time::Duration;

use tokio::sync::mpsc;

use janus_proto::broadcaster::service::push::v1 as bc;

use super::{Pusher, decode};
use crate::error::Result;
use crate::redis_conn::Subscription;

/// The channel go-pantheon's broadcaster publishes broadcasts on.
const BROADCAST_CHANNEL: &str = "gate.broadcast.message";

/// Messages read from Redis and not yet delivered. Deliveries never wait on an edge (a full edge
/// queue drops the push), so this fills only if route lookups or the bus stall; when full, the
/// message is dropped and counted (`janus_broker_push_dropped_total{reason="redis_ingress_full"}`),
/// like a push that finds its edge queue full.
const QUEUE: usize = 1024;

/// One message taken from Redis.
struct Received {
    broadcast: bool,
    payload: Vec<u8>,
}

impl Pusher {
    /// Subscribes to this broker's Redis push channels through the servers at `urls` (the
    /// shared `Subscription`: reconnected and re-subscribed after a loss) and serves them
    /// until shutdown.
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
        let state = &self.state;
        let dropped = state
            .metrics
            .push_dropped
            .with_label_values(&["redis_ingress_full"]);
        Subscription::spawn(
            "go-pantheon pushes",
            urls,
            timeout,
            [state.endpoint.clone(), BROADCAST_CHANNEL.to_owned()],
            (&state.tasks, state.shutdown.clone()),
            move |channel, payload| {
                let received = Received {
                    broadcast: channel == BROADCAST_CHANNEL,
                    payload: payload.to_vec(),
                };
                if tx.try_send(received).is_err() {
                    dropped.inc();
                    tracing::warn!("Redis push queue full; push dropped");
                }
            },
        );
    }

    /// Delivers one message from Redis: a broadcast (Roma leaves the `broadcast` flag unset;
    /// the channel says it) to the matching sessions here, anything else as an ingress push.
    async fn on_redis(&self, message: &Received) -> Result<()> {
        if message.broadcast {
            self.on_redis_broadcast(&message.payload)
        } else {
            let push = decode::<bc::PushMessage>(&message.payload, "Redis push")?;
            self.push_unanswered(&push).await
        }
    }
}
