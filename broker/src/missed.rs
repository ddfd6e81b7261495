//! Broadcasts that the sessions of a dead broker missed (PROTOCOL.md §13.5). A broadcast whose
//! send found nobody on a broker's subject never reached that broker's sessions, which are
//! being re-attached to the brokers still up. Every broker keeps such a broadcast as a notice
//! for [`WINDOW`], and the sessions it adopted from other brokers over that time, and hands each
//! notice once to each adopted session that did not get the broadcast itself: a session adopted
//! before the notice came gets it then ([`Missed::notice`]), one adopted after at its adoption
//! ([`Missed::adopted`]). Whether an adopted session got the broadcast itself is decided by the
//! registry's broadcast count ([`crate::registry::Registry::matching`] counts under the
//! registry's lock, and an insert reads the count), not by clocks. Sans-IO: the caller passes
//! the time.
//!
//! The same record of broadcasts handled tells a broker whose session another broker adopted
//! which broadcasts that session got here ([`Missed::since`]): the adopter does not deliver them
//! again when its own copy of one comes after the move.
//!
//! Bounds: at most [`NOTICES`] notices (past it the oldest is forgotten and counted), and the
//! broadcasts handled and sessions adopted in the last [`WINDOW`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use janus_proto::packet::Packet;
use parking_lot::Mutex;

/// How long a notice, a handled broadcast and an adoption are remembered: the edges'
/// re-attach grace (`[brokers] reattach_grace_secs`) and the resume window's default.
pub(crate) const WINDOW: Duration = Duration::from_secs(30);

/// Notices kept at most.
const NOTICES: usize = 1024;

/// How far back an adoption reply names the broadcasts a session had (PROTOCOL.md §13.5): the
/// adopter's own copy of one reaches it within a bus request's time, long before this.
const RECENT: Duration = Duration::from_secs(10);

/// A broadcast that did not reach the sessions of the brokers in `missed_by`.
#[derive(Debug, PartialEq)]
pub(crate) struct Notice {
    /// The broadcast's id.
    pub id: String,
    /// Its packets.
    pub packets: Vec<Arc<Packet>>,
    /// Its colour.
    pub color: String,
    /// Its server id.
    pub sid: i64,
    /// The endpoints of the brokers it found gone.
    pub missed_by: Vec<String>,
}

struct Kept {
    notice: Arc<Notice>,
    /// The registry's broadcast count when this broker delivered the broadcast itself, if it
    /// did.
    handled: Option<u64>,
    at: Instant,
}

struct Adoption {
    color: String,
    sid: i64,
    /// The registry's broadcast count when the session was registered here.
    count: u64,
    at: Instant,
}

/// A broadcast this broker delivered to its matching sessions.
struct Handled {
    id: String,
    color: String,
    sid: i64,
    /// The registry's broadcast count with it.
    count: u64,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    /// Broadcasts delivered here, oldest first.
    handled: VecDeque<Handled>,
    notices: VecDeque<Kept>,
    /// Sessions adopted here, by the broker they came from, then uid.
    adoptions: HashMap<String, HashMap<i64, Adoption>>,
    /// (broker, uid, when) in adoption order, to forget them.
    adopted_order: VecDeque<(String, i64, Instant)>,
}

impl Inner {
    fn forget_old(&mut self, now: Instant) {
        let old = |at: &Instant| now.saturating_duration_since(*at) > WINDOW;
        while self.handled.front().is_some_and(|h| old(&h.at)) {
            self.handled.pop_front();
        }
        while self.notices.front().is_some_and(|kept| old(&kept.at)) {
            self.notices.pop_front();
        }
        while let Some((from, uid, at)) = self.adopted_order.front() {
            if !old(at) {
                break;
            }
            if let Some(by_uid) = self.adoptions.get_mut(from) {
                if by_uid.get(uid).is_some_and(|a| a.at == *at) {
                    by_uid.remove(uid);
                }
                if by_uid.is_empty() {
                    self.adoptions.remove(from);
                }
            }
            self.adopted_order.pop_front();
        }
    }
}

/// Notices and adoptions of one broker.
#[derive(Default)]
pub(crate) struct Missed {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Missed")
    }
}

/// Whether a session registered at registry count `registered` missed a broadcast delivered
/// here at count `handled` (the registry counts a broadcast after the sessions it reached).
fn missed(handled: Option<u64>, registered: u64) -> bool {
    handled.is_none_or(|handled| handled <= registered)
}

