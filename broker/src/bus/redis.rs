//! The Redis push bus (`[bus] backend = "redis"`): NATS semantics on the route store's Redis
//! (`[routes] redis_urls`, standalone or cluster), for deployments that run Redis and no NATS,
//! as go-pantheon's do. PROTOCOL.md §12 describes the carrier.
//!
//! - **Plain subscribers**: a subject is the Redis channel of the same name. Publishing is
//!   `PUBLISH`; the bus keeps one SUBSCRIBE connection (the shared [`Subscription`]: every
//!   subscribed channel on it, re-made and re-subscribed after a loss, PINGed to notice a silent
//!   one) and hands each message to every local subscriber of its channel.
//! - **Queue groups** (each message to one member of the group; [`super::subject::INGRESS`]
//!   with [`super::subject::INGRESS_GROUP`]): Redis pub/sub has none, so each (subject, group)
//!   has a list, `janus:bus:{<subject>}:groups:<group>`. A publish pushes the message onto the
//!   list of every group the subject has; each member pops with `BRPOP` on a connection of its
//!   own, so each message is taken by exactly one member. The groups a subject has are a sorted
//!   set, `janus:bus:{<subject>}:groups`, of group → expiry (server time): a member re-adds its
//!   group every [`GROUP_TTL`]` / 3`, so a group whose members are all gone stops receiving
//!   within [`GROUP_TTL`], and the set itself expires with its last member.
//!
//! Lists, not Streams with a consumer group: the bus promises at most once (as NATS core
//! does), which a pop gives with nothing to acknowledge, while a stream group delivers at least
//! once: entries wait in a pending list until acknowledged, a member that dies leaves its
//! pending entries to be claimed by another (`XAUTOCLAIM` is Redis 6.2; before it, `XPENDING`
//! and `XCLAIM` rounds), and a re-delivered push would arrive twice. Lists also need nothing
//! created beforehand (a stream group must exist before the first read and vanishes when an
//! idle stream expires) and work on any Redis with Lua (2.6); the route store runs on 6.0.
//!
//! Full policy of a group's list: at most [`GROUP_QUEUE_CAP`] messages; when full, the newest
//! message is dropped for that group (as the in-process bus and a NATS slow consumer do) and the
//! publisher logs a warning. Every publish sets the list to expire after [`GROUP_QUEUE_TTL`], so
//! a list nobody drains disappears that long after its last message. Delivery is at most once
//! overall: a message popped by a member that then stops (its connection lost, the broker
//! shutting down) is lost, and a publish whose connection drops is not sent again.
//!
//! Every key a publish touches carries the subject as its hash tag, so on a cluster they share
//! the slot of the one key the script declares (the group set) and the script runs on one node;
//! `PUBLISH` reaches subscribers on every node of a cluster.
//!
//! - **Requests** ([`PushBus::send`]): a `janus.internal.v1.BusRequest` on the channel
//!   [`request_channel`] of the subject, which every plain subscription of the subject also
//!   subscribes to, naming the sender's own answer channel (`janus.answer.<random>`, on the
//!   shared subscription) and a number; the receiver publishes a `BusAnswer` there as it takes
//!   the request, or, asked for [`Confirm::Held`] on a subscription made with
//!   [`PushBus::subscribe_answering`], when its caller says so. On a standalone Redis `PUBLISH`
//!   counts the clients that got the request, so none means nobody listens
//!   ([`Sent::NoSubscriber`]); a cluster's counts one node's, so there the sender can only wait
//!   ([`Sent::Unanswered`] after [`SEND_TIMEOUT`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use janus_proto::janus::internal::v1::{BusAnswer, BusRequest};
use parking_lot::Mutex;
use prost::Message;
use redis::Script;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Confirm, Incoming, PushBus, Reply, SEND_TIMEOUT, SUBSCRIBER_QUEUE, Sent, offer};
use crate::error::{Error, Result};
use crate::redis_conn::{Commands, Resend, Subscription};

