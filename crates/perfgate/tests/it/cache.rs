//! Hits, misses, Vary, privacy, revalidation and stale serving.

use std::time::Duration;

use perfgate_test_support::{Gate, Origin, PATIENCE, Rsp, eventually, stays};

use crate::support::Gateway;
use crate::{events_json, make_stale};

#[tokio::test]
async fn hit_after_miss() {
    let body = events_json();
    let origin = Origin::new()
        .route("/events", Rsp::json(body.clone()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;

    let first = gw.get("/events").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-status"), "perfgate; fwd=miss; stored");
    assert_eq!(first.text(), body);

    let second = gw.get("/events").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("cache-status"), "perfgate; hit");
    assert!(second.has("age"), "a hit carries Age: {:?}", second.headers);
    assert!(second.header("age").parse::<u64>().is_ok());
    assert_eq!(second.text(), body);
    assert_eq!(origin.hits("/events"), 1);
}

#[tokio::test]
async fn vary_variants_are_kept_apart() {
    let origin = Origin::new()
        .handle("/greeting", |req| {
            let body = match req.header("accept-language") {
                "fr" => "bonjour",
                _ => "hello",
            };
            Rsp::text(body)
                .max_age(60)
                .header("vary", "accept-language")
        })
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;

    let en = gw.get("/greeting").header("accept-language", "en").await;
    let fr = gw.get("/greeting").header("accept-language", "fr").await;
    assert_eq!(en.text(), "hello");
    assert_eq!(fr.text(), "bonjour");
    assert_eq!(origin.hits("/greeting"), 2);

    let en = gw.get("/greeting").header("accept-language", "en").await;
    let fr = gw.get("/greeting").header("accept-language", "fr").await;
    assert_eq!(en.text(), "hello");
    assert_eq!(en.header("cache-status"), "perfgate; hit");
    assert_eq!(fr.text(), "bonjour");
    assert_eq!(fr.header("cache-status"), "perfgate; hit");
    assert_eq!(origin.hits("/greeting"), 2);
}

/// Each of these responses is personal: two clients, two upstream
/// requests, each client sees only its own answer.
#[tokio::test]
async fn private_no_store_and_set_cookie_are_never_shared() {
    let echo = |cc: &'static str| {
        move |req: &perfgate_test_support::Req| {
            Rsp::text(format!("user={}", req.header("x-user"))).header("cache-control", cc)
        }
    };
    let origin = Origin::new()
        .handle("/private", echo("private, max-age=60"))
        .handle("/no-store", echo("no-store"))
        .handle("/cookie", |req| {
            Rsp::text(format!("user={}", req.header("x-user")))
                .max_age(60)
                .header("set-cookie", &format!("session={}", req.header("x-user")))
        })
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;

    for path in ["/private", "/no-store", "/cookie"] {
        for (i, user) in ["alice", "bob", "carol"].into_iter().enumerate() {
            let r = gw.new_client().get(path).header("x-user", user).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.text(), format!("user={user}"), "{path} for {user}");
            if path == "/cookie" {
                assert_eq!(r.header_all("set-cookie"), format!("session={user}"));
            }
            assert_eq!(
                origin.hits(path),
                i + 1,
                "{path} must go upstream every time"
            );
        }
    }
}

/// RFC 9111 §3.5: a request with Authorization is not answered from an
/// entry stored without public/s-maxage/must-revalidate, and its own
/// response (without those) is not served to anyone else.
#[tokio::test]
async fn authorization_is_respected() {
    let echo = |req: &perfgate_test_support::Req| {
        let who = match req.header("authorization") {
            "" => "anonymous".to_string(),
            a => a.to_string(),
        };
        Rsp::text(format!("for {who}")).max_age(60)
    };
    let origin = Origin::new()
        .handle("/anon-first", echo)
        .handle("/auth-first", echo)
        .handle("/public", |req| {
            Rsp::text(format!(
                "shared, first fetched by {:?}",
                req.header("authorization")
            ))
            .header("cache-control", "public, max-age=60")
        })
        .run()
        .await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;

    // Stored for anonymous clients; not reused for an authorized request.
    assert_eq!(gw.get("/anon-first").await.text(), "for anonymous");
    assert_eq!(
        gw.get("/anon-first").await.header("cache-status"),
        "perfgate; hit"
    );
    let r = gw
        .get("/anon-first")
        .header("authorization", "Bearer alice")
        .await;
    assert_eq!(r.text(), "for Bearer alice");
    assert_eq!(origin.hits("/anon-first"), 2);
    // ... and the authorized answer did not replace what anonymous clients get.
    assert_eq!(gw.get("/anon-first").await.text(), "for anonymous");

    // An authorized response without public/s-maxage/must-revalidate is
    // not served to an anonymous client, nor to another user.
    let r = gw
        .get("/auth-first")
        .header("authorization", "Bearer alice")
        .await;
    assert_eq!(r.text(), "for Bearer alice");
    let r = gw.get("/auth-first").await;
    assert_eq!(r.text(), "for anonymous");
    let r = gw
        .get("/auth-first")
        .header("authorization", "Bearer bob")
        .await;
    assert_eq!(r.text(), "for Bearer bob");
    assert_eq!(origin.hits("/auth-first"), 3);

    // `public` makes it shareable.
    let r = gw
        .get("/public")
        .header("authorization", "Bearer alice")
        .await;
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    let r = gw
        .get("/public")
        .header("authorization", "Bearer bob")
        .await;
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    assert_eq!(origin.hits("/public"), 1);
}

