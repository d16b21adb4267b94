//! The two reports and their JSON shapes. Durations are in milliseconds
//! with two decimals (`*_ms`), rates per second (`*_per_s`), ratios of
//! requests between 0 and 1 (`*_rate`), and shares of time or requests in
//! percent with one decimal (`*_pct`).
//!
//! `GET /admin/performance/metrics` ([`MetricsReport`]):
//!
//! ```json
//! {"window": "1m", "seconds": 57.3,
//!  "total": {RoutePerf of every route together, "route": "*"},
//!  "routes": [{"route": "/events", "requests": 120, "rate_per_s": 2.09,
//!    "latency_ms": {"p50": 1.2, "p95": 3.4, "p99": 8.1, "max": 12.0, "mean": 1.6},
//!    "errors": {"status_4xx": 0, "status_5xx": 1, "rate_limited": 0,
//!               "error_rate": 0.0083, "client_error_rate": 0.0},
//!    "cache": {"lookups": 118, "hit_l1": 100, "hit_l2": 3, "stale": 2, "coalesced": 1,
//!              "miss": 12, "bypass": 2, "hit_rate": 0.8729,
//!              "l1_hit_rate": 0.8475, "l2_hit_rate": 0.0254},
//!    "bytes": {"in": 0, "out": 123456, "in_per_s": 0.0, "out_per_s": 2154.5}}]}
//! ```
//!
//! `GET /admin/performance/bottlenecks` ([`BottleneckReport`]):
//!
//! ```json
//! {"window": "5m", "seconds": 297.0, "slow_request_threshold_ms": 1000.0,
//!  "time_ms": 51234.5,
//!  "phases": {"gateway": {"ms": 12.5, "mean_ms": 0.01, "pct": 0.1}, "l2": {…},
//!             "coalescing_wait": {…}, "upstream_connect": {…},
//!             "upstream_response": {…}, "encode": {…}, "other": {…}},
//!  "routes": [{"route": "/analyze", "requests": 20, "p95_ms": 301.0,
//!    "time_ms": 6020.0, "time_pct": 97.2, "slowest_phase": "upstream_response",
//!    "phases": {same shape as above},
//!    "verdicts": [{"rule": "upstream", "message": "/analyze: 97 % of the time is the upstream (p95 301 ms); make it an async route",
//!                  "upstream_pct": 97.0, "p95_ms": 301.0, "requests": 20.0}]}],
//!  "slowest_by_p95": [{"route", "requests", "p95_ms", "time_ms", "time_pct",
//!                      "slowest_phase", "slowest_phase_pct"}],
//!  "slowest_by_time": [same],
//!  "regressions": [{"route", "p95_ms", "previous_p95_ms", "change_ms", "change_pct",
//!                   "requests", "previous_requests"}],
//!  "slow_requests": [{"id", "at_unix_ms", "route", "method", "path", "status",
//!                     "total_ms", "error", "phases": {"gateway_ms", "l2_ms",
//!                     "coalescing_wait_ms", "upstream_connect_ms",
//!                     "upstream_response_ms", "encode_ms", "other_ms"}}]}
//! ```
//!
//! Routes are listed busiest first (metrics) or by time spent (bottlenecks);
//! the ranked lists hold at most [`RANKED`] routes; slow requests are the
//! slowest first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Window;
use super::slots::{OUTCOMES, Outcome, PHASES, Phase, RouteStats};
use super::verdicts::{self, RouteView, Verdict};
use crate::event::RequestEvent;

/// Routes in each ranked list of the bottleneck report.
pub const RANKED: usize = 10;

/// A p95 counts as regressed when it is at least this many times the
/// previous window's…
const REGRESSION_RATIO: f64 = 1.2;
/// …and at least this many milliseconds more…
const REGRESSION_MIN_MS: f64 = 5.0;
/// …and both windows have at least this many requests (fewer make a p95
/// that one slow request moves).
const REGRESSION_MIN_SAMPLES: u64 = 20;

fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    if v.is_finite() {
        (v * f).round() / f
    } else {
        0.0
    }
}

