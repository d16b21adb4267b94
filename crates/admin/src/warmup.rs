//! `POST /admin/cache/warmup` and `GET /admin/cache/warmup/{id}`: fetch a
//! list of paths, or the hottest keys seen recently, through the configured
//! routes so that they are cached before clients ask. The job runs in the
//! background; the status URL reports its progress.
//!
//! Body: `{"urls": ["/path", …]}` and/or `{"top": N}`, optional
//! `"concurrency"` and `"host"` (the `Host` the requests carry).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use perfgate_proxy::WarmupRequest;
use serde_json::{Value, json};

use crate::AdminState;
use crate::envelope::{ApiError, ok};
use crate::invalidate::MAX_ITEMS;
use crate::json::{self, Fields};

/// Most hot keys one request may ask for.
const MAX_TOP: u64 = 10_000;
/// Most warm-up requests in flight for one job (as `cache.warmup_concurrency`).
const MAX_CONCURRENCY: u64 = 64;

const FIELDS: &[&str] = &["urls", "top", "concurrency", "host"];

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin/cache/warmup", post(start))
        .route("/admin/cache/warmup/{id}", get(status))
}

async fn start(State(state): State<AdminState>, headers: HeaderMap, body: Body) -> Response {
    let req = match json::read_object(&headers, body, FIELDS)
        .await
        .and_then(|f| parse(&f))
    {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    let started = state.gateway.start_warmup(req);
    let data = json!({
        "id": started.id,
        "total": started.total,
        "status_url": format!("/admin/cache/warmup/{}", started.id),
    });
    (StatusCode::ACCEPTED, ok(data)).into_response()
}

async fn status(
    State(state): State<AdminState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let found = id
        .ok()
        .and_then(|Path(id)| state.gateway.warmup_status(&id));
    match found {
        Some(s) => ok(s),
        None => ApiError::not_found("no warm-up job with this id").into_response(),
    }
}

/// Validates the body; every error names its field.
pub(crate) fn parse(f: &Fields) -> Result<WarmupRequest, ApiError> {
    let items = json::array(f, "urls")?;
    if items.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(
            "urls",
            format!("{} URLs: at most {MAX_ITEMS} per request", items.len()),
        ));
    }
    let mut urls = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let at = format!("urls[{i}]");
        let Value::String(s) = v else {
            return Err(ApiError::bad_request(
                at,
                format!("expected a path string, got {}", json::kind(v)),
            ));
        };
        if !s.starts_with('/') && s.contains("://") {
            // Requests are sent through the routes, so an absolute URL could
            // name a host perfgate does not front.
            return Err(ApiError::bad_request(
                at,
                "warm-up goes through configured routes: give a path",
            ));
        }
        json::check_path(s).map_err(|e| ApiError::bad_request(at, e))?;
        urls.push(s.clone());
    }
    let top = json::integer(f, "top", 1..=MAX_TOP)?;
    let concurrency = json::integer(f, "concurrency", 1..=MAX_CONCURRENCY)?;
    let host = match f.get("host") {
        None => None,
        Some(Value::String(h)) => {
            check_host(h).map_err(|e| ApiError::bad_request("host", e))?;
            Some(h.clone())
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "host",
                format!("expected a host name, got {}", json::kind(other)),
            ));
        }
    };
    if urls.is_empty() && top.is_none() {
        return Err(ApiError::bad_request(
            "body",
            "nothing to warm up: give urls (paths) or top (the N hottest keys)",
        ));
    }
    Ok(WarmupRequest {
        urls,
        top: top.and_then(|n| usize::try_from(n).ok()),
        concurrency: concurrency.and_then(|n| usize::try_from(n).ok()),
        host,
    })
}

/// A `Host` value: `name` or `name:port`, no credentials.
fn check_host(h: &str) -> Result<(), String> {
    let valid = !h.is_empty()
        && !h.contains(['@', '/', '?', '#'])
        && h.parse::<axum::http::uri::Authority>()
            .is_ok_and(|a| !a.host().is_empty());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{h:?} is not a host such as \"api.example.com\" or \"api.example.com:8080\""
        ))
    }
}
