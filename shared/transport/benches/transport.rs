//! Micro-benchmarks of the transports' sans-IO parts: kcp-go's FEC. Run with
//! `cargo bench -p janus-transport`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use janus_transport::kcp::fec::{Decoder, Encoder, parse};

/// kcp-go's FEC at fabrica-net's 10 + 3 on full-size KCP packets (1392 bytes: an MTU of 1400
/// less the FEC data header): encoding one group (13 datagrams out) and decoding one with a
/// lost data packet (recovered from parity).
fn kcp_fec(c: &mut Criterion) {
    let packets: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 1392]).collect();
    let mut group = c.benchmark_group("kcp_fec_10_3");
    group.throughput(Throughput::Bytes(10 * 1392));
    let mut encoder = Encoder::new(10, 3).unwrap();
    group.bench_function("encode_group", |b| {
        b.iter(|| {
            let mut n = 0;
            for packet in &packets {
                encoder.encode(black_box(packet), |d| n += d.len());
            }
            n
        });
    });
    let mut wire = Vec::new();
    let mut encoder = Encoder::new(10, 3).unwrap();
    for packet in &packets {
        encoder.encode(packet, |d| wire.push(d.to_vec()));
    }
    group.bench_function("decode_group_one_lost", |b| {
        b.iter(|| {
            let mut decoder = Decoder::new(10, 3).unwrap();
            let mut recovered = 0;
            for datagram in wire.iter().skip(1) {
                recovered += decoder.decode(parse(datagram).unwrap(), datagram, 0).len();
            }
            assert_eq!(recovered, 1);
        });
    });
    group.finish();
}

criterion_group!(benches, kcp_fec);
criterion_main!(benches);
