//! A Prometheus registry with the three constructors every tier uses, so metric definitions in
//! the edge and the broker are one line each and render the same way on `/metrics`, and the
//! admin routes both tiers serve with it.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 50 µs to about 7 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_05, 2.5, 14).expect("valid buckets")
}

/// One process's metrics registry.
#[derive(Debug, Clone, Default)]
pub struct MetricsRegistry {
    registry: Registry,
    names: Arc<Mutex<Vec<String>>>,
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a labelled gauge. Panics on a duplicate or invalid name (a programming error,
    /// caught by any test that builds the metrics).
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.named(name);
        self.registry
            .register(Box::new(metric.clone()))
            .expect("unique metric");
        metric
    }

    /// Registers a labelled counter.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        self.named(name);
        self.registry
            .register(Box::new(metric.clone()))
            .expect("unique metric");
        metric
    }

    /// Registers a labelled latency histogram (seconds).
    pub fn latency(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(latency_buckets());
        let metric = HistogramVec::new(opts, labels).expect("valid metric");
        self.named(name);
        self.registry
            .register(Box::new(metric.clone()))
            .expect("unique metric");
        metric
    }

    fn named(&self, name: &str) {
        let mut names = self.names.lock();
        names.push(name.to_owned());
    }

    /// The name of every registered metric family, whether or not it has samples yet
    /// (dashboards and alerts are checked against it).
    pub fn names(&self) -> Vec<String> {
        self.names.lock().clone()
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

/// The admin routes every tier serves beside its own: `/health` (the process is up) and
/// `/metrics` (the Prometheus text exposition of `registry`).
pub fn admin_routes<S: Clone + Send + Sync + 'static>(
    registry: MetricsRegistry,
) -> axum::Router<S> {
    use axum::routing::get;
    axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let text = registry.render();
                async move { ([("content-type", "text/plain; version=0.0.4")], text) }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_render_with_their_labels() {
        let registry = MetricsRegistry::new();
        let closes = registry.counter("janus_test_closes_total", "closes", &["reason"]);
        closes.with_label_values(&["idle_timeout"]).inc();
        registry
            .latency("janus_test_seconds", "latency", &["t"])
            .with_label_values(&["tcp"])
            .observe(0.001);
        let text = registry.render();
        assert!(
            text.contains("janus_test_closes_total{reason=\"idle_timeout\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("janus_test_seconds_bucket{t=\"tcp\""),
            "{text}"
        );
    }
}
