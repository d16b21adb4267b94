//! Helpers for the shared-cache tests (issue #3): `Cache-Status` values,
//! the host and admin token gateways that share one Redis use, `/metrics`
//! samples and the Redis check of the dependency health report. The
//! gateway side (`Gateway::member`, the cache admin API) is in the binary
//! crate's integration tests (`crates/perfgate/tests/it/support/shared.rs`).

use serde_json::Value;

use crate::client::TestResponse;

/// The `Host` every client of a shared-cache test sends: gateways behind one
/// load balancer see one name, so they compute the same cache keys.
pub const SHARED_HOST: &str = "app.test";

/// Admin token of the shared-cache tests.
pub const TOKEN: &str = "s3cret-admin-token";

/// `Cache-Status` of an L1 hit.
pub const L1_HIT: &str = "perfgate; hit";

/// `Cache-Status` of an L2 hit on an instance whose L1 was empty.
pub const L2_HIT: &str = "perfgate; hit; detail=l2";

/// `Cache-Status` of a miss that was stored.
pub const STORED: &str = "perfgate; fwd=miss; stored";

/// The response's `Cache-Status`.
pub fn cache_status(r: &TestResponse) -> &str {
    r.header("cache-status")
}

/// True for any kind of hit (L1, L2, stale).
pub fn is_hit(r: &TestResponse) -> bool {
    cache_status(r).starts_with("perfgate; hit")
}

/// The value of the first sample of `name` carrying every label in `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The status of the Redis check of an `application/health+json` report:
/// `checks` as an object keyed by `component:measurement` (the draft's
/// shape, values being an array of objects or one object), or as an array
/// of objects naming their component.
pub fn redis_check_status(report: &Value) -> Option<String> {
    fn status_of(v: &Value) -> Option<String> {
        match v {
            Value::Array(items) => items.iter().find_map(status_of),
            Value::Object(o) => o.get("status").and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
    }
    match &report["checks"] {
        Value::Object(checks) => checks
            .iter()
            .find(|(k, _)| k.to_ascii_lowercase().contains("redis"))
            .and_then(|(_, v)| status_of(v)),
        Value::Array(checks) => checks
            .iter()
            .find(|c| c.to_string().to_ascii_lowercase().contains("redis"))
            .and_then(status_of),
        _ => None,
    }
}
