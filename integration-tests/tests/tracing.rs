//! W3C trace context crosses the tiers: one client request is one trace, from the edge's
//! session span through the broker's forward span to the tunnel it opens.

use std::time::Duration;

use janus_integration_tests::stack::Stack;
use janus_proto::packet::Packet;
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

fn find<'a>(spans: &'a [SpanData], name: &str, with_attribute: &str) -> Option<&'a SpanData> {
    spans.iter().find(|s| {
        s.name == name
            && s.attributes
                .iter()
                .any(|kv| kv.key.as_str() == with_attribute)
    })
}

#[tokio::test]
async fn a_request_is_one_trace_across_edge_broker_and_tunnel() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(janus_ops::telemetry::otel_layer(&provider, "test"));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let stack = Stack::start(|_| {}).await;
    let mut client = stack.client(&stack.tcp(), 1234).await;
    let echo = Packet {
        r#mod: 2,
        seq: 1,
        data: b"traced".to_vec(),
        ..Packet::default()
    };
    assert_eq!(client.request(echo, |_| {}).await.unwrap().data, b"traced");
    client.close().await.unwrap();

    let mut spans = Vec::new();
    for _ in 0..50 {
        let _ = provider.force_flush();
        spans = exporter.get_finished_spans().unwrap();
        if find(&spans, "session", "transport").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let edge = find(&spans, "session", "transport").expect("the edge's session span");
    let forward = find(&spans, "forward", "module").expect("the broker's forward span");
    let tunnel = find(&spans, "tunnel_open", "service").expect("the broker's tunnel_open span");
    let trace: TraceId = edge.span_context.trace_id();
    assert_eq!(
        forward.span_context.trace_id(),
        trace,
        "broker forward joins the edge's trace"
    );
    assert_eq!(
        forward.parent_span_id,
        edge.span_context.span_id(),
        "its parent is the edge span"
    );
    assert_eq!(
        tunnel.span_context.trace_id(),
        trace,
        "the tunnel open is in the same trace"
    );
    assert_eq!(tunnel.parent_span_id, forward.span_context.span_id());
}
