//! Configuration reload: from the file (`POST /admin/config/reload`) and
//! from code (`Running::apply`). New requests see the new routes and pools,
//! requests in flight finish on the old ones, the cache is kept, and an
//! invalid configuration is refused with every problem while the running
//! one stays.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Method;
use perfgate_config::{BreakerConfig, Config, Duration as CfgDuration, HealthConfig, RouteConfig};
use perfgate_test_support::{
    Gate, Origin, PATIENCE, Rsp, TempDir, eventually, pool_of, pool_route,
};

use crate::support::{Gateway, Instance, Listeners};

const TOKEN: &str = "reload-token";

/// The file of these tests: the listeners, the default upstream, and two
/// never-cached routes to it; `/cached` goes to the default route (cached).
fn config_toml(l: (SocketAddr, SocketAddr), upstream: &str) -> String {
    let (proxy, admin) = l;
    format!(
        r#"
[server]
listen = "{proxy}"

[admin]
listen = "{admin}"

[upstream]
url = "{upstream}"

[[routes]]
name = "data"
path = "/data"
[routes.cache]
bypass = true

[[routes]]
name = "slow"
path = "/slow"
[routes.cache]
bypass = true
"#
    )
}

#[tokio::test]
async fn reload_from_file_switches_upstream_and_keeps_cache_and_in_flight() {
    let gate = Gate::new();
    let old = Origin::new()
        .route("/data", Rsp::text("old"))
        .route("/slow", Rsp::text("old slow").gated(&gate))
        .route("/cached", Rsp::text("cached by old").max_age(60))
        .run()
        .await;
    let new = Origin::new()
        .route("/data", Rsp::text("new"))
        .route("/slow", Rsp::text("new slow"))
        .route("/cached", Rsp::text("cached by new").max_age(60))
        .run()
        .await;
    let dir = TempDir::new();
    let l = Listeners::bind().await;
    let addrs = (l.proxy_addr(), l.admin_addr());
    let file = |upstream: &str| config_toml(addrs, upstream);
    let path = dir.write("perfgate.toml", file(&old.url()));
    let gw = Instance::from_file(&path, Some(TOKEN), l).await;

    assert_eq!(gw.get("/data").await.text(), "old");
    let r = gw.get("/cached").await;
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    // A request in flight on the old configuration.
    let in_flight = tokio::spawn(gw.new_client().get("/slow").send());
    eventually("the slow request at the old origin", PATIENCE, || {
        old.hits("/slow") == 1
    })
    .await;

    std::fs::write(&path, file(&new.url())).unwrap();
    let r = gw.admin_request(Method::POST, "/admin/config/reload").await;
    assert_eq!(r.status, 401, "reloading needs the token: {}", r.text());
    let r = gw.admin(Method::POST, "/admin/config/reload").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["data"]["generation"], 1, "{v}");
    assert_eq!(v["data"]["restart_required"], serde_json::json!([]), "{v}");

    // New requests: the new upstream, on both the route and the default.
    for _ in 0..3 {
        assert_eq!(gw.get("/data").await.text(), "new");
    }
    assert_eq!(old.hits("/data"), 1);
    assert_eq!(new.hits("/data"), 3);
    // The cache was kept.
    let r = gw.get("/cached").await;
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    assert_eq!(r.text(), "cached by old");
    assert_eq!(new.hits("/cached"), 0);
    // The request in flight finishes on the old upstream.
    gate.open();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "old slow");
    assert_eq!(gw.get("/slow").await.text(), "new slow");
    assert_eq!(
        gw.metric("perfgate_config_reloads_total", &[("result", "ok")])
            .await,
        Some(1.0)
    );

    // A broken file: refused with every problem; the running one stays.
    let broken = format!(
        "{}\n[cache]\nmax_bytes = \"lots\"\nno_such_setting = true\n",
        file("http://127.0.0.1:1")
    );
    std::fs::write(&path, broken).unwrap();
    let r = gw.admin(Method::POST, "/admin/config/reload").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], "invalid_config", "{v}");
    let problems: Vec<String> = v["error"]["details"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problem list: {v}"))
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        problems.iter().any(|p| p.contains("max_bytes")),
        "the bad value is reported: {problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("no_such_setting")),
        "the unknown key is reported: {problems:#?}"
    );
    for _ in 0..3 {
        let r = gw.get("/data").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "new"));
    }
    assert_eq!(
        gw.get("/cached").await.header("cache-status"),
        "perfgate; hit"
    );

    // Fixed again: the next reload applies.
    std::fs::write(&path, file(&old.url())).unwrap();
    let r = gw.admin(Method::POST, "/admin/config/reload").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["generation"], 2);
    assert_eq!(gw.get("/data").await.text(), "old");
    gw.shutdown().await;
}

