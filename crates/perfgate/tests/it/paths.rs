//! Issue #11 (3): one normalized path decides the route, the cache key and
//! the upstream target. Every spelling of a route's path (`%61`, `/./`,
//! `/../`, `//`) reaches that route (its JWT, rate limits, clamps, bypass
//! and cache entry) and the upstream sees the normalized path; spellings
//! servers disagree on (`;x`, `%2F`/`%2f`, `%00`) are refused with 400; a
//! method the route does not list gets 405, never the default route.

use http::Method;
use perfgate_config::{JwtMode, QueryClamp, RateLimitConfig, RouteCachePolicy, RouteConfig};
use perfgate_test_support::jwt::{hs256, now};
use perfgate_test_support::{Origin, Rsp, RunningOrigin, TempDir};
use serde_json::json;

use crate::support::{Gateway, RunningGateway};

const SECRET: &[u8] = b"integration-test-secret-0123456789";

/// Spellings of `/{a}/{b}` (two segments) that must reach the route of
/// `/{a}/{b}` itself.
fn equivalents(a: &str, b: &str) -> Vec<String> {
    let first = |s: &str| format!("%{:02x}{}", s.as_bytes()[0], &s[1..]);
    let upper = |s: &str| format!("%{:02X}{}", s.as_bytes()[0], &s[1..]);
    vec![
        format!("/{a}/{}", first(b)),
        format!("/{}/{b}", upper(a)),
        format!("/{a}/./{b}"),
        format!("/{a}/%2e/{b}"),
        format!("/x/../{a}/{b}"),
        format!("/{a}/x/%2E%2E/{b}"),
        format!("//{a}//{b}"),
        format!("/{a}///{b}"),
    ]
}

/// Spellings some upstreams read as `/{a}/{b}` but perfgate refuses.
fn refused(a: &str, b: &str) -> Vec<String> {
    vec![
        format!("/{a}/{b};x"),
        format!("/{a};x/{b}"),
        format!("/{a}%2F{b}"),
        format!("/{a}%2f{b}"),
        format!("/{a}%5C{b}"),
        format!("/{a}/{b}%00"),
        format!("/{a}/{b}%zz"),
    ]
}

struct Setup {
    origin: RunningOrigin,
    gw: RunningGateway,
    _dir: TempDir,
}

async fn setup() -> Setup {
    let origin = Origin::new()
        .handle("/api/account", |r| {
            Rsp::text("account of ".to_string() + r.header("x-user-id"))
                .header("cache-control", "public, max-age=60")
        })
        .route("/api/limited", Rsp::text("limited"))
        .handle("/api/clamped", |r| {
            Rsp::text(r.uri.query().unwrap_or("").to_string())
        })
        .route(
            "/api/bypass",
            Rsp::text("fresh").header("cache-control", "public, max-age=60"),
        )
        .handle("/api/cached", |r| {
            Rsp::text(format!("stored #{}", r.n)).header("cache-control", "public, max-age=60")
        })
        .run()
        .await;
    let dir = TempDir::new();
    let secret = dir
        .write("jwt.secret", SECRET)
        .to_string_lossy()
        .into_owned();
    let route = |name: &str| RouteConfig {
        name: Some(name.into()),
        path: Some(format!("/api/{name}")),
        ..RouteConfig::default()
    };
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(RouteConfig {
            jwt: Some(JwtMode::Required),
            methods: vec!["GET".into()],
            ..route("account")
        })
        .route(route("limited"))
        .route(RouteConfig {
            query_clamps: vec![QueryClamp {
                param: "page_size".into(),
                min: Some(1),
                max: Some(10),
                default: None,
            }],
            ..route("clamped")
        })
        .route(RouteConfig {
            cache: RouteCachePolicy {
                bypass: true,
                ..RouteCachePolicy::default()
            },
            ..route("bypass")
        })
        .route(route("cached"))
        .config(move |c| {
            c.jwt.secret_file = Some(secret);
            c.jwt.forward_claims = [("sub".to_string(), "X-User-Id".to_string())].into();
            c.rate_limits = vec![RateLimitConfig {
                name: "limited-ip".into(),
                key: "ip".into(),
                rate: 1,
                per: perfgate_config::Duration::from_secs(3600),
                routes: vec!["limited".into()],
                ..RateLimitConfig::default()
            }];
        })
        .spawn()
        .await;
    Setup {
        origin,
        gw,
        _dir: dir,
    }
}

