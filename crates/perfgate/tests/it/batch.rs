//! The batch endpoint and the health endpoints with upstream pools.

use std::time::Duration;

use perfgate_config::{PoolConfig, PoolServer, RouteCachePolicy, RouteConfig};
use perfgate_test_support::{Origin, Rsp};
use serde_json::json;

use crate::support::Gateway;

#[tokio::test]
async fn batch_serves_each_request_through_the_cache_in_order() {
    let origin = Origin::new()
        .handle("/events/1", |r| {
            Rsp::json(format!(r#"{{"path":"{}"}}"#, r.uri.path())).max_age(60)
        })
        .handle("/events/2", |r| {
            Rsp::json(format!(r#"{{"path":"{}"}}"#, r.uri.path())).max_age(60)
        })
        .route("/text", Rsp::text("plain words").max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| {
            c.batch.enabled = true;
            c.batch.max_requests = 3;
        })
        .spawn()
        .await;
    let body = json!([
        {"method": "GET", "path": "/events/1"},
        {"path": "/events/2"},
        {"path": "/text"},
    ]);
    let r = gw
        .request(http::Method::POST, "/batch")
        .json(&body)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let items = v.as_array().expect("an array");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["status"], 200);
    assert_eq!(items[0]["body"]["path"], "/events/1");
    assert_eq!(items[1]["body"]["path"], "/events/2");
    assert_eq!(items[2]["body"], "plain words");
    assert!(items[0]["headers"]["cache-status"].is_string(), "{v}");

    // The same batch again: every item is a cache hit, no upstream call.
    let before = origin.total_hits();
    let v = gw
        .request(http::Method::POST, "/batch")
        .json(&body)
        .send()
        .await
        .json();
    assert_eq!(origin.total_hits(), before);
    let status = v[0]["headers"]["cache-status"].as_str().unwrap_or("");
    assert!(status.contains("hit"), "{v}");

    // Bad input: the entry at fault is named; nothing is fetched.
    for (bad, needle) in [
        (
            json!([{"method": "POST", "path": "/events/1"}]),
            "[0].method",
        ),
        (json!([{"path": "/a"}, {"path": "b"}]), "[1].path"),
        (
            json!([{"path": "/a"}, {"path": "/b"}, {"path": "/c"}, {"path": "/d"}]),
            "at most 3",
        ),
    ] {
        let r = gw
            .request(http::Method::POST, "/batch")
            .json(&bad)
            .send()
            .await;
        assert_eq!(r.status, 400);
        let e = r.json();
        assert_eq!(e["success"], false);
        let msg = e["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{needle} not in {msg}");
    }
    assert_eq!(origin.total_hits(), before);
}

#[tokio::test]
async fn batch_is_off_by_default() {
    let origin = Origin::new().route("/batch", Rsp::text("mine")).run().await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    let r = gw
        .request(http::Method::POST, "/batch")
        .json(&json!([]))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "mine");
}

#[tokio::test]
async fn health_endpoints_report_pools_from_probe_state() {
    let up = Origin::new().route("/health", Rsp::text("ok")).run().await;
    let down = Origin::new().route("/health", Rsp::status(503)).run().await;
    let (a, b) = (up.url(), down.url());
    let gw = Gateway::builder()
        .upstream(up.addr())
        .config(move |c| {
            let mut pool = PoolConfig {
                name: "api".into(),
                servers: vec![
                    PoolServer { url: a, weight: 1 },
                    PoolServer { url: b, weight: 1 },
                ],
                ..PoolConfig::default()
            };
            pool.health.path = Some("/health".into());
            pool.health.interval = perfgate_config::Duration::from_millis(50);
            pool.health.unhealthy_threshold = 1;
            c.pools.push(pool);
        })
        .route(RouteConfig {
            path: Some("/api".into()),
            pool: Some("api".into()),
            cache: RouteCachePolicy {
                bypass: true,
                ..RouteCachePolicy::default()
            },
            ..RouteConfig::default()
        })
        .spawn()
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let v = loop {
        let r = gw.admin_get("/health/detailed").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), "application/health+json");
        let v = r.json();
        let servers = &v["checks"]["upstream:api"][0]["servers"];
        let downs = servers
            .as_array()
            .map_or(0, |s| s.iter().filter(|s| s["up"] == false).count());
        if downs == 1 {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw the probe fail: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let api = &v["checks"]["upstream:api"][0];
    assert_eq!(api["status"], "warn", "{v}");
    assert_eq!(api["circuit"], "closed");
    assert!(api["responseTime"].is_number(), "{v}");
    assert_eq!(v["status"], "warn");
    assert!(v["version"].is_string());
    // The compact form has the same checks without the servers.
    let deps = gw.admin_get("/health/dependencies").await.json();
    assert_eq!(deps["checks"]["upstream:api"][0]["status"], "warn");
    assert!(deps["checks"]["upstream:api"][0]["servers"].is_null());
    // Traffic only goes to the healthy server.
    for _ in 0..6 {
        assert_eq!(gw.get("/api/x").await.status, 404);
    }
    assert_eq!(down.hits("/api/x"), 0);
    assert_eq!(up.hits("/api/x"), 6);
}
