//! `GET /metrics`: the Prometheus exposition, in OpenMetrics when the
//! scraper asks for it (Prometheus does) and in the Prometheus text format
//! 0.0.4 otherwise (curl, `promtool check metrics`, older agents), as the
//! Prometheus client libraries negotiate it.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
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

async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    // Refresh the cache-size gauges before encoding.
    let _ = state.gateway.cache_stats();
    let m = state.gateway.metrics();
    if wants_openmetrics(&headers) {
        ([(CONTENT_TYPE, Metrics::CONTENT_TYPE)], m.encode())
    } else {
        (
            [(CONTENT_TYPE, Metrics::TEXT_CONTENT_TYPE)],
            m.encode_text(),
        )
    }
}

/// True when an `Accept` field lists OpenMetrics with a non-zero quality.
/// The header is only compared, never echoed.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let openmetrics = parts
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            openmetrics && !refused
        })
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header::ACCEPT};

    use super::wants_openmetrics;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        // What Prometheus 2.x sends.
        assert!(wants_openmetrics(&accept(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(wants_openmetrics(&accept("Application/OpenMetrics-Text")));
        assert!(!wants_openmetrics(&accept("*/*")));
        assert!(!wants_openmetrics(&accept("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(&accept(
            "application/openmetrics-text;q=0"
        )));
        assert!(!wants_openmetrics(&HeaderMap::new()));
    }
}
