//! The push bus: how pushes and control messages reach the broker that holds a session. One
//! seam, three implementations: NATS (the real deployment), Redis (a deployment with Redis and
//! no NATS, as go-pantheon's) and an in-process bus (standalone).
//!
//! Subjects (documented in PROTOCOL.md):
//! - [`subject::INGRESS`] — pushes from anywhere (CLI, game services with a NATS client); brokers
//!   share it as a queue group, so exactly one broker resolves each push to the brokers holding
//!   its players and forwards it.
//! - [`subject::broker`] — pushes for the sessions of one broker (uids already resolved).
//! - [`subject::BROADCAST`] — broadcasts; every broker subscribes, so a broadcast to N sessions
//!   costs one message per broker, not per player.
//! - [`subject::control`] — control for one broker (kick a uid after a login elsewhere).

mod memory;
mod nats;
mod redis;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;

use crate::error::Result;

pub use self::memory::MemoryBus;
pub use self::nats::NatsBus;
pub use self::redis::RedisBus;

/// Messages a subscriber of the in-process or the Redis bus may have waiting. When full, new
/// messages for it are dropped (NATS treats a slow consumer the same way) and a warning is
/// logged ([`offer`]).
const SUBSCRIBER_QUEUE: usize = 4096;

/// Hands `payload` of `subject` to a subscriber's queue, or drops it when the queue is full.
fn offer(subject: &str, tx: &mpsc::Sender<Bytes>, payload: &Bytes) {
    if tx.try_send(payload.clone()).is_err() && !tx.is_closed() {
        tracing::warn!(subject, "push bus subscriber is full; message dropped");
    }
}

/// Subject names.
pub mod subject {
    /// Pushes not yet resolved to brokers (queue group [`INGRESS_GROUP`]).
    pub const INGRESS: &str = "janus.push.in";
    /// The queue group brokers use on [`INGRESS`].
    pub const INGRESS_GROUP: &str = "janus-brokers";
    /// Broadcasts by (color, sid).
    pub const BROADCAST: &str = "janus.push.broadcast";

    /// Pushes for the sessions held by broker `broker_id`.
    pub fn broker(broker_id: &str) -> String {
        format!("janus.push.broker.{broker_id}")
    }

    /// Control messages for broker `broker_id`.
    pub fn control(broker_id: &str) -> String {
        format!("janus.ctl.broker.{broker_id}")
    }
}

/// A publish/subscribe bus carrying encoded protobuf messages.
#[async_trait]
pub trait PushBus: Send + Sync + 'static {
    /// Publishes `payload` on `subject` (fire and forget; delivery is at most once).
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()>;

    /// Subscribes to `subject`; with `queue_group`, each message goes to one member of the group.
    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<BoxStream<'static, Bytes>>;
}

/// Checks a [`PushBus`] against NATS semantics. The in-process bus's unit tests and the
/// integration suite against a real NATS both run it.
pub mod conformance {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;

    use super::PushBus;

    /// Runs every check on `bus` with subjects unique to this call; panics on a mismatch.
    pub async fn run(bus: &dyn PushBus) {
        let subject = format!("conformance.{}", std::process::id());
        let mut plain_a = bus.subscribe(&subject, None).await.unwrap();
        let mut plain_b = bus.subscribe(&subject, None).await.unwrap();
        let mut queue_a = bus.subscribe(&subject, Some("q")).await.unwrap();
        let mut queue_b = bus.subscribe(&subject, Some("q")).await.unwrap();
        let mut other = bus.subscribe("conformance.other", None).await.unwrap();

        for n in 0..10u8 {
            bus.publish(&subject, Bytes::from(vec![n])).await.unwrap();
        }
        for n in 0..10u8 {
            for stream in [&mut plain_a, &mut plain_b] {
                let got = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
                assert_eq!(
                    got.ok().flatten().as_deref(),
                    Some(&[n][..]),
                    "every plain subscriber gets every message, in order"
                );
            }
        }
        let mut group_got = 0;
        for stream in [&mut queue_a, &mut queue_b] {
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(300), stream.next()).await
            {
                group_got += 1;
            }
        }
        assert_eq!(
            group_got, 10,
            "a queue group receives each message exactly once"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), other.next())
                .await
                .is_err(),
            "other subjects receive nothing"
        );
    }
}
