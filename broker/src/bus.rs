//! The push bus: how pushes and control messages reach the broker that holds a session. One
//! seam, three implementations: NATS (the real deployment), Redis (a deployment with Redis and
//! no NATS, as go-pantheon's) and an in-process bus (standalone).
//!
//! Subjects (documented in PROTOCOL.md):
//! - [`subject::INGRESS`] — pushes from anywhere (CLI, game services with a NATS client); brokers
//!   share it as a queue group, so exactly one broker resolves each push to the brokers holding
//!   its players and forwards it.
//! - [`subject::broker`] — pushes for the sessions of one broker (uids already resolved).
//! - [`subject::PRESENCE`] — every broker announces itself here, so each knows which brokers
//!   to send a broadcast to (one message per broker, not per player).
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

/// How long a [`PushBus::send`] waits for the subscriber's answer (one that waits for its
/// edges waits up to two seconds), on every bus. Past it the message is [`Sent::Unanswered`]:
/// the subscriber may have it, or may have died with it.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

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
    /// Broker presence: every broker publishes its endpoint here every second.
    pub const PRESENCE: &str = "janus.brokers";

    /// Pushes for the sessions held by broker `broker_id`.
    pub fn broker(broker_id: &str) -> String {
        format!("janus.push.broker.{broker_id}")
    }

    /// Control messages for broker `broker_id`.
    pub fn control(broker_id: &str) -> String {
        format!("janus.ctl.broker.{broker_id}")
    }
}

/// When the subscriber of a [`PushBus::send`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// As it takes the message.
    Taken,
    /// Once it has handled it: a broker, once the edges (or parked copies) of the sessions
    /// it delivered the push to hold it (PROTOCOL.md §13.5). Only subscriptions made with
    /// [`PushBus::subscribe_answering`] wait; others answer as they take it.
    Held,
}

/// Sends the answer to a message whose sender waits for one: its payload (empty for a
/// [`PushBus::send`]).
pub type Reply = Box<dyn FnOnce(Bytes) -> futures_util::future::BoxFuture<'static, ()> + Send>;

/// A message from [`PushBus::subscribe_answering`], with the answer its sender waits for.
pub struct Incoming {
    /// The message.
    pub payload: Bytes,
    /// Sends the answer; `None` when nobody waits for one (or it was sent on receipt).
    pub reply: Option<Reply>,
}

/// What [`PushBus::send`] found on the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A subscriber took the message and answered (or the bus cannot tell).
    Taken,
    /// Nobody subscribes to the subject: a broker's own subject, that broker is gone.
    NoSubscriber,
    /// A subscriber took it but did not answer in time (it died or is stuck): with
    /// [`Confirm::Held`], the message is not known to be held.
    Unanswered,
}

/// A publish/subscribe bus carrying encoded protobuf messages.
#[async_trait]
pub trait PushBus: Send + Sync + 'static {
    /// Publishes `payload` on `subject` (fire and forget; delivery is at most once).
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()>;

    /// Publishes `payload` on `subject` and says whether a subscriber took it, so a push for a
    /// broker that has gone away is not lost unnoticed (PROTOCOL.md §13.5). NATS tells (the
    /// message is a request that the receiving client answers as it takes it, and the server
    /// answers "no responders" when nobody subscribes) and so does the in-process bus; on the
    /// Redis bus this is [`PushBus::publish`] and always [`Sent::Taken`] (a cluster's `PUBLISH`
    /// counts the subscribers of one node only).
    /// `confirm` says when the subscriber answers (and so when this returns).
    async fn send(&self, subject: &str, payload: Bytes, confirm: Confirm) -> Result<Sent> {
        let _ = confirm;
        self.publish(subject, payload).await.map(|()| Sent::Taken)
    }

    /// Subscribes to `subject` (in `queue_group`, if any), answering a message whose sender
    /// waits for [`Confirm::Held`] only when the caller sends [`Incoming::reply`].
    async fn subscribe_answering(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<BoxStream<'static, Incoming>> {
        use futures_util::StreamExt;
        let stream = self.subscribe(subject, queue_group).await?;
        Ok(stream
            .map(|payload| Incoming {
                payload,
                reply: None,
            })
            .boxed())
    }

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

    use super::{Confirm, PushBus, Sent};

    /// Checks that `bus` tells a send whether anybody took it (NATS and the in-process bus;
    /// the Redis bus cannot, see [`PushBus::send`]).
    pub async fn send_tells(bus: &dyn PushBus) {
        let subject = format!("conformance.send.{}", std::process::id());
        assert_eq!(
            bus.send(&subject, Bytes::from_static(b"x"), Confirm::Taken)
                .await
                .unwrap(),
            Sent::NoSubscriber,
            "nobody subscribes"
        );
        let mut taker = bus.subscribe(&subject, None).await.unwrap();
        let receiving = tokio::spawn(async move { taker.next().await });
        assert_eq!(
            bus.send(&subject, Bytes::from_static(b"y"), Confirm::Taken)
                .await
                .unwrap(),
            Sent::Taken
        );
        let got = tokio::time::timeout(Duration::from_secs(5), receiving).await;
        assert_eq!(
            got.ok().and_then(Result::ok).flatten().as_deref(),
            Some(&b"y"[..]),
            "the subscriber gets what it took"
        );
        // Its subscription gone (a broker that died), sends find nobody again.
        for _ in 0..50 {
            let sent = bus.send(&subject, Bytes::from_static(b"z"), Confirm::Taken);
            if sent.await.unwrap() == Sent::NoSubscriber {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("a send still counts as taken after its only subscriber went away");
    }

    /// Checks that a [`Confirm::Held`] send to a subscription made with
    /// [`PushBus::subscribe_answering`] returns only once the subscriber answers, and that a
    /// [`Confirm::Taken`] one is answered on receipt (NATS).
    pub async fn answers_when_held(bus: &dyn PushBus) {
        let subject = format!("conformance.held.{}", std::process::id());
        let mut subscription = bus.subscribe_answering(&subject, None).await.unwrap();
        let mut sent = bus.send(&subject, Bytes::from_static(b"h"), Confirm::Held);
        let incoming = tokio::select! {
            incoming = subscription.next() => incoming.unwrap(),
            _ = &mut sent => panic!("a held send returned before the subscriber answered"),
        };
        assert_eq!(&incoming.payload[..], b"h");
        let reply = incoming.reply.expect("the sender waits for an answer");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut sent)
                .await
                .is_err(),
            "no answer yet"
        );
        reply(Bytes::new()).await;
        assert_eq!(sent.await.unwrap(), Sent::Taken);

        let sent = bus.send(&subject, Bytes::from_static(b"t"), Confirm::Taken);
        let (sent, incoming) = tokio::join!(sent, subscription.next());
        assert_eq!(sent.unwrap(), Sent::Taken);
        assert!(
            incoming.unwrap().reply.is_none(),
            "answered as it was taken"
        );
    }

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
