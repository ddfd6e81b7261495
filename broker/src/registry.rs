//! This broker's live sessions: at most one per uid (a newer login replaces the older, which is
//! kicked), indexed so pushes find them by uid and broadcasts by (color, sid). Owns no I/O; the
//! edge handle it stores is how frames reach a session's edge.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use janus_proto::janus::internal::v1::BrokerFrame;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::continuity::Continuity;
use crate::session::Inbound;

/// Frames this broker may have waiting for one edge. Replies wait for room (backpressure onto
/// the game service's stream); pushes that find it full are dropped and counted.
pub const EDGE_QUEUE: usize = 8192;

/// The sending half of one edge link.
#[derive(Debug)]
pub struct EdgeHandle {
    /// The edge's id, from its hello.
    pub edge_id: String,
    /// Frames to that edge, batched by the link's writer; every send goes through
    /// [`EdgeHandle::queued`]'s count.
    tx: mpsc::Sender<BrokerFrame>,
    /// Frames queued so far (taken and bumped in the same step as the send, so a frame's
    /// count is its place on the link).
    queued: Mutex<u64>,
    /// Frames the edge says it has read (`EdgeBatch.received_frames`).
    received: watch::Sender<u64>,
    /// Held while a server packet is counted and queued for a session on this edge, so the
    /// edge sees each session's packets in the order they were counted (see `continuity`).
    order: Mutex<()>,
    /// Sessions parked because this edge's queue was full, whose connections the link's
    /// writer releases with its next batch.
    released: Mutex<Vec<u64>>,
}

impl EdgeHandle {
    /// The handle of an edge whose frames go to `tx`.
    pub fn new(edge_id: String, tx: mpsc::Sender<BrokerFrame>) -> Self {
        Self {
            edge_id,
            tx,
            queued: Mutex::new(0),
            received: watch::channel(0).0,
            order: Mutex::new(()),
            released: Mutex::new(Vec::new()),
        }
    }

    fn queue(&self, send: impl FnOnce()) {
        let mut queued = self.queued.lock();
        send();
        *queued += 1;
    }

    /// Queues `frame`, waiting for room; false when the link is gone.
    pub async fn send(&self, frame: BrokerFrame) -> bool {
        match self.reserve().await {
            Some(permit) => {
                permit.send(frame);
                true
            }
            None => false,
        }
    }

    /// Queues `frame` if there is room now; false when full or gone.
    pub fn try_send(&self, frame: BrokerFrame) -> bool {
        self.try_reserve().is_some_and(|permit| {
            permit.send(frame);
            true
        })
    }

    /// Room for one frame, waiting for it; `None` when the link is gone.
    pub async fn reserve(&self) -> Option<Permit<'_>> {
        let permit = self.tx.reserve().await.ok()?;
        Some(Permit { edge: self, permit })
    }

    /// Room for one frame if there is some now.
    pub fn try_reserve(&self) -> Option<Permit<'_>> {
        let permit = self.tx.try_reserve().ok()?;
        Some(Permit { edge: self, permit })
    }

    /// How many frames were queued so far: a frame queued before this call is among them.
    pub fn queued(&self) -> u64 {
        *self.queued.lock()
    }

    /// The edge read `frames` frames of this link so far.
    pub fn edge_received(&self, frames: u64) {
        self.received.send_if_modified(|n| {
            let more = frames > *n;
            *n = (*n).max(frames);
            more
        });
    }

    /// Waits until the edge has read the first `frames` frames of this link (so it holds every
    /// packet among them), for at most `wait`: false when it did not, or the link went away.
    pub async fn edge_holds(&self, frames: u64, wait: std::time::Duration) -> bool {
        let mut received = self.received.subscribe();
        let read = async { received.wait_for(|n| *n >= frames).await.is_ok() };
        let held = tokio::select! {
            read = tokio::time::timeout(wait, read) => read.unwrap_or(false),
            () = self.tx.closed() => false,
        };
        held || *self.received.borrow() >= frames
    }
    /// Session `id` here was parked by the broker: release its connection with the next batch.
    pub fn release_later(&self, id: u64) {
        self.released.lock().push(id);
    }

    /// The sessions to release now.
    pub fn take_released(&self) -> Vec<u64> {
        std::mem::take(&mut *self.released.lock())
    }

    /// The order lock (see [`EdgeHandle::order`]'s field).
    pub fn order(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.order.lock()
    }
}

