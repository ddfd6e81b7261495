//! Accept loops: TCP (frames straight on the stream), WebSocket (path and Origin checked at the
//! upgrade) and QUIC (the first client-opened bidirectional stream); KCP has its own module
//! (`crate::kcp`). Each accepted connection becomes a session task; the loops stop when
//! the edge's lifecycle leaves serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use janus_proto::janus::internal::v1::Transport;
use janus_transport::ByteStream;
use janus_transport::frames::FrameIo;
use janus_transport::quic::QuicStream;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_util::task::TaskTracker;

use crate::config::WebSocketConfig;
use crate::context::EdgeState;
use crate::session::serve;

/// How long a WebSocket upgrade may take (it counts towards no session yet).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP options of a client connection (TCP and WebSocket): no Nagle, keepalives, and with
/// `unsent_limit` the kernel keeps at most that many bytes not yet sent
/// (`TCP_NOTSENT_LOWAT`), so a client that reads slowly backs up in the session's queue, where
/// the edge sees it (PROTOCOL.md §16), not in megabytes of socket buffer.
fn tune(stream: &TcpStream, unsent_limit: usize) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&keepalive);
    // Linux's option (the platform Janus is built and deployed on).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if unsent_limit > 0 {
        let _ = sock.set_tcp_notsent_lowat(u32::try_from(unsent_limit).unwrap_or(u32::MAX));
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = unsent_limit;
}

async fn accept_loop(
    listener: TcpListener,
    state: &EdgeState,
    mut on_conn: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        tokio::select! {
            () = state.lifecycle.stopped_accepting() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tune(&stream, state.config.session.unsent_limit_bytes);
                    on_conn(stream, peer);
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves TCP clients from `listener` while the edge accepts.
pub(crate) async fn tcp(listener: TcpListener, state: Arc<EdgeState>, tasks: TaskTracker) {
    accept_loop(listener, &state, |stream, peer| {
        let io = FrameIo::Stream(Box::new(stream));
        tasks.spawn(serve(state.clone(), io, peer, Transport::Tcp));
    })
    .await;
}

/// Serves WebSocket clients from `listener` while the edge accepts.
#[expect(
    clippy::result_large_err,
    reason = "the upgrade callback's type is tungstenite's"
)]
pub(crate) async fn websocket(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<EdgeState>,
    tasks: TaskTracker,
) {
    let config = Arc::new(state.config.websocket.clone());
    accept_loop(listener, &state, |stream, peer| {
        let (state, config, tls) = (state.clone(), config.clone(), tls.clone());
        tasks.spawn(async move {
            let upgrade = async {
                let stream: Box<dyn ByteStream> = match tls {
                    Some(tls) => {
                        Box::new(tls.accept(stream).await.map_err(|e| format!("tls: {e}"))?)
                    }
                    None => Box::new(stream),
                };
                let check = |request: &Request, response: Response| {
                    check_upgrade(&config, request, response)
                };
                tokio_tungstenite::accept_hdr_async(stream, check)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(UPGRADE_TIMEOUT, upgrade).await {
                Ok(Ok(ws)) => {
                    serve(
                        state,
                        FrameIo::WebSocket(Box::new(ws)),
                        peer,
                        Transport::Websocket,
                    )
                    .await
                }
                Ok(Err(reason)) => {
                    tracing::info!(%peer, %reason, "websocket upgrade refused");
                    state
                        .metrics
                        .refused
                        .with_label_values(&["websocket_upgrade"])
                        .inc();
                }
                Err(_) => {
                    state
                        .metrics
                        .refused
                        .with_label_values(&["websocket_upgrade"])
                        .inc();
                }
            }
        });
    })
    .await;
}

/// Serves QUIC clients from `endpoint` (one of the edge's, each with a loop of its own) while
/// the edge accepts; each connection's first bidirectional stream carries the frames.
pub(crate) async fn quic(endpoint: quinn::Endpoint, state: Arc<EdgeState>, tasks: TaskTracker) {
    let open_timeout = state.config.handshake.timeout_secs;
    loop {
        let incoming = tokio::select! {
            () = state.lifecycle.stopped_accepting() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let state = state.clone();
        tasks.spawn(async move {
            let peer = incoming.remote_address();
            let opened = tokio::time::timeout(open_timeout, async {
                let connection = incoming.await.map_err(|e| e.to_string())?;
                let (send, recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(QuicStream::accepted(send, recv, connection))
            })
            .await;
            match opened {
                Ok(Ok(stream)) => {
                    serve(
                        state,
                        FrameIo::Stream(Box::new(stream)),
                        peer,
                        Transport::Quic,
                    )
                    .await
                }
                Ok(Err(reason)) => {
                    tracing::info!(%peer, %reason, "quic connection failed");
                    state
                        .metrics
                        .refused
                        .with_label_values(&["quic_connect"])
                        .inc();
                }
                Err(_) => {
                    state
                        .metrics
                        .refused
                        .with_label_values(&["quic_connect"])
                        .inc();
                }
            }
        });
    }
    // New connections are refused from now on; open ones keep the endpoint running until their
    // sessions end (closing it here would cut them off in the middle of a drain).
    endpoint.set_server_config(None);
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why.to_owned()));
    *response.status_mut() = status;
    response
}

/// Checks the upgrade's path and `Origin` against the configuration.
#[expect(
    clippy::result_large_err,
    reason = "the upgrade callback's type is tungstenite's"
)]
fn check_upgrade(
    config: &WebSocketConfig,
    request: &Request,
    response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != config.path {
        return Err(refuse(StatusCode::NOT_FOUND, "unknown path"));
    }
    if let Some(origin) = request.headers().get("origin") {
        let origin = origin.to_str().unwrap_or("");
        let allowed = config
            .allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed == origin);
        if !allowed {
            return Err(refuse(StatusCode::FORBIDDEN, "origin not allowed"));
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, origin: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(path);
        if let Some(origin) = origin {
            builder = builder.header("origin", origin);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_upgrade_checks_path_and_origin() {
        let config = WebSocketConfig {
            allowed_origins: vec!["https://game.example".into()],
            ..WebSocketConfig::default()
        };
        let ok = |path, origin| {
            check_upgrade(&config, &request(path, origin), Response::new(())).is_ok()
        };
        assert!(ok("/ws", Some("https://game.example")));
        assert!(ok("/ws", None), "non-browser clients send no Origin");
        assert!(!ok("/ws", Some("https://evil.example")));
        assert!(!ok("/other", Some("https://game.example")));
        let any = WebSocketConfig::default();
        assert!(check_upgrade(&any, &request("/ws", Some("https://x")), Response::new(())).is_ok());
    }
}
