//! Header rules of a proxy: hop-by-hop fields (RFC 9110 §7.6.1), the
//! framing of requests sent upstream, `Via`, and the forwarding fields
//! (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`).

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::Body as _;

use crate::body::Body;

/// Fields that describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
];

/// `X-Forwarded-For`.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Port`.
pub(crate) const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Forwarded-Prefix`.
pub(crate) const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// `X-Real-IP`.
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `Proxy-Connection`, a non-standard hop-by-hop field some clients send.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Every field that tells the upstream who the client is or how it was
/// reached (`forwarded.trusted_headers` names a subset).
pub const FORWARDING: [HeaderName; 7] = [
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    X_FORWARDED_PREFIX,
    X_REAL_IP,
];

/// The forwarding fields that can change what the upstream answers (links,
/// redirects) and so, when a trusted proxy passes them, are part of the
/// cache key (`X-Forwarded-For` and `X-Real-IP` name the client only).
const KEYED_FORWARDING: [HeaderName; 5] = [
    header::FORWARDED,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    X_FORWARDED_PREFIX,
];

/// Sets the framing of a request going upstream from the body actually
/// sent, whatever the head said before: `Content-Length` and
/// `Transfer-Encoding` are never copied from a client (a `Content-Length`
/// left on a request whose body was dropped makes the upstream read the
/// next request on the connection as this one's body).
///
/// - no body: no framing field, except `Content-Length: 0` for methods
///   that define a meaning for content (POST, PUT, PATCH, extensions), as
///   RFC 9110 §8.6 asks of user agents;
/// - a body of known size (a buffer, or a stream with an exact size hint,
///   such as a client body with a `Content-Length` hyper has checked):
///   `Content-Length` of that size;
/// - any other stream: `Transfer-Encoding: chunked`.
pub fn set_framing(h: &mut HeaderMap, method: &Method, body: &Body) {
    // One pass over the names present; removals (hashed lookups) only for
    // what is there: most requests perfgate sends carry no framing field.
    let (mut framing, mut underscore) = (false, false);
    for k in h.keys() {
        framing |= *k == header::CONTENT_LENGTH || *k == header::TRANSFER_ENCODING;
        underscore |= k.as_str().contains('_');
    }
    if framing {
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::TRANSFER_ENCODING);
    }
    // `Content_Length` and `Transfer_Encoding` are framing to upstreams
    // that read `_` as `-` (CGI/WSGI-style): never forwarded.
    if underscore {
        let lookalikes: Vec<HeaderName> = h
            .keys()
            .filter(|k| {
                let k = k.as_str();
                k.eq_ignore_ascii_case("content_length")
                    || k.eq_ignore_ascii_case("transfer_encoding")
            })
            .cloned()
            .collect();
        for k in lookalikes {
            h.remove(k);
        }
    }
    if body.is_end_stream() {
        if !matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::DELETE
                | Method::OPTIONS
                | Method::TRACE
                | Method::CONNECT
        ) {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
        }
        return;
    }
    match body.size_hint().exact() {
        Some(n) => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            h.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
}

/// Removes hop-by-hop fields, including those named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    strip_hop_by_hop_keeping(h, false);
}

/// [`strip_hop_by_hop`], keeping `Upgrade` when `keep_upgrade` (the cache
/// check still needs to see it; it is removed on the way upstream).
pub fn strip_hop_by_hop_keeping(h: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names present, then hashed removals only for what
    // is there: most requests carry none, and most responses only
    // `Connection: keep-alive` (callgrind: ~2.5k instructions per
    // pass-through request for ten removals).
    let hop = HOP_BY_HOP;
    let mut present = 0u16;
    for k in h.keys() {
        if let Some(i) = hop.iter().position(|n| n == k) {
            present |= 1 << i;
        } else if *k == PROXY_CONNECTION {
            present |= 1 << hop.len();
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // `Connection` (index 0) names further fields of this connection.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !hop.contains(n)) // those present go below, Upgrade kept when asked
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for (i, n) in hop.iter().enumerate() {
        if present & (1 << i) != 0 && !(keep_upgrade && *n == header::UPGRADE) {
            h.remove(n);
        }
    }
    if present & (1 << hop.len()) != 0 {
        h.remove(PROXY_CONNECTION);
    }
}

/// Rewrites the forwarding headers of a request going upstream. From a
/// trusted peer, the fields named in `pass` are kept (and the peer appended
/// to `X-Forwarded-For`); every other forwarding field, and all of them
/// from anyone else, are removed, and perfgate's own
/// `X-Forwarded-For/Proto/Host` are set.
pub fn set_forwarded(
    h: &mut HeaderMap,
    peer: &HeaderValue,
    trusted: bool,
    pass: &[HeaderName],
    proto: &'static str,
) {
    let host = h.get(header::HOST).cloned();
    // One pass over the names present; hashed removals only when a client
    // sent a forwarding field (most send none).
    let forwarding = FORWARDING;
    if h.keys().any(|k| forwarding.contains(k)) {
        for name in &forwarding {
            if !(trusted && pass.contains(name)) {
                h.remove(name);
            }
        }
    }
    if trusted {
        let prior: Vec<&str> = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let v = if prior.is_empty() {
            peer.clone()
        } else {
            let joined = format!(
                "{}, {}",
                prior.join(", "),
                String::from_utf8_lossy(peer.as_bytes())
            );
            HeaderValue::from_str(&joined).unwrap_or_else(|_| peer.clone())
        };
        h.insert(X_FORWARDED_FOR, v);
        if !h.contains_key(&X_FORWARDED_PROTO) {
            h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if !h.contains_key(&X_FORWARDED_HOST)
            && let Some(host) = host
        {
            h.insert(X_FORWARDED_HOST, host);
        }
    } else {
        h.insert(X_FORWARDED_FOR, peer.clone());
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        match host {
            Some(v) => h.insert(X_FORWARDED_HOST, v),
            None => h.remove(X_FORWARDED_HOST),
        };
    }
}

/// The part of the cache key that comes from forwarding fields: the values
/// of those a trusted peer passes upstream and that can change the answer
/// (`Forwarded`, `X-Forwarded-Proto/Host/Port/Prefix`). None when the peer
/// is not trusted (they are all replaced or removed) or sent none.
pub fn forwarded_key(h: &HeaderMap, trusted: bool, pass: &[HeaderName]) -> Option<String> {
    if !trusted {
        return None;
    }
    let mut part = String::new();
    for name in KEYED_FORWARDING.iter().filter(|n| pass.contains(n)) {
        for v in h.get_all(name) {
            part.push_str(name.as_str());
            part.push('=');
            part.push_str(&String::from_utf8_lossy(v.as_bytes()));
            part.push('\n');
        }
    }
    (!part.is_empty()).then_some(part)
}

/// Removes the upstream's cache tags (`Surrogate-Key`, `Cache-Tag`): they
/// are meant for caches, not clients.
pub fn strip_tag_headers(h: &mut HeaderMap) {
    h.remove("surrogate-key");
    h.remove("cache-tag");
}

/// Appends `value` (e.g. `1.1 perfgate`) to `Via`.
pub fn append_via(h: &mut HeaderMap, value: &HeaderValue) {
    h.append(header::VIA, value.clone());
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the right-most `X-Forwarded-For` entry that is not itself a trusted
/// proxy (entries to its left could be written by anyone).
pub fn client_ip(
    h: &HeaderMap,
    peer: std::net::IpAddr,
    trusted: &[perfgate_config::IpNet],
) -> std::net::IpAddr {
    if !trusted.iter().any(|n| n.contains(peer)) {
        return peer;
    }
    let mut last = peer;
    let entries: Vec<&str> = h
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for e in entries.iter().rev() {
        let Ok(ip) = e.parse::<std::net::IpAddr>() else {
            // Garbage: stop at the last address we could trust.
            return last;
        };
        if !trusted.iter().any(|n| n.contains(ip)) {
            return ip;
        }
        last = ip;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_fields() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn untrusted_peer_values_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(header::HOST, HeaderValue::from_static("api.example"));
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            false,
            &FORWARDING,
            "http",
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[&X_FORWARDED_HOST], "api.example");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn trusted_peer_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            true,
            &FORWARDING,
            "http",
        );
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    fn framed(method: Method, body: Body, client: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in client {
            h.append(*n, HeaderValue::from_static(v));
        }
        set_framing(&mut h, &method, &body);
        h
    }

    #[test]
    fn framing_comes_from_the_body_never_from_the_client() {
        // The reproduction of issue #11 item 1: a GET whose body was
        // dropped (cache fill) kept the client's Content-Length.
        let h = framed(Method::GET, Body::Empty, &[("content-length", "25")]);
        assert!(!h.contains_key(header::CONTENT_LENGTH));
        assert!(!h.contains_key(header::TRANSFER_ENCODING));
        let h = framed(
            Method::GET,
            Body::Empty,
            &[
                ("transfer-encoding", "chunked"),
                ("content-length", "5"),
                ("content_length", "5"),
                ("transfer_encoding", "chunked"),
            ],
        );
        assert!(h.is_empty(), "{h:?}");
        // POST/PUT/PATCH without a body say so.
        for m in [Method::POST, Method::PUT, Method::PATCH] {
            let h = framed(m, Body::Empty, &[("content-length", "25")]);
            assert_eq!(h[header::CONTENT_LENGTH], "0");
            assert_eq!(h.get_all(header::CONTENT_LENGTH).iter().count(), 1);
        }
        // A buffer: its exact length, whatever was declared.
        let h = framed(
            Method::POST,
            Body::full("hello"),
            &[("content-length", "25"), ("content-length", "5")],
        );
        assert_eq!(h.get_all(header::CONTENT_LENGTH).iter().count(), 1);
        assert_eq!(h[header::CONTENT_LENGTH], "5");
    }

    #[test]
    fn streams_are_framed_by_their_size_hint() {
        use http_body_util::{BodyExt as _, Full, StreamBody};
        let exact = Body::stream(Full::new(bytes::Bytes::from_static(b"abc")));
        let h = framed(Method::PUT, exact, &[("transfer-encoding", "chunked")]);
        assert_eq!(h[header::CONTENT_LENGTH], "3");
        assert!(!h.contains_key(header::TRANSFER_ENCODING));
        let frames = futures_util::stream::iter(vec![Ok::<_, std::convert::Infallible>(
            http_body::Frame::data(bytes::Bytes::from_static(b"abc")),
        )]);
        let unknown = Body::stream(StreamBody::new(frames).boxed_unsync());
        let h = framed(Method::GET, unknown, &[("content-length", "3")]);
        assert_eq!(h[header::TRANSFER_ENCODING], "chunked");
        assert!(!h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn forwarding_fields_of_untrusted_peers_are_all_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example"));
        for n in &FORWARDING {
            h.insert(n.clone(), HeaderValue::from_static("evil.example"));
        }
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            false,
            &FORWARDING,
            "http",
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[&X_FORWARDED_HOST], "api.example");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        for n in [
            header::FORWARDED,
            X_FORWARDED_PORT,
            X_FORWARDED_PREFIX,
            X_REAL_IP,
        ] {
            assert!(!h.contains_key(&n), "{n} passed");
        }
        assert_eq!(forwarded_key(&h, false, &FORWARDING), None);
    }

    #[test]
    fn trusted_peers_pass_only_the_configured_fields() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("front.example"));
        h.insert(X_FORWARDED_PREFIX, HeaderValue::from_static("/v2"));
        h.insert(X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        let pass = [X_FORWARDED_FOR, X_FORWARDED_HOST];
        set_forwarded(
            &mut h,
            &HeaderValue::from_static("10.0.0.1"),
            true,
            &pass,
            "http",
        );
        assert_eq!(h[&X_FORWARDED_HOST], "front.example");
        assert!(!h.contains_key(&X_FORWARDED_PREFIX));
        assert!(!h.contains_key(&X_REAL_IP));
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        // What passes and can change the answer is keyed.
        let k = forwarded_key(&h, true, &pass).expect("keyed");
        assert!(k.contains("front.example"), "{k}");
        assert!(
            !k.contains("http\n"),
            "perfgate's own proto is not a client value: {k}"
        );
    }
}
