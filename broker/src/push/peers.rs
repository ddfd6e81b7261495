//! The other brokers of the deployment, as heard on the bus: every broker publishes its endpoint
//! on [`crate::bus::subject::PRESENCE`] every [`ANNOUNCE_EVERY`], and a broadcast goes to
//! each broker heard within [`REMEMBERED`] (PROTOCOL.md §12), except those a send found gone
//! (nobody on their subject), which later broadcasts name as having missed them for
//! [`WINDOW`] (PROTOCOL.md §13.5). Sans-IO: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::missed::WINDOW;

/// How often a broker announces itself.
pub(super) const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// How long a broker is sent broadcasts after it was last heard. Long on purpose: a broker
/// that is gone is told by the bus (nobody listens on its subject), which is what a broadcast's
/// notice needs (PROTOCOL.md §13.5); one whose announcements were late must still get them.
pub(super) const REMEMBERED: Duration = Duration::from_secs(60);

/// Brokers by endpoint, with when each was last heard, and those found gone.
#[derive(Debug, Default)]
pub(super) struct Peers {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    heard: HashMap<String, Instant>,
    /// Found gone (nobody on its subject), and when; until heard again or [`WINDOW`] passes.
    gone: HashMap<String, Instant>,
}

impl Peers {
    fn inner(&self, now: Instant) -> parking_lot::MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock();
        inner
            .heard
            .retain(|_, at| now.saturating_duration_since(*at) <= REMEMBERED);
        inner
            .gone
            .retain(|_, at| now.saturating_duration_since(*at) <= WINDOW);
        inner
    }

    /// `endpoint` announced itself at `now`; true if it was not known (or was gone).
    pub(super) fn heard(&self, endpoint: &str, now: Instant) -> bool {
        let mut inner = self.inner(now);
        inner.gone.remove(endpoint);
        inner.heard.insert(endpoint.to_owned(), now).is_none()
    }

    /// The broker at `endpoint` was found gone at `now`: not sent to until heard again.
    pub(super) fn gone(&self, endpoint: &str, now: Instant) {
        let mut inner = self.inner(now);
        inner.heard.remove(endpoint);
        inner.gone.insert(endpoint.to_owned(), now);
    }

    /// The brokers to send a broadcast to (heard within [`REMEMBERED`] of `now` and not found
    /// gone since), and those found gone within [`WINDOW`]; in no particular order.
    pub(super) fn known(&self, now: Instant) -> (Vec<String>, Vec<String>) {
        let inner = self.inner(now);
        (
            inner.heard.keys().cloned().collect(),
            inner.gone.keys().cloned().collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_is_known_until_it_has_been_silent_for_a_minute() {
        let peers = Peers::default();
        let t0 = Instant::now();
        assert_eq!(peers.known(t0), (vec![], vec![]));
        assert!(peers.heard("10.0.0.1:17100", t0), "new");
        assert!(peers.heard("10.0.0.2:17100", t0));
        assert!(!peers.heard("10.0.0.1:17100", t0 + Duration::from_secs(30)));
        let (mut live, _) = peers.known(t0 + REMEMBERED);
        live.sort();
        assert_eq!(live, ["10.0.0.1:17100", "10.0.0.2:17100"]);
        assert_eq!(
            peers.known(t0 + REMEMBERED + Duration::from_secs(1)).0,
            ["10.0.0.1:17100"],
            "silent for over a minute: forgotten"
        );
        assert!(peers.heard("10.0.0.2:17100", t0 + Duration::from_secs(70)));
        assert_eq!(peers.known(t0 + Duration::from_secs(70)).0.len(), 2);
    }

    #[test]
    fn a_broker_found_gone_is_named_as_such_until_heard_again_or_the_window_passes() {
        let peers = Peers::default();
        let t0 = Instant::now();
        peers.heard("a:1", t0);
        peers.heard("b:1", t0);
        peers.gone("b:1", t0);
        assert_eq!(peers.known(t0), (vec!["a:1".into()], vec!["b:1".into()]));
        assert!(
            peers.heard("b:1", t0),
            "back (restarted at the same address)"
        );
        assert_eq!(peers.known(t0).1, Vec::<String>::new());
        peers.gone("a:1", t0);
        assert_eq!(peers.known(t0 + WINDOW).1, ["a:1"]);
        assert_eq!(
            peers.known(t0 + WINDOW + Duration::from_millis(1)),
            (vec!["b:1".into()], vec![]),
            "gone for longer than the window: neither sent to nor named (until heard)"
        );
    }
}
