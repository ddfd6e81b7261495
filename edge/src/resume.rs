//! Session resume on the edge (PROTOCOL.md §13): the tickets every edge of a deployment issues
//! and opens, and the copy of a connected session's unacknowledged server packets the edge keeps
//! (handed to a new broker when the session re-attaches). The session itself, and the decision
//! on a resume, live at its broker.

use std::collections::VecDeque;
use std::sync::Arc;

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use janus_proto::packet::Packet;
use janus_protocol::keys::SigningKey;

/// What the ticket key is derived under, from the server's signing key.
const TICKET_KEY_INFO: &[u8] = b"janus edge resume ticket v2";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longer tickets are not ours (a broker endpoint is at most a few dozen bytes).
const MAX_TICKET: usize = 256;

/// Issues and opens tickets: `nonce(12) || AES-256-GCM(be64(uid) || broker)`, where broker is
/// the endpoint of the broker that holds the session. The key is derived from the server's
/// signing key, which every edge of a deployment holds, so any edge can tell where a ticket's
/// session lives, and a client can neither read nor forge one. Through a signing-key rollover
/// (PROTOCOL.md §3.4) tickets are sealed under the current key and opened under any key the
/// edge holds, so edges on either side of the flip open each other's tickets.
pub(crate) struct Tickets {
    cipher: Aes256Gcm,
    others: Vec<Aes256Gcm>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets").finish_non_exhaustive()
    }
}

/// What a ticket says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Named {
    /// The player.
    pub uid: i64,
    /// The endpoint of the broker holding the session when the ticket was issued.
    pub broker: String,
}

impl Tickets {
    /// Tickets sealed under the deployment's current signing key, opened under it or `others`.
    pub(crate) fn new<'a>(
        key: &SigningKey,
        others: impl IntoIterator<Item = &'a SigningKey>,
    ) -> Self {
        let cipher = |key: &SigningKey| Aes256Gcm::new(&key.derive(TICKET_KEY_INFO).into());
        Self {
            cipher: cipher(key),
            others: others.into_iter().map(cipher).collect(),
        }
    }

    /// A fresh ticket for `uid`'s session at `broker`.
    pub(crate) fn issue(&self, uid: i64, broker: &str) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut plain = Vec::with_capacity(8 + broker.len());
        plain.extend_from_slice(&uid.to_be_bytes());
        plain.extend_from_slice(broker.as_bytes());
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), &plain[..])
            .expect("AES-GCM seals any short message");
        [&nonce[..], &sealed].concat()
    }

    /// What `ticket` says, if an edge of this deployment issued it.
    pub(crate) fn open(&self, ticket: &[u8]) -> Option<Named> {
        if !(NONCE_LEN + 8 + TAG_LEN..=MAX_TICKET).contains(&ticket.len()) {
            return None;
        }
        let (nonce, sealed) = ticket.split_at(NONCE_LEN);
        let nonce = Nonce::from_slice(nonce);
        let plain = std::iter::once(&self.cipher)
            .chain(&self.others)
            .find_map(|cipher| cipher.decrypt(nonce, sealed).ok())?;
        let (uid, broker) = plain.split_at(8);
        Some(Named {
            uid: i64::from_be_bytes(uid.try_into().expect("8 bytes")),
            broker: String::from_utf8(broker.to_vec()).ok()?,
        })
    }
}

/// The server packets of one session, numbered from 1 in the order they were sent, kept until
/// the client acknowledges them. Bounded: past `capacity` the oldest is forgotten. The broker
/// keeps the same record; this copy is what a new broker gets when the session re-attaches.
#[derive(Debug)]
pub(crate) struct Replay {
    sent: u64,
    kept: VecDeque<Arc<Packet>>,
    capacity: usize,
}

impl Replay {
    /// An empty record keeping at most `capacity` packets.
    pub(crate) fn new(capacity: usize) -> Self {
        Self::resumed(capacity, 0, Vec::new())
    }

    /// The record of a session that has counted `sent` packets, of which `tail` (the last
    /// ones) are not acknowledged.
    pub(crate) fn resumed(capacity: usize, sent: u64, tail: Vec<Arc<Packet>>) -> Self {
        let mut kept: VecDeque<Arc<Packet>> = tail.into();
        while kept.len() > capacity {
            kept.pop_front();
        }
        Self {
            sent: sent.max(kept.len() as u64),
            kept,
            capacity,
        }
    }

