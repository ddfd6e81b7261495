//! Pushes whose session's broker is gone (PROTOCOL.md §13.5). A push resolved to a broker that
//! no longer listens on its bus subject (it died; the bus found no subscriber) waits here, per
//! uid, until the session is re-attached somewhere: its route names another broker, or the
//! session is here. Then it is sent on, in order, and later pushes for the uid go behind it
//! rather than past it. Owns only the waiting pushes; sending them is the pusher's.
//!
//! Bounds: a uid waits at most [`STRAY_WAIT`] (an edge re-attaches its sessions within its
//! `reattach_grace_secs`, 30 by default) and holds at most [`STRAY_QUEUE`] pushes; a push past
//! either is dropped and counted (`janus_broker_push_dropped_total{kind="owner_gone"}`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use janus_proto::broadcaster::service::push::v1::PushBody;
use parking_lot::Mutex;

/// How long pushes for one uid wait for its session to be re-attached.
pub(super) const STRAY_WAIT: Duration = Duration::from_secs(30);
/// Pushes (each a message's bodies) one uid may have waiting.
pub(super) const STRAY_QUEUE: usize = 256;

/// One uid's waiting pushes.
#[derive(Debug)]
struct Waiting {
    /// The colour its route is read under.
    color: String,
    /// The broker its route named that did not listen.
    gone: String,
    /// When the first push began to wait.
    since: Instant,
    /// Each push's bodies, oldest first.
    pushes: VecDeque<Vec<PushBody>>,
}

/// Waiting pushes by uid, and whether a watcher is resolving them.
#[derive(Debug, Default)]
pub(super) struct Strays {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_uid: HashMap<i64, Waiting>,
    watched: bool,
}

/// What [`Strays::wait`] and [`Strays::behind`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Queued {
    /// Pushes now waiting.
    pub(super) waiting: usize,
    /// Pushes dropped: the uid's queue was full.
    pub(super) dropped: usize,
    /// Nobody was watching: the caller starts the watcher.
    pub(super) watch: bool,
}

/// What [`Strays::behind`] held back.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Behind {
    /// The uids that had pushes waiting.
    pub(super) uids: Vec<i64>,
    /// What was queued for them.
    pub(super) queued: Queued,
}

/// A uid the watcher is to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stray {
    /// The player.
    pub(super) uid: i64,
    /// The colour its route is read under.
    pub(super) color: String,
    /// The broker that did not listen.
    pub(super) gone: String,
    /// Waited longer than [`STRAY_WAIT`].
    pub(super) expired: bool,
}

impl Strays {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Splits `uids` into those with pushes waiting, which take `bodies` at the back of their
    /// queue (first, with what was queued), and the others (second), for which `bodies` go on
    /// as usual.
    pub(super) fn behind(&self, uids: &[i64], bodies: &[PushBody]) -> (Behind, Vec<i64>) {
        let mut inner = self.lock();
        let mut behind = Behind::default();
        if inner.by_uid.is_empty() {
            return (behind, uids.to_vec());
        }
        let mut free = Vec::with_capacity(uids.len());
        for uid in uids {
            match inner.by_uid.get_mut(uid) {
                Some(waiting) => {
                    push(waiting, bodies, &mut behind.queued);
                    behind.uids.push(*uid);
                }
                None => free.push(*uid),
            }
        }
        (behind, free)
    }

    /// `uids`, routed under `color` to the broker `gone`, which did not take `bodies`: they
    /// wait for the sessions' new routes.
    pub(super) fn wait(
        &self,
        gone: &str,
        color: &str,
        uids: &[i64],
        bodies: &[PushBody],
    ) -> Queued {
        let mut inner = self.lock();
        let mut queued = Queued::default();
        let now = Instant::now();
        for uid in uids {
            let waiting = inner.by_uid.entry(*uid).or_insert_with(|| Waiting {
                color: color.to_owned(),
                gone: gone.to_owned(),
                since: now,
                pushes: VecDeque::new(),
            });
            push(waiting, bodies, &mut queued);
        }
        if !inner.watched && !inner.by_uid.is_empty() {
            inner.watched = true;
            queued.watch = true;
        }
        queued
    }

    /// The uids with pushes waiting, for the watcher's next look; empty when there are none,
    /// and then the watcher stops (a later [`Strays::wait`] starts another).
    pub(super) fn look(&self) -> Vec<Stray> {
        let mut inner = self.lock();
        if inner.by_uid.is_empty() {
            inner.watched = false;
        }
        inner
            .by_uid
            .iter()
            .map(|(uid, w)| Stray {
                uid: *uid,
                color: w.color.clone(),
                gone: w.gone.clone(),
                expired: w.since.elapsed() > STRAY_WAIT,
            })
            .collect()
    }

