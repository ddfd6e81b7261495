//! The edge's routing decision: which broker a player's session goes to (rendezvous hashing
//! over the live brokers). Run with `cargo bench -p janus-edge`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use janus_edge::rendezvous_score;

fn rendezvous(c: &mut Criterion) {
    let brokers: Vec<String> = (0..8).map(|i| format!("10.0.1.{i}:17100")).collect();
    let mut uid = 0i64;
    c.bench_function("rendezvous_pick_of_8_brokers", |b| {
        b.iter(|| {
            uid += 1;
            black_box(
                brokers
                    .iter()
                    .max_by_key(|endpoint| rendezvous_score(uid, endpoint)),
            )
        });
    });
}

criterion_group!(benches, rendezvous);
criterion_main!(benches);
