//! Session resume on the edge (PROTOCOL.md §13): the tickets this edge issues and opens, the
//! server packets a session keeps until its client acknowledges them, and the table through
//! which a resuming connection reaches the session its ticket names.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use bytes::BytesMut;
use janus_proto::janus::internal::v1::Transport;
use janus_proto::packet::Packet;
use janus_shared::keys::SigningKey;
use janus_shared::session::ServerSession;
use tokio::sync::{mpsc, oneshot};

use crate::error::Close;
use crate::session::Slot;
use crate::transport::FrameIo;

/// What the ticket key is derived under, from the server's signing key.
const TICKET_KEY_INFO: &[u8] = b"janus edge resume ticket v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longer tickets are not ours (a home address is at most a few dozen bytes).
const MAX_TICKET: usize = 256;

/// Issues and opens tickets: `nonce(12) || AES-256-GCM(be64(session id) || home)`, where home
/// is the relay address of the edge holding the session (empty when it relays nothing). The
/// key is derived from the server's signing key, which every edge of a deployment holds, so any
/// edge can tell where a ticket's session lives, and a client can neither read nor forge one.
pub struct Tickets {
    cipher: Aes256Gcm,
    home: String,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").field("home", &self.home).finish()
    }
}

/// What a ticket says.
#[derive(Debug, PartialEq, Eq)]
pub struct Named {
    /// The session, on its edge.
    pub id: u64,
    /// The relay address of that edge; empty for an edge that relays nothing.
    pub home: String,
}

impl Tickets {
    /// Tickets of an edge reached for relays at `home` (empty: not at all).
    pub fn new(key: &SigningKey, home: String) -> Self {
        Self {
            cipher: Aes256Gcm::new(&key.derive(TICKET_KEY_INFO).into()),
            home,
        }
    }

    /// A fresh ticket for session `id` of this edge.
    pub fn issue(&self, id: u64) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut plain = Vec::with_capacity(8 + self.home.len());
        plain.extend_from_slice(&id.to_be_bytes());
        plain.extend_from_slice(self.home.as_bytes());
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), &plain[..])
            .expect("AES-GCM seals any short message");
        [&nonce[..], &sealed].concat()
    }

    /// What `ticket` says, if an edge of this deployment issued it.
    pub fn open(&self, ticket: &[u8]) -> Option<Named> {
        if !(NONCE_LEN + 8 + TAG_LEN..=MAX_TICKET).contains(&ticket.len()) {
            return None;
        }
        let (nonce, sealed) = ticket.split_at(NONCE_LEN);
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), sealed).ok()?;
        let (id, home) = plain.split_at(8);
        Some(Named {
            id: u64::from_be_bytes(id.try_into().expect("8 bytes")),
            home: String::from_utf8(home.to_vec()).ok()?,
        })
    }

    /// Whether a session living at `home` lives on this edge.
    pub fn is_home(&self, home: &str) -> bool {
        home.is_empty() || home == self.home
    }
}

/// The server packets of one session, numbered from 1 in the order they were sent (or, while
/// the client is away, queued), kept until the client acknowledges them. Bounded: past
/// `capacity` the oldest is forgotten, and a resume that needs it fails.
#[derive(Debug)]
pub struct Replay {
    sent: u64,
    kept: VecDeque<Arc<Packet>>,
    capacity: usize,
}

impl Replay {
    /// An empty record keeping at most `capacity` packets.
    pub fn new(capacity: usize) -> Self {
        Self {
            sent: 0,
            kept: VecDeque::new(),
            capacity,
        }
    }

    /// Records the next packet for the client. Heartbeat replies are not counted (PROTOCOL.md
    /// §13.2), also when the game service answers them (go-pantheon's heartbeat mode).
    pub fn record(&mut self, packet: Arc<Packet>) {
        if janus_shared::system::is_heartbeat(&packet) {
            return;
        }
        self.sent += 1;
        if self.kept.len() == self.capacity {
            self.kept.pop_front();
        }
        self.kept.push_back(packet);
    }

    /// The client has the first `received` packets: forget them.
    pub fn ack(&mut self, received: u64) {
        let oldest = self.sent - self.kept.len() as u64;
        let drop = received.saturating_sub(oldest).min(self.kept.len() as u64);
        self.kept.drain(..drop as usize);
    }

    /// The packets after the first `received`, to send again on a resume; an error when the
    /// client claims more than was sent or some of them are no longer kept.
    pub fn since(&mut self, received: u64) -> Result<impl Iterator<Item = &Arc<Packet>>, String> {
        let oldest = self.sent - self.kept.len() as u64;
        if received > self.sent {
            return Err(format!(
                "the client says it received {received} packets of {}",
                self.sent
            ));
        }
        if received < oldest {
            return Err(format!(
                "the client has {received} packets, the edge keeps them from {} on",
                oldest + 1
            ));
        }
        self.ack(received);
        Ok(self.kept.iter())
    }
}

/// A connection that asked to resume a session, handed to that session's task.
pub struct Handoff {
    /// The new connection.
    pub io: FrameIo,
    /// Its protocol state, waiting in [`ServerSession::finish_resume`].
    pub proto: ServerSession,
    /// Bytes read after the resume hello.
    pub input: BytesMut,
    /// Where it comes from.
    pub peer: SocketAddr,
    /// Its transport.
    pub transport: Transport,
    /// Its admission and gauge.
    pub slot: Slot,
    /// The answer: taken over, or refused with the reason and the connection to close.
    pub done: oneshot::Sender<Result<(), (Close, FrameIo)>>,
}

/// Where a session takes the connections that present its ticket.
pub type Handoffs = mpsc::Sender<Box<Handoff>>;

