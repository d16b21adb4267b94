//! Verdicts: what a route's numbers over a window say, in plain words,
//! each with the numbers behind it. Every rule has its thresholds here, as
//! constants; a rule fires only on its own numbers, and a route where none
//! fires gets `ok`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Window;
use super::report::Regression;
use super::slots::{Outcome, PHASES, Phase, RouteStats};

/// Fewer requests than this in the window: too few to judge (a couple of
/// slow requests would make any share look dramatic).
pub const MIN_REQUESTS: u64 = 10;

/// `upstream`: the upstream's answer (first byte + body) is at least this
/// share of the route's time…
pub const UPSTREAM_SHARE_PCT: f64 = 80.0;
/// …and the route's p95 is at least this: a fast upstream that dominates
/// a fast route is not a problem.
pub const UPSTREAM_SLOW_P95_MS: f64 = 200.0;

/// `low_hit_rate`: fewer than this share of the lookups are hits…
pub const LOW_HIT_RATE_PCT: f64 = 50.0;
/// …and a reason not to store (the `Cache-Status` detail) is given for
/// at least this share of the lookups: it is named as the cause.
pub const REASON_SHARE_PCT: f64 = 20.0;

/// `rate_limited`: at least this share of the requests got 429 from a
/// rate limit.
pub const RATE_LIMITED_PCT: f64 = 10.0;

/// `server_errors`: at least this share of the answers are 5xx.
pub const SERVER_ERROR_PCT: f64 = 5.0;

/// `coalescing_wait`: waiting for another request's fetch of the same key
/// is at least this share of the route's time…
pub const COALESCE_SHARE_PCT: f64 = 20.0;
/// …and at least this per request on average.
pub const COALESCE_MEAN_MS: f64 = 2.0;

/// `pool_wait`: waiting for an upstream connection slot is at least this
/// share of the time…
pub const POOL_WAIT_SHARE_PCT: f64 = 10.0;
/// …and at least this per request on average.
pub const POOL_WAIT_MEAN_MS: f64 = 2.0;

/// `encode`: compressing is at least this share of the time…
pub const ENCODE_SHARE_PCT: f64 = 10.0;
/// …and at least this per request on average.
pub const ENCODE_MEAN_MS: f64 = 1.0;

/// `l2_slow`: the Redis lookup is at least this share of the time…
pub const L2_SHARE_PCT: f64 = 10.0;
/// …and at least this per request on average.
pub const L2_MEAN_MS: f64 = 2.0;

/// `gateway`: perfgate's own phases (guard, limit, L1) are at least this
/// share of the time…
pub const GATEWAY_SHARE_PCT: f64 = 30.0;
/// …and at least this per request on average.
pub const GATEWAY_MEAN_MS: f64 = 2.0;

/// One finding about a route.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Which rule fired: `too_few_requests`, `upstream`, `low_hit_rate`,
    /// `rate_limited`, `server_errors`, `coalescing_wait`, `pool_wait`,
    /// `encode`, `l2_slow`, `gateway`, `regression` or `ok`.
    pub rule: &'static str,
    /// The finding in words, numbers included.
    pub message: String,
    /// The reason named (`low_hit_rate`: the `Cache-Status` detail, e.g.
    /// `no-cache`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The numbers behind the finding, as fields next to the message
    /// (`upstream_pct`, `hit_rate_pct`, `requests`, …).
    #[serde(flatten)]
    pub numbers: BTreeMap<&'static str, f64>,
}

impl Verdict {
    fn new(rule: &'static str, message: String) -> Self {
        Self {
            rule,
            message,
            reason: None,
            numbers: BTreeMap::new(),
        }
    }

    fn with(mut self, name: &'static str, value: f64) -> Self {
        self.numbers.insert(name, value);
        self
    }
}

/// What a verdict is computed from.
pub(crate) struct RouteView<'a> {
    pub(crate) route: &'a str,
    pub(crate) window: Window,
    pub(crate) stats: &'a RouteStats,
    pub(crate) p95_ms: f64,
    /// Share of the route's time per [`Phase`], in percent.
    pub(crate) shares: [f64; PHASES],
    pub(crate) regression: Option<&'a Regression>,
}

