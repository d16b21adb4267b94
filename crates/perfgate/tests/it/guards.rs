//! Request guards and limits: header count, target length, framing
//! conflicts, duplicate Host, unsupported Transfer-Encoding, body size,
//! query clamps and load shedding. Raw TCP where a client library would
//! normalize the request.

use std::time::{Duration, Instant};

use perfgate_config::{ByteSize, Config, QueryClamp, RouteCachePolicy, RouteConfig};
use perfgate_test_support::{Gate, Origin, PATIENCE, Rsp, RunningOrigin, eventually, raw};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{Gateway, RunningGateway};

async fn setup(tweak: impl FnOnce(&mut Config) + 'static) -> (RunningOrigin, RunningGateway) {
    let origin = Origin::new().route("/ok", Rsp::text("fine")).run().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(tweak)
        .spawn()
        .await;
    (origin, gw)
}

fn status_of(rsp: &str) -> u16 {
    rsp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {rsp:?}"))
}

/// The `error.code` of the envelope in a raw response.
fn code_of(rsp: &str) -> String {
    let body = rsp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("no JSON envelope ({e}): {rsp}"));
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

async fn still_serves(gw: &RunningGateway) {
    let r = gw.new_client().get("/ok").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "fine");
}

/// Sends `bytes` and reads until the server closes the connection (at most
/// 10 s); panics if it does not close.
async fn exchange_until_close(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        read.is_ok(),
        "the connection was not closed; received so far: {text:?}"
    );
    text
}

fn request_with_headers(n: usize) -> String {
    let mut r = String::from("GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..n {
        r.push_str(&format!("X-Extra-{i}: {i}\r\n"));
    }
    r.push_str("\r\n");
    r
}

#[tokio::test]
async fn more_header_fields_than_allowed_is_431() {
    let (origin, gw) = setup(|c| c.server.max_header_count = 10).await;
    // Host + Connection + 8 = 10 fields: allowed.
    let rsp = raw(gw.addr(), request_with_headers(8)).await;
    assert_eq!(status_of(&rsp), 200, "{rsp}");
    // Host + Connection + 9 = 11 fields: one too many.
    let rsp = raw(gw.addr(), request_with_headers(9)).await;
    assert_eq!(status_of(&rsp), 431, "{rsp}");
    assert_eq!(code_of(&rsp), "headers_too_large");
    assert_eq!(origin.hits("/ok"), 1);
    still_serves(&gw).await;
}

#[tokio::test]
async fn request_target_longer_than_allowed_is_414() {
    let (origin, gw) = setup(|c| c.server.max_uri_bytes = ByteSize(64)).await;
    // "/ok?q=" is 6 bytes.
    let ok = format!("/ok?q={}", "a".repeat(58));
    let r = gw.get(&ok).await;
    assert_eq!(r.status, 200, "a 64-byte target is allowed");
    let long = format!("/ok?q={}", "a".repeat(59));
    let r = gw.get(&long).await;
    assert_eq!(r.status, 414, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "uri_too_long");
    assert_eq!(origin.hits("/ok"), 1);
    still_serves(&gw).await;
}

/// Request smuggling shape: Content-Length and Transfer-Encoding → 400, and
/// the connection is closed (a pipelined request behind it is not served).
#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_closes() {
    let (origin, gw) = setup(|_| {}).await;
    let rsp = exchange_until_close(
        gw.addr(),
        b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 400, "{rsp}");
    assert_eq!(code_of(&rsp), "bad_request");
    assert_eq!(
        rsp.matches("HTTP/1.1 ").count(),
        1,
        "nothing after the 400: {rsp}"
    );
    assert_eq!(origin.hits("/ok"), 0);
    still_serves(&gw).await;
}

