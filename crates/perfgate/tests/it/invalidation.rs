//! Invalidation (issue #3): by URL, `url_hash`, prefix and tag, soft, and
//! automatic after unsafe requests; every one reaches the L1 of the other
//! instance (fan-out through Redis) and the L2.

use std::time::{Duration, Instant};

use http::Method;
use perfgate_config::{CacheConfig, RouteCachePolicy, RouteConfig};
use perfgate_test_support::{
    Gate, L1_HIT, L2_HIT, Origin, PATIENCE, RedisServer, Rsp, SHARED_HOST, STORED, TOKEN,
    cache_status, eventually, is_hit, stays, unique_name,
};
use serde_json::json;

use crate::events_json;
use crate::l2::pair;
use crate::support::{Gateway, RunningGateway, until_not_hit};

/// How long the fan-out may take in these tests. The goal is 100 ms; the
/// bound is generous for a loaded machine and the measured delay is printed.
const FANOUT_BOUND: Duration = Duration::from_secs(1);

/// `path` is cached in both instances' L1 (A fetched it, B got it from L2).
async fn share(a: &RunningGateway, b: &RunningGateway, path: &str) {
    a.fetch_into_l2(path).await;
    let r = b.get(path).await;
    assert_eq!(cache_status(&r), L2_HIT, "{path} on B");
    assert_eq!(cache_status(&b.get(path).await), L1_HIT, "{path} on B");
    assert_eq!(cache_status(&a.get(path).await), L1_HIT, "{path} on A");
}

/// `path` is gone from B's L1 (fan-out) and from L2 (B's next request goes
/// upstream), then from A's L1 (A answers with anything but an L1 hit: a
/// miss, or an L2 hit on what B just stored).
async fn gone_everywhere(a: &RunningGateway, b: &RunningGateway, path: &str, since: Instant) {
    let (r, _) = until_not_hit(b, path, since, FANOUT_BOUND).await;
    assert!(
        cache_status(&r).starts_with("perfgate; fwd=miss"),
        "{path} on B: {}",
        cache_status(&r)
    );
    let r = a.get(path).await;
    assert_ne!(cache_status(&r), L1_HIT, "{path} still in A's L1");
}

async fn still_cached(a: &RunningGateway, b: &RunningGateway, path: &str) {
    assert_eq!(cache_status(&a.get(path).await), L1_HIT, "{path} on A");
    assert_eq!(cache_status(&b.get(path).await), L1_HIT, "{path} on B");
}

fn route(
    name: &str,
    path: Option<&str>,
    pattern: Option<&str>,
    cache: RouteCachePolicy,
) -> RouteConfig {
    RouteConfig {
        name: Some(name.into()),
        path: path.map(Into::into),
        pattern: pattern.map(Into::into),
        cache,
        ..Default::default()
    }
}

#[tokio::test]
async fn invalidating_through_a_reaches_b() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .route("/venues", Rsp::json(r#"{"venues":[]}"#).max_age(60))
        .run()
        .await;
    let (a, b) = pair(origin.addr(), &redis, "inv-url").await;
    share(&a, &b, "/events?page=1").await;
    share(&a, &b, "/venues").await;

    let sent = Instant::now();
    let r = a.invalidate(json!({"urls": ["/events?page=1"]})).await;
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true, "{v}");
    let d = &v["data"];
    assert_eq!(d["l1_removed"], 1, "{d}");
    assert!(d["l2_removed"].as_u64() >= Some(1), "{d}");
    assert_eq!(d["soft"], false, "{d}");
    assert_eq!(d["fanout"], "sent", "{d}");

    let (r, delay) = until_not_hit(&b, "/events?page=1", answered, FANOUT_BOUND).await;
    eprintln!(
        "B without the entry {delay:?} after A's 200 (A answered {:?} after the request was \
         sent); B's first request without a hit: {}",
        answered - sent,
        cache_status(&r)
    );
    assert!(
        cache_status(&r).starts_with("perfgate; fwd=miss"),
        "removed from L2 too: {}",
        cache_status(&r)
    );
    assert_ne!(cache_status(&a.get("/events?page=1").await), L1_HIT);
    still_cached(&a, &b, "/venues").await;

    // An absolute URL matches its own host only.
    share(&a, &b, "/events?page=2").await;
    let d = a
        .invalidate_ok(json!({"urls": [format!("http://other.test/events?page=2")]}))
        .await;
    assert_eq!(d["l1_removed"], 0, "another host: {d}");
    still_cached(&a, &b, "/events?page=2").await;
    let since = Instant::now();
    let d = a
        .invalidate_ok(json!({"urls": [format!("http://{SHARED_HOST}/events?page=2")]}))
        .await;
    assert_eq!(d["l1_removed"], 1, "{d}");
    gone_everywhere(&a, &b, "/events?page=2", since).await;
}

