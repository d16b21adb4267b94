//! Bearer-token authentication (constant-time comparison), or loopback-only
//! access when no token is configured.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::AdminState;
use crate::envelope::ApiError;

/// Lets the request through when it carries the token (or, with no token
/// configured, when it comes from loopback).
pub async fn require(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = match &state.token {
        Some(token) => req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))),
        None => peer.ip().is_loopback(),
    };
    if allowed {
        return next.run(req).await;
    }
    if state.token.is_none() {
        return ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "no admin token is configured: the admin API answers only loopback clients"
                .into(),
            field: None,
            details: None,
        }
        .into_response();
    }
    let mut rsp = ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: "a valid bearer token is required".into(),
        field: None,
        details: None,
    }
    .into_response();
    rsp.headers_mut().insert(
        WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"perfgate-admin\""),
    );
    rsp
}
