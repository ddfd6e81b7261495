//! Session resume on the edge (PROTOCOL.md §13): the tickets this edge issues, the server
//! packets a session keeps until its client acknowledges them, and the table through which a
//! resuming connection reaches the session its ticket names.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use janus_proto::janus::internal::v1::Transport;
use janus_proto::packet::Packet;
use janus_shared::session::ServerSession;
use tokio::sync::{mpsc, oneshot};

use crate::error::Close;
use crate::session::Slot;
use crate::transport::FrameIo;

/// Bytes in a ticket: `be64(session id) || 16 random bytes`.
pub const TICKET_LEN: usize = 24;

/// A fresh ticket for session `id`.
pub fn ticket(id: u64) -> Vec<u8> {
    let mut ticket = Vec::with_capacity(TICKET_LEN);
    ticket.extend_from_slice(&id.to_be_bytes());
    ticket.extend_from_slice(&rand::random::<[u8; 16]>());
    ticket
}

/// The session a ticket names, if it has the shape of one of ours.
pub fn session_of(ticket: &[u8]) -> Option<u64> {
    if ticket.len() != TICKET_LEN {
        return None;
    }
    Some(u64::from_be_bytes(ticket[..8].try_into().expect("8 bytes")))
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

    /// Records the next packet for the client.
    pub fn record(&mut self, packet: Arc<Packet>) {
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

    /// Where to hand a connection presenting `ticket`, if it is a current ticket here.
    pub fn find(&self, ticket: &[u8]) -> Option<Handoffs> {
        let id = session_of(ticket)?;
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
    fn tickets_name_their_session_and_only_the_current_one_is_found() {
        let table = Table::default();
        let (tx, _rx) = mpsc::channel(1);
        let first = ticket(7);
        assert_eq!(session_of(&first), Some(7));
        assert_eq!(session_of(&first[1..]), None);
        table.insert(7, first.clone(), tx);
        assert!(table.find(&first).is_some());
        let mut forged = first.clone();
        forged[23] ^= 1;
        assert!(table.find(&forged).is_none(), "the random part must match");
        let second = ticket(7);
        table.renew(7, second.clone());
        assert!(table.find(&first).is_none(), "a spent ticket is not found");
        assert!(table.find(&second).is_some());
        table.remove(7);
        assert!(table.find(&second).is_none());
    }
}