/// Fan-out delay over several invalidations, for the closing note. B is
/// polled continuously (one request after the other, ~0.5 ms apart) while
/// the invalidation is sent to A; the delay is from the moment A's request
/// is sent to the first B request that no longer gets a hit (an upper bound:
/// it includes A's own handling and one poll interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn fanout_delay_between_two_instances() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .run()
        .await;
    let (a, b) = pair(origin.addr(), &redis, "inv-delay").await;
    let mut delays = Vec::new();
    let mut answers = Vec::new();
    let mut before_answer = 0;
    for i in 0..10 {
        let path = format!("/events?round={i}");
        share(&a, &b, &path).await;
        let (polling, started) = tokio::sync::oneshot::channel();
        let poller = {
            let c = b.new_client();
            let path = path.clone();
            tokio::spawn(async move {
                let mut polling = Some(polling);
                let deadline = Instant::now() + FANOUT_BOUND + PATIENCE;
                loop {
                    let sent = Instant::now();
                    let r = c.get(&path).send().await;
                    if !is_hit(&r) {
                        return (sent, r);
                    }
                    if let Some(p) = polling.take() {
                        let _ = p.send(());
                    }
                    assert!(Instant::now() < deadline, "{path} never invalidated on B");
                }
            })
        };
        started.await.expect("B is being polled");
        let t0 = Instant::now();
        a.invalidate_ok(json!({"urls": [path]})).await;
        let answered = Instant::now();
        let (seen, r) = poller.await.expect("poller");
        assert!(
            cache_status(&r).starts_with("perfgate; fwd=miss"),
            "{}",
            cache_status(&r)
        );
        if seen <= answered {
            before_answer += 1;
        }
        delays.push(seen.saturating_duration_since(t0));
        answers.push(answered - t0);
    }
    delays.sort();
    answers.sort();
    let n = delays.len();
    eprintln!(
        "fanout delay: A request sent → B no longer hits: median {:?}, max {:?} over {n} \
         invalidations (A's 200 itself took median {:?}, max {:?}; B was already consistent \
         when A answered in {before_answer}/{n})",
        delays[n / 2],
        delays[n - 1],
        answers[n / 2],
        answers[n - 1],
    );
    assert!(delays[n - 1] < FANOUT_BOUND, "max {:?}", delays[n - 1]);
}

