//! The broker's admin HTTP endpoint: `/health` (the process is up), `/ready` (the route store
//! answers), `/metrics` (Prometheus text), `/stats` (JSON: sessions and linked edges) and
//! `POST /kick?uid=&color=` (log a player out with AdminKickOut, wherever their session is).
//! Reading is open; a mutating request needs the bearer token of `admin_token_file`, compared
//! in constant time, and is refused (401, or 403 when no token is configured), logged and
//! counted otherwise.

use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use bytes::Bytes;
use janus_proto::janus::internal::v1::BrokerControl;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use prost::Message;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::bus::subject;
use crate::error::Error;
use crate::registry::Command;
use crate::route::{GATE_SERVICE, gate_route_key};
use crate::state::{BrokerState, broker_id};

/// The token mutating requests must carry.
#[derive(Clone)]
pub(crate) struct AdminToken(Arc<[u8]>);

/// Reads `admin_token_file` (`None` when it is empty: mutating requests are refused).
pub(crate) fn read_token(path: &str) -> crate::error::Result<Option<AdminToken>> {
    if path.is_empty() {
        return Ok(None);
    }
    let failed = |reason: String| Error::AdminToken {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(failed("is empty".into()));
    }
    janus_protocol::keys::warn_if_exposed(std::path::Path::new(path), "admin_token_file");
    Ok(Some(AdminToken(token.as_bytes().into())))
}

#[derive(Clone)]
struct Admin {
    state: Arc<BrokerState>,
    token: Option<AdminToken>,
}

/// Serves the admin endpoint on `listener` until the broker shuts down.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<BrokerState>,
    token: Option<AdminToken>,
) {
    let stop = state.shutdown.clone();
    let mutating =
        Router::new()
            .route("/kick", post(kick))
            .route_layer(axum::middleware::from_fn_with_state(
                Admin {
                    state: state.clone(),
                    token,
                },
                authorized,
            ));
    let app = janus_ops::metrics::admin_routes(state.metrics.registry.clone())
        .route("/ready", get(ready))
        .route("/stats", get(stats))
        .merge(mutating)
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

/// Lets a mutating request through only with the configured bearer token.
async fn authorized(
    State(admin): State<Admin>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use subtle::ConstantTimeEq;
    let sent = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let refused = match (&admin.token, sent) {
        (None, _) => Some((
            StatusCode::FORBIDDEN,
            "no_token_configured",
            "mutating admin requests are off: set admin_token_file",
        )),
        (Some(_), None) => Some((
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "an Authorization: Bearer token is required",
        )),
        (Some(AdminToken(token)), Some(sent)) if !bool::from(token.ct_eq(sent.as_bytes())) => {
            Some((StatusCode::UNAUTHORIZED, "wrong_token", "wrong token"))
        }
        (Some(_), Some(_)) => None,
    };
    match refused {
        None => next.run(request).await,
        Some((status, reason, text)) => {
            tracing::warn!(path = %request.uri().path(), reason, "admin request refused");
            admin
                .state
                .metrics
                .admin_refused
                .with_label_values(&[reason])
                .inc();
            (status, text).into_response()
        }
    }
}

async fn ready(State(state): State<Arc<BrokerState>>) -> impl IntoResponse {
    let probe = format!("r_{GATE_SERVICE}_{{ready}}_{{probe}}");
    match state.routes.get(&probe).await {
        Ok(_) => (StatusCode::OK, "ready".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn stats(State(state): State<Arc<BrokerState>>) -> Json<serde_json::Value> {
    Json(json!({
        "endpoint": state.endpoint,
        "sessions": state.registry.len(),
        "edges": state.metrics.live.with_label_values(&["edges"]).get(),
    }))
}

#[derive(Debug, Deserialize)]
struct KickQuery {
    uid: i64,
    #[serde(default)]
    color: String,
}

async fn kick(
    State(state): State<Arc<BrokerState>>,
    Query(q): Query<KickQuery>,
) -> (StatusCode, String) {
    let reason = "kicked by an administrator".to_owned();
    let code = LogoutCode::AdminKickOut as i32;
    if let Some(entry) = state.registry.get(q.uid) {
        let _ = entry
            .commands
            .try_send(Box::new(Command::Kick { code, reason }));
        return (StatusCode::OK, format!("uid {} kicked here", q.uid));
    }
    let owner = match state.routes.get(&gate_route_key(&q.color, q.uid)).await {
        Ok(Some(owner)) => owner,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                format!("uid {} has no session", q.uid),
            );
        }
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let control = BrokerControl {
        uid: q.uid,
        logout_code: code,
        reason,
        ..BrokerControl::default()
    };
    let subject = subject::control(&broker_id(&owner));
    match state
        .bus
        .publish(&subject, Bytes::from(control.encode_to_vec()))
        .await
    {
        Ok(()) => (StatusCode::ACCEPTED, format!("kick sent to {owner}")),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