    /// The pushes waiting for `uid`, oldest first, to be sent now. The uid stays waiting
    /// (later pushes queue behind) until a call finds nothing new: then it is free again and
    /// this returns nothing.
    pub(super) fn take(&self, uid: i64) -> Vec<Vec<PushBody>> {
        let mut inner = self.lock();
        let Some(waiting) = inner.by_uid.get_mut(&uid) else {
            return Vec::new();
        };
        if waiting.pushes.is_empty() {
            inner.by_uid.remove(&uid);
            return Vec::new();
        }
        waiting.pushes.drain(..).collect()
    }

    /// `pushes`, taken for `uid`, could not be sent: its route names `gone`, which does not
    /// listen either. They wait again, in front of anything queued since.
    pub(super) fn again(&self, uid: i64, gone: &str, pushes: Vec<Vec<PushBody>>) {
        let mut inner = self.lock();
        if let Some(waiting) = inner.by_uid.get_mut(&uid) {
            gone.clone_into(&mut waiting.gone);
            for bodies in pushes.into_iter().rev() {
                waiting.pushes.push_front(bodies);
            }
        }
    }

    /// Gives up on `uid` (its session is gone, or waited too long): how many pushes it had.
    pub(super) fn forget(&self, uid: i64) -> usize {
        self.lock()
            .by_uid
            .remove(&uid)
            .map_or(0, |w| w.pushes.len())
    }
}

fn push(waiting: &mut Waiting, bodies: &[PushBody], queued: &mut Queued) {
    if waiting.pushes.len() >= STRAY_QUEUE {
        queued.dropped += 1;
    } else {
        waiting.pushes.push_back(bodies.to_vec());
        queued.waiting += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: i32) -> Vec<PushBody> {
        vec![PushBody {
            seq: n,
            ..PushBody::default()
        }]
    }

    fn seqs(pushes: &[Vec<PushBody>]) -> Vec<i32> {
        pushes.iter().map(|b| b[0].seq).collect()
    }

    #[test]
    fn later_pushes_for_a_waiting_uid_queue_behind_and_others_go_on() {
        let strays = Strays::default();
        assert_eq!(strays.behind(&[1, 2], &body(0)).1, vec![1, 2]);
        let first = strays.wait("b1", "blue", &[1], &body(1));
        assert_eq!((first.waiting, first.watch), (1, true));
        assert!(
            !strays.wait("b1", "blue", &[1], &body(2)).watch,
            "one watcher"
        );
        let (behind, free) = strays.behind(&[1, 2], &body(3));
        assert_eq!(
            (behind.uids, behind.queued.waiting, free),
            (vec![1], 1, vec![2])
        );
        assert_eq!(
            strays.look(),
            vec![Stray {
                uid: 1,
                color: "blue".into(),
                gone: "b1".into(),
                expired: false
            }]
        );
        // Sent on: a push that comes while they go out waits behind them.
        assert_eq!(seqs(&strays.take(1)), vec![1, 2, 3]);
        assert_eq!(strays.behind(&[1], &body(4)).1, Vec::<i64>::new());
        assert_eq!(seqs(&strays.take(1)), vec![4]);
        assert!(strays.take(1).is_empty(), "nothing new: free again");
        assert_eq!(strays.behind(&[1], &body(5)).1, vec![1]);
        assert!(strays.look().is_empty());
        assert!(
            strays.wait("b1", "blue", &[1], &body(6)).watch,
            "a new watcher"
        );
    }

    #[test]
    fn pushes_that_find_the_next_broker_gone_too_wait_again_in_front() {
        let strays = Strays::default();
        strays.wait("b1", "", &[1], &body(1));
        let taken = strays.take(1);
        strays.behind(&[1], &body(2));
        strays.again(1, "b2", taken);
        assert_eq!(strays.look()[0].gone, "b2");
        assert_eq!(seqs(&strays.take(1)), vec![1, 2]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_forget_says_how_many_waited() {
        let strays = Strays::default();
        for n in 0..STRAY_QUEUE {
            strays.wait("b1", "", &[1], &body(i32::try_from(n).unwrap()));
        }
        let over = strays.wait("b1", "", &[1], &body(-1));
        assert_eq!((over.waiting, over.dropped), (0, 1));
        assert_eq!(strays.forget(1), STRAY_QUEUE);
        assert_eq!(strays.forget(1), 0);
    }
}
