//! The in-process push bus of the standalone mode: NATS semantics (exact subjects, queue groups
//! that hand each message to one member, at-most-once delivery) inside one process.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Confirm, PushBus, SUBSCRIBER_QUEUE, Sent, offer};
use crate::error::Result;

struct Subscriber {
    queue_group: Option<String>,
    tx: mpsc::Sender<Bytes>,
}

/// Subjects to subscribers, in memory.
#[derive(Default)]
pub struct MemoryBus {
    subjects: Mutex<HashMap<String, (Vec<Subscriber>, usize)>>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBus")
    }
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PushBus for MemoryBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        let mut subjects = self.subjects.lock();
        let Some((subs, turn)) = subjects.get_mut(subject) else {
            return Ok(());
        };
        subs.retain(|s| !s.tx.is_closed());
        let mut groups_served: Vec<&str> = Vec::new();
        *turn = turn.wrapping_add(1);
        for sub in subs.iter() {
            match &sub.queue_group {
                None => offer(subject, &sub.tx, &payload),
                Some(group) if !groups_served.contains(&group.as_str()) => {
                    let members: Vec<&Subscriber> = subs
                        .iter()
                        .filter(|s| s.queue_group.as_deref() == Some(group))
                        .collect();
                    offer(subject, &members[*turn % members.len()].tx, &payload);
                    groups_served.push(group);
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    async fn send(&self, subject: &str, payload: Bytes, _: Confirm) -> Result<Sent> {
        let listened = {
            let mut subjects = self.subjects.lock();
            subjects.get_mut(subject).is_some_and(|(subs, _)| {
                subs.retain(|s| !s.tx.is_closed());
                !subs.is_empty()
            })
        };
        if !listened {
            return Ok(Sent::NoSubscriber);
        }
        self.publish(subject, payload).await.map(|()| Sent::Taken)
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<BoxStream<'static, Bytes>> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut subjects = self.subjects.lock();
        subjects
            .entry(subject.to_owned())
            .or_default()
            .0
            .push(Subscriber {
                queue_group: queue_group.map(str::to_owned),
                tx,
            });
        Ok(ReceiverStream::new(rx).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::conformance;

    #[tokio::test]
    async fn behaves_like_nats() {
        conformance::run(&MemoryBus::new()).await;
        conformance::send_tells(&MemoryBus::new()).await;
    }
}
