//! Primary cache keys: the normalized request URI and its stable hash, and
//! the one path normalization that decides the route, the key and the
//! upstream target ([`KeyNormalizer::normalize_path`]).
//!
//! Normalization only merges URIs that every origin must treat the same
//! (RFC 3986 §6.2.2): case of scheme and host, default ports, escapes of
//! unreserved characters, the case of hex digits, dot segments (§5.2.4), the
//! order of query parameters and, when `server.merge_slashes` is on, runs of
//! `/`. The gateway rewrites every request's path into this form before it
//! picks a route, so the upstream receives exactly the path the key names:
//! `/a/../b` and `/b` are one resource to perfgate, to the cache and to the
//! upstream alike. Keys made from any other spelling (admin purges, warm-up
//! paths) go through the same function.

use std::borrow::Cow;

use xxhash_rust::xxh3::xxh3_128;

/// How request paths are normalized beyond RFC 3986 equivalence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// Collapse runs of `/` into one (`server.merge_slashes`).
    pub merge_slashes: bool,
    /// Accept `%2F` and `%5C` (kept encoded, never turned into separators)
    /// instead of refusing them (`server.allow_encoded_slashes`).
    pub allow_encoded_slashes: bool,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            allow_encoded_slashes: false,
        }
    }
}

/// Why a request path is refused (the gateway answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits: upstreams decode it differently.
    BadEscape,
    /// `%2F`, `%5C` or a raw `\`: some upstreams decode them into separators
    /// after perfgate has matched the route.
    EncodedSlash,
    /// An encoded control character (`%00`–`%1F`, `%7F`).
    EncodedControl,
    /// A `;` path parameter: servlet containers drop `;…` before routing,
    /// so `/admin;x` would reach `/admin` past the route meant for it.
    Parameter,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "the path has a % that is not followed by two hex digits",
            PathError::EncodedSlash => {
                "encoded slashes and backslashes (%2F, %5C, \\) are not accepted in the path"
            }
            PathError::EncodedControl => "encoded control characters are not accepted in the path",
            PathError::Parameter => "path parameters (;) are not accepted",
        })
    }
}

impl std::error::Error for PathError {}

/// Builds primary keys, dropping configured query parameters such as `utm_*`.
#[derive(Debug, Clone, Default)]
pub struct KeyNormalizer {
    exact: Vec<Vec<u8>>,
    prefixes: Vec<Vec<u8>>,
    paths: PathRules,
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

    /// The same normalizer with these path rules.
    pub fn with_path_rules(mut self, paths: PathRules) -> Self {
        self.paths = paths;
        self
    }

    /// The path rules in force.
    pub fn path_rules(&self) -> PathRules {
        self.paths
    }

    /// The one normalized form of a request path, which the gateway puts in
    /// the request before anything looks at it: escapes of unreserved
    /// characters decoded, the others in upper case, runs of `/` merged
    /// (when configured), dot segments removed. Borrowed when the path is
    /// already normalized (the common case allocates nothing).
    ///
    /// Paths whose meaning differs between servers are refused rather than
    /// guessed at: invalid escapes, encoded slashes and backslashes (unless
    /// allowed; then kept encoded), encoded control characters, and `;` path
    /// parameters. A path that does not start with `/` (`*`) is left alone.
    pub fn normalize_path<'a>(&self, path: &'a str) -> Result<Cow<'a, str>, PathError> {
        let bytes = path.as_bytes();
        let mut suspicious = false;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b';' => return Err(PathError::Parameter),
                b'\\' => return Err(PathError::EncodedSlash),
                b'%' => {
                    let b = bytes
                        .get(i + 1)
                        .copied()
                        .and_then(hex_value)
                        .zip(bytes.get(i + 2).copied().and_then(hex_value))
                        .map(|(h, l)| h << 4 | l)
                        .ok_or(PathError::BadEscape)?;
                    if (b == b'/' || b == b'\\') && !self.paths.allow_encoded_slashes {
                        return Err(PathError::EncodedSlash);
                    }
                    if b.is_ascii_control() {
                        return Err(PathError::EncodedControl);
                    }
                    suspicious = true;
                    i += 3;
                    continue;
                }
                b'/' => {
                    suspicious |= matches!(bytes.get(i + 1), Some(b'/' | b'.'));
                }
                _ => {}
            }
            i += 1;
        }
        if !suspicious || !path.starts_with('/') {
            return Ok(Cow::Borrowed(path));
        }
        let mut out = String::with_capacity(path.len());
        push_path(&mut out, path, self.paths.merge_slashes);
        Ok(if out == path {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(out)
        })
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
            push_path(&mut key, path, self.paths.merge_slashes);
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

/// Appends the normalized form of `path` (see
/// [`KeyNormalizer::normalize_path`], which refuses what this accepts
/// leniently: stray `%` are kept as they are, so keys can be made of any
/// text): escapes first, so that `%2E%2E` is a dot segment, then runs of
/// `/` merged, then dot segments removed.
fn push_path(out: &mut String, path: &str, merge_slashes: bool) {
    let start = out.len();
    normalize_escapes(out, path);
    if !path.starts_with('/') {
        return;
    }
    // The common path has neither; it is then done without another
    // allocation (this runs for every cache lookup).
    // One pass over the bytes: `str::contains` runs a two-way searcher
    // per call (callgrind: ~300 instructions per cache lookup).
    let (mut dots, mut slashes) = (false, false);
    for w in out.as_bytes()[start..].windows(2) {
        if w[0] == b'/' {
            dots |= w[1] == b'.';
            slashes |= merge_slashes && w[1] == b'/';
        }
    }
    if !dots && !slashes {
        return;
    }
    let escaped = out.split_off(start);
    let merged;
    let path = if slashes {
        let mut m = String::with_capacity(escaped.len());
        let mut last_slash = false;
        for c in escaped.chars() {
            if !(c == '/' && last_slash) {
                m.push(c);
            }
            last_slash = c == '/';
        }
        merged = m;
        &merged
    } else {
        &escaped
    };
    remove_dot_segments(out, path);
}

/// RFC 3986 §5.2.4 on an absolute path, appended to `out`: `.` segments go,
/// `..` removes the segment before it (never above the root); a path ending
/// in `.` or `..` keeps its trailing `/`.
fn remove_dot_segments(out: &mut String, path: &str) {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').skip(1).peekable();
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            _ => {
                segments.push(seg);
                continue;
            }
        }
        if last {
            segments.push("");
        }
    }
    out.push('/');
    out.push_str(&segments.join("/"));
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
