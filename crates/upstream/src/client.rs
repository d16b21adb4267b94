//! The HTTP/1.1 client towards upstreams: a pool of keep-alive
//! connections, each driven by the task that is using it.
//!
//! hyper-util's pooled client runs every connection in a task of its own: a
//! request goes to that task through a channel, and the response head and
//! every body chunk come back the same way, so one pass-through exchange
//! wakes two tasks, often on two threads. Here the request's own task
//! polls the connection (hyper's `client::conn::http1`) while it waits for
//! the head, and the response body polls it while it is read; once the
//! body has ended the connection goes back to the pool, idle and unpolled.
//! A connection taken from the pool is polled once before use, so one that
//! the upstream closed while idle is seen and dropped, and a request that
//! a reused connection could not start is sent again on another (as
//! hyper-util does); nothing else is retried here (see `forward.rs`).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use perfgate_http::body::Body;

type Io = TokioIo<TcpStream>;

/// Why an exchange failed.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be made.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The exchange failed on an open connection.
    Http(hyper::Error),
    /// The request had no authority to connect to.
    NoAuthority,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Http(e) => write!(f, "{e}"),
            ClientError::NoAuthority => f.write_str("the upstream URI has no authority"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Connect(e) => Some(e.as_ref()),
            ClientError::Http(e) => Some(e),
            ClientError::NoAuthority => None,
        }
    }
}

/// One upstream connection: the request handle and the connection state
/// machine that this crate polls itself.
struct Conn {
    tx: http1::SendRequest<Body>,
    conn: http1::Connection<Io, Body>,
    /// The connection future has completed (closed or failed): it must not
    /// be polled again, and the connection is not reusable.
    done: bool,
}

impl Conn {
    /// Drives the connection; true once it has ended.
    fn poll_conn(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.done && Pin::new(&mut self.conn).poll(cx).is_ready() {
            self.done = true;
        }
        self.done
    }

    /// Waits until the connection can take a request; false when it ended.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            if self.poll_conn(cx) {
                return Poll::Ready(false);
            }
            self.tx.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }

    /// Without waiting: polls once (so a close by the upstream is seen)
    /// and says whether a request can be sent now.
    fn ready_now(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if self.poll_conn(&mut cx) {
            return false;
        }
        matches!(self.tx.poll_ready(&mut cx), Poll::Ready(Ok(())))
    }
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Idle connections per host. A list, not a map: a client serves the few
/// servers of one pool, and hashing an `Authority` (case-insensitive
/// SipHash) cost more than comparing a handful (callgrind: ~1,900
/// instructions per request).
#[derive(Default)]
struct Idles {
    by_host: Vec<(Authority, VecDeque<Idle>)>,
}

impl Idles {
    fn get_mut(&mut self, host: &Authority) -> Option<&mut VecDeque<Idle>> {
        self.by_host
            .iter_mut()
            .find(|(h, _)| h == host)
            .map(|(_, l)| l)
    }

    fn entry(&mut self, host: Authority) -> &mut VecDeque<Idle> {
        let i = match self.by_host.iter().position(|(h, _)| *h == host) {
            Some(i) => i,
            None => {
                self.by_host.push((host, VecDeque::new()));
                self.by_host.len() - 1
            }
        };
        &mut self.by_host[i].1
    }
}

struct Shared {
    idle: Mutex<Idles>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Shared {
    /// The most recently used live connection to `host`, dropping the
    /// expired and the closed ones on the way.
    fn checkout(&self, host: &Authority) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(host)?;
        let now = Instant::now();
        while list
            .front()
            .is_some_and(|i| now.duration_since(i.since) > self.idle_timeout)
        {
            list.pop_front();
        }
        while let Some(mut i) = list.pop_back() {
            if i.conn.ready_now() {
                return Some(i.conn);
            }
        }
        None
    }

