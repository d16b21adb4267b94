//! Rate limits (issue #5): GCRA rules per client IP, per API key, shared by
//! instances through Redis, and the local fallback when Redis is down.

use http::Method;
use perfgate_config::{RateLimitConfig, RouteConfig};
use perfgate_test_support::{Origin, RedisServer, Rsp, RunningOrigin, TestResponse, unique_name};

use crate::support::{Gateway, GatewayBuilder, RunningGateway};

async fn origin() -> RunningOrigin {
    Origin::new()
        .route("/login", Rsp::json(r#"{"ok":true}"#))
        .route("/api/items", Rsp::json(r#"{"items":[]}"#))
        .run()
        .await
}

/// 5 logins a minute per client IP (POST only, the `login` route only).
fn login_rule(shared: bool) -> RateLimitConfig {
    RateLimitConfig {
        name: "login-ip".into(),
        key: "ip".into(),
        rate: 5,
        per: perfgate_config::Duration::from_secs(60),
        routes: vec!["login".into()],
        methods: vec!["POST".into()],
        shared,
        ..RateLimitConfig::default()
    }
}

fn with_login(b: GatewayBuilder, rule: RateLimitConfig) -> GatewayBuilder {
    b.route(RouteConfig {
        name: Some("login".into()),
        path: Some("/login".into()),
        ..RouteConfig::default()
    })
    .config(move |c| c.rate_limits = vec![rule])
}

async fn login(gw: &RunningGateway) -> TestResponse {
    gw.request(Method::POST, "/login").body("user=alice").await
}

/// The response is perfgate's 429 for `rule`, with every header.
fn assert_limited(r: &TestResponse, rule: &str, quota: u32, window: u64) {
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json");
    let v = r.json();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(rule), "{v}");
    let retry: u64 = r
        .header("retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=window).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        r.header("ratelimit-policy"),
        format!("\"{rule}\";q={quota};w={window}")
    );
    assert!(
        r.header("ratelimit")
            .starts_with(&format!("\"{rule}\";r=0;t=")),
        "{}",
        r.header("ratelimit")
    );
}

#[tokio::test]
async fn sixth_login_in_a_minute_is_429_with_headers() {
    let origin = origin().await;
    let gw = with_login(
        Gateway::builder().upstream(origin.addr()),
        login_rule(false),
    )
    .spawn()
    .await;
    for left in (0..5).rev() {
        let r = login(&gw).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("ratelimit-policy"), "\"login-ip\";q=5;w=60");
        let limit = r.header("ratelimit");
        assert!(
            limit.starts_with(&format!("\"login-ip\";r={left};t=")),
            "{limit}"
        );
    }
    let r = login(&gw).await;
    assert_limited(&r, "login-ip", 5, 60);
    assert_eq!(
        origin.hits("/login"),
        5,
        "the refused request is not forwarded"
    );
    // GET on the route, and other routes, are not limited by the rule.
    let r = gw.get("/login").await;
    assert_eq!(r.status, 200);
    assert!(!r.has("ratelimit"), "{:?}", r.headers);
    assert_eq!(gw.get("/api/items").await.status, 200);
    let limited = gw
        .metric(
            "perfgate_rate_limit_decisions_total",
            &[("rule", "login-ip"), ("result", "limited")],
        )
        .await;
    assert_eq!(limited, Some(1.0));
}

/// The original services' login rule: 5 a minute per account (a field of
/// the login body) besides a per-IP budget; the body still reaches the
/// upstream whole.
#[tokio::test]
async fn logins_are_limited_per_account_and_per_ip() {
    let origin = origin().await;
    let mut ip = login_rule(false);
    ip.rate = 10;
    let account = RateLimitConfig {
        name: "login-account".into(),
        key: "body:username".into(),
        ..login_rule(false)
    };
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(RouteConfig {
            name: Some("login".into()),
            path: Some("/login".into()),
            ..RouteConfig::default()
        })
        .config(move |c| c.rate_limits = vec![ip, account])
        .spawn()
        .await;
    let login_as = |user: &str| {
        gw.request(Method::POST, "/login")
            .json(&serde_json::json!({"username": user, "password": "pw"}))
    };
    for _ in 0..5 {
        assert_eq!(login_as("alice").await.status, 200);
    }
    let r = login_as("alice").await;
    assert_limited(&r, "login-account", 5, 60);
    let last = origin.last_request("/login").expect("a login");
    assert_eq!(
        &last.body[..],
        br#"{"password":"pw","username":"alice"}"#,
        "the upstream got the body"
    );
    // Another account has its own budget, until the IP's runs out (the
    // refused sixth counted against the IP too: 6 + 4 = 10).
    for _ in 0..4 {
        assert_eq!(login_as("bob").await.status, 200);
    }
    assert_limited(&login_as("bob").await, "login-ip", 10, 60);
    // A body larger than a limited route reads is refused, not let through.
    let big = gw
        .request(Method::POST, "/login")
        .body(format!("username=carol&pad={}", "x".repeat(70 * 1024)))
        .await;
    assert_eq!(big.status, 413, "{}", big.text());
}

#[tokio::test]
async fn api_keys_are_limited_independently() {
    let origin = origin().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| {
            c.rate_limits = vec![RateLimitConfig {
                name: "api-key".into(),
                key: "header:X-Api-Key".into(),
                rate: 2,
                per: perfgate_config::Duration::from_secs(60),
                shared: false,
                ..RateLimitConfig::default()
            }]
        })
        .spawn()
        .await;
    let with_key = |k: &'static str| gw.get("/api/items").header("x-api-key", k);
    assert_eq!(with_key("k1").await.status, 200);
    assert_eq!(with_key("k1").await.status, 200);
    assert_limited(&with_key("k1").await, "api-key", 2, 60);
    // Another key has its own budget.
    let r = with_key("k2").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("ratelimit").starts_with("\"api-key\";r=1;"),
        "{:?}",
        r.headers
    );
    assert_eq!(with_key("k2").await.status, 200);
    assert_eq!(with_key("k2").await.status, 429);
    // No key: the rule does not apply.
    for _ in 0..5 {
        let r = gw.get("/api/items").await;
        assert_eq!(r.status, 200);
        assert!(!r.has("ratelimit"));
    }
}