/// Messages a group's list may hold; when full, new messages are dropped for that group.
const GROUP_QUEUE_CAP: usize = 1024;
/// How long a group's list outlives its last publish.
const GROUP_QUEUE_TTL: Duration = Duration::from_secs(10);
/// How long a group stays a subject's after its last member re-added it.
const GROUP_TTL: Duration = Duration::from_secs(15);
/// How long one `BRPOP` waits (whole seconds: Redis before 6.0 takes no fractions).
const POP_WAIT_SECS: u64 = 1;
/// Messages a member has popped and its subscriber not yet taken. When full, the member stops
/// popping (it waits), so the messages stay in Redis for the group's other members.
const MEMBER_QUEUE: usize = 64;
/// Pause after a failed pop before the next.
const RETRY: Duration = Duration::from_secs(1);

/// The channel requests for `subject` go to.
fn request_channel(subject: &str) -> String {
    format!("janus.request.{subject}")
}

/// Requests sent and not answered yet, by number.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

/// Publishes `ARGV[2]` on channel `ARGV[1]` and onto the list of every live group of the
/// subject whose group set is `KEYS[1]` (lists `KEYS[1]:<group>`, at most `ARGV[3]` long, set to
/// expire after `ARGV[4]` ms); returns how many groups' lists were full.
const PUBLISH: &str = r"
redis.replicate_commands()
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local full = 0
for _, group in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local list = KEYS[1] .. ':' .. group
  if redis.call('LLEN', list) < tonumber(ARGV[3]) then
    redis.call('LPUSH', list, ARGV[2])
  else
    full = full + 1
  end
  redis.call('PEXPIRE', list, ARGV[4])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return full";

/// Makes `ARGV[1]` a group of the subject whose group set is `KEYS[1]` for `ARGV[2]` ms from now
/// (server time); the set expires then too unless a member joins again.
const JOIN: &str = r"
redis.replicate_commands()
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1";

/// The group set of `subject`.
fn groups_key(subject: &str) -> String {
    format!("janus:bus:{{{subject}}}:groups")
}

/// The list of `group` on `subject` (what [`PUBLISH`] derives from the group set's key).
fn group_list_key(subject: &str, group: &str) -> String {
    format!("{}:{group}", groups_key(subject))
}

fn bus_err(reason: String) -> Error {
    Error::Bus(reason)
}

/// Local subscribers by channel, shared with the subscription's callback.
type Locals = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Bytes>>>>>;

/// A push bus on Redis.
pub struct RedisBus {
    urls: Vec<String>,
    cluster: bool,
    timeout: Duration,
    commands: Commands,
    subscription: Subscription,
    locals: Locals,
    publish: Script,
    join: Arc<Script>,
    /// This bus's answer channel.
    answers: String,
    pending: Pending,
    next_request: AtomicU64,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("cluster", &self.cluster)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisBus {
    /// A bus on the standalone Redis at `urls[0]`, or with `cluster` on the Redis Cluster of the
    /// seeds `urls`, every call under `timeout`. Its subscription and group members run on
    /// `tasks` until `shutdown`.
    pub async fn connect(
        urls: &[String],
        cluster: bool,
        timeout: Duration,
        (tasks, shutdown): (&TaskTracker, CancellationToken),
    ) -> Result<Self> {
        let commands = Commands::connect(urls, cluster, timeout, bus_err).await?;
        let locals: Locals = Arc::default();
        let delivering = locals.clone();
        let pending: Pending = Arc::default();
        let answered = pending.clone();
        let answers = format!("janus.answer.{:016x}", rand::random::<u64>());
        let own = answers.clone();
        let subscription = Subscription::spawn(
            "push bus",
            urls.to_vec(),
            timeout,
            [answers.clone()],
            (tasks, shutdown.clone()),
            move |channel, payload| {
                if channel == own {
                    if let Ok(answer) = BusAnswer::decode(payload) {
                        let waiting = answered.lock();
                        if let Some(tx) = { waiting }.remove(&answer.id) {
                            let _ = tx.send(());
                        }
                    }
                    return;
                }
                let mut locals = delivering.lock();
                if let Some(subscribers) = locals.get_mut(channel) {
                    subscribers.retain(|tx| !tx.is_closed());
                    let payload = Bytes::copy_from_slice(payload);
                    for tx in subscribers.iter() {
                        offer(channel, tx, &payload);
                    }
                }
            },
        );
        Ok(Self {
            urls: urls.to_vec(),
            cluster,
            timeout,
            commands,
            subscription,
            locals,
            publish: Script::new(PUBLISH),
            join: Arc::new(Script::new(JOIN)),
            answers,
            pending,
            next_request: AtomicU64::new(0),
            tasks: tasks.clone(),
            shutdown,
        })
    }

    /// Hands the messages of `channel` to the returned stream.
    async fn local(&self, channel: &str) -> BoxStream<'static, Bytes> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        self.locals
            .lock()
            .entry(channel.to_owned())
            .or_default()
            .push(tx);
        if !self.subscription.subscribe(channel).await {
            tracing::warn!(
                channel,
                "Redis has not confirmed the subscription yet; it is made when Redis answers"
            );
        }
        ReceiverStream::new(rx).boxed()
    }

