//! Admission and rate limits: token buckets for a session's packets and bytes, and a per-IP
//! table of live sessions and recent connection attempts. Pure state fed with `Instant`s, so it
//! is tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        self.tokens = self.level(now);
        self.at = now;
    }

    /// Tokens in the bucket at `now`.
    pub(crate) fn level(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.burst)
    }

    /// The bucket as it was `since` ago with `tokens` in it (a session's buckets, carried to
    /// its next connection), refilled for the time between.
    pub(crate) fn set_level(&mut self, tokens: f64, since: Duration, now: Instant) {
        self.tokens = (tokens.max(0.0) + since.as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes `n` tokens if there are that many; false (and nothing taken) otherwise.
    pub(crate) fn take(&mut self, n: u32, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= f64::from(n) {
            self.tokens -= f64::from(n);
            true
        } else {
            false
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The edge holds `limits.max_sessions`.
    EdgeFull,
    /// The IP holds `limits.max_sessions_per_ip`.
    IpFull,
    /// The IP opened more than `limits.handshakes_per_ip_per_sec` connections this second.
    IpRate,
}

impl Refusal {
    /// The metric label.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Refusal::EdgeFull => "max_sessions",
            Refusal::IpFull => "max_sessions_per_ip",
            Refusal::IpRate => "handshake_rate",
        }
    }
}

#[derive(Debug, Default)]
struct PerIp {
    sessions: usize,
    window: Option<Instant>,
    attempts: u32,
}

/// Live sessions and connection attempts, edge-wide and per IP.
#[derive(Debug)]
pub(crate) struct Admission {
    max_sessions: usize,
    max_per_ip: usize,
    attempts_per_sec: u32,
    state: Mutex<(usize, HashMap<IpAddr, PerIp>)>,
    admits: std::sync::atomic::AtomicU64,
}

/// Every this many admissions, per-IP entries with no session and no recent attempt are
/// dropped, so the table stays the size of the live and recently active IPs.
const SWEEP_EVERY: u64 = 256;

fn stale(entry: &PerIp, now: Instant) -> bool {
    entry.sessions == 0
        && entry
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1))
}

impl Admission {
    /// Admission with these limits.
    pub(crate) fn new(max_sessions: usize, max_per_ip: usize, attempts_per_sec: u32) -> Self {
        Self {
            max_sessions,
            max_per_ip,
            attempts_per_sec,
            state: Mutex::new((0, HashMap::new())),
            admits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Admits a connection from `ip`; the caller must [`Admission::release`] it when it ends.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let mut guard = self.state.lock();
        let (total, per_ip) = &mut *guard;
        if self
            .admits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            per_ip.retain(|_, entry| !stale(entry, now));
        }
        let entry = per_ip.entry(ip).or_default();
        if entry
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1))
        {
            entry.window = Some(now);
            entry.attempts = 0;
        }
        entry.attempts += 1;
        let refusal = if entry.attempts > self.attempts_per_sec {
            Some(Refusal::IpRate)
        } else if *total >= self.max_sessions {
            Some(Refusal::EdgeFull)
        } else if entry.sessions >= self.max_per_ip {
            Some(Refusal::IpFull)
        } else {
            None
        };
        match refusal {
            Some(refusal) => Err(refusal),
            None => {
                entry.sessions += 1;
                *total += 1;
                Ok(())
            }
        }
    }

    /// Releases a connection admitted for `ip`. Its entry outlives the session while its
    /// attempt window is recent, so closing connections does not reset the attempt rate.
    pub(crate) fn release(&self, ip: IpAddr, now: Instant) {
        let mut guard = self.state.lock();
        let (total, per_ip) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(entry) = per_ip.get_mut(&ip) {
            entry.sessions = entry.sessions.saturating_sub(1);
            if stale(entry, now) {
                per_ip.remove(&ip);
            }
        }
    }

    /// Sessions admitted and not yet released.
    pub(crate) fn sessions(&self) -> usize {
        self.state.lock().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_carried_to_a_new_connection_keeps_its_level_refilled_for_the_time_between() {
        let t0 = Instant::now();
        let mut before = TokenBucket::new(10, 5, t0);
        assert!(before.take(5, t0), "the client spent its burst");
        let level = before.level(t0);
        let mut after = TokenBucket::new(10, 5, t0);
        after.set_level(level, Duration::from_millis(200), t0);
        assert!(after.take(2, t0), "two tokens came back in 200 ms");
        assert!(!after.take(1, t0), "not the whole burst");
        after.set_level(0.0, Duration::from_secs(60), t0);
        assert!((after.level(t0) - 5.0).abs() < 1e-9, "never past the burst");
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, t0);
        assert!(bucket.take(1, t0) && bucket.take(1, t0) && bucket.take(1, t0));
        assert!(!bucket.take(1, t0), "burst spent");
        assert!(
            bucket.take(1, t0 + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!bucket.take(1, t0 + Duration::from_millis(150)));
        assert!(
            !bucket.take(5, t0 + Duration::from_secs(60)),
            "never more than the burst"
        );
    }

    #[test]
    fn admission_enforces_each_limit_and_release_frees_it() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let admission = Admission::new(3, 2, 100);
        assert_eq!(admission.admit(ip, t0), Ok(()));
        assert_eq!(admission.admit(ip, t0), Ok(()));
        assert_eq!(admission.admit(ip, t0), Err(Refusal::IpFull));
        assert_eq!(admission.admit(other, t0), Ok(()));
        assert_eq!(admission.admit(other, t0), Err(Refusal::EdgeFull));
        admission.release(ip, t0);
        assert_eq!(admission.admit(other, t0), Ok(()));
        assert_eq!(admission.sessions(), 3);
    }

    #[test]
    fn connection_attempts_per_ip_are_rate_limited_per_second() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let admission = Admission::new(100, 100, 2);
        assert!(admission.admit(ip, t0).is_ok());
        assert!(admission.admit(ip, t0).is_ok());
        assert_eq!(admission.admit(ip, t0), Err(Refusal::IpRate));
        assert!(admission.admit(ip, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn closing_connections_does_not_reset_the_attempt_rate() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        let admission = Admission::new(100, 100, 2);
        for _ in 0..2 {
            assert!(admission.admit(ip, t0).is_ok());
            admission.release(ip, t0);
        }
        assert_eq!(admission.admit(ip, t0), Err(Refusal::IpRate));
        let later = t0 + Duration::from_secs(2);
        assert!(
            admission.admit(ip, later).is_ok(),
            "a new second, a new window"
        );
        admission.release(ip, later + Duration::from_secs(2));
        assert!(admission.state.lock().1.is_empty(), "stale entries go");
    }
}
