//! Performance: `GET /admin/performance/metrics?window=1m|5m|1h` (per
//! route: request rate, p50/p95/p99, error rate, hit rate per layer, bytes)
//! and `GET /admin/performance/bottlenecks?window=…` (where the time goes:
//! share per route and phase, slowest routes, p95 regressions against the
//! window before, slow requests, verdicts). Both read the gateway's
//! [`PerfWindows`]; the JSON shapes are documented in
//! `perfgate_observe::perf` (`report.rs`). `window` defaults to `5m`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use perfgate_observe::{PerfWindows, Window};
use perfgate_proxy::ErrorKind;

use crate::AdminState;
use crate::envelope::{ApiError, ok};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin/performance/metrics", get(metrics))
        .route("/admin/performance/bottlenecks", get(bottlenecks))
}

fn windows(state: &AdminState) -> Result<Arc<PerfWindows>, ApiError> {
    state.perf.clone().ok_or_else(|| {
        ApiError::new(
            ErrorKind::Disabled,
            "the performance windows are off: this instance does not count request events",
        )
    })
}

/// The `window` of the query (`5m` without one); any other parameter is
/// refused, naming it.
fn window(query: Option<&str>) -> Result<Window, ApiError> {
    let mut window = Window::FiveMinutes;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "window" => {
                window = Window::parse(v).ok_or_else(|| {
                    ApiError::bad_request("window", format!("{v:?}: use 1m, 5m or 1h"))
                })?;
            }
            other => {
                return Err(ApiError::bad_request(
                    other.to_string(),
                    "unknown parameter: use window",
                ));
            }
        }
    }
    Ok(window)
}

async fn metrics(State(state): State<AdminState>, RawQuery(q): RawQuery) -> Response {
    let run = || {
        let window = window(q.as_deref())?;
        Ok::<_, ApiError>(ok(windows(&state)?.metrics(window)))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

async fn bottlenecks(State(state): State<AdminState>, RawQuery(q): RawQuery) -> Response {
    let run = || {
        let window = window(q.as_deref())?;
        Ok::<_, ApiError>(ok(windows(&state)?.bottlenecks(window)))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}
