//! The edge end of the broker links: one long-lived `EdgeLink/Link` stream per broker, frames
//! of all sessions multiplexed on it in batches, reconnected when it drops. Sessions choose
//! their broker by rendezvous (highest-random-weight) hashing of the uid over the brokers that
//! are up, so every edge picks the same broker for a player without talking to the others.
//!
//! Queues: frames to a broker wait in one bounded queue per link; a full queue makes the
//! sending session wait, which stops it reading from its client (backpressure, never growth).
//! Frames from a broker go to each session's bounded downlink queue; a session whose queue is
//! full is a slow consumer and is disconnected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use janus_ops::internal_tls::{self, InternalTls, Role};
use janus_proto::janus::internal::LINK_MAX_MESSAGE;
use janus_proto::janus::internal::v1::edge_link_client::EdgeLinkClient;
use janus_proto::janus::internal::v1::{
    BrokerFrame, EdgeBatch, EdgeFrame, EdgeHello, ResumeGranted, SessionBacklog, broker_frame,
    edge_frame,
};
use janus_proto::packet::Packet;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::BrokersConfig;
use crate::drain::{self, Phase};
use crate::outbox;

/// What a broker tells one session. Every variant is at most a pointer wide: queued items are
/// memory held by the session's queue.
#[derive(Debug)]
#[expect(
    clippy::box_collection,
    reason = "a boxed string keeps the variant pointer-wide, and every queued item is memory"
)]
pub(crate) enum Downlink {
    /// The broker took the session.
    Accepted,
    /// The broker refused the session, saying why.
    Rejected(Box<String>),
    /// A reply or push for the client, shared by every session a multicast goes to.
    Packet(Arc<Packet>),
    /// The broker ends the session with SCServerLogout (code, reason).
    Kick(Box<(i32, String)>),
    /// The link to the session's broker dropped; the session should re-attach elsewhere.
    LinkLost,
    /// The broker granted the resume this connection asked for (PROTOCOL.md §13.3).
    Granted(Box<ResumeGranted>),
    /// The broker refused it, with a close reason.
    Refused(Box<String>),
    /// The session continues over a connection at another edge: close this one quietly.
    Release,
    /// The rendezvous hash picks another broker for the session now: move it there.
    Move,
    /// The broker the session is moving away from has queued its last packet for it.
    HandedOver,
}

/// A session's receiving end as the link sees it.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    /// Downlink queue of the session.
    pub tx: outbox::Sender<Downlink>,
    /// Cancelled when the downlink queue overflowed: the session must close as a slow consumer.
    pub overflow: CancellationToken,
    /// The session's player, whose rendezvous pick says which broker it belongs at.
    pub uid: i64,
}

/// The link to one broker.
#[derive(Debug)]
pub(crate) struct BrokerLink {
    /// The broker's gRPC endpoint.
    pub endpoint: String,
    up: watch::Sender<bool>,
    sender: Mutex<Option<mpsc::Sender<EdgeFrame>>>,
    sessions: Mutex<HashMap<u64, SessionSlot>>,
    /// Cancelled when the broker leaves the set (its sessions re-attach elsewhere).
    removed: CancellationToken,
}

impl BrokerLink {
    /// Whether the link is up.
    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Routes frames for `session_id` to `slot`.
    pub(crate) fn attach(&self, session_id: u64, slot: SessionSlot) {
        lock(&self.sessions).insert(session_id, slot);
    }

    /// Stops routing frames for `session_id`.
    pub(crate) fn detach(&self, session_id: u64) {
        lock(&self.sessions).remove(&session_id);
    }

    /// Sessions attached to this link.
    pub(crate) fn sessions(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Queues `frame` for the broker, waiting for room; false if the link is down. The frame
    /// comes boxed and the wait (a full link queue) is the rare path and runs boxed: this future
    /// lives inside every session's task, so its size is memory per session.
    /// A closed queue means the link's stream is gone even if its task has not noticed yet: the
    /// link is marked down at once, so the session's re-attach does not pick it again.
    pub(crate) async fn send(&self, frame: Box<EdgeFrame>) -> bool {
        let sender = lock(&self.sender).clone();
        let Some(tx) = sender else { return false };
        let sent = match tx.try_send(*frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(frame)) => Box::pin(tx.send(frame)).await.is_ok(),
        };
        if !sent {
            self.closed(&tx);
        }
        sent
    }

    /// Tells the broker, without waiting, that the client of `session_id` is backlogged or has
    /// caught up (PROTOCOL.md §16); false when there was no room on the link (told again
    /// later).
    pub(crate) fn backlog(&self, session_id: u64, backlogged: bool) -> bool {
        let sender = lock(&self.sender).clone();
        sender.is_some_and(|tx| tx.try_send(backlog_frame(session_id, backlogged)).is_ok())
    }

