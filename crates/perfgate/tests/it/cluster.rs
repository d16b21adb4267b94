//! The L2 on a Redis Cluster (three masters): two instances share it,
//! tag and prefix purges reach every node and both L1s.

use std::time::{Duration, Instant};

use perfgate_test_support::{
    L1_HIT, L2_HIT, Origin, RedisCluster, Rsp, SHARED_HOST, STORED, TOKEN, cache_status,
    unique_name,
};
use serde_json::json;

use crate::events_json;
use crate::support::{Gateway, RunningGateway, until_not_hit};

const FANOUT_BOUND: Duration = Duration::from_secs(1);

fn member(
    origin: std::net::SocketAddr,
    cluster: &RedisCluster,
    prefix: &str,
) -> crate::support::GatewayBuilder {
    Gateway::builder()
        .upstream(origin)
        .redis_cluster(cluster.nodes(), prefix)
        .admin_token(TOKEN)
        .client_host(SHARED_HOST)
}

async fn share(a: &RunningGateway, b: &RunningGateway, path: &str) {
    let r = a.fetch_into_l2(path).await;
    assert_eq!(cache_status(&r), STORED, "{path} on A");
    assert_eq!(cache_status(&b.get(path).await), L2_HIT, "{path} on B");
    assert_eq!(cache_status(&b.get(path).await), L1_HIT, "{path} on B");
}

async fn gone(a: &RunningGateway, b: &RunningGateway, path: &str, since: Instant) {
    let (r, _) = until_not_hit(b, path, since, FANOUT_BOUND).await;
    assert!(
        cache_status(&r).starts_with("perfgate; fwd=miss"),
        "{path} on B: {}",
        cache_status(&r)
    );
    assert_ne!(cache_status(&a.get(path).await), L1_HIT, "{path} on A");
}

#[tokio::test]
async fn two_instances_share_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let origin = Origin::new()
        .handle("/events", |req| {
            let q = req.uri.query().unwrap_or("");
            Rsp::json(format!(r#"{{"q":"{q}"}}"#)).max_age(60).header(
                "surrogate-key",
                if q.contains("hot") {
                    "events hot"
                } else {
                    "events"
                },
            )
        })
        .route("/venues", Rsp::json(r#"{"venues":[]}"#).max_age(60))
        .route("/big", Rsp::json(events_json()).max_age(60))
        .run()
        .await;
    let prefix = unique_name("cluster");
    let a = member(origin.addr(), &cluster, &prefix)
        .spawn_connected()
        .await;
    let b = member(origin.addr(), &cluster, &prefix)
        .spawn_connected()
        .await;

    // Enough keys to land on every master.
    let paths: Vec<String> = (0..12).map(|i| format!("/events?id={i}")).collect();
    let hot: Vec<String> = (0..3).map(|i| format!("/events?id=hot{i}")).collect();
    for p in paths.iter().chain(&hot) {
        share(&a, &b, p).await;
    }
    share(&a, &b, "/venues").await;
    share(&a, &b, "/big").await;
    assert_eq!(b.l2_state().await, "up");
    assert_eq!(origin.hits("/events"), 15, "one upstream request per key");

    // Tag purge.
    let since = Instant::now();
    let d = a.invalidate_ok(json!({"tags": ["hot"]})).await;
    assert_eq!(d["l1_removed"], 3, "{d}");
    assert!(d["l2_removed"].as_u64() >= Some(3), "{d}");
    for p in &hot {
        gone(&a, &b, p, since).await;
    }
    for p in &paths {
        assert_eq!(cache_status(&b.get(p).await), L1_HIT, "{p} untouched");
    }

    // Prefix purge.
    let since = Instant::now();
    let d = a.invalidate_ok(json!({"prefix": "/events"})).await;
    assert!(d["l1_removed"].as_u64() >= Some(12), "{d}");
    for p in &paths {
        gone(&a, &b, p, since).await;
    }
    for p in ["/venues", "/big"] {
        assert_eq!(cache_status(&a.get(p).await), L1_HIT, "{p} on A");
        assert_eq!(cache_status(&b.get(p).await), L1_HIT, "{p} on B");
    }
}
