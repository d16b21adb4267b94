//! Scripted events at explicit times: windows, percentiles, hit rates,
//! regressions, verdicts (each on its numbers, none below its thresholds),
//! the key cap and the slow-request list. Nothing sleeps.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::verdicts::*;
use super::*;
use crate::event::{CacheLayer, CacheOutcomes, PhaseTimes};
use crate::metrics::CacheEvent;

/// A time on a whole minute (so on a slot boundary of both rings).
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_040)
}

/// `secs` after (or before, negative) [`t0`].
fn at(secs: i64) -> SystemTime {
    if secs >= 0 {
        t0() + Duration::from_secs(secs.unsigned_abs())
    } else {
        t0() - Duration::from_secs(secs.unsigned_abs())
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A 200 from `route` at `when`, `total` long, all of it "other".
fn ev(when: SystemTime, route: &str, total: Duration) -> RequestEvent {
    RequestEvent {
        id: 0,
        at: when,
        kind: RequestKind::Client,
        route: Some(Arc::from(route)),
        template: None,
        method: http::Method::GET,
        target: http::Uri::from_static("/x?secret=1"),
        status: 200,
        bytes_in: 0,
        bytes_out: 0,
        phases: PhaseTimes {
            total,
            ..PhaseTimes::default()
        },
        cache: CacheOutcomes::default(),
        layer: None,
        detail: None,
        upstream_bytes_saved: 0,
        upstream: None,
        attempts: 0,
        user: None,
        client: IpAddr::from([127, 0, 0, 1]),
        trace_id: None,
        error: None,
    }
}

fn outcomes(events: &[CacheEvent]) -> CacheOutcomes {
    let mut c = CacheOutcomes::default();
    for e in events {
        c.insert(*e);
    }
    c
}

fn windows() -> PerfWindows {
    PerfWindows::new(Duration::from_secs(1))
}

fn route<'a>(r: &'a MetricsReport, name: &str) -> &'a RoutePerf {
    r.routes
        .iter()
        .find(|x| x.route == name)
        .unwrap_or_else(|| panic!("no route {name} in {r:#?}"))
}

fn verdicts_of(r: &BottleneckReport, name: &str) -> Vec<Verdict> {
    r.routes
        .iter()
        .find(|x| x.route == name)
        .unwrap_or_else(|| panic!("no route {name} in {r:#?}"))
        .verdicts
        .clone()
}

fn rules(v: &[Verdict]) -> Vec<&'static str> {
    v.iter().map(|v| v.rule).collect()
}

/// Records `n` events from `make` at t0 + 30 s and returns the 1m
/// bottleneck verdicts of route `r`.
fn judge_n(n: usize, make: impl Fn(usize) -> RequestEvent) -> Vec<Verdict> {
    let w = windows();
    for i in 0..n {
        w.record(&make(i));
    }
    let report = w.bottlenecks_at(Window::OneMinute, at(55));
    verdicts_of(&report, "r")
}

#[test]
fn windows_roll_with_the_event_times() {
    let w = windows();
    let now = at(55);
    w.record(&ev(at(50), "recent", ms(5)));
    // Two minutes old: in the 5-minute window, not in the last minute.
    w.record(&ev(at(55 - 120), "two_min", ms(5)));
    // Ten minutes old: only the hour.
    w.record(&ev(at(55 - 600), "ten_min", ms(5)));
    // Three hours old: nowhere (older than both rings).
    w.record(&ev(at(55 - 3 * 3600), "old", ms(5)));
    let names = |win| {
        let mut v: Vec<String> = w
            .metrics_at(win, now)
            .routes
            .into_iter()
            .map(|r| r.route)
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(Window::OneMinute), ["recent"]);
    assert_eq!(names(Window::FiveMinutes), ["recent", "two_min"]);
    assert_eq!(names(Window::OneHour), ["recent", "ten_min", "two_min"]);
    // The 1m window spans its five whole slots and 5 s of the current one.
    let m = w.metrics_at(Window::OneMinute, now);
    assert_eq!(m.seconds, 55.0);
    assert_eq!(m.total.requests, 1);
    // A minute later the recent event has left the 1m window.
    assert!(
        w.metrics_at(Window::OneMinute, at(55 + 60))
            .routes
            .is_empty()
    );
    // Slots are reused: an event an hour later pushes the old ones out of
    // the fine ring, and an event older than the ring is ignored.
    w.record(&ev(at(3600), "later", ms(5)));
    w.record(&ev(at(50), "too_late", ms(5)));
    assert!(
        w.metrics_at(Window::FiveMinutes, at(55))
            .routes
            .iter()
            .all(|r| r.route != "too_late")
    );
}

