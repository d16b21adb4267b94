//! Helpers for the shared-cache tests (issue #3): gateways that share one
//! Redis, the cache admin API, `Cache-Status` values and the dependency
//! health report.

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::client::TestResponse;
use crate::gateway::{Gateway, GatewayBuilder, RunningGateway};
use crate::util::eventually_async;

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

impl Gateway {
    /// A gateway for shared-cache tests: `upstream`, standalone Redis at
    /// `redis_url` under `key_prefix`, [`TOKEN`], clients naming [`SHARED_HOST`].
    pub fn member(
        upstream: std::net::SocketAddr,
        redis_url: &str,
        key_prefix: &str,
    ) -> GatewayBuilder {
        Gateway::builder()
            .upstream(upstream)
            .redis(redis_url, key_prefix)
            .admin_token(TOKEN)
            .client_host(SHARED_HOST)
    }
}

impl Gateway {
    /// Two members of one cache (same upstream, Redis and key prefix), each
    /// built by `configure` and started with [`GatewayBuilder::spawn_connected`].
    pub async fn members(
        upstream: std::net::SocketAddr,
        redis_url: &str,
        key_prefix: &str,
        configure: impl Fn(GatewayBuilder) -> GatewayBuilder,
    ) -> (RunningGateway, RunningGateway) {
        let start =
            || configure(Gateway::member(upstream, redis_url, key_prefix)).spawn_connected();
        let a = start().await;
        let b = start().await;
        (a, b)
    }
}

impl GatewayBuilder {
    /// Starts the gateway and waits until its L2 reports `up`: perfgate
    /// connects to Redis in the background and skips L2 (`connecting`)
    /// until then, so a test that wants its first response in L2 waits.
    pub async fn spawn_connected(self) -> RunningGateway {
        let gw = self.spawn().await;
        gw.wait_l2_up().await;
        gw
    }
}

/// The response's `Cache-Status`.
pub fn cache_status(r: &TestResponse) -> &str {
    r.header("cache-status")
}

/// True for any kind of hit (L1, L2, stale).
pub fn is_hit(r: &TestResponse) -> bool {
    cache_status(r).starts_with("perfgate; hit")
}

impl RunningGateway {
    /// `GET /admin/cache/stats` → `data` (asserts 200 and `success`).
    pub async fn cache_stats(&self) -> Value {
        let r = self.admin(Method::GET, "/admin/cache/stats").await;
        assert_eq!(r.status, 200, "GET /admin/cache/stats: {}", r.text());
        let v = r.json();
        assert_eq!(v["success"], true, "{v}");
        v["data"].clone()
    }

    /// A counter of the L2 layer in the cache statistics (`hits`,
    /// `misses`, `errors`, `writes`); 0 when absent.
    pub async fn l2_counter(&self, name: &str) -> u64 {
        self.cache_stats().await["layers"]["l2"][name]
            .as_u64()
            .unwrap_or(0)
    }

    /// `layers.l2.state` of the cache statistics.
    pub async fn l2_state(&self) -> String {
        self.cache_stats().await["layers"]["l2"]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits until `layers.l2.state` is `up`.
    pub async fn wait_l2_up(&self) {
        eventually_async(
            &format!("L2 of {} up", self.url()),
            crate::PATIENCE,
            || async move { self.l2_state().await == "up" },
        )
        .await;
    }

    /// Waits until this instance reports at least `n` L2 writes (the L2
    /// write is off the hot path: a response is in Redis a little after it
    /// was sent).
    pub async fn wait_l2_writes(&self, n: u64) {
        eventually_async(
            &format!("{n} L2 write(s) reported by {}", self.url()),
            crate::PATIENCE,
            || async move { self.l2_counter("writes").await >= n },
        )
        .await;
    }

    /// GETs `path` through this instance and waits until its L2 write is
    /// done; returns the response.
    pub async fn fetch_into_l2(&self, path: &str) -> TestResponse {
        let before = self.l2_counter("writes").await;
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        self.wait_l2_writes(before + 1).await;
        r
    }

    /// `POST /admin/cache/invalidate` with the token.
    pub async fn invalidate(&self, body: Value) -> TestResponse {
        self.admin_post("/admin/cache/invalidate", &body).await
    }

    /// `POST /admin/cache/invalidate` that must succeed → `data`.
    pub async fn invalidate_ok(&self, body: Value) -> Value {
        let r = self.invalidate(body.clone()).await;
        assert_eq!(r.status, 200, "invalidate {body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["success"], true, "{v}");
        v["data"].clone()
    }

    /// `GET /health/dependencies` (no token): the whole report.
    pub async fn dependencies(&self) -> TestResponse {
        self.admin_request(Method::GET, "/health/dependencies")
            .await
    }

    /// Status (`pass`, `warn`, `fail`) of the Redis check in
    /// `/health/dependencies`, `None` when the report has no Redis check.
    pub async fn redis_health(&self) -> Option<String> {
        let r = self.dependencies().await;
        if r.status != 200 && r.status != 503 {
            return None;
        }
        redis_check_status(&r.json())
    }

    /// A Prometheus sample of this instance's `/metrics`: the value of the
    /// first line of `name` whose labels include every `label="value"` of
    /// `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let r = self.admin(Method::GET, "/metrics").await;
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        metric_value(&r.text(), name, labels)
    }
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

/// Polls `path` on `gw` until the answer is not a hit of any kind; returns
/// that response and how long after `since` the request that got it was
/// sent. Panics after `within`.
pub async fn until_not_hit(
    gw: &RunningGateway,
    path: &str,
    since: std::time::Instant,
    within: Duration,
) -> (TestResponse, Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let sent = std::time::Instant::now();
        let r = gw.get(path).await;
        if !is_hit(&r) {
            return (r, sent.saturating_duration_since(since));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} on {} still a hit ({}) {within:?} after the invalidation",
            gw.url(),
            cache_status(&r)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