    /// The messages of `subject` and the requests on it: a request answered as it is taken,
    /// or, with `held_later` and a sender waiting for [`Confirm::Held`], left to the receiver.
    async fn answering(&self, subject: &str, held_later: bool) -> BoxStream<'static, Incoming> {
        let published = self.local(subject).await.map(|payload| Incoming {
            payload,
            reply: None,
        });
        let commands = self.commands.clone();
        let requests = self
            .local(&request_channel(subject))
            .await
            .filter_map(move |bytes| {
                let commands = commands.clone();
                async move {
                    let request = BusRequest::decode(bytes).ok()?;
                    let (id, to) = (request.id, request.reply);
                    let reply = if held_later && request.held {
                        let reply: Reply =
                            Box::new(move |payload| answer(commands, to, id, payload).boxed());
                        Some(reply)
                    } else {
                        answer(commands, to, id, Bytes::new()).await;
                        None
                    };
                    Some(Incoming {
                        payload: Bytes::from(request.payload),
                        reply,
                    })
                }
            });
        futures_util::stream::select(published, requests).boxed()
    }

    /// Adds a member to `group` on `subject`: the group joins the subject before this returns
    /// (so a publish that follows reaches it; with Redis unreachable, the member joins as soon
    /// as Redis answers), then a member task pops its list on a connection of its own.
    async fn join_group(&self, subject: &str, group: &str) -> Result<BoxStream<'static, Bytes>> {
        let joined = match join(&self.commands, &self.join, subject, group).await {
            Ok(()) => Some(Instant::now()),
            Err(e) => {
                tracing::warn!(subject, group, error = %e, "cannot join the queue group yet; the member keeps trying");
                None
            }
        };
        // The pop waits up to POP_WAIT_SECS on the server before it answers.
        let popping = Commands::connect(
            &self.urls,
            self.cluster,
            self.timeout + Duration::from_secs(POP_WAIT_SECS),
            bus_err,
        )
        .await?;
        let (tx, rx) = mpsc::channel(MEMBER_QUEUE);
        let member = Member {
            joining: self.commands.clone(),
            popping,
            join: self.join.clone(),
            subject: subject.to_owned(),
            group: group.to_owned(),
        };
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = member.run(joined, tx) => {}
            }
        });
        Ok(ReceiverStream::new(rx).boxed())
    }
}

/// Answers request `id` with `payload` on the sender's channel `to`.
async fn answer(commands: Commands, to: String, id: u64, payload: Bytes) {
    let answer = BusAnswer {
        id,
        payload: payload.to_vec(),
    };
    let mut publish = redis::cmd("PUBLISH");
    publish.arg(&to).arg(answer.encode_to_vec());
    if let Err(e) = commands.query::<i64>(&publish, Resend::Never).await {
        tracing::warn!(error = %e, "could not answer a bus request");
    }
}

async fn join(commands: &Commands, script: &Script, subject: &str, group: &str) -> Result<()> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(groups_key(subject))
        .arg(group)
        .arg(GROUP_TTL.as_millis() as u64);
    // Joining again converges, so a join whose connection dropped is sent again.
    commands
        .script::<i64>(&invocation, Resend::IfDropped)
        .await
        .map(drop)
}