#[test]
fn percentiles_rates_errors_and_bytes() {
    let w = windows();
    for i in 1..=100u64 {
        let mut e = ev(at(10 + (i % 40) as i64), "r", ms(i));
        e.bytes_in = 10;
        e.bytes_out = 1000;
        if i <= 5 {
            e.status = 503;
        } else if i <= 15 {
            e.status = 429;
            e.error = Some("rate_limited");
        }
        w.record(&e);
    }
    let m = w.metrics_at(Window::OneMinute, at(60));
    let r = route(&m, "r");
    assert_eq!(r.requests, 100);
    // Slots t0+10 s to t0+60 s: 50 seconds.
    assert_eq!(m.seconds, 50.0);
    assert_eq!(r.rate_per_s, 2.0);
    let near = |got: f64, want: f64| {
        assert!(
            (got - want).abs() <= want * 0.01,
            "{got} is not within 1 % of {want}"
        )
    };
    near(r.latency_ms.p50, 50.0);
    near(r.latency_ms.p95, 95.0);
    near(r.latency_ms.p99, 99.0);
    near(r.latency_ms.max, 100.0);
    assert_eq!(r.latency_ms.mean, 50.5);
    assert_eq!(r.errors.status_5xx, 5);
    assert_eq!(r.errors.status_4xx, 10);
    assert_eq!(r.errors.rate_limited, 10);
    assert_eq!(r.errors.error_rate, 0.05);
    assert_eq!(r.errors.client_error_rate, 0.1);
    assert_eq!(r.bytes.bytes_in, 1000);
    assert_eq!(r.bytes.bytes_out, 100_000);
    assert_eq!(r.bytes.out_per_s, 2000.0);
    assert_eq!(m.total.requests, 100);
    // Two-decimal milliseconds in the JSON.
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["routes"][0]["latency_ms"]["mean"], 50.5);
    assert_eq!(json["routes"][0]["bytes"]["in"], 1000);
}

#[test]
fn hit_rates_per_layer() {
    let w = windows();
    let record = |n: usize, cache: &[CacheEvent], layer: Option<CacheLayer>| {
        for _ in 0..n {
            let mut e = ev(at(20), "r", ms(1));
            e.cache = outcomes(cache);
            e.layer = layer;
            w.record(&e);
        }
    };
    record(6, &[CacheEvent::hit], Some(CacheLayer::L1));
    // An L2 hit is an L1 miss answered by the L2 layer.
    record(2, &[CacheEvent::miss], Some(CacheLayer::L2));
    record(1, &[CacheEvent::miss], None);
    record(1, &[CacheEvent::coalesced], None);
    record(1, &[CacheEvent::bypass], None);
    record(1, &[], None);
    let m = w.metrics_at(Window::FiveMinutes, at(55));
    let c = &route(&m, "r").cache;
    assert_eq!(
        (c.hit_l1, c.hit_l2, c.miss, c.coalesced, c.bypass, c.stale),
        (6, 2, 1, 1, 1, 0)
    );
    assert_eq!(c.lookups, 10);
    assert_eq!(c.hit_rate, 0.8);
    assert_eq!(c.l1_hit_rate, 0.6);
    assert_eq!(c.l2_hit_rate, 0.2);
}

#[test]
fn background_requests_are_not_counted() {
    let w = windows();
    for kind in [
        RequestKind::Refresh,
        RequestKind::Fill,
        RequestKind::Job,
        RequestKind::Warmup,
    ] {
        let mut e = ev(at(20), "r", ms(1));
        e.kind = kind;
        w.on_event(&e);
    }
    let mut e = ev(at(20), "r", ms(1));
    e.kind = RequestKind::BatchItem;
    w.on_event(&e);
    let mut e = ev(at(20), "r", ms(1));
    e.route = None;
    w.on_event(&e);
    let m = w.metrics_at(Window::OneMinute, at(30));
    assert_eq!(route(&m, "r").requests, 1);
    assert_eq!(route(&m, NO_ROUTE).requests, 1);
}

