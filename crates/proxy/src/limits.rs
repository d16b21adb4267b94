//! Rate limiting on the request path: the `[[rate_limits]]` rules, GCRA
//! (`perfgate_traffic::gcra`) per `{rule}:{value}` key.
//!
//! Rules are checked in order; a rule applies when the route name and the
//! method match its filters (empty = all) and the request has its key value
//! (an `ip`, a JWT `user`, a header…; a request without a user or the
//! header is not limited by the rule). `query:` and `body:` rules never
//! skip a request: when the value cannot be read the client IP counts. The first rule that refuses answers 429
//! `rate_limited` with `Retry-After`, `RateLimit-Policy` and `RateLimit`;
//! when all allow, the response carries the headers of the rule with the
//! fewest requests left.
//!
//! A `shared` rule counts in Redis (one atomic script per request, on the
//! Redis clock) when Redis is configured; when Redis does not answer (its
//! deadline, or the connection's breaker skipping calls after a failure) the rule
//! falls back to this instance's own count, so a Redis outage never blocks
//! traffic: the limit briefly becomes per instance. Other rules count
//! locally. Local counters survive a reload while the rule keeps its name,
//! key and quota.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use perfgate_config::{Config, IpNet};
use perfgate_observe::LimitResult;
use perfgate_traffic::gcra::{self, Decision, LocalLimiter, Quota};

use crate::context::Conn;
use crate::context::RequestContext;
use crate::route::Route;
use perfgate_http::body::Body;
use perfgate_http::error::{Error, ErrorKind};

#[cfg(test)]
mod tests;

/// Keys each rule's local limiter keeps (least recently used evicted).
const MAX_KEYS: u64 = 100_000;

/// Key values longer than this are replaced by their hash, so a client
/// sending huge header or query values cannot make the limiter (or Redis)
/// hold huge keys.
const MAX_VALUE_LEN: usize = 128;

/// Fallbacks to the local count are logged at most this often.
const FALLBACK_LOG_EVERY: Duration = Duration::from_secs(10);

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// What a rule counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// The client IP, after trusted proxies.
    Ip,
    /// The JWT user; requests without one are not limited.
    User,
    /// The route's name.
    Route,
    /// One budget for everything.
    Global,
    /// A request header's value (its first field).
    Header(HeaderName),
    /// A query parameter's value (percent-decoded, trimmed, case-folded);
    /// the client IP when it is absent or repeated with different values.
    Query(String),
    /// A top-level field of the request body (JSON, or form-encoded),
    /// normalized like `Query`; the client IP when it cannot be read.
    Body(String),
}

impl KeyKind {
    /// Parses `ip`, `user`, `route`, `global`, `header:NAME`, `query:NAME`,
    /// `body:FIELD`.
    pub(crate) fn parse(key: &str) -> Option<Self> {
        Some(match key.split_once(':') {
            None => match key {
                "ip" => KeyKind::Ip,
                "user" => KeyKind::User,
                "route" => KeyKind::Route,
                "global" => KeyKind::Global,
                _ => return None,
            },
            Some(("header", name)) => {
                KeyKind::Header(HeaderName::from_bytes(name.as_bytes()).ok()?)
            }
            Some(("query", name)) if !name.is_empty() => KeyKind::Query(name.to_string()),
            Some(("body", name)) if !name.is_empty() => KeyKind::Body(name.to_string()),
            Some(_) => return None,
        })
    }

    /// Appends this request's value of the key to `out`; false when the
    /// request has none (the rule does not apply).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_value(
        &self,
        out: &mut String,
        route_name: &str,
        trusted: &[IpNet],
        uri: &Uri,
        headers: &HeaderMap,
        conn: &Conn,
        body: Option<&[u8]>,
    ) -> bool {
        match self {
            KeyKind::Ip => {
                let ip = perfgate_http::headers::client_ip(headers, conn.peer.ip(), trusted);
                let _ = write!(out, "{ip}");
            }
            KeyKind::User => match &conn.user {
                Some(user) => push_bounded(out, user),
                None => return false,
            },
            KeyKind::Route => out.push_str(route_name),
            KeyKind::Global => {}
            KeyKind::Header(name) => match headers.get(name) {
                Some(v) => push_bounded(out, &String::from_utf8_lossy(v.as_bytes())),
                None => return false,
            },
            KeyKind::Query(name) => {
                let value = uri.query().and_then(|q| query_value(q, name));
                push_value_or_ip(out, value, headers, conn, trusted);
            }
            KeyKind::Body(field) => {
                let value = body.and_then(|b| body_value(headers, b, field));
                push_value_or_ip(out, value, headers, conn, trusted);
            }
        }
        true
    }
}

