//! The demo's sample backend: a stand-in for the FastAPI services perfgate
//! is meant to sit in front of. Like a typical FastAPI app it sends no
//! caching headers (the event detail excepted), is slow where the real
//! services are slow (database queries, a link analyser, an LLM) and counts
//! the calls it serves so the demo can show how many perfgate saved.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Number of events in the list; ids run from 1 to this.
pub const EVENT_COUNT: u64 = 60;

/// Largest chat request body read; the demo sends a few dozen bytes.
const MAX_CHAT_BODY: usize = 64 * 1024;

/// How long in-flight requests may take to finish once shutdown begins;
/// the slowest endpoint answers in 1.5 s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The endpoints of the sample backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /api/v1/events`: the event list.
    EventsList,
    /// `GET /api/v1/events/{id}`: one event, with an `ETag`.
    EventDetail,
    /// `POST /api/v1/chat`: a slow, uncacheable LLM-style reply.
    Chat,
    /// `GET /api/v1/analyze?url=…`: a slow link analysis.
    Analyze,
    /// `GET /health`.
    Health,
    /// Anything else (404/405).
    Other,
}

impl Endpoint {
    /// Every endpoint, in counter order.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::EventsList,
        Endpoint::EventDetail,
        Endpoint::Chat,
        Endpoint::Analyze,
        Endpoint::Health,
        Endpoint::Other,
    ];

    /// The simulated processing time, modelled on the original services.
    pub fn latency(self) -> Duration {
        match self {
            Endpoint::EventsList => Duration::from_millis(50),
            Endpoint::EventDetail => Duration::from_millis(20),
            Endpoint::Chat => Duration::from_millis(1000),
            Endpoint::Analyze => Duration::from_millis(1500),
            Endpoint::Health | Endpoint::Other => Duration::ZERO,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Call counters of a running backend; cheap to clone and read at any time.
#[derive(Debug, Clone, Default)]
pub struct BackendStats {
    counts: Arc<[AtomicU64; Endpoint::ALL.len()]>,
}

impl BackendStats {
    /// Requests served by `endpoint` so far.
    pub fn calls(&self, endpoint: Endpoint) -> u64 {
        self.counts[endpoint.index()].load(Ordering::Relaxed)
    }

    /// Requests served by the API endpoints (everything but `/health`, which
    /// health checkers poll and which would blur the comparison).
    pub fn api_calls(&self) -> u64 {
        Endpoint::ALL
            .iter()
            .filter(|e| **e != Endpoint::Health)
            .map(|e| self.calls(*e))
            .sum()
    }

    fn record(&self, endpoint: Endpoint) {
        self.counts[endpoint.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// A backend running on its own task.
pub struct Backend {
    addr: SocketAddr,
    stats: BackendStats,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Serves the sample API on `listener` until [`Backend::shutdown`].
    pub fn spawn(listener: TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stats = BackendStats::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, stats.clone(), async move {
            // A dropped sender also means stop.
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stats,
            stop,
            task,
        })
    }

    /// The address the backend listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle on the call counters.
    pub fn stats(&self) -> BackendStats {
        self.stats.clone()
    }

    /// Stops accepting, lets in-flight requests finish (bounded) and waits.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Serves the sample API on `listener` until `shutdown` completes, then
/// drains open connections for at most a few seconds.
pub async fn serve(listener: TcpListener, stats: BackendStats, shutdown: impl Future<Output = ()>) {
    let app = Arc::new(App::new(stats));
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Usually EMFILE under load: back off instead of
                        // spinning, then keep serving.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    // Client resets are normal at the end of a load run.
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
}

/// Request routing and the precomputed bodies.
struct App {
    stats: BackendStats,
    events_list: Bytes,
}

impl App {
    fn new(stats: BackendStats) -> Self {
        let events: Vec<_> = (1..=EVENT_COUNT).map(event_summary).collect();
        let list =
            json!({ "items": events, "total": EVENT_COUNT, "page": 1, "page_size": EVENT_COUNT });
        Self {
            stats,
            events_list: Bytes::from(list.to_string()),
        }
    }

    async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let endpoint = route(req.method(), req.uri().path());
        self.stats.record(endpoint);
        // Sleep before reading the body, as a real handler would await its
        // database or LLM: the latency is per request, not per byte.
        let latency = endpoint.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match endpoint {
            Endpoint::EventsList => json_response(StatusCode::OK, self.events_list.clone()),
            Endpoint::EventDetail => event_detail(&req),
            Endpoint::Analyze => analyze(req.uri().query()),
            Endpoint::Chat => chat(req.into_body()).await,
            Endpoint::Health => {
                json_response(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"))
            }
            Endpoint::Other => not_found_or_not_allowed(req.method(), req.uri().path()),
        }
    }
}

/// Maps a request to its endpoint; the method must match too, as FastAPI's
/// router does.
pub fn route(method: &Method, path: &str) -> Endpoint {
    match (method, path) {
        (&Method::GET, "/api/v1/events") => Endpoint::EventsList,
        (&Method::GET, "/api/v1/analyze") => Endpoint::Analyze,
        (&Method::POST, "/api/v1/chat") => Endpoint::Chat,
        (&Method::GET, "/health") => Endpoint::Health,
        (&Method::GET, p) if p.strip_prefix("/api/v1/events/").is_some_and(is_id) => {
            Endpoint::EventDetail
        }
        _ => Endpoint::Other,
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn event_summary(id: u64) -> serde_json::Value {
    const CITIES: [&str; 6] = ["Berlin", "Lisbon", "Kraków", "Austin", "Osaka", "Nairobi"];
    const KINDS: [&str; 4] = ["meetup", "workshop", "conference", "hackathon"];
    let city = CITIES[(id % 6) as usize];
    let kind = KINDS[(id % 4) as usize];
    json!({
        "id": id,
        "title": format!("{city} {kind} #{id}"),
        "kind": kind,
        "city": city,
        "starts_at": format!("2025-{:02}-{:02}T18:30:00Z", 1 + id % 12, 1 + id % 28),
        "price_cents": 1500 + (id * 370) % 9000,
        "seats_left": (id * 7) % 120,
    })
}

fn etag_for(id: u64) -> String {
    format!("\"event-{id}-v1\"")
}

fn event_detail<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let id = req
        .uri()
        .path()
        .strip_prefix("/api/v1/events/")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|id| (1..=EVENT_COUNT).contains(id));
    let Some(id) = id else {
        return json_response(StatusCode::NOT_FOUND, detail_body("Event not found"));
    };
    let etag = etag_for(id);
    let etag_value = HeaderValue::from_str(&etag).ok();
    let not_modified = req
        .headers()
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|v| if_none_match_hits(v.as_bytes(), etag.as_bytes()));
    let mut rsp = if not_modified {
        let mut rsp = Response::new(Full::new(Bytes::new()));
        *rsp.status_mut() = StatusCode::NOT_MODIFIED;
        rsp
    } else {
        let mut detail = event_summary(id);
        if let Some(obj) = detail.as_object_mut() {
            obj.insert(
                "description".into(),
                json!(format!(
                    "Join us for event {id}: talks, demos and time to meet people who build things."
                )),
            );
            obj.insert("speakers".into(), json!(["Ada", "Grace", "Linus"]));
        }
        json_response(StatusCode::OK, Bytes::from(detail.to_string()))
    };
    // The one endpoint with caching headers: the original service set them
    // on details, which lets perfgate revalidate instead of refetching.
    if let Some(v) = etag_value {
        rsp.headers_mut().insert(ETAG, v);
    }
    rsp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=10"));
    rsp
}

/// Weak comparison of `If-None-Match` members (RFC 9110 §13.1.2).
fn if_none_match_hits(header: &[u8], etag: &[u8]) -> bool {
    let strip_weak = |t: &[u8]| -> Vec<u8> {
        let t = t.trim_ascii();
        t.strip_prefix(b"W/").unwrap_or(t).to_vec()
    };
    let etag = strip_weak(etag);
    header.split(|&b| b == b',').any(|member| {
        let member = member.trim_ascii();
        member == b"*" || strip_weak(member) == etag
    })
}

fn analyze(query: Option<&str>) -> Response<Full<Bytes>> {
    let url = query.and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "url")
            .map(|(_, v)| percent_decode(v))
    });
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        // FastAPI's validation error for a missing query parameter.
        let body = json!({"detail": [{"loc": ["query", "url"], "msg": "field required", "type": "value_error.missing"}]});
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            Bytes::from(body.to_string()),
        );
    };
    let seed = url
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let links: Vec<_> = (0..12)
        .map(|i| json!({"href": format!("{url}/section-{i}"), "status": 200, "nofollow": i % 5 == 0}))
        .collect();
    let body = json!({
        "url": url,
        "title": format!("Analysis of {url}"),
        "status": 200,
        "word_count": 800 + seed % 4000,
        "reading_time_minutes": 3 + seed % 15,
        "language": "en",
        "links": links,
        "summary": "The page introduces the product, lists pricing tiers and links to documentation and a changelog.",
    });
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

