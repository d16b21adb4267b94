//! The JSON envelope every admin endpoint answers with:
//! `{"success": true, "data": …}` or
//! `{"success": false, "error": {"code": …, "message": …, "field": …}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// A successful answer.
pub fn ok<T: Serialize>(data: T) -> Response {
    Json(json!({ "success": true, "data": data })).into_response()
}

/// A failed admin request.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The request field at fault, for 400s.
    pub field: Option<String>,
    /// More about the failure (e.g. every problem of a rejected config).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// 400 naming the field at fault.
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            field: Some(field.into()),
            details: None,
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            field: None,
            details: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(f) = self.field {
            error["field"] = json!(f);
        }
        if let Some(d) = self.details {
            error["details"] = d;
        }
        (
            self.status,
            Json(json!({ "success": false, "error": error })),
        )
            .into_response()
    }
}

/// The fallback for unknown admin paths.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such admin endpoint")
}
