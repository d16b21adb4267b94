//! Recognising the same work: a submission is reduced to a canonical form
//! (method, target, body) and hashed. JSON bodies are canonicalised (keys
//! sorted, no whitespace); for link analysis the URL inside the body is
//! normalised too, so `HTTPS://Example.com:443/a?b=2&a=1&utm_source=x#top`
//! and `https://example.com/a?a=1&b=2` are one job.

use perfgate_config::DedupMode;
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_128;

/// Query parameters that only track where a click came from.
const TRACKING: [&str; 8] = [
    "utm_", "fbclid", "gclid", "mc_cid", "mc_eid", "igshid", "msclkid", "_ga",
];

/// The de-duplication key of a submission, or `None` when the route does
/// not de-duplicate.
pub fn key(
    mode: DedupMode,
    url_field: &str,
    method: &str,
    target: &str,
    body: &[u8],
) -> Option<String> {
    let json = serde_json::from_slice(body).ok();
    key_parsed(mode, url_field, method, target, body, json, None)
}

/// [`key`] for a body the caller already parsed (`json`: the body as JSON,
/// `None` when it is not JSON), so a submission is parsed once. `caller`
/// (who submits, for per-caller de-duplication) makes the same work of
/// two callers two keys; `None` shares the key with everyone.
pub fn key_parsed(
    mode: DedupMode,
    url_field: &str,
    method: &str,
    target: &str,
    body: &[u8],
    json: Option<Value>,
    caller: Option<&str>,
) -> Option<String> {
    let body = match mode {
        DedupMode::Off => return None,
        DedupMode::Request => canonical_body(body, json, None),
        DedupMode::Url => canonical_body(body, json, Some(url_field)),
    };
    let caller = caller.unwrap_or("");
    let mut material =
        Vec::with_capacity(9 + caller.len() + method.len() + target.len() + body.len() + 2);
    // Length-prefixed, so no caller can be read as the start of a method.
    material.push(u8::from(!caller.is_empty()));
    material.extend_from_slice(&(caller.len() as u64).to_be_bytes());
    material.extend_from_slice(caller.as_bytes());
    material.extend_from_slice(method.as_bytes());
    material.push(b' ');
    material.extend_from_slice(target.as_bytes());
    material.push(b'\n');
    material.extend_from_slice(&body);
    Some(format!("{:032x}", xxh3_128(&material)))
}

/// Canonical JSON (with the URL field normalised), or the bytes as they are
/// when the body is not JSON.
fn canonical_body(body: &[u8], json: Option<Value>, url_field: Option<&str>) -> Vec<u8> {
    let Some(mut v) = json else {
        return body.to_vec();
    };
    if let Some(field) = url_field
        && let Some(Value::String(url)) = v.get_mut(field)
    {
        *url = normalize_url(url);
    }
    // serde_json's map is ordered by key (no `preserve_order`), so this
    // writes keys sorted at every level.
    serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
}

/// Scheme and host lowercased, default port dropped, query sorted without
/// tracking parameters, fragment dropped, empty path written as `/`.
/// Something that is not an absolute http(s) URL is only trimmed.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return url.to_string();
    }
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (authority, path_query) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let path = if path.is_empty() { "/" } else { path };
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(n, _)| n);
            !TRACKING.iter().any(|t| {
                if t.ends_with('_') {
                    name.starts_with(t)
                } else {
                    name == *t
                }
            })
        })
        .collect();
    params.sort_unstable();
    let mut out = format!("{scheme}://{authority}{path}");
    if !params.is_empty() {
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_name_the_same_page_normalize_alike() {
        let a = normalize_url("HTTPS://Example.COM:443/a?b=2&a=1&utm_source=x&fbclid=y#top");
        assert_eq!(a, "https://example.com/a?a=1&b=2");
        assert_eq!(
            normalize_url("http://example.com:80"),
            "http://example.com/"
        );
        assert_eq!(
            normalize_url("http://example.com:8080/x"),
            "http://example.com:8080/x"
        );
        assert_eq!(normalize_url("  not a url "), "not a url");
        assert_eq!(normalize_url("ftp://Example.com/X"), "ftp://Example.com/X");
        // The path keeps its case: servers may treat it as significant.
        assert_eq!(
            normalize_url("https://e.com/CaseSensitive"),
            "https://e.com/CaseSensitive"
        );
    }

    #[test]
    fn json_key_order_and_whitespace_do_not_matter() {
        let a = key(
            DedupMode::Request,
            "url",
            "POST",
            "/a",
            br#"{"b":1, "a":{"y":2,"x":1}}"#,
        );
        let b = key(
            DedupMode::Request,
            "url",
            "POST",
            "/a",
            br#"{"a":{"x":1,"y":2},"b":1}"#,
        );
        assert_eq!(a, b);
        let c = key(
            DedupMode::Request,
            "url",
            "POST",
            "/a",
            br#"{"a":{"x":1,"y":3},"b":1}"#,
        );
        assert_ne!(a, c);
        let other_target = key(
            DedupMode::Request,
            "url",
            "POST",
            "/b",
            br#"{"b":1,"a":{"y":2,"x":1}}"#,
        );
        assert_ne!(a, other_target);
    }

    #[test]
    fn url_mode_normalizes_the_url_field_only() {
        let a = key(
            DedupMode::Url,
            "url",
            "POST",
            "/analyze",
            br#"{"url":"HTTPS://E.com/p?utm_medium=m#f"}"#,
        );
        let b = key(
            DedupMode::Url,
            "url",
            "POST",
            "/analyze",
            br#"{"url":"https://e.com/p"}"#,
        );
        assert_eq!(a, b);
        let request_mode = key(
            DedupMode::Request,
            "url",
            "POST",
            "/analyze",
            br#"{"url":"HTTPS://E.com/p"}"#,
        );
        assert_ne!(request_mode, b);
        assert_eq!(key(DedupMode::Off, "url", "POST", "/analyze", b"{}"), None);
    }

    #[test]
    fn the_same_work_of_two_callers_is_two_keys() {
        let k = |caller: Option<&str>| {
            key_parsed(
                DedupMode::Request,
                "url",
                "POST",
                "/a",
                b"{}",
                Some(serde_json::json!({})),
                caller,
            )
        };
        assert_ne!(k(Some("user:alice")), k(Some("user:bob")));
        assert_ne!(k(Some("user:alice")), k(None));
        assert_ne!(k(Some("anonymous")), k(None));
        assert_eq!(k(Some("user:alice")), k(Some("user:alice")));
        assert_eq!(k(None), key(DedupMode::Request, "url", "POST", "/a", b"{}"));
    }

    #[test]
    fn non_json_bodies_compare_byte_for_byte() {
        let a = key(DedupMode::Request, "url", "POST", "/a", b"plain text");
        assert_eq!(
            a,
            key(DedupMode::Request, "url", "POST", "/a", b"plain text")
        );
        assert_ne!(
            a,
            key(DedupMode::Request, "url", "POST", "/a", b"plain  text")
        );
    }
}
