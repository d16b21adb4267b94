//! Checks of the traffic-control settings: pools, rate limits, JWT, route
//! guards and the batch endpoint.

use std::collections::HashSet;

use super::{check_file, is_token, nonzero, parse_upstream_url};
use crate::model::{
    BreakerConfig, Config, HealthConfig, JwtMode, OutlierConfig, RetryConfig, RouteConfig,
};

/// Algorithms the JWT validator knows.
const JWT_ALGORITHMS: [&str; 3] = ["HS256", "RS256", "ES256"];
const MAX_WEIGHT: u32 = 1000;
const MAX_BATCH: usize = 1000;

/// The name a route is known by in metrics and rate-limit rules.
pub fn route_name(route: &RouteConfig) -> String {
    route
        .name
        .clone()
        .or_else(|| route.path.clone())
        .or_else(|| route.pattern.clone())
        .unwrap_or_default()
}

pub(super) fn check(config: &Config, p: &mut impl FnMut(String, String)) {
    let server = &config.server;
    if server.max_header_count == 0 {
        p(
            "server.max_header_count".into(),
            "must be greater than 0".into(),
        );
    }
    if server.max_uri_bytes.get() < 16 {
        p(
            "server.max_uri_bytes".into(),
            format!("{} is too small: use at least 16B", server.max_uri_bytes),
        );
    }
    nonzero(
        server.slow_request_threshold,
        "server.slow_request_threshold",
        p,
    );

    let up = &config.upstream;
    check_policies(
        "upstream",
        &up.health,
        &up.outlier,
        &up.breaker,
        &up.retry,
        p,
    );

    let pool_names: HashSet<&str> = config.pools.iter().map(|x| x.name.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, pool) in config.pools.iter().enumerate() {
        let at = |f: &str| format!("pools[{i}].{f}");
        if pool.name.trim().is_empty() {
            p(at("name"), "a pool needs a name".into());
        } else if !seen.insert(pool.name.as_str()) {
            p(
                at("name"),
                format!("pool name {:?} is used by an earlier pool", pool.name),
            );
        }
        if pool.servers.is_empty() {
            p(at("servers"), "a pool needs at least one server".into());
        }
        for (j, s) in pool.servers.iter().enumerate() {
            if let Err(e) = parse_upstream_url(&s.url) {
                p(format!("pools[{i}].servers[{j}].url"), e);
            }
            if !(1..=MAX_WEIGHT).contains(&s.weight) {
                p(
                    format!("pools[{i}].servers[{j}].weight"),
                    format!("{} is out of range: use 1 to {MAX_WEIGHT}", s.weight),
                );
            }
        }
        if let Err(e) = check_hash_key(&pool.hash_key) {
            p(at("hash_key"), e);
        }
        if let Some(rp) = &pool.read_pool {
            if rp == &pool.name {
                p(at("read_pool"), "a pool cannot be its own read pool".into());
            } else if !pool_names.contains(rp.as_str()) {
                p(at("read_pool"), format!("no pool named {rp:?}"));
            } else if config
                .pools
                .iter()
                .any(|o| &o.name == rp && o.read_pool.is_some())
            {
                p(
                    at("read_pool"),
                    format!("pool {rp:?} has a read pool of its own; read pools do not chain"),
                );
            }
        }
        if pool.max_connections > 0 {
            nonzero(pool.queue_timeout, &at("queue_timeout"), p);
        }
        if let Some(d) = pool.connect_timeout {
            nonzero(d, &at("connect_timeout"), p);
        }
        check_policies(
            &format!("pools[{i}]"),
            &pool.health,
            &pool.outlier,
            &pool.breaker,
            &pool.retry,
            p,
        );
    }

    // Routes: targets, JWT, clamps, deadlines.
    let mut route_names = HashSet::new();
    let mut jwt_used = config.jwt.mode != JwtMode::Off;
    for (i, route) in config.routes.iter().enumerate() {
        let at = |f: &str| format!("routes[{i}].{f}");
        route_names.insert(route_name(route));
        if let Some(pool) = &route.pool {
            if route.upstream.is_some() {
                p(at("pool"), "set either upstream or pool, not both".into());
            }
            if !pool_names.contains(pool.as_str()) {
                p(at("pool"), format!("no pool named {pool:?}"));
            }
        }
        jwt_used |= route.jwt.is_some_and(|m| m != JwtMode::Off);
        let t = &route.timeouts;
        for (name, d) in [
            ("connect", t.connect),
            ("response", t.response),
            ("total", t.total),
        ] {
            if let Some(d) = d {
                nonzero(d, &format!("routes[{i}].timeouts.{name}"), p);
            }
        }
        let mut params = HashSet::new();
        for (j, c) in route.query_clamps.iter().enumerate() {
            let at = |f: &str| format!("routes[{i}].query_clamps[{j}].{f}");
            if c.param.is_empty() {
                p(at("param"), "name the query parameter".into());
            } else if !params.insert(c.param.as_str()) {
                p(at("param"), format!("{:?} is clamped twice", c.param));
            }
            if let (Some(lo), Some(hi)) = (c.min, c.max)
                && lo > hi
            {
                p(at("min"), format!("{lo} is larger than max ({hi})"));
            }
            if let Some(d) = c.default
                && (c.min.is_some_and(|lo| d < lo) || c.max.is_some_and(|hi| d > hi))
            {
                p(at("default"), format!("{d} is outside min..max"));
            }
            if c.min.is_none() && c.max.is_none() && c.default.is_none() {
                p(
                    at("param"),
                    "set at least one of min, max and default".into(),
                );
            }
        }
    }

    // Rate limits.
    let mut seen = HashSet::new();
    for (i, rule) in config.rate_limits.iter().enumerate() {
        let at = |f: &str| format!("rate_limits[{i}].{f}");
        if rule.name.is_empty() || !is_token(&rule.name) {
            p(
                at("name"),
                format!(
                    "{:?} is not a valid rule name: use letters, digits and -._",
                    rule.name
                ),
            );
        } else if !seen.insert(rule.name.as_str()) {
            p(
                at("name"),
                format!("rule name {:?} is used by an earlier rule", rule.name),
            );
        }
        if let Err(e) = check_limit_key(&rule.key) {
            p(at("key"), e);
        }
        if rule.key == "user" && !jwt_used {
            p(
                at("key"),
                "\"user\" is the JWT user, but JWT validation is off on every route: set jwt.mode or a route's jwt".into(),
            );
        }
        if rule.rate == 0 {
            p(at("rate"), "must be greater than 0".into());
        }
        nonzero(rule.per, &at("per"), p);
        if rule.burst == Some(0) {
            p(at("burst"), "must be greater than 0".into());
        }
        for (j, r) in rule.routes.iter().enumerate() {
            if !route_names.contains(r) {
                p(
                    format!("rate_limits[{i}].routes[{j}]"),
                    format!("no route named {r:?}"),
                );
            }
        }
        for (j, m) in rule.methods.iter().enumerate() {
            if !is_token(m) || m.bytes().any(|b| b.is_ascii_lowercase()) {
                p(
                    format!("rate_limits[{i}].methods[{j}]"),
                    format!("{m:?} is not an HTTP method (methods are upper case)"),
                );
            }
        }
    }

    // JWT.
    let jwt = &config.jwt;
    for (i, alg) in jwt.algorithms.iter().enumerate() {
        if !JWT_ALGORITHMS.contains(&alg.as_str()) {
            p(
                format!("jwt.algorithms[{i}]"),
                format!("unknown algorithm {alg:?}: use HS256, RS256 or ES256"),
            );
        }
    }
    if let Some(f) = &jwt.secret_file {
        check_file(f, "jwt.secret_file", "secret", p);
        // Read as the validator will: trailing whitespace is not part of it.
        if let Ok(secret) = std::fs::read(f) {
            check_hs256_secret(&secret, "jwt.secret_file", p);
        }
    }
    if jwt_used && let Some(secret) = std::env::var_os("PERFGATE_JWT_SECRET") {
        check_hs256_secret(secret.as_encoded_bytes(), "PERFGATE_JWT_SECRET", p);
    }
    for (i, f) in jwt.public_key_files.iter().enumerate() {
        check_file(f, &format!("jwt.public_key_files[{i}]"), "public key", p);
    }
    if let Some(f) = &jwt.jwks_file {
        check_file(f, "jwt.jwks_file", "JWKS", p);
    }
    if jwt_used
        && jwt.secret_file.is_none()
        && jwt.public_key_files.is_empty()
        && jwt.jwks_file.is_none()
        && std::env::var_os("PERFGATE_JWT_SECRET").is_none()
    {
        p(
            "jwt".into(),
            "JWT validation is used but no key is configured: set jwt.secret_file, jwt.public_key_files, jwt.jwks_file or PERFGATE_JWT_SECRET".into(),
        );
    }
    if jwt.user_claim.is_empty() {
        p(
            "jwt.user_claim".into(),
            "name the claim holding the user id".into(),
        );
    }
    for (claim, header) in &jwt.forward_claims {
        if !is_token(header) {
            p(
                format!("jwt.forward_claims.{claim}"),
                format!("{header:?} is not a valid header name"),
            );
        }
    }

    // Batch.
    let b = &config.batch;
    if !b.path.starts_with('/') {
        p(
            "batch.path".into(),
            format!("{:?} must start with /", b.path),
        );
    }
    if !(1..=MAX_BATCH).contains(&b.max_requests) {
        p(
            "batch.max_requests".into(),
            format!("{} is out of range: use 1 to {MAX_BATCH}", b.max_requests),
        );
    }
    if b.concurrency == 0 {
        p("batch.concurrency".into(), "must be greater than 0".into());
    }
    if b.max_response_bytes.get() == 0 {
        p(
            "batch.max_response_bytes".into(),
            "must be greater than 0".into(),
        );
    }
}