/// µs → ms with two decimals.
fn ms(us: u64) -> f64 {
    round(us as f64 / 1000.0, 2)
}

fn ratio(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        round(n as f64 / of as f64, 4)
    }
}

fn pct(n: f64, of: f64) -> f64 {
    if of <= 0.0 {
        0.0
    } else {
        round(n * 100.0 / of, 1)
    }
}

/// Per-route metrics over one window.
#[derive(Clone, Debug, Serialize)]
pub struct MetricsReport {
    /// `1m`, `5m` or `1h`.
    pub window: &'static str,
    /// The seconds the window spans (its current slot is partly over).
    pub seconds: f64,
    /// Every route together (`"route": "*"`).
    pub total: RoutePerf,
    /// One entry per route with requests, busiest first.
    pub routes: Vec<RoutePerf>,
}

/// One route's metrics.
#[derive(Clone, Debug, Serialize)]
pub struct RoutePerf {
    /// The route's name (`-`: no route; `other`: past the key cap).
    pub route: String,
    /// Requests answered.
    pub requests: u64,
    /// Requests per second.
    pub rate_per_s: f64,
    /// Total time per request.
    pub latency_ms: Latency,
    /// Failed answers.
    pub errors: Errors,
    /// What the cache did.
    pub cache: CacheRates,
    /// Body bytes.
    pub bytes: Bytes,
}

/// Percentiles of the total time per request (ms, HDR histogram with 2
/// significant digits).
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Failed answers.
#[derive(Clone, Debug, Serialize)]
pub struct Errors {
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// 429s from the rate limits (part of `status_4xx`).
    pub rate_limited: u64,
    /// 5xx answers per request.
    pub error_rate: f64,
    /// 4xx answers per request.
    pub client_error_rate: f64,
}

/// Cache outcomes, each request counted once: an L2 hit, then a stale
/// answer, an L1 hit, a coalesced wait, a miss, a bypass.
#[derive(Clone, Debug, Serialize)]
pub struct CacheRates {
    /// Requests that looked in the cache (all but `bypass` and requests
    /// that never reached it).
    pub lookups: u64,
    pub hit_l1: u64,
    pub hit_l2: u64,
    pub stale: u64,
    pub coalesced: u64,
    pub miss: u64,
    pub bypass: u64,
    /// `(hit_l1 + hit_l2) / lookups`.
    pub hit_rate: f64,
    /// `hit_l1 / lookups`.
    pub l1_hit_rate: f64,
    /// `hit_l2 / lookups`.
    pub l2_hit_rate: f64,
}

/// Body bytes (see `RequestEvent::bytes_in`/`bytes_out`).
#[derive(Clone, Debug, Serialize)]
pub struct Bytes {
    #[serde(rename = "in")]
    pub bytes_in: u64,
    #[serde(rename = "out")]
    pub bytes_out: u64,
    pub in_per_s: f64,
    pub out_per_s: f64,
}

impl CacheRates {
    fn of(s: &RouteStats) -> Self {
        let c = |o: Outcome| s.cache[o as usize];
        let lookups = c(Outcome::HitL1)
            + c(Outcome::HitL2)
            + c(Outcome::Stale)
            + c(Outcome::Coalesced)
            + c(Outcome::Miss);
        Self {
            lookups,
            hit_l1: c(Outcome::HitL1),
            hit_l2: c(Outcome::HitL2),
            stale: c(Outcome::Stale),
            coalesced: c(Outcome::Coalesced),
            miss: c(Outcome::Miss),
            bypass: c(Outcome::Bypass),
            hit_rate: ratio(c(Outcome::HitL1) + c(Outcome::HitL2), lookups),
            l1_hit_rate: ratio(c(Outcome::HitL1), lookups),
            l2_hit_rate: ratio(c(Outcome::HitL2), lookups),
        }
    }
}

const _: () = assert!(OUTCOMES == 6, "CacheRates lists every outcome");

