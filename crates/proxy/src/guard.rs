//! Request guards run before anything else: framing conflicts (found by
//! `framing.rs` below hyper), missing `Host`, and body size limits (hyper
//! already rejects malformed request lines and oversized heads with 400/431).

use http::header::{CONTENT_LENGTH, HOST};
use http::{Request, Version};

use crate::error::{ErrorKind, GatewayError};
use crate::framing::{CONFLICT_HEADER, conflict_marker};

/// Checks a request head; the error says what the client got wrong.
pub fn check<B>(req: &Request<B>, max_body: u64) -> Result<(), GatewayError> {
    let h = req.headers();
    // The framing check below hyper replaced a head that had both
    // Content-Length and Transfer-Encoding (see `framing.rs`).
    if h.get(CONFLICT_HEADER) == Some(conflict_marker()) {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            "both Content-Length and Transfer-Encoding are present",
        ));
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host gets a 400.
    if req.version() == Version::HTTP_11 && !h.contains_key(HOST) {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            "missing Host header",
        ));
    }
    if let Some(len) = h.get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| GatewayError::new(ErrorKind::BadRequest, "invalid Content-Length"))?;
        if len > max_body {
            return Err(GatewayError::new(
                ErrorKind::PayloadTooLarge,
                format!("request body of {len} bytes exceeds the limit of {max_body} bytes"),
            ));
        }
    }
    Ok(())
}
