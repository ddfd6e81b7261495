//! The edge's one lifecycle: serving → draining → logging out → stopped, a single watch that
//! listeners, the admin endpoint and every session read. While draining, each session whose
//! client holds a resume ticket is told to reconnect (`SCReconnect`, PROTOCOL.md §13.6) at its
//! own moment of the spread, so the other edges take the clients over gradually rather than in
//! one storm; sessions that cannot resume run on until the grace ends and are logged out then.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Where the edge is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting and serving.
    Serving,
    /// Accepting nothing new; resumable clients are being moved, from `since` on.
    Draining {
        /// When the drain began.
        since: Instant,
    },
    /// The grace is over: whoever is left is logged out (or, holding a ticket, parked).
    LoggingOut,
}

/// The edge's phase, and how the drain spreads its reconnect hints.
#[derive(Debug)]
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    spread: Duration,
}

/// What a session must do because of the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Tell the client to reconnect now.
    Hint,
    /// End the session (`Close::Shutdown`).
    Leave,
}

/// How long a client told to reconnect has to go before its connection is closed for it.
pub const LEAVE_AFTER_HINT: Duration = Duration::from_secs(5);

impl Lifecycle {
    /// A serving edge whose drain spreads its hints over `spread`.
    pub fn new(spread: Duration) -> Self {
        Self {
            phase: watch::channel(Phase::Serving).0,
            spread,
        }
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Whether new connections are taken.
    pub fn accepting(&self) -> bool {
        self.phase() == Phase::Serving
    }

    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// A session's view of the phase.
    pub fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// What session `id` must do next: hint at its moment of the drain (only a `resumable`
    /// one, and once: `hinted` is when it was told), leave `LEAVE_AFTER_HINT` after its hint
    /// or when the edge logs out. Pending while there is nothing to do.
    pub async fn next_step(
        &self,
        watch: &mut watch::Receiver<Phase>,
        id: u64,
        resumable: bool,
        hinted: Option<Instant>,
    ) -> Step {
        loop {
            let phase = *watch.borrow_and_update();
            let due = match phase {
                Phase::Serving => None,
                Phase::LoggingOut => return Step::Leave,
                Phase::Draining { since } => match (resumable, hinted) {
                    (_, Some(at)) => Some((at + LEAVE_AFTER_HINT, Step::Leave)),
                    (true, None) => Some((since + hint_delay(id, self.spread), Step::Hint)),
                    (false, None) => None,
                },
            };
            let changed = async {
                if watch.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            match due {
                None => changed.await,
                Some((at, step)) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return step,
                    () = changed => {}
                },
            }
        }
    }
}

/// When, after the drain began, session `id` is told to reconnect: spread evenly over `spread`
/// by a mix of the id, so sessions opened together are not told together.
pub fn hint_delay(id: u64, spread: Duration) -> Duration {
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

    #[tokio::test(start_paused = true)]
    async fn a_resumable_session_is_hinted_at_its_moment_then_leaves_and_others_wait_for_the_end() {
        let life = Lifecycle::new(Duration::from_secs(10));
        let (mut resumable, mut legacy) = (life.watch(), life.watch());
        let start = Instant::now();
        life.set(Phase::Draining { since: start });
        assert_eq!(
            life.next_step(&mut resumable, 42, true, None).await,
            Step::Hint
        );
        // The timer wheel rounds to milliseconds.
        let late = start
            .elapsed()
            .abs_diff(hint_delay(42, Duration::from_secs(10)));
        assert!(late <= Duration::from_millis(1), "{late:?}");
        let hinted = Instant::now();
        assert_eq!(
            life.next_step(&mut resumable, 42, true, Some(hinted)).await,
            Step::Leave
        );
        assert!(hinted.elapsed().abs_diff(LEAVE_AFTER_HINT) <= Duration::from_millis(1));
        let waiting = life.next_step(&mut legacy, 43, false, None);
        tokio::pin!(waiting);
        tokio::select! {
            _ = &mut waiting => panic!("a client that cannot resume is not moved"),
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        life.set(Phase::LoggingOut);
        assert_eq!(waiting.await, Step::Leave);
        assert!(!life.accepting());
    }
}
