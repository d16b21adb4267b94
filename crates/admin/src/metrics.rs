//! `GET /metrics`: the Prometheus (OpenMetrics) exposition.

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use perfgate_observe::Metrics;

use crate::AdminState;

/// The route, or nothing when `include` is false (it is mounted either
/// behind the auth layer or in front of it).
pub fn routes(include: bool) -> axum::Router<AdminState> {
    if include {
        Router::new().route("/metrics", get(metrics))
    } else {
        Router::new()
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // Refresh the cache-size gauges before encoding.
    let _ = state.gateway.cache_stats();
    (
        [(CONTENT_TYPE, Metrics::CONTENT_TYPE)],
        state.gateway.metrics().encode(),
    )
}
