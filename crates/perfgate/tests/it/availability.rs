//! Issue #11, items 20 and 21: one failing endpoint must not take the API
//! down (the breaker counts sick-upstream signals only, per route and
//! pool, and serves stale while open), and a response is an answer (sent
//! again only to another server, for listed statuses, after `Retry-After`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use perfgate_config::{BreakerConfig, Duration as CfgDuration, RouteConfig, RouteTimeouts};
use perfgate_test_support::{
    ClosedPort, Origin, Rsp, TestResponse, pool_of, pool_of_urls, pool_route,
};

use crate::support::{Gateway, RunningGateway};

/// The `error.code` of a gateway error envelope.
fn code(r: &TestResponse) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_string()
}

/// A breaker that opens after `n` failures in a row, for a long time.
fn opens_after(n: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: n,
        open_for: CfgDuration::from_secs(60),
        ..BreakerConfig::default()
    }
}

/// The reproduction, with the default settings of `perfgate serve
/// --upstream`: one endpoint answers 500 half of the time. Far past the
/// breaker's `min_requests` (20) the other routes, a cached one and a
/// plain 404 keep working, and every 500 went to the upstream once.
#[tokio::test]
async fn one_failing_endpoint_does_not_take_the_api_down() {
    let origin = Origin::new()
        .handle("/flaky", |req| {
            if req.n % 2 == 1 {
                Rsp::status(500).body("boom")
            } else {
                Rsp::text("ok")
            }
        })
        .route("/cached", Rsp::text("cached").max_age(60))
        .route("/fine", Rsp::text("fine"))
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    assert_eq!(gw.get("/cached").await.status, 200);

    for i in 1..=60usize {
        let r = gw.get("/flaky").await;
        let want = if i % 2 == 1 { 500 } else { 200 };
        assert_eq!(r.status, want, "request {i}: {}", r.text());
    }
    assert_eq!(origin.hits("/flaky"), 60, "a 500 is not sent again");

    let r = gw.get("/cached").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    let r = gw.get("/fine").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.get("/no-such-thing").await;
    assert_eq!(r.status, 404, "the upstream's own 404: {}", r.text());
    assert_eq!(
        gw.metric("perfgate_circuit_state", &[("pool", &origin.url())])
            .await,
        Some(0.0),
        "the breaker stayed closed"
    );
}

/// Connection failures still open the breaker.
#[tokio::test]
async fn connect_errors_still_open_the_breaker() {
    let closed = ClosedPort::new();
    let mut pool = pool_of_urls("api", &[(closed.url(), 1)]);
    pool.breaker = opens_after(3);
    pool.retry.attempts = 0;
    let gw = gateway_with(pool, &["/x"]).await;
    for i in 0..3 {
        let r = gw.get("/x").await;
        assert_eq!(r.status, 502, "failure {i}: {}", r.text());
    }
    let r = gw.get("/x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(code(&r), "circuit_open");
}

/// A route's failures open only that route's breaker on the pool: the
/// other route to the same server keeps going.
#[tokio::test]
async fn breakers_are_per_route() {
    let origin = Origin::new()
        .route("/down", Rsp::status(503))
        .route("/up", Rsp::text("up"))
        .run()
        .await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.breaker = opens_after(3);
    pool.retry.attempts = 0;
    let gw = gateway_with(pool, &["/down", "/up"]).await;
    for _ in 0..3 {
        assert_eq!(gw.get("/down").await.status, 503);
    }
    let r = gw.get("/down").await;
    assert_eq!(code(&r), "circuit_open", "{}", r.text());
    assert_eq!(origin.hits("/down"), 3);
    for _ in 0..5 {
        let r = gw.get("/up").await;
        assert_eq!(
            r.status,
            200,
            "the other route is not affected: {}",
            r.text()
        );
    }
    assert_eq!(
        gw.metric("perfgate_circuit_state", &[("pool", "api")])
            .await,
        Some(2.0),
        "the pool's gauge shows its worst breaker"
    );
}

/// A reload that removes a route takes its breaker out of the (kept) pool:
/// an open breaker of a route that is gone no longer shows in the pool's
/// circuit state.
#[tokio::test]
async fn a_removed_route_takes_its_breaker_with_it() {
    let origin = Origin::new()
        .route("/down", Rsp::status(503))
        .route("/up", Rsp::text("up"))
        .run()
        .await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.breaker = opens_after(2);
    pool.retry.attempts = 0;
    let gw = Gateway::builder()
        .config(move |c| c.pools.push(pool))
        .route(pool_route("/down", "api"))
        .route(pool_route("/up", "api"))
        .spawn_instance()
        .await;
    let circuit = || {
        gw.running()
            .gateway
            .upstream_health()
            .into_iter()
            .find(|p| p.name == "api")
            .map(|p| p.circuit)
    };
    for _ in 0..2 {
        assert_eq!(gw.get("/down").await.status, 503);
    }
    assert_eq!(code(&gw.get("/down").await), "circuit_open");
    assert_eq!(circuit(), Some("open"));
    let mut c = gw.config().clone();
    c.routes.retain(|r| r.path.as_deref() != Some("/down"));
    gw.running().apply(c).unwrap();
    assert_eq!(circuit(), Some("closed"));
    assert_eq!(gw.get("/up").await.status, 200);
}

/// While a route's breaker is open, a stale entry kept by `cache.keep_stale`
/// is served even without `stale-if-error`, unless the response forbade
/// serving it stale (`must-revalidate`).
#[tokio::test]
async fn open_breaker_serves_kept_stale_entries() {
    let failing = Arc::new(AtomicUsize::new(0));
    let answer = |cc: &'static str, failing: Arc<AtomicUsize>| {
        move |_: &perfgate_test_support::Req| {
            if failing.load(Ordering::SeqCst) == 1 {
                Rsp::status(503).body("down")
            } else {
                Rsp::text("v1")
                    .header("cache-control", cc)
                    .header("etag", "\"v1\"")
            }
        }
    };
    let origin = Origin::new()
        .handle("/kept", answer("max-age=1", failing.clone()))
        .handle(
            "/strict",
            answer("max-age=1, must-revalidate", failing.clone()),
        )
        .run()
        .await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.breaker = opens_after(2);
    pool.retry.attempts = 0;
    let cached = |path: &str| RouteConfig {
        path: Some(path.into()),
        pool: Some("api".into()),
        ..RouteConfig::default()
    };
    let gw = Gateway::builder()
        .config(move |c| c.pools.push(pool))
        .route(cached("/kept"))
        .route(cached("/strict"))
        .manual_clock()
        .spawn()
        .await;
    for path in ["/kept", "/strict"] {
        let r = gw.get(path).await;
        assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    }
    crate::make_stale(&gw);
    failing.store(1, Ordering::SeqCst);
    for path in ["/kept", "/strict"] {
        for _ in 0..2 {
            let r = gw.get(path).await;
            assert_eq!(r.status, 503, "no stale-if-error: the 503 passes");
            assert_eq!(r.text(), "down");
        }
    }
    let r = gw.get("/kept").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "v1");
    assert_eq!(
        r.header("cache-status"),
        "perfgate; fwd=stale; detail=circuit-open"
    );
    let r = gw.get("/strict").await;
    assert_eq!(r.status, 503, "must-revalidate: never stale");
    assert_eq!(code(&r), "circuit_open");
    assert_eq!(origin.hits("/kept"), 3);
    assert_eq!(origin.hits("/strict"), 3);
}

