//! The pooled keep-alive client towards upstreams, with the connect and
//! response-head deadlines, and the classification of its failures.

use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use perfgate_config::UpstreamConfig;
use perfgate_observe::UpstreamErrorKind;

pub use crate::client::Pooled as UpstreamBody;
use crate::client::{Client, ClientError};
use perfgate_http::body::Body;
use perfgate_http::error::{Error, ErrorKind, Side};

/// A pooled upstream client (one per pool, and per route with its own
/// connect timeout).
#[derive(Clone)]
pub struct Upstream {
    client: Client,
}

/// Why an upstream exchange failed.
#[derive(Debug)]
pub struct UpstreamError {
    /// For metrics.
    pub kind: UpstreamErrorKind,
    /// For logs (never sent to clients).
    pub detail: String,
    /// The request body was over the limit (the client's fault → 413).
    pub body_too_large: bool,
    /// The client's request body broke off while it was sent (malformed
    /// chunked coding, the client went away): the client's fault → 400,
    /// never counted against the upstream.
    pub body_broken: bool,
    /// The pool refused before sending (breaker open, nothing healthy, no slot).
    pub refused: Option<Refusal>,
}

impl UpstreamError {
    /// The client caused it (its body), not the upstream: not counted by
    /// the breaker or outlier detection, never retried.
    pub(crate) fn clients_fault(&self) -> bool {
        self.body_too_large || self.body_broken
    }

    /// The pool refused to send the request.
    pub fn refused(why: Refusal) -> Self {
        Self {
            kind: UpstreamErrorKind::connect,
            detail: format!("{why:?}"),
            body_too_large: false,
            body_broken: false,
            refused: Some(why),
        }
    }

    /// Who is at fault: the client for its own request body (too large,
    /// broken off, too slow), otherwise the upstream (including the pool's
    /// refusals on its behalf: breaker open, nothing healthy, no free
    /// connection).
    pub fn side(&self) -> Side {
        if self.clients_fault() || matches!(self.refused, Some(Refusal::ClientBodyTimeout(_))) {
            Side::Client
        } else {
            Side::Upstream
        }
    }

    /// The client-facing error, on [`UpstreamError::side`].
    pub fn to_gateway(&self) -> Error {
        self.to_error().on_side(self.side())
    }

    fn to_error(&self) -> Error {
        if self.body_too_large {
            return Error::new(ErrorKind::PayloadTooLarge, "request body too large");
        }
        if self.body_broken && !matches!(self.refused, Some(Refusal::ClientBodyTimeout(_))) {
            return Error::new(ErrorKind::BadRequest, "the request body broke off");
        }
        match self.refused {
            Some(Refusal::CircuitOpen(after)) => {
                return Error::new(
                    ErrorKind::CircuitOpen,
                    "the upstream is failing; requests are paused while it recovers",
                )
                .retry_after(after);
            }
            Some(Refusal::NoHealthy) => {
                return Error::new(ErrorKind::NoHealthyUpstream, "no healthy upstream server");
            }
            Some(Refusal::ClientBodyTimeout(d)) => {
                return Error::new(
                    ErrorKind::RequestTimeout,
                    format!("the request body did not arrive within {d:?}"),
                );
            }
            Some(Refusal::Busy) => {
                return Error::new(ErrorKind::Overloaded, "the upstream has no free connection");
            }
            None => {}
        }
        match self.kind {
            UpstreamErrorKind::timeout => Error::new(
                ErrorKind::UpstreamTimeout,
                "the upstream did not answer in time",
            ),
            _ => Error::new(
                ErrorKind::UpstreamUnavailable,
                "the upstream is unavailable",
            ),
        }
    }
}

impl Upstream {
    /// Builds the client from the upstream settings.
    pub fn new(cfg: &UpstreamConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout.get()));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.enforce_http(true);
        Self {
            client: Client::new(http, cfg.pool_max_idle, cfg.pool_idle_timeout.get()),
        }
    }

    /// The upstream URI for a client path and query.
    pub fn uri(target: &Target, path_and_query: &str) -> Result<Uri, Error> {
        Self::uri_with(target, path_and_query, None)
    }

    /// [`Upstream::uri`], reusing `parsed` (the request's own, already
    /// validated path and query) when the target adds no prefix: no
    /// re-parse on the hot path.
    pub(crate) fn uri_with(
        target: &Target,
        path_and_query: &str,
        parsed: Option<&http::uri::PathAndQuery>,
    ) -> Result<Uri, Error> {
        if target.prefix.is_empty()
            && let Some(pq) = parsed
        {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(target.scheme.clone());
            parts.authority = Some(target.authority.clone());
            parts.path_and_query = Some(pq.clone());
            return Uri::from_parts(parts)
                .map_err(|_| Error::new(ErrorKind::BadRequest, "invalid request target"));
        }
        let pq = if target.prefix.is_empty() {
            path_and_query.to_string()
        } else {
            format!("{}{path_and_query}", target.prefix)
        };
        Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| Error::new(ErrorKind::BadRequest, "invalid request target"))
    }

    /// Sends `req` and waits for the response head within `deadline`.
    pub(crate) async fn send_within(
        &self,
        req: Request<Body>,
        deadline: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        // Boxed: the exchange holds the connection's state machine, which
        // would otherwise be copied into every request future that awaits
        // it (callgrind: +11k instructions of memcpy per request).
        match tokio::time::timeout(deadline, Box::pin(self.client.request(req))).await {
            Ok(Ok(rsp)) => Ok(rsp),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(UpstreamError {
                kind: UpstreamErrorKind::timeout,
                detail: format!("no response head within {deadline:?}"),
                body_too_large: false,
                body_broken: false,
                refused: None,
            }),
        }
    }
}

fn classify(e: &ClientError) -> UpstreamError {
    let mut timed_out = false;
    let mut body_too_large = false;
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut detail = e.to_string();
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        body_too_large |= s.is::<http_body_util::LengthLimitError>();
        src = s.source();
    }
    let kind = if timed_out {
        UpstreamErrorKind::timeout
    } else if matches!(e, ClientError::Connect(_) | ClientError::NoAuthority) {
        UpstreamErrorKind::connect
    } else {
        UpstreamErrorKind::protocol
    };
    UpstreamError {
        kind,
        detail,
        body_too_large,
        // hyper calls an error of the body we send a user error: the
        // client's body, whose framing hyper's server decoding rejected.
        body_broken: !body_too_large && matches!(e, ClientError::Http(h) if h.is_user()),
        refused: None,
    }
}

/// Where a route's requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` (TLS upstreams are not supported yet).
    pub scheme: Scheme,
    /// `host:port` of the upstream.
    pub authority: Authority,
    /// Path prefix prepended to every forwarded path (no trailing `/`).
    pub prefix: String,
}

impl Target {
    /// Parses `http://host[:port][/prefix]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid upstream URL {url:?}: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("upstream URL {url:?} has no scheme"))?;
        if scheme != Scheme::HTTP {
            return Err(format!(
                "upstream URL {url:?}: only http:// upstreams are supported"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream URL {url:?} has no host"))?;
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Self {
            scheme,
            authority,
            prefix,
        })
    }
}

/// Why a pool refused a request before sending it.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// The breaker is open; try again after this long.
    CircuitOpen(Duration),
    /// No server is healthy.
    NoHealthy,
    /// No connection slot within `queue_timeout`.
    Busy,
    /// The client's (replayable) body did not arrive within
    /// `server.request_body_timeout`: nothing was sent.
    ClientBodyTimeout(Duration),
}
