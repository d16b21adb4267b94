//! Cache administration: `GET /admin/cache/stats` and its alias
//! `GET /api/v1/cache/stats`.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;

use crate::AdminState;
use crate::envelope::ok;

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin/cache/stats", get(stats))
        .route("/api/v1/cache/stats", get(stats))
}

async fn stats(State(state): State<AdminState>) -> Response {
    ok(state.gateway.cache_stats())
}
