//! The Redis push bus against a real Redis: the conformance checks the in-process and NATS
//! buses pass, on a standalone Redis and on a Redis Cluster, each on Redis 7 and on the older
//! Redis go-pantheon deployments may run (6.0), requests answered on receipt or once held, and
//! on a standalone Redis a send telling whether anybody took it; a queue group's list stays bounded and expires
//! with nobody draining it; the subscription and the group members come back after Redis cuts
//! their connections.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use janus_broker::bus::{Confirm, PushBus, RedisBus, Sent, conformance};
use janus_integration_tests::Service;
use janus_integration_tests::infra::{REDIS, REDIS_OLD, RedisImage, redis_cluster_ready, redis_on};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A bus on `urls`, with its own task tracker and shutdown.
struct Bus {
    bus: RedisBus,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Bus {
    async fn on(urls: &[String], cluster: bool) -> Self {
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let bus = RedisBus::connect(
            urls,
            cluster,
            Duration::from_secs(2),
            (&tasks, shutdown.clone()),
        )
        .await
        .unwrap();
        Self {
            bus,
            shutdown,
            tasks,
        }
    }

    async fn standalone(redis: &Service) -> Self {
        Self::on(&[format!("redis://{}", redis.addr)], false).await
    }

    /// Stops the bus's tasks and checks that they all end.
    async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .expect("the bus's tasks end on shutdown");
    }
}

/// Publishes on `subject` until `stream` yields it (a subscription being made again misses what
/// was published meanwhile: the bus delivers at most once). Only the first `may_fail` publishes
/// may fail (after a cut, the first one goes to the dead connection, and is never sent twice).
async fn publish_until_received(
    bus: &RedisBus,
    subject: &str,
    stream: &mut BoxStream<'static, Bytes>,
    may_fail: usize,
) {
    for attempt in 0..50 {
        let published = bus.publish(subject, Bytes::from_static(b"again")).await;
        assert!(
            attempt < may_fail || published.is_ok(),
            "publish {attempt}: {published:?}"
        );
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await
        {
            assert_eq!(&got[..], b"again");
            return;
        }
    }
    panic!("{subject}: nothing received");
}

async fn standalone_conformance(image: RedisImage) {
    let redis = redis_on(image).await;
    let bus = Bus::standalone(&redis).await;
    conformance::run(&bus.bus).await;
    conformance::answers_when_held(&bus.bus).await;
    // A send tells whether anybody took it; the subscriber is another bus (another broker):
    // one bus keeps its Redis subscriptions while it runs.
    let subscriber = Bus::standalone(&redis).await;
    let sent = async |payload: &'static [u8]| {
        bus.bus
            .send("tells", Bytes::from_static(payload), Confirm::Taken)
            .await
            .unwrap()
    };
    assert_eq!(sent(b"x").await, Sent::NoSubscriber, "nobody subscribes");
    let mut taker = subscriber.bus.subscribe("tells", None).await.unwrap();
    let receiving = tokio::spawn(async move { taker.next().await });
    assert_eq!(sent(b"y").await, Sent::Taken);
    let got = tokio::time::timeout(Duration::from_secs(5), receiving).await;
    assert_eq!(
        got.ok().and_then(Result::ok).flatten().as_deref(),
        Some(&b"y"[..])
    );
    // Its broker gone, sends find nobody again (once Redis has seen its connection close:
    // until then a send is taken and unanswered).
    subscriber.stop().await;
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(sent(b"z").await);
        if after.last() == Some(&Sent::NoSubscriber) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        after.last(),
        Some(&Sent::NoSubscriber),
        "the subscriber went away: {after:?}"
    );
    bus.stop().await;
}

async fn cluster_conformance(image: RedisImage) {
    let node = redis_cluster_ready(image).await;
    let bus = Bus::on(&[format!("redis://{}", node.addr)], true).await;
    conformance::run(&bus.bus).await;
    conformance::answers_when_held(&bus.bus).await;
    bus.stop().await;
}

