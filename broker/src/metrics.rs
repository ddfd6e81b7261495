//! The broker's Prometheus metrics (`janus_broker_*`), rendered by the admin endpoint.

use janus_ops::metrics::MetricsRegistry;
use prometheus::{HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};

/// Every metric of one broker.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry holding every metric of this struct: what `/metrics` renders.
    pub registry: MetricsRegistry,
    /// Live sessions; edges linked.
    pub live: IntGaugeVec,
    /// Sessions refused, by reason.
    pub refused: IntCounterVec,
    /// Sessions ended by the broker, by SCServerLogout code name.
    pub kicks: IntCounterVec,
    /// Admin requests refused, by reason: `no_token_configured`, `missing_token`, `wrong_token`.
    pub admin_refused: IntCounterVec,
    /// Internal connections and calls refused (PROTOCOL.md §15), by `api` (`connection` for
    /// a refused handshake) and `reason`.
    pub internal_refused: IntCounterVec,
    /// Internal TLS material read again, by `result` (`ok`, `error`: refused, old kept).
    pub tls_reloads: IntCounterVec,
    /// Tunnel opens by service and result (`ok` or an error kind).
    pub tunnels: IntCounterVec,
    /// Client packets refused before any tunnel, by reason.
    pub packets_refused: IntCounterVec,
    /// Route-store failures by operation.
    pub route_errors: IntCounterVec,
    /// Pushes by kind (`multicast`, `broadcast`, `ingress`, `bus`).
    pub pushes: IntCounterVec,
    /// Push deliveries dropped, by why: `edge_queue_full`, `owner_gone` (a push for a session
    /// whose broker went away that waited in vain, PROTOCOL.md §13.5).
    pub push_dropped: IntCounterVec,
    /// Pushes for sessions whose broker went away, by `result`: `waited` (held for the
    /// session's new route), `sent` (sent on to where it is now).
    pub stray_pushes: IntCounterVec,
    /// Broadcasts that found a broker gone (PROTOCOL.md §13.5), by `result`: `noticed` (once
    /// per broadcast and gone broker), `delivered` (to a session adopted from it, once per
    /// session), `forgotten` (a notice forgotten for room).
    pub missed_broadcasts: IntCounterVec,
    /// Push calls answered before a session's edge said it held the push, or before a parked
    /// session's copy in the route store held it (not within the wait), `by` edge id or
    /// `parked_copy`.
    pub push_unheld: IntCounterVec,
    /// Time to resolve and fan out one push, seconds.
    pub push_fanout_seconds: HistogramVec,
    /// Time from a request entering a tunnel to its reply coming back, seconds.
    pub tunnel_seconds: HistogramVec,
    /// Sessions waiting for their client to resume.
    pub parked: IntGauge,
    /// Resumes decided here, by result (`ok` or the refusal's close reason).
    pub resumes: IntCounterVec,
    /// Resumable sessions that ended without their client, by reason (`resume_expired`,
    /// `resume_overflow`, `resume_gap`, `resume_limit`, `handover_expired`).
    pub lost: IntCounterVec,
    /// Sessions moved between brokers (PROTOCOL.md §13.5): `handed_over` (an edge moved one
    /// away from here), `adopted` (its new broker took it), `forwarded_packets` (packets that
    /// reached this broker after the handover and were sent on to the new one).
    pub handovers: IntCounterVec,
    /// Server packets of backlogged or paced sessions (PROTOCOL.md §16), by `class` (`state`,
    /// `event`, `reply`) and `outcome`: `held` (waited at the broker), `replaced` (a newer
    /// state packet of its key took its place: never sent, never counted), `paced` (held for
    /// its key's rate cap), `dropped` (a state packet forgotten for `max_state_keys`),
    /// `overflow` (the event or reply that ended its session as `slow_consumer`).
    pub delivery: IntCounterVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let r = MetricsRegistry::new();
        Self {
            live: r.gauge(
                "janus_broker_live",
                "Live sessions and linked edges",
                &["what"],
            ),
            refused: r.counter(
                "janus_broker_sessions_refused_total",
                "Sessions refused",
                &["reason"],
            ),
            admin_refused: r.counter(
                "janus_broker_admin_refused_total",
                "Mutating admin requests refused (no token configured, none sent, a wrong one)",
                &["reason"],
            ),
            internal_refused: r.counter(
                "janus_broker_internal_refused_total",
                "Internal gRPC connections and calls refused (certificate, role, plaintext)",
                &["api", "reason"],
            ),
            tls_reloads: r.counter(
                "janus_broker_internal_tls_reloads_total",
                "Internal TLS material reloaded (ok) or refused with the old kept (error)",
                &["result"],
            ),
            kicks: r.counter(
                "janus_broker_kicks_total",
                "Sessions ended by the broker",
                &["code"],
            ),
            tunnels: r.counter(
                "janus_broker_tunnel_opens_total",
                "Tunnel opens",
                &["service", "result"],
            ),
            packets_refused: r.counter(
                "janus_broker_packets_refused_total",
                "Client packets refused",
                &["reason"],
            ),
            route_errors: r.counter(
                "janus_broker_route_errors_total",
                "Route store failures",
                &["op"],
            ),
            pushes: r.counter("janus_broker_pushes_total", "Pushes handled", &["kind"]),
            push_dropped: r.counter(
                "janus_broker_push_dropped_total",
                "Push deliveries dropped (a full edge queue, a broker gone for good)",
                &["kind"],
            ),
            push_unheld: r.counter(
                "janus_broker_push_unheld_total",
                "Push calls answered before an edge or a parked copy confirmed it held the push",
                &["by"],
            ),
            stray_pushes: r.counter(
                "janus_broker_stray_pushes_total",
                "Pushes for sessions whose broker went away, held and sent on",
                &["result"],
            ),
            missed_broadcasts: r.counter(
                "janus_broker_missed_broadcasts_total",
                "Broadcasts that found a broker gone, delivered to its sessions where they went",
                &["result"],
            ),
            push_fanout_seconds: r.latency(
                "janus_broker_push_fanout_seconds",
                "Push resolve and fan-out",
                &["kind"],
            ),
            tunnel_seconds: r.latency(
                "janus_broker_tunnel_seconds",
                "Tunnel request to reply (game service round trip)",
                &["service"],
            ),
            parked: r
                .gauge(
                    "janus_broker_sessions_parked",
                    "Sessions waiting for their client to resume",
                    &[],
                )
                .with_label_values(&[] as &[&str]),
            resumes: r.counter(
                "janus_broker_resumes_total",
                "Resumes decided by this broker",
                &["result"],
            ),
            lost: r.counter(
                "janus_broker_sessions_lost_total",
                "Resumable sessions ended without their client",
                &["reason"],
            ),
            delivery: r.counter(
                "janus_broker_delivery_total",
                "Server packets of backlogged or paced sessions, by class and outcome",
                &["class", "outcome"],
            ),
            handovers: r.counter(
                "janus_broker_handovers_total",
                "Sessions moved to another broker, and packets forwarded after them",
                &["result"],
            ),
            registry: r,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
