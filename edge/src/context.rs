//! What every session of one edge shares: the configuration, the keys, the broker links, the
//! metrics, the admission limits, the lifecycle and the resume tickets. Built once by
//! `Edge::start` and read by the listeners, the sessions and the admin endpoint; it owns no
//! task and no socket, and uses no module that uses it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use janus_protocol::handshake::{ResumeOffer, ServerHandshakeConfig};

use crate::config::EdgeConfig;
use crate::drain::Lifecycle;
use crate::limits::Admission;
use crate::link::Links;
use crate::metrics::Metrics;
use crate::resume::Tickets;

/// What every session of one edge shares.
#[derive(Debug)]
pub(crate) struct EdgeState {
    /// The validated configuration (shared with every session's machine).
    pub(crate) config: Arc<EdgeConfig>,
    /// This edge's id (`config.edge_id()`, resolved once by `Edge::start`).
    pub(crate) edge_id: String,
    /// Keys and rules of the handshake.
    pub(crate) handshake: Arc<ServerHandshakeConfig>,
    /// Broker links.
    pub(crate) links: Arc<Links>,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// Admission limits.
    pub(crate) admission: Admission,
    /// Serving, draining, logging out, stopped.
    pub(crate) lifecycle: Lifecycle,
    /// Issues and opens resume tickets.
    pub(crate) tickets: Tickets,
    next_session: AtomicU64,
}

impl EdgeState {
    /// The shared state of a new edge.
    pub(crate) fn new(
        config: EdgeConfig,
        edge_id: String,
        handshake: Arc<ServerHandshakeConfig>,
        links: Arc<Links>,
        lifecycle: Lifecycle,
    ) -> Self {
        let limits = &config.limits;
        let admission = Admission::new(
            limits.max_sessions,
            limits.max_sessions_per_ip,
            limits.handshakes_per_ip_per_sec,
        );
        Self {
            edge_id,
            tickets: Tickets::new(
                &handshake.signing_key,
                handshake.other_signing_keys.values(),
            ),
            config: Arc::new(config),
            handshake,
            links,
            metrics: Metrics::new(),
            admission,
            lifecycle,
            next_session: AtomicU64::new(1),
        }
    }

    /// The id of the next session (unique on this edge, the link's key for it).
    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// A ticket for `uid`'s session at `broker`, with this edge's window.
    pub(crate) fn offer(&self, uid: i64, broker: &str) -> ResumeOffer {
        ResumeOffer {
            ticket: self.tickets.issue(uid, broker),
            window_secs: i32::try_from(self.config.resume.window_secs.as_secs())
                .unwrap_or(i32::MAX),
        }
    }
}