/// A `query:`/`body:` key: `=` and the value, or, when the value cannot be
/// read (absent, repeated with different values, an unreadable body),
/// `@` and the client IP. Such rules never skip a request: leaving the
/// field out, repeating it or encoding the body only moves the client to
/// its IP's budget. The two prefixes keep a value from ever naming an IP's
/// budget.
fn push_value_or_ip(
    out: &mut String,
    value: Option<String>,
    headers: &HeaderMap,
    conn: &Conn,
    trusted: &[IpNet],
) {
    match value {
        Some(v) => {
            out.push('=');
            push_bounded(out, &v);
        }
        None => {
            let ip = perfgate_http::headers::client_ip(headers, conn.peer.ip(), trusted);
            let _ = write!(out, "@{ip}");
        }
    }
}

/// The one value of a field that may appear several times: values are
/// trimmed and case-folded (`Alice@x.io ` and `alice@x.io` are one
/// client); none, an empty one, or two that differ → `None` (the caller
/// falls back to the IP), since servers disagree on which repeat counts.
fn single_value<I, S>(values: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut found: Option<String> = None;
    for v in values {
        let v = v.as_ref().trim().to_lowercase();
        match &found {
            _ if v.is_empty() => return None,
            Some(f) if *f != v => return None,
            Some(_) => {}
            None => found = Some(v),
        }
    }
    found
}

/// The most of a body read for `body:FIELD` keys; larger bodies → 413.
pub(crate) const BODY_KEY_MAX: u64 = 64 * 1024;

/// A top-level field of a JSON body (strings, numbers and booleans as
/// written), or of a form-encoded one (percent-decoded), normalized by
/// [`single_value`]. `None` (the IP is used) for a body perfgate cannot
/// read as the upstream would: any `Content-Encoding` but `identity`,
/// multipart, invalid JSON or form data, a field that is absent, repeated
/// (names compared case-insensitively), or not a scalar.
fn body_value(headers: &HeaderMap, body: &[u8], field: &str) -> Option<String> {
    if headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"))
    {
        return None;
    }
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let json = ct.contains("json") || (ct.is_empty() && text.trim_start().starts_with('{'));
    if json {
        let fields: JsonFields = serde_json::from_str(text).ok()?;
        return single_value(fields.values_of(field)?);
    }
    if ct.is_empty() || ct.starts_with("application/x-www-form-urlencoded") {
        return query_value(text.trim(), field);
    }
    // multipart/form-data, text/plain…: not read; the IP counts.
    None
}

/// The top-level members of a JSON object, in order, duplicates kept
/// (serde_json's `Map` would keep only one of them).
struct JsonFields(Vec<(String, serde_json::Value)>);

impl JsonFields {
    /// The scalar values of every member named `field` (ASCII case
    /// ignored), as text; `None` when one of them is not a scalar.
    fn values_of(&self, field: &str) -> Option<Vec<String>> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(field))
            .map(|(_, v)| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                    Some(v.to_string())
                }
                _ => None,
            })
            .collect()
    }
}

impl<'de> serde::Deserialize<'de> for JsonFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonFields, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(entry);
                }
                Ok(JsonFields(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl Limits {
    /// Whether a rule that applies to this route and method counts by a
    /// body field (the body must be read before the limits are checked).
    pub(crate) fn needs_body(&self, route: &str, method: &Method) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.key, KeyKind::Body(_)) && r.applies(route, method))
    }
}

/// Appends `value`, or `#` and its hash when it is longer than
/// [`MAX_VALUE_LEN`].
fn push_bounded(out: &mut String, value: &str) {
    if value.len() <= MAX_VALUE_LEN {
        out.push_str(value);
    } else {
        out.push('#');
        out.push_str(&perfgate_cache::key::url_hash(value));
    }
}

/// The value of the `name` parameter of `query` (names percent-decoded
/// and compared without ASCII case, `+` is a space), normalized by
/// [`single_value`], so that `k=a`, `k=%61`, `K=A` count as one client and
/// `k=a&k=b` cannot make a new key per request.
pub(crate) fn query_value(query: &str, name: &str) -> Option<String> {
    single_value(
        query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .filter(|(n, _)| decode(n).eq_ignore_ascii_case(name))
            .map(|(_, v)| decode(v)),
    )
}