    /// The queue `tx` was found closed: the link is lost, unless it has already been replaced
    /// by a newer connection.
    fn closed(&self, tx: &mpsc::Sender<EdgeFrame>) {
        let current = lock(&self.sender)
            .as_ref()
            .is_some_and(|now| now.same_channel(tx));
        if current {
            tracing::warn!(broker = %self.endpoint, "broker link queue closed");
            self.lost();
        }
    }

    fn dispatch(&self, frame: BrokerFrame) {
        let Some(kind) = frame.kind else { return };
        match kind {
            broker_frame::Kind::Accepted(a) => self.to_session(a.session_id, Downlink::Accepted),
            broker_frame::Kind::Rejected(r) => {
                self.to_session(r.session_id, Downlink::Rejected(Box::new(r.reason)))
            }
            broker_frame::Kind::Deliver(d) => {
                let Some(packet) = d.packet else { return };
                let packet = Arc::new(packet);
                for id in d.session_ids {
                    self.to_session(id, Downlink::Packet(packet.clone()));
                }
            }
            broker_frame::Kind::Kick(k) => {
                for id in k.session_ids {
                    self.to_session(
                        id,
                        Downlink::Kick(Box::new((k.logout_code, k.reason.clone()))),
                    );
                }
            }
            broker_frame::Kind::Granted(g) => {
                self.to_session(g.session_id, Downlink::Granted(Box::new(g)))
            }
            broker_frame::Kind::Refused(r) => {
                self.to_session(r.session_id, Downlink::Refused(Box::new(r.reason)))
            }
            broker_frame::Kind::Release(r) => {
                for id in r.session_ids {
                    self.to_session(id, Downlink::Release);
                }
            }
            broker_frame::Kind::HandedOver(h) => {
                self.to_session(h.session_id, Downlink::HandedOver)
            }
        }
    }

    fn to_session(&self, session_id: u64, down: Downlink) {
        let mut sessions = lock(&self.sessions);
        let Some(slot) = sessions.get(&session_id) else {
            return;
        };
        match slot.tx.try_send(down, || self.backlog(session_id, true)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                slot.overflow.cancel();
                sessions.remove(&session_id);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                sessions.remove(&session_id);
            }
        }
    }

    /// Tells session `id` to move to the broker the hash picks now, if it is still here and its
    /// queue has room (a full one is a slow consumer the move can wait for).
    fn nudge(&self, session_id: u64) {
        if let Some(slot) = lock(&self.sessions).get(&session_id) {
            let _ = slot
                .tx
                .try_send(Downlink::Move, || self.backlog(session_id, true));
        }
    }

    fn lost(&self) {
        *lock(&self.sender) = None;
        self.up.send_replace(false);
        for (_, slot) in lock(&self.sessions).drain() {
            // A closed queue is a session already gone or already moved; only a full one is a
            // slow consumer.
            if let Err(mpsc::error::TrySendError::Full(_)) =
                slot.tx.try_send(Downlink::LinkLost, || false)
            {
                slot.overflow.cancel();
            }
        }
    }
}

/// The frame telling a broker that the client of `session_id` is backlogged or has caught up.
pub(crate) fn backlog_frame(session_id: u64, backlogged: bool) -> EdgeFrame {
    EdgeFrame {
        session_id,
        kind: Some(edge_frame::Kind::Backlog(SessionBacklog { backlogged })),
    }
}

fn lock<T>(m: &Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    m.lock()
}

/// The links to every known broker. The set follows discovery: brokers that appear get a link,
/// brokers that leave lose theirs and their sessions re-attach.
#[derive(Debug)]
pub(crate) struct Links {
    links: RwLock<Vec<Arc<BrokerLink>>>,
    config: BrokersConfig,
    edge_id: String,
    tasks: TaskTracker,
    /// Cancelled once the edge has stopped; each link's `removed` is a child.
    stop: CancellationToken,
    /// The edge's phase: the batches say `draining` once it drains.
    phase: watch::Receiver<Phase>,
    /// Bumped whenever a link comes up, so waiters can re-check.
    changed: watch::Sender<u64>,
    /// The material of TLS links (`[internal_tls]`), when on.
    tls: Option<InternalTls>,
}

