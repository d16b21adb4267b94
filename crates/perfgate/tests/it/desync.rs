//! Regression tests of issue #11: item 1 (a client's framing fields never
//! reach the upstream, on every path that builds upstream requests), item 8
//! (forwarding headers), item 16 (claim headers) and item 19 (CONNECT and
//! TRACE). The upstream is a [`RawUpstream`]: it parses what it receives
//! strictly, so a `Content-Length` with no body makes it wait for the next
//! request's bytes (the reproduction), and every field arrives as sent.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use perfgate_config::{AsyncRouteConfig, JwtMode, RouteConfig};
use perfgate_test_support::jwt::{hs256, now};
use perfgate_test_support::{
    Framing, PATIENCE, RawUpstream, Seen, TOKEN, TempDir, eventually, raw, raw_timeout,
};
use serde_json::json;

use crate::support::{Gateway, GatewayBuilder, RunningGateway};

/// The reproduction's body: 25 bytes.
const BODY25: &str = "0123456789012345678901234";

fn builder(up: &RawUpstream) -> GatewayBuilder {
    Gateway::builder().upstream(up.addr()).config(|c| {
        // A desynchronized upstream connection shows as a request that
        // never completes: make that a quick 504, not a hang.
        c.upstream.response_timeout = perfgate_config::Duration::from_secs(2);
    })
}

fn status_of(rsp: &str) -> u16 {
    rsp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {rsp:?}"))
}

/// The request arrived with no body and no framing field at all.
fn assert_unframed(s: &Seen) {
    assert_eq!(s.framing, Framing::None, "{s:?}");
    assert!(s.body.is_empty(), "{s:?}");
    for name in [
        "content-length",
        "transfer-encoding",
        "content_length",
        "transfer_encoding",
    ] {
        assert!(
            s.header(name).is_empty(),
            "{name} reached the upstream: {s:?}"
        );
    }
}

/// The one request the upstream saw for `target`.
fn only(up: &RawUpstream, target: &str) -> Seen {
    let seen = up.seen_with(target);
    assert_eq!(seen.len(), 1, "{target}: {seen:?}");
    seen.into_iter().next().expect("one")
}

