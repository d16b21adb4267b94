//! Concurrent cold misses share one upstream request, unless the response
//! is personal.

use std::time::{Duration, Instant};

use perfgate_test_support::{Gateway, Origin, Rsp};

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
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.cache.coalesce_timeout = perfgate_config::Duration::from_secs(10))
        .spawn()
        .await;

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
