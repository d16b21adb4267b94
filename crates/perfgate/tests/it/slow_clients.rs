//! Slow and greedy clients (issue #11, items 11 and 17): every body perfgate
//! reads whole has a deadline (408), connections past
//! `server.max_connections` wait, HTTP/2 connections are bounded in
//! streams, closed when idle or when pings go unanswered, and a batch's
//! answers are bounded in bytes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use perfgate_config::{AsyncRouteConfig, RateLimitConfig, RouteConfig};
use perfgate_test_support::{Client, Gate, Origin, Rsp, eventually, stays};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{Gateway, GatewayBuilder};

/// The deadline the tests give bodies.
const BODY_TIMEOUT: Duration = Duration::from_millis(300);

fn body_timeout(b: GatewayBuilder) -> GatewayBuilder {
    b.config(|c| {
        c.server.request_body_timeout = perfgate_config::Duration::from_millis(300);
    })
}

/// Sends a head declaring a 64-byte body and only 5 bytes of it, then
/// waits: the answer must be a 408 well before 5 s. The connection is then
/// closed: the rest of that body, sent late, is never read as a request.
async fn assert_slowloris_gets_408(addr: std::net::SocketAddr, method: &str, path: &str) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{{\"a\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("request_timeout") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("{method} {path}: no 408 ({other:?}): {got:?}"),
        }
    }
    let rsp = String::from_utf8_lossy(&got).into_owned();
    assert!(
        rsp.starts_with("HTTP/1.1 408"),
        "{method} {path}: expected 408, got {rsp:?}"
    );
    assert!(
        started.elapsed() >= BODY_TIMEOUT,
        "answered before the deadline"
    );
    // The rest of the body, then a request hidden in it: never served.
    let late = format!("{}GET /any HTTP/1.1\r\nHost: t\r\n\r\n", "x".repeat(59));
    let _ = s.write_all(late.as_bytes()).await;
    let mut after = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => after.extend_from_slice(&buf[..n]),
            Err(_) => panic!("{method} {path}: the connection stayed open after the 408"),
        }
    }
    assert!(
        !String::from_utf8_lossy(&after).contains("HTTP/1.1"),
        "{method} {path}: a late body was read as a request: {after:?}"
    );
}

#[tokio::test]
async fn a_trickled_body_gets_408_wherever_perfgate_reads_it_whole() {
    let origin = Origin::new().route("/any", Rsp::json("{}")).run().await;
    let job = RouteConfig {
        name: Some("jobs".into()),
        path: Some("/jobs/async".into()),
        async_job: Some(AsyncRouteConfig::default()),
        ..RouteConfig::default()
    };
    let login = RouteConfig {
        name: Some("login".into()),
        path: Some("/login".into()),
        ..RouteConfig::default()
    };
    let rule = RateLimitConfig {
        name: "per-account".into(),
        key: "body:username".into(),
        rate: 5,
        per: perfgate_config::Duration::from_secs(60),
        routes: vec!["login".into()],
        methods: vec!["POST".into()],
        ..RateLimitConfig::default()
    };
    let gw = body_timeout(Gateway::builder())
        .upstream(origin.addr())
        .route(job)
        .route(login)
        .config(move |c| {
            c.rate_limits = vec![rule];
            c.batch.enabled = true;
            // Small bodies are read ahead so a retry can send them again.
            c.upstream.retry.attempts = 1;
        })
        .spawn()
        .await;
    // A job submission, a body-keyed rate limit, a retry-buffered body and
    // a batch request.
    for (method, path) in [
        ("POST", "/jobs/async"),
        ("POST", "/login"),
        ("PUT", "/any"),
        ("POST", "/batch"),
    ] {
        assert_slowloris_gets_408(gw.addr(), method, path).await;
    }
    assert_eq!(origin.total_hits(), 0, "nothing half-read went upstream");
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_free_one() {
    let origin = Origin::new().route("/x", Rsp::text("x")).run().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.server.max_connections = 2)
        .spawn()
        .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        open.push(s);
    }
    // A third connection is not served while two are open.
    let mut third = TcpStream::connect(gw.addr()).await.unwrap();
    third
        .write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(waited.is_err(), "the third connection was served at once");
    // One closes: the third is accepted and answered.
    drop(open.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
}

#[tokio::test]
async fn http2_streams_past_the_cap_are_refused_or_wait() {
    let gate = Gate::new();
    let origin = Origin::new()
        .route("/slow", Rsp::text("s").gated(&gate))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.server.http2_max_concurrent_streams = 2)
        .spawn()
        .await;
    let h2 = Client::h2c(gw.url());
    let mut tasks = Vec::new();
    for i in 0..5 {
        let req = h2.get(&format!("/slow?i={i}"));
        tasks.push(tokio::spawn(async move { req.try_send().await }));
    }
    eventually(
        "two streams reach the origin",
        Duration::from_secs(5),
        || origin.hits("/slow") == 2,
    )
    .await;
    stays(
        "no third stream while two are open",
        Duration::from_millis(400),
        || origin.hits("/slow") == 2,
    )
    .await;
    gate.open();
    let mut served = 0;
    for t in tasks {
        // A stream the client opened before it knew the limit is refused
        // (RST_STREAM REFUSED_STREAM); one it held back is served later.
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.status, 200);
                served += 1;
            }
            Err(e) => assert!(e.contains("REFUSED_STREAM"), "{e}"),
        }
    }
    assert!(served >= 2);
    assert_eq!(origin.hits("/slow"), served);
}

/// An h2c connection made by hand, so the test sees when the server ends it.
async fn h2_connection(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let origin = Origin::new().route("/x", Rsp::text("x")).run().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| {
            c.server.http2_idle_timeout = perfgate_config::Duration::from_millis(200);
        })
        .spawn()
        .await;
    let (mut send, conn) = h2_connection(gw.addr()).await;
    let req = Request::get(format!("{}/x", gw.url()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let _ = rsp.into_body().collect().await;
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle connection was closed")
        .unwrap();
}

#[tokio::test]
async fn an_http2_client_that_ignores_pings_is_dropped() {
    let origin = Origin::new().route("/x", Rsp::text("x")).run().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| {
            c.server.http2_keep_alive_interval = perfgate_config::Duration::from_millis(100);
            c.server.http2_keep_alive_timeout = perfgate_config::Duration::from_millis(100);
        })
        .spawn()
        .await;
    // The preface and an empty SETTINGS frame, then nothing: no SETTINGS
    // ACK, no PING ACK.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is still open");
}

#[tokio::test]
async fn a_batch_holds_at_most_its_byte_budget() {
    let big = "x".repeat(100 * 1024);
    let origin = Origin::new()
        .route("/big", Rsp::text(big.clone()).max_age(60))
        .run()
        .await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| {
            c.batch.enabled = true;
            c.batch.concurrency = 1;
            c.batch.max_response_bytes = perfgate_config::ByteSize(250 * 1024);
        })
        .spawn()
        .await;
    let items: Vec<serde_json::Value> = (0..5)
        .map(|i| serde_json::json!({"path": format!("/big?i={i}")}))
        .collect();
    let r = gw
        .request(Method::POST, "/batch")
        .json(&serde_json::Value::Array(items))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text().len() < 260 * 1024, "{} bytes", r.text().len());
    let v = r.json();
    let statuses: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 413, 413, 413], "{statuses:?}");
    assert_eq!(v[0]["body"].as_str().unwrap().len(), big.len());
    assert_eq!(v[2]["body"]["error"]["code"], "batch_too_large");
}
