//! The admin listener: health without a token, everything else behind it.

use std::time::{Duration, Instant};

use perfgate_test_support::{Origin, PATIENCE, Rsp};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{Gateway, RunningGateway};

#[tokio::test]
async fn admin_endpoints_and_token() {
    let origin = Origin::new()
        .route("/events", Rsp::json(crate::events_json()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token("s3cret")
        .spawn()
        .await;
    // Some traffic so that every metric family has samples.
    gw.get("/events").await;
    gw.get("/events").await;

    let health = gw.admin_get("/health").await;
    assert_eq!(health.status, 200);

    for path in ["/admin/cache/stats", "/metrics"] {
        let r = gw.admin_get(path).await;
        assert_eq!(r.status, 401, "{path} without a token");
        let v = r.json();
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["code"], "unauthorized");
        let r = gw
            .admin_get(path)
            .header("authorization", "Bearer wrong")
            .await;
        assert_eq!(r.status, 401, "{path} with a wrong token");
    }

    let r = gw
        .admin_get("/admin/cache/stats")
        .header("authorization", "Bearer s3cret")
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["success"], true);
    let data = &v["data"];
    assert!(data["hit_rate"].is_number(), "{v}");
    assert_eq!(data["hits"], 1);
    assert_eq!(data["misses"], 1);
    assert_eq!(data["hit_rate"], 0.5);

    let r = gw
        .admin_get("/metrics")
        .header("authorization", "Bearer s3cret")
        .await;
    assert_eq!(r.status, 200);
    let text = r.text();
    for name in [
        "perfgate_requests_total",
        "perfgate_cache_requests_total",
        "perfgate_request_duration_seconds_count{route=\"default\",status_class=\"2xx\"} 2",
        "perfgate_client_connections ",
        "process_cpu_seconds_total ",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
}

/// Issue #11 (15), through a real listener: with no token and no
/// `admin.allow_unauthenticated` the admin API reads but does not change
/// anything; a rebinding Host gets 421; `/health/detailed` needs the token.
#[tokio::test]
async fn tokenless_admin_is_read_only_and_host_checked() {
    let origin = Origin::new().route("/events", Rsp::json("[]")).run().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.admin.allow_unauthenticated = false)
        .spawn()
        .await;
    assert_eq!(gw.admin_get("/admin/cache/stats").await.status, 200);
    assert_eq!(
        gw.admin_get("/health/detailed").await.status,
        200,
        "loopback, no token"
    );
    let r = gw
        .admin_post(
            "/admin/cache/invalidate",
            &serde_json::json!({"tags": ["a"]}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "forbidden");
    let r = gw
        .admin_request(http::Method::POST, "/admin/config/reload")
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = gw
        .admin_get("/admin/cache/stats")
        .set_header("host", "rebind.attacker.example:9090")
        .await;
    assert_eq!(r.status, 421, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unknown_host");

    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token("s3cret-token")
        .spawn()
        .await;
    assert_eq!(gw.admin_get("/health/detailed").await.status, 401);
    assert_eq!(gw.admin_get("/health/dependencies").await.status, 200);
    assert_eq!(
        gw.admin(http::Method::GET, "/health/detailed").await.status,
        200
    );
    let r = gw
        .admin(http::Method::POST, "/admin/cache/invalidate")
        .header("content-type", "text/plain")
        .body(r#"{"tags":["a"]}"#)
        .await;
    assert_eq!(r.status, 415, "{}", r.text());
}

/// `connections.open` of `GET /admin/monitoring/metrics`.
async fn open_connections(gw: &RunningGateway) -> u64 {
    let r = gw
        .admin_get("/admin/monitoring/metrics")
        .header("authorization", "Bearer s3cret")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    v["data"]["connections"]["open"]
        .as_u64()
        .unwrap_or_else(|| panic!("no connections.open in {v}"))
}

/// Polls until the monitoring API reports `n` open client connections.
async fn until_open(gw: &RunningGateway, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let open = open_connections(gw).await;
        if open == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "open connections stayed {open}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The monitoring API counts client connections on the proxy listener: one
/// more while a keep-alive connection stays open after its request, one
/// less once the client closes it. (Admin requests are not counted.)
#[tokio::test]
async fn monitoring_counts_open_keep_alive_connections() {
    let origin = Origin::new()
        .route("/events", Rsp::json("[]"))
        .route("/fail", Rsp::status(503))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .admin_token("s3cret")
        .spawn()
        .await;
    until_open(&gw, 0).await;

    let mut conn = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    conn.write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The response is in; the connection stays open (keep-alive).
    until_open(&gw, 1).await;
    let r = gw
        .admin_get("/metrics")
        .header("authorization", "Bearer s3cret")
        .await;
    assert!(
        r.text().contains("perfgate_client_connections 1\n"),
        "{}",
        r.text()
    );
    let v = gw
        .admin_get("/admin/monitoring/metrics")
        .header("authorization", "Bearer s3cret")
        .await
        .json();
    let server = &v["data"]["upstreams"][0]["servers"][0];
    assert!(
        server["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{v}"
    );
    assert_eq!(server["errors"], 0, "{v}");
    assert_eq!(server["state"], "healthy", "{v}");

    drop(conn);
    until_open(&gw, 0).await;

    // A 503 is a failed attempt (the default failure class): counted.
    assert_eq!(gw.get("/fail").await.status, 503);
    let v = gw
        .admin_get("/admin/monitoring/metrics")
        .header("authorization", "Bearer s3cret")
        .await
        .json();
    assert_eq!(v["data"]["upstreams"][0]["servers"][0]["errors"], 1, "{v}");
}