#[test]
fn regressions_need_the_ratio_the_margin_and_the_samples() {
    // Previous 5 minutes: t0-300..t0; current: t0..t0+300 (now = t0+299).
    let case = |n_before: usize, before: u64, n_now: usize, now_ms: u64| {
        let w = windows();
        for i in 0..n_before {
            w.record(&ev(at(-290 + i as i64), "r", ms(before)));
        }
        for i in 0..n_now {
            w.record(&ev(at(10 + i as i64), "r", ms(now_ms)));
        }
        w.bottlenecks_at(Window::FiveMinutes, at(299))
    };
    let r = case(30, 10, 30, 20);
    assert_eq!(r.regressions.len(), 1, "{r:#?}");
    let reg = &r.regressions[0];
    assert_eq!(reg.route, "r");
    assert!((reg.previous_p95_ms - 10.0).abs() < 0.2, "{reg:?}");
    assert!((reg.p95_ms - 20.0).abs() < 0.2, "{reg:?}");
    assert!(reg.change_pct > 90.0, "{reg:?}");
    assert_eq!((reg.requests, reg.previous_requests), (30, 30));
    assert!(rules(&verdicts_of(&r, "r")).contains(&"regression"));
    // Unchanged, too few samples on either side, +30 % but only 3 ms,
    // +6 ms but only +10 %.
    assert!(case(30, 10, 30, 10).regressions.is_empty());
    assert!(case(19, 10, 30, 20).regressions.is_empty());
    assert!(case(30, 10, 19, 20).regressions.is_empty());
    assert!(case(30, 10, 30, 13).regressions.is_empty());
    assert!(case(30, 60, 30, 66).regressions.is_empty());
    // The 1m window compares with the minute before, not older ones.
    let w = windows();
    for i in 0..30 {
        w.record(&ev(at(-120 + i), "r", ms(10)));
        w.record(&ev(at(10 + i), "r", ms(40)));
    }
    assert!(
        w.bottlenecks_at(Window::OneMinute, at(55))
            .regressions
            .is_empty()
    );
}

/// `n` requests of route `r`, `total` µs each, of which `part` µs in the
/// phase `set` writes.
fn phased(n: usize, total: u64, part: u64, set: fn(&mut PhaseTimes, Duration)) -> Vec<Verdict> {
    let us = Duration::from_micros;
    judge_n(n, |i| {
        let mut e = ev(at(10 + (i % 40) as i64), "r", us(total));
        set(&mut e.phases, us(part));
        e
    })
}

#[test]
fn upstream_verdict() {
    let set: fn(&mut PhaseTimes, Duration) = |p, d| {
        p.ttfb = d * 9 / 10;
        p.upstream_body = d / 10;
    };
    let v = phased(20, 300_000, 291_000, set);
    let up = v.iter().find(|v| v.rule == "upstream").expect("upstream");
    assert_eq!(up.numbers["upstream_pct"], 97.0);
    // 300 ms as the histogram keeps it (2 significant digits).
    assert!((up.numbers["p95_ms"] - 300.0).abs() < 3.0, "{up:?}");
    assert!(
        up.message
            .starts_with("r: 97 % of the time is the upstream (p95 30"),
        "{}",
        up.message
    );
    assert!(
        up.message.ends_with("make it an async route"),
        "{}",
        up.message
    );
    // Below the share, below the p95, too few requests.
    assert!(!rules(&phased(20, 300_000, 210_000, set)).contains(&"upstream"));
    assert!(!rules(&phased(20, 150_000, 150_000, set)).contains(&"upstream"));
    assert_eq!(
        rules(&phased(9, 300_000, 291_000, set)),
        ["too_few_requests"]
    );
}