/// One member of a queue group.
struct Member {
    joining: Commands,
    popping: Commands,
    join: Arc<Script>,
    subject: String,
    group: String,
}

impl Member {
    /// Pops the group's list into `tx` and keeps the group joined (last `joined` then), until
    /// the subscriber is gone.
    async fn run(self, mut joined: Option<Instant>, tx: mpsc::Sender<Bytes>) {
        let list = group_list_key(&self.subject, &self.group);
        let mut pop = redis::cmd("BRPOP");
        pop.arg(&list).arg(POP_WAIT_SECS);
        loop {
            if joined.is_none_or(|at| at.elapsed() >= GROUP_TTL / 3) {
                match join(&self.joining, &self.join, &self.subject, &self.group).await {
                    Ok(()) => joined = Some(Instant::now()),
                    Err(e) => {
                        tracing::warn!(subject = %self.subject, group = %self.group, error = %e, "cannot renew queue-group membership")
                    }
                }
            }
            let popped = tokio::select! {
                _ = tx.closed() => return,
                popped = self.popping.query::<Option<(String, Vec<u8>)>>(&pop, Resend::Never) => popped,
            };
            match popped {
                Ok(Some((_, payload))) => {
                    if tx.send(Bytes::from(payload)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(subject = %self.subject, group = %self.group, error = %e, "queue-group pop failed");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

#[async_trait]
impl PushBus for RedisBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        let mut invocation = self.publish.prepare_invoke();
        invocation
            .key(groups_key(subject))
            .arg(subject)
            .arg(payload.as_ref())
            .arg(GROUP_QUEUE_CAP)
            .arg(GROUP_QUEUE_TTL.as_millis() as u64);
        let full: i64 = self.commands.script(&invocation, Resend::Never).await?;
        if full > 0 {
            tracing::warn!(
                subject,
                groups = full,
                "queue-group list full; message dropped for those groups"
            );
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<BoxStream<'static, Bytes>> {
        if let Some(group) = queue_group {
            return self.join_group(subject, group).await;
        }
        Ok(self
            .answering(subject, false)
            .await
            .map(|incoming| incoming.payload)
            .boxed())
    }

    async fn subscribe_answering(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<BoxStream<'static, Incoming>> {
        if let Some(group) = queue_group {
            let members = self.join_group(subject, group).await?;
            return Ok(members
                .map(|payload| Incoming {
                    payload,
                    reply: None,
                })
                .boxed());
        }
        Ok(self.answering(subject, true).await)
    }

    async fn send(&self, subject: &str, payload: Bytes, confirm: Confirm) -> Result<Sent> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, answered) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let forget = || {
            self.pending.lock().remove(&id);
        };
        let request = BusRequest {
            reply: self.answers.clone(),
            id,
            held: confirm == Confirm::Held,
            payload: payload.to_vec(),
        };
        let mut publish = redis::cmd("PUBLISH");
        publish
            .arg(request_channel(subject))
            .arg(request.encode_to_vec());
        let receivers = match self.commands.query::<i64>(&publish, Resend::Never).await {
            Ok(receivers) => receivers,
            Err(e) => {
                forget();
                return Err(e);
            }
        };
        if receivers == 0 && !self.cluster {
            forget();
            return Ok(Sent::NoSubscriber);
        }
        if let Ok(Ok(())) = tokio::time::timeout(SEND_TIMEOUT, answered).await {
            return Ok(Sent::Taken);
        }
        forget();
        tracing::warn!(subject, "no answer from the subscriber in time");
        Ok(Sent::Unanswered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subjects_keys_share_its_hash_tag() {
        assert_eq!(
            groups_key("janus.push.in"),
            "janus:bus:{janus.push.in}:groups"
        );
        assert_eq!(
            group_list_key("janus.push.in", "janus-brokers"),
            "janus:bus:{janus.push.in}:groups:janus-brokers"
        );
        assert_eq!(
            redis::cluster_routing::Slot::for_key(groups_key("s")),
            redis::cluster_routing::Slot::for_key(group_list_key("s", "g")),
        );
    }
}
