use std::sync::Barrier;
use std::sync::atomic::AtomicU32;
use std::thread;

use proptest::prelude::*;

use super::*;

const TTL: Duration = Duration::from_secs(10);
const SEC: Duration = Duration::from_secs(1);

/// Withdraws until refused; returns how many succeeded.
fn drain(b: &RetryBudget, now: Instant) -> u32 {
    let mut n = 0;
    while b.try_withdraw(now) {
        n += 1;
        assert!(n < 1_000_000, "budget never runs out");
    }
    n
}

fn deposits(b: &RetryBudget, n: u32, now: Instant) {
    for _ in 0..n {
        b.deposit(now);
    }
}

#[test]
fn budget_is_send_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<RetryBudget>();
}

#[test]
fn ratio_allows_exactly_its_share() {
    let t0 = Instant::now();
    let b = RetryBudget::new(0.2, 0, TTL);
    deposits(&b, 100, t0);
    for i in 0..20 {
        assert!(b.try_withdraw(t0), "retry {i} of 20");
    }
    assert!(!b.try_withdraw(t0), "the 21st retry");
    assert!(!b.try_withdraw(t0 + 5 * SEC));
}

#[test]
fn fixed_point_does_not_drift() {
    let t0 = Instant::now();
    for (ratio, requests, retries) in [
        (0.1, 1000, 100),
        (0.3, 10, 3),
        (0.25, 7, 1),
        (1.0, 50, 50),
        (2.5, 2, 5),
        (0.001, 999, 0),
        (0.001, 1000, 1),
        (0.0, 1000, 0),
    ] {
        let b = RetryBudget::new(ratio, 0, TTL);
        deposits(&b, requests, t0);
        assert_eq!(drain(&b, t0), retries, "ratio {ratio} × {requests}");
    }
}

#[test]
fn odd_ratios_are_clamped() {
    let t0 = Instant::now();
    for ratio in [f64::NAN, -1.0, f64::NEG_INFINITY] {
        let b = RetryBudget::new(ratio, 0, TTL);
        deposits(&b, 100, t0);
        assert!(!b.try_withdraw(t0), "ratio {ratio}");
    }
    let b = RetryBudget::new(f64::INFINITY, 0, TTL);
    b.deposit(t0);
    assert_eq!(drain(&b, t0), 1000);
}

#[test]
fn deposits_and_withdrawals_interleave() {
    let t0 = Instant::now();
    let b = RetryBudget::new(0.2, 0, TTL);
    for round in 0..10 {
        deposits(&b, 4, t0);
        assert!(!b.try_withdraw(t0), "0.8 token in round {round}");
        b.deposit(t0);
        assert!(b.try_withdraw(t0), "1 token in round {round}");
        assert!(!b.try_withdraw(t0));
    }
}

#[test]
fn floor_allows_min_per_sec_without_traffic() {
    let t0 = Instant::now();
    let b = RetryBudget::new(0.2, 3, TTL);
    assert_eq!(drain(&b, t0), 3);
    assert_eq!(drain(&b, t0 + Duration::from_millis(999)), 0);
    assert_eq!(drain(&b, t0 + SEC), 3);
    assert_eq!(drain(&b, t0 + 60 * SEC), 3);
    // Only the floor, with a zero ratio.
    let b = RetryBudget::new(0.0, 2, TTL);
    deposits(&b, 100, t0);
    assert_eq!(drain(&b, t0), 2);
}

#[test]
fn floor_is_used_only_when_tokens_are_spent() {
    let t0 = Instant::now();
    let b = RetryBudget::new(0.2, 3, TTL);
    deposits(&b, 10, t0);
    // 2 from the ratio, then 3 from the floor.
    assert_eq!(drain(&b, t0), 5);
    // The floor refills each second; the ratio tokens do not.
    assert_eq!(drain(&b, t0 + SEC), 3);
}