#[tokio::test]
async fn instances_sharing_redis_share_the_budget() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = origin().await;
    let prefix = unique_name("limits-shared");
    let start = || {
        with_login(
            Gateway::builder()
                .upstream(origin.addr())
                .redis(&redis.url(), &prefix),
            login_rule(true),
        )
        .spawn_connected()
    };
    let a = start().await;
    let b = start().await;
    let mut statuses = Vec::new();
    for gw in [&a, &a, &a, &b, &b, &b] {
        statuses.push(login(gw).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "one budget of 5");
    assert_limited(&login(&a).await, "login-ip", 5, 60);
    for gw in [&a, &b] {
        let fallbacks = gw
            .metric(
                "perfgate_rate_limit_fallbacks_total",
                &[("rule", "login-ip")],
            )
            .await;
        assert!(fallbacks.is_none_or(|v| v == 0.0), "{fallbacks:?}");
    }
    assert_eq!(origin.hits("/login"), 5);
}

#[tokio::test]
async fn redis_down_falls_back_to_the_local_count() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let origin = origin().await;
    let gw = with_login(
        Gateway::builder()
            .upstream(origin.addr())
            .redis(&redis.url(), &unique_name("limits-down")),
        login_rule(true),
    )
    .spawn_connected()
    .await;
    assert_eq!(login(&gw).await.status, 200, "counted in Redis");
    redis.kill();
    // Redis is gone: the instance counts on its own (a fresh budget of 5),
    // answers every request, never with a 5xx.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(login(&gw).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    let fallbacks = gw
        .metric(
            "perfgate_rate_limit_fallbacks_total",
            &[("rule", "login-ip")],
        )
        .await;
    assert_eq!(fallbacks, Some(7.0));
}