impl RoutePerf {
    fn of(route: &str, s: &RouteStats, seconds: f64) -> Self {
        let per_s = |n: u64| round(n as f64 / seconds, 3);
        let mean = s.total_us.checked_div(s.requests).map_or(0.0, ms);
        Self {
            route: route.to_string(),
            requests: s.requests,
            rate_per_s: per_s(s.requests),
            latency_ms: Latency {
                p50: ms(s.quantile_us(0.50)),
                p95: ms(s.quantile_us(0.95)),
                p99: ms(s.quantile_us(0.99)),
                max: ms(s.quantile_us(1.0)),
                mean,
            },
            errors: Errors {
                status_4xx: s.status_4xx,
                status_5xx: s.status_5xx,
                rate_limited: s.rate_limited,
                error_rate: ratio(s.status_5xx, s.requests),
                client_error_rate: ratio(s.status_4xx, s.requests),
            },
            cache: CacheRates::of(s),
            bytes: Bytes {
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                in_per_s: per_s(s.bytes_in),
                out_per_s: per_s(s.bytes_out),
            },
        }
    }
}

/// Builds the metrics report from the window's merged numbers.
pub(super) fn metrics(
    window: Window,
    seconds: f64,
    routes: HashMap<Arc<str>, RouteStats>,
) -> MetricsReport {
    let mut total = RouteStats::default();
    let mut list: Vec<RoutePerf> = routes
        .iter()
        .map(|(name, s)| {
            total.merge(s);
            RoutePerf::of(name, s, seconds)
        })
        .collect();
    list.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));
    MetricsReport {
        window: window.as_str(),
        seconds: round(seconds, 1),
        total: RoutePerf::of("*", &total, seconds),
        routes: list,
    }
}

/// Where the time went over one window.
#[derive(Clone, Debug, Serialize)]
pub struct BottleneckReport {
    /// `1m`, `5m` or `1h`.
    pub window: &'static str,
    /// The seconds the window spans.
    pub seconds: f64,
    /// `server.slow_request_threshold`.
    pub slow_request_threshold_ms: f64,
    /// Time spent in requests, every route together.
    pub time_ms: f64,
    /// That time per phase.
    pub phases: PhaseShares,
    /// Per route, most time spent first.
    pub routes: Vec<RouteBottleneck>,
    /// The [`RANKED`] routes with the highest p95.
    pub slowest_by_p95: Vec<RankedRoute>,
    /// The [`RANKED`] routes that took the most time in all.
    pub slowest_by_time: Vec<RankedRoute>,
    /// Routes whose p95 rose against the window before this one.
    pub regressions: Vec<Regression>,
    /// Requests over the threshold within the window (of the last
    /// `SLOW_KEPT` kept), slowest first.
    pub slow_requests: Vec<SlowRequest>,
}

/// One phase's part of some requests' time.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PhaseShare {
    /// Time in the phase, summed over the requests.
    pub ms: f64,
    /// That time per request.
    pub mean_ms: f64,
    /// Its share of the requests' time.
    pub pct: f64,
}

/// Time per phase: `gateway` is guard + limit + L1, `upstream_connect`
/// the wait for a pool slot, `upstream_response` the upstream's first
/// byte and body, `other` what no phase measured (responding, streaming).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PhaseShares {
    pub gateway: PhaseShare,
    pub l2: PhaseShare,
    pub coalescing_wait: PhaseShare,
    pub upstream_connect: PhaseShare,
    pub upstream_response: PhaseShare,
    pub encode: PhaseShare,
    pub other: PhaseShare,
}

impl PhaseShares {
    /// The shares of `phases` (µs sums over `requests`).
    fn of(phases: &[u64; PHASES], requests: u64) -> (Self, [f64; PHASES]) {
        let all: u64 = phases.iter().sum();
        let mut pcts = [0.0; PHASES];
        let mut shares = [PhaseShare::default(); PHASES];
        for (i, &us) in phases.iter().enumerate() {
            pcts[i] = pct(us as f64, all as f64);
            shares[i] = PhaseShare {
                ms: ms(us),
                mean_ms: us.checked_div(requests).map_or(0.0, ms),
                pct: pcts[i],
            };
        }
        let [
            gateway,
            l2,
            coalescing_wait,
            upstream_connect,
            upstream_response,
            encode,
            other,
        ] = shares;
        (
            Self {
                gateway,
                l2,
                coalescing_wait,
                upstream_connect,
                upstream_response,
                encode,
                other,
            },
            pcts,
        )
    }
}

