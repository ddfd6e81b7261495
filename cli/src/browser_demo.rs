//! The browser demo of the standalone mode (never served by `janus edge`): the JavaScript SDK
//! (`sdk/js/src`, built into the binary), a demo page using it (`sdk/js/demo`: room chat, a
//! round-trip meter, the push feed, the session's state), where the page finds the edge
//! (`/config.json`: the WebSocket port and path, the edge's public key), and a
//! development-only token endpoint (`/token?uid=N`) minting GATE tokens with the standalone's
//! dev token key for whoever asks: which is why it exists only here.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use janus_protocol::token::TokenCodec;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::keys;

/// What the page is told.
#[derive(Clone)]
struct Demo {
    /// The edge's WebSocket port and path.
    ws_port: u16,
    ws_path: String,
    /// The edge's Ed25519 public key, SPKI PEM.
    server_key: String,
    codec: std::sync::Arc<TokenCodec>,
}

/// Static files: path, content type, contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../sdk/js/demo/index.html"),
    ),
    ("/demo.js", JS, include_str!("../../sdk/js/demo/demo.js")),
    (
        "/sdk/janus.js",
        JS,
        include_str!("../../sdk/js/src/janus.js"),
    ),
    (
        "/sdk/protocol.js",
        JS,
        include_str!("../../sdk/js/src/protocol.js"),
    ),
    (
        "/sdk/proto.js",
        JS,
        include_str!("../../sdk/js/src/proto.js"),
    ),
    (
        "/sdk/crypto.js",
        JS,
        include_str!("../../sdk/js/src/crypto.js"),
    ),
    (
        "/sdk/janus.d.ts",
        "text/plain; charset=utf-8",
        include_str!("../../sdk/js/src/janus.d.ts"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";

/// Longest lifetime of a demo token.
const TOKEN_TTL_SECS: i64 = 600;

#[derive(Deserialize)]
struct TokenQuery {
    uid: i64,
    #[serde(default = "one")]
    sid: i64,
}

fn one() -> i64 {
    1
}

/// Serves the demo on `listener` until `stop`; `ws` is the edge's WebSocket listener.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    ws: SocketAddr,
    ws_path: String,
    server_key: String,
    codec: TokenCodec,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let demo = Demo {
        ws_port: ws.port(),
        ws_path,
        server_key,
        codec: std::sync::Arc::new(codec),
    };
    let mut router = Router::new()
        .route("/config.json", get(config))
        .route("/token", get(token));
    for (path, content_type, body) in FILES {
        let (content_type, body) = (*content_type, *body);
        router = router.route(
            path,
            get(move || async move { ([(header::CONTENT_TYPE, content_type)], body) }),
        );
    }
    axum::serve(listener, router.with_state(demo))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn config(State(demo): State<Demo>) -> Response {
    axum::Json(serde_json::json!({
        "wsPort": demo.ws_port,
        "wsPath": demo.ws_path,
        "serverKey": demo.server_key,
    }))
    .into_response()
}

async fn token(State(demo): State<Demo>, Query(q): Query<TokenQuery>) -> Response {
    if q.uid <= 0 {
        return (StatusCode::BAD_REQUEST, "uid: a positive player id").into_response();
    }
    let token = keys::mint_with(&demo.codec, q.uid, q.sid, "", TOKEN_TTL_SECS);
    ([(header::CONTENT_TYPE, "text/plain")], token).into_response()
}