#[test]
fn hit_rate_verdict_names_the_reason() {
    // 12 % hits; the misses are `no-cache`.
    let case = |hits: usize, reason: Option<&'static str>| {
        judge_n(25, move |i| {
            let mut e = ev(at(20), "r", ms(2));
            if i < hits {
                e.cache = outcomes(&[CacheEvent::hit]);
            } else {
                e.cache = outcomes(&[CacheEvent::miss]);
                e.detail = reason;
            }
            e
        })
    };
    let v = case(3, Some("no-cache"));
    let low = v
        .iter()
        .find(|v| v.rule == "low_hit_rate")
        .expect("verdict");
    assert_eq!(low.reason, Some("no-cache"));
    assert_eq!(low.numbers["hit_rate_pct"], 12.0);
    assert_eq!(low.numbers["reason_count"], 22.0);
    assert!(
        low.message
            .starts_with("r: hit rate 12 % because the upstream sends `no-cache`"),
        "{}",
        low.message
    );
    assert!(low.message.contains("`default_ttl`"), "{}", low.message);
    let json = serde_json::to_value(low).unwrap();
    assert_eq!(json["reason"], "no-cache");
    assert_eq!(json["hit_rate_pct"], 12.0);
    // Other reasons get their own words.
    for (reason, words) in [
        ("no-store", "`no-store`"),
        ("private", "`private`"),
        ("set-cookie", "sets cookies"),
        ("no-freshness", "no freshness"),
    ] {
        let v = case(3, Some(reason));
        let low = v
            .iter()
            .find(|v| v.rule == "low_hit_rate")
            .expect("verdict");
        assert_eq!(low.reason, Some(reason));
        assert!(low.message.contains(words), "{}", low.message);
    }
    // No reason: still a low hit rate, without a cause.
    let v = case(3, None);
    let low = v
        .iter()
        .find(|v| v.rule == "low_hit_rate")
        .expect("verdict");
    assert_eq!(low.reason, None);
    // At 52 % hits the rule is quiet.
    assert!(!rules(&case(13, Some("no-cache"))).contains(&"low_hit_rate"));
}

#[test]
fn rate_limited_and_server_error_verdicts() {
    let case = |n: usize, limited: usize, failed: usize| {
        judge_n(n, move |i| {
            let mut e = ev(at(20), "r", ms(1));
            if i < limited {
                e.status = 429;
                e.error = Some("rate_limited");
            } else if i < limited + failed {
                e.status = 502;
            }
            e
        })
    };
    let v = case(20, 8, 0);
    let rl = v
        .iter()
        .find(|v| v.rule == "rate_limited")
        .expect("verdict");
    assert_eq!(
        rl.message,
        "r: 40 % of requests are rate-limited (8 of 20); raise the limit if these clients are legitimate"
    );
    assert_eq!(rl.numbers["rate_limited_pct"], 40.0);
    assert_eq!(rules(&case(20, 1, 0)), ["ok"]);
    let v = case(20, 0, 2);
    let se = v
        .iter()
        .find(|v| v.rule == "server_errors")
        .expect("verdict");
    assert_eq!(se.numbers["error_pct"], 10.0);
    assert_eq!(rules(&case(40, 0, 1)), ["ok"]);
}

#[test]
fn phase_verdicts_fire_on_their_share_and_mean() {
    type Set = fn(&mut PhaseTimes, Duration);
    let cases: [(&str, Set); 5] = [
        ("coalescing_wait", |p, d| p.coalesce_wait = d),
        ("pool_wait", |p, d| p.connect = d),
        ("encode", |p, d| p.encode = d),
        ("l2_slow", |p, d| p.l2 = d),
        ("gateway", |p, d| {
            p.guard = d / 2;
            p.limit = d / 2;
        }),
    ];
    for (rule, set) in cases {
        // Half of 20 ms.
        let v = phased(20, 20_000, 10_000, set);
        let found = v.iter().find(|v| v.rule == rule);
        let found = found.unwrap_or_else(|| panic!("{rule} did not fire: {v:#?}"));
        assert!(found.numbers["mean_ms"] >= 10.0 - 0.01, "{found:?}");
        assert!(
            found.message.starts_with("r: 50 % of the time"),
            "{found:?}"
        );
        // 5 % of the time: below every share threshold.
        assert_eq!(rules(&phased(20, 20_000, 1_000, set)), ["ok"], "{rule}");
        // 60 % of the time but 0.6 ms a request: below every mean.
        assert_eq!(rules(&phased(20, 1_000, 600, set)), ["ok"], "{rule}");
    }
    let v = phased(20, 20_000, 10_000, |p, d| p.connect = d);
    let pool = v.iter().find(|v| v.rule == "pool_wait").expect("pool");
    assert!(
        pool.message.contains("`max_connections` is too low"),
        "{}",
        pool.message
    );
}

