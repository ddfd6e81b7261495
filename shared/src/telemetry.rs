//! Logging, tracing and signals for the binaries. Logs go to stdout through `tracing`,
//! human-readable on a terminal and JSON lines otherwise, filtered by `RUST_LOG` (default
//! `info`). Spans are exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (off by
//! default), and W3C trace context crosses the tiers through [`traceparent`] and [`set_parent`]
//! (edge → broker on the link, broker → game service in tunnel metadata). Libraries never
//! install a subscriber; only `main`s call [`init`].

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
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

/// Installs the global subscriber for `service` (e.g. `janus-edge`). With
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported there over OTLP/gRPC. Calling it twice
/// is harmless (the second subscriber is ignored).
pub fn init(service: &str) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            use opentelemetry_otlp::WithExportConfig;
            match opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
            {
                Ok(exporter) => Some(
                    SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
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
