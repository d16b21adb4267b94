//! Cache isolation and poisoning (issue #11, items 4, 6 and 9): what one
//! client sends never decides what another client gets or whether the URL
//! is cached for everyone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use perfgate_config::{AuthorizedPolicy, CookiePolicy, RouteCachePolicy, RouteConfig};
use perfgate_test_support::{Origin, PATIENCE, Req, Rsp, eventually};

use crate::make_stale;
use crate::support::Gateway;

fn route(path: &str, cache: RouteCachePolicy) -> RouteConfig {
    RouteConfig {
        path: Some(path.into()),
        cache,
        ..RouteConfig::default()
    }
}

fn ttl(secs: u64) -> Option<perfgate_config::Duration> {
    Some(perfgate_config::Duration::from_secs(secs))
}

/// Echoes who asked: the `Authorization` or `Cookie` value, else anonymous.
fn who(req: &Req, header: &str) -> String {
    match req.header(header) {
        "" => "anonymous".to_string(),
        v => v.to_string(),
    }
}

/// Item 6: one client's `Cache-Control: no-store` used to mark the URL
/// hit-for-miss for every later client for two minutes.
#[tokio::test]
async fn a_clients_no_store_does_not_turn_caching_off_for_others() {
    let origin = Origin::new()
        .route("/doc", Rsp::json(r#"{"doc":1}"#).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;

    let r = gw.get("/doc").header("cache-control", "no-store").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-status"),
        "perfgate; fwd=miss; detail=request-no-store"
    );
    let r = gw.get("/doc").await;
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    let r = gw.get("/doc").await;
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    assert_eq!(origin.hits("/doc"), 2);
}

/// Item 6: a `500` without freshness marked the URL hit-for-miss, and the
/// `200`s that followed were streamed through unstored, so
/// `stale-if-error` never had anything to serve.
#[tokio::test]
async fn a_storable_response_replaces_the_hit_for_miss_mark() {
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    let (c, f) = (calls.clone(), failing.clone());
    let origin = Origin::new()
        .handle("/flaky", move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            if f.load(Ordering::SeqCst) {
                Rsp::status(500)
            } else {
                Rsp::json(r#"{"ok":true}"#)
                    .header("cache-control", "public, max-age=1, stale-if-error=60")
            }
        })
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .manual_clock()
        .spawn()
        .await;

    assert_eq!(gw.get("/flaky").await.status, 500);
    failing.store(false, Ordering::SeqCst);
    let r = gw.get("/flaky").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    let r = gw.get("/flaky").await;
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // The stored 200 now covers an upstream failure.
    failing.store(true, Ordering::SeqCst);
    make_stale(&gw);
    let r = gw.get("/flaky").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"ok":true}"#);
    assert!(
        r.header("cache-status").contains("detail=stale-if-error"),
        "{}",
        r.header("cache-status")
    );
}

/// A response that cannot be stored still marks the key (its requests
/// skip coalescing), and says so.
#[tokio::test]
async fn an_unstorable_response_still_marks_the_key() {
    let origin = Origin::new()
        .route(
            "/private",
            Rsp::text("mine").header("cache-control", "private, max-age=60"),
        )
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    let r = gw.get("/private").await;
    assert_eq!(
        r.header("cache-status"),
        "perfgate; fwd=miss; detail=private"
    );
    let r = gw.get("/private").await;
    assert_eq!(
        r.header("cache-status"),
        "perfgate; fwd=miss; detail=hit-for-miss"
    );
    assert_eq!(origin.hits("/private"), 2);
}

/// Item 4: under `authorized = "shared"`, what an authenticated request
/// stored was served to anonymous clients.
#[tokio::test]
async fn shared_authorized_entries_are_for_authenticated_clients_only() {
    let origin = Origin::new()
        .handle("/members", |req| {
            Rsp::text(format!("for {}", who(req, "authorization"))).max_age(60)
        })
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(route(
            "/members",
            RouteCachePolicy {
                authorized: AuthorizedPolicy::Shared,
                ..RouteCachePolicy::default()
            },
        ))
        .spawn()
        .await;

    let r = gw
        .get("/members")
        .header("authorization", "Bearer alice")
        .await;
    assert_eq!(r.text(), "for Bearer alice");
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");

    // An anonymous client does not read the authenticated entry.
    let r = gw.get("/members").await;
    assert_eq!(r.text(), "for anonymous");
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    let r = gw.get("/members").await;
    assert_eq!(r.text(), "for anonymous");
    assert_eq!(r.header("cache-status"), "perfgate; hit");

    // Another authenticated client shares the authenticated entry.
    let r = gw
        .get("/members")
        .header("authorization", "Bearer bob")
        .await;
    assert_eq!(r.text(), "for Bearer alice");
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    assert_eq!(origin.hits("/members"), 2);

    // A write through the route purges both copies.
    let r = gw
        .request(http::Method::POST, "/members")
        .header("authorization", "Bearer bob")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        gw.get("/members").await.header("cache-status"),
        "perfgate; fwd=miss; stored"
    );
    let r = gw
        .get("/members")
        .header("authorization", "Bearer alice")
        .await;
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
}

