//! This broker's live sessions: at most one per uid (a newer login replaces the older, which is
//! kicked), indexed so pushes find them by uid and broadcasts by (color, sid). Owns no I/O; the
//! edge handle it stores is how frames reach a session's edge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use janus_proto::janus::internal::v1::{BrokerFrame, Deliver, broker_frame};
use janus_proto::packet::Packet;
use tokio::sync::mpsc;

/// Frames this broker may have waiting for one edge. Replies wait for room (backpressure onto
/// the game service's stream); pushes that find it full are dropped and counted.
pub const EDGE_QUEUE: usize = 8192;

/// The sending half of one edge link.
#[derive(Debug)]
pub struct EdgeHandle {
    /// The edge's id, from its hello.
    pub edge_id: String,
    /// Frames to that edge, batched by the link's writer.
    pub tx: mpsc::Sender<BrokerFrame>,
}

impl EdgeHandle {
    /// Queues `packet` for `session_ids` on this edge, waiting for room.
    pub async fn deliver(&self, session_ids: Vec<u64>, packet: Packet) -> bool {
        self.tx
            .send(deliver_frame(session_ids, packet))
            .await
            .is_ok()
    }

    /// Queues `packet` for `session_ids` if there is room now; false if it was dropped.
    pub fn try_deliver(&self, session_ids: Vec<u64>, packet: Packet) -> bool {
        self.tx.try_send(deliver_frame(session_ids, packet)).is_ok()
    }
}

fn deliver_frame(session_ids: Vec<u64>, packet: Packet) -> BrokerFrame {
    BrokerFrame {
        kind: Some(broker_frame::Kind::Deliver(Deliver {
            session_ids,
            packet: Some(packet),
        })),
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
}

/// One live session as the rest of the broker sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The edge-assigned session id.
    pub session_id: u64,
    /// The edge that holds the connection.
    pub edge: Arc<EdgeHandle>,
    /// Colour, for broadcasts.
    pub color: String,
    /// Server (zone) id, for broadcasts.
    pub sid: i64,
    /// The session actor's command inbox.
    pub commands: mpsc::Sender<Box<Command>>,
}

impl Entry {
    fn is(&self, edge: &EdgeHandle, session_id: u64) -> bool {
        self.session_id == session_id && std::ptr::eq(Arc::as_ptr(&self.edge), edge)
    }
}

/// Sessions by uid.
#[derive(Debug, Default)]
pub struct Registry {
    by_uid: Mutex<HashMap<i64, Entry>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Entry>> {
        self.by_uid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `entry` the session of `uid`; returns the one it replaced.
    pub fn insert(&self, uid: i64, entry: Entry) -> Option<Entry> {
        self.map().insert(uid, entry)
    }

    /// Removes `uid`'s session if it is still the one on `edge` with `session_id`; returns
    /// whether it was (a replaced session must not remove its successor).
    pub fn remove_if_current(&self, uid: i64, edge: &EdgeHandle, session_id: u64) -> bool {
        let mut map = self.map();
        if map.get(&uid).is_some_and(|e| e.is(edge, session_id)) {
            map.remove(&uid);
            true
        } else {
            false
        }
    }

    /// `uid`'s session, if it is here.
    pub fn get(&self, uid: i64) -> Option<Entry> {
        self.map().get(&uid).cloned()
    }

    /// The sessions of `uids` that are here, grouped by edge: one delivery per edge.
    pub fn group_by_edge(&self, uids: &[i64]) -> Vec<(Arc<EdgeHandle>, Vec<u64>)> {
        let map = self.map();
        group(uids.iter().filter_map(|uid| map.get(uid)))
    }

    /// Every session whose colour and sid match, grouped by edge.
    pub fn matching(&self, color: &str, sid: i64) -> Vec<(Arc<EdgeHandle>, Vec<u64>)> {
        let map = self.map();
        group(map.values().filter(|e| e.color == color && e.sid == sid))
    }

    /// How many sessions are here.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no session is here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn group<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<(Arc<EdgeHandle>, Vec<u64>)> {
    let mut groups: Vec<(Arc<EdgeHandle>, Vec<u64>)> = Vec::new();
    for entry in entries {
        match groups
            .iter_mut()
            .find(|(edge, _)| Arc::ptr_eq(edge, &entry.edge))
        {
            Some((_, ids)) => ids.push(entry.session_id),
            None => groups.push((entry.edge.clone(), vec![entry.session_id])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(id: &str) -> Arc<EdgeHandle> {
        Arc::new(EdgeHandle {
            edge_id: id.into(),
            tx: mpsc::channel(1).0,
        })
    }

    fn entry(edge: &Arc<EdgeHandle>, session_id: u64, color: &str, sid: i64) -> Entry {
        Entry {
            session_id,
            edge: edge.clone(),
            color: color.into(),
            sid,
            commands: mpsc::channel(1).0,
        }
    }

    #[test]
    fn a_replaced_session_cannot_remove_its_successor() {
        let registry = Registry::default();
        let a = edge("a");
        assert!(registry.insert(7, entry(&a, 1, "", 1)).is_none());
        let old = registry.insert(7, entry(&a, 2, "", 1)).unwrap();
        assert_eq!(old.session_id, 1);
        assert!(!registry.remove_if_current(7, &a, 1));
        assert_eq!(registry.get(7).unwrap().session_id, 2);
        assert!(registry.remove_if_current(7, &a, 2));
        assert!(registry.is_empty());
    }

    #[test]
    fn deliveries_are_grouped_per_edge_and_broadcasts_match_color_and_sid() {
        let registry = Registry::default();
        let (a, b) = (edge("a"), edge("b"));
        registry.insert(1, entry(&a, 10, "blue", 1));
        registry.insert(2, entry(&a, 11, "blue", 2));
        registry.insert(3, entry(&b, 12, "blue", 1));
        registry.insert(4, entry(&b, 13, "red", 1));
        let groups = registry.group_by_edge(&[1, 2, 3, 99]);
        let mut flat: Vec<(String, Vec<u64>)> = groups
            .iter()
            .map(|(e, ids)| (e.edge_id.clone(), ids.clone()))
            .collect();
        flat.sort();
        for (_, ids) in &mut flat {
            ids.sort();
        }
        assert_eq!(
            flat,
            vec![("a".into(), vec![10, 11]), ("b".into(), vec![12])]
        );
        let mut blue1: Vec<u64> = registry
            .matching("blue", 1)
            .into_iter()
            .flat_map(|(_, ids)| ids)
            .collect();
        blue1.sort();
        assert_eq!(blue1, vec![10, 12]);
    }
}