#[test]
fn quiet_routes_are_ok_and_shares_add_up() {
    let w = windows();
    for i in 0..20 {
        let mut e = ev(at(10 + i), "fast", ms(4));
        e.phases.guard = ms(1);
        e.phases.ttfb = ms(2);
        w.record(&e);
        let mut e = ev(at(10 + i), "slow", ms(400));
        e.phases.ttfb = ms(390);
        w.record(&e);
    }
    let r = w.bottlenecks_at(Window::OneMinute, at(55));
    assert_eq!(rules(&verdicts_of(&r, "fast")), ["ok"]);
    assert_eq!(r.slowest_by_p95[0].route, "slow");
    assert_eq!(r.slowest_by_p95[0].slowest_phase, "upstream_response");
    assert_eq!(r.slowest_by_time[0].route, "slow");
    assert_eq!(r.routes[0].route, "slow");
    assert_eq!(r.routes[0].phases.upstream_response.pct, 97.5);
    let fast = &r.routes[1];
    assert_eq!(fast.phases.gateway.pct, 25.0);
    assert_eq!(fast.phases.upstream_response.pct, 50.0);
    assert_eq!(fast.phases.other.pct, 25.0);
    assert_eq!(fast.phases.gateway.mean_ms, 1.0);
    // 20 × 4 ms of 20 × 404 ms.
    assert_eq!(fast.time_pct, 1.0);
    assert_eq!(r.time_ms, 8080.0);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["routes"][1]["verdicts"][0]["rule"], "ok");
    assert_eq!(json["phases"]["upstream_response"]["ms"], 7840.0);
}

#[test]
fn keys_are_capped() {
    let w = windows();
    for i in 0..MAX_KEYS + 44 {
        w.record(&ev(at(20), &format!("/r{i}"), ms(1)));
    }
    // Routes seen before the cap keep their own numbers.
    w.record(&ev(at(21), "/r0", ms(1)));
    let m = w.metrics_at(Window::OneMinute, at(30));
    assert_eq!(m.routes.len(), MAX_KEYS + 1);
    assert_eq!(route(&m, OTHER).requests, 44);
    assert_eq!(route(&m, "/r0").requests, 2);
    assert_eq!(m.total.requests, MAX_KEYS as u64 + 45);
}

#[test]
fn slow_requests_keep_the_last_hundred() {
    let w = windows();
    for i in 0..150u64 {
        let mut e = ev(at(-3000 + i as i64 * 20), "r", ms(1000 + i));
        e.id = i + 1;
        e.phases.ttfb = ms(900);
        w.record(&e);
    }
    // Exactly the threshold is not over it.
    w.record(&ev(at(-100), "r", ms(1000)));
    let r = w.bottlenecks_at(Window::OneHour, at(0));
    assert_eq!(r.slow_request_threshold_ms, 1000.0);
    assert_eq!(r.slow_requests.len(), SLOW_KEPT);
    let first = &r.slow_requests[0];
    assert_eq!(first.id, 150);
    assert_eq!(first.total_ms, 1149.0);
    assert_eq!(first.path, "/x");
    assert_eq!(first.route, "r");
    assert_eq!(first.phases.upstream_response_ms, 900.0);
    assert_eq!(first.phases.other_ms, 249.0);
    assert_eq!(r.slow_requests[99].id, 51);
    // Only those within the window: the last 5 minutes hold 15 of them.
    let r = w.bottlenecks_at(Window::FiveMinutes, at(0));
    assert_eq!(r.slow_requests.len(), 15);
}
