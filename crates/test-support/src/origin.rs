//! A programmable HTTP/1.1 origin: fixed or computed responses per path,
//! delays, streamed bodies of any size, request counting and recording, and
//! stop/restart on the same port.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

type OriginBody = UnsyncBoxBody<Bytes, std::io::Error>;
type Handler = Arc<dyn Fn(&Req) -> Rsp + Send + Sync>;

/// What a handler sees of a request.
#[derive(Debug, Clone)]
pub struct Req {
    /// Method.
    pub method: Method,
    /// Request target as received (origin-form).
    pub uri: Uri,
    /// Header fields as received.
    pub headers: HeaderMap,
    /// 1 for the first request to this path, 2 for the second…
    pub n: usize,
    /// The request body.
    pub body: Bytes,
}

impl Req {
    /// A header as a string, `""` when absent or not UTF-8.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A request recorded by the origin.
pub type Recorded = Req;

#[derive(Debug, Clone)]
enum RspBody {
    Full(Bytes),
    /// `len` bytes of `b'x'`, generated in chunks as the client reads.
    Generated {
        len: u64,
    },
}

/// A response the origin sends.
#[derive(Debug, Clone)]
pub struct Rsp {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: RspBody,
    delay: Option<Duration>,
    gate: Option<watch::Receiver<bool>>,
}

/// Holds responses back until the test opens it (see [`Rsp::gated`]):
/// deterministic "slow" origins without guessing delays.
#[derive(Debug, Clone)]
pub struct Gate(Arc<watch::Sender<bool>>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }

    /// Lets every held and future response through.
    pub fn open(&self) {
        self.0.send_replace(true);
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Rsp {
    /// 200 with `body` and no content type.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: RspBody::Full(body.into()),
            delay: None,
            gate: None,
        }
    }

    /// 200 `text/plain`.
    pub fn text(body: impl Into<Bytes>) -> Self {
        Self::ok(body).header("content-type", "text/plain")
    }

    /// 200 `application/json`.
    pub fn json(body: impl Into<Bytes>) -> Self {
        Self::ok(body).header("content-type", "application/json")
    }

    /// An empty response with `status`.
    pub fn status(status: u16) -> Self {
        Self::ok(Bytes::new()).with_status(status)
    }

    /// 200 with `len` bytes generated on the fly (64 KiB chunks, chunked
    /// framing unless a `content-length` header is added).
    pub fn stream(len: u64) -> Self {
        Self {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: RspBody::Generated { len },
            delay: None,
            gate: None,
        }
    }

    /// Sets the status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = StatusCode::from_u16(status).expect("valid status");
        self
    }

    /// Adds a header field (appended: repeat for several values).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        ));
        self
    }

    /// Shortcut for `cache-control: max-age=<secs>`.
    pub fn max_age(self, secs: u64) -> Self {
        self.header("cache-control", &format!("max-age={secs}"))
    }

    /// Waits this long before sending the response head.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// Waits until `gate` is open before sending the response head.
    pub fn gated(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.0.subscribe());
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = RspBody::Full(body.into());
        self
    }
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Handler>,
    requests: Mutex<HashMap<String, Vec<Req>>>,
}

/// Builder of an origin server.
#[derive(Default)]
pub struct Origin {
    routes: HashMap<String, Handler>,
}

impl Origin {
    /// An origin with no routes (everything is 404).
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `path` (exact, query ignored) with a fixed response.
    pub fn route(self, path: &str, rsp: Rsp) -> Self {
        self.handle(path, move |_| rsp.clone())
    }

    /// Answers `path` (exact, query ignored) with a computed response.
    pub fn handle(mut self, path: &str, f: impl Fn(&Req) -> Rsp + Send + Sync + 'static) -> Self {
        self.routes.insert(path.to_string(), Arc::new(f));
        self
    }

    /// Starts serving on `127.0.0.1:0`.
    pub async fn run(self) -> RunningOrigin {
        let state = Arc::new(State {
            routes: self.routes,
            requests: Mutex::default(),
        });
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let (stop, task) = start(listener, state.clone());
        RunningOrigin {
            addr,
            state,
            running: Mutex::new(Some((stop, task))),
        }
    }
}

/// A running origin.
pub struct RunningOrigin {
    addr: SocketAddr,
    state: Arc<State>,
    running: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl RunningOrigin {
    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received for `path` so far (counted on arrival).
    pub fn hits(&self, path: &str) -> usize {
        self.lock().get(path).map_or(0, Vec::len)
    }

    /// Requests received on every path.
    pub fn total_hits(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// The requests received for `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.lock().get(path).cloned().unwrap_or_default()
    }

    /// The latest request received for `path`.
    pub fn last_request(&self, path: &str) -> Option<Recorded> {
        self.lock().get(path).and_then(|v| v.last().cloned())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Req>>> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops listening and closes every open connection (pooled ones too):
    /// afterwards connections to the port are refused.
    pub async fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((stop, task)) = running {
            let _ = stop.send(true);
            let _ = task.await;
            // Let the connection tasks see the signal and close their sockets.
            tokio::task::yield_now().await;
        }
    }

    /// Listens again on the same port (after [`stop`](Self::stop)); counters are kept.
    pub async fn restart(&self) {
        self.stop().await;
        let deadline = std::time::Instant::now() + crate::PATIENCE;
        let listener = loop {
            match bind(self.addr) {
                Ok(l) => break l,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind origin on {}: {e}", self.addr),
            }
        };
        let started = start(listener, self.state.clone());
        *self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(started);
    }
}

impl Drop for RunningOrigin {
    fn drop(&mut self) {
        let running = self.running.lock().ok().and_then(|mut r| r.take());
        if let Some((stop, task)) = running {
            let _ = stop.send(true);
            task.abort();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

fn start(listener: TcpListener, state: Arc<State>) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut accept_stop = stopped.clone();
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = stopped_signal(&mut accept_stop) => break,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let mut conn_stop = stopped.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(serve(&state, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    () = stopped_signal(&mut conn_stop) => {}
                }
            });
        }
        drop(listener);
    });
    (stop, task)
}

async fn stopped_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn serve(state: &State, req: Request<Incoming>) -> Response<OriginBody> {
    let (parts, body) = req.into_parts();
    // Read the request body (also so the connection stays usable).
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let rec = {
        let mut all = state
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = all.entry(path.clone()).or_default();
        let rec = Req {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            n: list.len() + 1,
            body,
        };
        list.push(rec.clone());
        rec
    };
    let rsp = match state.routes.get(&path) {
        Some(h) => h(&rec),
        None => Rsp::status(404).body("no such origin route"),
    };
    if let Some(mut g) = rsp.gate.clone() {
        let _ = g.wait_for(|open| *open).await;
    }
    if let Some(d) = rsp.delay {
        tokio::time::sleep(d).await;
    }
    let body: OriginBody = match rsp.body {
        RspBody::Full(b) => Full::new(b).map_err(|never| match never {}).boxed_unsync(),
        RspBody::Generated { len } => generated(len),
    };
    let mut out = Response::new(body);
    *out.status_mut() = rsp.status;
    for (k, v) in rsp.headers {
        out.headers_mut().append(k, v);
    }
    out
}

fn generated(len: u64) -> OriginBody {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let stream = futures_util::stream::unfold(len, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK);
            let data = chunk.slice(..n as usize);
            Some((Ok(Frame::data(data)), left - n))
        }
    });
    StreamBody::new(stream.boxed()).boxed_unsync()
}
