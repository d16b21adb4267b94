//! Warm-up (issue #3): `POST /admin/cache/warmup` with a list of URLs or
//! the hottest keys, progress at its status URL, only through configured
//! routes.

use std::time::Duration;

use http::Method;
use perfgate_config::RouteConfig;
use perfgate_test_support::{
    L1_HIT, Origin, PATIENCE, Rsp, STORED, TOKEN, cache_status, free_port,
};
use serde_json::{Value, json};

use crate::events_json;
use crate::support::{Gateway, RunningGateway};

/// Starts a warm-up; asserts the 202 answer and returns its `data`.
async fn start(gw: &RunningGateway, body: Value) -> Value {
    let r = gw.admin_post("/admin/cache/warmup", &body).await;
    assert_eq!(r.status, 202, "warmup {body}: {}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true, "{v}");
    let d = v["data"].clone();
    let id = d["id"].as_str().unwrap_or_else(|| panic!("no id: {d}"));
    assert!(!id.is_empty());
    assert_eq!(d["status_url"], format!("/admin/cache/warmup/{id}"), "{d}");
    d
}

/// Polls the warm-up's status URL until `state` is `done`; returns the
/// final status. Progress never goes backwards and never exceeds `total`.
async fn wait_done(gw: &RunningGateway, started: &Value) -> Value {
    let url = started["status_url"].as_str().expect("status_url");
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut last_done = 0;
    loop {
        let r = gw.admin(Method::GET, url).await;
        assert_eq!(r.status, 200, "GET {url}: {}", r.text());
        let v = r.json();
        assert_eq!(v["success"], true, "{v}");
        let d = v["data"].clone();
        assert_eq!(d["id"], started["id"], "{d}");
        assert_eq!(d["total"], started["total"], "{d}");
        let done = d["done"].as_u64().unwrap_or_else(|| panic!("done: {d}"));
        assert!(done >= last_done, "progress went back: {d}");
        assert!(Some(done) <= d["total"].as_u64(), "{d}");
        last_done = done;
        match d["state"].as_str() {
            Some("done") => {
                assert_eq!(d["done"], d["total"], "{d}");
                assert_eq!(
                    d["succeeded"].as_u64().unwrap_or(0) + d["failed"].as_u64().unwrap_or(0),
                    done,
                    "{d}"
                );
                return d;
            }
            Some("running") => {}
            other => panic!("unexpected state {other:?}: {d}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "warm-up never finished: {d}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn warmup_from_a_list_of_urls_fills_the_cache() {
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .route("/events/1", Rsp::json(r#"{"id":1}"#).max_age(60))
        .route("/venues", Rsp::json(r#"{"venues":[]}"#).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .spawn()
        .await;
    let urls = ["/events", "/events/1", "/venues?city=paris"];
    let started = start(&gw, json!({"urls": urls, "concurrency": 2})).await;
    assert_eq!(started["total"], 3, "{started}");
    let d = wait_done(&gw, &started).await;
    assert_eq!(d["succeeded"], 3, "{d}");
    assert_eq!(d["failed"], 0, "{d}");
    assert_eq!(d["errors"].as_array().map(Vec::len), Some(0), "{d}");
    for p in ["/events", "/events/1", "/venues"] {
        assert_eq!(origin.hits(p), 1, "{p} fetched once by the warm-up");
    }
    for u in urls {
        let r = gw.get(u).await;
        assert_eq!(r.status, 200);
        assert_eq!(cache_status(&r), L1_HIT, "{u} warmed");
    }
    assert_eq!(
        origin.total_hits(),
        3,
        "no upstream request after the warm-up"
    );
}

#[tokio::test]
async fn warmup_of_the_hottest_keys() {
    let origin = Origin::new()
        .route("/a", Rsp::json(r#"{"a":1}"#).max_age(60))
        .route("/b", Rsp::json(r#"{"b":1}"#).max_age(60))
        .route("/c", Rsp::json(r#"{"c":1}"#).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .spawn()
        .await;
    for (path, n) in [("/a", 5), ("/b", 3), ("/c", 1)] {
        for _ in 0..n {
            assert_eq!(gw.get(path).await.status, 200);
        }
    }
    let d = gw.invalidate_ok(json!({"prefix": "/"})).await;
    assert_eq!(d["l1_removed"], 3, "{d}");

    let started = start(&gw, json!({"top": 2})).await;
    assert_eq!(started["total"], 2, "{started}");
    let d = wait_done(&gw, &started).await;
    assert_eq!(d["succeeded"], 2, "{d}");
    assert_eq!(origin.hits("/a"), 2, "the hottest key was warmed");
    assert_eq!(origin.hits("/b"), 2, "the second hottest key was warmed");
    assert_eq!(origin.hits("/c"), 1, "the third was not");
    assert_eq!(cache_status(&gw.get("/a").await), L1_HIT);
    assert_eq!(cache_status(&gw.get("/b").await), L1_HIT);
    assert_eq!(cache_status(&gw.get("/c").await), STORED);
}

/// A warm-up URL whose upstream fails is reported, the others still count.
#[tokio::test]
async fn warmup_reports_failures() {
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .run()
        .await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .route(RouteConfig {
            name: Some("down".into()),
            path: Some("/down".into()),
            upstream: Some(dead),
            ..Default::default()
        })
        .spawn()
        .await;
    let started = start(&gw, json!({"urls": ["/events", "/down"]})).await;
    let d = wait_done(&gw, &started).await;
    assert_eq!(d["succeeded"], 1, "{d}");
    assert_eq!(d["failed"], 1, "{d}");
    let errors = d["errors"].as_array().unwrap_or_else(|| panic!("{d}"));
    assert_eq!(errors.len(), 1, "{d}");
    assert_eq!(errors[0]["url"], "/down", "{d}");
    assert!(errors[0]["error"].is_string(), "{d}");
    assert_eq!(cache_status(&gw.get("/events").await), L1_HIT);
}

/// Warm-up goes only through configured routes: absolute URLs (which could
/// name any host) are refused; unknown ids are 404.
#[tokio::test]
async fn warmup_rejects_absolute_urls_and_unknown_ids() {
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .spawn()
        .await;
    for (body, field) in [
        (
            json!({"urls": ["http://169.254.169.254/latest/meta-data"]}),
            "urls[0]",
        ),
        (
            json!({"urls": ["/events", format!("{}/events", origin.url())]}),
            "urls[1]",
        ),
    ] {
        let r = gw.admin_post("/admin/cache/warmup", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    for body in [json!({}), json!({"urls": "/events"}), json!({"top": "ten"})] {
        let r = gw.admin_post("/admin/cache/warmup", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["success"], false);
    }
    assert_eq!(origin.total_hits(), 0, "nothing was fetched");

    let r = gw
        .admin(Method::GET, "/admin/cache/warmup/no-such-id")
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["success"], false);
}