/// Percent-decoding (and `+` → space) of a query component; borrowed when
/// there is nothing to decode. Invalid escapes are kept as they are.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i] {
            b'%' => bytes.get(i + 1..i + 3).and_then(hex_byte),
            _ => None,
        };
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The byte of two hex digits.
fn hex_byte(hex: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    u8::try_from(digit(*hex.first()?)? * 16 + digit(*hex.get(1)?)?).ok()
}

/// One compiled rule.
pub(crate) struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) key: KeyKind,
    pub(crate) quota: Quota,
    /// Route names the rule applies to; empty = every route.
    routes: Vec<String>,
    /// Methods the rule applies to; empty = every method.
    methods: Vec<Method>,
    /// Count in Redis when Redis is configured.
    shared: bool,
    /// This instance's count: the rule's own, or the fallback of a shared one.
    local: Arc<LocalLimiter>,
    /// `RateLimit-Policy` of this rule (it depends on the quota only).
    policy_header: Option<HeaderValue>,
    /// `perfgate_rate_limit_decisions_total` of this rule, resolved once.
    allowed: perfgate_observe::DecisionCounter,
    limited: perfgate_observe::DecisionCounter,
}

impl Rule {
    /// Whether the rule applies to requests of `method` on `route`.
    pub(crate) fn applies(&self, route: &str, method: &Method) -> bool {
        (self.routes.is_empty() || self.routes.iter().any(|r| r == route))
            && (self.methods.is_empty() || self.methods.contains(method))
    }
}

/// The compiled `[[rate_limits]]` rules.
pub(crate) struct Limits {
    rules: Vec<Rule>,
    /// When a fallback was last logged (ms since `epoch`, +1; 0 = never).
    fallback_logged: AtomicU64,
    epoch: Instant,
}

