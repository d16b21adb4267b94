//! The gateway side of the shared-cache tests (issue #3): gateways that
//! share one Redis, the cache admin API and the dependency health report.
//! The constants and response helpers they use (`TOKEN`, `SHARED_HOST`,
//! `Cache-Status` values, `metric_value`) are in `perfgate_test_support`.

use std::time::Duration;

use http::Method;
use perfgate_test_support::{
    PATIENCE, SHARED_HOST, TOKEN, TestResponse, cache_status, eventually_async, is_hit,
    metric_value, redis_check_status,
};
use serde_json::Value;

use super::gateway::{Gateway, GatewayBuilder, RunningGateway};

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
            PATIENCE,
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
            PATIENCE,
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