/// Room for one frame on an edge link; sending through it counts the frame.
#[derive(Debug)]
pub struct Permit<'a> {
    edge: &'a EdgeHandle,
    permit: mpsc::Permit<'a, BrokerFrame>,
}

impl Permit<'_> {
    /// Queues `frame`.
    pub fn send(self, frame: BrokerFrame) {
        let Self { edge, permit } = self;
        edge.queue(|| permit.send(frame));
    }
}

/// What a session's actor is told by others.
#[derive(Debug)]
pub enum Command {
    /// End the session with SCServerLogout `code` (another login, admin kick).
    Kick {
        /// SCServerLogout code.
        code: i32,
        /// Why, for logs.
        reason: String,
    },
    /// The broker at `by` now holds the session, from server packet `after` on: end this copy
    /// without a logout, forwarding what it kept after that (PROTOCOL.md §13.5).
    Adopted {
        /// The adopting broker's endpoint.
        by: String,
        /// The adopter's packet count when it took the session.
        after: u64,
    },
}

/// One live session as the rest of the broker sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where the session is and what its resume needs; every packet for it goes through this.
    pub continuity: Arc<Continuity>,
    /// The session actor's inbox, for the edge link that takes a resume of it.
    pub inbox: mpsc::Sender<Inbound>,
    /// Colour, for broadcasts.
    pub color: String,
    /// Server (zone) id, for broadcasts.
    pub sid: i64,
    /// The session actor's command inbox.
    pub commands: mpsc::Sender<Box<Command>>,
    /// The count of broadcasts delivered before the session was registered (set by
    /// [`Registry::insert`]; a broadcast [`Registry::matching`] counts higher reached it).
    pub registered: u64,
}

/// Sessions by uid.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<Sessions>,
    /// Broadcasts delivered ([`Registry::matching`]), counted under the lock of `sessions`.
    broadcasts: AtomicU64,
}

#[derive(Debug, Default)]
struct Sessions {
    by_uid: HashMap<i64, Entry>,
    /// Copies another broker adopted, for the instant they still forward to it (PROTOCOL.md
    /// §13.5): pushes follow the route to the adopter, broadcasts still reach them here.
    leaving: HashMap<i64, Entry>,
}

