//! The client library's tokio driver over real sockets (TCP and WebSocket on loopback), against
//! a minimal server loop around the real `ServerSession`: handshake, request/reply matching,
//! pushes interleaved with replies, and failures surfacing as typed errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use janus_client::Error;
use janus_client::{Client, ClientConfig, Endpoint, unix_now};
use janus_proto::gate::intra::v1::{AuthToken, OnlineStatus};
use janus_proto::packet::Packet;
use janus_protocol::Error as ProtocolError;
use janus_protocol::frame;
use janus_protocol::handshake::{ClientHandshakeConfig, Mode, ServerHandshakeConfig};
use janus_protocol::keys::{SigningKey, TokenKey};
use janus_protocol::session::{ServerEvent, ServerSession, SessionConfig};
use janus_protocol::system;
use janus_protocol::token::TokenCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

fn server_config() -> Arc<ServerHandshakeConfig> {
    Arc::new(ServerHandshakeConfig {
        signing_key: SigningKey::from_seed(&[1; 32]),
        tokens: TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap()),
        client_cert: None,
        allowed_statuses: vec![OnlineStatus::Gate as i32],
        max_skew_secs: 5,
        allow_legacy: true,
        allow_unencrypted: false,
        cert_version: 0,
        other_signing_keys: Default::default(),
    })
}

fn client_config(mode: Mode) -> ClientConfig {
    ClientConfig {
        handshake: ClientHandshakeConfig {
            server_key: SigningKey::from_seed(&[1; 32]).verifying_key(),
            client_key: None,
            mode,
            server_id: 0,
            cert_version: 0,
            resumable: false,
        },
        session: SessionConfig::default(),
        handshake_timeout: Duration::from_secs(5),
    }
}

fn token(timeout: i64) -> String {
    TokenCodec::new(&TokenKey::from_bytes(&[2; 32]).unwrap()).seal(&AuthToken {
        account_id: 5,
        color: "blue".into(),
        timeout,
        status: OnlineStatus::Gate as i32,
        ..Default::default()
    })
}

/// What the test server does with each request: a push first, then an echo of the request.
fn respond(session: &mut ServerSession, packet: Packet, out: &mut BytesMut) {
    session
        .send(
            &system::unexpected_error(packet.r#mod, packet.seq, "push before reply"),
            out,
        )
        .unwrap();
    session.send(&packet, out).unwrap();
}

async fn serve_tcp(mut tcp: TcpStream) -> Option<ProtocolError> {
    let mut session = ServerSession::new(server_config(), SessionConfig::default());
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    loop {
        loop {
            match session.poll(&mut input, unix_now(), &mut out) {
                Ok(Some(ServerEvent::Packet(p))) => respond(&mut session, p, &mut out),
                Ok(Some(ServerEvent::Established(_))) => {}
                Ok(Some(ServerEvent::ResumeRequested { .. })) => {
                    return Some(ProtocolError::ResumeUnknown);
                }
                Ok(None) => break,
                Err(e) => return Some(e),
            }
        }
        tcp.write_all(&out).await.ok()?;
        out.clear();
        if tcp.read_buf(&mut input).await.ok()? == 0 {
            return None;
        }
    }
}

async fn serve_ws(tcp: TcpStream) -> Option<ProtocolError> {
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let mut session = ServerSession::new(server_config(), SessionConfig::default());
    while let Some(Ok(message)) = ws.next().await {
        let Message::Binary(bytes) = message else {
            continue;
        };
        let payload = match frame::decode_message(bytes, session.max_frame()) {
            Ok(payload) => payload,
            Err(e) => return Some(e),
        };
        let mut out = BytesMut::new();
        match session.handle_frame(BytesMut::from(payload), unix_now(), &mut out) {
            Ok(ServerEvent::Packet(p)) => respond(&mut session, p, &mut out),
            Ok(ServerEvent::Established(_)) => {}
            Ok(ServerEvent::ResumeRequested { .. }) => return Some(ProtocolError::ResumeUnknown),
            Err(e) => return Some(e),
        }
        // One frame per message: split what the session wrote back into frames.
        while let Some(payload) = frame::decode(&mut out, usize::MAX).unwrap() {
            let mut msg = BytesMut::new();
            frame::encode(&payload, usize::MAX, &mut msg).unwrap();
            ws.send(Message::Binary(msg.freeze())).await.ok()?;
        }
    }
    None
}

/// Starts a one-connection server of the given kind; returns its endpoint and the error (if
/// any) the server session ended with.
async fn server(websocket: bool) -> (Endpoint, tokio::task::JoinHandle<Option<ProtocolError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if websocket {
            serve_ws(tcp).await
        } else {
            serve_tcp(tcp).await
        }
    });
    let endpoint = if websocket {
        Endpoint::WebSocket(format!("ws://{addr}/ws"))
    } else {
        Endpoint::Tcp(addr.to_string())
    };
    (endpoint, task)
}

