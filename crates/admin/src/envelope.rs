//! The JSON envelope every admin endpoint answers with:
//! `{"success": true, "data": …}` or
//! `{"success": false, "error": {"code": …, "message": …, "field": …}}`.
//! Failures are the proxy's [`Error`]: its [`ErrorKind`] fixes the status
//! and the code, and [`perfgate_proxy::envelope`] builds the body, so the
//! admin API and the gateway cannot drift apart.

use axum::Json;
use axum::response::{IntoResponse, Response};
use perfgate_proxy::{Error, ErrorKind};
use serde::Serialize;
use serde_json::json;

/// A successful answer.
pub fn ok<T: Serialize>(data: T) -> Response {
    Json(json!({ "success": true, "data": data })).into_response()
}

/// A failed admin request.
#[derive(Debug)]
pub struct ApiError {
    /// The failure: kind (status and code), side at fault, message (boxed:
    /// handlers return `Result<_, ApiError>` and the `Err` stays small).
    pub error: Box<Error>,
    /// The request field at fault, for 400s.
    pub field: Option<String>,
    /// More about the failure (e.g. every problem of a rejected config).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// A failure of `kind` with a message for the caller.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::new(kind, message).into()
    }

    /// 400 naming the field at fault.
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message).field(field)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Names the request field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds details.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl From<Error> for ApiError {
    /// The same failure as the proxy reports it. Its `Retry-After` and extra
    /// headers are not sent: admin clients get the status and the envelope.
    fn from(error: Error) -> Self {
        Self {
            error: Box::new(error),
            field: None,
            details: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = perfgate_proxy::envelope(
            self.error.kind,
            &self.error.message,
            self.field.as_deref(),
            self.details,
        );
        (self.error.kind.status(), Json(body)).into_response()
    }
}

/// The fallback for unknown admin paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such admin endpoint")
}