fn check_policies(
    at: &str,
    health: &HealthConfig,
    outlier: &OutlierConfig,
    breaker: &BreakerConfig,
    retry: &RetryConfig,
    p: &mut impl FnMut(String, String),
) {
    if let Some(path) = &health.path
        && !path.starts_with('/')
    {
        p(
            format!("{at}.health.path"),
            format!("{path:?} must start with /"),
        );
    }
    nonzero(health.interval, &format!("{at}.health.interval"), p);
    nonzero(health.timeout, &format!("{at}.health.timeout"), p);
    for (name, v) in [
        ("healthy_threshold", health.healthy_threshold),
        ("unhealthy_threshold", health.unhealthy_threshold),
    ] {
        if v == 0 {
            p(format!("{at}.health.{name}"), "must be at least 1".into());
        }
    }
    if outlier.max_ejection_percent > 100 {
        p(
            format!("{at}.outlier.max_ejection_percent"),
            format!(
                "{} is out of range: use 0 to 100",
                outlier.max_ejection_percent
            ),
        );
    }
    if outlier.consecutive_failures > 0 {
        nonzero(
            outlier.base_ejection,
            &format!("{at}.outlier.base_ejection"),
            p,
        );
        if outlier.max_ejection < outlier.base_ejection {
            p(
                format!("{at}.outlier.max_ejection"),
                format!(
                    "{} is shorter than base_ejection ({})",
                    outlier.max_ejection, outlier.base_ejection
                ),
            );
        }
    }
    if breaker.enabled {
        if !(breaker.failure_rate > 0.0 && breaker.failure_rate <= 1.0) {
            p(
                format!("{at}.breaker.failure_rate"),
                format!(
                    "{} is out of range: use a share above 0 and at most 1.0",
                    breaker.failure_rate
                ),
            );
        }
        if breaker.min_requests == 0 {
            p(
                format!("{at}.breaker.min_requests"),
                "must be at least 1".into(),
            );
        }
        nonzero(breaker.window, &format!("{at}.breaker.window"), p);
        nonzero(breaker.open_for, &format!("{at}.breaker.open_for"), p);
        if breaker.half_open_requests == 0 {
            p(
                format!("{at}.breaker.half_open_requests"),
                "must be at least 1".into(),
            );
        }
    }
    for (j, e) in breaker.on_errors.iter().enumerate() {
        if !matches!(e.as_str(), "connect" | "timeout" | "protocol") {
            p(
                format!("{at}.breaker.on_errors[{j}]"),
                format!(
                    "{e:?} is not a failure kind: use \"connect\", \"timeout\" or \"protocol\""
                ),
            );
        }
    }
    for (j, s) in breaker.on_status.iter().enumerate() {
        if !(400..=599).contains(s) {
            p(
                format!("{at}.breaker.on_status[{j}]"),
                format!("{s} is not an error status (400–599)"),
            );
        }
    }
    if retry.budget_percent > 1000 {
        p(
            format!("{at}.retry.budget_percent"),
            format!("{} is out of range: use 0 to 1000", retry.budget_percent),
        );
    }
    if retry.attempts > 10 {
        p(
            format!("{at}.retry.attempts"),
            format!("{} is out of range: use 0 to 10", retry.attempts),
        );
    }
    if retry.backoff_base > retry.backoff_max {
        p(
            format!("{at}.retry.backoff_base"),
            format!(
                "{} is longer than backoff_max ({})",
                retry.backoff_base, retry.backoff_max
            ),
        );
    }
    for (j, s) in retry.on_status.iter().enumerate() {
        if !(400..=599).contains(s) {
            p(
                format!("{at}.retry.on_status[{j}]"),
                format!("{s} is not an error status (400–599)"),
            );
        }
    }
}

