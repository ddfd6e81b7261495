//! Bad input a test can send, and the checks that follow it, shared by the bad-input table
//! (`bad_input.rs`) and the leak check (`leaks.rs`).

use std::time::Duration;

use bytes::BytesMut;
use janus_client::Client;
use janus_edge::config::EdgeConfig;
use janus_integration_tests::stack::{Stack, assert_logout, echo, recv};
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::message::{CsHandshake, ScServerUnexpectedErr};
use janus_proto::packet::Packet;
use janus_protocol::{frame, system};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The neighbour still gets its echo.
pub(crate) async fn neighbour_ok(neighbour: &mut Client) {
    let reply = neighbour
        .request(echo(b"still fine"), |_| {})
        .await
        .unwrap();
    assert_eq!(reply.data, b"still fine");
}

/// The client is told why (SCServerUnexpectedErr naming `reason`, then SCServerLogout Server)
/// and the connection ends.
pub(crate) async fn told(client: &mut Client, reason: &str) {
    let why = recv(client).await;
    assert_eq!(
        (why.r#mod, why.seq),
        (system::MODULE, system::SEQ_UNEXPECTED_ERR),
        "{why:?}"
    );
    let msg = ScServerUnexpectedErr::decode(&why.data[..]).unwrap().msg;
    assert!(msg.contains(reason), "{msg:?} does not mention {reason}");
    let logout = recv(client).await;
    assert_logout(&logout, LogoutCode::Server);
    let end = tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .expect("closed");
    assert!(end.is_err(), "the connection ends after the logout");
}

/// Connects over raw TCP, writes `bytes`, and expects the edge to close without a word.
pub(crate) async fn raw_refused(stack: &Stack, bytes: &[u8]) {
    let mut tcp = TcpStream::connect(stack.edge.tcp_addr.unwrap())
        .await
        .unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing is sent before a handshake completes");
}

/// `packet` as one plaintext frame.
pub(crate) fn framed(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::encode(&packet.encode_to_vec(), frame::DEFAULT_MAX_FRAME, &mut out).unwrap();
    out.to_vec()
}

/// A v2 handshake packet with the given key, token and clock.
pub(crate) fn hello(pub_key: Vec<u8>, token: String, timestamp: i64) -> Packet {
    let body = CsHandshake {
        r#pub: pub_key,
        token,
        timestamp,
        version: 2,
        ..Default::default()
    };
    system::packet(system::SEQ_HANDSHAKE, 0, body.encode_to_vec())
}

/// Tight limits, so that each one is quick to cross.
pub(crate) fn limits(config: &mut EdgeConfig) {
    config.session.max_frame = 4096;
    config.session.messages_per_sec = 10;
    config.session.message_burst = 10;
    config.session.bytes_per_sec = 8192;
    config.session.byte_burst = 8192;
    config.session.max_inflated = 64 * 1024;
    config.session.outbound_queue = 8;
    config.session.write_timeout_secs = Duration::from_secs(1);
    config.handshake.timeout_secs = Duration::from_secs(1);
    config.websocket.allowed_origins = vec!["https://game.example".into()];
}

/// A session that sends a frame its key did not seal is told `decrypt_failed` and closed.
pub(crate) async fn forged_frame(stack: &Stack, uid: i64) {
    let mut forger = stack.client(&stack.tcp(), uid).await;
    let forged: Vec<u8> = [0, 0, 0, 40].into_iter().chain([0x5a; 40]).collect();
    forger.send_raw(&forged).await.unwrap();
    told(&mut forger, "decrypt").await;
}

/// A session whose packet skips ahead in the index is told `index_mismatch` and closed.
pub(crate) async fn index_out_of_order(stack: &Stack, uid: i64) {
    let mut skipper = stack.client(&stack.tcp(), uid).await;
    skipper
        .send_unchecked(Packet {
            index: 7,
            ..echo(b"x")
        })
        .await
        .unwrap();
    told(&mut skipper, "index 7").await;
}

/// A session that sends a zip bomb (100 kB of zeros, compressed by the client library) is told
/// `inflate_too_large` and closed (under [`limits`], which cap inflation at 64 KiB).
pub(crate) async fn zip_bomb(stack: &Stack, uid: i64) {
    let mut bomber = stack.client(&stack.tcp(), uid).await;
    bomber.send(echo(&vec![0u8; 100_000])).await.unwrap();
    told(&mut bomber, "inflates past").await;
}
