//! Semantic checks of a deserialized [`Config`]: every problem is returned
//! with its path, none stops the others from being found.

use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::ipnet::IpNet;
use crate::model::{Config, RouteConfig};
use crate::problem::Problem;
use crate::units::Duration;

mod jobs;
mod logs;
mod traffic;
pub use traffic::route_name;

/// Encodings perfgate can produce.
const ALGORITHMS: [&str; 3] = ["br", "zstd", "gzip"];

/// Upper bound of `cache.warmup_concurrency` (and of the admin API's
/// per-request `concurrency`): warm-up must not turn into a load test of
/// the upstream.
const MAX_WARMUP_CONCURRENCY: usize = 64;

/// Checks everything serde cannot: addresses, URLs, route shapes, ranges and
/// relations between settings. Returns every problem found (empty when the
/// configuration is usable). Relative file paths are resolved against the
/// current directory, as the server will open them.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut p = |path: String, reason: String| out.push(Problem::new(path, reason));

    // Server and admin listeners.
    let server = &config.server;
    let listen = check_listen(&server.listen, "server.listen", &mut p);
    let admin = check_listen(&config.admin.listen, "admin.listen", &mut p);
    if let (Some(a), Some(b)) = (listen, admin)
        && a == b
    {
        p(
            "admin.listen".into(),
            format!("{b} is also server.listen; the admin API needs its own address"),
        );
    }
    if let Some(tls) = &server.tls {
        check_file(
            &tls.cert_file,
            "server.tls.cert_file",
            "certificate",
            &mut p,
        );
        check_file(&tls.key_file, "server.tls.key_file", "private key", &mut p);
    }
    if server.max_header_bytes.get() == 0 {
        p(
            "server.max_header_bytes".into(),
            "must be greater than 0".into(),
        );
    }
    if !is_token(&server.via_name) {
        p(
            "server.via_name".into(),
            format!(
                "{:?} is not a valid Via pseudonym: use letters, digits and !#$%&'*+-.^_`|~",
                server.via_name
            ),
        );
    }
    nonzero(
        server.header_read_timeout,
        "server.header_read_timeout",
        &mut p,
    );
    nonzero(server.drain_timeout, "server.drain_timeout", &mut p);
    nonzero(
        server.request_body_timeout,
        "server.request_body_timeout",
        &mut p,
    );
    if server.http2_max_concurrent_streams == 0 {
        p(
            "server.http2_max_concurrent_streams".into(),
            "must be greater than 0 (0 would refuse every HTTP/2 request)".into(),
        );
    }
    nonzero(
        server.http2_idle_timeout,
        "server.http2_idle_timeout",
        &mut p,
    );
    nonzero(
        server.http2_keep_alive_interval,
        "server.http2_keep_alive_interval",
        &mut p,
    );
    nonzero(
        server.http2_keep_alive_timeout,
        "server.http2_keep_alive_timeout",
        &mut p,
    );

    if let Some(file) = &config.admin.token_file {
        check_file(file, "admin.token_file", "token", &mut p);
    }
    for (i, host) in config.admin.allowed_hosts.iter().enumerate() {
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
        if !valid {
            p(
                format!("admin.allowed_hosts[{i}]"),
                format!("{host:?} is not a host name or name:port (no scheme, no path)"),
            );
        }
    }

    // Upstream.
    let up = &config.upstream;
    if !up.url.is_empty()
        && let Err(e) = parse_upstream_url(&up.url)
    {
        p("upstream.url".into(), e);
    }
    nonzero(up.connect_timeout, "upstream.connect_timeout", &mut p);
    nonzero(up.response_timeout, "upstream.response_timeout", &mut p);
    nonzero(up.body_idle_timeout, "upstream.body_idle_timeout", &mut p);
    nonzero(up.pool_idle_timeout, "upstream.pool_idle_timeout", &mut p);
    if up.url.is_empty() && config.routes.is_empty() {
        p(
            "upstream.url".into(),
            "no upstream: set upstream.url or pass --upstream".into(),
        );
    }

    // Forwarded headers.
    for (i, entry) in config.forwarded.trusted_proxies.iter().enumerate() {
        if let Err(e) = entry.parse::<IpNet>() {
            p(format!("forwarded.trusted_proxies[{i}]"), e);
        }
    }
    for (i, name) in config.forwarded.trusted_headers.iter().enumerate() {
        if !crate::model::FORWARDING_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            p(
                format!("forwarded.trusted_headers[{i}]"),
                format!(
                    "{name:?} is not a forwarding header (one of {})",
                    crate::model::FORWARDING_HEADERS.join(", ")
                ),
            );
        }
    }

    // Cache.
    let cache = &config.cache;
    if cache.max_object_bytes > cache.max_bytes {
        p(
            "cache.max_object_bytes".into(),
            format!(
                "{} is larger than cache.max_bytes ({})",
                cache.max_object_bytes, cache.max_bytes
            ),
        );
    }
    for (i, param) in cache.drop_query_params.iter().enumerate() {
        if let Err(e) = check_glob(param, "query parameter") {
            p(format!("cache.drop_query_params[{i}]"), e);
        }
    }
    if !(1..=MAX_WARMUP_CONCURRENCY).contains(&cache.warmup_concurrency) {
        p(
            "cache.warmup_concurrency".into(),
            format!(
                "{} is out of range: use 1 to {MAX_WARMUP_CONCURRENCY}",
                cache.warmup_concurrency
            ),
        );
    }

    // Redis (L2 and invalidation fan-out).
    check_redis(config, &mut p);

    // Compression.
    let comp = &config.compression;
    let mut seen = HashSet::new();
    for (i, alg) in comp.algorithms.iter().enumerate() {
        let path = format!("compression.algorithms[{i}]");
        if !ALGORITHMS.contains(&alg.as_str()) {
            p(
                path,
                format!("unknown algorithm {alg:?}: use br, zstd or gzip"),
            );
        } else if !seen.insert(alg.as_str()) {
            p(path, format!("{alg:?} is listed twice"));
        }
    }
    if comp.enabled && comp.algorithms.is_empty() {
        p(
            "compression.algorithms".into(),
            "empty while compression is enabled: list algorithms or set compression.enabled = false"
                .into(),
        );
    }
    if !(1..=9).contains(&comp.gzip_level) {
        p(
            "compression.gzip_level".into(),
            format!("{} is out of range: use 1 to 9", comp.gzip_level),
        );
    }
    if comp.brotli_level > 11 {
        p(
            "compression.brotli_level".into(),
            format!("{} is out of range: use 0 to 11", comp.brotli_level),
        );
    }
    for (name, v) in [
        ("max_concurrent", comp.max_concurrent),
        ("max_streams", comp.max_streams),
    ] {
        if v == 0 {
            p(format!("compression.{name}"), "must be at least 1".into());
        }
    }
    if !(1..=19).contains(&comp.zstd_level) {
        p(
            "compression.zstd_level".into(),
            format!("{} is out of range: use 1 to 19", comp.zstd_level),
        );
    }
    for (i, ct) in comp.content_types.iter().enumerate() {
        let path = format!("compression.content_types[{i}]");
        // `*` may appear inside (`application/*+json`), so no glob check.
        if !ct.contains('/') || ct.contains(';') || ct.chars().any(char::is_whitespace) {
            p(
                path,
                format!(
                    "{ct:?} is not a content type such as \"text/*\" or \"application/json\" (no parameters)"
                ),
            );
        }
    }

    // Routes.
    let mut names = HashSet::new();
    for (i, route) in config.routes.iter().enumerate() {
        check_route(route, i, up.url.is_empty(), &mut names, &mut p);
    }
    traffic::check(config, &mut p);
    jobs::check(config, &mut p);
    logs::check(config, &mut p);
    out
}

