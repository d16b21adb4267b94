//! Requests no well-behaved client sends, over raw TCP: each gets a 4xx,
//! and the gateway keeps serving.

use perfgate_test_support::{Origin, Rsp, raw};

use crate::support::{Gateway, RunningGateway};

async fn setup() -> (perfgate_test_support::RunningOrigin, RunningGateway) {
    let origin = Origin::new().route("/ok", Rsp::text("fine")).run().await;
    let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
    (origin, gw)
}

fn status_of(rsp: &str) -> u16 {
    rsp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {rsp:?}"))
}

async fn still_serves(gw: &RunningGateway) {
    let r = gw.new_client().get("/ok").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "fine");
}

#[tokio::test]
async fn bad_request_line_is_400() {
    let (_origin, gw) = setup().await;
    let rsp = raw(gw.addr(), "THIS IS NOT HTTP\r\n\r\n").await;
    assert_eq!(status_of(&rsp), 400, "{rsp}");
    still_serves(&gw).await;
}

#[tokio::test]
async fn oversized_head_is_431() {
    let (_origin, gw) = setup().await;
    let big = "a".repeat(20 * 1024);
    let rsp = raw(
        gw.addr(),
        format!("GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    let status = status_of(&rsp);
    assert!((400..500).contains(&status), "{rsp}");
    assert_eq!(status, 431, "server.max_header_bytes promises 431: {rsp}");
    still_serves(&gw).await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400() {
    let (origin, gw) = setup().await;
    let rsp = raw(
        gw.addr(),
        "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&rsp), 400, "{rsp}");
    assert_eq!(origin.hits("/ok"), 0, "must not reach the upstream");
    still_serves(&gw).await;
}

#[tokio::test]
async fn http11_without_host_is_400() {
    let (origin, gw) = setup().await;
    let rsp = raw(gw.addr(), "GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&rsp), 400, "{rsp}");
    assert!(rsp.contains("bad_request"), "{rsp}");
    assert_eq!(origin.hits("/ok"), 0);
    still_serves(&gw).await;
}

#[tokio::test]
async fn silent_and_trickling_connections_are_closed() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let origin = Origin::new().route("/ok", Rsp::text("fine")).run().await;
    let gw = Gateway::builder()
        .upstream(origin.addr())
        .config(|c| c.server.header_read_timeout = perfgate_config::Duration::from_millis(500))
        .spawn()
        .await;
    for opening in [&b""[..], b"GET /ok HTTP/1.1\r\nHo"] {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(opening).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the gateway must close a connection that sends no complete head")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without a response");
        assert!(start.elapsed() >= Duration::from_millis(400));
    }
    still_serves(&gw).await;
}