impl RouteView<'_> {
    fn share(&self, p: Phase) -> f64 {
        self.shares[p as usize]
    }

    /// Mean time of phase `p` per request (ms).
    fn mean_ms(&self, p: Phase) -> f64 {
        if self.stats.requests == 0 {
            return 0.0;
        }
        round1(self.stats.phases[p as usize] as f64 / 1000.0 / self.stats.requests as f64)
    }

    fn requests_pct(&self, n: u64) -> f64 {
        if self.stats.requests == 0 {
            0.0
        } else {
            round1(n as f64 * 100.0 / self.stats.requests as f64)
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A share or a duration as written in a sentence: whole numbers, or one
/// decimal below 10 (`0.4 %`, `97 %`).
fn num(v: f64) -> String {
    if v.abs() < 10.0 && v.fract() != 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Every verdict for one route, `ok` when no rule fires.
pub(crate) fn judge(v: &RouteView<'_>) -> Vec<Verdict> {
    let requests = v.stats.requests;
    if requests < MIN_REQUESTS {
        return vec![
            Verdict::new(
                "too_few_requests",
                format!(
                    "{}: only {requests} requests in the last {}; too few to judge",
                    v.route,
                    v.window.as_str()
                ),
            )
            .with("requests", requests as f64),
        ];
    }
    let rules: [fn(&RouteView<'_>) -> Option<Verdict>; 10] = [
        upstream,
        low_hit_rate,
        rate_limited,
        server_errors,
        coalescing_wait,
        pool_wait,
        encode,
        l2_slow,
        gateway,
        regression,
    ];
    let mut out: Vec<Verdict> = rules.iter().filter_map(|rule| rule(v)).collect();
    if out.is_empty() {
        let hit_rate = hit_rate_pct(v.stats);
        out.push(
            Verdict::new(
                "ok",
                format!(
                    "{}: nothing stands out (p95 {} ms over {requests} requests)",
                    v.route,
                    num(v.p95_ms)
                ),
            )
            .with("p95_ms", v.p95_ms)
            .with("requests", requests as f64)
            .with("hit_rate_pct", hit_rate.map_or(0.0, |(pct, _)| pct)),
        );
    }
    out
}

/// The route waits for its upstream most of the time, and the wait is long.
fn upstream(v: &RouteView<'_>) -> Option<Verdict> {
    let share = v.share(Phase::UpstreamResponse);
    if share < UPSTREAM_SHARE_PCT || v.p95_ms < UPSTREAM_SLOW_P95_MS {
        return None;
    }
    Some(
        Verdict::new(
            "upstream",
            format!(
                "{}: {} % of the time is the upstream (p95 {} ms); make it an async route",
                v.route,
                num(share),
                num(v.p95_ms)
            ),
        )
        .with("upstream_pct", share)
        .with("p95_ms", v.p95_ms)
        .with("requests", v.stats.requests as f64),
    )
}

/// `(hit rate in percent, lookups)`, when the route looks in the cache.
fn hit_rate_pct(s: &RouteStats) -> Option<(f64, u64)> {
    let c = |o: Outcome| s.cache[o as usize];
    let hits = c(Outcome::HitL1) + c(Outcome::HitL2);
    let lookups = hits + c(Outcome::Stale) + c(Outcome::Coalesced) + c(Outcome::Miss);
    (lookups > 0).then(|| (round1(hits as f64 * 100.0 / lookups as f64), lookups))
}

/// Why responses are not stored, and what to do, per `Cache-Status`
/// detail (`perfgate_cache::policy::Uncacheable::as_str`).
fn reason_words(reason: &str) -> (&'static str, &'static str) {
    match reason {
        "no-cache" => (
            "the upstream sends `no-cache` without validators",
            "give the route a `default_ttl`, or have the upstream send an ETag",
        ),
        "no-store" => (
            "the upstream sends `no-store`",
            "if the answers are the same for everyone, drop `no-store` at the upstream",
        ),
        "private" => (
            "the upstream marks answers `private`",
            "if they do not depend on the user, send `public` or `s-maxage` instead",
        ),
        "no-freshness" => (
            "answers carry no freshness (no `max-age`, `Expires` or validators)",
            "give the route a `default_ttl`",
        ),
        "set-cookie" => (
            "the upstream sets cookies",
            "set `allow_set_cookie = true` on the route if the cookie is not per user",
        ),
        "authorization" => (
            "requests carry `Authorization`",
            "set the route's `authorized` policy to `shared` or `per-user`",
        ),
        "cookie" => (
            "requests carry `Cookie`",
            "set the route's `cookies` policy, or have the upstream send `public`",
        ),
        "vary-star" => (
            "the upstream sends `Vary: *`",
            "vary on the headers that matter instead",
        ),
        "status" => (
            "the statuses answered are not cacheable without explicit freshness",
            "give those answers `max-age` at the upstream",
        ),
        "request-no-store" => (
            "clients send `Cache-Control: no-store`",
            "check the clients",
        ),
        _ => (
            "answers are not stored",
            "see `Cache-Status` for the reason",
        ),
    }
}

/// Few hits, and (when one stands out) the reason answers are not stored.
fn low_hit_rate(v: &RouteView<'_>) -> Option<Verdict> {
    let (hit_rate, lookups) = hit_rate_pct(v.stats)?;
    if lookups < MIN_REQUESTS || hit_rate >= LOW_HIT_RATE_PCT {
        return None;
    }
    let top = v
        .stats
        .details
        .iter()
        .max_by_key(|(_, n)| *n)
        .filter(|(_, n)| *n as f64 * 100.0 / lookups as f64 >= REASON_SHARE_PCT);
    let Some(&(reason, count)) = top else {
        let misses = v.stats.cache[Outcome::Miss as usize];
        return Some(
            Verdict::new(
                "low_hit_rate",
                format!(
                    "{}: hit rate {} % ({misses} misses of {lookups} lookups) with no single reason; entries may expire too soon (raise `max-age` or `default_ttl`) or keys vary too much (query parameters, `Vary`)",
                    v.route,
                    num(hit_rate)
                ),
            )
            .with("hit_rate_pct", hit_rate)
            .with("lookups", lookups as f64)
            .with("misses", misses as f64),
        );
    };
    let (why, fix) = reason_words(reason);
    let mut verdict = Verdict::new(
        "low_hit_rate",
        format!(
            "{}: hit rate {} % because {why} ({count} of {lookups} lookups, `{reason}`); {fix}",
            v.route,
            num(hit_rate)
        ),
    )
    .with("hit_rate_pct", hit_rate)
    .with("lookups", lookups as f64)
    .with("reason_count", count as f64);
    verdict.reason = Some(reason);
    Some(verdict)
}

fn rate_limited(v: &RouteView<'_>) -> Option<Verdict> {
    let n = v.stats.rate_limited;
    let share = v.requests_pct(n);
    if share < RATE_LIMITED_PCT {
        return None;
    }
    Some(
        Verdict::new(
            "rate_limited",
            format!(
                "{}: {} % of requests are rate-limited ({n} of {}); raise the limit if these clients are legitimate",
                v.route,
                num(share),
                v.stats.requests
            ),
        )
        .with("rate_limited_pct", share)
        .with("rate_limited", n as f64)
        .with("requests", v.stats.requests as f64),
    )
}

fn server_errors(v: &RouteView<'_>) -> Option<Verdict> {
    let n = v.stats.status_5xx;
    let share = v.requests_pct(n);
    if share < SERVER_ERROR_PCT {
        return None;
    }
    Some(
        Verdict::new(
            "server_errors",
            format!(
                "{}: {} % of answers are 5xx ({n} of {}); check the upstream's health and the breaker",
                v.route,
                num(share),
                v.stats.requests
            ),
        )
        .with("error_pct", share)
        .with("status_5xx", n as f64)
        .with("requests", v.stats.requests as f64),
    )
}

fn coalescing_wait(v: &RouteView<'_>) -> Option<Verdict> {
    let share = v.share(Phase::CoalescingWait);
    let mean = v.mean_ms(Phase::CoalescingWait);
    if share < COALESCE_SHARE_PCT || mean < COALESCE_MEAN_MS {
        return None;
    }
    Some(
        Verdict::new(
            "coalescing_wait",
            format!(
                "{}: {} % of the time is waiting for another request's fetch of the same key (mean {} ms); the fetch is slow and many ask at once: keep entries longer or add `stale_while_revalidate` so that they are served stale",
                v.route,
                num(share),
                num(mean)
            ),
        )
        .with("coalescing_wait_pct", share)
        .with("mean_ms", mean),
    )
}

fn pool_wait(v: &RouteView<'_>) -> Option<Verdict> {
    let share = v.share(Phase::UpstreamConnect);
    let mean = v.mean_ms(Phase::UpstreamConnect);
    if share < POOL_WAIT_SHARE_PCT || mean < POOL_WAIT_MEAN_MS {
        return None;
    }
    Some(
        Verdict::new(
            "pool_wait",
            format!(
                "{}: {} % of the time is waiting for an upstream connection slot (mean {} ms); the pool's `max_connections` is too low for this load",
                v.route,
                num(share),
                num(mean)
            ),
        )
        .with("upstream_connect_pct", share)
        .with("mean_ms", mean),
    )
}

fn encode(v: &RouteView<'_>) -> Option<Verdict> {
    let share = v.share(Phase::Encode);
    let mean = v.mean_ms(Phase::Encode);
    if share < ENCODE_SHARE_PCT || mean < ENCODE_MEAN_MS {
        return None;
    }
    Some(
        Verdict::new(
            "encode",
            format!(
                "{}: {} % of the time is compression (mean {} ms); lower the compression levels or raise `compression.max_concurrent`",
                v.route,
                num(share),
                num(mean)
            ),
        )
        .with("encode_pct", share)
        .with("mean_ms", mean),
    )
}

fn l2_slow(v: &RouteView<'_>) -> Option<Verdict> {
    let share = v.share(Phase::L2);
    let mean = v.mean_ms(Phase::L2);
    if share < L2_SHARE_PCT || mean < L2_MEAN_MS {
        return None;
    }
    Some(
        Verdict::new(
            "l2_slow",
            format!(
                "{}: {} % of the time is the Redis (L2) lookup (mean {} ms); check Redis's latency, or lower `redis.timeout`",
                v.route,
                num(share),
                num(mean)
            ),
        )
        .with("l2_pct", share)
        .with("mean_ms", mean),
    )
}

fn gateway(v: &RouteView<'_>) -> Option<Verdict> {
    let share = v.share(Phase::Gateway);
    let mean = v.mean_ms(Phase::Gateway);
    if share < GATEWAY_SHARE_PCT || mean < GATEWAY_MEAN_MS {
        return None;
    }
    Some(
        Verdict::new(
            "gateway",
            format!(
                "{}: {} % of the time is perfgate's own checks (guard, rate limits, L1; mean {} ms); shared rate limits wait for Redis, JWKS keys may be fetched",
                v.route,
                num(share),
                num(mean)
            ),
        )
        .with("gateway_pct", share)
        .with("mean_ms", mean),
    )
}

fn regression(v: &RouteView<'_>) -> Option<Verdict> {
    let r = v.regression?;
    Some(
        Verdict::new(
            "regression",
            format!(
                "{}: p95 rose from {} ms to {} ms (+{} %) against the {} before",
                v.route,
                num(r.previous_p95_ms),
                num(r.p95_ms),
                num(r.change_pct),
                v.window.as_str()
            ),
        )
        .with("p95_ms", r.p95_ms)
        .with("previous_p95_ms", r.previous_p95_ms)
        .with("change_pct", r.change_pct),
    )
}