impl Limits {
    /// Compiles the rules; keeps the local counters of `previous` rules
    /// that did not change (same name, key and quota: the counters mean the
    /// same thing; the route and method filters may change).
    pub(crate) fn build(
        config: &Config,
        metrics: &perfgate_observe::Metrics,
        previous: Option<&Limits>,
    ) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(config.rate_limits.len());
        for rc in &config.rate_limits {
            let key = KeyKind::parse(&rc.key)
                .ok_or_else(|| format!("rate_limits {:?}: invalid key {:?}", rc.name, rc.key))?;
            let quota = Quota {
                rate: rc.rate,
                period: rc.per.get(),
                burst: rc.burst.unwrap_or(rc.rate),
            };
            let methods = rc
                .methods
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("rate_limits {:?}: {e}", rc.name))?;
            let local = previous
                .and_then(|p| {
                    p.rules
                        .iter()
                        .find(|r| *r.name == *rc.name && r.key == key && r.quota == quota)
                })
                .map_or_else(
                    || Arc::new(LocalLimiter::new(quota, MAX_KEYS)),
                    |r| r.local.clone(),
                );
            let name: Arc<str> = Arc::from(rc.name.as_str());
            let policy_header =
                HeaderValue::from_str(&gcra::headers(&name, &quota, &gcra::Decision::default()).0)
                    .ok();
            rules.push(Rule {
                allowed: metrics
                    .traffic
                    .rate_limit_counter(&name, LimitResult::allowed),
                limited: metrics
                    .traffic
                    .rate_limit_counter(&name, LimitResult::limited),
                policy_header,
                name,
                key,
                quota,
                routes: rc.routes.clone(),
                methods,
                shared: rc.shared,
                local,
            });
        }
        Ok(Self {
            rules,
            fallback_logged: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The rules, in order.
    #[cfg(test)]
    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether to log this fallback (at most one per [`FALLBACK_LOG_EVERY`]).
    fn should_log_fallback(&self) -> bool {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.fallback_logged.load(Ordering::Relaxed);
        let every = u64::try_from(FALLBACK_LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= every)
            && self
                .fallback_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The `(RateLimit-Policy, RateLimit)` header values of a decision.
fn header_values(rule: &Rule, decision: &Decision) -> Option<(HeaderValue, HeaderValue)> {
    let limit = gcra::limit_header(&rule.name, decision);
    Some((
        rule.policy_header.clone()?,
        HeaderValue::from_maybe_shared(bytes::Bytes::from(limit)).ok()?,
    ))
}

/// What the limit phase reads besides its rules.
pub(crate) struct LimitEnv<'a> {
    /// Where shared rules count (none: every rule counts locally).
    pub(crate) redis: Option<&'a perfgate_redis::Redis>,
    pub(crate) metrics: &'a perfgate_observe::Metrics,
    /// The deadline of a body read for a `body:FIELD` key.
    pub(crate) body_timeout: Duration,
}

impl Limits {
    /// The limit phase. A rule keyed by a body field (a login's account)
    /// needs the body first: it is read (bounded, 400/408/413) and put back.
    pub(crate) async fn check_request(
        &self,
        env: &LimitEnv<'_>,
        route: &Route,
        req: &mut Request<Body>,
        conn: &Conn,
        cx: &mut RequestContext,
    ) -> Result<(), Error> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let body_key = if self.needs_body(&route.name, req.method()) {
            let body = std::mem::replace(req.body_mut(), Body::Empty);
            let max = BODY_KEY_MAX;
            let bytes =
                perfgate_http::body::read_bounded(body, req.headers(), max, env.body_timeout)
                    .await
                    .map_err(|e| Error::body_read(e, max))?;
            *req.body_mut() = Body::full(bytes.clone());
            Some(bytes)
        } else {
            None
        };
        let (method, uri, headers) = (req.method(), req.uri(), req.headers());
        self.check(
            env,
            route,
            method,
            uri,
            headers,
            conn,
            body_key.as_deref(),
            cx,
        )
        .await
    }

    /// Applies the rules that match this request, in order; the first that
    /// refuses answers 429. Puts the `RateLimit-Policy`/`RateLimit` headers
    /// of the most restrictive matching rule in `cx.limit_headers`.
    #[allow(clippy::too_many_arguments)] // what a rule's key may read
    pub(crate) async fn check(
        &self,
        env: &LimitEnv<'_>,
        route: &Route,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        conn: &Conn,
        body: Option<&[u8]>,
        cx: &mut RequestContext,
    ) -> Result<(), Error> {
        // The fewest requests left among the rules that allowed this one.
        let mut tightest: Option<(&Rule, Decision)> = None;
        let mut key = String::new();
        for rule in self.rules.iter().filter(|r| r.applies(&route.name, method)) {
            key.clear();
            key.push_str(&rule.name);
            key.push(':');
            if !rule.key.write_value(
                &mut key,
                &route.name,
                &route.trusted,
                uri,
                headers,
                conn,
                body,
            ) {
                continue;
            }
            let decision = self.decide(env, rule, &key).await;
            if !decision.allowed {
                rule.limited.inc();
                let mut err = Error::new(
                    ErrorKind::TooManyRequests,
                    format!("rate limit \"{}\" exceeded", rule.name),
                )
                .retry_after(decision.retry_after);
                if let Some((policy, limit)) = header_values(rule, &decision) {
                    err = err
                        .with_header(RATELIMIT_POLICY, policy)
                        .with_header(RATELIMIT, limit);
                }
                return Err(err);
            }
            rule.allowed.inc();
            if tightest.is_none_or(|(_, d)| decision.remaining < d.remaining) {
                tightest = Some((rule, decision));
            }
        }
        if let Some((rule, decision)) = tightest
            && let Some((policy, limit)) = header_values(rule, &decision)
        {
            cx.limit_headers.push((RATELIMIT_POLICY, policy));
            cx.limit_headers.push((RATELIMIT, limit));
        }
        Ok(())
    }

    /// One request against `rule` for `key`: in Redis for a shared rule
    /// when Redis is configured and answers, else locally.
    async fn decide(&self, env: &LimitEnv<'_>, rule: &Rule, key: &str) -> Decision {
        if rule.shared
            && let Some(redis) = env.redis
        {
            let q = &rule.quota;
            match redis.gcra(key, q.rate, q.period, q.burst).await {
                Ok(r) => {
                    return Decision {
                        allowed: r.allowed,
                        remaining: u32::try_from(r.remaining).unwrap_or(u32::MAX),
                        reset: r.reset,
                        retry_after: r.retry_after,
                    };
                }
                Err(e) => {
                    env.metrics.traffic.rate_limit_fallback(&rule.name);
                    if self.should_log_fallback() {
                        tracing::debug!(
                            rule = %rule.name,
                            error = %e,
                            "shared rate limit counted locally: Redis did not answer"
                        );
                    }
                }
            }
        }
        rule.local.check(key, Instant::now())
    }
}