fn check_route(
    route: &RouteConfig,
    i: usize,
    no_default_upstream: bool,
    names: &mut HashSet<String>,
    p: &mut impl FnMut(String, String),
) {
    let at = |field: &str| format!("routes[{i}].{field}");
    match (&route.path, &route.pattern) {
        (None, None) => p(at("path"), "a route needs either path or pattern".into()),
        (Some(_), Some(_)) => p(at("pattern"), "set either path or pattern, not both".into()),
        (Some(path), None) => {
            if let Err(e) = check_path(path) {
                p(at("path"), e);
            }
        }
        (None, Some(pattern)) => {
            if let Err(e) = check_pattern(pattern) {
                p(at("pattern"), e);
            }
        }
    }
    if let Some(name) = &route.name {
        if name.trim().is_empty() {
            p(
                at("name"),
                "empty; remove it to name the route after its path".into(),
            );
        } else if !names.insert(name.clone()) {
            p(
                at("name"),
                format!("route name {name:?} is used by an earlier route"),
            );
        }
    }
    let mut seen = HashSet::new();
    for (j, m) in route.methods.iter().enumerate() {
        let path = format!("routes[{i}].methods[{j}]");
        if !is_token(m) {
            p(path, format!("{m:?} is not a valid HTTP method"));
        } else if m.bytes().any(|b| b.is_ascii_lowercase())
            && is_standard_method(&m.to_ascii_uppercase())
        {
            // Methods are case-sensitive (RFC 9110 §9.1): `get` would never match.
            p(
                path,
                format!(
                    "methods are case-sensitive: did you mean {:?}?",
                    m.to_ascii_uppercase()
                ),
            );
        } else if !seen.insert(m.as_str()) {
            p(path, format!("{m:?} is listed twice"));
        }
    }
    for (field, tags) in [
        ("tags", &route.cache.tags),
        ("invalidate_tags", &route.cache.invalidate_tags),
    ] {
        for (j, tag) in tags.iter().enumerate() {
            if let Err(e) = check_tag(tag) {
                p(format!("routes[{i}].cache.{field}[{j}]"), e);
            }
        }
    }
    match &route.upstream {
        Some(u) if u.is_empty() => p(
            at("upstream"),
            "empty; remove it to use the default upstream (upstream.url)".into(),
        ),
        Some(u) => {
            if let Err(e) = parse_upstream_url(u) {
                p(at("upstream"), e);
            }
        }
        None if no_default_upstream && route.pool.is_none() => p(
            at("upstream"),
            "this route has no upstream and upstream.url is not set: set one of them or pass --upstream"
                .into(),
        ),
        None => {}
    }
}

