use super::*;

use proptest::prelude::*;
use std::sync::Barrier;

const MS: u64 = 1_000_000;

/// 10 per second (T = 100 ms), bursts of 5 (τ = 500 ms).
fn quota() -> Quota {
    Quota {
        rate: 10,
        period: Duration::from_secs(1),
        burst: 5,
    }
}

/// Runs requests at the given times (ns) from a fresh key; returns the
/// decisions and the final TAT.
fn run(q: &Quota, times: &[u64]) -> (Vec<Decision>, u64) {
    let mut tat = None;
    let mut out = Vec::with_capacity(times.len());
    for &now in times {
        let (d, new) = step(q, tat, now);
        if !d.allowed {
            assert_eq!(new, tat.unwrap_or(0), "a refusal must not move the TAT");
        }
        tat = Some(new);
        out.push(d);
    }
    (out, tat.unwrap_or(0))
}

#[test]
fn quota_intervals() {
    let q = quota();
    assert_eq!(q.emission_interval(), Duration::from_millis(100));
    assert_eq!(q.tolerance(), Duration::from_millis(500));
    let q = Quota {
        rate: 3,
        period: Duration::from_secs(1),
        burst: 2,
    };
    assert_eq!(q.emission_interval(), Duration::from_nanos(333_333_333));
    assert_eq!(q.tolerance(), Duration::from_nanos(666_666_666));
}

#[test]
fn burst_allowed_then_refused_with_remaining_counting_down() {
    let (ds, tat) = run(&quota(), &[0; 7]);
    let remaining: Vec<u32> = ds.iter().map(|d| d.remaining).collect();
    assert_eq!(remaining, [4, 3, 2, 1, 0, 0, 0]);
    assert!(ds[..5].iter().all(|d| d.allowed && d.retry_after.is_zero()));
    assert!(ds[5..].iter().all(|d| !d.allowed));
    assert_eq!(ds[5].retry_after, Duration::from_millis(100));
    assert_eq!(tat, 500 * MS);
}

#[test]
fn retry_after_is_exact_and_refill_follows_the_emission_interval() {
    let q = quota();
    let (_, tat) = run(&q, &[0; 5]);
    // 30 ms later the next slot is 70 ms away.
    let (d, same) = step(&q, Some(tat), 30 * MS);
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Duration::from_millis(70));
    assert_eq!(same, tat);
    // One nanosecond early: still refused, by exactly 1 ns.
    let (d, _) = step(&q, Some(tat), 100 * MS - 1);
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Duration::from_nanos(1));
    // On time: exactly one more, then refused again for a full interval.
    let (d, tat) = step(&q, Some(tat), 100 * MS);
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
    let (d, _) = step(&q, Some(tat), 100 * MS);
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Duration::from_millis(100));
}

#[test]
fn reset_is_the_time_until_a_full_burst() {
    let q = quota();
    let (d, tat) = step(&q, None, 0);
    assert_eq!(d.reset, Duration::from_millis(100));
    let (d, _) = step(&q, Some(tat), 40 * MS);
    // TAT was 100 ms, now 200 ms: 160 ms away.
    assert_eq!(d.reset, Duration::from_millis(160));
    assert_eq!(d.remaining, 3);
    let (_, tat) = run(&q, &[0; 5]);
    let (d, _) = step(&q, Some(tat), 100 * MS - 1);
    assert!(!d.allowed);
    assert_eq!(d.reset, Duration::from_nanos(400 * MS + 1));
    // After `reset`, a full burst is available again.
    let (d, tat) = step(&q, Some(tat), 500 * MS);
    assert!(d.allowed);
    assert_eq!(d.remaining, 4);
    let (ds, _) = run_from(&q, tat, &[500 * MS; 5]);
    assert_eq!(ds.iter().filter(|d| d.allowed).count(), 4);
}

fn run_from(q: &Quota, tat: u64, times: &[u64]) -> (Vec<Decision>, u64) {
    let mut tat = tat;
    let ds = times
        .iter()
        .map(|&now| {
            let (d, new) = step(q, Some(tat), now);
            tat = new;
            d
        })
        .collect();
    (ds, tat)
}

