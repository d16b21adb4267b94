//! Storability and freshness for a shared cache (RFC 9111 §3, §4.2), with the
//! per-route overrides perfgate adds for origins that send no caching headers.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::header::{AGE, AUTHORIZATION, COOKIE, DATE, ETAG, EXPIRES, LAST_MODIFIED, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use perfgate_config::{AuthorizedPolicy, CookiePolicy};

use crate::cache_control::CacheControl;
use crate::vary;

mod freshness;

pub use freshness::{Freshness, Reuse, current_age, reuse};

/// The caching rules of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Freshness for cacheable responses without explicit freshness.
    pub default_ttl: Option<Duration>,
    /// `stale-while-revalidate` window when the response has none.
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` window when the response has none.
    pub stale_if_error: Option<Duration>,
    /// Treatment of requests that carry `Authorization`.
    pub authorized: AuthorizedPolicy,
    /// Treatment of requests that carry `Cookie`.
    pub cookies: CookiePolicy,
    /// Store responses with `Set-Cookie`; the caller strips the cookie from
    /// the stored copy.
    pub allow_set_cookie: bool,
    /// Upper bound of the `Last-Modified` heuristic (RFC 9111 §4.2.2).
    pub max_heuristic_ttl: Duration,
}

impl Default for RoutePolicy {
    /// Plain RFC 9111 behaviour with a one-day heuristic cap, the same
    /// default as the configuration's `max_heuristic_ttl`.
    fn default() -> Self {
        Self {
            default_ttl: None,
            stale_while_revalidate: None,
            stale_if_error: None,
            authorized: AuthorizedPolicy::Rfc,
            cookies: CookiePolicy::Rfc,
            allow_set_cookie: false,
            max_heuristic_ttl: Duration::from_secs(86_400),
        }
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncacheable {
    /// The request method is not GET.
    Method,
    /// The status is not final, is `304`, or is not heuristically cacheable
    /// and the response has no explicit freshness.
    Status,
    /// `no-store` in the response.
    NoStore,
    /// `no-store` in the request: this request's response is not stored,
    /// which says nothing about other requests for the same URL.
    RequestNoStore,
    /// `private` in the response.
    Private,
    /// The request has `Authorization` and the route or response forbids sharing.
    Authorization,
    /// The request has `Cookie` and the route or response forbids sharing.
    Cookie,
    /// The response sets a cookie and the route does not allow storing it.
    SetCookie,
    /// The response has `Vary: *`.
    VaryStar,
    /// Nothing gives the response a freshness lifetime or validators.
    NoFreshness,
    /// `no-cache` without validators: every use would have to be
    /// revalidated, and there is nothing to revalidate with.
    NoCache,
    /// A `206 Partial Content` response.
    Partial,
}

impl Uncacheable {
    /// The short kebab-case reason used in `Cache-Status` details and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Status => "status",
            Self::NoStore => "no-store",
            Self::RequestNoStore => "request-no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::Cookie => "cookie",
            Self::SetCookie => "set-cookie",
            Self::VaryStar => "vary-star",
            Self::NoFreshness => "no-freshness",
            Self::NoCache => "no-cache",
            Self::Partial => "partial",
        }
    }
}

impl Uncacheable {
    /// True when the reason lies in the request alone (its `no-store`, its
    /// credentials): another client's request for the same URL may well get
    /// a storable response, so the key must not be marked uncacheable.
    pub fn is_request_only(&self) -> bool {
        matches!(
            self,
            Self::Method | Self::RequestNoStore | Self::Authorization | Self::Cookie
        )
    }
}

impl fmt::Display for Uncacheable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the response was requested and received, for age calculation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the request was sent to the origin.
    pub request_time: SystemTime,
    /// When the response headers arrived.
    pub response_time: SystemTime,
}

/// Statuses that may be cached with heuristic or default freshness
/// (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Decides whether a response to a request may be stored in a shared cache
/// and, if so, computes its freshness.
pub fn evaluate(
    method: &Method,
    req_headers: &HeaderMap,
    status: StatusCode,
    rsp_headers: &HeaderMap,
    timing: &Timing,
    policy: &RoutePolicy,
) -> Result<Freshness, Uncacheable> {
    if method != Method::GET {
        return Err(Uncacheable::Method);
    }
    if CacheControl::from_headers(req_headers).no_store {
        return Err(Uncacheable::RequestNoStore);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        return Err(Uncacheable::Partial);
    }
    // A `304` updates a stored response (conditional::merge_304) and is
    // never stored by itself.
    if status.is_informational() || status == StatusCode::NOT_MODIFIED {
        return Err(Uncacheable::Status);
    }
    let cc = CacheControl::from_headers(rsp_headers);
    if cc.no_store {
        return Err(Uncacheable::NoStore);
    }
    if cc.private {
        return Err(Uncacheable::Private);
    }
    if vary::vary_fields(rsp_headers).is_err() {
        return Err(Uncacheable::VaryStar);
    }
    if req_headers.contains_key(AUTHORIZATION) {
        let shareable = match policy.authorized {
            AuthorizedPolicy::Rfc => cc.public || cc.s_maxage.is_some() || cc.must_revalidate,
            AuthorizedPolicy::Bypass => false,
            // The caller adds the credential to the key for PerUser.
            AuthorizedPolicy::PerUser | AuthorizedPolicy::Shared => true,
        };
        if !shareable {
            return Err(Uncacheable::Authorization);
        }
    }
    if req_headers.contains_key(COOKIE) {
        let shareable = match policy.cookies {
            CookiePolicy::Rfc => explicitly_shared(&cc),
            CookiePolicy::Bypass => false,
            CookiePolicy::Ignore => true,
        };
        if !shareable {
            return Err(Uncacheable::Cookie);
        }
    }
    if !policy.allow_set_cookie && rsp_headers.contains_key(SET_COOKIE) {
        return Err(Uncacheable::SetCookie);
    }
    let has_validators = rsp_headers.contains_key(ETAG) || rsp_headers.contains_key(LAST_MODIFIED);
    if cc.no_cache && !has_validators {
        return Err(Uncacheable::NoCache);
    }

    let date = header_date(rsp_headers.get(DATE)).unwrap_or(timing.response_time);
    let (lifetime, heuristic) = match explicit_lifetime(&cc, rsp_headers, date) {
        Some(lifetime) => (lifetime, false),
        None if !cc.public && !heuristically_cacheable(status) => {
            return Err(Uncacheable::Status);
        }
        None => match (
            policy.default_ttl,
            heuristic_lifetime(rsp_headers, date, policy),
        ) {
            (Some(ttl), _) => (ttl, false),
            (None, Some(lifetime)) => (lifetime, true),
            // `no-cache` with validators needs no lifetime: every use is
            // revalidated anyway.
            (None, None) if cc.no_cache => (Duration::ZERO, false),
            (None, None) => return Err(Uncacheable::NoFreshness),
        },
    };

    // `s-maxage` implies `proxy-revalidate` for a shared cache (RFC 9111
    // §5.2.2.10). An explicit `stale-while-revalidate`/`stale-if-error` in
    // the same response is read as the origin's permission to serve stale
    // anyway, since it cannot have meant both.
    let must_revalidate = cc.must_revalidate
        || cc.proxy_revalidate
        || (cc.s_maxage.is_some()
            && cc.stale_while_revalidate.is_none()
            && cc.stale_if_error.is_none());
    let secs = Duration::from_secs;
    let (mut swr, mut sie) = (
        cc.stale_while_revalidate
            .map(secs)
            .or(policy.stale_while_revalidate)
            .unwrap_or_default(),
        cc.stale_if_error
            .map(secs)
            .or(policy.stale_if_error)
            .unwrap_or_default(),
    );
    if cc.no_cache {
        // Every use is revalidated, so there is no background refresh, and
        // only the origin itself can allow serving it when it fails.
        swr = Duration::ZERO;
        sie = cc.stale_if_error.map(secs).unwrap_or_default();
    }
    if must_revalidate {
        swr = Duration::ZERO;
        sie = Duration::ZERO;
    }
    Ok(Freshness {
        lifetime,
        initial_age: initial_age(rsp_headers, date, timing),
        stale_while_revalidate: swr,
        stale_if_error: sie,
        must_revalidate,
        no_cache: cc.no_cache,
        heuristic,
    })
}

/// The response says it may be shared whoever asked for it: `public` or
/// `s-maxage` (what makes a response to a request with `Cookie` shareable).
pub fn explicitly_shared(cc: &CacheControl) -> bool {
    cc.public || cc.s_maxage.is_some()
}

/// `s-maxage`, else `max-age`, else `Expires − Date` (RFC 9111 §4.2.1); an
/// invalid or past `Expires` gives zero.
fn explicit_lifetime(cc: &CacheControl, rsp: &HeaderMap, date: SystemTime) -> Option<Duration> {
    if let Some(secs) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(secs));
    }
    let expires = rsp.get(EXPIRES)?;
    Some(header_date(Some(expires)).map_or(Duration::ZERO, |at| {
        at.duration_since(date).unwrap_or_default()
    }))
}

/// 10 % of the time since `Last-Modified`, capped (RFC 9111 §4.2.2).
fn heuristic_lifetime(rsp: &HeaderMap, date: SystemTime, policy: &RoutePolicy) -> Option<Duration> {
    let modified = header_date(rsp.get(LAST_MODIFIED))?;
    let since = date.duration_since(modified).unwrap_or_default();
    Some((since / 10).min(policy.max_heuristic_ttl))
}

/// `corrected_initial_age` of RFC 9111 §4.2.3.
fn initial_age(rsp: &HeaderMap, date: SystemTime, timing: &Timing) -> Duration {
    let age_value = rsp
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| parse_delta(s.trim()))
        .map(Duration::from_secs)
        .unwrap_or_default();
    let apparent_age = timing
        .response_time
        .duration_since(date)
        .unwrap_or_default();
    let response_delay = timing
        .response_time
        .duration_since(timing.request_time)
        .unwrap_or_default();
    apparent_age.max(age_value.saturating_add(response_delay))
}

/// Parses delta-seconds, saturating; anything else is `None`.
fn parse_delta(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

fn header_date(value: Option<&HeaderValue>) -> Option<SystemTime> {
    let s = value?.to_str().ok()?;
    httpdate::parse_http_date(s.trim()).ok()
}

#[cfg(test)]
mod tests;