    /// Records the next packet for the client. Heartbeat replies are not counted (PROTOCOL.md
    /// §13.2), also when the game service answers them (go-pantheon's heartbeat mode).
    pub(crate) fn record(&mut self, packet: Arc<Packet>) {
        if !janus_protocol::system::is_counted(&packet) {
            return;
        }
        self.sent += 1;
        if self.kept.len() == self.capacity {
            self.kept.pop_front();
        }
        self.kept.push_back(packet);
    }

    /// The client has the first `received` packets: forget them.
    pub(crate) fn ack(&mut self, received: u64) {
        let drop = received
            .saturating_sub(self.oldest())
            .min(self.kept.len() as u64);
        self.kept.drain(..drop as usize);
    }

    /// Packets counted so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// How many packets were counted before the oldest one kept.
    pub(crate) fn oldest(&self) -> u64 {
        self.sent - self.kept.len() as u64
    }

    /// The packets kept, oldest first.
    pub(crate) fn tail(&self) -> impl Iterator<Item = &Arc<Packet>> {
        self.kept.iter()
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

    /// What a resume after `received` would replay (the broker's rule: §13.3).
    fn seqs(replay: &mut Replay, received: u64) -> Result<Vec<i32>, String> {
        if received > replay.sent() || received < replay.oldest() {
            return Err(format!("from {} on", replay.oldest() + 1));
        }
        replay.ack(received);
        Ok(replay.tail().map(|p| p.seq).collect())
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
        replay.record(Arc::new(janus_protocol::system::heartbeat_reply(
            3, 7, 0, 1,
        )));
        replay.record(packet(2));
        assert_eq!(seqs(&mut replay, 0), Ok(vec![1, 2]));
        assert_eq!(seqs(&mut replay, 1), Ok(vec![2]));
    }

    #[test]
    fn a_resumed_record_counts_on_from_where_the_session_was() {
        let mut replay = Replay::resumed(2, 10, vec![packet(8), packet(9), packet(10)]);
        assert_eq!(
            (replay.sent(), replay.oldest()),
            (10, 8),
            "capacity 2 keeps 9 and 10"
        );
        replay.record(packet(11));
        assert_eq!(seqs(&mut replay, 9), Ok(vec![10, 11]));
    }

    #[test]
    fn any_edge_of_the_deployment_reads_a_ticket_nobody_else_can_forge() {
        let issued = Tickets::new(&SigningKey::from_seed(&[7; 32]), []).issue(42, "10.0.0.5:17100");
        let elsewhere = Tickets::new(&SigningKey::from_seed(&[7; 32]), []);
        assert_eq!(
            elsewhere.open(&issued),
            Some(Named {
                uid: 42,
                broker: "10.0.0.5:17100".into()
            })
        );
        assert_ne!(
            issued,
            elsewhere.issue(42, "10.0.0.5:17100"),
            "every ticket is fresh"
        );
        let mut forged = issued.clone();
        forged[NONCE_LEN + 3] ^= 1;
        assert_eq!(elsewhere.open(&forged), None, "a changed byte is refused");
        assert_eq!(elsewhere.open(&issued[..issued.len() - 1]), None);
        assert_eq!(elsewhere.open(&[0; 24]), None);
        let stranger = Tickets::new(&SigningKey::from_seed(&[8; 32]), []);
        assert_eq!(stranger.open(&issued), None, "another deployment's key");
    }

    #[test]
    fn edges_on_either_side_of_a_signing_key_rollover_open_each_others_tickets() {
        let (old, new) = (
            SigningKey::from_seed(&[7; 32]),
            SigningKey::from_seed(&[9; 32]),
        );
        // Before the flip: the old key current, the new one held; after it, the other way.
        let before = Tickets::new(&old, [&new]);
        let after = Tickets::new(&new, [&old]);
        let from_before = before.issue(1, "b:1");
        let from_after = after.issue(2, "b:2");
        assert_eq!(after.open(&from_before).map(|n| n.uid), Some(1));
        assert_eq!(before.open(&from_after).map(|n| n.uid), Some(2));
        // An edge not yet given the new key opens no ticket sealed under it.
        assert_eq!(Tickets::new(&old, []).open(&from_after), None);
    }
}
