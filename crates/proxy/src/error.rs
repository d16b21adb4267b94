//! Gateway-generated failures and the one place that turns them into HTTP
//! statuses and the JSON envelope (`{"success":false,"error":{...}}`).

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::body::Body;

/// What went wrong, and therefore which status the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or conflicts with itself → 400.
    BadRequest,
    /// The request body exceeds the configured limit → 413.
    PayloadTooLarge,
    /// No route and no default upstream → 404.
    NoRoute,
    /// The upstream could not be reached or broke the exchange → 502.
    UpstreamUnavailable,
    /// The upstream did not answer in time → 504.
    UpstreamTimeout,
    /// `Cache-Control: only-if-cached` and nothing usable is stored → 504.
    NotCached,
    /// A bug or an unexpected failure inside perfgate → 500.
    Internal,
}

impl ErrorKind {
    /// The status this kind maps to.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout | ErrorKind::NotCached => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `error.code` of the envelope.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::NotCached => "not_cached",
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
}

impl GatewayError {
    /// A new error of `kind` with a client-safe message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
        }
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
        if let Some(d) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(d.as_secs().max(1)));
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
