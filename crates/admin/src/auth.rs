//! Who may use the admin API, checked before any handler runs:
//!
//! - [`host`] (every endpoint but `/health`): the `Host` must be an IP
//!   literal, `localhost`, or a name in `admin.allowed_hosts`, else 421. A
//!   web page can only reach a loopback admin API through a name of its own
//!   that resolves there (DNS rebinding); such names are refused.
//! - [`require`] (everything but `/health`, `/health/dependencies` and,
//!   with `admin.metrics_public`, `/metrics`): with a token, a matching
//!   bearer token (401 otherwise). Without one, loopback clients only (403),
//!   and only to read unless `admin.allow_unauthenticated` (403).
//!   Mutating calls (anything but GET/HEAD/OPTIONS) must also carry their
//!   body as `application/json` (415) and, when a browser names an
//!   `Origin`, come from the admin API's own origin (403).
//!
//! The token is compared as keyed hashes of both sides (xxh3-128 with a
//! random per-process secret) with `subtle`: the time taken depends neither
//! on where the first differing byte is nor on the token's length.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::AdminState;
use perfgate_proxy::ErrorKind;

use crate::envelope::ApiError;

/// Refuses requests whose `Host` is not one the admin API answers to.
pub async fn host(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" || host_allowed(req.headers(), &state.allowed_hosts) {
        return next.run(req).await;
    }
    error(
        ErrorKind::UnknownHost,
        "this Host is not one the admin API answers to: use its IP address, localhost, or a name listed in admin.allowed_hosts",
    )
}

/// Lets the request through when it carries the token (or, with no token
/// configured, when it comes from loopback and may do what it asks).
pub async fn require(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    match &state.token {
        Some(token) => {
            let given = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if !given.is_some_and(|g| token_matches(g, token)) {
                let mut rsp = error(ErrorKind::Unauthorized, "a valid bearer token is required");
                rsp.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"perfgate-admin\""),
                );
                return rsp;
            }
        }
        None if !peer.ip().is_loopback() => {
            return error(
                ErrorKind::Forbidden,
                "no admin token is configured: the admin API answers only loopback clients",
            );
        }
        None if mutating && !state.allow_unauthenticated => {
            return error(
                ErrorKind::Forbidden,
                "no admin token is configured, so the admin API is read-only: set one \
                 (PERFGATE_ADMIN_TOKEN or admin.token_file), or admin.allow_unauthenticated = true",
            );
        }
        None => {}
    }
    if mutating {
        if let Some(rsp) = check_body_type(req.headers()) {
            return rsp;
        }
        if !same_origin(req.headers()) {
            return error(
                ErrorKind::Forbidden,
                "cross-origin requests cannot change the admin API",
            );
        }
    }
    next.run(req).await
}

/// A mutating request with a body (or any `Content-Type`) must say
/// `application/json`: a browser can send other types cross-origin without
/// asking first, never this one.
fn check_body_type(headers: &HeaderMap) -> Option<Response> {
    let has_body = headers.contains_key("transfer-encoding")
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let ct = headers.get(CONTENT_TYPE);
    if !has_body && ct.is_none() {
        return None;
    }
    let json = ct
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    (!json).then(|| {
        error(
            ErrorKind::UnsupportedMediaType,
            "send the request body as Content-Type: application/json",
        )
    })
}

/// No `Origin`, or one whose authority is this request's `Host`.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, a)| a);
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

/// Whether `Host` is an IP literal, `localhost`, or an allowed name (no
/// `Host` at all: not a browser, allowed).
fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers.get(HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let host = host.trim();
    let name = match host.rsplit_once(':') {
        // `[v6]:port`, `v4:port`, `name:port`; a bare `[v6]` has no port.
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
}

/// Compares keyed hashes of the two tokens in constant time.
fn token_matches(given: &str, token: &str) -> bool {
    let secret = secret();
    let a = xxhash_rust::xxh3::xxh3_128_with_secret(given.as_bytes(), secret);
    let b = xxhash_rust::xxh3::xxh3_128_with_secret(token.as_bytes(), secret);
    bool::from(a.to_le_bytes().ct_eq(&b.to_le_bytes()))
}

/// The per-process hashing secret: random, so nobody can choose tokens
/// whose hashes collide with, or reveal anything about, the real one.
fn secret() -> &'static [u8] {
    static SECRET: OnceLock<[u8; 192]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut s = [0u8; 192];
        if getrandom::fill(&mut s).is_err() {
            // No OS randomness: a per-process random state is still unknown
            // to clients.
            use std::hash::{BuildHasher, Hasher};
            for chunk in s.chunks_mut(8) {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u8(0);
                let v = h.finish().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
        }
        s
    })
}

fn error(kind: ErrorKind, message: &str) -> Response {
    ApiError::new(kind, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3cret-and-more", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn hosts() {
        let allowed = vec!["admin.internal".to_string(), "ops.example:9443".to_string()];
        let ok = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(HOST, h.parse().unwrap_or_else(|e| panic!("{e}")));
            host_allowed(&m, &allowed)
        };
        for h in [
            "127.0.0.1:9090",
            "10.0.0.5",
            "[::1]:9090",
            "[::1]",
            "localhost:9090",
            "LOCALHOST",
            "admin.internal:9090",
            "Admin.Internal",
            "ops.example:9443",
        ] {
            assert!(ok(h), "{h}");
        }
        for h in [
            "evil.example:9090",
            "127.0.0.1.evil.example",
            "ops.example:9090",
            "localhost.evil",
        ] {
            assert!(!ok(h), "{h}");
        }
        assert!(host_allowed(&HeaderMap::new(), &allowed));
    }
}