#[tokio::test]
async fn two_host_headers_is_400() {
    let (origin, gw) = setup(|_| {}).await;
    let rsp = raw(
        gw.addr(),
        "GET /ok HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 400, "{rsp}");
    assert_eq!(code_of(&rsp), "bad_request");
    assert_eq!(origin.hits("/ok"), 0);
    still_serves(&gw).await;
}

/// A Transfer-Encoding whose last coding is not chunked cannot be framed.
#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_400() {
    let (origin, gw) = setup(|_| {}).await;
    for te in ["gzip", "chunked, gzip"] {
        let rsp = raw(
            gw.addr(),
            format!(
                "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\nabc"
            ),
        )
        .await;
        assert_eq!(status_of(&rsp), 400, "Transfer-Encoding: {te}: {rsp}");
    }
    // HTTP/1.0 has no Transfer-Encoding at all.
    let rsp = raw(
        gw.addr(),
        "POST /ok HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 400, "HTTP/1.0 chunked: {rsp}");
    assert_eq!(origin.hits("/ok"), 0);
    still_serves(&gw).await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let (origin, gw) = setup(|c| c.server.max_body_bytes = ByteSize(1024)).await;
    let r = gw
        .new_client()
        .request(http::Method::POST, "/ok")
        .body(vec![b'x'; 1024])
        .await;
    assert_eq!(r.status, 200, "exactly the limit is allowed");

    // Declared by Content-Length: refused before anything is sent.
    let r = gw
        .new_client()
        .request(http::Method::POST, "/ok")
        .body(vec![b'x'; 1025])
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
    assert_eq!(origin.hits("/ok"), 1);

    // Chunked: cut while streaming.
    let chunk = "x".repeat(800);
    let rsp = raw(
        gw.addr(),
        format!(
            "POST /ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status_of(&rsp), 413, "{rsp}");
    assert_eq!(code_of(&rsp), "payload_too_large");
    still_serves(&gw).await;
}

fn page_size_route(bypass: bool) -> RouteConfig {
    RouteConfig {
        path: Some("/events".into()),
        query_clamps: vec![QueryClamp {
            param: "page_size".into(),
            min: Some(1),
            max: Some(100),
            default: Some(20),
        }],
        cache: RouteCachePolicy {
            bypass,
            ..RouteCachePolicy::default()
        },
        ..RouteConfig::default()
    }
}

#[tokio::test]
async fn query_clamp_bounds_and_defaults_page_size() {
    let origin = Origin::new().route("/events", Rsp::json("[]")).run().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(page_size_route(true))
        .spawn()
        .await;
    let seen = || {
        origin
            .last_request("/events")
            .expect("a request")
            .uri
            .query()
            .unwrap_or("")
            .to_string()
    };
    for (target, upstream) in [
        ("/events?page_size=1000", "page_size=100"),
        ("/events", "page_size=20"),
        ("/events?page_size=0", "page_size=1"),
        ("/events?page_size=50&q=x", "page_size=50&q=x"),
        ("/events?q=x", "q=x&page_size=20"),
    ] {
        let r = gw.get(target).await;
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(seen(), upstream, "{target}");
    }
    let hits = origin.hits("/events");
    let r = gw.get("/events?page_size=abc").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "bad_request");
    assert!(r.text().contains("page_size"), "{}", r.text());
    assert_eq!(origin.hits("/events"), hits, "never sent upstream");
}

/// A parameter name written with percent-escapes (`page%5Fsize` is
/// `page_size`, RFC 3986 §2.3) is the same parameter to the upstream's
/// query parser, so it is clamped too.
#[tokio::test]
async fn query_clamp_sees_percent_encoded_names() {
    let origin = Origin::new().route("/events", Rsp::json("[]")).run().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(page_size_route(true))
        .spawn()
        .await;
    let r = gw.get("/events?page%5Fsize=1000").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let query = origin
        .last_request("/events")
        .expect("a request")
        .uri
        .query()
        .unwrap_or("")
        .to_string();
    let values: Vec<u64> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| k.replace("%5F", "_").replace("%5f", "_") == "page_size")
        .map(|(_, v)| v.parse().unwrap_or(u64::MAX))
        .collect();
    assert!(
        !values.is_empty() && values.iter().all(|v| *v <= 100),
        "the upstream saw {query:?}"
    );
}

/// Clamping happens before the cache key is made: out-of-range and
/// in-range spellings of the same page share one entry.
#[tokio::test]
async fn clamped_targets_share_a_cache_entry() {
    let origin = Origin::new()
        .route("/events", Rsp::json("[]").max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .route(page_size_route(false))
        .spawn()
        .await;
    let r = gw.get("/events?page_size=1000").await;
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    let r = gw.get("/events?page_size=100").await;
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    let r = gw.get("/events").await;
    assert_eq!(r.header("cache-status"), "perfgate; fwd=miss; stored");
    let r = gw.get("/events?page_size=20").await;
    assert_eq!(r.header("cache-status"), "perfgate; hit");
    assert_eq!(origin.hits("/events"), 2);
}

/// `server.max_concurrent_requests = 2`: with two requests held at the
/// origin, more are refused at once with 503 `overloaded` and Retry-After;
/// once they finish, requests succeed again.
#[tokio::test]
async fn load_shedding_refuses_past_the_limit_then_recovers() {
    let gate = Gate::new();
    let origin = Origin::new()
        .route("/ok", Rsp::text("fine"))
        .route("/slow", Rsp::text("slow").gated(&gate))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.server.max_concurrent_requests = 2)
        .route(RouteConfig {
            path: Some("/slow".into()),
            cache: RouteCachePolicy {
                bypass: true,
                ..RouteCachePolicy::default()
            },
            ..RouteConfig::default()
        })
        .spawn()
        .await;

    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(gw.new_client().get("/slow").send()))
        .collect();
    eventually("two requests held at the origin", PATIENCE, || {
        origin.hits("/slow") == 2
    })
    .await;
    let start = Instant::now();
    let (c, d) = tokio::join!(
        gw.new_client().get("/slow").send(),
        gw.new_client().get("/ok").send()
    );
    for r in [&c, &d] {
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "overloaded");
        assert!(r.has("retry-after"));
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shed at once, not queued"
    );
    assert_eq!(origin.hits("/slow"), 2);
    assert_eq!(origin.hits("/ok"), 0);
    assert!(
        gw.metric("perfgate_shed_requests_total", &[])
            .await
            .is_some_and(|v| v >= 2.0)
    );

    gate.open();
    for h in held {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for _ in 0..5 {
        still_serves(&gw).await;
    }
}
