//! The admin router driven in-process (`tower::ServiceExt::oneshot`): every
//! rejected body names the right field, the token is required, unknown
//! hashes and jobs are 404. The gateway's upstream is a closed port; none of
//! these cases contacts it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use perfgate_config::Config;
use perfgate_observe::{Metrics, PerfWindows};
use perfgate_proxy::Gateway;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::{AdminState, router};

const TOKEN: &str = "s3cret-token";

fn state(token: Option<&str>) -> AdminState {
    let mut config = Config::default();
    config.upstream.url = "http://127.0.0.1:9".into();
    let gateway =
        Gateway::new(&config, Arc::new(Metrics::new())).unwrap_or_else(|e| panic!("gateway: {e}"));
    AdminState {
        gateway,
        token: token.map(Arc::from),
        allow_unauthenticated: false,
        allowed_hosts: Arc::from(Vec::new()),
        metrics_public: false,
        reloader: None,
        logs: None,
        perf: Some(Arc::new(PerfWindows::new(Duration::from_secs(1)))),
        process: Default::default(),
    }
}

struct Call {
    method: Method,
    path: String,
    body: Option<String>,
    token: Option<&'static str>,
    content_type: &'static str,
    peer: SocketAddr,
    extra: Vec<(&'static str, &'static str)>,
}

fn call(method: Method, path: impl Into<String>) -> Call {
    Call {
        method,
        path: path.into(),
        body: None,
        token: Some(TOKEN),
        content_type: "application/json",
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        extra: Vec::new(),
    }
}

impl Call {
    fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    fn token(mut self, token: Option<&'static str>) -> Self {
        self.token = token;
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.extra.push((name, value));
        self
    }

    fn content_type(mut self, ct: &'static str) -> Self {
        self.content_type = ct;
        self
    }

    async fn send(self, state: &AdminState) -> (StatusCode, String, Value) {
        let mut req = Request::builder().method(self.method).uri(self.path);
        if let Some(t) = self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(b) = &self.body {
            if !self.content_type.is_empty() {
                req = req.header(header::CONTENT_TYPE, self.content_type);
            }
            req = req.header(header::CONTENT_LENGTH, b.len());
        }
        for (name, value) in self.extra {
            req = req.header(name, value);
        }
        let mut req = req
            .body(self.body.map_or_else(Body::empty, Body::from))
            .unwrap_or_else(|e| panic!("request: {e}"));
        // What `into_make_service_with_connect_info` adds for a real peer.
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let rsp = router(state.clone())
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = rsp.status();
        let ct = rsp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = axum::body::to_bytes(rsp.into_body(), 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("body: {e}"));
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, ct, json)
    }
}