#[tokio::test]
async fn unreachable_redis_never_blocks_traffic() {
    let origin = origin().await;
    // Nothing listens there: the L2 never connects.
    let port = perfgate_test_support::free_port();
    let gw = with_login(
        Gateway::builder().upstream(origin.addr()).redis(
            &format!("redis://127.0.0.1:{port}"),
            &unique_name("limits-closed"),
        ),
        login_rule(true),
    )
    .spawn()
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(login(&gw).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
}

/// Issue #11 (10): a `body:` rule cannot be dodged. Case and whitespace
/// variants count as the same account; a body perfgate cannot read as the
/// upstream would (field left out, repeated, multipart, compressed, another
/// type) counts against the client's IP instead of skipping the rule or
/// making a fresh key per request.
#[tokio::test]
async fn body_keys_do_not_fail_open() {
    let origin = origin().await;
    let account = RateLimitConfig {
        name: "login-account".into(),
        key: "body:username".into(),
        rate: 2,
        ..login_rule(false)
    };
    let gw = with_login(Gateway::builder().upstream(origin.addr()), account)
        .spawn()
        .await;
    let post = |ct: &str, body: Vec<u8>| {
        let mut r = gw.request(Method::POST, "/login").body(body);
        if !ct.is_empty() {
            r = r.header("content-type", ct);
        }
        r
    };
    let json = "application/json";
    assert_eq!(
        post(json, br#"{"username":"alice"}"#.to_vec()).await.status,
        200
    );
    assert_eq!(
        post(json, br#"{"username":" Alice "}"#.to_vec())
            .await
            .status,
        200
    );
    let r = post(json, br#"{"username":"ALICE"}"#.to_vec()).await;
    assert_limited(&r, "login-account", 2, 60);
    // Every one of these named a fresh account (or none) before; now they
    // share this client's IP budget of 2.
    let dodges: Vec<(&str, Vec<u8>)> = vec![
        (json, br#"{"user":"alice"}"#.to_vec()),
        (json, br#"{"username":"r1","username":"alice"}"#.to_vec()),
        (
            "application/x-www-form-urlencoded",
            b"username=r2&username=alice".to_vec(),
        ),
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nr3\r\n--b--\r\n"
                .to_vec(),
        ),
        ("text/plain", b"username=r4".to_vec()),
    ];
    let mut allowed = 0;
    for (ct, body) in dodges {
        let r = post(ct, body).await;
        if r.status == 200 {
            allowed += 1;
        } else {
            assert_limited(&r, "login-account", 2, 60);
        }
    }
    let gzip = gw
        .request(Method::POST, "/login")
        .header("content-type", json)
        .header("content-encoding", "gzip")
        .body(br#"{"username":"r5"}"#.to_vec())
        .await;
    assert_limited(&gzip, "login-account", 2, 60);
    assert_eq!(allowed, 2, "the IP budget, not one per dodge");
}

/// `query:` keys: case, encoding and repeats of one value are one client;
/// leaving the parameter out or repeating it with another value counts
/// against the IP.
#[tokio::test]
async fn query_keys_do_not_fail_open() {
    let origin = origin().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| {
            c.rate_limits = vec![RateLimitConfig {
                name: "api-key".into(),
                key: "query:key".into(),
                rate: 2,
                per: perfgate_config::Duration::from_secs(60),
                ..RateLimitConfig::default()
            }];
        })
        .spawn()
        .await;
    assert_eq!(gw.get("/api/items?key=k1").await.status, 200);
    assert_eq!(gw.get("/api/items?KEY=%4B1").await.status, 200);
    assert_limited(&gw.get("/api/items?key=k1&key=K1").await, "api-key", 2, 60);
    let mut allowed = 0;
    for (i, path) in [
        "/api/items",
        "/api/items?key=",
        "/api/items?key=x1&key=k1",
        "/api/items?key=x2&Key=k1",
    ]
    .iter()
    .enumerate()
    {
        let r = gw.get(path).await;
        if r.status == 200 {
            allowed += 1;
        } else {
            assert_limited(&r, "api-key", 2, 60);
        }
        assert!(i < 2 || r.status == 429, "{path}");
    }
    assert_eq!(allowed, 2);
}
