//! The failure model: every failure perfgate answers itself is an [`Error`]
//! with its kind, the side at fault and a retry hint. This is the one place
//! that turns failures into HTTP statuses ([`ErrorKind::status`]) and builds
//! the JSON envelope ([`envelope`], `{"success":false,"error":{...}}`) that
//! both the proxy and the admin API send.

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::body::Body;

/// Who is at fault for a failure: what an access log or an alert needs to
/// tell a misbehaving client from a broken upstream or a gateway problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The request was malformed, too large, unauthorized, over a limit, or
    /// asked for something that does not exist.
    Client,
    /// perfgate itself: overloaded, its job store or reload unavailable, a bug.
    Gateway,
    /// The upstream: unreachable, too slow, broke the exchange, or paused by
    /// its breaker or health checks.
    Upstream,
}

impl Side {
    /// A stable lower-case label (for logs and metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Gateway => "gateway",
            Side::Upstream => "upstream",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, and therefore which status the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or conflicts with itself → 400.
    BadRequest,
    /// A missing or invalid bearer token where one is required → 401.
    Unauthorized,
    /// A method perfgate never forwards (CONNECT, TRACE), or one the
    /// matching route does not take (it never falls through to a less
    /// specific route) → 405 with `Allow`.
    MethodNotAllowed,
    /// The request body exceeds the configured limit → 413.
    PayloadTooLarge,
    /// The request body did not arrive within `server.request_body_timeout` → 408.
    RequestTimeout,
    /// A batch item's answer does not fit in `batch.max_response_bytes`
    /// (reported inside the batch answer) → 413.
    BatchTooLarge,
    /// The request target is longer than `server.max_uri_bytes` → 414.
    UriTooLong,
    /// A rate limit refused the request → 429.
    TooManyRequests,
    /// More header fields than `server.max_header_count` → 431.
    HeadersTooLarge,
    /// No route and no default upstream → 404.
    NoRoute,
    /// The upstream could not be reached or broke the exchange → 502.
    UpstreamUnavailable,
    /// The upstream did not answer in time → 504.
    UpstreamTimeout,
    /// `Cache-Control: only-if-cached` and nothing usable is stored → 504.
    NotCached,
    /// Too many requests in flight (`server.max_concurrent_requests`), or
    /// no slot in the pool's `max_connections` in time → 503.
    Overloaded,
    /// The upstream's circuit breaker is open → 503.
    CircuitOpen,
    /// Every server of the pool is down or ejected → 503.
    NoHealthyUpstream,
    /// No such async job → 404.
    NotFound,
    /// The job queue holds `jobs.max_queued` jobs → 503.
    QueueFull,
    /// The job store cannot be reached (Redis down, disk error) → 503.
    StoreUnavailable,
    /// A bug or an unexpected failure inside perfgate → 500.
    Internal,
    /// A batch item's response body could not be read (or exceeds the
    /// per-item limit; reported inside the batch answer) → 502.
    BatchItemFailed,
    /// Admin API: the caller may not do this (no token configured and not
    /// loopback, read-only, cross-origin) → 403.
    Forbidden,
    /// Admin API: the `Host` is not one the admin API answers to → 421.
    UnknownHost,
    /// Admin API: a mutating request whose body is not JSON → 415.
    UnsupportedMediaType,
    /// Admin API: a reload found problems in the new configuration → 400.
    InvalidConfig,
    /// Admin API: this process cannot reload its configuration → 409.
    ReloadUnavailable,
    /// Admin API: the feature behind the endpoint is not running (e.g.
    /// the performance windows) → 503.
    Disabled,
}

impl ErrorKind {
    /// The status this kind maps to.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest | ErrorKind::InvalidConfig => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::PayloadTooLarge | ErrorKind::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::Overloaded
            | ErrorKind::CircuitOpen
            | ErrorKind::NoHealthyUpstream
            | ErrorKind::QueueFull
            | ErrorKind::StoreUnavailable
            | ErrorKind::Disabled => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NoRoute | ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout | ErrorKind::NotCached => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::BatchItemFailed => StatusCode::BAD_GATEWAY,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::ReloadUnavailable => StatusCode::CONFLICT,
        }
    }

    /// Who is at fault, unless the raiser knows better ([`Error::on_side`]).
    pub fn side(self) -> Side {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::Unauthorized
            | ErrorKind::MethodNotAllowed
            | ErrorKind::PayloadTooLarge
            | ErrorKind::RequestTimeout
            | ErrorKind::BatchTooLarge
            | ErrorKind::UriTooLong
            | ErrorKind::TooManyRequests
            | ErrorKind::HeadersTooLarge
            | ErrorKind::NoRoute
            | ErrorKind::NotFound
            // The client asked for a stored answer only (`only-if-cached`).
            | ErrorKind::NotCached
            | ErrorKind::Forbidden
            | ErrorKind::UnknownHost
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::InvalidConfig => Side::Client,
            ErrorKind::Overloaded
            | ErrorKind::QueueFull
            | ErrorKind::StoreUnavailable
            | ErrorKind::Internal
            | ErrorKind::ReloadUnavailable
            | ErrorKind::Disabled => Side::Gateway,
            ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamTimeout
            | ErrorKind::CircuitOpen
            | ErrorKind::NoHealthyUpstream
            | ErrorKind::BatchItemFailed => Side::Upstream,
        }
    }

    /// The `Retry-After` a failure of this kind carries unless its raiser
    /// sets one: only kinds whose wait does not depend on the occasion
    /// (a rate limit or an open breaker knows its own).
    pub fn retry(self) -> Option<Duration> {
        match self {
            ErrorKind::Overloaded | ErrorKind::NoHealthyUpstream => Some(Duration::from_secs(1)),
            ErrorKind::QueueFull => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// Whether the client connection is closed after this error: a
    /// malformed or refused head whose body may not have been read.
    pub fn closes(self) -> bool {
        matches!(
            self,
            ErrorKind::BadRequest
                | ErrorKind::PayloadTooLarge
                | ErrorKind::UriTooLong
                | ErrorKind::HeadersTooLarge
                | ErrorKind::MethodNotAllowed
        )
    }

    /// The machine-readable `error.code` of the envelope.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::BatchTooLarge => "batch_too_large",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::TooManyRequests => "rate_limited",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::NoHealthyUpstream => "no_healthy_upstream",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::NotCached => "not_cached",
            ErrorKind::NotFound => "not_found",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::StoreUnavailable => "job_store_unavailable",
            ErrorKind::Internal => "internal_error",
            ErrorKind::BatchItemFailed => "batch_item_failed",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::UnknownHost => "unknown_host",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::ReloadUnavailable => "reload_unavailable",
            ErrorKind::Disabled => "disabled",
        }
    }
}

