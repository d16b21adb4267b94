//! Upstream pools: balancing, health probes, outlier ejection, the circuit
//! breaker, retries, deadlines, connection limits and read pools, against
//! real origins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use perfgate_config::{
    Balance, BreakerConfig, Config, Duration as CfgDuration, HealthConfig, OutlierConfig,
    PoolConfig, RouteCachePolicy, RouteConfig, RouteTimeouts,
};
use perfgate_test_support::{
    ClosedPort, Gate, Origin, PATIENCE, Rsp, RunningOrigin, TestResponse, eventually,
    eventually_async, pool_of, pool_of_urls, pool_route,
};

use crate::support::{Gateway, RunningGateway};

fn ms(n: u64) -> CfgDuration {
    CfgDuration::from_millis(n)
}

/// An origin answering `path` with its own `name`.
async fn named(name: &'static str, path: &str) -> RunningOrigin {
    Origin::new().route(path, Rsp::text(name)).run().await
}

/// A gateway with `pool` and the never-cached route `path` → that pool.
async fn gateway_with(pool: PoolConfig, path: &str) -> RunningGateway {
    let name = pool.name.clone();
    Gateway::builder()
        .config(move |c| c.pools.push(pool))
        .route(pool_route(path, &name))
        .spawn()
        .await
}

/// The `error.code` of a gateway error envelope.
fn code(r: &TestResponse) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_string()
}

/// Whether server `addr` of pool `pool` takes traffic now.
fn server_up(gw: &RunningGateway, pool: &str, addr: std::net::SocketAddr) -> bool {
    let addr = addr.to_string();
    gw.gateway()
        .upstream_health()
        .iter()
        .filter(|p| p.name == pool)
        .flat_map(|p| p.servers.iter())
        .find(|s| s.address == addr)
        .unwrap_or_else(|| panic!("no server {addr} in pool {pool}"))
        .up
}