/// Largest `redis.max_variants`: a write rewrites the key's variant index,
/// so it stays small.
const MAX_L2_VARIANTS: usize = 1024;

/// The `[redis]` section. Deadlines and the key prefix are checked even
/// without a Redis configured, so that adding `url` later does not reveal
/// old mistakes.
fn check_redis(config: &Config, p: &mut impl FnMut(String, String)) {
    let redis = &config.redis;
    if !redis.url.is_empty()
        && let Err(e) = check_redis_url(&redis.url)
    {
        p("redis.url".into(), e);
    }
    if !redis.url.is_empty() && !redis.cluster.is_empty() {
        p(
            "redis.cluster".into(),
            "set either redis.url (standalone) or redis.cluster (cluster seed nodes), not both"
                .into(),
        );
    }
    for (i, node) in redis.cluster.iter().enumerate() {
        if let Err(e) = check_host_port(node) {
            p(format!("redis.cluster[{i}]"), e);
        }
    }
    nonzero(redis.timeout, "redis.timeout", p);
    nonzero(redis.retry_after, "redis.retry_after", p);
    if !(1..=MAX_L2_VARIANTS).contains(&redis.max_variants) {
        p(
            "redis.max_variants".into(),
            format!(
                "{} is out of range: between 1 and {MAX_L2_VARIANTS} variants per key",
                redis.max_variants
            ),
        );
    }
    // L2 is filled from what L1 stores, so a larger L2 limit would only
    // promise objects that never reach it. Without Redis the limit is moot,
    // and lowering cache.max_object_bytes must not require touching it.
    if redis.enabled() && redis.max_object_bytes > config.cache.max_object_bytes {
        p(
            "redis.max_object_bytes".into(),
            format!(
                "{} is larger than cache.max_object_bytes ({}): larger objects are never stored",
                redis.max_object_bytes, config.cache.max_object_bytes
            ),
        );
    }
    if redis.key_prefix.is_empty() {
        p(
            "redis.key_prefix".into(),
            "empty: every key perfgate writes needs a prefix (e.g. \"perfgate\")".into(),
        );
    } else if redis
        .key_prefix
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        p(
            "redis.key_prefix".into(),
            format!(
                "{:?} must not contain whitespace or control characters",
                redis.key_prefix
            ),
        );
    }
}

