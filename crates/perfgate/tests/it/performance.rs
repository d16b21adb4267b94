//! The performance API through real listeners: a slow route, a route whose
//! upstream sends `no-cache`, and a cached route; the bottleneck report names
//! the slow route and its upstream, and why the other is never a hit; the
//! metrics show the cached route's hit rate. Events reach the windows
//! asynchronously, so the test polls (bounded) until they are counted.

use std::time::Duration;

use http::Method;
use perfgate_config::RouteConfig;
use perfgate_test_support::{Origin, Rsp, eventually_async};
use serde_json::Value;

use crate::support::{Gateway, RunningGateway};

const N: usize = 10;

fn route(path: &str) -> RouteConfig {
    RouteConfig {
        path: Some(path.into()),
        ..RouteConfig::default()
    }
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|r| r["route"] == name))
        .unwrap_or_else(|| panic!("no route {name} in {list}"))
}

async fn report(gw: &RunningGateway, path: &str) -> Value {
    let r = gw.admin_get(path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()["data"].clone()
}

#[tokio::test]
async fn bottlenecks_name_the_slow_upstream_and_the_no_cache_reason() {
    let origin = Origin::new()
        .route(
            "/analyze",
            Rsp::json(r#"{"score":1}"#).delay(Duration::from_millis(300)),
        )
        .route(
            "/feed",
            Rsp::json(r#"{"items":[]}"#).header("cache-control", "no-cache"),
        )
        .route("/events", Rsp::json(crate::events_json()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(route("/analyze"))
        .route(route("/feed"))
        .route(route("/events"))
        .config(|c| {
            c.server.slow_request_threshold = perfgate_config::Duration::from_millis(200);
        })
        .spawn()
        .await;

    // The slow route at once (passed through: POST), the others in turn.
    let slow = (0..N).map(|_| gw.request(Method::POST, "/analyze").body("x").send());
    for r in futures_util::future::join_all(slow).await {
        assert_eq!(r.status, 200);
    }
    for _ in 0..N {
        assert_eq!(gw.get("/feed").await.status, 200);
        assert_eq!(gw.get("/events").await.status, 200);
    }
    assert_eq!(origin.hits("/events"), 1);
    assert_eq!(origin.hits("/feed"), N);

    let counted = |v: &Value| {
        ["/analyze", "/feed", "/events"].iter().all(|name| {
            v["routes"]
                .as_array()
                .and_then(|l| l.iter().find(|r| r["route"] == *name))
                .is_some_and(|r| r["requests"] == N)
        })
    };
    eventually_async("every request counted", Duration::from_secs(10), || async {
        counted(&report(&gw, "/admin/performance/bottlenecks?window=1m").await)
    })
    .await;

    let b = report(&gw, "/admin/performance/bottlenecks?window=1m").await;
    assert_eq!(b["window"], "1m");
    let top = &b["slowest_by_p95"][0];
    assert_eq!(top["route"], "/analyze", "{b:#}");
    assert_eq!(top["slowest_phase"], "upstream_response", "{b:#}");
    assert!(top["p95_ms"].as_f64().unwrap_or(0.0) >= 290.0, "{top}");
    assert_eq!(b["slowest_by_time"][0]["route"], "/analyze", "{b:#}");
    let analyze = find(&b["routes"], "/analyze");
    let verdict = |route: &Value, rule: &str| -> Value {
        route["verdicts"]
            .as_array()
            .and_then(|l| l.iter().find(|v| v["rule"] == rule))
            .cloned()
            .unwrap_or_else(|| panic!("no {rule} verdict in {route:#}"))
    };
    let up = verdict(analyze, "upstream");
    assert!(up["upstream_pct"].as_f64().unwrap_or(0.0) >= 80.0, "{up}");
    let msg = up["message"].as_str().unwrap_or("");
    assert!(msg.starts_with("/analyze: "), "{msg}");
    assert!(msg.contains("async route"), "{msg}");

    let feed = verdict(find(&b["routes"], "/feed"), "low_hit_rate");
    assert_eq!(feed["reason"], "no-cache", "{feed}");
    assert_eq!(feed["hit_rate_pct"], 0.0, "{feed}");
    assert!(
        feed["message"]
            .as_str()
            .unwrap_or("")
            .contains("`no-cache`"),
        "{feed}"
    );

    // Every /analyze request took longer than the 200 ms threshold.
    let slow = b["slow_requests"].as_array().expect("slow requests");
    assert_eq!(slow.len(), N, "{b:#}");
    for s in slow {
        assert_eq!(s["route"], "/analyze", "{s}");
        assert_eq!(s["path"], "/analyze", "{s}");
        assert_eq!(s["method"], "POST", "{s}");
        assert!(s["id"].as_u64().unwrap_or(0) > 0, "{s}");
        assert!(s["phases"]["upstream_response_ms"].as_f64().unwrap_or(0.0) >= 290.0);
    }

    let m = report(&gw, "/admin/performance/metrics?window=1m").await;
    let events = find(&m["routes"], "/events");
    assert_eq!(events["requests"], N, "{events:#}");
    assert_eq!(events["cache"]["lookups"], N, "{events:#}");
    assert_eq!(events["cache"]["hit_l1"], N - 1, "{events:#}");
    assert_eq!(events["cache"]["miss"], 1, "{events:#}");
    assert_eq!(events["cache"]["hit_rate"], 0.9, "{events:#}");
    assert_eq!(events["cache"]["l1_hit_rate"], 0.9, "{events:#}");
    assert_eq!(events["cache"]["l2_hit_rate"], 0.0, "{events:#}");
    assert!(
        events["bytes"]["out"].as_u64().unwrap_or(0) > 0,
        "{events:#}"
    );
    assert_eq!(find(&m["routes"], "/feed")["cache"]["hit_rate"], 0.0);
    assert_eq!(find(&m["routes"], "/analyze")["cache"]["bypass"], N);
    assert_eq!(m["total"]["requests"], 3 * N);
    // An unknown window names the field.
    let r = gw.admin_get("/admin/performance/metrics?window=10m").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "window");
}
