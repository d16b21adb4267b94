//! Gateway-generated failures and the one place that turns them into HTTP
//! statuses and the JSON envelope (`{"success":false,"error":{...}}`).

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::body::Body;

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
}

impl ErrorKind {
    /// The status this kind maps to.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
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
            | ErrorKind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::NoRoute | ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout | ErrorKind::NotCached => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
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
        }
    }
}

/// A failure the gateway answers itself.
#[derive(Debug, Clone)]
pub struct GatewayError {
    /// The kind, which fixes the status.
    pub kind: ErrorKind,
    /// A message safe to show to the client (no internal details).
    pub message: String,
    /// Sent as `Retry-After` when set.
    pub retry_after: Option<Duration>,
    /// Extra response headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl GatewayError {
    /// Why a request body read whole ([`crate::body::read_bounded`]) gave
    /// nothing: 413 over `max`, 400 when it broke off, 408 past its deadline.
    pub(crate) fn body_read(e: crate::body::ReadError, max: u64) -> Self {
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
            message: message.into(),
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// Adds `Retry-After` (whole seconds, at least 1).
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// Adds a header to the error response (e.g. `RateLimit`, `WWW-Authenticate`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The response: status, envelope, never cached.
    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({
            "success": false,
            "error": { "code": self.kind.code(), "message": self.message },
        });
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
        if let Some(d) = self.retry_after {
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

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for GatewayError {}
