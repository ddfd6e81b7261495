//! The admin HTTP endpoint: `/health` (the process is up), `/ready` (listeners up, not
//! draining, at least one broker reachable), `/metrics` (Prometheus text) and `/stats`, also
//! at `/stats/connections` (JSON: sessions by transport and by broker; `/stats` as on a broker).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::context::EdgeState;

/// What the admin handlers read.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    /// The edge's shared state.
    pub(crate) state: Arc<EdgeState>,
}

/// Serves the admin endpoint on `listener` until the edge has stopped.
pub(crate) async fn serve(listener: TcpListener, admin: Admin) {
    let state = admin.state.clone();
    let app = janus_ops::metrics::admin_routes(state.metrics.registry.clone())
        .route("/ready", get(ready))
        .route("/stats", get(connections))
        .route("/stats/connections", get(connections))
        .with_state(admin);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { state.lifecycle.stopped().await })
        .await
    {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

async fn ready(State(admin): State<Admin>) -> impl IntoResponse {
    if !admin.state.lifecycle.accepting() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !admin.state.links.any_up() {
        (StatusCode::SERVICE_UNAVAILABLE, "no broker reachable")
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn connections(State(admin): State<Admin>) -> Json<serde_json::Value> {
    let state = &admin.state;
    let by_transport: serde_json::Map<String, serde_json::Value> =
        ["tcp", "websocket", "kcp", "quic"]
            .iter()
            .map(|t| {
                (
                    (*t).to_owned(),
                    json!(state.metrics.sessions.with_label_values(&[t]).get()),
                )
            })
            .collect();
    let brokers: Vec<serde_json::Value> = state
        .links
        .all()
        .into_iter()
        .map(|l| json!({"endpoint": l.endpoint, "up": l.is_up(), "sessions": l.sessions()}))
        .collect();
    Json(json!({
        "edge_id": state.edge_id,
        "sessions": state.admission.sessions(),
        "by_transport": by_transport,
        "by_broker": brokers,
    }))
}
