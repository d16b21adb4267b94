//! The distributed GCRA limit (`Redis::gcra`) against real `redis-server`
//! processes (skipped, with a message, when Redis is not installed outside
//! CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use perfgate_config::RedisConfig;
use perfgate_redis::{Error as L2Error, RateReply, Redis as L2, cmd};
use perfgate_test_support::{PATIENCE, RedisCluster, RedisServer};

const TIMEOUT: Duration = Duration::from_millis(100);
const PREFIX: &str = "rl-test";

fn config(url: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_string(),
        timeout: perfgate_config::Duration(TIMEOUT),
        retry_after: perfgate_config::Duration::from_millis(300),
        key_prefix: PREFIX.to_string(),
        ..RedisConfig::default()
    }
}

/// Waits until the background connection is up and answers.
async fn connected(l2: &L2) {
    let deadline = Instant::now() + PATIENCE;
    while l2.health().state != "up" || l2.command::<String>(&cmd("PING"), TIMEOUT).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "L2 never connected: {:?}",
            l2.health()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` requests for `key`, in order.
async fn burst(
    l2: &L2,
    key: &str,
    n: usize,
    rate: u32,
    period: Duration,
    b: u32,
) -> Vec<RateReply> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(l2.gcra(key, rate, period, b).await.unwrap());
    }
    out
}

#[tokio::test]
async fn burst_then_refused_then_refilled() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let l2 = L2::start(&config(&server.url())).unwrap();
    connected(&l2).await;
    // T = 200 ms, τ = 600 ms.
    let (rate, period, b) = (5, Duration::from_secs(1), 3);
    let t0 = Instant::now();
    let replies = burst(&l2, "client-a", 4, rate, period, b).await;
    let elapsed = t0.elapsed();
    let remaining: Vec<u64> = replies.iter().map(|r| r.remaining).collect();
    assert_eq!(remaining, [2, 1, 0, 0]);
    assert!(
        replies[..3]
            .iter()
            .all(|r| r.allowed && r.retry_after.is_zero())
    );
    let refused = replies[3];
    assert!(!refused.allowed);
    // One emission interval after the first call (on the server's clock),
    // less at most the time the calls took; likewise τ for the reset.
    let t = Duration::from_millis(200);
    assert!(
        refused.retry_after <= t && refused.retry_after + elapsed >= t,
        "{refused:?} after {elapsed:?}"
    );
    let tau = Duration::from_millis(600);
    assert!(
        refused.reset <= tau && refused.reset + elapsed >= tau,
        "{refused:?} after {elapsed:?}"
    );

    // The TAT lives under the prefixed key, expiring after τ + T at most.
    let key = format!("{PREFIX}:rl:client-a");
    let pttl: i64 = server.cli(&["PTTL", &key]).parse().unwrap();
    assert!(pttl > 0 && pttl <= 800, "{pttl}");

    // After retry_after, exactly one more.
    tokio::time::sleep(refused.retry_after + Duration::from_millis(10)).await;
    let r = l2.gcra("client-a", rate, period, b).await.unwrap();
    assert!(r.allowed, "{r:?}");
    let r = l2.gcra("client-a", rate, period, b).await.unwrap();
    assert!(!r.allowed, "{r:?}");

    // Once the key has expired, a full burst again.
    tokio::time::sleep(Duration::from_millis(850)).await;
    assert_eq!(server.cli(&["EXISTS", &key]), "0");
    let replies = burst(&l2, "client-a", 4, rate, period, b).await;
    assert_eq!(replies.iter().filter(|r| r.allowed).count(), 3);
}

#[tokio::test]
async fn two_instances_share_one_budget() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = L2::start(&config(&server.url())).unwrap();
    let b = L2::start(&config(&server.url())).unwrap();
    connected(&a).await;
    connected(&b).await;
    // T = 6 s: nothing refills during the test.
    let (rate, period, burst) = (10, Duration::from_secs(60), 10);
    let mut allowed = 0;
    for i in 0..30 {
        let l2 = if i % 2 == 0 { &a } else { &b };
        if l2
            .gcra("shared", rate, period, burst)
            .await
            .unwrap()
            .allowed
        {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
    for l2 in [&a, &b] {
        let r = l2.gcra("shared", rate, period, burst).await.unwrap();
        assert!(!r.allowed);
        assert!(r.retry_after > Duration::from_secs(5), "{r:?}");
    }
}

#[tokio::test]
async fn keys_are_independent() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let l2 = L2::start(&config(&server.url())).unwrap();
    connected(&l2).await;
    let (rate, period, b) = (1, Duration::from_secs(60), 2);
    for key in ["a", "b", "{a}", "a:b"] {
        let replies = burst(&l2, key, 4, rate, period, b).await;
        let allowed: Vec<bool> = replies.iter().map(|r| r.allowed).collect();
        assert_eq!(allowed, [true, true, false, false], "{key}");
    }
    // Another prefix (another deployment on the same Redis) is separate too.
    let mut other = config(&server.url());
    other.key_prefix = "other".into();
    let other = L2::start(&other).unwrap();
    connected(&other).await;
    assert!(other.gcra("a", rate, period, b).await.unwrap().allowed);
}

#[tokio::test]
async fn degenerate_quotas_and_foreign_values() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let l2 = L2::start(&config(&server.url())).unwrap();
    connected(&l2).await;
    let s = Duration::from_secs(1);
    // burst 0: always refused; rate 0: one, then a (very) long wait.
    assert!(!l2.gcra("z", 10, s, 0).await.unwrap().allowed);
    let replies = burst(&l2, "r0", 2, 0, s, 1).await;
    assert!(replies[0].allowed && !replies[1].allowed);
    assert!(replies[1].retry_after > Duration::from_secs(365 * 24 * 3600));
    // A zero period: no limit.
    let r = l2.gcra("p0", 10, Duration::ZERO, 3).await.unwrap();
    assert!(r.allowed && r.remaining == 3);

    // A value we did not write counts as never seen, and is overwritten.
    let key = format!("{PREFIX}:rl:junk");
    server.cli(&["SET", &key, "not a number"]);
    assert_eq!(l2.gcra("junk", 1, s, 1).await.unwrap().remaining, 0);
    assert!(!l2.gcra("junk", 1, s, 1).await.unwrap().allowed);
    // A key of another type is an error for that call only.
    let key = format!("{PREFIX}:rl:hash");
    server.cli(&["HSET", &key, "f", "v"]);
    assert!(matches!(
        l2.gcra("hash", 1, s, 1).await,
        Err(L2Error::Unavailable(_))
    ));
    assert_eq!(l2.health().state, "up");
    assert!(l2.gcra("fine", 1, s, 1).await.unwrap().allowed);
}

#[tokio::test]
async fn unreachable_redis_fails_fast() {
    // Nothing listens there.
    let l2 = L2::start(&config("redis://127.0.0.1:1")).unwrap();
    let t = Instant::now();
    for _ in 0..10 {
        assert!(l2.gcra("k", 1, Duration::from_secs(1), 1).await.is_err());
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    // Connected, then Redis dies: the deadline, then the breaker.
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let l2 = L2::start(&config(&server.url())).unwrap();
    connected(&l2).await;
    assert!(l2.gcra("k", 1, Duration::from_secs(1), 1).await.is_ok());
    server.kill();
    let t = Instant::now();
    for _ in 0..10 {
        assert!(l2.gcra("k", 1, Duration::from_secs(1), 1).await.is_err());
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(
        l2.gcra("k", 1, Duration::from_secs(1), 1).await,
        Err(L2Error::Skipped)
    ));
}

#[tokio::test]
async fn cluster_limits_keys_on_every_master() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let mut cfg = config("");
    cfg.cluster = cluster.nodes();
    let l2 = L2::start(&cfg).unwrap();
    connected(&l2).await;
    assert_eq!(l2.health().mode, "cluster");
    // Enough keys to land on all three masters, some with hash tags.
    for i in 0..20 {
        let key = if i % 4 == 0 {
            format!("{{tag}}client-{i}")
        } else {
            format!("client-{i}")
        };
        let replies = burst(&l2, &key, 3, 1, Duration::from_secs(60), 2).await;
        let allowed: Vec<bool> = replies.iter().map(|r| r.allowed).collect();
        assert_eq!(allowed, [true, true, false], "{key}");
    }
}
