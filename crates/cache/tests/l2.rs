//! The Redis L2 against real `redis-server` processes (skipped, with a
//! message, when Redis is not installed outside CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use perfgate_cache::compress::{Compressor, Encoding};
use perfgate_cache::entry::{Entry, EntryParts};
use perfgate_cache::policy::Freshness;
use perfgate_cache::redis::{InvalidationMsg, L2, L2Error, L2Event};
use perfgate_cache::vary::VaryKey;
use perfgate_config::{CompressionConfig, RedisConfig};
use perfgate_test_support::{PATIENCE, RedisCluster, RedisServer};

const TIMEOUT: Duration = Duration::from_millis(100);

fn config(url: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_string(),
        timeout: perfgate_config::Duration(TIMEOUT),
        retry_after: perfgate_config::Duration::from_millis(300),
        key_prefix: format!("t{}", std::process::id()),
        ..RedisConfig::default()
    }
}

fn entry(body: &str, lang: Option<&str>, tags: &[&str], lifetime: Duration) -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    headers.insert("etag", HeaderValue::from_static("\"v1\""));
    headers.append("x-multi", HeaderValue::from_static("a"));
    headers.append("x-multi", HeaderValue::from_static("b"));
    let vary = VaryKey::from_entries(vec![(
        HeaderName::from_static("accept-language"),
        lang.map(|l| HeaderValue::from_str(l).unwrap()),
    )]);
    Entry::new(
        EntryParts {
            status: StatusCode::OK,
            headers,
            body: Bytes::from(body.to_string()),
            upstream_encoded: false,
            compressible: true,
            vary,
            freshness: Freshness {
                lifetime,
                initial_age: Duration::from_secs(3),
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(7),
                must_revalidate: false,
                no_cache: false,
                heuristic: false,
            },
            auth_reusable: true,
            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
        },
        Instant::now(),
    )
}

/// A request with this `Accept-Language` (the test entries vary on it).
fn lang(l: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(l) = l {
        h.insert("accept-language", HeaderValue::from_str(l).unwrap());
    }
    h
}

