//! The NATS push bus (async-nats). Publishing is fire-and-forget like every NATS publish; the
//! client reconnects by itself and buffers a bounded amount while it does. A
//! [`PushBus::send`] is a request: every subscription of this bus answers a message that asks
//! for an answer as soon as it takes it (or, made with [`PushBus::subscribe_answering`] and
//! asked for [`Confirm::Held`], when its receiver says so), and the server answers "no
//! responders" for a subject nobody subscribes to.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

use super::{Confirm, Incoming, PushBus, Reply, SEND_TIMEOUT, Sent};
use crate::error::{Error, Result};

/// The header of a [`PushBus::send`] whose sender waits for [`Confirm::Held`].
const CONFIRM_HEADER: &str = "Janus-Confirm";
const CONFIRM_HELD: &str = "held";

/// A connected NATS client.
#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
}

fn bus_err(e: impl std::fmt::Display) -> Error {
    Error::Bus(e.to_string())
}

impl NatsBus {
    /// Connects to the NATS server(s) at `url` (comma-separated `nats://host:port` list).
    pub async fn connect(url: &str, name: &str) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(bus_err)?;
        Ok(Self { client })
    }

    /// Connects once, giving up after `timeout` with the reason (no background retries): for
    /// one-shot tools that must fail when the server cannot be reached.
    pub async fn connect_now(url: &str, name: &str, timeout: std::time::Duration) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(timeout)
            .connect(url)
            .await
            .map_err(|e| Error::Bus(format!("cannot connect to NATS at {url}: {e}")))?;
        Ok(Self { client })
    }

    /// Subscribes to `subject` (in `queue_group`, if any), the server having the interest
    /// before this returns.
    async fn listen(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<async_nats::Subscriber> {
        let subscriber = match queue_group {
            Some(group) => {
                self.client
                    .queue_subscribe(subject.to_owned(), group.to_owned())
                    .await
            }
            None => self.client.subscribe(subject.to_owned()).await,
        }
        .map_err(bus_err)?;
        self.client.flush().await.map_err(bus_err)?;
        Ok(subscriber)
    }

    /// The messages of `subscriber`, a request answered on receipt, or, with `held_later` and
    /// a sender waiting for [`Confirm::Held`], left to the receiver.
    fn answering(
        &self,
        subscriber: async_nats::Subscriber,
        held_later: bool,
    ) -> BoxStream<'static, Incoming> {
        let client = self.client.clone();
        subscriber
            .then(move |message| {
                let client = client.clone();
                async move {
                    let held = held_later
                        && message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(CONFIRM_HEADER))
                            .is_some_and(|v| v.as_str() == CONFIRM_HELD);
                    let reply = match message.reply {
                        Some(reply) if held => {
                            let answer: Reply = Box::new(move |payload| {
                                async move {
                                    let _ = client.publish(reply, payload).await;
                                }
                                .boxed()
                            });
                            Some(answer)
                        }
                        Some(reply) => {
                            let _ = client.publish(reply, Bytes::new()).await;
                            None
                        }
                        None => None,
                    };
                    Incoming {
                        payload: message.payload,
                        reply,
                    }
                }
            })
            .boxed()
    }

    /// Sends `payload` on `subject` as a request answered as `confirm` says, waiting up to
    /// `timeout`: the answer's payload, or what was found instead ([`Sent::NoSubscriber`],
    /// [`Sent::Unanswered`]).
    pub async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        confirm: Confirm,
        timeout: std::time::Duration,
    ) -> Result<std::result::Result<Bytes, Sent>> {
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if confirm == Confirm::Held {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(CONFIRM_HEADER, CONFIRM_HELD);
            request = request.headers(headers);
        }
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(answer) => Ok(Ok(answer.payload)),
            Err(e) => match e.kind() {
                async_nats::RequestErrorKind::NoResponders => Ok(Err(Sent::NoSubscriber)),
                async_nats::RequestErrorKind::TimedOut => Ok(Err(Sent::Unanswered)),
                _ => Err(bus_err(e)),
            },
        }
    }

    /// Waits until the server has every message published so far, for at most `timeout`.
    pub async fn flush(&self, timeout: std::time::Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.client.flush()).await {
            Ok(flushed) => flushed.map_err(bus_err),
            Err(_) => Err(Error::Bus(format!(
                "NATS flush not acknowledged within {timeout:?}"
            ))),
        }
    }
}

#[async_trait]
impl PushBus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        self.client
            .publish(subject.to_owned(), payload)
            .await
            .map_err(bus_err)
    }

    async fn send(&self, subject: &str, payload: Bytes, confirm: Confirm) -> Result<Sent> {
        let answer = self
            .request(subject, payload, confirm, SEND_TIMEOUT)
            .await?;
        if answer == Err(Sent::Unanswered) {
            tracing::warn!(subject, "no answer from the subscriber in time");
        }
        Ok(answer.err().unwrap_or(Sent::Taken))
    }

    async fn subscribe_answering(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<BoxStream<'static, Incoming>> {
        Ok(self.answering(self.listen(subject, queue_group).await?, true))
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<BoxStream<'static, Bytes>> {
        let subscriber = self.listen(subject, queue_group).await?;
        Ok(self
            .answering(subscriber, false)
            .map(|incoming| incoming.payload)
            .boxed())
    }
}
