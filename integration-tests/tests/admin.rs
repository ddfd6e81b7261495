//! The admin endpoints of both tiers, read over HTTP while real sessions run.

use janus_integration_tests::stack::{Stack, http_get};
use janus_proto::packet::Packet;

#[tokio::test]
async fn health_readiness_metrics_and_stats_reflect_the_sessions() {
    let stack = Stack::start(|_| {}).await;
    let mut client = stack.client(&stack.tcp(), 601).await;
    let echo = Packet {
        r#mod: 2,
        seq: 1,
        data: b"x".to_vec(),
        ..Packet::default()
    };
    client.request(echo, |_| {}).await.unwrap();

    let edge = stack.edge.admin_addr;
    assert_eq!(http_get(edge, "/health").await.0, 200);
    assert_eq!(http_get(edge, "/ready").await, (200, "ready".to_owned()));
    let (status, metrics) = http_get(edge, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("janus_edge_sessions{transport=\"tcp\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("janus_edge_handshakes_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("janus_edge_handshake_seconds_bucket"),
        "{metrics}"
    );
    let (status, stats) = http_get(edge, "/stats/connections").await;
    assert_eq!(status, 200);
    assert!(stats.contains("\"tcp\":1"), "{stats}");
    assert!(stats.contains("\"up\":true"), "{stats}");
    let (status, short) = http_get(edge, "/stats").await;
    assert_eq!(status, 200, "/stats is served as on a broker");
    assert_eq!(short, stats);

    let broker = stack.broker.admin_addr;
    assert_eq!(http_get(broker, "/health").await.0, 200);
    assert_eq!(http_get(broker, "/ready").await.0, 200);
    let (_, metrics) = http_get(broker, "/metrics").await;
    assert!(
        metrics.contains("janus_broker_live{what=\"sessions\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("janus_broker_live{what=\"edges\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "janus_broker_tunnel_opens_total{result=\"ok\",service=\"roma.player.service\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("janus_broker_tunnel_seconds_count{service=\"roma.player.service\"} 1"),
        "{metrics}"
    );
    let (_, stats) = http_get(broker, "/stats").await;
    assert!(stats.contains("\"sessions\":1"), "{stats}");

    stack.ground.redis().container.pause().await.unwrap();
    let (status, why) = http_get(broker, "/ready").await;
    assert_eq!(status, 503, "not ready without a route store");
    assert!(why.contains("route store"), "{why}");
    stack.ground.redis().container.unpause().await.unwrap();

    client.close().await.unwrap();
    let mut closed = false;
    for _ in 0..50 {
        let (_, metrics) = http_get(edge, "/metrics").await;
        if metrics.contains("janus_edge_closes_total{reason=\"client_closed\"} 1") {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(closed, "the close is counted with its reason");
}