#[tokio::test]
async fn spellings_of_a_jwt_route_need_the_token() {
    let s = setup().await;
    for path in equivalents("api", "account") {
        let r = s.gw.get(&path).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }
    for path in refused("api", "account") {
        let r = s.gw.get(&path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "bad_request", "{path}");
    }
    assert_eq!(s.origin.total_hits(), 0, "nothing reached the upstream");
    // With a token every spelling is the route, and the upstream sees the
    // normalized path.
    let token = hs256(SECRET, &json!({ "sub": "alice", "exp": now() + 60 }));
    for path in equivalents("api", "account") {
        let r =
            s.gw.get(&path)
                .header("authorization", &format!("Bearer {token}"))
                .await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.text(), "account of alice", "{path}");
    }
    assert_eq!(s.origin.total_hits(), s.origin.hits("/api/account"));
}

#[tokio::test]
async fn unlisted_method_is_405_with_allow_not_the_default_route() {
    let s = setup().await;
    for method in [Method::POST, Method::DELETE, Method::PUT] {
        for path in ["/api/account".to_string(), "/api/%61ccount".to_string()] {
            let r = s.gw.request(method.clone(), &path).body("x").await;
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
            assert_eq!(r.header("allow"), "GET, HEAD", "{method} {path}");
            assert_eq!(r.json()["error"]["code"], "method_not_allowed");
        }
    }
    assert_eq!(s.origin.total_hits(), 0);
}

#[tokio::test]
async fn spellings_of_a_limited_route_share_its_limit() {
    let s = setup().await;
    assert_eq!(s.gw.get("/api/limited").await.status, 200);
    for path in equivalents("api", "limited") {
        let r = s.gw.get(&path).await;
        assert_eq!(r.status, 429, "{path}: {}", r.text());
    }
    for path in refused("api", "limited") {
        assert_eq!(s.gw.get(&path).await.status, 400, "{path}");
    }
    assert_eq!(s.origin.total_hits(), 1);
}

#[tokio::test]
async fn spellings_of_a_clamped_route_are_clamped() {
    let s = setup().await;
    for path in equivalents("api", "clamped") {
        let r = s.gw.get(&format!("{path}?page_size=1000")).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.text(), "page_size=10", "{path}");
    }
    assert_eq!(s.origin.total_hits(), s.origin.hits("/api/clamped"));
}

#[tokio::test]
async fn spellings_of_a_bypass_route_bypass_the_cache() {
    let s = setup().await;
    let mut sent = 0;
    for path in std::iter::once("/api/bypass".to_string()).chain(equivalents("api", "bypass")) {
        for _ in 0..2 {
            let r = s.gw.get(&path).await;
            sent += 1;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.header("cache-status"), "perfgate; fwd=bypass", "{path}");
        }
    }
    assert_eq!(
        s.origin.hits("/api/bypass"),
        sent,
        "every request went upstream"
    );
    assert_eq!(s.origin.total_hits(), sent);
}

#[tokio::test]
async fn spellings_of_a_cached_route_share_its_entry() {
    let s = setup().await;
    let first = s.gw.get("/api/cached").await;
    assert_eq!(first.text(), "stored #1");
    for path in equivalents("api", "cached") {
        let r = s.gw.get(&path).await;
        assert_eq!(r.text(), "stored #1", "{path}");
        assert!(
            r.header("cache-status").starts_with("perfgate; hit"),
            "{path}: {}",
            r.header("cache-status")
        );
    }
    for path in refused("api", "cached") {
        assert_eq!(s.gw.get(&path).await.status, 400, "{path}");
    }
    assert_eq!(s.origin.total_hits(), 1);
}

/// With `server.allow_encoded_slashes`, `%2f` and `%2F` are one path, kept
/// encoded on the way upstream and in the key; `//` is kept when
/// `merge_slashes` is off.
#[tokio::test]
async fn encoded_slashes_when_allowed_stay_encoded() {
    let origin = Origin::new()
        .handle("/a%2Fb", |r| {
            Rsp::text(format!("#{}", r.n)).header("cache-control", "public, max-age=60")
        })
        .route("/a//b", Rsp::text("double"))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| {
            c.server.allow_encoded_slashes = true;
            c.server.merge_slashes = false;
        })
        .spawn()
        .await;
    assert_eq!(gw.get("/a%2fb").await.text(), "#1");
    let again = gw.get("/%61%2Fb").await;
    assert_eq!(again.text(), "#1");
    assert!(again.header("cache-status").starts_with("perfgate; hit"));
    assert_eq!(gw.get("/a//b").await.text(), "double");
    assert_eq!(origin.hits("/a%2Fb"), 1);
    assert_eq!(origin.hits("/a//b"), 1);
}