#[test]
fn never_seen_is_the_same_as_a_tat_in_the_past() {
    let q = quota();
    for now in [0, 1, 12345 * MS] {
        assert_eq!(step(&q, None, now).0, step(&q, Some(0), now).0);
        assert_eq!(step(&q, None, now), step(&q, Some(now), now));
    }
}

#[test]
fn a_steady_client_at_the_rate_is_never_refused() {
    let q = quota();
    let times: Vec<u64> = (0..1000).map(|i| i * 100 * MS).collect();
    let (ds, _) = run(&q, &times);
    assert!(ds.iter().all(|d| d.allowed && d.remaining == 4));
}

#[test]
fn the_window_bound_is_tight() {
    // Greedy: a full burst at 0, then one every T: burst + rate - 1
    // requests within [0, period).
    let q = quota();
    let mut times = vec![0; 5];
    times.extend((1..10).map(|i| i * 100 * MS));
    let (ds, _) = run(&q, &times);
    assert!(ds.iter().all(|d| d.allowed));
    assert_eq!(ds.len() as u32, q.burst + q.rate - 1);
}

#[test]
fn degenerate_quotas_saturate_without_panicking() {
    // rate 0: the largest interval; one request, then a very long wait.
    let q = Quota {
        rate: 0,
        period: Duration::from_secs(1),
        burst: 1,
    };
    assert_eq!(q.emission_interval(), MAX_EMISSION_INTERVAL);
    let ten_years = 10 * 365 * 24 * 3600 * 1000 * MS;
    let forty_years = 4 * ten_years;
    let (ds, _) = run(&q, &[0, 0, ten_years, forty_years]);
    assert!(ds[0].allowed && !ds[1].allowed && !ds[2].allowed && ds[3].allowed);
    assert_eq!(ds[1].retry_after, MAX_EMISSION_INTERVAL);

    // period 0: everything allowed, nothing used up.
    let q = Quota {
        rate: 5,
        period: Duration::ZERO,
        burst: 3,
    };
    let (ds, _) = run(&q, &[0; 100]);
    assert!(ds.iter().all(|d| d.allowed && d.remaining == 3));

    // burst 0: nothing allowed.
    let q = Quota {
        rate: 5,
        period: Duration::from_secs(1),
        burst: 0,
    };
    let (ds, tat) = run(&q, &[0, 10 * MS, 1000 * MS]);
    assert!(ds.iter().all(|d| !d.allowed && d.remaining == 0));
    assert_eq!(tat, 0);

    // Huge everything.
    let q = Quota {
        rate: u32::MAX,
        period: Duration::MAX,
        burst: u32::MAX,
    };
    assert_eq!(q.emission_interval(), MAX_EMISSION_INTERVAL);
    assert_eq!(q.tolerance(), MAX_TOLERANCE);
    for (tat, now) in [
        (None, u64::MAX),
        (Some(u64::MAX), 0),
        (Some(u64::MAX), u64::MAX),
    ] {
        let _ = step(&q, tat, now);
        let _ = step(&quota(), tat, now);
    }
    let q = Quota {
        rate: u32::MAX,
        period: Duration::from_nanos(1),
        burst: u32::MAX,
    };
    let (d, _) = step(&q, None, 0);
    assert!(d.allowed);
}