impl Links {
    /// Links to the configured endpoints, run on `tasks` until the edge whose `phase` they
    /// follow has stopped; every link tells its broker once the edge drains.
    pub(crate) fn start(
        config: &BrokersConfig,
        edge_id: &str,
        tasks: &TaskTracker,
        phase: watch::Receiver<Phase>,
        tls: Option<InternalTls>,
    ) -> Arc<Self> {
        let stop = CancellationToken::new();
        tasks.spawn({
            let (stop, phase) = (stop.clone(), phase.clone());
            async move {
                drain::stopped(phase).await;
                stop.cancel();
            }
        });
        let links = Arc::new(Self {
            links: RwLock::new(Vec::new()),
            config: config.clone(),
            edge_id: edge_id.to_owned(),
            tasks: tasks.clone(),
            stop,
            phase,
            changed: watch::channel(0).0,
            tls,
        });
        links.set_endpoints(&config.endpoints);
        if !config.rebalance_spread_secs.is_zero() {
            tasks.spawn(rebalance(links.clone()));
        }
        links
    }

    /// Sessions attached to a broker other than the one the hash picks for them now.
    fn misplaced(&self) -> Vec<(Arc<BrokerLink>, u64)> {
        let all = self.snapshot();
        let up: Vec<&Arc<BrokerLink>> = all.iter().filter(|l| l.is_up()).collect();
        let mut moves = Vec::new();
        for link in &up {
            for (id, slot) in lock(&link.sessions).iter() {
                let pick = up
                    .iter()
                    .max_by_key(|l| rendezvous_score(slot.uid, &l.endpoint));
                if pick.is_some_and(|p| !Arc::ptr_eq(p, link)) {
                    moves.push(((*link).clone(), *id));
                }
            }
        }
        moves
    }

    /// Makes the set of brokers exactly `endpoints`.
    pub(crate) fn set_endpoints(self: &Arc<Self>, endpoints: &[String]) {
        let mut links = self.links.write();
        links.retain(|link| {
            let keep = endpoints.contains(&link.endpoint);
            if !keep {
                tracing::info!(broker = %link.endpoint, "broker left");
                link.removed.cancel();
            }
            keep
        });
        for endpoint in endpoints {
            if links.iter().any(|l| l.endpoint == *endpoint) {
                continue;
            }
            let link = Arc::new(BrokerLink {
                endpoint: endpoint.clone(),
                up: watch::channel(false).0,
                sender: Mutex::new(None),
                sessions: Mutex::new(HashMap::new()),
                removed: self.stop.child_token(),
            });
            self.tasks.spawn(maintain(link.clone(), self.clone()));
            links.push(link);
        }
    }

    fn snapshot(&self) -> Vec<Arc<BrokerLink>> {
        self.links.read().clone()
    }

    /// The broker for `uid`: the live one with the highest rendezvous score.
    pub(crate) fn pick(&self, uid: i64) -> Option<Arc<BrokerLink>> {
        self.snapshot()
            .into_iter()
            .filter(|l| l.is_up())
            .max_by_key(|l| rendezvous_score(uid, &l.endpoint))
    }

    /// The link to the broker at `endpoint`, if it is up.
    pub(crate) fn up_at(&self, endpoint: &str) -> Option<Arc<BrokerLink>> {
        self.snapshot()
            .into_iter()
            .find(|l| l.endpoint == endpoint && l.is_up())
    }

    /// Whether at least one broker is reachable.
    pub(crate) fn any_up(&self) -> bool {
        self.snapshot().iter().any(|l| l.is_up())
    }