#[test]
fn zero_everything_never_retries() {
    let t0 = Instant::now();
    let b = RetryBudget::new(0.0, 0, TTL);
    deposits(&b, 10, t0);
    assert!(!b.try_withdraw(t0));
}

#[test]
fn tokens_expire_after_ttl() {
    let t0 = Instant::now();
    let b = RetryBudget::new(0.2, 0, TTL);
    deposits(&b, 100, t0);
    assert!(b.try_withdraw(t0 + TTL - Duration::from_nanos(1)));
    assert!(!b.try_withdraw(t0 + TTL));
    // New deposits count again; the retry at 9.999 s still weighs on them.
    deposits(&b, 5, t0 + TTL);
    assert!(!b.try_withdraw(t0 + TTL));
    deposits(&b, 5, t0 + TTL);
    assert!(b.try_withdraw(t0 + TTL));
    assert!(!b.try_withdraw(t0 + TTL));
}

#[test]
fn window_slides_slot_by_slot() {
    let t0 = Instant::now();
    let b = RetryBudget::new(0.2, 0, TTL);
    deposits(&b, 5, t0); // 1 token in slot 0
    deposits(&b, 10, t0 + 3 * SEC); // 2 tokens in slot 3
    // At 10 s slot 0 has expired, slot 3 has not.
    assert_eq!(drain(&b, t0 + 10 * SEC), 2);
    let b = RetryBudget::new(0.2, 0, TTL);
    deposits(&b, 5, t0);
    deposits(&b, 10, t0 + 3 * SEC);
    assert_eq!(drain(&b, t0 + Duration::from_millis(9_999)), 3);
    // At 13 s everything has gone.
    let b = RetryBudget::new(0.2, 0, TTL);
    deposits(&b, 5, t0);
    deposits(&b, 10, t0 + 3 * SEC);
    assert_eq!(drain(&b, t0 + 13 * SEC), 0);
}

#[test]
fn withdrawals_count_for_ttl_too() {
    let t0 = Instant::now();
    let b = RetryBudget::new(0.2, 0, TTL);
    deposits(&b, 5, t0);
    assert!(b.try_withdraw(t0));
    deposits(&b, 5, t0 + 5 * SEC);
    assert!(b.try_withdraw(t0 + 5 * SEC));
    assert!(!b.try_withdraw(t0 + 5 * SEC));
    // At 10 s the first deposit and the first retry expire together; the
    // second pair still balances to zero.
    assert!(!b.try_withdraw(t0 + 10 * SEC));
    // At 15 s the second retry is gone as well: a fresh deposit pays again.
    deposits(&b, 5, t0 + 15 * SEC);
    assert!(b.try_withdraw(t0 + 15 * SEC));
}

#[test]
fn a_late_now_from_another_thread_is_not_lost() {
    let t0 = Instant::now();
    let b = RetryBudget::new(0.2, 0, TTL);
    deposits(&b, 5, t0 + 20 * SEC);
    // Slot 0 now holds tick 20; a deposit at tick 10 (same slot) joins it.
    deposits(&b, 5, t0 + 10 * SEC);
    assert_eq!(drain(&b, t0 + 20 * SEC), 2);
}

#[test]
fn tiny_ttl_is_clamped() {
    let t0 = Instant::now();
    let b = RetryBudget::new(1.0, 0, Duration::ZERO);
    b.deposit(t0);
    assert!(b.try_withdraw(t0 + Duration::from_millis(9)));
    b.deposit(t0 + Duration::from_millis(10));
    assert!(b.try_withdraw(t0 + Duration::from_millis(19)));
    b.deposit(t0 + Duration::from_millis(20));
    assert!(!b.try_withdraw(t0 + Duration::from_millis(30)));
}

