//! The client-facing server: accept loop, optional TLS, HTTP/1.1 and
//! HTTP/2 (h2c by prior knowledge, or ALPN `h2` over TLS), and draining on
//! shutdown. It takes an already-bound listener and a shutdown future, which
//! is what makes it testable on port 0.
//!
//! Slow or idle clients are bounded: at most `server.max_connections` are
//! open (past it the loop stops accepting, so new connections wait in the
//! kernel's accept queue until one closes); HTTP/1 heads must arrive within
//! `server.header_read_timeout` (`framing.rs`); an HTTP/2 connection has at
//! most `server.http2_max_concurrent_streams` streams, is pinged and closed
//! when a ping goes unanswered, and is closed (GOAWAY) after
//! `server.http2_idle_timeout` without a request in flight.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::context::Conn;
use crate::gateway::Gateway;
use perfgate_http::framing::Framed;

/// Protocol settings of the client-facing server.
#[derive(Clone)]
pub struct ServerOptions {
    /// Accept HTTP/2.
    pub http2: bool,
    /// Largest request head (at least 8 KiB: hyper's minimum buffer).
    pub max_header_bytes: usize,
    /// Time allowed to receive a request head.
    pub header_read_timeout: Duration,
    /// Time allowed for in-flight requests to finish on shutdown.
    pub drain_timeout: Duration,
    /// TLS, when the listener is HTTPS.
    pub tls: Option<TlsAcceptor>,
    /// Client connections open at once (0 = unlimited).
    pub max_connections: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// A connection with no request in flight for this long is closed
    /// gracefully (HTTP/2: GOAWAY).
    pub http2_idle_timeout: Duration,
    /// How often HTTP/2 connections are pinged.
    pub http2_keep_alive_interval: Duration,
    /// An unanswered ping closes the HTTP/2 connection after this long.
    pub http2_keep_alive_timeout: Duration,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// waits up to the drain timeout for open connections to finish.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    opts: ServerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.http2_max_concurrent_streams)
        .keep_alive_interval(Some(opts.http2_keep_alive_interval))
        .keep_alive_timeout(opts.http2_keep_alive_timeout);
    let builder = if opts.http2 {
        builder
    } else {
        builder.http1_only()
    };
    let builder = Arc::new(builder);
    // Every connection task holds a receiver until its connection is done:
    // `true` asks it to finish gracefully, and the sender sees when all are
    // gone.
    let (drain, draining) = watch::channel(false);
    let slots = (opts.max_connections > 0).then(|| Arc::new(Semaphore::new(opts.max_connections)));
    tokio::pin!(shutdown);
    loop {
        // A slot first: past `max_connections` nothing is accepted.
        let slot = match &slots {
            Some(slots) => tokio::select! {
                s = slots.clone().acquire_owned() => s.ok(),
                () = &mut shutdown => break,
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Counted from accept until its task ends (TLS handshake included):
        // one atomic add here, one subtract on drop.
        let open = gateway.metrics().connection_opened();
        let _ = stream.set_nodelay(true);
        let conn = Conn::new(peer, opts.tls.is_some());
        let gw = gateway.clone();
        let activity = Arc::new(Activity::default());
        let seen = activity.clone();
        let svc = service_fn(move |req| {
            let gw = gw.clone();
            let conn = conn.clone();
            let busy = Busy::enter(seen.clone());
            async move {
                let rsp = gw.handle(req, conn).await;
                drop(busy);
                Ok::<_, Infallible>(rsp)
            }
        });
        let watch = Watch {
            builder: builder.clone(),
            draining: draining.clone(),
            activity,
            idle: opts.http2_idle_timeout,
            peer,
        };
        let max_head = opts.max_header_bytes;
        let head_timeout = opts.header_read_timeout;
        match opts.tls.clone() {
            None => {
                let io = Framed::new(stream, max_head, head_timeout);
                tokio::spawn(async move {
                    serve_conn(watch, io, svc).await;
                    drop(slot);
                    drop(open);
                });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let handshake = acceptor.accept(stream);
                    let tls = match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    // HTTP/2 has its own framing; the HTTP/1 check is not needed.
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        serve_conn(watch, tls, svc).await;
                    } else {
                        serve_conn(watch, Framed::new(tls, max_head, head_timeout), svc).await;
                    }
                    drop(slot);
                    drop(open);
                });
            }
        }
    }
    drop(listener);
    drop(draining);
    tracing::info!(timeout = ?opts.drain_timeout, "draining connections");
    let _ = drain.send(true);
    tokio::select! {
        () = drain.closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(opts.drain_timeout) => {
            tracing::warn!("drain timeout elapsed; closing remaining connections");
        }
    }
}

