//! Conditional requests: answering clients with `304 Not Modified` from a
//! stored response (RFC 9110 §13), revalidating with the origin, and
//! updating a stored response from a `304` (RFC 9111 §3.2, §4.3.4).

use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_RANGE,
    DATE, ETAG, EXPIRES, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
    LAST_MODIFIED, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Returns true when a GET or HEAD request's preconditions say the client's
/// copy is current, so the answer is `304` instead of the stored body.
///
/// `If-None-Match` is evaluated with weak comparison and, when present,
/// makes `If-Modified-Since` irrelevant (RFC 9110 §13.2.2). An invalid
/// `If-Modified-Since` date is ignored, as is one without a stored
/// `Last-Modified` to compare with.
pub fn not_modified(
    req_headers: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<&HeaderValue>,
) -> bool {
    let mut inm = req_headers.get_all(IF_NONE_MATCH).iter().peekable();
    if inm.peek().is_some() {
        return inm.any(|line| none_match_fails(line.as_bytes(), etag));
    }
    let Some(since) = req_headers.get(IF_MODIFIED_SINCE).and_then(parse_date) else {
        return false;
    };
    last_modified
        .and_then(parse_date)
        .is_some_and(|modified| modified <= since)
}

/// Returns true when the request carries `If-None-Match` or
/// `If-Modified-Since`, the preconditions [`not_modified`] evaluates.
pub fn has_conditionals(req_headers: &HeaderMap) -> bool {
    req_headers.contains_key(IF_NONE_MATCH) || req_headers.contains_key(IF_MODIFIED_SINCE)
}

/// Returns true when the request carries preconditions a cache does not
/// evaluate (`If-Match`, `If-Unmodified-Since`, `If-Range`); such requests
/// are best forwarded to the origin, which owns the current state.
pub fn has_other_preconditions(req_headers: &HeaderMap) -> bool {
    req_headers.contains_key(IF_MATCH)
        || req_headers.contains_key(IF_UNMODIFIED_SINCE)
        || req_headers.contains_key(IF_RANGE)
}

/// Builds the validators for a conditional request that revalidates a
/// stored response with the origin (RFC 9111 §4.3.1).
pub fn revalidation_headers(
    etag: Option<&HeaderValue>,
    last_modified: Option<&HeaderValue>,
) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    if let Some(etag) = etag {
        headers.insert(IF_NONE_MATCH, etag.clone());
    }
    if let Some(last_modified) = last_modified {
        headers.insert(IF_MODIFIED_SINCE, last_modified.clone());
    }
    headers
}

/// Fields of a `304` that never replace the stored ones: they describe the
/// stored body or the connection, not the representation's metadata.
/// `Set-Cookie` is kept out as well because a cookie for the client that
/// triggered the revalidation must not become part of the shared entry.
const KEEP_STORED: [HeaderName; 11] = [
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    TRANSFER_ENCODING,
    CONTENT_RANGE,
    CONNECTION,
    TE,
    TRAILER,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    SET_COOKIE,
];

/// Hop-by-hop fields that `http` has no constant for.
const HOP_BY_HOP_EXTRA: [&str; 2] = ["keep-alive", "proxy-connection"];

/// Updates a stored response's header fields from a `304 Not Modified`
/// (RFC 9111 §3.2): every field present in the `304` replaces all stored
/// lines of that name, except the fields in `KEEP_STORED`, the extra
/// hop-by-hop fields and any field the `304`'s `Connection` header names.
pub fn merge_304(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    for name in not_modified.keys() {
        if is_kept(name, not_modified) {
            continue;
        }
        stored.remove(name);
        for value in not_modified.get_all(name) {
            stored.append(name.clone(), value.clone());
        }
    }
}

/// The stored fields a `304` sent to a client should carry (RFC 9110
/// §15.4.5): the ones a `200` would have had that describe caching and
/// validation.
pub fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    const CARRIED: [HeaderName; 7] = [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ];
    let mut headers = HeaderMap::with_capacity(CARRIED.len());
    for name in CARRIED {
        for value in stored.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

fn is_kept(name: &HeaderName, not_modified: &HeaderMap) -> bool {
    KEEP_STORED.contains(name)
        || HOP_BY_HOP_EXTRA.contains(&name.as_str())
        || not_modified.get_all(CONNECTION).iter().any(|line| {
            line.as_bytes().split(|&b| b == b',').any(|token| {
                token
                    .trim_ascii()
                    .eq_ignore_ascii_case(name.as_str().as_bytes())
            })
        })
}

/// Returns true when one `If-None-Match` line matches the stored
/// representation, i.e. the condition "none match" is false.
fn none_match_fails(line: &[u8], etag: Option<&HeaderValue>) -> bool {
    let stored = etag.map(|e| opaque_tag(e.as_bytes().trim_ascii()));
    entity_tags(line).any(|tag| match tag {
        // `*` matches any current representation, and a stored one exists.
        b"*" => true,
        tag => stored.is_some_and(|stored| opaque_tag(tag) == stored),
    })
}

/// Strips the weakness indicator, which weak comparison ignores.
fn opaque_tag(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// Splits an entity-tag list on commas outside quoted opaque tags.
fn entity_tags(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = line;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_ascii_start();
            if let Some(tail) = rest.strip_prefix(b",") {
                rest = tail;
                continue;
            }
            if rest.is_empty() {
                return None;
            }
            let mut in_quotes = false;
            let end = rest
                .iter()
                .position(|&b| {
                    if b == b'"' {
                        in_quotes = !in_quotes;
                    }
                    b == b',' && !in_quotes
                })
                .unwrap_or(rest.len());
            let (tag, tail) = rest.split_at(end);
            rest = tail;
            return Some(tag.trim_ascii_end());
        }
    })
}

fn parse_date(value: &HeaderValue) -> Option<std::time::SystemTime> {
    value
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
}

#[cfg(test)]
mod tests;
