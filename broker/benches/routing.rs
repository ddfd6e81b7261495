//! The broker's routing decisions: picking a game-service instance by smooth weighted
//! round-robin, and resolving a push to the sessions it reaches (a broadcast scanning every
//! local session, a multicast looking up named uids), grouped by edge. Run with
//! `cargo bench -p janus-broker`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use janus_broker::balance::SmoothWeighted;
use janus_broker::continuity::{Attachment, Continuity};
use janus_broker::registry::{EdgeHandle, Entry, Registry};
use janus_proto::janus::internal::v1::SessionOpen;
use tokio::sync::mpsc;

fn balance(c: &mut Criterion) {
    let instances: Vec<(String, i64)> = (0..8)
        .map(|i| (format!("10.0.0.{i}:17200"), 1 + i % 3))
        .collect();
    let mut swrr = SmoothWeighted::default();
    c.bench_function("smooth_weighted_pick_of_8", |b| {
        b.iter(|| black_box(swrr.pick(black_box(&instances))));
    });
}

/// 10 000 sessions over 4 edges, half of them in zone 1.
fn registry() -> Registry {
    let edges: Vec<Arc<EdgeHandle>> = (0..4)
        .map(|i| Arc::new(EdgeHandle::new(format!("edge-{i}"), mpsc::channel(1).0)))
        .collect();
    let registry = Registry::default();
    for uid in 0..10_000i64 {
        registry.insert(
            uid,
            Entry {
                continuity: Arc::new(Continuity::new(
                    Some(Attachment {
                        edge: edges[uid as usize % edges.len()].clone(),
                        session_id: uid as u64,
                    }),
                    &SessionOpen::default(),
                    1024,
                )),
                inbox: mpsc::channel(1).0,
                color: String::new(),
                sid: 1 + uid % 2,
                commands: mpsc::channel(1).0,
                registered: 0,
            },
        );
    }
    registry
}

fn fanout(c: &mut Criterion) {
    let registry = registry();
    let mut group = c.benchmark_group("push_resolve");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("broadcast_scan_10000_sessions", |b| {
        b.iter(|| black_box(registry.matching("", 1)));
    });
    let uids: Vec<i64> = (0..1000).map(|i| i * 7).collect();
    group.throughput(Throughput::Elements(uids.len() as u64));
    group.bench_function("multicast_1000_uids", |b| {
        b.iter(|| black_box(registry.split(black_box(&uids))));
    });
    group.finish();
}

criterion_group!(benches, balance, fanout);
criterion_main!(benches);
