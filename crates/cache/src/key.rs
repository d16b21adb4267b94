//! Primary cache keys: the normalized request URI and its stable hash.
//!
//! Normalization only merges URIs that every origin must treat the same:
//! case of scheme and host, default ports, escapes of unreserved characters,
//! the case of hex digits, and the order of query parameters. Dot segments
//! are kept because requests are forwarded with their raw path, and merging
//! `/a/../b` with `/b` would let one client poison the entry of another.

use std::borrow::Cow;

use xxhash_rust::xxh3::xxh3_128;

/// Builds primary keys, dropping configured query parameters such as `utm_*`.
#[derive(Debug, Clone, Default)]
pub struct KeyNormalizer {
    exact: Vec<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
}

impl KeyNormalizer {
    /// Creates a normalizer that removes the named query parameters; a name
    /// ending in `*` matches every parameter starting with the rest. Names
    /// are compared case-sensitively with the percent-decoded parameter name.
    pub fn new(drop_query_params: &[String]) -> Self {
        let mut this = Self::default();
        for name in drop_query_params {
            match name.strip_suffix('*') {
                Some(prefix) => this.prefixes.push(prefix.as_bytes().to_vec()),
                None => this.exact.push(name.as_bytes().to_vec()),
            }
        }
        this
    }

    /// Returns `GET scheme://host/path?query` in normalized form.
    pub fn primary_key(&self, scheme: &str, host: &str, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut key = String::with_capacity(16 + host.len() + path_and_query.len());
        key.push_str("GET ");
        key.extend(scheme.chars().map(|c| c.to_ascii_lowercase()));
        key.push_str("://");
        push_host(&mut key, scheme, host);
        if path.is_empty() {
            key.push('/');
        } else {
            normalize_escapes(&mut key, path);
        }
        if let Some(query) = query {
            self.push_query(&mut key, query);
        }
        key
    }

    /// The normalized `path?query` part alone, as it appears in keys (for
    /// matching a path on every host).
    pub fn target(&self, path_and_query: &str) -> String {
        let key = self.primary_key("http", "h", path_and_query);
        key_target(&key)
            .map(|(_, t)| t.to_string())
            .unwrap_or_default()
    }

    fn push_query(&self, key: &mut String, query: &str) {
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| !self.drops(param_name(p)))
            .map(|p| {
                let mut out = String::with_capacity(p.len());
                normalize_escapes(&mut out, p);
                out
            })
            .collect();
        if params.is_empty() {
            return;
        }
        // A stable sort by name only: repeated parameters keep their order,
        // which applications may rely on (`a=2&a=1` is not `a=1&a=2`).
        params.sort_by(|a, b| param_name(a).cmp(param_name(b)));
        for (i, param) in params.iter().enumerate() {
            key.push(if i == 0 { '?' } else { '&' });
            key.push_str(param);
        }
    }

    fn drops(&self, raw_name: &str) -> bool {
        if self.exact.is_empty() && self.prefixes.is_empty() {
            return false;
        }
        let name = percent_decode(raw_name);
        self.exact.iter().any(|e| e[..] == name[..])
            || self.prefixes.iter().any(|p| name.starts_with(p))
    }
}

/// Splits a primary key into `scheme://host` and the normalized
/// `path?query` (without any per-user suffix).
pub fn key_target(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("GET ")?;
    let rest = rest.split('\n').next().unwrap_or(rest);
    let after_scheme = rest.find("://")? + 3;
    let path_at = rest[after_scheme..].find('/').map(|i| after_scheme + i)?;
    Some((&rest[..path_at], &rest[path_at..]))
}

/// The stable identifier of a key used by the admin API: 32 lowercase hex
/// digits of its xxh3-128 hash, equal across processes and versions.
pub fn url_hash(key: &str) -> String {
    format!("{:032x}", xxh3_128(key.as_bytes()))
}

fn param_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

/// Appends the lowercased host without the scheme's default port. Bytes that
/// cannot appear in a host are escaped so that a hostile `Host` such as
/// `a.example/x` can never produce the key of another host's path.
fn push_host(key: &mut String, scheme: &str, host: &str) {
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        Some(":80")
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(":443")
    } else {
        None
    };
    let host = default_port
        .and_then(|port| host.strip_suffix(port))
        .unwrap_or(host);
    for b in host.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]".contains(&b) {
            key.push(char::from(b.to_ascii_lowercase()));
        } else {
            push_escape(key, b);
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

/// Appends `input` with escapes of unreserved characters decoded and all
/// other escapes in uppercase hex; an invalid `%` is copied as it is.
///
/// Decoding next to such a stray `%` could create a new valid escape
/// (`%%341` would become `%41`), which would make the output normalize
/// differently a second time; escapes that decode to a hex digit within two
/// characters of a stray `%` are therefore kept encoded.
fn normalize_escapes(out: &mut String, input: &str) {
    let bytes = input.as_bytes();
    let mut stray_at: Option<usize> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        out.push_str(&input[copied..i]);
        let pair = bytes.get(i + 1).copied().zip(bytes.get(i + 2).copied());
        match pair.and_then(|(h, l)| Some(hex_value(h)? << 4 | hex_value(l)?)) {
            Some(b) => {
                let near_stray = stray_at.is_some_and(|s| out.len() - s <= 2);
                if is_unreserved(b) && !(near_stray && b.is_ascii_hexdigit()) {
                    out.push(char::from(b));
                } else {
                    push_escape(out, b);
                }
                i += 3;
            }
            None => {
                out.push('%');
                stray_at = Some(out.len() - 1);
                i += 1;
            }
        }
        copied = i;
    }
    out.push_str(&input[copied..]);
}

/// Decodes every valid `%XX` escape (an invalid `%` is kept as it is); used
/// to match query parameter names and values as the upstream will read them.
pub fn percent_decode(input: &str) -> Cow<'_, [u8]> {
    let bytes = input.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex_value(h).zip(hex_value(l)),
            _ => None,
        };
        match escaped {
            Some((h, l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod target_tests {
    use super::*;

    #[test]
    fn key_target_splits_origin_and_target() {
        let n = KeyNormalizer::default();
        let k = n.primary_key("http", "Api.Example:80", "/events?b=2&a=1");
        assert_eq!(
            key_target(&k),
            Some(("http://api.example", "/events?a=1&b=2"))
        );
        let per_user = format!("{k}\nuser=abc");
        assert_eq!(key_target(&per_user), key_target(&k));
        let n = KeyNormalizer::new(&["utm_*".to_string()]);
        assert_eq!(n.target("/events?b=2&a=1&utm_source=x"), "/events?a=1&b=2");
        assert_eq!(key_target("nonsense"), None);
    }
}

#[cfg(test)]
mod tests;