#[tokio::test]
async fn revalidation_with_304_updates_the_entry() {
    let origin = Origin::new()
        .handle("/doc", |req| {
            if req.header("if-none-match") == "\"v1\"" {
                Rsp::status(304)
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=60")
                    .header("x-version", "2")
            } else {
                Rsp::json(r#"{"doc":"original body"}"#)
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=1")
                    .header("x-version", "1")
            }
        })
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .manual_clock()
        .spawn()
        .await;

    let first = gw.get("/doc").await;
    assert_eq!(first.header("cache-status"), "perfgate; fwd=miss; stored");
    assert_eq!(first.header("x-version"), "1");
    assert_eq!(
        origin.last_request("/doc").unwrap().header("if-none-match"),
        ""
    );

    // A client validator matching the stored ETag gets a 304 from the cache.
    let nm = gw.get("/doc").header("if-none-match", "\"v1\"").await;
    assert_eq!(nm.status, 304);
    assert_eq!(nm.header("cache-status"), "perfgate; hit");
    assert!(nm.body.is_empty());
    assert_eq!(origin.hits("/doc"), 1);

    make_stale(&gw);
    let revalidated = gw.get("/doc").await;
    assert_eq!(origin.hits("/doc"), 2);
    assert_eq!(
        origin.last_request("/doc").unwrap().header("if-none-match"),
        "\"v1\"",
        "the gateway revalidates with the stored ETag"
    );
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), r#"{"doc":"original body"}"#);
    assert_eq!(revalidated.header("x-version"), "2");
    assert_eq!(
        revalidated.header("cache-status"),
        "perfgate; fwd=stale; fwd-status=304; stored"
    );

    let hit = gw.get("/doc").await;
    assert_eq!(hit.header("cache-status"), "perfgate; hit");
    assert_eq!(hit.header("x-version"), "2");
    assert_eq!(hit.text(), r#"{"doc":"original body"}"#);
    assert_eq!(origin.hits("/doc"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_refreshes_once_in_the_background() {
    let gate = Gate::new();
    let held = gate.clone();
    let origin = Origin::new()
        .handle("/feed", move |req| {
            if req.n == 1 {
                Rsp::json(r#"{"v":1}"#)
                    .header("cache-control", "max-age=1, stale-while-revalidate=30")
            } else {
                // The refresh is held until every concurrent client got the stale copy.
                Rsp::json(r#"{"v":2}"#)
                    .header("cache-control", "max-age=60")
                    .gated(&held)
            }
        })
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .manual_clock()
        .spawn()
        .await;
    assert_eq!(gw.get("/feed").await.text(), r#"{"v":1}"#);
    make_stale(&gw);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = gw.new_client();
            tokio::spawn(async move { c.get("/feed").send().await })
        })
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), r#"{"v":1}"#, "stale body served immediately");
        assert_eq!(
            r.header("cache-status"),
            "perfgate; hit; detail=stale-while-revalidate"
        );
    }
    eventually(
        "the background refresh reaches the origin",
        PATIENCE,
        || origin.hits("/feed") == 2,
    )
    .await;
    stays("exactly one refresh", Duration::from_millis(300), || {
        origin.hits("/feed") == 2
    })
    .await;
    gate.open();

    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let r = gw.get("/feed").await;
        if r.text() == r#"{"v":2}"# {
            assert_eq!(r.header("cache-status"), "perfgate; hit");
            break;
        }
        assert_eq!(r.text(), r#"{"v":1}"#);
        assert!(std::time::Instant::now() < deadline, "refresh never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin.hits("/feed"), 2);
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_copy() {
    let origin = Origin::new()
        .handle("/prices", |req| {
            if req.n == 1 {
                Rsp::json(r#"{"price":42}"#).header("cache-control", "max-age=1, stale-if-error=60")
            } else {
                Rsp::status(500).body("boom")
            }
        })
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .manual_clock()
        .spawn()
        .await;
    assert_eq!(gw.get("/prices").await.status, 200);
    make_stale(&gw);

    let r = gw.get("/prices").await;
    assert_eq!(origin.hits("/prices"), 2);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"price":42}"#);
    let cs = r.header("cache-status");
    assert!(cs.contains("fwd=stale"), "{cs}");
    assert!(cs.contains("stale-if-error"), "{cs}");

    origin.stop().await;
    let r = gw.get("/prices").await;
    assert_eq!(r.status, 200, "origin down: {}", r.text());
    assert_eq!(r.text(), r#"{"price":42}"#);
    let cs = r.header("cache-status");
    assert!(
        cs.contains("fwd=stale") && cs.contains("stale-if-error"),
        "{cs}"
    );
}

#[tokio::test]
async fn upstream_down_gives_502_envelope() {
    let origin = Origin::new().route("/x", Rsp::text("x")).run().await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    origin.stop().await;

    let r = gw.get("/x").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json");
    let v = r.json();
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["code"], "upstream_unavailable");
    assert!(v["error"]["message"].is_string());

    // And it recovers once the origin is back.
    origin.restart().await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn slow_upstream_gives_504_envelope() {
    let origin = Origin::new()
        .route("/slow", Rsp::text("late").delay(Duration::from_secs(3)))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.upstream.response_timeout = perfgate_config::Duration::from_millis(300))
        .spawn()
        .await;
    let r = gw.get("/slow").await;
    assert_eq!(r.status, 504, "{}", r.text());
    let v = r.json();
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["code"], "upstream_timeout");
}
