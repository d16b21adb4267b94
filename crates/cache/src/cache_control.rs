//! `Cache-Control` parsing (RFC 9111 §5.2) for requests and responses.
//!
//! The parser runs on every request and every upstream response, so it works
//! on the raw bytes of each field line and never allocates. It is tolerant:
//! unknown directives are skipped, malformed ones degrade to the conservative
//! reading, and no input can make it panic.

use std::fmt;

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// The directives of one or more `Cache-Control` field lines.
///
/// Request and response directives share one struct because the parser is the
/// same; the caller reads the fields that apply to the message at hand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `max-age=N`; an invalid value reads as `0` (stale).
    pub max_age: Option<u64>,
    /// `s-maxage=N` (shared caches only); an invalid value reads as `0`.
    pub s_maxage: Option<u64>,
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache`, including the qualified form `no-cache="field"`.
    pub no_cache: bool,
    /// `private`, including the qualified form `private="field"`.
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `stale-while-revalidate=N` (RFC 5861); ignored when invalid.
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861); ignored when invalid.
    pub stale_if_error: Option<u64>,
    /// Request `max-stale[=N]`; the bare form is `u64::MAX`, an invalid value
    /// is ignored so that a garbled header never widens what a client accepts.
    pub max_stale: Option<u64>,
    /// Request `min-fresh=N`; ignored when invalid.
    pub min_fresh: Option<u64>,
    /// Request `only-if-cached`.
    pub only_if_cached: bool,
}

impl CacheControl {
    /// Parses one field value.
    pub fn parse(value: &[u8]) -> Self {
        let mut cc = Self::default();
        cc.parse_into(value);
        cc
    }

    /// Parses every `Cache-Control` line of `headers` as if they were one
    /// comma-separated list, in order.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for value in headers.get_all(CACHE_CONTROL) {
            cc.parse_into(value.as_bytes());
        }
        cc
    }

    /// Adds the directives of `value` to `self`; valued directives that are
    /// already set keep their first value, which makes parsing line by line
    /// equal to parsing the joined list.
    fn parse_into(&mut self, value: &[u8]) {
        let mut rest = value;
        while let Some((directive, tail)) = next_directive(rest) {
            rest = tail;
            self.apply(directive.name, directive.arg);
        }
    }

    fn apply(&mut self, name: &[u8], arg: Option<&[u8]>) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("max-age") {
            first(&mut self.max_age, Some(delta_or_zero(arg)));
        } else if is("s-maxage") {
            first(&mut self.s_maxage, Some(delta_or_zero(arg)));
        } else if is("no-store") {
            self.no_store = true;
        } else if is("no-cache") {
            // The qualified form only names fields that must not be reused;
            // treating it as plain `no-cache` is the safe approximation.
            self.no_cache = true;
        } else if is("private") {
            // Same reasoning as `no-cache="..."`: a shared cache must not
            // store a response that is private in any part.
            self.private = true;
        } else if is("public") {
            self.public = true;
        } else if is("must-revalidate") {
            self.must_revalidate = true;
        } else if is("proxy-revalidate") {
            self.proxy_revalidate = true;
        } else if is("no-transform") {
            self.no_transform = true;
        } else if is("immutable") {
            self.immutable = true;
        } else if is("stale-while-revalidate") {
            first(&mut self.stale_while_revalidate, arg.and_then(delta));
        } else if is("stale-if-error") {
            first(&mut self.stale_if_error, arg.and_then(delta));
        } else if is("max-stale") {
            let value = match arg {
                None => Some(u64::MAX),
                Some(a) => delta(a),
            };
            first(&mut self.max_stale, value);
        } else if is("min-fresh") {
            first(&mut self.min_fresh, arg.and_then(delta));
        } else if is("only-if-cached") {
            self.only_if_cached = true;
        }
    }
}

/// Sets `slot` only if it is empty, so the first occurrence of a directive wins.
fn first(slot: &mut Option<u64>, value: Option<u64>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// Parses delta-seconds, treating anything invalid as `0`, which RFC 9111
/// §1.2.2 and §4.2.1 recommend for freshness so garbage never extends it.
fn delta_or_zero(arg: Option<&[u8]>) -> u64 {
    arg.and_then(delta).unwrap_or(0)
}

/// Parses delta-seconds (`1*DIGIT`), saturating at `u64::MAX`.
fn delta(arg: &[u8]) -> Option<u64> {
    if arg.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in arg {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    Some(n)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_ows(b)).count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|&&b| is_ows(b)).count();
    &s[..s.len() - n]
}

/// One directive as it appears in the field value.
struct Directive<'a> {
    name: &'a [u8],
    /// The argument, unquoted but without escape processing: no directive
    /// perfgate reads has a value that needs it.
    arg: Option<&'a [u8]>,
}

/// Splits the next directive off `input`, returning it with the remaining
/// input from the separating comma on; `None` when no directive is left.
fn next_directive(input: &[u8]) -> Option<(Directive<'_>, &[u8])> {
    let mut rest = input;
    loop {
        rest = trim_start(rest);
        match rest.first() {
            None => return None,
            Some(b',') => rest = &rest[1..],
            Some(_) => break,
        }
    }
    let name_len = rest
        .iter()
        .position(|&b| b == b'=' || b == b',' || is_ows(b))
        .unwrap_or(rest.len());
    let name = &rest[..name_len];
    rest = trim_start(&rest[name_len..]);
    let mut arg = None;
    if let Some(after_eq) = rest.strip_prefix(b"=") {
        rest = trim_start(after_eq);
        if let Some(quoted) = rest.strip_prefix(b"\"") {
            let (value, tail) = split_quoted(quoted);
            arg = Some(value);
            rest = tail;
        } else {
            let len = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
            arg = Some(trim_end(&rest[..len]));
            rest = &rest[len..];
        }
    }
    // Anything between the directive and the next comma is malformed and is
    // skipped rather than being read as another directive.
    let skip = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
    Some((Directive { name, arg }, &rest[skip..]))
}

/// Splits a quoted-string body (after the opening quote) into its content
/// and the input after the closing quote; an unterminated string runs to the
/// end. Commas inside quotes do not end the directive.
fn split_quoted(s: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return (&s[..i], &s[i + 1..]),
            _ => i += 1,
        }
    }
    (s, &[])
}

/// Renders the directives in a fixed order, for emitting headers and for
/// tests; parsing the output gives back an equal value.
impl fmt::Display for CacheControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut flag = |f: &mut fmt::Formatter<'_>, on: bool, name: &str| {
            if on {
                let r = write!(f, "{sep}{name}");
                sep = ", ";
                r
            } else {
                Ok(())
            }
        };
        flag(f, self.public, "public")?;
        flag(f, self.private, "private")?;
        flag(f, self.no_store, "no-store")?;
        flag(f, self.no_cache, "no-cache")?;
        flag(f, self.must_revalidate, "must-revalidate")?;
        flag(f, self.proxy_revalidate, "proxy-revalidate")?;
        flag(f, self.no_transform, "no-transform")?;
        flag(f, self.immutable, "immutable")?;
        flag(f, self.only_if_cached, "only-if-cached")?;
        let valued = [
            ("max-age", self.max_age),
            ("s-maxage", self.s_maxage),
            ("stale-while-revalidate", self.stale_while_revalidate),
            ("stale-if-error", self.stale_if_error),
            ("min-fresh", self.min_fresh),
        ];
        for (name, value) in valued {
            if let Some(v) = value {
                write!(f, "{sep}{name}={v}")?;
                sep = ", ";
            }
        }
        match self.max_stale {
            Some(u64::MAX) => write!(f, "{sep}max-stale"),
            Some(v) => write!(f, "{sep}max-stale={v}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