#[test]
fn concurrent_withdrawals_never_overdraw() {
    const THREADS: usize = 8;
    let t0 = Instant::now();
    let b = RetryBudget::new(0.2, 0, TTL);
    deposits(&b, 1000, t0);
    let barrier = Barrier::new(THREADS);
    let granted = AtomicU32::new(0);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..100 {
                    if b.try_withdraw(t0) {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let granted = granted.into_inner();
    assert!(granted <= 200, "{granted} retries from 200 tokens");
    // Failed attempts gave their token back: what is left adds up.
    assert_eq!(granted + drain(&b, t0), 200);
}

#[test]
fn concurrent_deposits_are_all_counted() {
    const THREADS: usize = 8;
    let t0 = Instant::now();
    let b = RetryBudget::new(0.1, 0, TTL);
    thread::scope(|s| {
        for i in 0..THREADS as u32 {
            let b = &b;
            s.spawn(move || {
                for _ in 0..1000 {
                    b.deposit(t0 + Duration::from_millis(u64::from(i)));
                }
            });
        }
    });
    assert_eq!(drain(&b, t0), 800);
}

#[test]
fn concurrent_floor_grants_exactly_min_per_sec() {
    const THREADS: usize = 8;
    let t0 = Instant::now();
    let b = RetryBudget::new(0.0, 7, TTL);
    b.deposit(t0);
    let granted = AtomicU32::new(0);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..10 {
                    if b.try_withdraw(t0) {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(granted.into_inner(), 7);
}

#[test]
fn backoff_cap_doubles_up_to_max() {
    let base = Duration::from_millis(100);
    let max = Duration::from_secs(2);
    let caps: Vec<_> = (0..8).map(|n| backoff_cap(n, base, max)).collect();
    let ms = Duration::from_millis;
    assert_eq!(
        caps,
        [
            ms(100),
            ms(100),
            ms(200),
            ms(400),
            ms(800),
            ms(1600),
            ms(2000),
            ms(2000)
        ]
    );
    assert_eq!(backoff_cap(u32::MAX, base, max), max);
    assert_eq!(backoff_cap(u32::MAX, Duration::ZERO, max), Duration::ZERO);
    assert_eq!(backoff_cap(5, base, Duration::ZERO), Duration::ZERO);
    assert_eq!(
        backoff_cap(u32::MAX, Duration::MAX, Duration::MAX),
        Duration::MAX
    );
    // 1 ns × 2^40 ≈ 18 min stays below a one-hour max.
    assert_eq!(
        backoff_cap(41, Duration::from_nanos(1), Duration::from_secs(3600)),
        Duration::from_nanos(1 << 40)
    );
}

#[test]
fn backoff_spreads_over_the_whole_range() {
    let cap = Duration::from_secs(1);
    let draws: Vec<_> = (0..1000).map(|_| backoff(1, cap, cap)).collect();
    assert!(draws.iter().all(|&d| d <= cap));
    assert!(draws.iter().any(|&d| d < Duration::from_millis(100)));
    assert!(draws.iter().any(|&d| d > Duration::from_millis(900)));
}

#[test]
fn backoff_extremes_do_not_panic() {
    for attempt in [0, 1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, u32::MAX] {
        for base in [Duration::ZERO, Duration::from_nanos(1), SEC, Duration::MAX] {
            for max in [Duration::ZERO, SEC, Duration::MAX] {
                assert!(backoff(attempt, base, max) <= max);
            }
        }
    }
}

/// `min(max, base × 2^(n-1))` computed independently, by repeated doubling.
fn reference_cap(attempt: u32, base: Duration, max: Duration) -> Duration {
    let mut cap = base;
    for _ in 1..attempt {
        if cap >= max {
            break;
        }
        cap = cap.saturating_mul(2);
    }
    cap.min(max)
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..10_000_000_000).prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

proptest! {
    #[test]
    fn backoff_stays_within_its_cap(
        attempt in prop_oneof![0u32..200, any::<u32>()],
        base in duration(),
        max in duration(),
    ) {
        let bound = reference_cap(attempt.min(300), base, max);
        prop_assert_eq!(backoff_cap(attempt, base, max), bound);
        prop_assert!(backoff(attempt, base, max) <= bound);
    }
}