async fn chat<B>(body: B) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let message = match Limited::new(body, MAX_CHAT_BODY).collect().await {
        Ok(collected) => serde_json::from_slice::<serde_json::Value>(&collected.to_bytes())
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned)),
        Err(_) => {
            return json_response(StatusCode::PAYLOAD_TOO_LARGE, detail_body("Body too large"));
        }
    };
    let Some(message) = message else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            detail_body("message required"),
        );
    };
    let reply = json!({
        "reply": format!("You asked: {message}. Here is a thoughtful, if simulated, answer."),
        "model": "demo-llm",
        "usage": {"prompt_tokens": message.split_whitespace().count(), "completion_tokens": 42},
    });
    json_response(StatusCode::OK, Bytes::from(reply.to_string()))
}

fn not_found_or_not_allowed(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let known = [
        "/api/v1/events",
        "/api/v1/analyze",
        "/api/v1/chat",
        "/health",
    ];
    if method != Method::GET
        && (known.contains(&path) || route(&Method::GET, path) != Endpoint::Other)
    {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            detail_body("Method Not Allowed"),
        );
    }
    json_response(StatusCode::NOT_FOUND, detail_body("Not Found"))
}

fn detail_body(msg: &str) -> Bytes {
    Bytes::from(json!({ "detail": msg }).to_string())
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' => bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = path.parse().unwrap();
        req
    }

    async fn body_of(rsp: Response<Full<Bytes>>) -> Bytes {
        rsp.into_body().collect().await.unwrap().to_bytes()
    }

    #[test]
    fn routes() {
        let cases = [
            (Method::GET, "/api/v1/events", Endpoint::EventsList),
            (Method::GET, "/api/v1/events/7", Endpoint::EventDetail),
            (Method::GET, "/api/v1/events/x", Endpoint::Other),
            (Method::GET, "/api/v1/events/", Endpoint::Other),
            (Method::POST, "/api/v1/chat", Endpoint::Chat),
            (Method::GET, "/api/v1/chat", Endpoint::Other),
            (Method::GET, "/api/v1/analyze", Endpoint::Analyze),
            (Method::GET, "/health", Endpoint::Health),
            (Method::GET, "/nope", Endpoint::Other),
        ];
        for (m, p, want) in cases {
            assert_eq!(route(&m, p), want, "{m} {p}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn latency_follows_the_endpoint() {
        let app = App::new(BackendStats::default());
        for (path, want) in [
            ("/api/v1/events", 50),
            ("/api/v1/events/3", 20),
            ("/api/v1/analyze?url=https%3A%2F%2Fexample.com", 1500),
            ("/health", 0),
        ] {
            let start = tokio::time::Instant::now();
            let rsp = app.handle(get(path)).await;
            assert_eq!(rsp.status(), StatusCode::OK, "{path}");
            assert_eq!(start.elapsed(), Duration::from_millis(want), "{path}");
        }
        let mut chat = Request::new(Full::new(Bytes::from_static(b"{\"message\":\"hi there\"}")));
        *chat.method_mut() = Method::POST;
        *chat.uri_mut() = "/api/v1/chat".parse().unwrap();
        let start = tokio::time::Instant::now();
        let rsp = app.handle(chat).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(rsp.status(), StatusCode::OK);
        assert!(body_of(rsp).await.starts_with(b"{\""));
        assert_eq!(app.stats.api_calls(), 4);
        assert_eq!(app.stats.calls(Endpoint::Health), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn events_list_has_no_caching_headers_and_sensible_size() {
        let app = App::new(BackendStats::default());
        let rsp = app.handle(get("/api/v1/events")).await;
        assert!(rsp.headers().get(CACHE_CONTROL).is_none());
        assert!(rsp.headers().get(ETAG).is_none());
        let body = body_of(rsp).await;
        assert!(
            (8 * 1024..=12 * 1024).contains(&body.len()),
            "{} bytes",
            body.len()
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["items"].as_array().map(Vec::len),
            Some(EVENT_COUNT as usize)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn event_detail_answers_if_none_match_with_304() {
        let app = App::new(BackendStats::default());
        let rsp = app.handle(get("/api/v1/events/5")).await;
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[CACHE_CONTROL], "max-age=10");
        let etag = rsp.headers()[ETAG].clone();

        for inm in [
            etag.to_str().unwrap().to_owned(),
            format!("W/{}", etag.to_str().unwrap()),
            format!("\"other\", {}", etag.to_str().unwrap()),
            "*".to_owned(),
        ] {
            let mut req = get("/api/v1/events/5");
            req.headers_mut()
                .insert(IF_NONE_MATCH, inm.parse().unwrap());
            let rsp = app.handle(req).await;
            assert_eq!(rsp.status(), StatusCode::NOT_MODIFIED, "{inm}");
            assert_eq!(rsp.headers()[ETAG], etag);
            assert!(body_of(rsp).await.is_empty());
        }

        let mut req = get("/api/v1/events/5");
        req.headers_mut()
            .insert(IF_NONE_MATCH, HeaderValue::from_static("\"event-6-v1\""));
        assert_eq!(app.handle(req).await.status(), StatusCode::OK);
        assert_eq!(
            app.handle(get("/api/v1/events/999")).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bad_input_gets_fastapi_style_errors() {
        let app = App::new(BackendStats::default());
        assert_eq!(
            app.handle(get("/api/v1/analyze")).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let mut chat = Request::new(Full::new(Bytes::from_static(b"not json")));
        *chat.method_mut() = Method::POST;
        *chat.uri_mut() = "/api/v1/chat".parse().unwrap();
        assert_eq!(
            app.handle(chat).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let mut del = get("/api/v1/events");
        *del.method_mut() = Method::DELETE;
        assert_eq!(
            app.handle(del).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(app.handle(get("/x")).await.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("https%3A%2F%2Fa.io%2Fx+y"),
            "https://a.io/x y"
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[tokio::test]
    async fn serves_over_tcp_and_counts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = Backend::spawn(listener).unwrap();
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let uri: http::Uri = format!("http://{}/health", backend.addr()).parse().unwrap();
        let rsp = client.get(uri).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(backend.stats().calls(Endpoint::Health), 1);
        assert_eq!(backend.stats().api_calls(), 0);
        drop(rsp);
        drop(client);
        backend.shutdown().await;
    }
}
