//! Header rules of a proxy: hop-by-hop fields (RFC 9110 §7.6.1), `Via`, and
//! `X-Forwarded-For/Proto/Host`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

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
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `Proxy-Connection`, a non-standard hop-by-hop field some clients send.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop fields, including those named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    h.remove(PROXY_CONNECTION);
}

/// Rewrites the forwarding headers of a request going upstream. A trusted
/// peer's values are kept (and the peer appended to `X-Forwarded-For`);
/// anyone else's are replaced.
pub fn set_forwarded(h: &mut HeaderMap, peer: &HeaderValue, trusted: bool, proto: &'static str) {
    let host = h.get(header::HOST).cloned();
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
pub(crate) fn client_ip(
    h: &HeaderMap,
    conn: &crate::Conn,
    trusted: &[perfgate_config::IpNet],
) -> std::net::IpAddr {
    let peer = conn.peer.ip();
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
        set_forwarded(&mut h, &HeaderValue::from_static("10.0.0.1"), false, "http");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[&X_FORWARDED_HOST], "api.example");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn trusted_peer_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        set_forwarded(&mut h, &HeaderValue::from_static("10.0.0.1"), true, "http");
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }
}
