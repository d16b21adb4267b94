//! `POST /admin/cache/invalidate`: purge by exact URL, prefix or tag,
//! optionally softly (mark stale so stale-while-revalidate refreshes in the
//! background instead of a stampede on the upstream).
//!
//! Body: `{"urls": [...], "prefix": "...", "tags": [...], "soft": bool}`,
//! at least one of `urls`, `prefix` and `tags` non-empty. URLs and the prefix
//! are paths (every host) or absolute `http(s)://` URLs (that host only).

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use perfgate_proxy::InvalidateRequest;
use serde_json::Value;

use crate::AdminState;
use crate::envelope::{ApiError, ok};
use crate::json::{self, Fields};

/// Most URLs (and tags) in one request; a larger purge is a prefix or a tag.
pub(crate) const MAX_ITEMS: usize = 10_000;

const FIELDS: &[&str] = &["urls", "prefix", "tags", "soft"];

pub fn routes() -> Router<AdminState> {
    Router::new().route("/admin/cache/invalidate", post(invalidate))
}

async fn invalidate(State(state): State<AdminState>, headers: HeaderMap, body: Body) -> Response {
    let req = match json::read_object(&headers, body, FIELDS)
        .await
        .and_then(|f| parse(&f))
    {
        Ok(req) => req,
        Err(e) => return e.into_response(),
    };
    ok(state.gateway.invalidate(&req).await)
}

/// Validates the body; every error names its field.
pub(crate) fn parse(f: &Fields) -> Result<InvalidateRequest, ApiError> {
    let urls = strings(f, "urls", json::check_path_or_url)?;
    let prefix = match f.get("prefix") {
        None => None,
        Some(Value::String(p)) => {
            json::check_path_or_url(p).map_err(|e| ApiError::bad_request("prefix", e))?;
            Some(p.clone())
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "prefix",
                format!(
                    "expected a path or an absolute URL, got {}",
                    json::kind(other)
                ),
            ));
        }
    };
    let tags = strings(f, "tags", check_tag)?;
    let soft = match f.get("soft") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::bad_request(
                "soft",
                format!("expected true or false, got {}", json::kind(other)),
            ));
        }
    };
    if urls.is_empty() && prefix.is_none() && tags.is_empty() {
        return Err(ApiError::bad_request(
            "body",
            "nothing to invalidate: give urls, prefix or tags",
        ));
    }
    Ok(InvalidateRequest {
        urls,
        prefix,
        tags,
        soft,
    })
}

/// An array of strings, each checked by `check`; errors name `field[i]`.
fn strings(
    f: &Fields,
    field: &str,
    check: fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, ApiError> {
    let items = json::array(f, field)?;
    if items.len() > MAX_ITEMS {
        return Err(ApiError::bad_request(
            field,
            format!("{} items: at most {MAX_ITEMS} per request", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = || format!("{field}[{i}]");
            match v {
                Value::String(s) => match check(s) {
                    Ok(()) => Ok(s.clone()),
                    Err(e) => Err(ApiError::bad_request(at(), e)),
                },
                other => Err(ApiError::bad_request(
                    at(),
                    format!("expected a string, got {}", json::kind(other)),
                )),
            }
        })
        .collect()
}

/// Tags are matched literally against `Surrogate-Key` (space-separated) and
/// `Cache-Tag` values: an empty tag or one with whitespace can never match.
fn check_tag(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("empty tag".into());
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("tag {t:?} must not contain whitespace"));
    }
    Ok(())
}