impl Missed {
    fn inner(&self, now: Instant) -> parking_lot::MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock();
        inner.forget_old(now);
        inner
    }

    /// This broker delivered broadcast `id` to its matching sessions of (`color`, `sid`), the
    /// registry's count then being `count`.
    pub(crate) fn handled(&self, id: &str, (color, sid): (&str, i64), count: u64, now: Instant) {
        self.inner(now).handled.push_back(Handled {
            id: id.to_owned(),
            color: color.to_owned(),
            sid,
            count,
            at: now,
        });
    }

    /// The broadcasts of (`color`, `sid`) delivered here to a session registered when the
    /// registry's count was `registered` (those the registry counted higher reached it), oldest
    /// first: what an adopter of that session is told it had (PROTOCOL.md §13.5).
    pub(crate) fn since(
        &self,
        (color, sid): (&str, i64),
        registered: u64,
        now: Instant,
    ) -> Vec<String> {
        self.inner(now)
            .handled
            .iter()
            // Older ones cannot meet the adopter's own copy in its once window.
            .filter(|h| now.saturating_duration_since(h.at) < RECENT)
            .filter(|h| h.color == color && h.sid == sid && !missed(Some(h.count), registered))
            .map(|h| h.id.clone())
            .collect()
    }

    /// Keeps `notice`; returns it with the uids adopted here from a broker it names that did
    /// not get the broadcast, and whether an older notice had to be forgotten for room.
    pub(crate) fn notice(&self, notice: Notice, now: Instant) -> (Arc<Notice>, Vec<i64>, bool) {
        let mut inner = self.inner(now);
        let handled = inner
            .handled
            .iter()
            .rev()
            .find(|h| h.id == notice.id)
            .map(|h| h.count);
        let uids = notice
            .missed_by
            .iter()
            .filter_map(|from| inner.adoptions.get(from))
            .flatten()
            .filter(|(_, a)| {
                a.color == notice.color && a.sid == notice.sid && missed(handled, a.count)
            })
            .map(|(uid, _)| *uid)
            .collect();
        let full = inner.notices.len() >= NOTICES;
        if full {
            inner.notices.pop_front();
        }
        let notice = Arc::new(notice);
        inner.notices.push_back(Kept {
            notice: notice.clone(),
            handled,
            at: now,
        });
        (notice, uids, full)
    }

    /// Session `uid` of (`color`, `sid`) was re-attached here from the broker at `from`,
    /// registered when the registry's count was `count`: returns the notices for it, oldest
    /// first.
    pub(crate) fn adopted(
        &self,
        uid: i64,
        from: &str,
        (color, sid): (&str, i64),
        count: u64,
        now: Instant,
    ) -> Vec<Arc<Notice>> {
        let mut inner = self.inner(now);
        inner.adoptions.entry(from.to_owned()).or_default().insert(
            uid,
            Adoption {
                color: color.to_owned(),
                sid,
                count,
                at: now,
            },
        );
        inner.adopted_order.push_back((from.to_owned(), uid, now));
        inner
            .notices
            .iter()
            .filter(|kept| {
                let n = &kept.notice;
                n.color == color
                    && n.sid == sid
                    && n.missed_by.iter().any(|m| m == from)
                    && missed(kept.handled, count)
            })
            .map(|kept| kept.notice.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "10.0.0.2:17100";

    fn notice(id: &str, sid: i64) -> Notice {
        Notice {
            id: id.into(),
            packets: vec![Arc::new(Packet {
                data: id.as_bytes().to_vec(),
                ..Packet::default()
            })],
            color: "blue".into(),
            sid,
            missed_by: vec![B.into()],
        }
    }

    fn ids(notices: &[Arc<Notice>]) -> Vec<&str> {
        notices.iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn a_session_adopted_after_the_notice_gets_it_at_its_adoption_unless_it_got_the_broadcast() {
        let missed = Missed::default();
        let t0 = Instant::now();
        // Broadcast 1 delivered here at count 5, broadcast 2 never here.
        missed.handled("a/1", ("blue", 1), 5, t0);
        let (_, uids, _) = missed.notice(notice("a/1", 1), t0);
        assert!(uids.is_empty(), "nobody adopted yet");
        missed.notice(notice("a/2", 1), t0);
        missed.notice(notice("a/3", 2), t0);
        // Registered before broadcast 1 was delivered here (count 4 < 5): got it itself.
        let got = missed.adopted(7, B, ("blue", 1), 4, t0);
        assert_eq!(ids(&got), ["a/2"]);
        // Registered after (count 5): missed both; the other sid's is not for it.
        let got = missed.adopted(8, B, ("blue", 1), 5, t0);
        assert_eq!(ids(&got), ["a/1", "a/2"]);
        // From another broker: nothing.
        assert!(
            missed
                .adopted(9, "10.0.0.3:1", ("blue", 1), 5, t0)
                .is_empty()
        );
    }

    #[test]
    fn a_session_adopted_before_the_notice_is_named_by_it_once() {
        let missed = Missed::default();
        let t0 = Instant::now();
        assert!(missed.adopted(7, B, ("blue", 1), 3, t0).is_empty());
        assert!(missed.adopted(8, B, ("blue", 1), 9, t0).is_empty());
        assert!(missed.adopted(9, B, ("red", 1), 9, t0).is_empty());
        missed.handled("a/1", ("blue", 1), 6, t0);
        let (_, uids, _) = missed.notice(notice("a/1", 1), t0);
        assert_eq!(
            uids,
            [8],
            "7 was here when the broadcast was delivered, 9 is red"
        );
        let (_, mut uids, _) = missed.notice(notice("a/2", 1), t0);
        uids.sort();
        assert_eq!(uids, [7, 8], "never delivered here: both missed it");
    }

    #[test]
    fn notices_and_adoptions_are_forgotten_after_the_window_and_notices_are_bounded() {
        let missed = Missed::default();
        let t0 = Instant::now();
        missed.adopted(7, B, ("blue", 1), 0, t0);
        missed.notice(notice("a/1", 1), t0);
        let later = t0 + WINDOW + Duration::from_millis(1);
        let (_, uids, _) = missed.notice(notice("a/2", 1), later);
        assert!(uids.is_empty(), "the adoption is forgotten");
        let got = missed.adopted(8, B, ("blue", 1), 0, later);
        assert_eq!(ids(&got), ["a/2"], "the first notice is forgotten");
        for n in 0..NOTICES {
            let (_, _, full) = missed.notice(notice(&format!("b/{n}"), 1), later);
            assert_eq!(full, n == NOTICES - 1, "notice {n}");
        }
        let got = missed.adopted(9, B, ("blue", 1), 0, later);
        assert_eq!(got.len(), NOTICES);
        assert_eq!(got[0].id, "b/0", "the oldest went for room");
    }
}
