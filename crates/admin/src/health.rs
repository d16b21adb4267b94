//! `GET /health`: liveness, no authentication.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AdminState;

pub fn routes() -> Router<AdminState> {
    Router::new().route("/health", get(health))
}

async fn health() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/health+json")],
        r#"{"status":"pass"}"#,
    )
}
