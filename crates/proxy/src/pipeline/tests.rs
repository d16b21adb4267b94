//! The phases end to end against a real upstream on 127.0.0.1:0, seen
//! through the one event each request leaves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, StatusCode};
use perfgate_config::{Config, RateLimitConfig, RouteConfig};
use perfgate_observe::{CacheEvent, CacheLayer, EventSink, Metrics, RequestEvent, RequestKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::server_timing;
use crate::context::Conn;
use crate::gateway::Gateway;
use perfgate_http::body::Body;

#[test]
fn server_timing_is_milliseconds_with_three_decimals() {
    let v = server_timing(Duration::from_micros(123), Duration::ZERO);
    assert_eq!(v, "gateway;dur=0.123");
    let v = server_timing(
        Duration::from_micros(1_005),
        Duration::from_micros(45_678_901),
    );
    assert_eq!(v, "gateway;dur=1.005, upstream;dur=45678.901");
}

/// An upstream answering every request with a small cacheable JSON body.
async fn origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        let body = br#"{"ok":true}"#;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: public, max-age=60\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if s.write_all(head.as_bytes()).await.is_err()
                            || s.write_all(body).await.is_err()
                        {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                }
            });
        }
    });
    addr
}

#[derive(Default)]
struct Collect(Mutex<Vec<RequestEvent>>);

impl EventSink for Collect {
    fn on_event(&self, e: &RequestEvent) {
        self.0.lock().expect("events").push(e.clone());
    }
}

impl Collect {
    /// The events so far, once `n` have arrived (they come from a task).
    async fn wait_for(&self, n: usize) -> Vec<RequestEvent> {
        for _ in 0..500 {
            let got = self.0.lock().expect("events").clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        self.0.lock().expect("events").clone()
    }
}

async fn gateway(upstream: SocketAddr) -> (Arc<Gateway>, Arc<Collect>) {
    let mut config = Config::default();
    config.upstream.url = format!("http://{upstream}");
    config.routes.push(RouteConfig {
        name: Some("api".into()),
        path: Some("/api".into()),
        ..RouteConfig::default()
    });
    config.rate_limits = vec![RateLimitConfig {
        name: "tight".into(),
        key: "ip".into(),
        rate: 1,
        per: perfgate_config::Duration::from_secs(60),
        routes: vec!["limited".into()],
        ..RateLimitConfig::default()
    }];
    config.routes.push(RouteConfig {
        name: Some("limited".into()),
        path: Some("/limited".into()),
        ..RouteConfig::default()
    });
    let gw = Gateway::new(&config, Arc::new(Metrics::new())).expect("gateway");
    let sink = Arc::new(Collect::default());
    assert!(gw.subscribe_events(vec![sink.clone() as Arc<dyn EventSink>]));
    (gw, sink)
}

async fn get(gw: &Arc<Gateway>, path: &str) -> StatusCode {
    let mut req = Request::new(Body::Empty);
    *req.uri_mut() = path.parse().expect("uri");
    req.headers_mut()
        .insert(http::header::HOST, "example.test".parse().expect("host"));
    let conn = Conn::new(SocketAddr::from(([10, 0, 0, 7], 5000)), false);
    gw.clone()
        .handle_with(gw.policy(), req, conn, RequestKind::Client)
        .await
        .status()
}

#[tokio::test]
async fn every_request_leaves_one_event_with_its_outcome() {
    let (gw, sink) = gateway(origin().await).await;
    assert_eq!(get(&gw, "/api/a").await, StatusCode::OK); // miss, stored
    assert_eq!(get(&gw, "/api/a").await, StatusCode::OK); // L1 hit
    assert_eq!(get(&gw, "/limited").await, StatusCode::OK);
    assert_eq!(get(&gw, "/limited").await, StatusCode::TOO_MANY_REQUESTS);
    let events = sink.wait_for(4).await;
    assert_eq!(events.len(), 4, "{events:#?}");

    let miss = &events[0];
    assert_eq!(miss.kind, RequestKind::Client);
    assert_eq!(miss.route.as_deref(), Some("api"));
    assert_eq!(miss.method, Method::GET);
    assert_eq!(miss.status, 200);
    assert!(miss.cache.contains(CacheEvent::miss));
    assert_eq!(miss.attempts, 1);
    assert_eq!(
        miss.upstream
            .as_deref()
            .map(|s| s.starts_with("127.0.0.1:")),
        Some(true)
    );
    assert_eq!(miss.client.to_string(), "10.0.0.7");
    assert!(miss.phases.ttfb > Duration::ZERO);
    assert!(miss.phases.total >= miss.phases.ttfb);

    let hit = &events[1];
    assert!(hit.cache.contains(CacheEvent::hit));
    assert_eq!(hit.layer, Some(CacheLayer::L1));
    assert_eq!(hit.attempts, 0);
    assert_eq!(hit.bytes_out, 11);
    assert_eq!(hit.upstream_bytes_saved, 11);

    let limited = &events[3];
    assert_eq!(limited.status, 429);
    assert_eq!(limited.error, Some("rate_limited"));
    assert_eq!(limited.route.as_deref(), Some("limited"));
    assert_eq!(limited.attempts, 0);
}

#[tokio::test]
async fn refusals_before_routing_leave_an_event_too() {
    let (gw, sink) = gateway(origin().await).await;
    // No route matches a path outside the configured ones only when there
    // is no default route; a bad escape is refused by the guard phase.
    assert_eq!(get(&gw, "/api/%zz").await, StatusCode::BAD_REQUEST);
    let events = sink.wait_for(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].status, 400);
    assert_eq!(events[0].route, None);
    assert_eq!(events[0].error, Some("bad_request"));
}