/// A rejected reload (whatever made it invalid) is counted as rejected.
#[tokio::test]
async fn a_rejected_file_counts_as_rejected_reload() {
    let origin = Origin::new().route("/data", Rsp::text("ok")).run().await;
    let dir = TempDir::new();
    let l = Listeners::bind().await;
    let toml = config_toml((l.proxy_addr(), l.admin_addr()), &origin.url());
    let path = dir.write("perfgate.toml", toml);
    let gw = Instance::from_file(&path, Some(TOKEN), l).await;
    std::fs::write(&path, "[server]\nno_such_setting = 1\n").unwrap();
    let r = gw.admin(Method::POST, "/admin/config/reload").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        gw.metric("perfgate_config_reloads_total", &[("result", "rejected")])
            .await,
        Some(1.0),
        "perfgate_config_reloads_total{{result=\"rejected\"}}"
    );
}

/// A gateway started without a configuration source cannot reload.
#[tokio::test]
async fn reload_without_a_source_is_409() {
    let origin = Origin::new().route("/data", Rsp::text("ok")).run().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token(TOKEN)
        .spawn()
        .await;
    let r = gw.admin(Method::POST, "/admin/config/reload").await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "reload_unavailable");
    assert_eq!(gw.get("/data").await.status, 200);
}

/// `Running::apply` with new pool weights, under continuous traffic: no
/// request fails, and the new weights take effect.
#[tokio::test]
async fn apply_new_pool_weights_keeps_serving() {
    let a = Origin::new().route("/w", Rsp::text("a")).run().await;
    let b = Origin::new().route("/w", Rsp::text("b")).run().await;
    let pool = pool_of("api", &[(&a, 1), (&b, 1)]);
    let gw = Gateway::builder()
        .config(move |c| c.pools.push(pool))
        .route(pool_route("/w", "api"))
        .spawn_instance()
        .await;
    for _ in 0..20 {
        assert_eq!(gw.get("/w").await.status, 200);
    }
    assert_eq!((a.hits("/w"), b.hits("/w")), (10, 10));

    // Traffic from four clients while the weights change back and forth.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let client = gw.new_client();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = client.get("/w").await;
                assert_eq!(r.status, 200, "during reloads: {}", r.text());
                n += 1;
            }
            n
        }));
    }
    let weighted = |wa: u32, wb: u32| {
        let mut c: Config = gw.config().clone();
        c.pools[0].servers[0].weight = wa;
        c.pools[0].servers[1].weight = wb;
        c
    };
    for i in 0..10u32 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let report = gw
            .running()
            .apply(weighted(1 + i % 3, 3))
            .unwrap_or_else(|e| panic!("apply {i}: {e:?}"));
        assert!(report.restart_required.is_empty(), "{report:?}");
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!(total > 0);

    // Now 1:3: exact over whole cycles of four.
    gw.running().apply(weighted(1, 3)).unwrap();
    let (a0, b0) = (a.hits("/w"), b.hits("/w"));
    for _ in 0..40 {
        assert_eq!(gw.get("/w").await.status, 200);
    }
    assert_eq!((a.hits("/w") - a0, b.hits("/w") - b0), (10, 30));
    gw.shutdown().await;
}

/// A pool whose settings did not change survives a reload with its state
/// (here: an open breaker); a changed one is built afresh.
#[tokio::test]
async fn unchanged_pool_keeps_its_state_across_apply() {
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let origin = Origin::new()
        .handle("/b", move |_| {
            if flag.load(Ordering::SeqCst) {
                Rsp::status(503)
            } else {
                Rsp::text("fine")
            }
        })
        .run()
        .await;
    let mut pool = pool_of("api", &[(&origin, 1)]);
    pool.breaker = BreakerConfig {
        consecutive_failures: 2,
        open_for: CfgDuration::from_secs(60),
        ..BreakerConfig::default()
    };
    pool.retry.attempts = 0;
    let gw = Gateway::builder()
        .config(move |c| c.pools.push(pool))
        .route(pool_route("/b", "api"))
        .spawn_instance()
        .await;
    for _ in 0..2 {
        assert_eq!(gw.get("/b").await.status, 503);
    }
    let r = gw.get("/b").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "circuit_open");
    failing.store(false, Ordering::SeqCst);

    // Something else changes: the pool (and its open breaker) is kept.
    let mut c = gw.config().clone();
    c.server.max_body_bytes = perfgate_config::ByteSize(4096);
    gw.running().apply(c.clone()).unwrap();
    let r = gw.get("/b").await;
    assert_eq!(r.status, 503, "breaker state kept: {}", r.text());
    assert_eq!(origin.hits("/b"), 2);

    // The pool changes: built afresh, closed breaker.
    c.pools[0].breaker.open_for = CfgDuration::from_secs(61);
    gw.running().apply(c).unwrap();
    let r = gw.get("/b").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "fine"));
    assert_eq!(
        gw.metric("perfgate_circuit_state", &[("pool", "api")])
            .await,
        Some(0.0)
    );
    gw.shutdown().await;
}