/// The sessions of this edge that hold a ticket, by session id: the current ticket and where
/// to hand a connection that presents it.
#[derive(Debug, Default)]
pub struct Table {
    sessions: Mutex<HashMap<u64, (Vec<u8>, Handoffs)>>,
}

impl Table {
    /// Session `id` holds `ticket` and takes handoffs on `to`.
    pub fn insert(&self, id: u64, ticket: Vec<u8>, to: Handoffs) {
        self.lock().insert(id, (ticket, to));
    }

    /// Session `id` was resumed and now holds `ticket`; the old one is spent.
    pub fn renew(&self, id: u64, ticket: Vec<u8>) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.0 = ticket;
        }
    }

    /// Session `id` ended.
    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Where to hand a connection presenting `ticket`, naming session `id`, if it is that
    /// session's current ticket.
    pub fn find(&self, id: u64, ticket: &[u8]) -> Option<Handoffs> {
        self.lock()
            .get(&id)
            .filter(|(current, _)| current.as_slice() == ticket)
            .map(|(_, to)| to.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Vec<u8>, Handoffs)>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(n: i32) -> Arc<Packet> {
        Arc::new(Packet {
            seq: n,
            ..Default::default()
        })
    }

    fn seqs(replay: &mut Replay, received: u64) -> Result<Vec<i32>, String> {
        Ok(replay.since(received)?.map(|p| p.seq).collect())
    }

    #[test]
    fn a_resume_gets_what_the_client_lacks_in_order() {
        let mut replay = Replay::new(8);
        for n in 1..=5 {
            replay.record(packet(n));
        }
        assert_eq!(seqs(&mut replay, 2), Ok(vec![3, 4, 5]));
        assert_eq!(seqs(&mut replay, 5), Ok(vec![]));
        assert!(seqs(&mut replay, 6).is_err(), "only 5 were sent");
    }

    #[test]
    fn acknowledged_packets_are_forgotten() {
        let mut replay = Replay::new(8);
        for n in 1..=4 {
            replay.record(packet(n));
        }
        replay.ack(3);
        assert_eq!(seqs(&mut replay, 3), Ok(vec![4]));
        assert!(seqs(&mut replay, 2).is_err(), "packet 3 was forgotten");
        replay.ack(1);
        assert_eq!(
            seqs(&mut replay, 3),
            Ok(vec![4]),
            "an old ack changes nothing"
        );
    }

    #[test]
    fn past_its_capacity_the_oldest_go_and_a_resume_needing_them_fails() {
        let mut replay = Replay::new(3);
        for n in 1..=5 {
            replay.record(packet(n));
        }
        assert!(seqs(&mut replay, 1).unwrap_err().contains("from 3 on"));
        assert_eq!(seqs(&mut replay, 2), Ok(vec![3, 4, 5]));
    }

    #[test]
    fn a_client_claiming_more_than_was_sent_is_refused() {
        let mut replay = Replay::new(3);
        replay.record(packet(1));
        assert!(seqs(&mut replay, 2).is_err());
        replay.ack(9);
        assert_eq!(seqs(&mut replay, 1), Ok(vec![]));
    }

    #[test]
    fn heartbeat_replies_are_neither_counted_nor_kept() {
        let mut replay = Replay::new(8);
        replay.record(packet(1));
        replay.record(Arc::new(janus_shared::system::heartbeat_reply(3, 7, 0, 1)));
        replay.record(packet(2));
        assert_eq!(seqs(&mut replay, 0), Ok(vec![1, 2]));
        assert_eq!(seqs(&mut replay, 1), Ok(vec![2]));
    }

    fn tickets(home: &str) -> Tickets {
        Tickets::new(&SigningKey::from_seed(&[7; 32]), home.into())
    }

    #[test]
    fn tickets_name_their_session_and_home_and_only_the_current_one_is_found() {
        let tickets = tickets("10.0.0.5:7400");
        let table = Table::default();
        let (tx, _rx) = mpsc::channel(1);
        let first = tickets.issue(7);
        let named = tickets.open(&first).expect("our own ticket");
        assert_eq!(
            named,
            Named {
                id: 7,
                home: "10.0.0.5:7400".into()
            }
        );
        assert!(tickets.is_home(&named.home));
        table.insert(7, first.clone(), tx);
        assert!(table.find(7, &first).is_some());
        let second = tickets.issue(7);
        assert_ne!(first, second, "every ticket is fresh");
        table.renew(7, second.clone());
        assert!(
            table.find(7, &first).is_none(),
            "a spent ticket is not found"
        );
        assert!(table.find(7, &second).is_some());
        table.remove(7);
        assert!(table.find(7, &second).is_none());
    }

    #[test]
    fn another_edge_of_the_deployment_reads_a_ticket_nobody_else_can_forge() {
        let issued = tickets("10.0.0.5:7400").issue(9);
        let elsewhere = tickets("10.0.0.6:7400");
        let named = elsewhere.open(&issued).expect("same deployment key");
        assert!(!elsewhere.is_home(&named.home));
        assert_eq!(named.id, 9);
        let mut forged = issued.clone();
        forged[NONCE_LEN + 3] ^= 1;
        assert_eq!(elsewhere.open(&forged), None, "a changed byte is refused");
        assert_eq!(elsewhere.open(&issued[..issued.len() - 1]), None);
        assert_eq!(elsewhere.open(&[0; 24]), None);
        let stranger = Tickets::new(&SigningKey::from_seed(&[8; 32]), String::new());
        assert_eq!(stranger.open(&issued), None, "another deployment's key");
        assert!(
            stranger.is_home(&stranger.open(&stranger.issue(1)).unwrap().home),
            "an edge that relays nothing holds all its tickets"
        );
    }
}