#[tokio::test]
async fn tag_purge_uses_surrogate_key_cache_tag_and_route_tags() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = Origin::new()
        .route(
            "/events",
            Rsp::json(events_json())
                .max_age(60)
                .header("surrogate-key", "events e42"),
        )
        .route(
            "/events/42",
            Rsp::json(r#"{"id":42}"#)
                .max_age(60)
                .header("surrogate-key", "e42"),
        )
        .route(
            "/news",
            Rsp::json(r#"{"news":[]}"#)
                .max_age(60)
                .header("cache-tag", "news,breaking"),
        )
        .route("/venues", Rsp::json(r#"{"venues":[]}"#).max_age(60))
        .route("/other", Rsp::json(r#"{"other":1}"#).max_age(60))
        .run()
        .await;
    let prefix = unique_name("inv-tags");
    let venues = || {
        route(
            "venues",
            Some("/venues"),
            None,
            RouteCachePolicy {
                tags: vec!["venues".into()],
                ..Default::default()
            },
        )
    };
    let (a, b) =
        Gateway::members(origin.addr(), &redis.url(), &prefix, |g| g.route(venues())).await;
    for p in ["/events", "/events/42", "/news", "/venues", "/other"] {
        share(&a, &b, p).await;
    }

    // Surrogate-Key (space-separated).
    let since = Instant::now();
    let d = a.invalidate_ok(json!({"tags": ["e42"]})).await;
    assert_eq!(d["l1_removed"], 2, "{d}");
    assert!(d["l2_removed"].as_u64() >= Some(2), "{d}");
    assert_eq!(d["fanout"], "sent");
    gone_everywhere(&a, &b, "/events", since).await;
    gone_everywhere(&a, &b, "/events/42", since).await;
    for p in ["/news", "/venues", "/other"] {
        still_cached(&a, &b, p).await;
    }

    // Cache-Tag (comma-separated).
    let since = Instant::now();
    let d = a.invalidate_ok(json!({"tags": ["breaking"]})).await;
    assert_eq!(d["l1_removed"], 1, "{d}");
    gone_everywhere(&a, &b, "/news", since).await;

    // Tags from the route's configuration; purged through B this time.
    let since = Instant::now();
    let d = b.invalidate_ok(json!({"tags": ["venues"]})).await;
    assert_eq!(d["l1_removed"], 1, "{d}");
    let (r, _) = until_not_hit(&a, "/venues", since, FANOUT_BOUND).await;
    assert!(
        cache_status(&r).starts_with("perfgate; fwd=miss"),
        "{}",
        cache_status(&r)
    );
    assert_ne!(cache_status(&b.get("/venues").await), L1_HIT);

    // Unknown tags remove nothing; the untagged entry was never touched.
    let d = a.invalidate_ok(json!({"tags": ["nothing-has-this"]})).await;
    assert_eq!(d["l1_removed"], 0, "{d}");
    still_cached(&a, &b, "/other").await;
    assert_eq!(origin.hits("/other"), 1);
}

#[tokio::test]
async fn prefix_purge() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .route("/events/42", Rsp::json(r#"{"id":42}"#).max_age(60))
        .route("/other", Rsp::json(r#"{"other":1}"#).max_age(60))
        .run()
        .await;
    let (a, b) = pair(origin.addr(), &redis, "inv-prefix").await;
    for p in ["/events", "/events?page=2", "/events/42", "/other"] {
        share(&a, &b, p).await;
    }
    let since = Instant::now();
    let d = a.invalidate_ok(json!({"prefix": "/events"})).await;
    assert_eq!(d["l1_removed"], 3, "{d}");
    assert!(d["l2_removed"].as_u64() >= Some(3), "{d}");
    for p in ["/events", "/events?page=2", "/events/42"] {
        gone_everywhere(&a, &b, p, since).await;
    }
    still_cached(&a, &b, "/other").await;
    assert_eq!(origin.hits("/other"), 1);
}

/// `soft: true` marks entries stale instead of removing them: with
/// stale-while-revalidate the next request is served stale and one
/// background refresh goes upstream (no stampede).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_purge_serves_stale_and_refreshes_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let gate = Gate::new();
    let held = gate.clone();
    let origin = Origin::new()
        .handle("/feed", move |req| {
            let rsp = Rsp::json(format!(r#"{{"v":{}}}"#, req.n))
                .header("cache-control", "max-age=60, stale-while-revalidate=30");
            if req.n == 1 { rsp } else { rsp.gated(&held) }
        })
        .run()
        .await;
    let (a, b) = pair(origin.addr(), &redis, "inv-soft").await;
    share(&a, &b, "/feed").await;

    let d = a
        .invalidate_ok(json!({"urls": ["/feed"], "soft": true}))
        .await;
    assert_eq!(d["soft"], true, "{d}");
    assert_eq!(d["l1_removed"], 1, "soft-purged entries are counted: {d}");

    // B: its L1 copy is marked stale by the fan-out.
    let deadline = Instant::now() + FANOUT_BOUND;
    loop {
        let r = b.get("/feed").await;
        assert_eq!(r.text(), r#"{"v":1}"#, "served from the cache");
        if cache_status(&r) == "perfgate; hit; detail=stale-while-revalidate" {
            break;
        }
        assert_eq!(cache_status(&r), L1_HIT);
        assert!(Instant::now() < deadline, "soft purge never reached B");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Many clients meanwhile: all served stale, one refresh.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let c = b.new_client();
            tokio::spawn(async move { c.get("/feed").send().await })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("client task");
        assert_eq!(r.text(), r#"{"v":1}"#);
        assert!(is_hit(&r), "{}", cache_status(&r));
    }
    eventually(
        "B's background refresh reaches the origin",
        PATIENCE,
        || origin.hits("/feed") == 2,
    )
    .await;
    stays("exactly one refresh", Duration::from_millis(300), || {
        origin.hits("/feed") == 2
    })
    .await;
    gate.open();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = b.get("/feed").await;
        if r.text() == r#"{"v":2}"# {
            assert_eq!(cache_status(&r), L1_HIT);
            break;
        }
        assert!(Instant::now() < deadline, "refresh never stored on B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(origin.hits("/feed"), 2);
}

/// RFC 9111 §4.4 and route `invalidate_tags`: a successful unsafe request
/// invalidates its target, its `Location`, and the route's tags, on every
/// instance; a failed one invalidates nothing.
#[tokio::test]
async fn successful_unsafe_requests_invalidate_everywhere() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let item = |id: u32| {
        move |req: &perfgate_test_support::Req| match req.method {
            Method::GET => Rsp::json(format!(r#"{{"id":{id},"n":{}}}"#, req.n)).max_age(60),
            Method::POST if id == 7 => Rsp::json("{}").header("location", "/events/9"),
            Method::DELETE => Rsp::status(204),
            _ => Rsp::status(500).body("boom"),
        }
    };
    let origin = Origin::new()
        .route(
            "/events",
            Rsp::json(events_json())
                .max_age(60)
                .header("surrogate-key", "events"),
        )
        .route("/events/42/bookings", Rsp::status(201).body("booked"))
        .route("/events/13/bookings", Rsp::status(500).body("boom"))
        .handle("/events/7", item(7))
        .handle("/events/8", item(8))
        .handle("/events/9", item(9))
        .run()
        .await;
    let prefix = unique_name("inv-auto");
    let bookings = || {
        route(
            "bookings",
            None,
            Some("/events/{id}/bookings"),
            RouteCachePolicy {
                invalidate_tags: vec!["events".into()],
                ..Default::default()
            },
        )
    };
    let (a, b) = Gateway::members(origin.addr(), &redis.url(), &prefix, |g| {
        g.route(bookings())
    })
    .await;
    for p in ["/events", "/events/7", "/events/8", "/events/9"] {
        share(&a, &b, p).await;
    }

    // Failed unsafe requests invalidate nothing.
    let r = a
        .request(Method::POST, "/events/13/bookings")
        .body("{}")
        .await;
    assert_eq!(r.status, 500);
    let r = a.request(Method::POST, "/events/8").body("{}").await;
    assert_eq!(r.status, 500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in ["/events", "/events/8"] {
        still_cached(&a, &b, p).await;
    }

    // A booking purges the `events` tag.
    let since = Instant::now();
    let r = a
        .request(Method::POST, "/events/42/bookings")
        .body(r#"{"seats":2}"#)
        .await;
    assert_eq!(r.status, 201);
    let (r, delay) = until_not_hit(&b, "/events", since, FANOUT_BOUND).await;
    eprintln!("auto-invalidation (route tags) visible on B {delay:?} after the POST was sent");
    assert!(
        cache_status(&r).starts_with("perfgate; fwd=miss"),
        "{}",
        cache_status(&r)
    );
    assert_ne!(cache_status(&a.get("/events").await), L1_HIT);
    still_cached(&a, &b, "/events/7").await;

    // POST /events/7 invalidates itself and its Location (/events/9).
    let since = Instant::now();
    let r = a.request(Method::POST, "/events/7").body("{}").await;
    assert_eq!(r.status, 200);
    gone_everywhere(&a, &b, "/events/7", since).await;
    gone_everywhere(&a, &b, "/events/9", since).await;
    still_cached(&a, &b, "/events/8").await;

    // DELETE through B invalidates on A.
    let since = Instant::now();
    let r = b.request(Method::DELETE, "/events/8").await;
    assert_eq!(r.status, 204);
    let (r, _) = until_not_hit(&a, "/events/8", since, FANOUT_BOUND).await;
    assert!(
        cache_status(&r).starts_with("perfgate; fwd=miss"),
        "{}",
        cache_status(&r)
    );
}

/// `Surrogate-Key`/`Cache-Tag` are meant for caches: not passed on unless
/// `cache.expose_tag_headers`.
#[tokio::test]
async fn tag_headers_are_not_passed_to_clients() {
    let origin = Origin::new()
        .route(
            "/events",
            Rsp::json(events_json())
                .max_age(60)
                .header("surrogate-key", "events e42")
                .header("cache-tag", "events"),
        )
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .spawn()
        .await;
    for expected in [STORED, L1_HIT] {
        let r = gw.get("/events").await;
        assert_eq!(cache_status(&r), expected);
        assert!(!r.has("surrogate-key"), "{:?}", r.headers);
        assert!(!r.has("cache-tag"), "{:?}", r.headers);
    }
    // The tags were still recorded.
    let d = gw.invalidate_ok(json!({"tags": ["e42"]})).await;
    assert_eq!(d["l1_removed"], 1, "{d}");

    let exposing = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.cache.expose_tag_headers = true)
        .spawn()
        .await;
    for expected in [STORED, L1_HIT] {
        let r = exposing.get("/events").await;
        assert_eq!(cache_status(&r), expected);
        assert_eq!(r.header("surrogate-key"), "events e42");
        assert_eq!(r.header("cache-tag"), "events");
    }
}

/// Without Redis, invalidation works on the local L1 and says so.
#[tokio::test]
async fn invalidation_without_redis_is_local_only() {
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .spawn()
        .await;
    gw.get("/events").await;
    assert_eq!(cache_status(&gw.get("/events").await), L1_HIT);
    let d = gw.invalidate_ok(json!({"urls": ["/events"]})).await;
    assert_eq!(d["l1_removed"], 1, "{d}");
    assert_eq!(d["l2_removed"], 0, "{d}");
    assert_eq!(d["fanout"], "local-only", "{d}");
    assert_eq!(cache_status(&gw.get("/events").await), STORED);
    assert_eq!(gw.l2_state().await, "disabled");
}

/// Bad bodies → 400 naming the field, and nothing half-applied.
#[tokio::test]
async fn bad_invalidation_bodies_name_the_field() {
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .spawn()
        .await;
    gw.get("/events").await;

    let cases: Vec<(&str, String, &str)> = vec![
        ("invalid JSON", "{\"urls\": [".into(), "body"),
        ("nothing to invalidate", "{}".into(), "body"),
        (
            "empty lists",
            json!({"urls": [], "tags": []}).to_string(),
            "body",
        ),
        (
            "url not a string",
            json!({"urls": [42]}).to_string(),
            "urls[0]",
        ),
        (
            "relative url",
            json!({"urls": ["events"]}).to_string(),
            "urls[0]",
        ),
        (
            "second url bad, first good",
            json!({"urls": ["/events", "ftp://x/y"]}).to_string(),
            "urls[1]",
        ),
        (
            "tags not a list",
            json!({"tags": "events"}).to_string(),
            "tags",
        ),
        (
            "prefix not a string",
            json!({"prefix": 5}).to_string(),
            "prefix",
        ),
    ];
    for (what, body, field) in cases {
        let r = gw
            .admin(Method::POST, "/admin/cache/invalidate")
            .header("content-type", "application/json")
            .body(body.clone())
            .await;
        assert_eq!(r.status, 400, "{what}: {body} → {}", r.text());
        let v = r.json();
        assert_eq!(v["success"], false, "{what}: {v}");
        assert!(v["error"]["code"].is_string(), "{what}: {v}");
        assert!(v["error"]["message"].is_string(), "{what}: {v}");
        assert_eq!(v["error"]["field"], field, "{what}: {v}");
    }
    assert_eq!(
        cache_status(&gw.get("/events").await),
        L1_HIT,
        "a rejected body removes nothing"
    );
    assert_eq!(origin.hits("/events"), 1);
}

/// `DELETE /api/v1/cache/{url_hash}` removes the key from every L1 and L2.
#[tokio::test]
async fn delete_by_url_hash() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .route("/other", Rsp::json(r#"{"other":1}"#).max_age(60))
        .run()
        .await;
    let (a, b) = pair(origin.addr(), &redis, "inv-hash").await;
    let path = "/events?b=2&a=1&utm_source=mail";
    share(&a, &b, path).await;
    share(&a, &b, "/other").await;

    let keys = perfgate_cache::key::KeyNormalizer::new(&CacheConfig::default().drop_query_params);
    let hash = perfgate_cache::key::url_hash(&keys.primary_key("http", SHARED_HOST, path));
    assert_eq!(hash.len(), 32);

    let since = Instant::now();
    let r = a
        .admin(Method::DELETE, &format!("/api/v1/cache/{hash}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["success"], true);
    // Same key, spelled differently (query order, dropped parameter).
    gone_everywhere(&a, &b, "/events?a=1&b=2", since).await;
    still_cached(&a, &b, "/other").await;

    let unknown = perfgate_cache::key::url_hash("GET http://nowhere.test/");
    let r = a
        .admin(Method::DELETE, &format!("/api/v1/cache/{unknown}"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["success"], false);

    for bad in [
        "xyz",
        &hash[..31],
        &hash.to_uppercase(),
        &format!("{hash}0"),
    ] {
        let r = a
            .admin(Method::DELETE, &format!("/api/v1/cache/{bad}"))
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        let v = r.json();
        assert_eq!(v["success"], false, "{v}");
    }
}

/// Every admin endpoint except `/health*` needs the token; a refused
/// request changes nothing.
#[tokio::test]
async fn cache_admin_endpoints_require_the_token() {
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .spawn()
        .await;
    gw.get("/events").await;
    let hash = "0123456789abcdef0123456789abcdef";
    let endpoints: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, "/admin/cache/stats".into(), None),
        (Method::GET, "/api/v1/cache/stats".into(), None),
        (
            Method::POST,
            "/admin/cache/invalidate".into(),
            Some(json!({"urls": ["/events"]})),
        ),
        (
            Method::POST,
            "/admin/cache/warmup".into(),
            Some(json!({"urls": ["/events"]})),
        ),
        (Method::GET, "/admin/cache/warmup/some-id".into(), None),
        (Method::DELETE, format!("/api/v1/cache/{hash}"), None),
        (Method::GET, "/metrics".into(), None),
    ];
    for (method, path, body) in endpoints {
        // No token, a wrong one, and the right one without the scheme.
        for auth in [None, Some("Bearer wrong"), Some(TOKEN)] {
            let mut r = gw.admin_request(method.clone(), &path);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            if let Some(b) = &body {
                r = r.json(b);
            }
            let r = r.await;
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}: {}", r.text());
            let v = r.json();
            assert_eq!(v["success"], false);
            assert_eq!(v["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(
        cache_status(&gw.get("/events").await),
        L1_HIT,
        "nothing purged"
    );
    assert_eq!(origin.hits("/events"), 1, "nothing warmed");

    for path in ["/health", "/health/dependencies"] {
        let r = gw.admin_request(Method::GET, path).await;
        assert_eq!(r.status, 200, "{path} is open: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            "application/health+json",
            "{path}"
        );
    }
}

/// An instance that was cut from Redis while an invalidation was sent must
/// not keep serving the entry once Redis is back (generation check or L1
/// flush on reconnect, the product's choice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_invalidation_during_an_outage_is_not_served() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let origin = Origin::new()
        .route("/events", Rsp::json(events_json()).max_age(60))
        .run()
        .await;
    let (a, b) = pair(origin.addr(), &redis, "inv-outage").await;
    share(&a, &b, "/events").await;

    redis.kill();
    let r = a.invalidate(json!({"urls": ["/events"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(cache_status(&a.get("/events").await), L1_HIT);
    tokio::task::block_in_place(|| redis.restart());
    let since = Instant::now();
    let (_, after) = until_not_hit(&b, "/events", since, Duration::from_secs(8)).await;
    eprintln!(
        "B stopped serving the entry invalidated during the outage {after:?} after Redis came back"
    );
}