/// The JSON error envelope, `{"success": false, "error": {"code": …,
/// "message": …}}` plus the request `field` at fault (400s) and `details`
/// when given: the one builder, for the proxy's own answers, batch items and
/// the admin API.
pub fn envelope(
    kind: ErrorKind,
    message: &str,
    field: Option<&str>,
    details: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut error = serde_json::json!({ "code": kind.code(), "message": message });
    if let Some(f) = field {
        error["field"] = serde_json::json!(f);
    }
    if let Some(d) = details {
        error["details"] = d;
    }
    serde_json::json!({ "success": false, "error": error })
}

/// A failure perfgate answers itself (proxy and admin API alike).
#[derive(Debug, Clone)]
pub struct Error {
    /// The kind, which fixes the status.
    pub kind: ErrorKind,
    /// Who is at fault; [`ErrorKind::side`] unless the raiser knows better.
    pub side: Side,
    /// Sent as `Retry-After` when set; [`ErrorKind::retry`] unless the
    /// raiser knows better.
    pub retry: Option<Duration>,
    /// A message safe to show to the client (no internal details).
    pub message: String,
    /// Extra response headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The name [`Error`] had before admin and upstream failures joined it.
pub type GatewayError = Error;

impl Error {
    /// Why a request body read whole ([`crate::body::read_bounded`]) gave
    /// nothing: 413 over `max`, 400 when it broke off, 408 past its deadline.
    pub fn body_read(e: crate::body::ReadError, max: u64) -> Self {
        use crate::body::ReadError;
        match e {
            ReadError::TooLarge => Self::new(
                ErrorKind::PayloadTooLarge,
                format!("the request body is larger than {max} bytes"),
            ),
            ReadError::Broken(_) => Self::new(ErrorKind::BadRequest, "the request body broke off"),
            ReadError::TimedOut(d) => Self::new(
                ErrorKind::RequestTimeout,
                format!("the request body did not arrive within {d:?}"),
            ),
        }
    }

    /// A new error of `kind` with a client-safe message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            side: kind.side(),
            retry: kind.retry(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Sets `Retry-After` (whole seconds, at least 1).
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry = Some(d);
        self
    }

    /// Puts the fault on `side` where the kind alone says otherwise (a
    /// pool out of connections is the upstream's limit, not the gateway's).
    pub fn on_side(mut self, side: Side) -> Self {
        self.side = side;
        self
    }

    /// The JSON envelope of this error, with no field or details.
    pub fn envelope(&self) -> serde_json::Value {
        envelope(self.kind, &self.message, None, None)
    }

    /// Adds a header to the error response (e.g. `RateLimit`, `WWW-Authenticate`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The response: status, envelope, never cached.
    pub fn into_response(self) -> Response<Body> {
        let body = self.envelope();
        let mut rsp = Response::new(Body::full(body.to_string()));
        *rsp.status_mut() = self.kind.status();
        let h = rsp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.kind.closes() {
            // The head or body could not be trusted: nothing after it on
            // this connection can be either (ignored on HTTP/2).
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(d) = self.retry {
            // Rounded up: a client retrying at the given second must not be early.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            h.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        for (name, value) in self.headers {
            h.append(name, value);
        }
        rsp
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body read past its deadline is the client's 408 (the read itself
    /// is tested in `body.rs`: `a_stalled_body_ends_at_the_deadline`).
    #[test]
    fn a_body_read_past_its_deadline_is_a_408() {
        let deadline = std::time::Duration::from_secs(10);
        let err = Error::body_read(crate::body::ReadError::TimedOut(deadline), 1024);
        assert_eq!(err.kind.status(), http::StatusCode::REQUEST_TIMEOUT);
    }

    #[test]
    fn side_and_retry_come_from_the_kind_unless_the_raiser_knows_better() {
        let e = Error::new(ErrorKind::Overloaded, "busy");
        assert_eq!(
            (e.side, e.retry),
            (Side::Gateway, Some(Duration::from_secs(1)))
        );
        let e = e
            .on_side(Side::Upstream)
            .retry_after(Duration::from_secs(3));
        assert_eq!(
            (e.side, e.retry),
            (Side::Upstream, Some(Duration::from_secs(3)))
        );
        let e = Error::new(ErrorKind::BadRequest, "no");
        assert_eq!((e.side, e.retry), (Side::Client, None));
    }

    #[test]
    fn the_envelope_names_the_field_only_when_given() {
        let v = envelope(ErrorKind::BadRequest, "bad", Some("paths"), None);
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["code"], "bad_request");
        assert_eq!(v["error"]["field"], "paths");
        let v = Error::new(ErrorKind::NoRoute, "none").envelope();
        assert!(v["error"].get("field").is_none());
    }
}