const _: () = assert!(PHASES == 7, "PhaseShares lists every phase");

/// One route in the bottleneck report.
#[derive(Clone, Debug, Serialize)]
pub struct RouteBottleneck {
    pub route: String,
    pub requests: u64,
    pub p95_ms: f64,
    /// Time spent in this route's requests.
    pub time_ms: f64,
    /// Its share of all requests' time.
    pub time_pct: f64,
    /// The measured phase with the most time (`other` when none has any).
    pub slowest_phase: &'static str,
    pub phases: PhaseShares,
    /// What the numbers say, in words, each with the numbers behind it.
    pub verdicts: Vec<Verdict>,
}

/// A route in a ranked list.
#[derive(Clone, Debug, Serialize)]
pub struct RankedRoute {
    pub route: String,
    pub requests: u64,
    pub p95_ms: f64,
    pub time_ms: f64,
    pub time_pct: f64,
    pub slowest_phase: &'static str,
    pub slowest_phase_pct: f64,
}

/// A p95 that rose against the previous window of the same length.
#[derive(Clone, Debug, Serialize)]
pub struct Regression {
    pub route: String,
    pub p95_ms: f64,
    pub previous_p95_ms: f64,
    pub change_ms: f64,
    pub change_pct: f64,
    pub requests: u64,
    pub previous_requests: u64,
}

/// A request slower than `server.slow_request_threshold`.
#[derive(Clone, Debug, Serialize)]
pub struct SlowRequest {
    /// The request's log id (`RequestEvent::id`: access log, log store).
    pub id: u64,
    #[serde(skip)]
    pub(crate) at: SystemTime,
    /// When its response head was ready, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    pub route: String,
    pub method: String,
    /// The path (the query is left out: it may hold secrets).
    pub path: String,
    pub status: u16,
    pub total_ms: f64,
    /// The gateway's error code, when it answered with an error.
    pub error: Option<&'static str>,
    pub phases: SlowPhases,
}

/// One slow request's time per phase (ms).
#[derive(Clone, Debug, Serialize)]
pub struct SlowPhases {
    pub gateway_ms: f64,
    pub l2_ms: f64,
    pub coalescing_wait_ms: f64,
    pub upstream_connect_ms: f64,
    pub upstream_response_ms: f64,
    pub encode_ms: f64,
    pub other_ms: f64,
}

impl SlowRequest {
    pub(super) fn new(ev: &RequestEvent, route: &str, phases: &[u64; PHASES]) -> Self {
        let p = |ph: Phase| ms(phases[ph as usize]);
        Self {
            id: ev.id,
            at: ev.at,
            at_unix_ms: ev
                .at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            route: route.to_string(),
            method: ev.method.to_string(),
            path: ev.target.path().to_string(),
            status: ev.status,
            total_ms: ms(u64::try_from(ev.phases.total.as_micros()).unwrap_or(u64::MAX)),
            error: ev.error,
            phases: SlowPhases {
                gateway_ms: p(Phase::Gateway),
                l2_ms: p(Phase::L2),
                coalescing_wait_ms: p(Phase::CoalescingWait),
                upstream_connect_ms: p(Phase::UpstreamConnect),
                upstream_response_ms: p(Phase::UpstreamResponse),
                encode_ms: p(Phase::Encode),
                other_ms: p(Phase::Other),
            },
        }
    }
}

/// The measured phase (not `other`) with the most time, and its share.
fn slowest_phase(phases: &[u64; PHASES], pcts: &[f64; PHASES]) -> (&'static str, f64) {
    Phase::ALL
        .iter()
        .filter(|p| **p != Phase::Other && phases[**p as usize] > 0)
        .max_by_key(|p| phases[**p as usize])
        .map_or(("other", pcts[Phase::Other as usize]), |p| {
            (p.as_str(), pcts[*p as usize])
        })
}

