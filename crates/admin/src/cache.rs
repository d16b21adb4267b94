//! Cache administration: `GET /admin/cache/stats` (alias
//! `GET /api/v1/cache/stats`) and `DELETE /api/v1/cache/{url_hash}`.
//! Invalidation by URL, prefix and tag is in `invalidate.rs`, warm-up in
//! `warmup.rs`.

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::json;

use crate::AdminState;
use crate::envelope::{ApiError, ok};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin/cache/stats", get(stats))
        .route("/api/v1/cache/stats", get(stats))
        .route("/api/v1/cache/{url_hash}", delete(purge_hash))
}

async fn stats(State(state): State<AdminState>) -> Response {
    ok(state.gateway.cache_stats())
}

/// Removes every variant of the URL whose `url_hash` (shown in the
/// `Cache-Status` detail and the logs) is given, from L1, L2 and, through
/// the fan-out, the other instances.
async fn purge_hash(
    State(state): State<AdminState>,
    hash: Result<Path<String>, PathRejection>,
) -> Response {
    let hash = match hash {
        Ok(Path(h)) if is_url_hash(&h) => h,
        Ok(Path(h)) => {
            return ApiError::bad_request(
                "url_hash",
                format!("{h:?} is not a url_hash: expected 32 lowercase hex characters"),
            )
            .into_response();
        }
        Err(e) => return ApiError::bad_request("url_hash", e.body_text()).into_response(),
    };
    match state.gateway.purge_hash(&hash).await {
        Some((key, report)) => ok(json!({
            "url_hash": hash,
            "key": key,
            "l1_removed": report.l1_removed,
            "l2_removed": report.l2_removed,
        })),
        None => ApiError::not_found(format!("no cached URL has the hash {hash}")).into_response(),
    }
}

/// `url_hash` is 128 bits written as 32 lowercase hex digits.
fn is_url_hash(h: &str) -> bool {
    h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
