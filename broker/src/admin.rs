//! The broker's admin HTTP endpoint: `/health` (the process is up), `/ready` (the route store
//! answers), `/metrics` (Prometheus text) and `/stats` (JSON: sessions and linked edges).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::route::GATE_SERVICE;
use crate::state::BrokerState;

/// Serves the admin endpoint on `listener` until the broker shuts down.
pub async fn serve(listener: TcpListener, state: Arc<BrokerState>) {
    let stop = state.shutdown.clone();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

async fn ready(State(state): State<Arc<BrokerState>>) -> impl IntoResponse {
    let probe = format!("r_{GATE_SERVICE}_{{ready}}_{{probe}}");
    match state.routes.get(&probe).await {
        Ok(_) => (StatusCode::OK, "ready".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn metrics(State(state): State<Arc<BrokerState>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn stats(State(state): State<Arc<BrokerState>>) -> Json<serde_json::Value> {
    Json(json!({
        "endpoint": state.endpoint,
        "sessions": state.registry.len(),
        "edges": state.metrics.live.with_label_values(&["edges"]).get(),
    }))
}