/// `clients` clients sending `each` GETs of `path` at once; every answer
/// must be 200.
async fn concurrent_gets(gw: &RunningGateway, path: &'static str, clients: usize, each: usize) {
    let mut workers = Vec::new();
    for _ in 0..clients {
        let client = gw.new_client();
        workers.push(tokio::spawn(async move {
            for _ in 0..each {
                let r = client.get(path).await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

/// Weighted round robin is exact per cycle: weights 1/1/2, 400 requests
/// (from four concurrent clients) → 100/100/200.
#[tokio::test]
async fn round_robin_follows_the_weights() {
    let a = named("a", "/rr").await;
    let b = named("b", "/rr").await;
    let c = named("c", "/rr").await;
    let gw = gateway_with(pool_of("api", &[(&a, 1), (&b, 1), (&c, 2)]), "/rr").await;

    concurrent_gets(&gw, "/rr", 4, 100).await;
    assert_eq!(
        (a.hits("/rr"), b.hits("/rr"), c.hits("/rr")),
        (100, 100, 200)
    );
}

/// Least-outstanding: a slow server keeps requests in flight, so a fast one
/// takes most of the concurrent traffic.
#[tokio::test]
async fn least_outstanding_prefers_the_fast_server() {
    let slow = Origin::new()
        .route("/lo", Rsp::text("slow").delay(Duration::from_millis(300)))
        .run()
        .await;
    let fast = named("fast", "/lo").await;
    let mut pool = pool_of("api", &[(&slow, 1), (&fast, 1)]);
    pool.balance = Balance::LeastOutstanding;
    let gw = gateway_with(pool, "/lo").await;

    concurrent_gets(&gw, "/lo", 8, 15).await;
    let (s, f) = (slow.hits("/lo"), fast.hits("/lo"));
    assert_eq!(s + f, 120);
    // Round robin would give 60/60; equal in-flight counts settle around
    // 4 requests on each, and the fast server turns its 4 over many times.
    assert!(f > 2 * s, "fast {f}, slow {s}");
}

/// Consistent hashing on `header:X-User`: a user always lands on the same
/// server, and the users are spread over the pool.
#[tokio::test]
async fn consistent_hash_keeps_a_key_on_its_server() {
    let a = named("a", "/ch").await;
    let b = named("b", "/ch").await;
    let c = named("c", "/ch").await;
    let mut pool = pool_of("api", &[(&a, 1), (&b, 1), (&c, 1)]);
    pool.balance = Balance::ConsistentHash;
    pool.hash_key = "header:X-User".into();
    let gw = gateway_with(pool, "/ch").await;

    let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
    let mut home = std::collections::HashMap::new();
    for round in 0..4 {
        for u in &users {
            let r = gw.get("/ch").header("x-user", u).await;
            assert_eq!(r.status, 200);
            let server = r.text();
            if round == 0 {
                home.insert(u.clone(), server);
            } else {
                assert_eq!(home[u], server, "{u} moved in round {round}");
            }
        }
    }
    // Each origin saw each of its users on all four rounds, and no other.
    for (o, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        for req in o.requests("/ch") {
            assert_eq!(home[req.header("x-user")], name);
        }
    }
    let used: std::collections::HashSet<_> = home.values().collect();
    assert!(used.len() >= 2, "30 keys all on one server: {home:?}");
}

/// A server that dies: with retries every idempotent request still
/// succeeds, outlier detection ejects it, and once it is back (and its
/// ejection over) it takes traffic again.
#[tokio::test]
async fn killed_server_is_retried_around_ejected_and_readmitted() {
    let a = named("a", "/k").await;
    let b = named("b", "/k").await;
    let mut pool = pool_of("api", &[(&a, 1), (&b, 1)]);
    pool.outlier = OutlierConfig {
        consecutive_failures: 3,
        base_ejection: ms(300),
        max_ejection: ms(600),
        max_ejection_percent: 50,
    };
    let gw = gateway_with(pool, "/k").await;
    let b_label = b.addr().to_string();
    let labels = [("pool", "api"), ("server", b_label.as_str())];

    let mut failures = Vec::new();
    let mut check = |r: TestResponse, phase: &str| {
        if r.status != 200 {
            failures.push(format!("{phase}: {} {}", r.status, r.text()));
        }
    };
    for _ in 0..20 {
        check(gw.get("/k").await, "warm-up");
    }
    assert_eq!((a.hits("/k"), b.hits("/k")), (10, 10));

    b.stop().await;
    let deadline = Instant::now() + PATIENCE;
    let mut sent = 0;
    loop {
        check(gw.get("/k").await, "b stopped");
        sent += 1;
        if sent >= 30
            && gw
                .metric("perfgate_upstream_ejections_total", &labels)
                .await
                .is_some_and(|v| v >= 1.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "b never ejected");
    }
    assert!(
        gw.metric("perfgate_upstream_retries_total", &[("pool", "api")])
            .await
            .is_some_and(|v| v >= 1.0),
        "requests that met the dead server were retried"
    );

    b.restart().await;
    let before = b.hits("/k");
    let deadline = Instant::now() + PATIENCE;
    while b.hits("/k") == before {
        check(gw.get("/k").await, "b restarted");
        assert!(Instant::now() < deadline, "b never readmitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Back in the rotation for good.
    let before = b.hits("/k");
    for _ in 0..10 {
        check(gw.get("/k").await, "b back");
    }
    assert!(b.hits("/k") >= before + 4, "b takes its share again");
    assert!(failures.is_empty(), "client errors: {failures:#?}");
    eventually_async("server_up gauge of b back to 1", PATIENCE, || async {
        gw.metric("perfgate_upstream_server_up", &labels).await == Some(1.0)
    })
    .await;
}

/// Active probes: a server whose health path answers 503 gets no traffic
/// once `unhealthy_threshold` probes failed, and gets it back once healthy.
#[tokio::test]
async fn failed_health_probes_take_a_server_out_and_back() {
    let healthy = Arc::new(AtomicBool::new(true));
    let a = Origin::new()
        .route("/h", Rsp::text("a"))
        .route("/health", Rsp::text("ok"))
        .run()
        .await;
    let flag = healthy.clone();
    let b = Origin::new()
        .route("/h", Rsp::text("b"))
        .handle("/health", move |_| {
            if flag.load(Ordering::SeqCst) {
                Rsp::text("ok")
            } else {
                Rsp::status(503)
            }
        })
        .run()
        .await;
    let mut pool = pool_of("api", &[(&a, 1), (&b, 1)]);
    pool.health = HealthConfig {
        path: Some("/health".into()),
        interval: ms(100),
        timeout: ms(1000),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    };
    let gw = gateway_with(pool, "/h").await;
    eventually("b probed", PATIENCE, || b.hits("/health") >= 1).await;
    assert!(
        b.requests("/health")[0]
            .header("user-agent")
            .contains("probe")
    );
    for _ in 0..10 {
        assert_eq!(gw.get("/h").await.status, 200);
    }
    assert_eq!(b.hits("/h"), 5);

    healthy.store(false, Ordering::SeqCst);
    eventually("b marked down by its probes", PATIENCE, || {
        !server_up(&gw, "api", b.addr())
    })
    .await;
    let before = b.hits("/h");
    for _ in 0..20 {
        let r = gw.get("/h").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "a"));
    }
    assert_eq!(b.hits("/h"), before, "a probe-down server gets no traffic");
    let b_label = b.addr().to_string();
    assert_eq!(
        gw.metric(
            "perfgate_upstream_server_up",
            &[("pool", "api"), ("server", &b_label)]
        )
        .await,
        Some(0.0)
    );

    healthy.store(true, Ordering::SeqCst);
    eventually_async("b takes traffic again", PATIENCE, || async {
        assert_eq!(gw.get("/h").await.status, 200);
        b.hits("/h") > before
    })
    .await;
}

/// Every server probe-down: 503 `no_healthy_upstream` at once, nothing sent.
#[tokio::test]
async fn no_healthy_server_is_503() {
    let a = Origin::new()
        .route("/n", Rsp::text("a"))
        .route("/health", Rsp::status(500))
        .run()
        .await;
    let mut pool = pool_of("api", &[(&a, 1)]);
    pool.health = HealthConfig {
        path: Some("/health".into()),
        interval: ms(100),
        timeout: ms(1000),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    };
    let gw = gateway_with(pool, "/n").await;
    eventually("a marked down", PATIENCE, || {
        !server_up(&gw, "api", a.addr())
    })
    .await;
    let r = gw.get("/n").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(code(&r), "no_healthy_upstream");
    assert!(r.has("retry-after"));
    assert_eq!(a.hits("/n"), 0);
}

/// The breaker opens after `consecutive_failures`, refuses with 503
/// `circuit_open` and Retry-After without contacting the origin, lets a
/// cached route serve stale (stale-if-error), and closes again after a
/// successful half-open trial.
#[tokio::test]
async fn breaker_opens_serves_stale_and_recovers() {
    let failing = Arc::new(AtomicBool::new(false));
    let answer = |body: &'static str, failing: Arc<AtomicBool>| {
        move |_: &perfgate_test_support::Req| {
            if failing.load(Ordering::SeqCst) {
                Rsp::status(503).body("boom")
            } else {
                Rsp::text(body)
            }
        }
    };
    let origin = Origin::new()
        .handle("/live", answer("live", failing.clone()))
        .handle("/cached", answer("cached v1", failing.clone()))
        .run()
        .await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.breaker = BreakerConfig {
        consecutive_failures: 3,
        open_for: ms(500),
        ..BreakerConfig::default()
    };
    pool.retry.attempts = 0;
    let gw = Gateway::builder()
        .config(move |c| c.pools.push(pool))
        .route(pool_route("/live", "api"))
        .route(RouteConfig {
            path: Some("/cached".into()),
            pool: Some("api".into()),
            cache: RouteCachePolicy {
                default_ttl: Some(ms(1000)),
                stale_if_error: Some(CfgDuration::from_secs(60)),
                ..RouteCachePolicy::default()
            },
            ..RouteConfig::default()
        })
        .manual_clock()
        .spawn()
        .await;
    let circuit = || gw.metric("perfgate_circuit_state", &[("pool", "api")]);

    let r = gw.get("/cached").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    assert_eq!(gw.get("/live").await.status, 200);
    crate::make_stale(&gw);

    failing.store(true, Ordering::SeqCst);
    for i in 0..3 {
        let r = gw.get("/live").await;
        assert_eq!(r.status, 503, "failure {i} passes through: {}", r.text());
    }
    let opened = Instant::now();
    assert_eq!(origin.hits("/live"), 4);
    let r = gw.get("/live").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(code(&r), "circuit_open");
    let retry_after: u64 = r.header("retry-after").parse().expect("Retry-After");
    assert!(retry_after >= 1);
    assert_eq!(origin.hits("/live"), 4, "nothing sent while open");
    assert_eq!(circuit().await, Some(2.0));

    let r = gw.get("/cached").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "cached v1");
    let cs = r.header("cache-status");
    // Breakers are per route: /cached's own is closed, its 503 is covered
    // by stale-if-error.
    assert!(
        cs.contains("fwd=stale") && cs.contains("stale-if-error"),
        "stale served: {cs}"
    );
    assert_eq!(origin.hits("/cached"), 2, "its own breaker is closed");

    failing.store(false, Ordering::SeqCst);
    eventually_async("a half-open trial closes the breaker", PATIENCE, || async {
        let r = gw.get("/live").await;
        if r.status == 503 {
            assert_eq!(code(&r), "circuit_open");
            tokio::time::sleep(Duration::from_millis(20)).await;
            return false;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        true
    })
    .await;
    assert!(
        opened.elapsed() >= Duration::from_millis(450),
        "open for open_for (500ms): closed after {:?}",
        opened.elapsed()
    );
    assert_eq!(origin.hits("/live"), 5, "one trial request, then closed");
    assert_eq!(circuit().await, Some(0.0));
    for _ in 0..5 {
        assert_eq!(gw.get("/live").await.status, 200);
    }
    let r = gw.get("/cached").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("cache-status").contains("stored"),
        "refetched once closed: {}",
        r.header("cache-status")
    );
    assert_eq!(origin.hits("/cached"), 3);
}

/// Retries repeat only what is safe: a POST that reached the upstream is
/// sent once; and a response is an answer: on a one-server pool a GET
/// answered 503 is not sent again, even with 503 in `retry.on_status`
/// (there is no other server to take it).
#[tokio::test]
async fn retries_never_repeat_a_post_that_reached_the_upstream() {
    let origin = Origin::new()
        .route("/fail", Rsp::status(503).body("busy"))
        .run()
        .await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.breaker.enabled = false;
    // Not the subject here (see `retry_budget_caps_retries`).
    pool.retry.min_per_second = 1000;
    pool.retry.on_status = vec![502, 503, 504];
    let gw = gateway_with(pool, "/fail").await;
    let count = |m: Method| {
        origin
            .requests("/fail")
            .iter()
            .filter(|r| r.method == m)
            .count()
    };

    let r = gw
        .request(Method::POST, "/fail")
        .body("{\"order\":1}")
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(count(Method::POST), 1, "a POST with a body is sent once");
    let r = gw.request(Method::POST, "/fail").await;
    assert_eq!(r.status, 503);
    assert_eq!(count(Method::POST), 2, "a POST without a body is sent once");

    let r = gw.get("/fail").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        count(Method::GET),
        1,
        "a GET answered 503 by the only server: sent once"
    );
    let r = gw.request(Method::DELETE, "/fail").await;
    assert_eq!(r.status, 503);
    assert_eq!(count(Method::DELETE), 1, "likewise a DELETE");
}

/// The retry budget: with no share of the traffic (`budget_percent = 0`)
/// only `min_per_second` retries are allowed per second, however many
/// requests fail (here: connections refused, which are always retried).
#[tokio::test]
async fn retry_budget_caps_retries() {
    let closed = ClosedPort::new();
    let mut pool = pool_of_urls("api", &[(closed.url(), 1)]);
    pool.breaker.enabled = false;
    pool.outlier.consecutive_failures = 0;
    pool.retry.budget_percent = 0;
    pool.retry.min_per_second = 1;
    let gw = gateway_with(pool, "/fail").await;
    let start = Instant::now();
    for _ in 0..6 {
        assert_eq!(gw.get("/fail").await.status, 502);
    }
    // Seconds are counted from the first retry: the requests span at most
    // elapsed + 2 of them, one retry each.
    let bound = 2 + usize::try_from(start.elapsed().as_secs()).unwrap();
    let retries = gw
        .metric("perfgate_upstream_retries_total", &[("pool", "api")])
        .await
        .unwrap_or(0.0) as usize;
    assert!(retries >= 1, "some retry is allowed: {retries}");
    assert!(retries <= bound, "{retries} retries (at most {bound})");
    assert!(retries < 12, "without a budget: 6 × 2");
}

/// A connection refused never reached the upstream: even a POST is retried,
/// on the other server.
#[tokio::test]
async fn a_refused_post_without_body_is_retried_on_another_server() {
    let origin = named("ok", "/p").await;
    let dead = ClosedPort::new();
    let mut pool = pool_of_urls("api", &[(dead.url(), 1), (origin.url(), 1)]);
    pool.retry.min_per_second = 1000;
    let gw = gateway_with(pool, "/p").await;
    for i in 0..4 {
        let r = gw.request(Method::POST, "/p").await;
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
    }
    assert_eq!(
        origin.hits("/p"),
        4,
        "each POST reached the live server once"
    );
    assert!(
        gw.metric("perfgate_upstream_retries_total", &[("pool", "api")])
            .await
            .is_some_and(|v| v >= 1.0)
    );
}

/// The same with a request body: the body was never read (the connection
/// was refused), so the POST is safe to send to the other server.
#[tokio::test]
async fn a_refused_post_with_body_is_retried_on_another_server() {
    let origin = named("ok", "/p").await;
    let dead = ClosedPort::new();
    let mut pool = pool_of_urls("api", &[(dead.url(), 1), (origin.url(), 1)]);
    pool.retry.min_per_second = 1000;
    let gw = gateway_with(pool, "/p").await;
    for i in 0..4 {
        let r = gw.request(Method::POST, "/p").body("{\"order\":1}").await;
        assert_eq!(r.status, 200, "POST {i}: {}", r.text());
    }
    assert_eq!(origin.hits("/p"), 4);
}

/// `timeouts.total` bounds the whole exchange: a 5 s origin, a 300 ms
/// deadline → 504 long before the origin answers.
#[tokio::test]
async fn route_total_deadline_gives_504_in_time() {
    let origin = Origin::new()
        .route("/slow", Rsp::text("late").delay(Duration::from_secs(5)))
        .run()
        .await;
    let url = origin.url();
    let gw = Gateway::builder()
        .route(RouteConfig {
            path: Some("/slow".into()),
            upstream: Some(url),
            timeouts: RouteTimeouts {
                total: Some(ms(300)),
                ..RouteTimeouts::default()
            },
            cache: RouteCachePolicy {
                bypass: true,
                ..RouteCachePolicy::default()
            },
            ..RouteConfig::default()
        })
        .spawn()
        .await;
    let start = Instant::now();
    let r = gw.get("/slow").await;
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(code(&r), "upstream_timeout");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(origin.hits("/slow"), 1, "no retry past the deadline");
}

/// `max_connections = 1`: while one request holds the slot, another waits
/// `queue_timeout` and gets 503 `overloaded`.
#[tokio::test]
async fn pool_connection_limit_queues_then_refuses() {
    let gate = Gate::new();
    let origin = Origin::new()
        .route("/q", Rsp::text("done").gated(&gate))
        .run()
        .await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.max_connections = 1;
    pool.queue_timeout = ms(100);
    let gw = gateway_with(pool, "/q").await;

    let first = tokio::spawn(gw.new_client().get("/q").send());
    eventually("first request at the origin", PATIENCE, || {
        origin.hits("/q") == 1
    })
    .await;
    let start = Instant::now();
    let second = gw.new_client().get("/q").await;
    assert_eq!(second.status, 503, "{}", second.text());
    assert_eq!(code(&second), "overloaded");
    assert!(second.has("retry-after"));
    assert!(start.elapsed() >= Duration::from_millis(90));
    assert_eq!(origin.hits("/q"), 1);

    gate.open();
    let first = first.await.unwrap();
    assert_eq!(
        (first.status.as_u16(), first.text().as_str()),
        (200, "done")
    );
    // The slot is free again.
    assert_eq!(gw.get("/q").await.status, 200);
}

/// A pool with a read pool: safe methods go to the read pool, the others
/// to the primary.
#[tokio::test]
async fn read_pool_takes_the_safe_methods() {
    let primary = Origin::new().route("/rw", Rsp::text("primary")).run().await;
    let replica = Origin::new().route("/rw", Rsp::text("replica")).run().await;
    let mut main = pool_of("main", &[(&primary, 1)]);
    main.read_pool = Some("replicas".into());
    let replicas = pool_of("replicas", &[(&replica, 1)]);
    let gw = Gateway::builder()
        .config(move |c: &mut Config| c.pools.extend([main, replicas]))
        .route(pool_route("/rw", "main"))
        .spawn()
        .await;

    for (m, expect) in [
        (Method::GET, "replica"),
        (Method::POST, "primary"),
        (Method::PUT, "primary"),
        (Method::DELETE, "primary"),
        (Method::OPTIONS, "replica"),
    ] {
        let r = gw.request(m.clone(), "/rw").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), expect, "{m}");
    }
    let r = gw.request(Method::HEAD, "/rw").await;
    assert_eq!(r.status, 200);
    let methods = |o: &RunningOrigin| {
        o.requests("/rw")
            .iter()
            .map(|r| r.method.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(methods(&replica), ["GET", "OPTIONS", "HEAD"]);
    assert_eq!(methods(&primary), ["POST", "PUT", "DELETE"]);
}

/// A retry must not take the next request's round-robin turn: with one of
/// two servers failing, each request should still start on either server
/// in turn (the failing one gets half of the first attempts, not all).
#[tokio::test]
async fn retries_do_not_steal_the_next_round_robin_turn() {
    let a = named("a", "/x").await;
    let b = Origin::new().route("/x", Rsp::status(503)).run().await;
    let mut pool = pool_of("api", &[(&a, 1), (&b, 1)]);
    pool.outlier.consecutive_failures = 0;
    pool.breaker.enabled = false;
    pool.retry.min_per_second = 1000;
    pool.retry.on_status = vec![503];
    let gw = gateway_with(pool, "/x").await;
    for _ in 0..20 {
        assert_eq!(gw.get("/x").await.status, 200);
    }
    // Alternating first attempts: a 10 (+ 10 retries), b 10.
    assert_eq!(a.hits("/x"), 20);
    assert!(
        b.hits("/x") <= 11,
        "the failing server got {} of 20 first attempts",
        b.hits("/x")
    );
}

/// Consistent hashing moves only the keys of a server that leaves (probes
/// took it down), and they come back when it does.
#[tokio::test]
async fn consistent_hash_moves_only_the_keys_of_a_server_that_leaves() {
    let healthy = Arc::new(AtomicBool::new(true));
    let probe = |flag: Option<Arc<AtomicBool>>| {
        move |_: &perfgate_test_support::Req| match &flag {
            Some(f) if !f.load(Ordering::SeqCst) => Rsp::status(503),
            _ => Rsp::text("ok"),
        }
    };
    let a = Origin::new()
        .route("/ch", Rsp::text("a"))
        .handle("/health", probe(None))
        .run()
        .await;
    let b = Origin::new()
        .route("/ch", Rsp::text("b"))
        .handle("/health", probe(Some(healthy.clone())))
        .run()
        .await;
    let c = Origin::new()
        .route("/ch", Rsp::text("c"))
        .handle("/health", probe(None))
        .run()
        .await;
    let mut pool = pool_of("api", &[(&a, 1), (&b, 1), (&c, 1)]);
    pool.balance = Balance::ConsistentHash;
    pool.hash_key = "header:X-User".into();
    pool.health = HealthConfig {
        path: Some("/health".into()),
        interval: ms(100),
        timeout: ms(1000),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    };
    let gw = gateway_with(pool, "/ch").await;
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let homes = || async {
        let mut m = std::collections::BTreeMap::new();
        for u in &users {
            let r = gw.get("/ch").header("x-user", u).await;
            assert_eq!(r.status, 200, "{}", r.text());
            m.insert(u.clone(), r.text());
        }
        m
    };
    let before = homes().await;
    assert!(before.values().any(|s| s == "b"), "b holds some keys");

    healthy.store(false, Ordering::SeqCst);
    eventually("b down", PATIENCE, || !server_up(&gw, "api", b.addr())).await;
    let during = homes().await;
    for (u, home) in &before {
        if home == "b" {
            assert_ne!(during[u], "b", "{u} left b");
        } else {
            assert_eq!(&during[u], home, "{u} kept its server");
        }
    }

    healthy.store(true, Ordering::SeqCst);
    eventually("b up", PATIENCE, || server_up(&gw, "api", b.addr())).await;
    assert_eq!(homes().await, before, "every key back home");
}

/// The failure-rate rule: half of `min_requests` results failing opens the
/// breaker even without consecutive failures.
#[tokio::test]
async fn breaker_opens_on_failure_rate() {
    let origin = Origin::new()
        .handle("/r", |req| {
            if req.n % 2 == 0 {
                Rsp::status(503)
            } else {
                Rsp::text("ok")
            }
        })
        .run()
        .await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.breaker = BreakerConfig {
        failure_rate: 0.5,
        min_requests: 6,
        window: CfgDuration::from_secs(10),
        consecutive_failures: 0,
        open_for: CfgDuration::from_secs(30),
        ..BreakerConfig::default()
    };
    pool.retry.attempts = 0;
    let gw = gateway_with(pool, "/r").await;
    for i in 1..=6u16 {
        let r = gw.get("/r").await;
        assert_eq!(r.status, if i % 2 == 0 { 503 } else { 200 }, "request {i}");
    }
    let r = gw.get("/r").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(code(&r), "circuit_open");
    assert_eq!(origin.hits("/r"), 6);
}

/// A failed half-open trial opens the breaker again for a fresh `open_for`.
#[tokio::test]
async fn failed_trial_reopens_the_breaker() {
    let origin = Origin::new().route("/t", Rsp::status(503)).run().await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.breaker = BreakerConfig {
        consecutive_failures: 2,
        open_for: ms(800),
        ..BreakerConfig::default()
    };
    pool.retry.attempts = 0;
    let gw = gateway_with(pool, "/t").await;
    for _ in 0..2 {
        assert_eq!(gw.get("/t").await.status, 503);
    }
    assert_eq!(gw.get("/t").await.status, 503);
    // Poll until the trial goes through (and fails).
    eventually_async("a half-open trial", PATIENCE, || async {
        let r = gw.get("/t").await;
        if r.header("content-type") == "application/json" && code(&r) == "circuit_open" {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return false;
        }
        assert_eq!(r.status, 503, "the trial's answer passes through");
        true
    })
    .await;
    assert_eq!(origin.hits("/t"), 3, "exactly one trial");
    let r = gw.get("/t").await;
    assert_eq!(r.status, 503, "open again: {}", r.text());
    assert_eq!(code(&r), "circuit_open");
    assert_eq!(origin.hits("/t"), 3);
    assert_eq!(
        gw.metric("perfgate_circuit_state", &[("pool", "api")])
            .await,
        Some(2.0)
    );
}

/// An attempt that times out (`timeouts.response`) is retried on the other
/// server when the method is idempotent; a POST that reached the slow
/// server is not.
#[tokio::test]
async fn timed_out_attempt_is_retried_elsewhere_unless_unsafe() {
    let slow = Origin::new()
        .route("/s", Rsp::text("slow").delay(Duration::from_secs(3)))
        .run()
        .await;
    let fast = named("fast", "/s").await;
    let mut pool = pool_of("api", &[(&slow, 1), (&fast, 1)]);
    pool.retry.min_per_second = 1000;
    pool.outlier.consecutive_failures = 0;
    let gw = Gateway::builder()
        .config(move |c| c.pools.push(pool))
        .route(RouteConfig {
            timeouts: RouteTimeouts {
                response: Some(ms(200)),
                ..RouteTimeouts::default()
            },
            ..pool_route("/s", "api")
        })
        .spawn()
        .await;
    // Round robin starts on the slow server.
    let start = Instant::now();
    let r = gw.get("/s").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "fast"));
    assert!(start.elapsed() < Duration::from_millis(2500));
    assert_eq!((slow.hits("/s"), fast.hits("/s")), (1, 1));
    // POSTs until one lands on the slow server (the next one, or the one
    // after, depending on whether the retry above took a round-robin turn).
    let mut posts = 0;
    while slow.hits("/s") < 2 {
        let r = gw.request(Method::POST, "/s").await;
        posts += 1;
        if slow.hits("/s") == 2 {
            assert_eq!(r.status, 504, "{}", r.text());
            assert_eq!(code(&r), "upstream_timeout");
        }
        assert!(posts <= 2);
    }
    let fast_posts = fast
        .requests("/s")
        .iter()
        .filter(|r| r.method == Method::POST)
        .count();
    assert_eq!(fast_posts, posts - 1, "the timed-out POST was not repeated");
}

/// `max_connections`: a request waits for a slot up to `queue_timeout` and
/// goes through when one frees in time.
#[tokio::test]
async fn pool_connection_limit_queues_until_a_slot_frees() {
    let gate = Gate::new();
    let origin = Origin::new()
        .route("/q", Rsp::text("done").gated(&gate))
        .run()
        .await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.max_connections = 1;
    pool.queue_timeout = CfgDuration::from_secs(10);
    let gw = gateway_with(pool, "/q").await;
    let first = tokio::spawn(gw.new_client().get("/q").send());
    eventually("first at the origin", PATIENCE, || origin.hits("/q") == 1).await;
    let second = tokio::spawn(gw.new_client().get("/q").send());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(origin.hits("/q"), 1, "the second waits for the slot");
    gate.open();
    for r in [first.await.unwrap(), second.await.unwrap()] {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(origin.hits("/q"), 2);
}