/// Posts `body` to `path` and asserts a 400 naming `field`.
async fn rejects(state: &AdminState, path: &'static str, body: &str, field: &str) -> String {
    let (status, _, v) = call(Method::POST, path).body(body).send(state).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    assert_eq!(v["error"]["field"], field, "{path} {body}: {v}");
    v["error"]["message"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn invalidate_rejections_name_the_field() {
    let s = state(Some(TOKEN));
    let path = "/admin/cache/invalidate";
    for (body, field) in [
        ("not json", "body"),
        ("", "body"),
        ("[]", "body"),
        ("\"/a\"", "body"),
        ("{}", "body"),
        (r#"{"urls": [], "tags": []}"#, "body"),
        (r#"{"soft": true}"#, "body"),
        (r#"{"urls": "/a"}"#, "urls"),
        (r#"{"urls": null}"#, "urls"),
        (r#"{"urls": ["/a", "/b", "/c", 5]}"#, "urls[3]"),
        (r#"{"urls": ["relative/path"]}"#, "urls[0]"),
        (r#"{"urls": ["/ok", "ftp://x.example/a"]}"#, "urls[1]"),
        (r#"{"urls": ["/a b"]}"#, "urls[0]"),
        (r#"{"urls": ["/a#frag"]}"#, "urls[0]"),
        (r#"{"urls": ["http:///nohost"]}"#, "urls[0]"),
        (r#"{"urls": [""]}"#, "urls[0]"),
        (r#"{"prefix": 3}"#, "prefix"),
        (r#"{"prefix": ""}"#, "prefix"),
        (r#"{"prefix": "events"}"#, "prefix"),
        (r#"{"tags": "events"}"#, "tags"),
        (r#"{"tags": [""]}"#, "tags[0]"),
        (r#"{"tags": ["ok", "two words"]}"#, "tags[1]"),
        (r#"{"tags": [1]}"#, "tags[0]"),
        (r#"{"tags": ["a"], "soft": "yes"}"#, "soft"),
        (r#"{"url": ["/a"]}"#, "url"),
    ] {
        rejects(&s, path, body, field).await;
    }
    let msg = rejects(&s, path, r#"{"url": ["/a"]}"#, "url").await;
    assert!(msg.contains("urls"), "{msg}");

    let mut wrong_type = call(Method::POST, path).body(r#"{"urls": ["/a"]}"#);
    wrong_type.content_type = "text/plain";
    let (status, _, v) = wrong_type.send(&s).await;
    // Refused before the handler (auth.rs): 415, not the parser's 400.
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    assert_eq!(v["error"]["code"], "unsupported_media_type", "{v}");
}

#[tokio::test]
async fn invalidate_reports_what_it_did() {
    let s = state(Some(TOKEN));
    let (status, _, v) = call(Method::POST, "/admin/cache/invalidate")
        .body(
            r#"{"urls": ["/a", "https://api.example/b?c=1"], "prefix": "/events/",
                "tags": ["events", "e:42"], "soft": true}"#,
        )
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["data"]["soft"], true, "{v}");
    assert_eq!(v["data"]["l1_removed"], 0, "{v}");
    assert!(v["data"]["fanout"].is_string(), "{v}");

    let (status, _, v) = call(Method::POST, "/admin/cache/invalidate")
        .body(r#"{"prefix": "http://api.example/v1"}"#)
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["soft"], false, "{v}");
}

#[tokio::test]
async fn cache_endpoints_require_the_token() {
    let s = state(Some(TOKEN));
    let cases = [
        (Method::GET, "/admin/cache/stats", None),
        (Method::GET, "/api/v1/cache/stats", None),
        (
            Method::POST,
            "/admin/cache/invalidate",
            Some(r#"{"tags":["a"]}"#),
        ),
        (
            Method::POST,
            "/admin/cache/warmup",
            Some(r#"{"urls":["/a"]}"#),
        ),
        (Method::GET, "/admin/cache/warmup/abc", None),
        (
            Method::DELETE,
            "/api/v1/cache/0123456789abcdef0123456789abcdef",
            None,
        ),
    ];
    for token in [None, Some("wrong")] {
        for (method, path, body) in &cases {
            let mut c = call(method.clone(), *path).token(token);
            if let Some(b) = body {
                c = c.body(*b);
            }
            let (status, _, v) = c.send(&s).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
            assert_eq!(v["error"]["code"], "unauthorized", "{v}");
        }
    }
    // Without a configured token, only loopback peers get in.
    let open = state(None);
    let (status, _, _) = call(Method::GET, "/admin/cache/stats")
        .token(None)
        .send(&open)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut remote = call(Method::GET, "/admin/cache/stats").token(None);
    remote.peer = SocketAddr::from(([10, 0, 0, 7], 40000));
    let (status, _, _) = remote.send(&open).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn stats_on_both_paths() {
    let s = state(Some(TOKEN));
    for path in ["/admin/cache/stats", "/api/v1/cache/stats"] {
        let (status, _, v) = call(Method::GET, path).send(&s).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
        assert_eq!(v["success"], true, "{v}");
        assert!(v["data"]["hits"].is_number(), "{v}");
    }
}

#[tokio::test]
async fn delete_by_hash() {
    let s = state(Some(TOKEN));
    for bad in [
        "/api/v1/cache/xyz",
        "/api/v1/cache/0123456789ABCDEF0123456789ABCDEF",
        "/api/v1/cache/0123456789abcdef0123456789abcde",
        "/api/v1/cache/0123456789abcdef0123456789abcdef0",
        "/api/v1/cache/0123456789abcdef0123456789abcdeg",
    ] {
        let (status, _, v) = call(Method::DELETE, bad).send(&s).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"]["field"], "url_hash", "{v}");
    }
    let (status, _, v) = call(
        Method::DELETE,
        "/api/v1/cache/0123456789abcdef0123456789abcdef",
    )
    .send(&s)
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "not_found", "{v}");
}

#[tokio::test]
async fn warmup_rejections_name_the_field() {
    let s = state(Some(TOKEN));
    let path = "/admin/cache/warmup";
    for (body, field) in [
        ("{}", "body"),
        ("nope", "body"),
        (r#"{"urls": []}"#, "body"),
        (r#"{"concurrency": 4}"#, "body"),
        (r#"{"urls": {"a": 1}}"#, "urls"),
        (r#"{"urls": ["/a", 7]}"#, "urls[1]"),
        (r#"{"urls": ["a"]}"#, "urls[0]"),
        (r#"{"urls": ["/a b"]}"#, "urls[0]"),
        (r#"{"top": 0}"#, "top"),
        (r#"{"top": 10001}"#, "top"),
        (r#"{"top": 2.5}"#, "top"),
        (r#"{"top": "10"}"#, "top"),
        (r#"{"top": -1}"#, "top"),
        (r#"{"urls": ["/a"], "concurrency": 0}"#, "concurrency"),
        (r#"{"urls": ["/a"], "concurrency": 65}"#, "concurrency"),
        (r#"{"urls": ["/a"], "host": "a b"}"#, "host"),
        (r#"{"urls": ["/a"], "host": ""}"#, "host"),
        (r#"{"urls": ["/a"], "host": "u@h"}"#, "host"),
        (r#"{"urls": ["/a"], "host": 1}"#, "host"),
        (r#"{"urls": ["/a"], "priority": 1}"#, "priority"),
    ] {
        rejects(&s, path, body, field).await;
    }
    let msg = rejects(
        &s,
        path,
        r#"{"urls": ["/ok", "https://api.example/a"]}"#,
        "urls[1]",
    )
    .await;
    assert_eq!(msg, "warm-up goes through configured routes: give a path");
}

#[tokio::test]
async fn warmup_starts_a_job_with_a_status_url() {
    let s = state(Some(TOKEN));
    let (status, _, v) = call(Method::POST, "/admin/cache/warmup")
        .body(r#"{"urls": ["/a", "/b?x=1"], "concurrency": 2, "host": "api.example:8080"}"#)
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["success"], true, "{v}");
    let id = v["data"]["id"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "{v}");
    assert_eq!(v["data"]["total"], 2, "{v}");
    let status_url = v["data"]["status_url"].as_str().unwrap_or_default();
    assert_eq!(status_url, format!("/admin/cache/warmup/{id}"));

    let (status, _, v) = call(Method::GET, status_url).send(&s).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["id"], id.as_str(), "{v}");
    assert_eq!(v["data"]["total"], 2, "{v}");

    let (status, _, v) = call(Method::GET, "/admin/cache/warmup/no-such-job")
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test]
async fn dependencies_without_redis_report_the_pool_and_need_no_token() {
    let s = state(Some(TOKEN));
    for path in ["/health/dependencies", "/health"] {
        let (status, ct, v) = call(Method::GET, path).token(None).send(&s).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(ct, "application/health+json", "{path}");
        assert_eq!(v["status"], "pass", "{path}: {v}");
    }
    let (_, _, v) = call(Method::GET, "/health/dependencies")
        .token(None)
        .send(&s)
        .await;
    // No Redis configured: no `redis` check. The default upstream is a
    // one-server pool that has not been probed, so it counts as up.
    let checks = v["checks"].as_object().expect("checks object");
    assert!(!checks.contains_key("redis"), "{v}");
    assert_eq!(checks.len(), 1, "{v}");
    let upstream = &v["checks"]["upstream:http://127.0.0.1:9"][0];
    assert_eq!(upstream["status"], "pass", "{v}");
    assert_eq!(upstream["circuit"], "closed", "{v}");
    assert_eq!(upstream["observedValue"], 1, "{v}");
}

/// Issue #11 (15): `/health/detailed` (every server, the instance) is
/// behind the token; `/health` and `/health/dependencies` stay open.
#[tokio::test]
async fn detailed_health_needs_the_token() {
    let s = state(Some(TOKEN));
    let (status, _, v) = call(Method::GET, "/health/detailed")
        .token(None)
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "unauthorized");
    let (status, ct, v) = call(Method::GET, "/health/detailed").send(&s).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(ct, "application/health+json");
}

/// Issue #11 (15): without a token the API is read-only for loopback
/// clients unless `admin.allow_unauthenticated` says otherwise.
#[tokio::test]
async fn without_a_token_mutations_need_explicit_consent() {
    let mut s = state(None);
    let mutations = [
        (
            Method::POST,
            "/admin/cache/invalidate",
            Some(r#"{"tags":["a"]}"#),
        ),
        (
            Method::POST,
            "/admin/cache/warmup",
            Some(r#"{"urls":["/a"]}"#),
        ),
        (
            Method::DELETE,
            "/api/v1/cache/0123456789abcdef0123456789abcdef",
            None,
        ),
        (Method::POST, "/admin/config/reload", None),
    ];
    for (method, path, body) in &mutations {
        let mut c = call(method.clone(), *path).token(None);
        if let Some(b) = body {
            c = c.body(*b);
        }
        let (status, _, v) = c.send(&s).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], "forbidden");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("allow_unauthenticated"),
            "{v}"
        );
    }
    // Reads still work.
    let (status, _, _) = call(Method::GET, "/admin/cache/stats")
        .token(None)
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Explicit consent: the same calls reach their handlers.
    s.allow_unauthenticated = true;
    let (status, _, v) = call(Method::POST, "/admin/cache/invalidate")
        .token(None)
        .body(r#"{"tags":["a"]}"#)
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _, v) = call(
        Method::DELETE,
        "/api/v1/cache/0123456789abcdef0123456789abcdef",
    )
    .token(None)
    .send(&s)
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    // Still loopback only.
    let mut remote = call(Method::POST, "/admin/cache/invalidate")
        .token(None)
        .body(r#"{"tags":["a"]}"#);
    remote.peer = SocketAddr::from(([10, 0, 0, 7], 40000));
    assert_eq!(remote.send(&s).await.0, StatusCode::FORBIDDEN);
}

/// Issue #11 (15): bodies of mutating calls are JSON (415 otherwise, in
/// the envelope): a browser can post a form or text/plain cross-origin.
#[tokio::test]
async fn bodies_must_be_json() {
    let s = state(Some(TOKEN));
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ] {
        let (status, _, v) = call(Method::POST, "/admin/cache/invalidate")
            .body(r#"{"tags":["a"]}"#)
            .content_type(ct)
            .send(&s)
            .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}: {v}");
        assert_eq!(v["error"]["code"], "unsupported_media_type", "{v}");
    }
    let (status, _, v) = call(Method::POST, "/admin/cache/invalidate")
        .body(r#"{"tags":["a"]}"#)
        .content_type("Application/JSON; charset=utf-8")
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // A form post with no body is refused too; a bodiless call without a
    // Content-Type is fine.
    let (status, _, _) = call(Method::POST, "/admin/config/reload")
        .header("content-type", "application/x-www-form-urlencoded")
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// Issue #11 (15): a Host that is neither an IP literal, `localhost`, nor
/// configured gets 421 (DNS rebinding), whatever the token; `/health`
/// answers any Host. A cross-origin browser call cannot mutate.
#[tokio::test]
async fn foreign_hosts_and_origins_are_refused() {
    let mut s = state(Some(TOKEN));
    let (status, _, v) = call(Method::GET, "/admin/cache/stats")
        .header("host", "rebind.evil.example:9090")
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "unknown_host");
    for host in ["127.0.0.1:9090", "localhost:9090", "[::1]:9090"] {
        let (status, _, v) = call(Method::GET, "/admin/cache/stats")
            .header("host", host)
            .send(&s)
            .await;
        assert_eq!(status, StatusCode::OK, "{host}: {v}");
    }
    let (status, _, _) = call(Method::GET, "/health")
        .token(None)
        .header("host", "rebind.evil.example")
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::OK);
    s.allowed_hosts = Arc::from(vec!["perfgate-admin.internal".to_string()]);
    let (status, _, _) = call(Method::GET, "/admin/cache/stats")
        .header("host", "perfgate-admin.internal:9090")
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, v) = call(Method::POST, "/admin/cache/invalidate")
        .body(r#"{"tags":["a"]}"#)
        .header("host", "127.0.0.1:9090")
        .header("origin", "http://attacker.example")
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, _, v) = call(Method::POST, "/admin/cache/invalidate")
        .body(r#"{"tags":["a"]}"#)
        .header("host", "127.0.0.1:9090")
        .header("origin", "http://127.0.0.1:9090")
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

/// `window` is 1m, 5m or 1h (5m when absent); anything else is a 400
/// naming the field at fault; without performance windows, 503.
#[tokio::test]
async fn performance_windows_and_their_rejections() {
    let s = state(Some(TOKEN));
    for path in [
        "/admin/performance/metrics",
        "/admin/performance/bottlenecks",
    ] {
        for (query, window) in [("", "5m"), ("?window=1m", "1m"), ("?window=1h", "1h")] {
            let (status, _, v) = call(Method::GET, format!("{path}{query}")).send(&s).await;
            assert_eq!(status, StatusCode::OK, "{path}{query}: {v}");
            assert_eq!(v["data"]["window"], window, "{v}");
            assert!(v["data"]["routes"].is_array(), "{v}");
        }
        for (query, field) in [
            ("?window=2m", "window"),
            ("?window=", "window"),
            ("?window=1M", "window"),
            ("?windows=1m", "windows"),
        ] {
            let (status, _, v) = call(Method::GET, format!("{path}{query}")).send(&s).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}{query}: {v}");
            assert_eq!(v["error"]["code"], "bad_request", "{v}");
            assert_eq!(v["error"]["field"], field, "{v}");
        }
        let (status, _, _) = call(Method::GET, path).token(None).send(&s).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let off = AdminState {
            perf: None,
            ..s.clone()
        };
        let (status, _, v) = call(Method::GET, path).send(&off).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert_eq!(v["error"]["code"], "disabled", "{v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains("performance windows are off"), "{msg}");
    }
}

#[tokio::test]
async fn monitoring_metrics_shape() {
    let s = state(Some(TOKEN));
    let path = "/admin/monitoring/metrics";
    let (status, _, v) = call(Method::GET, path).token(None).send(&s).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");

    let (status, ct, v) = call(Method::GET, path).send(&s).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(v["success"], true, "{v}");
    let d = &v["data"];
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(d),
        ["connections", "jobs", "process", "redis", "upstreams"],
        "{d}"
    );
    if cfg!(target_os = "linux") {
        let p = &d["process"];
        assert_eq!(
            keys(p),
            [
                "cpu_interval_seconds",
                "cpu_percent",
                "cpu_seconds_total",
                "cpus",
                "max_fds",
                "open_fds",
                "resident_memory_bytes",
                "threads",
                "uptime_seconds",
                "virtual_memory_bytes",
            ],
            "{p}"
        );
        assert!(p["resident_memory_bytes"].as_u64().unwrap() > 0, "{p}");
        assert!(p["cpu_percent"].as_f64().unwrap() >= 0.0, "{p}");
    }
    assert_eq!(d["connections"]["open"], 0, "{d}");
    assert_eq!(d["connections"]["requests_in_flight"], 0, "{d}");
    // The default upstream's one-server pool; nothing sent to it yet.
    let pools = d["upstreams"].as_array().unwrap();
    assert_eq!(pools.len(), 1, "{d}");
    let pool = &pools[0];
    assert_eq!(
        keys(pool),
        ["circuit", "circuits", "name", "servers", "status"],
        "{pool}"
    );
    assert!(pool["circuits"].is_object(), "{pool}");
    let server = &pool["servers"][0];
    assert_eq!(server["address"], "127.0.0.1:9", "{server}");
    assert_eq!(server["state"], "healthy", "{server}");
    assert_eq!(server["latency_ms"], Value::Null, "{server}");
    assert_eq!(server["errors"], 0, "{server}");
    assert_eq!(server["in_flight"], 0, "{server}");
    assert_eq!(
        d["redis"],
        serde_json::json!({ "configured": false }),
        "{d}"
    );
    assert_eq!(d["jobs"], Value::Null, "no async routes: {d}");
}

#[tokio::test]
async fn metrics_speak_openmetrics_only_to_who_asks() {
    let s = state(Some(TOKEN));
    let (status, ct, _) = call(Method::GET, "/metrics").send(&s).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, Metrics::TEXT_CONTENT_TYPE);
    let (status, ct, _) = call(Method::GET, "/metrics")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,*/*;q=0.1",
        )
        .send(&s)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, Metrics::CONTENT_TYPE);
}
