//! The Redis route store against a real Redis: the same conformance checks the memory store
//! passes, plus behaviour when Redis goes away and comes back.

use std::time::Duration;

use janus_broker::route::{RedisRoutes, RouteStore, conformance};

#[tokio::test]
async fn redis_store_meets_the_route_store_contract() {
    let redis = janus_integration_tests::redis().await;
    let store = RedisRoutes::standalone(&format!("redis://{}", redis.addr), Duration::from_secs(2))
        .unwrap();
    conformance::run(&store).await;
}

#[tokio::test]
async fn an_unreachable_redis_is_a_prompt_error_and_recovery_is_automatic() {
    let redis = janus_integration_tests::redis().await;
    let store = RedisRoutes::standalone(
        &format!("redis://{}", redis.addr),
        Duration::from_millis(500),
    )
    .unwrap();
    store.swap("k", "v", Duration::from_secs(60)).await.unwrap();

    redis.container.pause().await.unwrap();
    let started = std::time::Instant::now();
    let err = store.get("k").await.unwrap_err();
    assert_eq!(err.kind(), "route_store", "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline bounds the wait"
    );

    redis.container.unpause().await.unwrap();
    let mut value = None;
    for _ in 0..50 {
        if let Ok(v) = store.get("k").await {
            value = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        value.as_deref(),
        Some("v"),
        "the store reconnects by itself"
    );
}