/// Probe state is part of what a kept pool keeps: a server its probes took
/// down stays down through a reload that does not touch the pool.
#[tokio::test]
async fn unchanged_pool_keeps_probe_state_across_apply() {
    let a = Origin::new()
        .route("/h", Rsp::text("a"))
        .route("/health", Rsp::text("ok"))
        .run()
        .await;
    let b = Origin::new()
        .route("/h", Rsp::text("b"))
        .route("/health", Rsp::status(503))
        .run()
        .await;
    let mut pool = pool_of("api", &[(&a, 1), (&b, 1)]);
    pool.health = HealthConfig {
        path: Some("/health".into()),
        interval: CfgDuration::from_millis(100),
        timeout: CfgDuration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    };
    let gw = Gateway::builder()
        .config(move |c| c.pools.push(pool))
        .route(pool_route("/h", "api"))
        .spawn_instance()
        .await;
    let b_addr = b.addr().to_string();
    let b_up = || {
        gw.running()
            .gateway
            .upstream_health()
            .iter()
            .flat_map(|p| p.servers.clone())
            .find(|s| s.address == b_addr)
            .expect("b in the report")
            .up
    };
    eventually("b down", PATIENCE, || !b_up()).await;
    let mut c = gw.config().clone();
    c.server.max_uri_bytes = perfgate_config::ByteSize(4096);
    gw.running().apply(c).unwrap();
    assert!(!b_up(), "probe state kept");
    let before = b.hits("/h");
    for _ in 0..10 {
        assert_eq!(gw.get("/h").await.text(), "a");
    }
    assert_eq!(b.hits("/h"), before);
    gw.shutdown().await;
}

/// A server removed from a pool is no longer reported in the metrics.
#[tokio::test]
async fn removed_server_leaves_the_metrics() {
    let a = Origin::new().route("/m", Rsp::text("a")).run().await;
    let b = Origin::new().route("/m", Rsp::text("b")).run().await;
    let pool = pool_of("api", &[(&a, 1), (&b, 1)]);
    let gw = Gateway::builder()
        .config(move |c| c.pools.push(pool))
        .route(pool_route("/m", "api"))
        .spawn_instance()
        .await;
    let b_label = b.addr().to_string();
    let labels = [("pool", "api"), ("server", b_label.as_str())];
    assert_eq!(
        gw.metric("perfgate_upstream_server_up", &labels).await,
        Some(1.0)
    );
    let mut c = gw.config().clone();
    c.pools[0].servers.truncate(1);
    gw.running().apply(c).unwrap();
    for _ in 0..4 {
        assert_eq!(gw.get("/m").await.text(), "a");
    }
    assert_eq!(
        gw.metric("perfgate_upstream_server_up", &labels).await,
        None,
        "a server that is no longer configured is still reported"
    );
    gw.shutdown().await;
}

/// A reload either applies a changed `[upstream]` setting or names it in
/// `restart_required`; it never reports success and silently keeps the old
/// value (here `upstream.preserve_host`).
#[tokio::test]
async fn reloaded_preserve_host_is_applied_or_flagged() {
    let origin = Origin::new()
        .handle("/host", |req| Rsp::text(req.header("host").to_string()))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(RouteConfig {
            path: Some("/host".into()),
            cache: perfgate_config::RouteCachePolicy {
                bypass: true,
                ..Default::default()
            },
            ..RouteConfig::default()
        })
        .spawn_instance()
        .await;
    let r = gw.get("/host").header("host", "client.test").await;
    assert_eq!(r.text(), origin.addr().to_string());

    let mut c = gw.config().clone();
    c.upstream.preserve_host = true;
    let report = gw.running().apply(c).unwrap();
    let r = gw.get("/host").header("host", "client.test").await;
    assert!(
        r.text() == "client.test"
            || report
                .restart_required
                .iter()
                .any(|s| s.contains("upstream")),
        "preserve_host = true reloaded: upstream saw Host {:?}, restart_required {:?}",
        r.text(),
        report.restart_required
    );
    gw.shutdown().await;
}