    fn checkin(&self, host: Authority, conn: Box<Conn>) {
        if conn.done || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(host);
        if list.len() >= self.max_idle {
            list.pop_front();
        }
        list.push_back(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// The pooled HTTP/1.1 upstream client. Cloning shares the pool.
#[derive(Clone)]
pub struct Client {
    connector: HttpConnector,
    shared: Arc<Shared>,
}

impl Client {
    /// A client that connects with `connector` and keeps at most
    /// `max_idle` idle connections per host for `idle_timeout`.
    pub fn new(connector: HttpConnector, max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            connector,
            shared: Arc::new(Shared {
                idle: Mutex::new(Idles::default()),
                max_idle,
                idle_timeout,
            }),
        }
    }

    /// Sends `req` (an absolute URI) and returns the response head; its
    /// body drives the connection and gives it back to the pool at its end.
    pub async fn request(&self, mut req: Request<Body>) -> Result<Response<Pooled>, ClientError> {
        let host = req
            .uri()
            .authority()
            .cloned()
            .ok_or(ClientError::NoAuthority)?;
        let target = req.uri().clone();
        // HTTP/1.1 to an origin server: origin-form (RFC 9112 §3.2.1).
        let pq = target
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
        // The one place the framing of anything perfgate sends upstream is
        // decided, whoever built the request: from the body, never from a
        // client's head (hyper would trust a `Content-Length` field over an
        // empty body).
        let (mut parts, body) = req.into_parts();
        perfgate_http::headers::set_framing(&mut parts.headers, &parts.method, &body);
        let mut req = Request::from_parts(parts, body);
        loop {
            let (mut conn, reused) = match self.shared.checkout(&host) {
                Some(c) => (c, true),
                None => (self.connect(&target).await?, false),
            };
            if !conn.ready().await {
                if reused {
                    continue;
                }
                // A new connection closed before it took the request: the
                // upstream never saw it.
                return Err(ClientError::Connect(
                    "the upstream closed the connection before the request".into(),
                ));
            }
            let mut sent = std::pin::pin!(conn.tx.try_send_request(req));
            let result = poll_fn(|cx| {
                conn.poll_conn(cx);
                sent.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(rsp) => {
                    let (parts, body) = rsp.into_parts();
                    let mut pooled = Pooled {
                        body,
                        conn: Some(conn),
                        host: Some(host),
                        pool: Arc::downgrade(&self.shared),
                    };
                    if pooled.body.is_end_stream() {
                        pooled.release();
                    }
                    return Ok(Response::from_parts(parts, pooled));
                }
                Err(mut e) => match e.take_message() {
                    // Never started on a reused connection (the upstream
                    // closed it meanwhile): safe to send on another.
                    Some(back) if reused => req = back,
                    _ => return Err(ClientError::Http(e.into_error())),
                },
            }
        }
    }

    async fn connect(&self, target: &Uri) -> Result<Box<Conn>, ClientError> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(target.clone())
            .await
            .map_err(|e| ClientError::Connect(Box::new(e)))?;
        let (tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(ClientError::Http)?;
        // Boxed: it moves between the pool and response bodies.
        Ok(Box::new(Conn {
            tx,
            conn,
            done: false,
        }))
    }
}

/// An upstream response body that drives its connection while it is read
/// and returns it to the pool once it has ended. Dropped before the end,
/// it closes the connection.
pub struct Pooled {
    body: Incoming,
    conn: Option<Box<Conn>>,
    host: Option<Authority>,
    pool: Weak<Shared>,
}

impl Pooled {
    fn release(&mut self) {
        if let (Some(conn), Some(host), Some(pool)) =
            (self.conn.take(), self.host.take(), self.pool.upgrade())
        {
            pool.checkin(host, conn);
        }
    }
}

impl HttpBody for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = &mut this.conn {
            conn.poll_conn(cx);
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// How the test origin ends each exchange.
    #[derive(Clone, Copy)]
    enum After {
        /// Keep the connection open.
        KeepAlive,
        /// Close it without saying so (no `Connection: close`).
        SilentClose,
    }

    /// A raw HTTP/1.1 origin on 127.0.0.1:0 that answers every request with
    /// `body` (chunked when asked) and counts the connections it accepted.
    async fn origin(body: &'static str, chunked: bool, after: After) -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
                        let rsp = if chunked {
                            let half = body.len() / 2;
                            format!(
                                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                                half,
                                &body[..half],
                                body.len() - half,
                                &body[half..]
                            )
                        } else {
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        };
                        if s.write_all(rsp.as_bytes()).await.is_err() {
                            return;
                        }
                        if matches!(after, After::SilentClose) {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/x").parse().unwrap(), accepted)
    }

    fn client(max_idle: usize, idle_timeout: Duration) -> Client {
        Client::new(HttpConnector::new(), max_idle, idle_timeout)
    }

    async fn get(c: &Client, uri: &Uri) -> Result<Bytes, ClientError> {
        let req = Request::get(uri.clone()).body(Body::Empty).unwrap();
        let rsp = c.request(req).await?;
        Ok(rsp
            .into_body()
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes())
    }

    /// `n` requests one after another all get `body`, over one connection.
    async fn assert_one_connection(body: &'static str, chunked: bool, n: usize) {
        let (uri, accepted) = origin(body, chunked, After::KeepAlive).await;
        let c = client(8, Duration::from_secs(60));
        for _ in 0..n {
            assert_eq!(get(&c, &uri).await.unwrap(), body);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        assert_one_connection("hello", false, 20).await;
    }

    #[tokio::test]
    async fn chunked_bodies_are_read_whole_and_the_connection_reused() {
        assert_one_connection("0123456789abcdef", true, 5).await;
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_and_keep_them() {
        let (uri, accepted) = origin("hello", false, After::KeepAlive).await;
        let c = client(8, Duration::from_secs(60));
        for _ in 0..3 {
            // Spawned all at once (collected), then awaited.
            let all: Vec<_> = (0..4)
                .map(|_| {
                    let (c, uri) = (c.clone(), uri.clone());
                    tokio::spawn(async move { get(&c, &uri).await.unwrap() })
                })
                .collect();
            for h in all {
                assert_eq!(h.await.unwrap(), "hello");
            }
        }
        // At most one connection per concurrent request, reused afterwards.
        assert!(accepted.load(Ordering::SeqCst) <= 4);
    }

    #[tokio::test]
    async fn connections_closed_by_the_upstream_while_idle_are_not_used() {
        let (uri, accepted) = origin("hello", false, After::SilentClose).await;
        let c = client(8, Duration::from_secs(60));
        for _ in 0..10 {
            assert_eq!(get(&c, &uri).await.unwrap(), "hello");
            // Let the close reach us, as between two real requests.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn back_to_back_requests_after_unannounced_closes_succeed() {
        let (uri, _) = origin("hello", false, After::SilentClose).await;
        let c = client(8, Duration::from_secs(60));
        // No pause between requests. This does not force the race in which
        // a reused connection refuses a request (the resend path): on
        // loopback the close is seen when the connection is taken.
        for _ in 0..50 {
            assert_eq!(get(&c, &uri).await.unwrap(), "hello");
        }
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (uri, accepted) = origin("hello", false, After::KeepAlive).await;
        let c = client(8, Duration::from_millis(50));
        get(&c, &uri).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        get(&c, &uri).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let (uri, accepted) = origin("hello", true, After::KeepAlive).await;
        let c = client(8, Duration::from_secs(60));
        let req = Request::get(uri.clone()).body(Body::Empty).unwrap();
        let rsp = c.request(req).await.unwrap();
        drop(rsp);
        assert_eq!(get(&c, &uri).await.unwrap(), "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn max_idle_zero_keeps_nothing() {
        let (uri, accepted) = origin("hello", false, After::KeepAlive).await;
        let c = client(0, Duration::from_secs(60));
        get(&c, &uri).await.unwrap();
        get(&c, &uri).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let c = client(8, Duration::from_secs(60));
        assert!(matches!(get(&c, &uri).await, Err(ClientError::Connect(_))));
    }

    #[tokio::test]
    async fn requests_go_out_in_origin_form() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let c = client(8, Duration::from_secs(60));
        let uri: Uri = format!("http://{addr}/a/b?c=d").parse().unwrap();
        get(&c, &uri).await.unwrap();
        let head = seen.await.unwrap();
        assert!(head.starts_with("GET /a/b?c=d HTTP/1.1\r\n"), "{head}");
    }
}
