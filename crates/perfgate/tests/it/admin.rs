//! The admin listener: health without a token, everything else behind it.

use perfgate_test_support::{Origin, Rsp};

use crate::support::Gateway;

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
        "perfgate_request_duration_seconds",
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
