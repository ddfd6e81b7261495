//! Logging, tracing and signals for the binaries. Logs go to stdout through `tracing`,
//! human-readable on a terminal and JSON lines otherwise, filtered by `RUST_LOG` (default
//! `info`). Spans are exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (off by
//! default), and W3C trace context crosses the tiers through [`traceparent`] and [`set_parent`]
//! (edge → broker on the link, broker → game service in tunnel metadata). An export that fails
//! (no collector at the endpoint) is logged once; later batches are dropped without a try
//! until a backoff (1 s doubling to 60 s) passes, and a later success is logged too. Libraries
//! never install a subscriber; only `main`s call [`init`].

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use parking_lot::Mutex;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether an OpenTelemetry layer is installed; until one is, [`traceparent`] costs nothing.
static TRACING: AtomicBool = AtomicBool::new(false);

/// Keeps the span exporter running; [`Telemetry::shutdown`] flushes what is pending.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the span exporter, if there is one.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: could not flush spans: {e}");
        }
    }
}

/// The OpenTelemetry layer for spans of `service`, exporting through `provider`.
pub fn otel_layer<S>(
    provider: &SdkTracerProvider,
    service: &str,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    TRACING.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()))
}

/// Installs the global subscriber for `service` (e.g. `janus-edge`), filtering by `RUST_LOG`
/// or else by `default_filter` (e.g. `info`). With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported there over OTLP/gRPC. Calling it twice
/// is harmless (the second subscriber is ignored).
pub fn init(service: &str, default_filter: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            use opentelemetry_otlp::WithExportConfig;
            match opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
            {
                Ok(exporter) => Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(Quiet::new(exporter, endpoint))
                        .with_resource(
                            opentelemetry_sdk::Resource::builder()
                                .with_service_name(service.to_owned())
                                .build(),
                        )
                        .build(),
                ),
                Err(e) => {
                    eprintln!("telemetry: OTLP export disabled: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    let otel = provider.as_ref().map(|p| otel_layer(p, service));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = if std::io::stdout().is_terminal() {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true))
            .try_init()
    };
    Telemetry { provider }
}

/// When exports are tried: after a failure, not again before a delay that doubles with each
/// further failure (from [`Backoff::FIRST`] up to [`Backoff::MAX`]); a success resets it.
#[derive(Debug, Default)]
struct Backoff {
    /// Set while failing: the delay after the last failure and when the next try may run.
    failing: Option<(Duration, Instant)>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    /// Whether an export may be tried at `now`.
    fn may_try(&self, now: Instant) -> bool {
        self.failing.is_none_or(|(_, next)| now >= next)
    }

    /// Records a failed try at `now`; true when it is the first since the last success (the
    /// one to log).
    fn failed(&mut self, now: Instant) -> bool {
        let delay = match self.failing {
            None => Self::FIRST,
            Some((delay, _)) => (delay * 2).min(Self::MAX),
        };
        let first = self.failing.is_none();
        self.failing = Some((delay, now + delay));
        first
    }

    /// Records a successful try; true when it ends a run of failures (the one to log).
    fn succeeded(&mut self) -> bool {
        self.failing.take().is_some()
    }
}

/// A span exporter that logs its first failure and backs off instead of failing (and being
/// logged as an ERROR by the batch processor) on every batch; spans of skipped or failed
/// batches are dropped.
#[derive(Debug)]
struct Quiet<E> {
    inner: E,
    endpoint: String,
    backoff: Mutex<Backoff>,
}

impl<E> Quiet<E> {
    fn new(inner: E, endpoint: String) -> Self {
        Quiet {
            inner,
            endpoint,
            backoff: Mutex::new(Backoff::default()),
        }
    }

    fn backoff(&self) -> parking_lot::MutexGuard<'_, Backoff> {
        self.backoff.lock()
    }
}

impl<E: SpanExporter> SpanExporter for Quiet<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if !self.backoff().may_try(Instant::now()) {
            return Ok(());
        }
        match self.inner.export(batch).await {
            Ok(()) => {
                if self.backoff().succeeded() {
                    tracing::info!(endpoint = %self.endpoint, "OTLP span export works again");
                }
            }
            Err(e) => {
                if self.backoff().failed(Instant::now()) {
                    tracing::warn!(endpoint = %self.endpoint, error = %e,
                        "OTLP span export failed; dropping spans and retrying with backoff (logged once)");
                }
            }
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The W3C `traceparent` of the current span, or an empty string when it is not traced (and,
/// without an OpenTelemetry layer, without any work: it runs once per forwarded packet).
pub fn traceparent() -> String {
    if !TRACING.load(Ordering::Relaxed) {
        return String::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of the remote span named by `traceparent` (ignored when empty or
/// malformed).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(context);
}

/// Resolves when the process is asked to stop: SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};

    use super::{Backoff, Quiet};

    #[test]
    fn backoff_logs_the_first_failure_only_and_doubles_up_to_the_cap() {
        let t0 = Instant::now();
        let mut backoff = Backoff::default();
        assert!(backoff.may_try(t0));
        assert!(backoff.failed(t0), "the first failure is the one logged");
        assert!(!backoff.may_try(t0 + Duration::from_millis(999)));
        assert!(backoff.may_try(t0 + Duration::from_secs(1)));
        let mut now = t0 + Duration::from_secs(1);
        for delay in [2, 4, 8, 16, 32, 60, 60] {
            assert!(!backoff.failed(now), "later failures are not logged");
            assert!(!backoff.may_try(now + Duration::from_secs(delay) - Duration::from_millis(1)));
            now += Duration::from_secs(delay);
            assert!(backoff.may_try(now));
        }
        assert!(backoff.succeeded(), "the recovery is logged");
        assert!(!backoff.succeeded());
        assert!(backoff.may_try(now));
        assert!(backoff.failed(now), "a new run of failures is logged again");
    }

    /// An exporter whose collector is gone: every export fails.
    #[derive(Debug, Default)]
    struct Dead(AtomicUsize);

    impl SpanExporter for Dead {
        async fn export(&self, _: Vec<SpanData>) -> OTelSdkResult {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(OTelSdkError::InternalFailure("connection refused".into()))
        }
    }

    #[tokio::test]
    async fn a_dead_collector_is_tried_once_per_backoff_and_never_fails_the_batch() {
        let quiet = Quiet::new(Dead::default(), "http://127.0.0.1:1".into());
        for _ in 0..10 {
            assert!(quiet.export(Vec::new()).await.is_ok());
        }
        assert_eq!(
            quiet.inner.0.load(Ordering::Relaxed),
            1,
            "no retry within the backoff"
        );
    }
}
