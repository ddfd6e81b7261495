//! The Redis route store against a real Redis: the same conformance checks the memory store
//! passes, on Redis 7 and on an older Redis (6.0, which has no `SET … GET`), standalone and as
//! a cluster, plus behaviour when Redis goes away and comes back.

use std::time::Duration;

use janus_broker::route::{RedisRoutes, RouteStore, conformance};
use janus_integration_tests::infra::{REDIS, REDIS_OLD, RedisImage, redis_cluster_ready, redis_on};

async fn standalone_conformance(redis: &janus_integration_tests::Service) {
    let store = RedisRoutes::standalone(&format!("redis://{}", redis.addr), Duration::from_secs(2))
        .unwrap();
    conformance::run(&store).await;
}

#[tokio::test]
async fn redis_store_meets_the_route_store_contract() {
    standalone_conformance(&redis_on(REDIS).await).await;
}

#[tokio::test]
async fn redis_store_meets_the_route_store_contract_on_an_older_redis() {
    let redis = redis_on(REDIS_OLD).await;
    // What makes this run worth it: this Redis refuses `SET … GET` (6.2) and so `SET … NX GET`
    // (7.0) too, so a store using them fails on it.
    let mut conn = redis.redis_connection().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or_else(|| panic!("no redis_version in {info}"));
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(
        (major, minor) < (6, 2),
        "JANUS_REDIS_OLD_IMAGE runs Redis {version}"
    );
    let set_get: redis::RedisResult<Option<String>> = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("GET")
        .query_async(&mut conn)
        .await;
    assert!(set_get.is_err(), "Redis {version} took SET … GET");

    standalone_conformance(&redis).await;
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
    let mut admin = redis.redis_connection().await;
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
async fn a_flushed_script_cache_costs_no_failed_call() {
    let redis = redis_on(REDIS).await;
    let url = format!("redis://{}", redis.addr);
    let store = RedisRoutes::standalone(&url, Duration::from_secs(2)).unwrap();
    let ttl = Duration::from_secs(60);
    assert_eq!(store.swap("k", "v", ttl).await.unwrap(), None);
    // What a Redis restart or failover does to the script cache: EVALSHA answers NOSCRIPT.
    let mut admin = redis.redis_connection().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        store.swap("k", "w", ttl).await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(store.claim("k", "x", ttl).await.unwrap(), "w");
}

async fn cluster_conformance(image: RedisImage) {
    let node = redis_cluster_ready(image).await;
    let store = RedisRoutes::cluster(&[format!("redis://{}", node.addr)], Duration::from_secs(2))
        .await
        .unwrap();
    conformance::run(&store).await;
}

#[tokio::test]
async fn redis_cluster_store_meets_the_route_store_contract() {
    cluster_conformance(REDIS).await;
}

#[tokio::test]
async fn redis_cluster_store_meets_the_route_store_contract_on_an_older_redis() {
    cluster_conformance(REDIS_OLD).await;
}
