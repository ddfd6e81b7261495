//! The edge's one lifecycle: serving → draining → logging out → stopped, a single watch that
//! listeners, the broker links, the admin endpoint and every session read. While draining, each
//! session whose client holds a resume ticket is told to reconnect (`SCReconnect`, PROTOCOL.md
//! §13.6) at its own moment of the spread, so the other edges take the clients over gradually
//! rather than in one storm; sessions that cannot resume run on until the grace ends and are
//! logged out then. What a session must do, and when, is [`next_step`]: plain values in, a
//! deadline out, so the session's machine keeps it as data.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Where the edge is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepting and serving.
    Serving,
    /// Accepting nothing new; resumable clients are being moved, from `since` on.
    Draining {
        /// When the drain began.
        since: Instant,
    },
    /// The grace is over: whoever is left is logged out (or, holding a ticket, parked).
    LoggingOut {
        /// When the grace ended.
        since: Instant,
    },
    /// Every session is gone or abandoned: the links, the KCP socket and the admin endpoint
    /// stop.
    Stopped {
        /// When the edge stopped.
        since: Instant,
    },
}

/// The edge's phase.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    phase: watch::Sender<Phase>,
}

/// What a session must do because of the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Tell the client to reconnect now.
    Hint,
    /// End the session (`Close::Shutdown`).
    Leave,
}

/// How long a client told to reconnect has to go before its connection is closed for it.
pub(crate) const LEAVE_AFTER_HINT: Duration = Duration::from_secs(5);

impl Lifecycle {
    /// A serving edge.
    pub(crate) fn new() -> Self {
        Self {
            phase: watch::channel(Phase::Serving).0,
        }
    }

    /// Whether new connections are taken.
    pub(crate) fn accepting(&self) -> bool {
        *self.phase.borrow() == Phase::Serving
    }

    /// Moves to `phase`.
    pub(crate) fn set(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// A view of the phase, for a session or a task that follows it.
    pub(crate) fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Resolves once the edge takes no new connection.
    pub(crate) async fn stopped_accepting(&self) {
        wait(self.watch(), |phase| *phase != Phase::Serving).await;
    }

    /// Resolves once the edge has stopped.
    pub(crate) async fn stopped(&self) {
        stopped(self.watch()).await;
    }
}

/// Resolves once the phase `watch` follows is [`Phase::Stopped`] (or its edge is gone).
pub(crate) async fn stopped(watch: watch::Receiver<Phase>) {
    wait(watch, |phase| matches!(phase, Phase::Stopped { .. })).await;
}

async fn wait(mut watch: watch::Receiver<Phase>, until: impl FnMut(&Phase) -> bool) {
    // An error means the lifecycle is gone, which is as good as stopped.
    let _ = watch.wait_for(until).await;
}

/// What session `id` must do next in `phase`, and from when: hint at its moment of the drain
/// (only a `resumable` one, and once: `hinted` is when it was told), leave `LEAVE_AFTER_HINT`
/// after its hint or when the edge logs out. `None` while there is nothing to do.
pub(crate) fn next_step(
    phase: Phase,
    id: u64,
    resumable: bool,
    hinted: Option<Instant>,
    spread: Duration,
) -> Option<(Instant, Step)> {
    match phase {
        Phase::Serving => None,
        Phase::LoggingOut { since } | Phase::Stopped { since } => Some((since, Step::Leave)),
        Phase::Draining { since } => match (resumable, hinted) {
            (_, Some(at)) => Some((at + LEAVE_AFTER_HINT, Step::Leave)),
            (true, None) => Some((since + hint_delay(id, spread), Step::Hint)),
            (false, None) => None,
        },
    }
}

/// When, after the drain began, session `id` is told to reconnect: spread evenly over `spread`
/// by a mix of the id, so sessions opened together are not told together.
fn hint_delay(id: u64, spread: Duration) -> Duration {
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    spread.mul_f64(z as f64 / u64::MAX as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_spread_evenly_over_the_spread() {
        let spread = Duration::from_secs(10);
        let mut per_second = [0u32; 10];
        for id in 1..=10_000 {
            let delay = hint_delay(id, spread);
            assert!(delay <= spread);
            per_second[delay.as_secs().min(9) as usize] += 1;
        }
        for (second, n) in per_second.iter().enumerate() {
            assert!(
                (850..1150).contains(n),
                "second {second} got {n} of 10 000 hints"
            );
        }
        assert_eq!(hint_delay(7, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_resumable_session_is_hinted_at_its_moment_then_leaves_and_others_wait_for_the_end() {
        let spread = Duration::from_secs(10);
        let start = Instant::now();
        assert_eq!(next_step(Phase::Serving, 42, true, None, spread), None);
        let draining = Phase::Draining { since: start };
        let hint = start + hint_delay(42, spread);
        assert_eq!(
            next_step(draining, 42, true, None, spread),
            Some((hint, Step::Hint))
        );
        assert_eq!(
            next_step(draining, 42, true, Some(hint), spread),
            Some((hint + LEAVE_AFTER_HINT, Step::Leave))
        );
        assert_eq!(
            next_step(draining, 43, false, None, spread),
            None,
            "a client that cannot resume is not moved"
        );
        let end = start + Duration::from_secs(60);
        for phase in [
            Phase::LoggingOut { since: end },
            Phase::Stopped { since: end },
        ] {
            assert_eq!(
                next_step(phase, 43, false, None, spread),
                Some((end, Step::Leave))
            );
        }
    }

    #[tokio::test]
    async fn the_watchers_see_the_edge_stop_accepting_then_stop() {
        let life = Lifecycle::new();
        assert!(life.accepting());
        let since = Instant::now();
        life.set(Phase::Draining { since });
        life.stopped_accepting().await;
        assert!(!life.accepting());
        let stopped = stopped(life.watch());
        life.set(Phase::Stopped { since });
        stopped.await;
    }
}
