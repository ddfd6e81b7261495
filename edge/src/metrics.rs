//! The edge's Prometheus metrics (`janus_edge_*`), registered in one registry that the admin
//! endpoint renders.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of one edge.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Live sessions by transport.
    pub sessions: IntGaugeVec,
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
    /// Handshake duration, seconds.
    pub handshake_seconds: HistogramVec,
    /// Time to hand a client packet to the broker link, seconds.
    pub forward_seconds: HistogramVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let buckets =
                prometheus::exponential_buckets(0.000_05, 2.5, 14).expect("valid buckets");
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        Self {
            sessions: gauge("janus_edge_sessions", "Live sessions", &["transport"]),
            handshakes: counter(
                "janus_edge_handshakes_total",
                "Handshakes by result",
                &["result"],
            ),
            frames: counter(
                "janus_edge_frames_total",
                "Frames",
                &["transport", "direction"],
            ),
            bytes: counter(
                "janus_edge_bytes_total",
                "Bytes",
                &["transport", "direction"],
            ),
            closes: counter(
                "janus_edge_closes_total",
                "Ended sessions by reason",
                &["reason"],
            ),
            refused: counter(
                "janus_edge_refused_total",
                "Connections refused before the handshake",
                &["reason"],
            ),
            handshake_seconds: histogram(
                "janus_edge_handshake_seconds",
                "Handshake duration",
                &["transport"],
            ),
            forward_seconds: histogram(
                "janus_edge_forward_seconds",
                "Client packet to broker link",
                &["transport"],
            ),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding does not fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
