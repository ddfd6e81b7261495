//! The edge's Prometheus metrics (`janus_edge_*`), rendered by the admin endpoint.

use janus_ops::metrics::MetricsRegistry;
use janus_proto::janus::internal::v1::Transport;
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

/// Every metric of one edge.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry holding every metric of this struct: what `/metrics` renders.
    pub registry: MetricsRegistry,
    /// Handshakes answered, by `kind` (`login`, `resume`), `cert_version` (the signing key that
    /// answered, PROTOCOL.md §3.4) and `token_key` (`current`, `previous`, §6; `none` for a
    /// resume): when a rollover's old key may go.
    pub handshake_keys: IntCounterVec,
    /// Live sessions by transport.
    pub sessions: IntGaugeVec,
    /// Internal TLS material read again, by `result` (`ok`, `error`: refused, old kept).
    pub tls_reloads: IntCounterVec,
    /// Handshakes by result (`ok` or a failure reason).
    pub handshakes: IntCounterVec,
    /// Frames by transport and direction (`in`, `out`).
    pub frames: IntCounterVec,
    /// Bytes by transport and direction.
    pub bytes: IntCounterVec,
    /// Ended sessions by reason.
    pub closes: IntCounterVec,
    /// Connections refused before the handshake, by reason.
    pub refused: IntCounterVec,
    /// KCP packets recovered from FEC parity.
    pub kcp_fec_recovered: IntCounter,
    /// Bounded queues that overflowed (the session behind them was closed), by queue.
    pub queue_overflows: IntCounterVec,
    /// Handshake duration, seconds.
    pub handshake_seconds: HistogramVec,
    /// Time to hand a client packet to the broker link, seconds.
    pub forward_seconds: HistogramVec,
    /// Resume attempts by result (`ok` or a refusal reason).
    pub resumes: IntCounterVec,
    /// Sessions whose broker went away, waiting for one to be up.
    pub waiting_for_broker: IntGauge,
    /// Sessions moved to the broker the hash picks now, after a broker came up.
    pub moves: IntCounter,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let r = MetricsRegistry::new();
        Self {
            sessions: r.gauge("janus_edge_sessions", "Live sessions", &["transport"]),
            tls_reloads: r.counter(
                "janus_edge_internal_tls_reloads_total",
                "Internal TLS material reloaded (ok) or refused with the old kept (error)",
                &["result"],
            ),
            handshakes: r.counter(
                "janus_edge_handshakes_total",
                "Handshakes by result",
                &["result"],
            ),
            handshake_keys: r.counter(
                "janus_edge_handshake_keys_total",
                "Handshakes answered, by kind (login, resume), the cert_version of the signing key that answered and the token key that opened a login's token (none for resumes)",
                &["kind", "cert_version", "token_key"],
            ),
            frames: r.counter(
                "janus_edge_frames_total",
                "Frames",
                &["transport", "direction"],
            ),
            bytes: r.counter(
                "janus_edge_bytes_total",
                "Bytes",
                &["transport", "direction"],
            ),
            closes: r.counter(
                "janus_edge_closes_total",
                "Ended sessions by reason",
                &["reason"],
            ),
            refused: r.counter(
                "janus_edge_refused_total",
                "Connections refused before the handshake",
                &["reason"],
            ),
            kcp_fec_recovered: r
                .counter(
                    "janus_edge_kcp_fec_recovered_total",
                    "KCP packets recovered from FEC parity",
                    &[],
                )
                .with_label_values::<&str>(&[]),
            queue_overflows: r.counter(
                "janus_edge_queue_overflows_total",
                "Bounded queues that overflowed",
                &["queue"],
            ),
            handshake_seconds: r.latency(
                "janus_edge_handshake_seconds",
                "Handshake duration",
                &["transport"],
            ),
            forward_seconds: r.latency(
                "janus_edge_forward_seconds",
                "Client packet to broker link",
                &["transport"],
            ),
            waiting_for_broker: r
                .gauge(
                    "janus_edge_sessions_waiting_for_broker",
                    "Sessions waiting for a broker to be up",
                    &[],
                )
                .with_label_values::<&str>(&[]),
            moves: r
                .counter(
                    "janus_edge_session_moves_total",
                    "Sessions moved to the broker the rendezvous hash picks now",
                    &[],
                )
                .with_label_values::<&str>(&[]),
            resumes: r.counter(
                "janus_edge_resumes_total",
                "Resume attempts by result",
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

/// The metric label of a transport.
pub(crate) fn label(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "tcp",
        Transport::Websocket => "websocket",
        Transport::Kcp => "kcp",
        Transport::Quic => "quic",
        Transport::Unspecified => "unspecified",
    }
}
