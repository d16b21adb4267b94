//! The client-facing server: accept loop, optional TLS, HTTP/1.1 and
//! HTTP/2 (h2c by prior knowledge, or ALPN `h2` over TLS), and draining on
//! shutdown. It takes an already-bound listener and a shutdown future, which
//! is what makes it testable on port 0.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::framing::Framed;
use crate::gateway::{Conn, Gateway};

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
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = if opts.http2 {
        builder
    } else {
        builder.http1_only()
    };
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
        let _ = stream.set_nodelay(true);
        let conn = Conn::new(peer, opts.tls.is_some());
        let gw = gateway.clone();
        let svc = service_fn(move |req| {
            let gw = gw.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(gw.handle(req, conn).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let max_head = opts.max_header_bytes;
        let head_timeout = opts.header_read_timeout;
        match opts.tls.clone() {
            None => {
                let io = Framed::new(stream, max_head, head_timeout);
                tokio::spawn(serve_conn(builder, io, svc, watcher, peer));
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
                        serve_conn(builder, tls, svc, watcher, peer).await;
                    } else {
                        serve_conn(
                            builder,
                            Framed::new(tls, max_head, head_timeout),
                            svc,
                            watcher,
                            peer,
                        )
                        .await;
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!(timeout = ?opts.drain_timeout, "draining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(opts.drain_timeout) => {
            tracing::warn!("drain timeout elapsed; closing remaining connections");
        }
    }
}

/// Serves one connection under the graceful-shutdown watcher.
async fn serve_conn<I, S>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: I,
    svc: S,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let c = builder.serve_connection(TokioIo::new(io), svc).into_owned();
    if let Err(e) = watcher.watch(c).await {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}