#[tokio::test]
async fn redis_bus_meets_the_push_bus_contract() {
    standalone_conformance(REDIS).await;
}

#[tokio::test]
async fn redis_bus_meets_the_push_bus_contract_on_an_older_redis() {
    standalone_conformance(REDIS_OLD).await;
}

#[tokio::test]
async fn redis_cluster_bus_meets_the_push_bus_contract() {
    cluster_conformance(REDIS).await;
}

#[tokio::test]
async fn redis_cluster_bus_meets_the_push_bus_contract_on_an_older_redis() {
    cluster_conformance(REDIS_OLD).await;
}

#[tokio::test]
async fn a_queue_group_nobody_drains_stays_bounded_and_expires() {
    let redis = janus_integration_tests::redis().await;
    let bus = Bus::standalone(&redis).await;
    let member = bus.bus.subscribe("bounded", Some("g")).await.unwrap();
    // The member leaves; its group stays the subject's for a while (until its membership
    // expires), so publishes keep queuing for it.
    drop(member);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in 0..1500u32 {
        bus.bus
            .publish("bounded", Bytes::from(n.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    let mut conn = redis.redis_connection().await;
    let list = "janus:bus:{bounded}:groups:g";
    let len: usize = redis::cmd("LLEN")
        .arg(list)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 1024, "the list holds at most its cap");
    let oldest: Vec<u8> = redis::cmd("LINDEX")
        .arg(list)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        oldest,
        0u32.to_be_bytes(),
        "when full, the newest messages are dropped"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(list)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=10_000).contains(&ttl),
        "the list expires 10 s after its last publish: PTTL {ttl}"
    );
    let group_ttl: i64 = redis::cmd("PTTL")
        .arg("janus:bus:{bounded}:groups")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (1..=15_000).contains(&group_ttl),
        "the group set expires with its last member: PTTL {group_ttl}"
    );
    bus.stop().await;
}

#[tokio::test]
async fn subscriptions_and_group_members_come_back_after_redis_cuts_them() {
    let redis = janus_integration_tests::redis().await;
    let bus = Bus::standalone(&redis).await;
    let mut plain = bus.bus.subscribe("cut.plain", None).await.unwrap();
    let mut member = bus.bus.subscribe("cut.queue", Some("g")).await.unwrap();
    bus.bus
        .publish("cut.plain", Bytes::from_static(b"before"))
        .await
        .unwrap();
    bus.bus
        .publish("cut.queue", Bytes::from_static(b"before"))
        .await
        .unwrap();
    for stream in [&mut plain, &mut member] {
        let got = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert_eq!(got.ok().flatten().as_deref(), Some(&b"before"[..]));
    }

    let mut conn = redis.redis_connection().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1, "the bus holds one subscription connection");
    // Every other connection: the publishing one, the member's popping one, and this one.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 2, "the publishing and the popping connections cut");

    publish_until_received(&bus.bus, "cut.plain", &mut plain, 1).await;
    publish_until_received(&bus.bus, "cut.queue", &mut member, 1).await;
    bus.stop().await;
}

#[tokio::test]
async fn a_bus_made_while_redis_is_unreachable_works_once_redis_answers() {
    let redis = janus_integration_tests::redis().await;
    redis.container.pause().await.unwrap();
    // What a broker starting before its Redis does: every subscription returns (the plain one
    // after its confirmation deadline, the member without having joined) ...
    let bus = Bus::standalone(&redis).await;
    let mut plain = bus.bus.subscribe("late.plain", None).await.unwrap();
    let mut member = bus.bus.subscribe("late.queue", Some("g")).await.unwrap();
    redis.container.unpause().await.unwrap();
    // ... and each is made as soon as Redis answers.
    publish_until_received(&bus.bus, "late.plain", &mut plain, 50).await;
    publish_until_received(&bus.bus, "late.queue", &mut member, 50).await;
    bus.stop().await;
}