/// `redis://[user[:password]@]host[:port][/db]`. `rediss://` (TLS) is
/// refused: the L2 client does not speak TLS yet, and accepting the URL
/// would send the password and cached bodies in clear while the operator
/// believes them encrypted.
fn check_redis_url(url: &str) -> Result<(), String> {
    let expected = "expected redis://[:password@]host[:port][/db]";
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("redis://") {
        &url["redis://".len()..]
    } else if lower.starts_with("rediss://") {
        return Err(format!(
            "{url:?}: TLS to Redis (rediss://) is not supported yet; use redis:// on a trusted network"
        ));
    } else {
        return Err(format!("invalid Redis URL {url:?}: {expected}"));
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid Redis URL {url:?}: contains whitespace"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // The password may contain `@`: the host is after the last one.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.is_empty() {
        return Err(format!("invalid Redis URL {url:?}: no host; {expected}"));
    }
    let (host, port) = split_host_port(host_port);
    if host.is_empty() {
        return Err(format!("invalid Redis URL {url:?}: no host; {expected}"));
    }
    if let Some(port) = port
        && !valid_port(port)
    {
        return Err(format!(
            "invalid Redis URL {url:?}: the port must be 1 to 65535"
        ));
    }
    Ok(())
}

/// A cluster seed node: `host:port` (IPv6 as `[addr]:port`).
fn check_host_port(node: &str) -> Result<(), String> {
    let hint = "expected host:port such as \"10.0.0.1:6379\" or \"[::1]:7000\"";
    if node.contains("://") {
        return Err(format!(
            "{node:?}: cluster nodes are host:port without a scheme; {hint}"
        ));
    }
    let (host, port) = split_host_port(node);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    match port {
        Some(port) if host_ok && valid_port(port) => Ok(()),
        Some(_) if host_ok => Err(format!("{node:?}: the port must be 1 to 65535")),
        _ => Err(format!("{node:?} is not a node address: {hint}")),
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]`; the port is the text
/// after the last `:` outside brackets.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        return match s.find(']') {
            Some(end) => match s[end + 1..].strip_prefix(':') {
                Some(port) => (&s[..=end], Some(port)),
                None if end + 1 == s.len() => (s, None),
                // Text after `]` that is not a port: report it as a bad port.
                None => (&s[..=end], Some(&s[end + 1..])),
            },
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    }
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n != 0)
}

/// A cache tag: non-empty and without whitespace, which separates tags in
/// `Surrogate-Key`.
fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("empty tag".into());
    }
    if tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("tag {tag:?} must not contain whitespace"));
    }
    Ok(())
}

fn is_standard_method(m: &str) -> bool {
    matches!(
        m,
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
    )
}

fn check_listen(addr: &str, path: &str, p: &mut impl FnMut(String, String)) -> Option<SocketAddr> {
    match addr.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p(
                path.into(),
                format!(
                    "invalid listen address {addr:?}: expected IP:PORT such as \"127.0.0.1:8080\" or \"[::]:8080\""
                ),
            );
            None
        }
    }
}

fn check_file(file: &str, path: &str, what: &str, p: &mut impl FnMut(String, String)) {
    if file.trim().is_empty() {
        p(path.into(), format!("empty: name the PEM/{what} file"));
    } else if !Path::new(file).is_file() {
        p(
            path.into(),
            format!("{what} file {file:?} does not exist or is not a file"),
        );
    }
}

fn nonzero(d: Duration, path: &str, p: &mut impl FnMut(String, String)) {
    if d.get().is_zero() {
        p(path.into(), "must be greater than 0".into());
    }
}

/// RFC 9110 `token`: what method names and `Via` pseudonyms are made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A non-empty value with `*` allowed only as its last character.
fn check_glob(s: &str, what: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err(format!("empty {what}"));
    }
    match s.find('*') {
        Some(at) if at + 1 != s.len() => Err(format!(
            "{s:?}: `*` is allowed only at the end, as a prefix match"
        )),
        _ => Ok(()),
    }
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with `/`"));
    }
    if path.contains(['{', '}', '*']) {
        return Err(format!(
            "{path:?} contains `{{`, `}}` or `*`: use `pattern` for parameters and wildcards"
        ));
    }
    check_path_chars(path)
}

fn check_path_chars(path: &str) -> Result<(), String> {
    if path.contains(['?', '#']) {
        return Err(format!("{path:?} must not contain a query or fragment"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{path:?} must not contain whitespace"));
    }
    Ok(())
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with('/') {
        return Err(format!("{pattern:?} must start with `/`"));
    }
    check_path_chars(pattern)?;
    let segments: Vec<&str> = pattern[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut params = HashSet::new();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            if i == last {
                continue; // a trailing slash, or the root pattern "/"
            }
            return Err(format!("{pattern:?} has an empty segment (`//`)"));
        }
        if *seg == "*" {
            if i != last {
                return Err(format!(
                    "{pattern:?}: `*` is allowed only as the last segment"
                ));
            }
        } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let ok = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(format!(
                    "{pattern:?}: parameter {seg:?} must be `{{name}}` with a name of letters, digits and `_`"
                ));
            }
            if !params.insert(name) {
                return Err(format!("{pattern:?}: parameter {{{name}}} is used twice"));
            }
        } else if seg.contains(['{', '}', '*']) {
            return Err(format!(
                "{pattern:?}: segment {seg:?} mixes text with `{{…}}` or `*`; a parameter or wildcard must be a whole segment"
            ));
        }
    }
    Ok(())
}

