//! The push bus: how pushes and control messages reach the broker that holds a session. One
//! seam, two implementations: NATS (the real deployment) and an in-process bus (standalone).
//!
//! Subjects (documented in PROTOCOL.md):
//! - [`subject::INGRESS`] — pushes from anywhere (CLI, game services with a NATS client); brokers
//!   share it as a queue group, so exactly one broker resolves each push to the brokers holding
//!   its players and forwards it.
//! - [`subject::broker`] — pushes for the sessions of one broker (uids already resolved).
//! - [`subject::BROADCAST`] — broadcasts; every broker subscribes, so a broadcast to N sessions
//!   costs one message per broker, not per player.
//! - [`subject::control`] — control for one broker (kick a uid after a login elsewhere).

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::error::Result;

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