/// Requests of one connection: in flight now, and started so far.
#[derive(Default)]
struct Activity {
    in_flight: AtomicU64,
    started: AtomicU64,
}

/// A request in flight on its connection.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.started.fetch_add(1, Ordering::Relaxed);
        Busy(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection task watches besides its connection.
struct Watch {
    builder: Arc<auto::Builder<TokioExecutor>>,
    draining: watch::Receiver<bool>,
    activity: Arc<Activity>,
    idle: Duration,
    peer: std::net::SocketAddr,
}

/// Serves one connection until it ends; asks it to finish gracefully on
/// shutdown, or once no request was in flight or started for a whole idle
/// period (checked every `idle`, so an idle connection closes between one
/// and two periods after its last request).
///
/// The shutdown and idle watch runs under a waker of its own and is polled
/// only when that waker fired: every wake of the connection (each read,
/// write and upstream answer) polls the connection alone, not a timer and a
/// channel besides (callgrind: ~0.7k instructions per pass-through request).
async fn serve_conn<I, S>(w: Watch, io: I, svc: S)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<perfgate_http::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Watch {
        builder,
        draining,
        activity,
        idle,
        peer,
    } = w;
    let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
    tokio::pin!(conn);
    // The receiver held here keeps the drain waiting until this connection
    // is done (the watch's own copy goes when it resolves).
    let watch = close_requested(draining.clone(), activity, idle);
    tokio::pin!(watch);
    let fired = Arc::new(Fired {
        fired: AtomicBool::new(true),
        task: Mutex::new(None),
    });
    let side = Waker::from(fired.clone());
    let mut closing = false;
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if closing || !fired.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        fired.set_task(cx.waker());
        if watch
            .as_mut()
            .poll(&mut Context::from_waker(&side))
            .is_pending()
        {
            return Poll::Pending;
        }
        closing = true;
        conn.as_mut().graceful_shutdown();
        conn.as_mut().poll(cx)
    })
    .await;
    if let Err(e) = ended {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
    drop(draining);
}

/// Resolves when a connection should finish gracefully: on shutdown, or
/// after an idle period with no request in flight or started.
async fn close_requested(
    mut draining: watch::Receiver<bool>,
    activity: Arc<Activity>,
    idle: Duration,
) {
    if *draining.borrow() {
        return;
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
    let mut last_started = activity.started.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            changed = draining.changed() => {
                if changed.is_err() || *draining.borrow() {
                    return;
                }
            }
            _ = tick.tick() => {
                let started = activity.started.load(Ordering::Relaxed);
                if started == last_started && activity.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                last_started = started;
            }
        }
    }
}

/// The waker of a connection's shutdown and idle watch: records that it
/// fired and wakes the connection's task.
struct Fired {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Fired {
    fn set_task(&self, waker: &Waker) {
        if let Ok(mut task) = self.task.lock()
            && !task.as_ref().is_some_and(|w| w.will_wake(waker))
        {
            *task = Some(waker.clone());
        }
    }
}

impl Wake for Fired {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Ok(task) = self.task.lock()
            && let Some(w) = task.as_ref()
        {
            w.wake_by_ref();
        }
    }
}