/// A parsed upstream base URL, `http://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Host name or IP address; IPv6 without brackets.
    pub host: String,
    /// The port, 80 when not written.
    pub port: u16,
    /// Path prefix prepended to request paths, without a trailing `/`
    /// (empty when none).
    pub prefix: String,
}

impl UpstreamUrl {
    /// `host:port` as written in a `Host` header or a connect call
    /// (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses an upstream base URL. Only `http://` is accepted: perfgate does
/// not speak TLS to upstreams yet.
pub fn parse_upstream_url(url: &str) -> Result<UpstreamUrl, String> {
    let lower = url
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if lower.starts_with("https://") {
        return Err(format!(
            "{url:?}: https upstreams are not supported yet; use http:// (terminate TLS to the upstream elsewhere)"
        ));
    }
    let rest = match url.get(..7) {
        Some(s) if s.eq_ignore_ascii_case("http://") => &url[7..],
        _ => {
            return Err(format!(
                "invalid upstream URL {url:?}: expected http://host[:port][/prefix]"
            ));
        }
    };
    if rest.contains(['?', '#']) {
        return Err(format!(
            "invalid upstream URL {url:?}: a query or fragment is not allowed"
        ));
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid upstream URL {url:?}: contains whitespace"));
    }
    let (authority, prefix) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "invalid upstream URL {url:?}: credentials in the URL are not supported"
        ));
    }
    let bad_port = || format!("invalid upstream URL {url:?}: the port must be 1 to 65535");
    let parse_port = |s: &str| -> Result<u16, String> {
        match s.parse::<u16>() {
            Ok(p) if p != 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
            _ => Err(bad_port()),
        }
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("invalid upstream URL {url:?}: unclosed `[`"));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "invalid upstream URL {url:?}: {addr:?} is not an IPv6 address"
            ));
        }
        let port = match after {
            "" => 80,
            _ => match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None => return Err(bad_port()),
            },
        };
        (addr.to_string(), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, parse_port(p)?),
            None => (authority, 80),
        };
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(format!(
                "invalid upstream URL {url:?}: {host:?} is not a host name or IP address"
            ));
        }
        (host.to_ascii_lowercase(), port)
    };
    Ok(UpstreamUrl {
        host,
        port,
        prefix: prefix.trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u =
            parse_upstream_url("http://Example.com:8081/api/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, 8081);
        assert_eq!(u.prefix, "/api");
        let u = parse_upstream_url("http://[::1]").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.authority(), "[::1]:80");
        let e = parse_upstream_url("https://x").err().unwrap_or_default();
        assert!(e.contains("https upstreams are not supported yet"), "{e}");
        for bad in [
            "",
            "http://",
            "ftp://x",
            "http://x:0",
            "http://x:99999",
            "http://u:p@x",
            "http://x/?q",
            "http://[::1",
            "http://a b",
            "httpé://x",
        ] {
            assert!(parse_upstream_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn patterns() {
        for ok in [
            "/",
            "/events/{id}",
            "/static/*",
            "/a/{x}/b/{y}/*",
            "/*",
            "/x/",
        ] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
        for bad in [
            "x", "/a/*/b", "/v{id}", "/{}", "/{1x}", "/a//b", "/{a}/{a}", "/a*",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad} accepted");
        }
    }
}