#[test]
fn headers_follow_the_draft() {
    let q = quota();
    let (d, _) = step(&q, None, 0);
    let (policy, limit) = headers("default", &q, &d);
    assert_eq!(policy, r#""default";q=5;w=1"#);
    assert_eq!(limit, r#""default";r=4;t=1"#);

    let q = Quota {
        rate: 100,
        period: Duration::from_secs(60),
        burst: 100,
    };
    let d = Decision {
        allowed: false,
        remaining: 0,
        reset: Duration::from_millis(2001),
        retry_after: Duration::from_millis(600),
    };
    let (policy, limit) = headers("per \"ip\"\\é", &q, &d);
    assert_eq!(policy, r#""per \"ip\"\\_";q=100;w=60"#);
    assert_eq!(limit, r#""per \"ip\"\\_";r=0;t=3"#);

    let d = Decision {
        reset: Duration::ZERO,
        ..d
    };
    assert_eq!(headers("a", &q, &d).1, r#""a";r=0;t=0"#);
}

#[test]
fn local_limiter_keys_are_independent() {
    let lim = LocalLimiter::new(quota(), 1000);
    assert_eq!(lim.quota(), &quota());
    let t0 = Instant::now();
    for key in ["a", "b"] {
        let allowed = (0..8).filter(|_| lim.check(key, t0).allowed).count();
        assert_eq!(allowed, 5, "{key}");
    }
    let d = lim.check("a", t0);
    assert!(!d.allowed);
    assert!(d.retry_after > Duration::ZERO && d.retry_after <= Duration::from_millis(100));
    // A new key is untouched by the others.
    assert_eq!(lim.check("c", t0).remaining, 4);
    assert!(format!("{lim:?}").contains("LocalLimiter"));
}

#[test]
fn local_limiter_refills_on_the_given_clock() {
    let lim = LocalLimiter::new(quota(), 1000);
    let t0 = Instant::now();
    assert_eq!((0..10).filter(|_| lim.check("k", t0).allowed).count(), 5);
    let d = lim.check("k", t0 + Duration::from_millis(30));
    assert!(!d.allowed);
    // The limiter's base is a little before t0, so the wait is at most 70 ms.
    assert!(d.retry_after <= Duration::from_millis(70));
    let later = t0 + Duration::from_millis(100);
    assert!(lim.check("k", later).allowed);
    assert!(!lim.check("k", later).allowed);
    // Idle for τ: a full burst again.
    let idle = later + Duration::from_millis(500);
    assert_eq!((0..10).filter(|_| lim.check("k", idle).allowed).count(), 5);
    // An instant before the base does not panic.
    let _ = lim.check("early", t0 - Duration::from_secs(1));
}

#[test]
fn local_limiter_threads_never_exceed_the_burst() {
    let q = Quota {
        rate: 100,
        period: Duration::from_secs(1),
        burst: 50,
    };
    let lim = LocalLimiter::new(q, 1000);
    let now = Instant::now();
    let threads = 16;
    let barrier = Barrier::new(threads);
    let allowed: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    (0..500).filter(|_| lim.check("hot", now).allowed).count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(allowed, 50);
}

#[test]
fn local_limiter_is_bounded() {
    let lim = LocalLimiter::new(quota(), 100);
    let now = Instant::now();
    for i in 0..2000 {
        lim.check(&format!("key{i}"), now);
    }
    lim.tats.run_pending_tasks();
    assert!(lim.tats.entry_count() <= 100, "{}", lim.tats.entry_count());
    // The most recent keys are still limited.
    assert!(lim.check("key1999", now).remaining < 4);

    // max_keys 0 still keeps one.
    let lim = LocalLimiter::new(quota(), 0);
    let _ = lim.check("x", now);
}

#[test]
fn local_limiter_expiry_fits_moka_for_any_quota() {
    for q in [
        Quota {
            rate: 0,
            period: Duration::MAX,
            burst: u32::MAX,
        },
        Quota {
            rate: 1,
            period: Duration::ZERO,
            burst: 0,
        },
    ] {
        let lim = LocalLimiter::new(q, 10);
        let _ = lim.check("k", Instant::now());
    }
}

/// A quota with `period` a multiple of `T`, and request times (ns, sorted)
/// built from gaps of 0..3T.
fn scenario() -> impl Strategy<Value = (Quota, Vec<u64>)> {
    (1u64..1000, 1u32..50, 1u32..20).prop_flat_map(|(t, rate, burst)| {
        let q = Quota {
            rate,
            period: Duration::from_nanos(t * u64::from(rate)),
            burst,
        };
        let gaps = proptest::collection::vec(prop_oneof![Just(0u64), 0..t, 0..3 * t], 1..300);
        (
            Just(q),
            gaps.prop_map(|g| {
                g.iter()
                    .scan(0u64, |now, gap| {
                        *now += gap;
                        Some(*now)
                    })
                    .collect()
            }),
        )
    })
}

/// Most allowed times within any window [s, s + w).
fn max_in_window(allowed: &[u64], w: u64) -> usize {
    allowed
        .iter()
        .enumerate()
        .map(|(i, &s)| allowed[i..].iter().take_while(|&&x| x < s + w).count())
        .max()
        .unwrap_or(0)
}

proptest! {
    /// The GCRA bound. Let requests t_1 ≤ … ≤ t_n be allowed within a
    /// window [s, s + W) (integer ns, so t_n - t_1 ≤ W - 1). Every allowed
    /// step raises the TAT by at least T (new = max(tat, now) + T), so the
    /// TAT after the n-th is ≥ t_1 + n·T; the allow condition says it is
    /// ≤ t_n + τ = t_n + b·T. Hence n·T ≤ W - 1 + b·T, i.e.
    /// n ≤ b + ⌊(W - 1) / T⌋. For W = period = rate·T that is
    /// burst + rate - 1 (so within the usual "burst + rate"), and the greedy
    /// client of `the_window_bound_is_tight` reaches it. (When T does not
    /// divide the period, truncation of T can add to the ⌊(W-1)/T⌋ term, so
    /// the general form is what holds for any quota.)
    #[test]
    fn allowed_per_window_is_bounded((q, times) in scenario(), w in 1u64..5000) {
        let (ds, _) = run(&q, &times);
        let allowed: Vec<u64> = times
            .iter()
            .zip(&ds)
            .filter(|(_, d)| d.allowed)
            .map(|(t, _)| *t)
            .collect();
        let t = nanos(q.emission_interval());
        let period = nanos(q.period);
        prop_assert!(max_in_window(&allowed, period) as u64 <= u64::from(q.burst + q.rate - 1));
        prop_assert!(max_in_window(&allowed, w) as u64 <= u64::from(q.burst) + (w - 1) / t);
    }

    /// `remaining` and `retry_after` are exact: after an allowed request
    /// with `remaining = k`, exactly k more pass at the same instant; a
    /// refusal with `retry_after = d` still refuses at now + d - 1 and
    /// allows at now + d; after `reset` a full burst is available.
    #[test]
    fn decisions_are_exact((q, times) in scenario()) {
        let (ds, tat) = run(&q, &times);
        let now = *times.last().unwrap();
        let last = *ds.last().unwrap();
        if last.allowed {
            let (more, _) = run_from(&q, tat, &vec![now; last.remaining as usize + 1]);
            let passed = more.iter().take_while(|d| d.allowed).count();
            prop_assert_eq!(passed, last.remaining as usize);
        } else {
            let d = nanos(last.retry_after);
            prop_assert!(d >= 1);
            prop_assert!(!step(&q, Some(tat), now + d - 1).0.allowed);
            prop_assert!(step(&q, Some(tat), now + d).0.allowed);
        }
        let full = now + nanos(last.reset);
        let (d, _) = step(&q, Some(tat), full);
        prop_assert!(d.allowed);
        prop_assert_eq!(d.remaining, q.burst - 1);
    }

    /// Any quota, TAT and clock: no panic, and the invariants hold.
    #[test]
    fn step_never_panics(
        rate in any::<u32>(),
        period in any::<u64>(),
        burst in any::<u32>(),
        tat in any::<Option<u64>>(),
        now in any::<u64>(),
    ) {
        let q = Quota { rate, period: Duration::from_nanos(period), burst };
        let (d, new) = step(&q, tat, now);
        prop_assert!(d.remaining <= burst);
        if d.allowed {
            prop_assert!(d.retry_after.is_zero());
        } else {
            prop_assert_eq!(new, tat.unwrap_or(0));
            prop_assert_eq!(d.remaining, 0);
            prop_assert!(!d.retry_after.is_zero());
        }
    }
}
