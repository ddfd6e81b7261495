//! Hot paths of the protocol core: framing, sealing and opening frames of typical sizes, one
//! server-side v2 handshake, opening plus checking a token, and the edge's share of a push
//! fan-out (one shared packet sealed for many sessions). Run with
//! `cargo bench -p janus-protocol` (kcp-go's FEC: `cargo bench -p janus-transport`).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_proto::packet::Packet;
use janus_protocol::compress::Compression;
use janus_protocol::frame;
use janus_protocol::handshake::{ClientHandshakeConfig, Mode, ServerHandshakeConfig};
use janus_protocol::keys::{SigningKey, TokenKey};
use janus_protocol::session::{ClientSession, ServerSession, SessionConfig};
use janus_protocol::token::{self, TokenCodec};

const NOW: i64 = 1_700_000_000;

fn configs() -> (ServerHandshakeConfig, ClientHandshakeConfig, String) {
    let signing_key = SigningKey::from_seed(&[1; 32]);
    let tokens = TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap());
    let token = tokens.seal(&AuthToken {
        color: "blue".into(),
        account_id: 1,
        timeout: NOW + 600,
        status: OnlineStatus::Gate as i32,
        ..Default::default()
    });
    let client = ClientHandshakeConfig {
        server_key: signing_key.verifying_key(),
        client_key: None,
        mode: Mode::V2,
        server_id: 0,
        cert_version: 0,
        resumable: false,
    };
    let server = ServerHandshakeConfig {
        signing_key,
        tokens,
        client_cert: None,
        allowed_statuses: vec![OnlineStatus::Gate as i32],
        max_skew_secs: 5,
        allow_legacy: false,
        allow_unencrypted: false,
        cert_version: 0,
        other_signing_keys: Default::default(),
    };
    (server, client, token)
}

/// Frame payloads large enough for the 16 KiB case; compression off so sizes are what they say.
fn session_config() -> SessionConfig {
    SessionConfig {
        max_frame: 64 * 1024,
        compression: Compression {
            threshold: usize::MAX,
            max_inflated: 1 << 20,
        },
    }
}

fn established() -> (ServerSession, ClientSession) {
    let (server_cfg, client_cfg, token) = configs();
    let mut c2s = BytesMut::new();
    let mut s2c = BytesMut::new();
    let mut client =
        ClientSession::start(client_cfg, session_config(), &token, NOW, &mut c2s).unwrap();
    let mut server = ServerSession::new(Arc::new(server_cfg), session_config());
    server.poll(&mut c2s, NOW, &mut s2c).unwrap().unwrap();
    client.poll(&mut s2c).unwrap().unwrap();
    (server, client)
}

fn seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal_open_v2");
    for size in [64usize, 1024, 16 * 1024] {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let (mut server, mut client) = established();
            let mut wire = BytesMut::with_capacity(size + 64);
            let packet = Packet {
                r#mod: 3,
                seq: 1,
                data: vec![7; size],
                ..Default::default()
            };
            b.iter(|| {
                client.send(packet.clone(), &mut wire).unwrap();
                black_box(server.poll(&mut wire, NOW, &mut BytesMut::new()).unwrap());
            });
        });
    }
    group.finish();
}

fn frame_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_codec");
    let payload = vec![7u8; 256];
    let frames = 64;
    group.throughput(Throughput::Elements(frames));
    group.bench_function("encode_then_decode_64x256B", |b| {
        let mut wire = BytesMut::with_capacity(frames as usize * 260);
        b.iter(|| {
            for _ in 0..frames {
                frame::encode(&payload, frame::DEFAULT_MAX_FRAME, &mut wire).unwrap();
            }
            while let Some(f) = frame::decode(&mut wire, frame::DEFAULT_MAX_FRAME).unwrap() {
                black_box(f);
            }
        });
    });
    group.finish();
}

/// The edge's work per push delivery: one packet, shared, sealed into every session's buffer.
fn push_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_fanout_seal");
    let sessions = 1000;
    group.throughput(Throughput::Elements(sessions as u64));
    group.bench_function("1000_sessions_64B", |b| {
        let mut servers: Vec<ServerSession> = (0..sessions).map(|_| established().0).collect();
        let packet = Packet {
            r#mod: 99,
            seq: 1,
            data: vec![7; 64],
            ..Default::default()
        };
        let mut out = BytesMut::with_capacity(256);
        b.iter(|| {
            for server in &mut servers {
                server.send(&packet, &mut out).unwrap();
                out.clear();
            }
        });
    });
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let (server_cfg, client_cfg, token) = configs();
    let server_cfg = Arc::new(server_cfg);
    let mut hello = BytesMut::new();
    ClientSession::start(
        client_cfg,
        SessionConfig::default(),
        &token,
        NOW,
        &mut hello,
    )
    .unwrap();
    c.bench_function("server_handshake_v2", |b| {
        b.iter(|| {
            let mut input = hello.clone();
            let mut out = BytesMut::with_capacity(256);
            let mut server = ServerSession::new(server_cfg.clone(), SessionConfig::default());
            black_box(server.poll(&mut input, NOW, &mut out).unwrap());
        });
    });
}

fn token_verify(c: &mut Criterion) {
    let (server_cfg, _, token) = configs();
    let allowed = [OnlineStatus::Gate as i32];
    c.bench_function("token_open_and_check", |b| {
        b.iter(|| {
            let claims = server_cfg.tokens.open(black_box(&token)).unwrap();
            token::check(&claims, NOW, &allowed).unwrap();
        });
    });
}

criterion_group!(
    benches,
    frame_codec,
    seal_open,
    handshake,
    token_verify,
    push_fanout
);
criterion_main!(benches);