fn check_hash_key(key: &str) -> Result<(), String> {
    match key.split_once(':') {
        None if matches!(key, "path" | "ip" | "user") => Ok(()),
        Some(("header" | "cookie", name)) if is_token(name) => Ok(()),
        _ => Err(format!(
            "{key:?} is not a hash key: use \"path\", \"ip\", \"user\", \"header:NAME\" or \"cookie:NAME\""
        )),
    }
}

fn check_limit_key(key: &str) -> Result<(), String> {
    match key.split_once(':') {
        None if matches!(key, "ip" | "user" | "route" | "global") => Ok(()),
        Some(("header" | "query" | "body", name)) if is_token(name) => Ok(()),
        _ => Err(format!(
            "{key:?} is not a rate-limit key: use \"ip\", \"user\", \"route\", \"global\", \"header:NAME\", \"query:NAME\" or \"body:FIELD\""
        )),
    }
}

/// The shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash
/// size); `perfgate_identity::MIN_HS256_SECRET` applies the same rule.
const MIN_HS256_SECRET: usize = 32;

/// An HS256 secret of at least [`MIN_HS256_SECRET`] bytes once trailing
/// whitespace is removed (an empty one is reported elsewhere, or is unset).
fn check_hs256_secret(secret: &[u8], path: &str, p: &mut impl FnMut(String, String)) {
    let len = secret.trim_ascii_end().len();
    if len > 0 && len < MIN_HS256_SECRET {
        p(
            path.into(),
            format!(
                "the HS256 secret is {len} bytes; use at least {MIN_HS256_SECRET} random bytes (e.g. `openssl rand -base64 48`)"
            ),
        );
    }
}
