//! Request guards run before anything else: framing conflicts (found by
//! `framing.rs` below hyper), missing `Host`, header count, target length
//! and body size limits (hyper already rejects malformed request lines and
//! oversized heads with 400/431).

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Version};

use crate::policy::Guards;
use perfgate_http::error::{Error, ErrorKind};
use perfgate_http::framing::{CONFLICT_HEADER, conflict_marker};

/// The methods perfgate forwards (`Allow` of a refused CONNECT or TRACE).
const ALLOWED: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// The guard phase: checks the head, removes hop-by-hop fields, and
/// normalizes the path once for everything after (route, limits, clamps,
/// cache key, upstream: `target.rs`). The request is changed in place (not
/// moved: moving it showed as memcpy on the hit path). Returns the
/// request body's declared length, as [`check`] does.
pub(crate) fn admit<B>(
    req: &mut Request<B>,
    guards: &Guards,
    keys: &perfgate_cache::key::KeyNormalizer,
) -> Result<u64, Error> {
    let declared = check(req, guards)?;
    // Hop-by-hop fields go first, before perfgate adds its own (claims,
    // forwarding fields, Via): a client naming those in `Connection`
    // cannot remove them. `Upgrade` stays for the cache eligibility check;
    // it is removed with the rest on the way upstream.
    perfgate_http::headers::strip_hop_by_hop_keeping(req.headers_mut(), true);
    crate::target::normalize(keys, req.uri_mut())?;
    Ok(declared)
}

/// Checks a request head; the error says what the client got wrong.
/// Returns the body's declared `Content-Length`, once it is known valid
/// and within `max_body_bytes` (0 without one).
pub(crate) fn check<B>(req: &Request<B>, guards: &Guards) -> Result<u64, Error> {
    let max_body = guards.max_body_bytes;
    // A reverse proxy has no use for tunnels (CONNECT) and must not echo
    // a request with its credentials back (TRACE, RFC 9110 §9.3.8).
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Err(Error::new(
            ErrorKind::MethodNotAllowed,
            format!("{} is not allowed", req.method()),
        )
        .with_header(http::header::ALLOW, HeaderValue::from_static(ALLOWED)));
    }
    // RFC 9112 §3.2: origin-form or absolute-form (hyper also accepts
    // authority-form and `*` on any method; the asterisk-form of a
    // server-wide OPTIONS has no route to go to).
    let uri = req.uri();
    let origin_or_absolute =
        uri.path().starts_with('/') && (uri.scheme().is_some() || uri.authority().is_none());
    if !origin_or_absolute {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "the request target is not in origin or absolute form",
        ));
    }
    let h = req.headers();
    if h.len() > guards.max_header_count {
        return Err(Error::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "{} header fields exceed the limit of {}",
                h.len(),
                guards.max_header_count
            ),
        ));
    }
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > guards.max_uri_bytes {
        return Err(Error::new(
            ErrorKind::UriTooLong,
            format!(
                "the request target of {target} bytes exceeds the limit of {} bytes",
                guards.max_uri_bytes
            ),
        ));
    }
    // The framing check below hyper replaced a head that had both
    // Content-Length and Transfer-Encoding (see `framing.rs`).
    if h.get(CONFLICT_HEADER) == Some(conflict_marker()) {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "both Content-Length and Transfer-Encoding are present",
        ));
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host, or with several,
    // gets a 400 (two Hosts let a cache and an origin disagree on the target).
    let mut hosts = h.get_all(HOST).iter();
    if req.version() == Version::HTTP_11 && hosts.next().is_none() {
        return Err(Error::new(ErrorKind::BadRequest, "missing Host header"));
    }
    if hosts.next().is_some() {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "more than one Host header",
        ));
    }
    // RFC 9112 §6.1: a request's framing is chunked or Content-Length.
    // perfgate decodes no other transfer coding, so the only one accepted
    // is a single `chunked` (`gzip, chunked` would reach the upstream
    // still gzip-coded, unmarked; `chunked, chunked` is invalid), and
    // HTTP/1.0 has no Transfer-Encoding at all.
    if h.contains_key(TRANSFER_ENCODING) {
        let mut codings = h
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii);
        let only_chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if req.version() == Version::HTTP_10 || !only_chunked {
            return Err(Error::new(
                ErrorKind::BadRequest,
                "unsupported Transfer-Encoding",
            ));
        }
    }
    if let Some(len) = h.get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::new(ErrorKind::BadRequest, "invalid Content-Length"))?;
        if len > max_body {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!("request body of {len} bytes exceeds the limit of {max_body} bytes"),
            ));
        }
        return Ok(len);
    }
    Ok(0)
}
