//! The admin listener: health without a token, everything else behind it.

use perfgate_test_support::{Gateway, Origin, Rsp};

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
