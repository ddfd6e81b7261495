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

#[tokio::test]
async fn a_connection_redis_dropped_costs_no_failed_call() {
    let redis = janus_integration_tests::redis().await;
    let url = format!("redis://{}", redis.addr);
    let store = RedisRoutes::standalone(&url, Duration::from_secs(2)).unwrap();
    store.swap("k", "v", Duration::from_secs(60)).await.unwrap();

    // What a Redis restart does to a broker: its pooled connection dies, and the broker learns
    // of it only from the next command.
    let mut admin = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1, "the store's connection was killed");
    assert_eq!(
        store.get("k").await.unwrap().as_deref(),
        Some("v"),
        "the first call after the drop succeeds"
    );
    assert_eq!(
        store
            .swap("k", "w", Duration::from_secs(60))
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
}

#[tokio::test]
async fn redis_cluster_store_meets_the_route_store_contract() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let node = janus_integration_tests::infra::redis_cluster(port).await;
    let url = format!("redis://{}", node.addr);
    // One node owns every slot.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut state = String::new();
    for _ in 0..50 {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .unwrap();
        state = info;
        if state.contains("cluster_state:ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(state.contains("cluster_state:ok"), "{state}");
    let store = RedisRoutes::cluster(&[url], Duration::from_secs(2))
        .await
        .unwrap();
    conformance::run(&store).await;
}