/// The regression of `now` against `before`, if its p95 rose past the
/// thresholds above.
fn regression(route: &str, now: &RouteStats, before: Option<&RouteStats>) -> Option<Regression> {
    let before = before?;
    if now.requests < REGRESSION_MIN_SAMPLES || before.requests < REGRESSION_MIN_SAMPLES {
        return None;
    }
    let p95 = ms(now.quantile_us(0.95));
    let prev = ms(before.quantile_us(0.95));
    if p95 < prev * REGRESSION_RATIO || p95 - prev < REGRESSION_MIN_MS {
        return None;
    }
    Some(Regression {
        route: route.to_string(),
        p95_ms: p95,
        previous_p95_ms: prev,
        change_ms: round(p95 - prev, 2),
        change_pct: pct(p95 - prev, prev),
        requests: now.requests,
        previous_requests: before.requests,
    })
}

/// Builds the bottleneck report from the window's merged numbers and the
/// previous window's.
pub(super) fn bottlenecks(
    window: Window,
    seconds: f64,
    current: HashMap<Arc<str>, RouteStats>,
    previous: &HashMap<Arc<str>, RouteStats>,
    mut slow: Vec<SlowRequest>,
    slow_threshold: Duration,
) -> BottleneckReport {
    let mut all_phases = [0u64; PHASES];
    let mut all_requests = 0;
    for s in current.values() {
        all_requests += s.requests;
        for (a, b) in all_phases.iter_mut().zip(&s.phases) {
            *a += b;
        }
    }
    let all_us: u64 = current.values().map(|s| s.total_us).sum();
    let mut routes = Vec::with_capacity(current.len());
    let mut ranked = Vec::with_capacity(current.len());
    let mut regressions = Vec::new();
    for (name, s) in &current {
        let p95_ms = ms(s.quantile_us(0.95));
        let (phases, pcts) = PhaseShares::of(&s.phases, s.requests);
        let (slowest, slowest_pct) = slowest_phase(&s.phases, &pcts);
        let time_pct = pct(s.total_us as f64, all_us as f64);
        let reg = regression(name, s, previous.get(name));
        let verdicts = verdicts::judge(&RouteView {
            route: name,
            window,
            stats: s,
            p95_ms,
            shares: pcts,
            regression: reg.as_ref(),
        });
        regressions.extend(reg);
        ranked.push(RankedRoute {
            route: name.to_string(),
            requests: s.requests,
            p95_ms,
            time_ms: ms(s.total_us),
            time_pct,
            slowest_phase: slowest,
            slowest_phase_pct: slowest_pct,
        });
        routes.push(RouteBottleneck {
            route: name.to_string(),
            requests: s.requests,
            p95_ms,
            time_ms: ms(s.total_us),
            time_pct,
            slowest_phase: slowest,
            phases,
            verdicts,
        });
    }
    routes.sort_by(|a, b| b.time_ms.total_cmp(&a.time_ms).then(a.route.cmp(&b.route)));
    let mut by_p95 = ranked.clone();
    by_p95.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms).then(a.route.cmp(&b.route)));
    by_p95.truncate(RANKED);
    ranked.sort_by(|a, b| b.time_ms.total_cmp(&a.time_ms).then(a.route.cmp(&b.route)));
    ranked.truncate(RANKED);
    regressions.sort_by(|a, b| b.change_ms.total_cmp(&a.change_ms));
    slow.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then(b.id.cmp(&a.id)));
    BottleneckReport {
        window: window.as_str(),
        seconds: round(seconds, 1),
        slow_request_threshold_ms: round(slow_threshold.as_secs_f64() * 1000.0, 2),
        time_ms: ms(all_us),
        phases: PhaseShares::of(&all_phases, all_requests).0,
        routes,
        slowest_by_p95: by_p95,
        slowest_by_time: ranked,
        regressions,
        slow_requests: slow,
    }
}