impl Registry {
    fn map(&self) -> parking_lot::MutexGuard<'_, Sessions> {
        self.sessions.lock()
    }

    /// Makes `entry` the session of `uid`; returns the one it replaced, and the count of
    /// broadcasts delivered before it was there (a broadcast [`Registry::matching`] counts
    /// higher reached it).
    pub fn insert(&self, uid: i64, mut entry: Entry) -> (Option<Entry>, u64) {
        let mut map = self.map();
        entry.registered = self.broadcasts.load(Ordering::Relaxed);
        let registered = entry.registered;
        (map.by_uid.insert(uid, entry), registered)
    }

    /// Removes `uid`'s session if it is still `session` (or its leaving copy, if that is
    /// `session`); returns whether it was the session (a replaced session must not remove its
    /// successor).
    pub fn remove_if_current(&self, uid: i64, session: &Arc<Continuity>) -> bool {
        let mut map = self.map();
        let is = |e: &Entry| Arc::ptr_eq(&e.continuity, session);
        if map.leaving.get(&uid).is_some_and(is) {
            map.leaving.remove(&uid);
        }
        if map.by_uid.get(&uid).is_some_and(is) {
            map.by_uid.remove(&uid);
            true
        } else {
            false
        }
    }

    /// `uid`'s session, if it is still `session`, was adopted by another broker: it leaves, and
    /// until it is removed only broadcasts reach it (see [`Sessions::leaving`]). Returns its
    /// [`Entry::registered`] if it left.
    pub fn leave(&self, uid: i64, session: &Arc<Continuity>) -> Option<u64> {
        let mut map = self.map();
        if map
            .by_uid
            .get(&uid)
            .is_some_and(|e| Arc::ptr_eq(&e.continuity, session))
            && let Some(entry) = map.by_uid.remove(&uid)
        {
            let registered = entry.registered;
            map.leaving.insert(uid, entry);
            return Some(registered);
        }
        None
    }

    /// `uid`'s session, if it is here.
    pub fn get(&self, uid: i64) -> Option<Entry> {
        self.map().by_uid.get(&uid).cloned()
    }

    /// The sessions of `uids` that are here, grouped by edge (one delivery per edge), with the
    /// uids found here and those not, in one look: a session that leaves meanwhile (adopted by
    /// another broker) is either delivered here or resolved elsewhere, never neither.
    pub fn split(&self, uids: &[i64]) -> (Groups, Vec<i64>, Vec<i64>) {
        let map = self.map();
        let (here, elsewhere): (Vec<i64>, Vec<i64>) =
            uids.iter().partition(|uid| map.by_uid.contains_key(uid));
        let groups = group(here.iter().filter_map(|uid| map.by_uid.get(uid)));
        (groups, here, elsewhere)
    }

    /// Every session whose colour and sid match, grouped by edge, for a broadcast; with the
    /// count of broadcasts with this one (see [`Registry::insert`]).
    pub fn matching(&self, color: &str, sid: i64) -> (Groups, u64) {
        let map = self.map();
        let count = self.broadcasts.fetch_add(1, Ordering::Relaxed) + 1;
        let all = map.by_uid.values().chain(map.leaving.values());
        (
            group(all.filter(|e| e.color == color && e.sid == sid)),
            count,
        )
    }

    /// How many sessions are here.
    pub fn len(&self) -> usize {
        self.map().by_uid.len()
    }

    /// Whether no session is here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sessions grouped by the edge they are attached to, and those parked.
#[derive(Debug, Default)]
pub struct Groups {
    /// One group per edge.
    pub edges: Vec<(Arc<EdgeHandle>, Vec<Arc<Continuity>>)>,
    /// Sessions waiting for their client to resume.
    pub parked: Vec<Arc<Continuity>>,
}

