//! Concurrent cold misses share one upstream request, unless the response
//! is personal.

use std::time::{Duration, Instant};

use perfgate_test_support::{Gate, Origin, PATIENCE, Rsp, eventually, eventually_async};

use crate::support::Gateway;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_cold_requests_make_one_upstream_request() {
    let body = crate::events_json();
    let origin = Origin::new()
        .route(
            "/events",
            Rsp::json(body.clone())
                .max_age(60)
                .delay(Duration::from_millis(300)),
        )
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;

    let client = gw.new_client();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get("/events").send().await })
        })
        .collect();
    let mut labels = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), body);
        *labels
            .entry(r.header("cache-status").to_string())
            .or_default() += 1;
    }
    assert_eq!(origin.hits("/events"), 1, "cache-status seen: {labels:?}");
    assert_eq!(
        labels.get("perfgate; fwd=miss; stored"),
        Some(&1),
        "{labels:?}"
    );
    let stats = gw.gateway().cache_stats();
    assert_eq!(stats.upstream_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_responses_are_not_handed_to_waiters() {
    let origin = Origin::new()
        .handle("/me", |req| {
            Rsp::text(format!("user={}", req.header("x-user")))
                .header("cache-control", "private, max-age=60")
                .delay(Duration::from_millis(300))
        })
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;

    let start = Instant::now();
    let client = gw.new_client();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move {
                let user = format!("u{i}");
                let r = c.get("/me").header("x-user", &user).send().await;
                (user, r)
            })
        })
        .collect();
    for t in tasks {
        let (user, r) = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            format!("user={user}"),
            "a client got someone else's response"
        );
    }
    assert!(origin.hits("/me") > 1, "waiters must fetch for themselves");
    assert_eq!(
        origin.hits("/me"),
        50,
        "every private request goes upstream"
    );
    // Waiters are released when the leader's response turns out private,
    // not after the coalesce timeout.
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}: waiters sat out the coalesce timeout",
        start.elapsed()
    );
}

/// Issue #11 item 12: waiters wait as long as the leader's fetch takes,
/// not a fixed `cache.coalesce_timeout` (now ignored; set far shorter than
/// the upstream here): a slow upstream still gets one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_wait_for_a_slow_leader() {
    let origin = Origin::new()
        .route(
            "/slow",
            Rsp::text("slow")
                .max_age(60)
                .delay(Duration::from_millis(1500)),
        )
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.cache.coalesce_timeout = Some(perfgate_config::Duration::from_millis(200)))
        .spawn()
        .await;
    let client = gw.new_client();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get("/slow").send().await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "slow");
    }
    assert_eq!(origin.hits("/slow"), 1, "one upstream request");
}

/// Issue #11 item 12: a fill in a task of its own (here a background
/// refresh, which has no client) counts toward
/// `server.max_concurrent_requests`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_fills_count_toward_max_concurrent_requests() {
    let gate = Gate::new();
    let held = gate.clone();
    let origin = Origin::new()
        .handle("/swr", move |req| {
            let r = Rsp::text(format!("v{}", req.n))
                .header("cache-control", "max-age=1, stale-while-revalidate=60");
            if req.n == 1 { r } else { r.gated(&held) }
        })
        .route("/held", Rsp::text("held").gated(&gate))
        .route("/fine", Rsp::text("fine"))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.server.max_concurrent_requests = 2)
        .manual_clock()
        .spawn()
        .await;
    assert_eq!(gw.get("/swr").await.status, 200);
    crate::make_stale(&gw);
    let r = gw.get("/swr").await;
    assert_eq!(
        r.header("cache-status"),
        "perfgate; hit; detail=stale-while-revalidate"
    );
    eventually("the refresh reached the upstream", PATIENCE, || {
        origin.hits("/swr") == 2
    })
    .await;
    let client = gw.new_client();
    let waiting = tokio::spawn(async move { client.get("/held").send().await });
    eventually("/held reached the upstream", PATIENCE, || {
        origin.hits("/held") == 1
    })
    .await;
    // In flight: the refresh and /held; a third request is one too many.
    let r = gw.get("/fine").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "overloaded");
    gate.open();
    assert_eq!(waiting.await.unwrap().status, 200);
    eventually_async(
        "the refresh is done and its place freed",
        PATIENCE,
        || async { gw.get("/fine").await.status == 200 },
    )
    .await;
}