/// Waits until the background connection is up.
async fn connected(l2: &L2) {
    let deadline = Instant::now() + PATIENCE;
    while l2.health().state != "up" || l2.get("probe", &lang(None)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "L2 never connected: {:?}",
            l2.health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries `f` until it returns Some, within PATIENCE.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `msg` until the subscription hears something (subscribing is
/// asynchronous) and returns the first event.
async fn deliver(
    what: &str,
    l2: &L2,
    rx: &mut tokio::sync::mpsc::Receiver<L2Event>,
    msg: &InvalidationMsg,
) -> L2Event {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let _ = l2.publish(msg).await;
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            return ev;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

const KEY: &str = "GET http://example.com/a?x=1";

#[tokio::test]
async fn start_rejects_invalid_urls_and_does_not_block() {
    assert!(L2::start(&config("not a url")).is_err());
    let mut cluster = config("");
    cluster.cluster = vec!["127.0.0.1:notaport".into()];
    assert!(L2::start(&cluster).is_err());
    // Nothing listens there: start returns at once and calls fail fast.
    let l2 = L2::start(&config("redis://127.0.0.1:1")).unwrap();
    assert_eq!(l2.health().state, "connecting");
    let t = Instant::now();
    assert!(matches!(
        l2.get(KEY, &lang(None)).await,
        Err(L2Error::Unavailable(_))
    ));
    assert!(t.elapsed() < TIMEOUT);
}

#[tokio::test]
async fn put_get_round_trip_with_variants_and_tags() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let l2 = L2::start(&config(&server.url())).unwrap();
    connected(&l2).await;
    assert_eq!(l2.health().mode, "standalone");

    let en = entry(
        &"hello world ".repeat(50),
        Some("en"),
        &["news", "front"],
        Duration::from_secs(60),
    );
    let compressor = Compressor::new(&CompressionConfig::default());
    let (enc, gz, _) = en.body_for(Encoding::Gzip, &compressor).await;
    assert_eq!(enc, Encoding::Gzip);
    let de = entry("hallo", Some("de"), &["news"], Duration::from_secs(60));
    l2.put(KEY, &en, Duration::from_secs(60)).await.unwrap();
    l2.put(KEY, &de, Duration::from_secs(60)).await.unwrap();

    let g_de = l2.get(KEY, &lang(Some("de"))).await.unwrap().unwrap();
    let g_en = l2.get(KEY, &lang(Some("en"))).await.unwrap().unwrap();
    assert!(l2.get(KEY, &lang(Some("fr"))).await.unwrap().is_none());
    assert_eq!(g_de.body, de.body);
    assert_eq!(g_en.body, en.body);
    assert_eq!(g_en.vary, en.vary);
    assert_eq!(g_en.headers, en.headers);
    assert_eq!(g_en.status, StatusCode::OK);
    assert_eq!(g_en.etag, en.etag);
    assert!(g_en.auth_reusable && g_en.compressible);
    assert_eq!(g_en.tags, en.tags);
    assert_eq!(g_en.variants(), vec![(Encoding::Gzip, gz)]);
    assert_eq!(g_en.freshness.lifetime, Duration::from_secs(60));
    assert_eq!(
        g_en.freshness.stale_while_revalidate,
        Duration::from_secs(5)
    );
    // The age it had (3 s) plus time in Redis, not reset to zero.
    let age = g_en.age(Instant::now());
    assert!(
        age >= Duration::from_secs(3) && age < Duration::from_secs(5),
        "{age:?}"
    );

    // Rewriting one variant replaces it, the other stays.
    let de2 = entry("hallo 2", Some("de"), &[], Duration::from_secs(60));
    l2.put(KEY, &de2, Duration::from_secs(60)).await.unwrap();
    let got = l2.get(KEY, &lang(Some("de"))).await.unwrap().unwrap();
    assert_eq!(got.body, de2.body);
    let got = l2.get(KEY, &lang(Some("en"))).await.unwrap().unwrap();
    assert_eq!(got.body, en.body);

    assert!(
        l2.get("GET http://example.com/none", &lang(Some("en")))
            .await
            .unwrap()
            .is_none()
    );

    // A foreign value under our key is skipped, not an error.
    let ekey = format!("{}:e:{KEY}", config("").key_prefix);
    server.cli(&["HSET", &ekey, "junk", "\u{2}whatever"]);
    assert!(l2.get(KEY, &lang(Some("en"))).await.unwrap().is_some());
    assert_eq!(l2.health().state, "up");
}

#[tokio::test]
async fn expiry_is_honoured_and_ttls_only_grow() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let cfg = config(&server.url());
    let l2 = L2::start(&cfg).unwrap();
    connected(&l2).await;
    let short = entry("short", Some("en"), &["t"], Duration::from_secs(1));
    l2.put(KEY, &short, Duration::from_millis(600))
        .await
        .unwrap();
    assert!(l2.get(KEY, &lang(Some("en"))).await.unwrap().is_some());
    // A second, longer-lived variant extends the hash's TTL; the short one
    // is still dropped by readers when its own retention ends.
    let long = entry("long", Some("de"), &["t"], Duration::from_secs(60));
    l2.put(KEY, &long, Duration::from_secs(60)).await.unwrap();
    let tag_ttl: i64 = server
        .cli(&["PTTL", &format!("{}:t:t", cfg.key_prefix)])
        .parse()
        .unwrap();
    assert!(tag_ttl > 30_000, "{tag_ttl}");
    l2.put(KEY, &short, Duration::from_millis(600))
        .await
        .unwrap();
    let ttl: i64 = server
        .cli(&["PTTL", &format!("{}:e:{KEY}", cfg.key_prefix)])
        .parse()
        .unwrap();
    assert!(ttl > 30_000, "TTL shortened to {ttl}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(l2.get(KEY, &lang(Some("en"))).await.unwrap().is_none());
    let got = l2.get(KEY, &lang(Some("de"))).await.unwrap().unwrap();
    assert_eq!(got.body, long.body);

    // Alone, the key itself expires in Redis.
    let other = "GET http://example.com/other";
    l2.put(other, &short, Duration::from_millis(300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(l2.get(other, &lang(Some("en"))).await.unwrap().is_none());
    assert_eq!(
        server.cli(&["EXISTS", &format!("{}:e:{other}", cfg.key_prefix)]),
        "0"
    );
}

#[tokio::test]
async fn invalidation_helpers() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let l2 = L2::start(&config(&server.url())).unwrap();
    connected(&l2).await;
    let keys = [
        "GET http://a.example/news/1",
        "GET http://a.example/news/2",
        "GET http://a.example/sport/1",
        "GET http://b.example/news/1",
        "GET http://a.example/news/*[x]",
    ];
    let ttl = Duration::from_secs(60);
    for (i, k) in keys.iter().enumerate() {
        let tags: &[&str] = if i % 2 == 0 {
            &["even", "all"]
        } else {
            &["all"]
        };
        let e = entry(k, None, tags, ttl);
        l2.put(k, &e, ttl).await.unwrap();
    }

    let hash = perfgate_cache::key::url_hash(keys[1]);
    assert_eq!(
        l2.key_for_hash(&hash).await.unwrap().as_deref(),
        Some(keys[1])
    );
    assert_eq!(l2.key_for_hash("0000").await.unwrap(), None);

    let news = l2
        .keys_with_prefix("GET http://a.example/news/")
        .await
        .unwrap();
    // Sorted: `*` sorts before digits.
    assert_eq!(news, vec![keys[4], keys[0], keys[1]]);
    // Glob characters in the prefix match literally.
    let literal = l2
        .keys_with_prefix("GET http://a.example/news/*")
        .await
        .unwrap();
    assert_eq!(literal, vec![keys[4]]);

    let any_host = l2.keys_matching(|k| k.contains("/news/1")).await.unwrap();
    assert_eq!(any_host, vec![keys[0], keys[3]]);

    // Soft purge: still there, now stale, TTL kept.
    assert_eq!(l2.soften(&[keys[2].to_string()]).await.unwrap(), 1);
    let got = l2.get(keys[2], &lang(None)).await.unwrap().unwrap();
    assert!(!got.freshness.is_fresh(got.age(Instant::now())));
    assert_eq!(got.freshness.stale_while_revalidate, Duration::from_secs(5));
    assert_eq!(got.body, keys[2].as_bytes());

    let mut even = l2
        .take_tagged(&["even".into(), "nope".into()])
        .await
        .unwrap();
    even.sort();
    let mut want = vec![keys[0], keys[2], keys[4]];
    want.sort();
    assert_eq!(even, want);
    // The tag set is gone.
    assert!(l2.take_tagged(&["even".into()]).await.unwrap().is_empty());

    let removed = l2
        .remove(&[
            keys[0].to_string(),
            keys[1].to_string(),
            "GET http://none/".into(),
        ])
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert!(l2.get(keys[0], &lang(None)).await.unwrap().is_none());
    assert!(l2.get(keys[3], &lang(None)).await.unwrap().is_some());
}

#[tokio::test]
async fn publish_reaches_subscribers_and_resync_follows_an_outage() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let l2 = L2::start(&config(&server.url())).unwrap();
    connected(&l2).await;
    let mut rx = l2.subscribe();
    let msg = InvalidationMsg {
        from: "a".into(),
        keys: vec![KEY.into()],
        tags: vec!["news".into()],
        soft: true,
        ..Default::default()
    };
    // The subscription is asynchronous: publish until it is heard.
    let got = deliver("invalidation delivered", &l2, &mut rx, &msg).await;
    assert_eq!(got, L2Event::Invalidate(msg.clone()));
    while let Ok(ev) = rx.try_recv() {
        assert_eq!(ev, L2Event::Invalidate(msg.clone()));
    }

    // Malformed messages are ignored.
    let channel = format!("{}:invalidate", config("").key_prefix);
    server.cli(&["PUBLISH", &channel, "{not json"]);

    server.kill();
    server.restart();
    let ev = tokio::time::timeout(PATIENCE, rx.recv()).await.unwrap();
    assert_eq!(ev, Some(L2Event::Resynced));

    // And messages flow again after the resubscription.
    let got = deliver("delivery after resync", &l2, &mut rx, &msg).await;
    assert_eq!(got, L2Event::Invalidate(msg));
}

#[tokio::test]
async fn outage_fails_fast_and_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let l2 = L2::start(&config(&server.url())).unwrap();
    connected(&l2).await;
    let e = entry("x", None, &[], Duration::from_secs(60));
    l2.put(KEY, &e, Duration::from_secs(60)).await.unwrap();

    server.kill();
    for _ in 0..20 {
        let t = Instant::now();
        assert!(l2.get(KEY, &lang(None)).await.is_err());
        assert!(t.elapsed() < 2 * TIMEOUT, "get took {:?}", t.elapsed());
        let t = Instant::now();
        assert!(l2.put(KEY, &e, Duration::from_secs(60)).await.is_err());
        assert!(t.elapsed() < 2 * TIMEOUT, "put took {:?}", t.elapsed());
    }
    let h = l2.health();
    assert_eq!(h.state, "degraded");
    assert!(h.last_error.is_some());
    // While the breaker is open, calls are skipped outright.
    assert!(matches!(
        l2.get(KEY, &lang(None)).await,
        Err(L2Error::Skipped)
    ));

    server.restart();
    eventually("L2 back up", || {
        let l2 = l2.clone();
        async move { l2.get(KEY, &lang(None)).await.ok() }
    })
    .await;
    assert_eq!(l2.health().state, "up");
    // The restarted server is empty.
    assert!(l2.get(KEY, &lang(None)).await.unwrap().is_none());
    l2.put(KEY, &e, Duration::from_secs(60)).await.unwrap();
    assert!(l2.get(KEY, &lang(None)).await.unwrap().is_some());
}

#[tokio::test]
async fn cluster_round_trip() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let mut cfg = config("");
    cfg.cluster = cluster.nodes();
    let l2 = L2::start(&cfg).unwrap();
    connected(&l2).await;
    assert_eq!(l2.health().mode, "cluster");
    let ttl = Duration::from_secs(60);
    // Enough keys to land on all three masters; some with hash tags.
    let keys: Vec<String> = (0..30)
        .map(|i| {
            format!(
                "GET http://c.example/p/{i}{}",
                if i % 5 == 0 { "{x}" } else { "" }
            )
        })
        .collect();
    for (i, k) in keys.iter().enumerate() {
        let tags: &[&str] = if i % 3 == 0 { &["three"] } else { &[] };
        l2.put(k, &entry(k, Some("en"), tags, ttl), ttl)
            .await
            .unwrap();
    }
    for k in &keys {
        let got = l2.get(k, &lang(Some("en"))).await.unwrap().unwrap();
        assert_eq!(got.body, k.as_bytes());
    }
    let mut all = l2
        .keys_with_prefix("GET http://c.example/p/")
        .await
        .unwrap();
    all.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(all, want);

    let tagged = l2.take_tagged(&["three".into()]).await.unwrap();
    assert_eq!(tagged.len(), 10);
    assert_eq!(l2.remove(&tagged).await.unwrap(), 10);
    assert_eq!(
        l2.keys_with_prefix("GET http://c.example/p/")
            .await
            .unwrap()
            .len(),
        20
    );
    let h = perfgate_cache::key::url_hash(&keys[1]);
    assert_eq!(
        l2.key_for_hash(&h).await.unwrap().as_deref(),
        Some(keys[1].as_str())
    );

    let mut rx = l2.subscribe();
    let msg = InvalidationMsg {
        from: "c".into(),
        flush: true,
        ..Default::default()
    };
    let got = deliver("cluster invalidation delivered", &l2, &mut rx, &msg).await;
    assert_eq!(got, L2Event::Invalidate(msg));
}

/// Issue #11 item 14: at most `redis.max_variants` variants per key, the
/// least recently written dropped first.
#[tokio::test]
async fn variants_per_key_are_capped_least_recently_written_first() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let cfg = RedisConfig {
        max_variants: 3,
        ..config(&server.url())
    };
    let l2 = L2::start(&cfg).unwrap();
    connected(&l2).await;
    let ttl = Duration::from_secs(60);
    let put = |l: &'static str| {
        let l2 = l2.clone();
        async move {
            let e = entry(&format!("body {l}"), Some(l), &[], ttl);
            l2.put(KEY, &e, ttl).await.unwrap();
        }
    };
    for l in ["l0", "l1", "l2", "l3", "l4"] {
        put(l).await;
    }
    let has = |l: &'static str| {
        let l2 = l2.clone();
        async move { l2.get(KEY, &lang(Some(l))).await.unwrap().is_some() }
    };
    assert!(!has("l0").await && !has("l1").await);
    assert!(has("l2").await && has("l3").await && has("l4").await);
    // Rewriting l2 makes it the most recent: l3 goes next.
    put("l2").await;
    put("l5").await;
    assert!(has("l2").await && has("l4").await && has("l5").await);
    assert!(!has("l3").await);
    // Three variants and the index: the evicted bodies are gone from Redis.
    let ekey = format!("{}:e:{KEY}", cfg.key_prefix);
    assert_eq!(server.cli(&["HLEN", &ekey]), "4");
}

/// Issue #11 item 14: a miss reads the index and the one variant it needs
/// (HMGET, then HGET when the resource varies), never every body (HGETALL).
#[tokio::test]
async fn a_lookup_reads_only_the_variant_it_needs() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let l2 = L2::start(&config(&server.url())).unwrap();
    connected(&l2).await;
    let ttl = Duration::from_secs(60);
    for i in 0..20 {
        let l = format!("l{i}");
        let e = entry(&"x".repeat(10_000), Some(&l), &[], ttl);
        l2.put(KEY, &e, ttl).await.unwrap();
    }
    server.cli(&["CONFIG", "RESETSTAT"]);
    let got = l2.get(KEY, &lang(Some("l7"))).await.unwrap().unwrap();
    assert_eq!(got.vary, entry("", Some("l7"), &[], ttl).vary);
    assert!(l2.get(KEY, &lang(Some("nope"))).await.unwrap().is_none());
    let stats = server.cli(&["INFO", "commandstats"]);
    assert!(!stats.contains("cmdstat_hgetall"), "{stats}");
    assert!(stats.contains("cmdstat_hmget:calls=2"), "{stats}");
    assert!(stats.contains("cmdstat_hget:calls=1"), "{stats}");
}