/// Item 9: a response to a request with `Cookie` was stored under
/// `default_ttl` and served to everyone.
#[tokio::test]
async fn cookie_requests_are_not_shared_unless_public() {
    let origin = Origin::new()
        .handle("/me", |req| {
            Rsp::text(format!("for {}", who(req, "cookie")))
        })
        .handle("/pub", |req| {
            Rsp::text(format!("first asked by {}", who(req, "cookie")))
                .header("cache-control", "public, max-age=60")
        })
        .handle("/ignored", |req| {
            Rsp::text(format!("for {}", who(req, "cookie")))
        })
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(route(
            "/me",
            RouteCachePolicy {
                default_ttl: ttl(60),
                ..RouteCachePolicy::default()
            },
        ))
        .route(route(
            "/pub",
            RouteCachePolicy {
                default_ttl: ttl(60),
                ..RouteCachePolicy::default()
            },
        ))
        .route(route(
            "/ignored",
            RouteCachePolicy {
                default_ttl: ttl(60),
                cookies: CookiePolicy::Ignore,
                ..RouteCachePolicy::default()
            },
        ))
        .spawn()
        .await;

    let r = gw.get("/me").header("cookie", "session=alice").await;
    assert_eq!(r.text(), "for session=alice");
    assert_eq!(
        r.header("cache-status"),
        "perfgate; fwd=miss; detail=cookie"
    );
    let r = gw.get("/me").await;
    assert_eq!(r.text(), "for anonymous");
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    // ... and what anonymous clients get is not served to a cookie holder.
    let r = gw.get("/me").header("cookie", "session=bob").await;
    assert_eq!(r.text(), "for session=bob");
    assert_eq!(gw.get("/me").await.text(), "for anonymous");
    assert_eq!(origin.hits("/me"), 3);

    // Explicitly public: shared whoever asked.
    let r = gw.get("/pub").header("cookie", "session=alice").await;
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    let r = gw.get("/pub").header("cookie", "session=bob").await;
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    assert_eq!(gw.get("/pub").await.header("cache-status"), "perfgate; hit");

    // `cookies = "ignore"`: the route says cookies change nothing.
    let r = gw.get("/ignored").header("cookie", "_ga=1").await;
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    let r = gw.get("/ignored").await;
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    assert_eq!(r.text(), "for _ga=1");
}

/// Item 9: a stale-while-revalidate refresh ran with the cookie of the
/// client that triggered it, and its answer was stored for everyone.
#[tokio::test]
async fn a_background_refresh_with_a_cookie_is_not_shared() {
    let origin = Origin::new()
        .handle("/feed", |req| match req.header("cookie") {
            "" => Rsp::text("for everyone").header(
                "cache-control",
                "public, max-age=1, stale-while-revalidate=30",
            ),
            c => Rsp::text(format!("for {c}")).max_age(60),
        })
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .manual_clock()
        .spawn()
        .await;

    assert_eq!(gw.get("/feed").await.text(), "for everyone");
    make_stale(&gw);
    let r = gw.get("/feed").header("cookie", "session=alice").await;
    assert_eq!(
        r.header("cache-status"),
        "perfgate; hit; detail=stale-while-revalidate"
    );
    eventually("the background refresh ran", PATIENCE, || {
        origin.hits("/feed") == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = gw.get("/feed").await;
    assert_eq!(r.text(), "for everyone");
}

/// Item 9: `Set-Cookie` on a stored response reaches only the client whose
/// request fetched it, never one served from the cache.
#[tokio::test]
async fn set_cookie_is_never_served_from_the_cache() {
    let origin = Origin::new()
        .route(
            "/login-page",
            Rsp::text("page")
                .max_age(60)
                .header("set-cookie", "session=first-client"),
        )
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(route(
            "/login-page",
            RouteCachePolicy {
                allow_set_cookie: true,
                ..RouteCachePolicy::default()
            },
        ))
        .spawn()
        .await;
    let r = gw.get("/login-page").await;
    assert_eq!(r.header("set-cookie"), "session=first-client");
    let r = gw.get("/login-page").await;
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    assert!(!r.has("set-cookie"));
}

/// Items 4 and 9 across instances: what an authenticated client stored on
/// one instance is promoted from L2 only for authenticated clients on
/// another, and what a cookie holder got is never in L2 at all.
#[tokio::test]
async fn l2_promotion_keeps_credentials_apart() {
    let Some(redis) = perfgate_test_support::RedisServer::start() else {
        return;
    };
    let origin = Origin::new()
        .handle("/members", |req| {
            Rsp::text(format!("for {}", who(req, "authorization"))).max_age(60)
        })
        .handle("/me", |req| {
            Rsp::text(format!("for {}", who(req, "cookie"))).max_age(60)
        })
        .run()
        .await;
    let (a, b) = Gateway::members(
        origin.addr(),
        &redis.url(),
        &perfgate_test_support::unique_name("isolation"),
        |g| {
            g.route(route(
                "/members",
                RouteCachePolicy {
                    authorized: AuthorizedPolicy::Shared,
                    ..RouteCachePolicy::default()
                },
            ))
        },
    )
    .await;

    let before = a.l2_counter("writes").await;
    let r = a
        .get("/members")
        .header("authorization", "Bearer alice")
        .await;
    assert_eq!(r.text(), "for Bearer alice");
    a.wait_l2_writes(before + 1).await;

    let r = b.get("/members").await;
    assert_eq!(r.text(), "for anonymous");
    assert_eq!(r.header("cache-status"), perfgate_test_support::STORED);
    let r = b
        .get("/members")
        .header("authorization", "Bearer bob")
        .await;
    assert_eq!(r.text(), "for Bearer alice");
    assert_eq!(r.header("cache-status"), perfgate_test_support::L2_HIT);

    // A cookie holder's answer (no public/s-maxage) is not stored anywhere.
    let r = a.get("/me").header("cookie", "session=alice").await;
    assert_eq!(r.text(), "for session=alice");
    let r = b.get("/me").await;
    assert_eq!(r.text(), "for anonymous");
    assert_eq!(r.header("cache-status"), perfgate_test_support::STORED);
}