#[tokio::test]
async fn admin_statistics_come_from_the_events() {
    let (gw, _sink) = gateway(origin().await).await;
    for _ in 0..3 {
        assert_eq!(get(&gw, "/api/b").await, StatusCode::OK);
    }
    let stats = gw.cache_stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.hits, 2);
    assert_eq!(stats.upstream_requests, 1, "counted from the miss's record");
    let api = stats
        .routes
        .iter()
        .find(|r| r.route == "api")
        .expect("route stats");
    assert_eq!(api.hits, 2);
    assert_eq!(api.misses, 1);
    assert_eq!(gw.events_dropped(), 0);
}

#[tokio::test]
async fn events_carry_the_bytes_in_and_out() {
    let (gw, sink) = gateway(origin().await).await;
    let mut req = Request::new(Body::full("twelve bytes"));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = "/api/p".parse().expect("uri");
    let h = req.headers_mut();
    h.insert(http::header::HOST, "example.test".parse().expect("host"));
    h.insert(http::header::CONTENT_LENGTH, "12".parse().expect("length"));
    let conn = Conn::new(SocketAddr::from(([10, 0, 0, 7], 5000)), false);
    let rsp = gw
        .clone()
        .handle_with(gw.policy(), req, conn, RequestKind::Client)
        .await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(get(&gw, "/api/b").await, StatusCode::OK);
    let events = sink.wait_for(2).await;
    assert_eq!(events[0].method, Method::POST);
    assert_eq!(events[0].bytes_in, 12);
    // The origin declares its length, so a streamed answer has one too.
    assert_eq!(events[0].bytes_out, 11);
    assert_eq!(events[1].bytes_in, 0);
    assert_eq!(events[1].bytes_out, 11);
}

#[tokio::test]
async fn a_refused_declared_length_is_not_counted_as_bytes_in() {
    let (gw, sink) = gateway(origin().await).await;
    for (declared, status) in [
        ("99999999999", StatusCode::PAYLOAD_TOO_LARGE),
        ("12, 12", StatusCode::BAD_REQUEST),
    ] {
        let mut req = Request::new(Body::Empty);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "/api/p".parse().expect("uri");
        let h = req.headers_mut();
        h.insert(http::header::HOST, "example.test".parse().expect("host"));
        h.insert(
            http::header::CONTENT_LENGTH,
            declared.parse().expect("length"),
        );
        let conn = Conn::new(SocketAddr::from(([10, 0, 0, 7], 5000)), false);
        let rsp = gw
            .clone()
            .handle_with(gw.policy(), req, conn, RequestKind::Client)
            .await;
        assert_eq!(rsp.status(), status, "Content-Length: {declared}");
    }
    let events = sink.wait_for(2).await;
    assert_eq!(events[0].status, 413);
    assert_eq!(events[0].bytes_in, 0);
    assert_eq!(events[1].status, 400);
    assert_eq!(events[1].bytes_in, 0);
}