async fn round_trips(websocket: bool, mode: Mode) {
    let (endpoint, server) = server(websocket).await;
    let mut client = Client::connect(&endpoint, &client_config(mode), &token(unix_now() + 60))
        .await
        .unwrap();
    for i in 0..3 {
        let mut pushes = Vec::new();
        let data = format!("ping {i}").into_bytes();
        let request = Packet {
            r#mod: 3,
            seq: 9,
            data: data.clone(),
            ..Default::default()
        };
        let reply = client.request(request, |p| pushes.push(p)).await.unwrap();
        assert_eq!((reply.index, reply.data), (i + 1, data));
        assert_eq!(pushes.len(), 1);
        assert_eq!((pushes[0].r#mod, pushes[0].seq, pushes[0].index), (1, 3, 0));
    }
    let big = vec![b'q'; 20_000];
    let reply = client
        .request(
            Packet {
                data: big.clone(),
                ..Default::default()
            },
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(reply.data, big, "compressed both ways past the threshold");
    client.close().await.unwrap();
    assert!(
        server.await.unwrap().is_none(),
        "server saw a clean session"
    );
}

#[tokio::test]
async fn tcp_v2() {
    round_trips(false, Mode::V2).await;
}

#[tokio::test]
async fn tcp_legacy() {
    round_trips(false, Mode::Legacy).await;
}

#[tokio::test]
async fn websocket_v2() {
    round_trips(true, Mode::V2).await;
}

#[tokio::test]
async fn websocket_legacy() {
    round_trips(true, Mode::Legacy).await;
}

#[tokio::test]
async fn a_refused_handshake_is_an_error_on_both_ends() {
    for websocket in [false, true] {
        let (endpoint, server) = server(websocket).await;
        let err = Client::connect(&endpoint, &client_config(Mode::V2), &token(unix_now() - 1))
            .await
            .err()
            .unwrap();
        if websocket {
            assert!(
                matches!(
                    err,
                    Error::HandshakeRefused | Error::Io(_) | Error::WebSocket(_)
                ),
                "{err}"
            );
        } else {
            assert!(matches!(err, Error::HandshakeRefused), "{err}");
            assert!(err.to_string().contains("refused the login"), "{err}");
        }
        assert!(matches!(
            server.await.unwrap(),
            Some(ProtocolError::TokenExpired { .. })
        ));
    }
}

#[tokio::test]
async fn a_silent_server_times_out_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::Tcp(listener.local_addr().unwrap().to_string());
    let _hold = tokio::spawn(async move { listener.accept().await.map(|(tcp, _)| tcp) });
    let mut config = client_config(Mode::V2);
    config.handshake_timeout = Duration::from_millis(200);
    let err = Client::connect(&endpoint, &config, &token(unix_now() + 60))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
}

#[tokio::test]
async fn a_text_message_is_a_protocol_error_for_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        ws.next().await;
        ws.send(Message::text("hello")).await.unwrap();
        ws.next().await;
    });
    let err = Client::connect(
        &Endpoint::WebSocket(format!("ws://{addr}/")),
        &client_config(Mode::V2),
        &token(unix_now() + 60),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            Error::Protocol(ProtocolError::MessageFraming("text message"))
        ),
        "{err}"
    );
}