fn group<'a>(entries: impl Iterator<Item = &'a Entry>) -> Groups {
    let mut groups = Groups::default();
    for entry in entries {
        let Some(at) = entry.continuity.attachment() else {
            groups.parked.push(entry.continuity.clone());
            continue;
        };
        match groups
            .edges
            .iter_mut()
            .find(|(edge, _)| Arc::ptr_eq(edge, &at.edge))
        {
            Some((_, sessions)) => sessions.push(entry.continuity.clone()),
            None => groups
                .edges
                .push((at.edge.clone(), vec![entry.continuity.clone()])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use janus_proto::janus::internal::v1::SessionOpen;

    use super::*;
    use crate::continuity::Attachment;

    fn edge(id: &str) -> Arc<EdgeHandle> {
        Arc::new(EdgeHandle::new(id.into(), mpsc::channel(1).0))
    }

    fn entry(edge: &Arc<EdgeHandle>, session_id: u64, color: &str, sid: i64) -> Entry {
        let at = Attachment {
            edge: edge.clone(),
            session_id,
        };
        Entry {
            continuity: Arc::new(Continuity::new(Some(at), &SessionOpen::default(), 8)),
            inbox: mpsc::channel(1).0,
            color: color.into(),
            sid,
            commands: mpsc::channel(1).0,
            registered: 0,
        }
    }

    fn id(entry: &Entry) -> u64 {
        entry.continuity.attachment().unwrap().session_id
    }

    #[tokio::test]
    async fn an_edge_holds_a_frame_once_it_has_read_as_many_as_were_queued_with_it() {
        let (tx, mut rx) = mpsc::channel(8);
        let edge = EdgeHandle::new("a".into(), tx);
        let frame = || BrokerFrame::default();
        assert!(edge.send(frame()).await);
        assert!(edge.try_send(frame()));
        edge.reserve().await.unwrap().send(frame());
        edge.try_reserve().unwrap().send(frame());
        drop(edge.try_reserve()); // room taken and given back: no frame, nothing counted
        assert_eq!(edge.queued(), 4, "every send is counted, nothing else");
        let short = std::time::Duration::from_millis(50);
        assert!(edge.edge_holds(0, short).await);
        edge.edge_received(3);
        assert!(
            !edge.edge_holds(4, short).await,
            "the fourth is not read yet"
        );
        edge.edge_received(2);
        assert!(!edge.edge_holds(4, short).await, "a count never goes back");
        edge.edge_received(4);
        assert!(edge.edge_holds(4, short).await);
        // The link goes away with frames unread: the wait ends at once, unheld.
        for _ in 0..4 {
            rx.recv().await.unwrap();
        }
        assert!(edge.send(frame()).await);
        drop(rx);
        let long = std::time::Duration::from_secs(60);
        assert!(!edge.edge_holds(5, long).await);
        assert!(!edge.send(frame()).await, "a gone link takes nothing");
    }

    #[test]
    fn a_replaced_session_cannot_remove_its_successor() {
        let registry = Registry::default();
        let a = edge("a");
        assert!(registry.insert(7, entry(&a, 1, "", 1)).0.is_none());
        let old = registry.insert(7, entry(&a, 2, "", 1)).0.unwrap();
        assert_eq!(id(&old), 1);
        assert!(!registry.remove_if_current(7, &old.continuity));
        let current = registry.get(7).unwrap();
        assert_eq!(id(&current), 2);
        assert!(registry.remove_if_current(7, &current.continuity));
        assert!(registry.is_empty());
    }

    fn ids(groups: Groups) -> Vec<(String, Vec<u64>)> {
        let mut flat: Vec<(String, Vec<u64>)> = groups
            .edges
            .iter()
            .map(|(e, sessions)| {
                let mut ids: Vec<u64> = sessions
                    .iter()
                    .map(|c| c.attachment().unwrap().session_id)
                    .collect();
                ids.sort();
                (e.edge_id.clone(), ids)
            })
            .collect();
        flat.sort();
        flat
    }

    #[test]
    fn deliveries_are_grouped_per_edge_and_broadcasts_match_color_and_sid() {
        let registry = Registry::default();
        let (a, b) = (edge("a"), edge("b"));
        registry.insert(1, entry(&a, 10, "blue", 1));
        registry.insert(2, entry(&a, 11, "blue", 2));
        registry.insert(3, entry(&b, 12, "blue", 1));
        registry.insert(4, entry(&b, 13, "red", 1));
        assert_eq!(
            ids(registry.split(&[1, 2, 3, 99]).0),
            vec![("a".into(), vec![10, 11]), ("b".into(), vec![12])]
        );
        let (matching, count) = registry.matching("blue", 1);
        assert_eq!(
            ids(matching),
            vec![("a".into(), vec![10]), ("b".into(), vec![12])]
        );
        assert_eq!(count, 1);
        let (_, registered) = registry.insert(5, entry(&b, 14, "blue", 1));
        assert_eq!(registered, 1, "registered after the first broadcast");
        assert_eq!(
            registry.matching("blue", 1).1,
            2,
            "which the second counts past"
        );
    }

    #[test]
    fn a_leaving_copy_gets_broadcasts_only_until_it_is_removed() {
        let registry = Registry::default();
        let a = edge("a");
        registry.insert(1, entry(&a, 10, "blue", 1));
        let copy = registry.get(1).unwrap().continuity;
        registry.leave(1, &copy);
        assert!(registry.get(1).is_none(), "pushes follow the route away");
        assert_eq!(registry.split(&[1]).2, vec![1]);
        assert!(registry.is_empty());
        assert_eq!(
            ids(registry.matching("blue", 1).0),
            vec![("a".into(), vec![10])]
        );
        // Its uid logs in here again meanwhile: both get broadcasts, the copy cannot remove it.
        registry.insert(1, entry(&a, 11, "blue", 1));
        assert_eq!(
            ids(registry.matching("blue", 1).0),
            vec![("a".into(), vec![10, 11])]
        );
        assert!(!registry.remove_if_current(1, &copy));
        assert_eq!(
            ids(registry.matching("blue", 1).0),
            vec![("a".into(), vec![11])]
        );
        assert!(registry.get(1).is_some());
    }
}