/// A plain request still goes through, framed, on the pooled connection.
async fn still_in_sync(gw: &RunningGateway, up: &RawUpstream) {
    let r = gw.new_client().get("/probe?after").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok");
    assert_unframed(&only(up, "/probe?after"));
    assert_eq!(up.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_cache_fill_never_sends_the_clients_content_length() {
    let up = RawUpstream::start().await;
    let gw = builder(&up).spawn().await;
    // The reproduction of item 1: a GET with a body on a cached route.
    let rsp = raw(
        gw.addr(),
        format!("GET /events?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\n{BODY25}"),
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    assert_unframed(&only(&up, "/events?x=1"));
    still_in_sync(&gw, &up).await;
}

#[tokio::test]
async fn a_cache_fill_from_http2_never_sends_the_clients_content_length() {
    let up = RawUpstream::start().await;
    let gw = builder(&up).spawn().await;
    let tcp = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("http://{}/events?x=2", gw.addr()))
        .version(http::Version::HTTP_2)
        .header("content-length", "25")
        .body(Full::new(Bytes::from_static(BODY25.as_bytes())))
        .expect("request");
    let rsp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(rsp.status(), 200);
    let _ = rsp.into_body().collect().await;
    assert_unframed(&only(&up, "/events?x=2"));
    still_in_sync(&gw, &up).await;
}

#[tokio::test]
async fn a_revalidation_never_sends_the_clients_content_length() {
    let up = RawUpstream::start_with("cache-control: max-age=1\r\netag: \"v1\"").await;
    let gw = builder(&up).manual_clock().spawn().await;
    // Same Host as the raw requests below: same cache key.
    let first = raw(gw.addr(), "GET /r HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&first), 200, "{first}");
    crate::make_stale(&gw);
    let rsp = raw(
        gw.addr(),
        format!("GET /r HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\n{BODY25}"),
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    let seen = up.seen_with("/r");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1].header("if-none-match"),
        ["\"v1\""],
        "a revalidation"
    );
    assert_unframed(&seen[1]);
    still_in_sync(&gw, &up).await;
}

#[tokio::test]
async fn a_head_refreshed_as_a_get_never_sends_the_clients_content_length() {
    let up = RawUpstream::start_with("cache-control: max-age=1, stale-while-revalidate=60").await;
    let gw = builder(&up).manual_clock().spawn().await;
    let first = raw(gw.addr(), "GET /h HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&first), 200, "{first}");
    crate::make_stale(&gw);
    // Served stale; the background refresh is a GET built from this HEAD.
    // (A HEAD answer has a Content-Length and no body: read it briefly.)
    let rsp = raw_timeout(
        gw.addr(),
        format!("HEAD /h HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\n{BODY25}"),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    eventually("the refresh", PATIENCE, || up.seen_with("/h").len() == 2).await;
    let seen = up.seen_with("/h");
    assert_eq!(seen[1].method, "GET");
    assert_unframed(&seen[1]);
    still_in_sync(&gw, &up).await;
}

#[tokio::test]
async fn batch_items_never_send_framing_fields_of_their_own() {
    let up = RawUpstream::start().await;
    let gw = builder(&up)
        .config(|c| c.batch.enabled = true)
        .spawn()
        .await;
    let body = json!([
        {"path": "/b?1", "headers": {"content-length": "25"}},
        {"path": "/b?2", "headers": {"transfer-encoding": "chunked"}},
        {"path": "/b?3", "headers": {"content_length": "25"}},
    ]);
    let r = gw.request(Method::POST, "/batch").json(&body).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    for i in 0..3 {
        assert_eq!(v[i]["status"], 200, "{v}");
    }
    for t in ["/b?1", "/b?2", "/b?3"] {
        assert_unframed(&only(&up, t));
    }
    still_in_sync(&gw, &up).await;
}

#[tokio::test]
async fn job_replays_are_framed_by_their_stored_body() {
    let up = RawUpstream::start().await;
    let gw = builder(&up)
        .admin_token(TOKEN)
        .route(RouteConfig {
            name: Some("analyze".into()),
            path: Some("/analyze".into()),
            async_job: Some(AsyncRouteConfig {
                status_path: Some("/analyze/status".into()),
                ..AsyncRouteConfig::default()
            }),
            ..RouteConfig::default()
        })
        .spawn()
        .await;
    let rsp = raw(
        gw.addr(),
        "POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content_Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
         9\r\n{\"a\":\"b\"}\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 202, "{rsp}");
    eventually("the job call", PATIENCE, || {
        up.seen_with("/analyze").len() == 1
    })
    .await;
    let s = only(&up, "/analyze");
    assert_eq!(s.method, "POST");
    assert_eq!(s.framing, Framing::Length(9), "{s:?}");
    assert_eq!(s.body, b"{\"a\":\"b\"}");
    assert!(s.header("content_length").is_empty(), "{s:?}");
    assert!(s.header("transfer-encoding").is_empty(), "{s:?}");
    assert_eq!(up.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn warm_up_requests_are_framed_consistently() {
    let up = RawUpstream::start().await;
    let gw = builder(&up).admin_token(TOKEN).spawn().await;
    let r = gw
        .admin_post("/admin/cache/warmup", &json!({"urls": ["/w?1", "/w?2"]}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    eventually("the warm-up", PATIENCE, || up.seen_with("/w?").len() == 2).await;
    for t in ["/w?1", "/w?2"] {
        assert_unframed(&only(&up, t));
    }
    still_in_sync(&gw, &up).await;
}

#[tokio::test]
async fn forwarding_headers_of_untrusted_clients_never_reach_the_upstream() {
    let up = RawUpstream::start().await;
    let gw = builder(&up).spawn().await;
    let rsp = raw(
        gw.addr(),
        "GET /f?1 HTTP/1.1\r\nHost: api.example\r\n\
         Forwarded: for=6.6.6.6;host=evil.example;proto=https\r\n\
         X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Port: 8443\r\n\
         X-Forwarded-Prefix: /evil\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    let s = only(&up, "/f?1");
    for name in [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
    ] {
        assert!(s.header(name).is_empty(), "{name} passed: {s:?}");
    }
    assert_eq!(s.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(s.header("x-forwarded-host"), ["api.example"]);
    assert_eq!(s.header("x-forwarded-proto"), ["http"]);
}

#[tokio::test]
async fn trusted_proxies_pass_only_the_configured_headers_which_are_keyed() {
    let up = RawUpstream::start().await;
    let gw = builder(&up)
        .config(|c| {
            c.forwarded.trusted_proxies = vec!["127.0.0.1".into()];
            c.forwarded.trusted_headers = vec![
                "x-forwarded-for".into(),
                "x-forwarded-host".into(),
                "x-forwarded-prefix".into(),
            ];
        })
        .spawn()
        .await;
    let get = |prefix: &'static str| {
        raw(
            gw.addr(),
            format!(
                "GET /k HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-Prefix: {prefix}\r\n\
                 X-Forwarded-Port: 8443\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\r\n"
            ),
        )
    };
    assert_eq!(status_of(&get("/a").await), 200);
    let seen = up.seen_with("/k");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-forwarded-prefix"), ["/a"]);
    for name in ["forwarded", "x-forwarded-port", "x-real-ip"] {
        assert!(seen[0].header(name).is_empty(), "{name} passed");
    }
    // Another prefix changes the answer: it is not served /a's entry.
    assert_eq!(status_of(&get("/b").await), 200);
    let seen = up.seen_with("/k");
    assert_eq!(seen.len(), 2, "a second prefix is a second key");
    assert_eq!(seen[1].header("x-forwarded-prefix"), ["/b"]);
    // The same prefix again is a hit.
    let rsp = get("/a").await;
    assert!(
        rsp.to_ascii_lowercase()
            .contains("cache-status: perfgate; hit"),
        "{rsp}"
    );
    assert_eq!(up.seen_with("/k").len(), 2);
    // A successful unsafe request invalidates the URI under every prefix.
    let post = raw(
        gw.addr(),
        "POST /k HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-Prefix: /c\r\n\
         Content-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&post), 200, "{post}");
    assert_eq!(status_of(&get("/a").await), 200);
    assert_eq!(status_of(&get("/b").await), 200);
    assert_eq!(up.seen_with("/k").len(), 5, "both entries were invalidated");
}

const SECRET: &[u8] = b"integration-test-secret-0123456789";

#[tokio::test]
async fn claim_headers_cannot_be_spoofed_or_named_away() {
    let up = RawUpstream::start().await;
    let dir = TempDir::new();
    let secret = dir
        .write("jwt.secret", SECRET)
        .to_string_lossy()
        .into_owned();
    let gw = builder(&up)
        .route(RouteConfig {
            name: Some("api".into()),
            path: Some("/api".into()),
            jwt: Some(JwtMode::Optional),
            ..RouteConfig::default()
        })
        .config(move |c| {
            c.jwt.secret_file = Some(secret);
            c.jwt.forward_claims = BTreeMap::from([("sub".into(), "X-User-Id".into())]);
        })
        .spawn()
        .await;
    // Without a token, no spelling of the claim header gets through.
    let rsp = raw(
        gw.addr(),
        "GET /api/a HTTP/1.1\r\nHost: x\r\nX_User_Id: admin\r\nx-user_id: admin\r\n\
         X-USER-ID: admin\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    let s = only(&up, "/api/a");
    for name in ["x-user-id", "x_user_id", "x-user_id"] {
        assert!(s.header(name).is_empty(), "{name} passed: {s:?}");
    }
    // With one, naming perfgate's own fields in Connection removes none.
    let token = hs256(SECRET, &json!({"sub": "alice", "exp": now() + 60}));
    let rsp = raw(
        gw.addr(),
        format!(
            "GET /api/b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Connection: keep-alive, x-user-id, x-forwarded-for, x-forwarded-host, via\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    let s = only(&up, "/api/b");
    assert_eq!(s.header("x-user-id"), ["alice"], "{s:?}");
    assert_eq!(s.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(s.header("x-forwarded-host"), ["x"]);
    assert_eq!(s.header("via").len(), 1, "{s:?}");
    assert!(s.header("connection").is_empty());
}

#[tokio::test]
async fn connect_and_trace_are_refused_with_405() {
    let up = RawUpstream::start().await;
    let gw = builder(&up).spawn().await;
    for head in [
        "TRACE /t HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    ] {
        let rsp = raw(gw.addr(), head).await;
        assert_eq!(status_of(&rsp), 405, "{rsp}");
        let lower = rsp.to_ascii_lowercase();
        assert!(lower.contains("allow: get, head"), "{rsp}");
        assert!(lower.contains("method_not_allowed"), "{rsp}");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

#[tokio::test]
async fn a_malformed_client_body_is_a_400_and_never_counts_against_the_upstream() {
    let up = RawUpstream::start().await;
    let gw = builder(&up)
        .route(RouteConfig {
            path: Some("/p".into()),
            cache: perfgate_config::RouteCachePolicy {
                bypass: true,
                ..Default::default()
            },
            ..RouteConfig::default()
        })
        .config(|c| {
            c.upstream.breaker.enabled = true;
            c.upstream.breaker.consecutive_failures = 3;
        })
        .spawn()
        .await;
    // A chunk size hyper cannot parse: the body breaks off after the head
    // went upstream. Before, each was a 502 and a failure of the upstream,
    // so a few of them opened the breaker for everyone.
    for i in 0..6 {
        let rsp = raw(
            gw.addr(),
            format!(
                "POST /p/{i} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                 -5\r\nhello\r\n0\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(status_of(&rsp), 400, "{rsp}");
        assert!(
            rsp.to_ascii_lowercase().contains("connection: close"),
            "{rsp}"
        );
    }
    still_in_sync(&gw, &up).await;
    assert!(up.seen_with("/p/").is_empty(), "{:?}", up.seen());
}