    /// Cancelled once the edge has stopped.
    pub(crate) fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until at least one broker is reachable or `timeout` passes.
    pub(crate) async fn wait_up(&self, timeout: Duration) -> bool {
        let mut changed = self.changed.subscribe();
        tokio::time::timeout(timeout, async {
            while !self.any_up() {
                if changed.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false)
    }

    /// Every link, for stats.
    pub(crate) fn all(&self) -> Vec<Arc<BrokerLink>> {
        self.snapshot()
    }
}

/// The rendezvous weight of `endpoint` for `uid`: a fixed 64-bit mix (FNV-1a of the endpoint,
/// then splitmix64 with the uid), identical on every edge and every build.
pub fn rendezvous_score(uid: i64, endpoint: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in endpoint.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ (uid as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How long the set of live brokers must stay unchanged before sessions move: brokers of one
/// scale-out come up together, and a session should move once, not once per broker.
const REBALANCE_SETTLE: Duration = Duration::from_secs(1);

/// Moves sessions, after a broker came up, to the broker the hash picks now (PROTOCOL.md
/// §13.5): each misplaced session is told to move at its own moment of the spread, so the new
/// broker takes its share gradually. A change of the set meanwhile starts a new plan.
async fn rebalance(links: Arc<Links>) {
    let spread = links.config.rebalance_spread_secs;
    let mut changed = links.changed.subscribe();
    'plans: loop {
        tokio::select! {
            up = changed.changed() => if up.is_err() { return },
            () = links.stop.cancelled() => return,
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(REBALANCE_SETTLE) => {}
                () = links.stop.cancelled() => return,
            }
            if !changed.has_changed().unwrap_or(false) {
                break;
            }
            changed.borrow_and_update();
        }
        let moves = links.misplaced();
        if moves.is_empty() {
            continue;
        }
        tracing::info!(
            sessions = moves.len(),
            ?spread,
            "moving sessions to the brokers the hash picks now"
        );
        let gap = spread / u32::try_from(moves.len()).unwrap_or(u32::MAX);
        let mut next = tokio::time::Instant::now();
        for (link, id) in moves {
            if changed.has_changed().unwrap_or(false) {
                continue 'plans;
            }
            link.nudge(id);
            next += gap;
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = links.stop.cancelled() => return,
            }
        }
    }
}

async fn maintain(link: Arc<BrokerLink>, links: Arc<Links>) {
    let retry = links.config.reconnect_ms;
    let stop = link.removed.clone();
    while !stop.is_cancelled() {
        match connect(&link, &links).await {
            Ok((mut inbound, received)) => {
                tracing::info!(broker = %link.endpoint, "broker link up");
                links.changed.send_modify(|n| *n += 1);
                loop {
                    tokio::select! {
                        message = inbound.message() => match message {
                            Ok(Some(batch)) => {
                                let frames = batch.frames.len() as u64;
                                batch.frames.into_iter().for_each(|f| link.dispatch(f));
                                for id in batch.released {
                                    link.to_session(id, Downlink::Release);
                                }
                                // Told to the broker with the next batch (PROTOCOL.md §13.5).
                                received.send_modify(|n| *n += frames);
                                if batch.draining {
                                    tracing::info!(broker = %link.endpoint, "broker is draining; moving its sessions");
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(status) => {
                                tracing::warn!(broker = %link.endpoint, %status, "broker link failed");
                                break;
                            }
                        },
                        _ = stop.cancelled() => break,
                    }
                }
                link.lost();
                tracing::warn!(broker = %link.endpoint, "broker link down");
            }
            Err(reason) => {
                tracing::debug!(broker = %link.endpoint, %reason, "broker unreachable");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// The broker's half of a link, and the count of its frames read so far (what the edge's
/// batches tell it, `received_frames`).
type Inbound = (
    tonic::Streaming<janus_proto::janus::internal::v1::BrokerBatch>,
    watch::Sender<u64>,
);

async fn connect(link: &BrokerLink, links: &Links) -> Result<Inbound, String> {
    let (config, edge_id) = (&links.config, &links.edge_id);
    let keepalive = config.keepalive_ms;
    let channel = internal_tls::channel(&link.endpoint, links.tls.as_ref(), Role::Broker, |e| {
        e.connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(keepalive)
            .keep_alive_timeout(keepalive)
    })
    .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel(config.link_queue);
    let hello = EdgeBatch {
        hello: Some(EdgeHello {
            edge_id: edge_id.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }),
        frames: Vec::new(),
        draining: false,
        received_frames: 0,
    };
    let (received, read) = watch::channel(0);
    let outbound = futures_util::stream::once(async { hello }).chain(batches(
        rx,
        config.max_batch,
        links.phase.clone(),
        read,
    ));
    let inbound = EdgeLinkClient::new(channel)
        .max_decoding_message_size(LINK_MAX_MESSAGE)
        .max_encoding_message_size(LINK_MAX_MESSAGE)
        .link(outbound)
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    *lock(&link.sender) = Some(tx);
    link.up.send_replace(true);
    Ok((inbound, received))
}

/// Batches queued frames: waits for one, then takes whatever else is ready. The first batch
/// once the edge drains says so (`draining`), with or without frames; the later ones do not
/// repeat it. Every batch says how many broker frames were read so far, and a batch goes out
/// for that alone when the count grows and no frame is waiting.
fn batches(
    rx: mpsc::Receiver<EdgeFrame>,
    max: usize,
    phase: watch::Receiver<Phase>,
    read: watch::Receiver<u64>,
) -> impl futures_util::Stream<Item = EdgeBatch> {
    let state = (rx, Some(phase), read);
    futures_util::stream::unfold(state, move |(mut rx, mut phase, mut read)| async move {
        let mut batch = EdgeBatch::default();
        let drains = async {
            match &mut phase {
                // An error means the edge is gone, which is as good as draining.
                Some(phase) => drop(phase.wait_for(|p| *p != Phase::Serving).await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = drains => batch.draining = true,
            frame = rx.recv() => batch.frames.push(frame?),
            changed = read.changed() => changed.ok()?,
        }
        if batch.draining {
            phase = None;
        }
        while batch.frames.len() < max {
            match rx.try_recv() {
                Ok(frame) => batch.frames.push(frame),
                Err(_) => break,
            }
        }
        batch.received_frames = *read.borrow_and_update();
        Some((batch, (rx, phase, read)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_uids_and_moves_only_the_lost_brokers_share() {
        let brokers = ["10.0.0.1:17100", "10.0.0.2:17100", "10.0.0.3:17100"];
        fn pick(uid: i64, set: &[&'static str]) -> &'static str {
            set.iter()
                .copied()
                .max_by_key(|b| rendezvous_score(uid, b))
                .unwrap()
        }
        let mut counts = HashMap::new();
        let mut moved = 0;
        for uid in 0..3000 {
            let before = pick(uid, &brokers);
            *counts.entry(before).or_insert(0) += 1;
            let after = pick(uid, &brokers[..2]);
            if before != brokers[2] {
                assert_eq!(before, after, "uid {uid} moved though its broker stayed");
            } else {
                moved += 1;
            }
        }
        for (broker, n) in counts {
            assert!((800..1200).contains(&n), "{broker} got {n} of 3000");
        }
        assert!(moved > 0);
    }

    fn link_with_queue() -> (BrokerLink, mpsc::Receiver<EdgeFrame>) {
        let (tx, rx) = mpsc::channel(4);
        let link = BrokerLink {
            endpoint: "10.0.0.1:17100".into(),
            up: watch::channel(true).0,
            sender: Mutex::new(Some(tx)),
            sessions: Mutex::new(HashMap::new()),
            removed: CancellationToken::new(),
        };
        (link, rx)
    }

    #[tokio::test]
    async fn every_batch_tells_the_broker_how_many_of_its_frames_were_read() {
        let (tx, rx) = mpsc::channel(8);
        let (_phase_tx, phase) = watch::channel(Phase::Serving);
        let (read_tx, read) = watch::channel(0);
        let mut out = Box::pin(batches(rx, 8, phase, read));
        tx.send(EdgeFrame::default()).await.unwrap();
        let first = out.next().await.unwrap();
        assert_eq!((first.frames.len(), first.received_frames), (1, 0));
        // Frames read from the broker and nothing to send: a batch goes out for the count.
        read_tx.send_modify(|n| *n += 3);
        let ack = out.next().await.unwrap();
        assert_eq!((ack.frames.len(), ack.received_frames), (0, 3));
        read_tx.send_modify(|n| *n += 2);
        tx.send(EdgeFrame::default()).await.unwrap();
        let next = out.next().await.unwrap();
        assert_eq!(
            next.received_frames, 5,
            "the latest count rides with frames too"
        );
    }

    #[tokio::test]
    async fn a_send_that_finds_the_link_gone_marks_it_down_and_moves_its_sessions() {
        let (link, rx) = link_with_queue();
        let (tx, mut down) = outbox::outbox(4, 4);
        let overflow = CancellationToken::new();
        link.attach(
            7,
            SessionSlot {
                tx,
                overflow: overflow.clone(),
                uid: 1,
            },
        );
        assert!(link.send(Box::default()).await);
        drop(rx);
        assert!(!link.send(Box::default()).await);
        assert!(!link.is_up(), "picked no more");
        assert!(matches!(down.recv().await, Some(Downlink::LinkLost)));
        assert!(!overflow.is_cancelled());
    }

    #[tokio::test]
    async fn a_stale_queue_does_not_take_down_the_link_that_replaced_it() {
        let (link, rx) = link_with_queue();
        let stale = lock(&link.sender).clone().unwrap();
        drop(rx);
        let (fresh, _fresh_rx) = mpsc::channel(4);
        *lock(&link.sender) = Some(fresh);
        link.closed(&stale);
        assert!(link.is_up());
        assert!(link.send(Box::default()).await);
    }

    #[test]
    fn a_session_that_already_moved_is_not_taken_for_a_slow_consumer() {
        let (link, _rx) = link_with_queue();
        let (tx, down) = outbox::outbox(4, 4);
        let overflow = CancellationToken::new();
        link.attach(
            7,
            SessionSlot {
                tx,
                overflow: overflow.clone(),
                uid: 1,
            },
        );
        drop(down);
        link.lost();
        assert!(!overflow.is_cancelled());
    }
}