/// Default settings: a GET answered 503 reaches the upstream once.
#[tokio::test]
async fn a_response_is_not_sent_again_by_default() {
    let origin = Origin::new()
        .route("/busy", Rsp::status(503).body("busy"))
        .route("/bad", Rsp::status(502).body("bad"))
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    assert_eq!(gw.get("/busy").await.status, 503);
    assert_eq!(gw.get("/bad").await.status, 502);
    assert_eq!(origin.hits("/busy"), 1);
    assert_eq!(origin.hits("/bad"), 1);
}

/// With `on_status = [503]` on a two-server pool, a 503 is tried once on
/// the other server, and never on the one that answered, however many
/// retries are allowed.
#[tokio::test]
async fn a_listed_status_is_tried_once_on_the_other_server() {
    let a = Origin::new().route("/x", Rsp::status(503)).run().await;
    let b = Origin::new().route("/x", Rsp::status(503)).run().await;
    let mut pool = pool_of("api", &[(&a, 1), (&b, 1)]);
    pool.breaker.enabled = false;
    pool.outlier.consecutive_failures = 0;
    pool.retry.attempts = 5;
    pool.retry.min_per_second = 1000;
    pool.retry.on_status = vec![503];
    let gw = gateway_with(pool, &["/x"]).await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 503);
    assert_eq!((a.hits("/x"), b.hits("/x")), (1, 1), "each server once");
}

/// `Retry-After` from the upstream: the retry on the other server waits
/// for it; one longer than what is left of the deadline is not retried.
#[tokio::test]
async fn retry_after_is_honoured() {
    // The first answer of the pool (whichever server gives it) asks to wait.
    let answered = Arc::new(AtomicUsize::new(0));
    let handler = |after: &'static str, answered: Arc<AtomicUsize>| {
        move |_: &perfgate_test_support::Req| {
            if answered.fetch_add(1, Ordering::SeqCst) == 0 {
                Rsp::status(503).header("retry-after", after)
            } else {
                Rsp::text("ok")
            }
        }
    };
    for (after, retried) in [("1", true), ("10", false)] {
        answered.store(0, Ordering::SeqCst);
        let a = Origin::new()
            .handle("/x", handler(after, answered.clone()))
            .run()
            .await;
        let b = Origin::new()
            .handle("/x", handler(after, answered.clone()))
            .run()
            .await;
        let mut pool = pool_of("api", &[(&a, 1), (&b, 1)]);
        pool.breaker.enabled = false;
        pool.retry.on_status = vec![503];
        pool.retry.min_per_second = 1000;
        let gw = Gateway::builder()
            .config(move |c| c.pools.push(pool))
            .route(RouteConfig {
                timeouts: RouteTimeouts {
                    total: Some(CfgDuration::from_secs(3)),
                    ..RouteTimeouts::default()
                },
                ..pool_route("/x", "api")
            })
            .spawn()
            .await;
        let start = Instant::now();
        let r = gw.get("/x").await;
        let took = start.elapsed();
        let hits = a.hits("/x") + b.hits("/x");
        if retried {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(hits, 2);
            assert!(
                took >= Duration::from_secs(1),
                "retried after Retry-After: {took:?}"
            );
        } else {
            assert_eq!(r.status, 503, "Retry-After past the deadline");
            assert_eq!(hits, 1, "not retried");
        }
    }
}

/// A gateway with `pool` and never-cached routes `paths` → that pool.
async fn gateway_with(pool: perfgate_config::PoolConfig, paths: &[&str]) -> RunningGateway {
    let name = pool.name.clone();
    let mut b = Gateway::builder().config(move |c| c.pools.push(pool));
    for p in paths {
        b = b.route(pool_route(p, &name));
    }
    b.spawn().await
}
