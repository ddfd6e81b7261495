//! One Redis SUBSCRIBE connection carrying a set of channels that only grows: every message of
//! every channel goes to one callback. Lost (an error, the server closing it, or a PING left
//! unanswered: a connection that died silently would otherwise look like quiet channels), the
//! connection is made again through the next URL and every channel is subscribed again, until
//! shutdown. Both the Redis push bus and go-pantheon's Redis push channels run on it.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pause between attempts to (re)subscribe.
const RETRY: Duration = Duration::from_secs(1);
/// How often the connection is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Channel additions waiting for the connection task; when full, [`Subscription::subscribe`]
/// waits (additions are a handful per broker, made at start).
const ADDITIONS: usize = 16;

/// A channel to add, and who waits to hear that it is subscribed.
struct Addition {
    channel: String,
    subscribed: oneshot::Sender<()>,
}

/// The handle of a running subscription: adds channels to it.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    additions: mpsc::Sender<Addition>,
    timeout: Duration,
}

/// What the connection task keeps across connections.
struct Wanted {
    channels: BTreeSet<String>,
    /// Additions not yet confirmed by a live connection.
    waiting: Vec<oneshot::Sender<()>>,
}

impl Wanted {
    fn add(&mut self, addition: Addition) {
        self.channels.insert(addition.channel);
        self.waiting.push(addition.subscribed);
    }
}

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Subscription {
    /// Starts keeping `channels` subscribed through the servers at `urls` (tried in turn; any
    /// node of a cluster carries every publication), every call under `timeout`, handing each
    /// message to `deliver(channel, payload)` on the connection's task (so it must not block),
    /// until `shutdown`. `what` names the subscription in logs.
    pub(crate) fn spawn(
        what: &'static str,
        urls: Vec<String>,
        timeout: Duration,
        channels: impl IntoIterator<Item = String>,
        (tasks, shutdown): (&TaskTracker, CancellationToken),
        mut deliver: impl FnMut(&str, &[u8]) + Send + 'static,
    ) -> Self {
        let (tx, mut additions) = mpsc::channel(ADDITIONS);
        let mut wanted = Wanted {
            channels: channels.into_iter().collect(),
            waiting: Vec::new(),
        };
        tasks.spawn(async move {
            for url in urls.iter().cycle() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = subscribed(what, url, timeout, &mut wanted, &mut additions, &mut deliver) => {
                        tracing::warn!(what, %url, error = %e, "Redis subscription lost; subscribing again");
                    }
                }
                let pause = tokio::time::sleep(RETRY);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = &mut pause => break,
                        Some(addition) = additions.recv() => wanted.add(addition),
                    }
                }
            }
        });
        Self {
            additions: tx,
            timeout,
        }
    }

    /// Adds `channel`. Returns true once it is subscribed on the live connection; false if no
    /// connection confirmed it within a retry and a deadline (Redis is unreachable: it is
    /// subscribed with the next connection) or the subscription has stopped.
    pub(crate) async fn subscribe(&self, channel: &str) -> bool {
        let (subscribed, confirmed) = oneshot::channel();
        let addition = Addition {
            channel: channel.to_owned(),
            subscribed,
        };
        if self.additions.send(addition).await.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(RETRY + self.timeout, confirmed).await,
            Ok(Ok(()))
        )
    }
}

/// Subscribes through `url` to every wanted channel and hands messages to `deliver` until the
/// connection fails; returns why.
async fn subscribed(
    what: &str,
    url: &str,
    timeout: Duration,
    wanted: &mut Wanted,
    additions: &mut mpsc::Receiver<Addition>,
    deliver: &mut (impl FnMut(&str, &[u8]) + Send),
) -> String {
    let result: Result<std::convert::Infallible, String> = async {
        let client = redis::Client::open(url).map_err(fail)?;
        let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
            .await
            .map_err(|_| fail("timed out connecting"))?
            .map_err(fail)?;
        let (mut sink, mut stream) = pubsub.split();
        if !wanted.channels.is_empty() {
            let channels: Vec<&str> = wanted.channels.iter().map(String::as_str).collect();
            tokio::time::timeout(timeout, sink.subscribe(&channels))
                .await
                .map_err(|_| fail("timed out subscribing"))?
                .map_err(fail)?;
        }
        for confirmed in wanted.waiting.drain(..) {
            let _ = confirmed.send(());
        }
        tracing::info!(what, %url, channels = ?wanted.channels, "subscribed to Redis channels");
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let message = message.ok_or_else(|| fail("connection closed"))?;
                    deliver(message.get_channel_name(), message.get_payload_bytes());
                }
                Some(addition) = additions.recv() => {
                    let channel = addition.channel.clone();
                    let new = !wanted.channels.contains(&channel);
                    wanted.add(addition);
                    if new {
                        tokio::time::timeout(timeout, sink.subscribe(&channel))
                            .await
                            .map_err(|_| fail("timed out subscribing"))?
                            .map_err(fail)?;
                    }
                    for confirmed in wanted.waiting.drain(..) {
                        let _ = confirmed.send(());
                    }
                }
                _ = ping.tick() => {
                    tokio::time::timeout(timeout, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| fail("PING timed out"))?
                        .map_err(fail)?;
                }
            }
        }
    }
    .await;
    let Err(e) = result;
    e
}
