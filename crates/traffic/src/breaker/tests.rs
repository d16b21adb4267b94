use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Barrier, mpsc};
use std::thread;

use super::*;

use BreakerState::{Closed, HalfOpen, Open};

const SEC: Duration = Duration::from_secs(1);

fn settings() -> BreakerSettings {
    BreakerSettings {
        failure_rate: 0.0,
        min_requests: 0,
        window: Duration::from_secs(10),
        consecutive_failures: 0,
        open_for: Duration::from_secs(30),
        half_open_requests: 3,
    }
}

fn consecutive(n: u32) -> Breaker {
    Breaker::new(BreakerSettings {
        consecutive_failures: n,
        ..settings()
    })
}

fn rate(failure_rate: f64, min_requests: u32) -> Breaker {
    Breaker::new(BreakerSettings {
        failure_rate,
        min_requests,
        ..settings()
    })
}

/// Admits and records one request; panics if it is refused.
fn run(b: &Breaker, success: bool, now: Instant) -> Option<(BreakerState, BreakerState)> {
    let permit = b.admit(now).expect("admitted");
    b.record(permit, success, now)
}

/// A breaker opened at `t0` by 1 consecutive failure.
fn opened(t0: Instant) -> Breaker {
    let b = consecutive(1);
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
    b
}

/// The atomic word agrees with the locked state, and the trial count is in
/// bounds.
fn check_invariants(b: &Breaker) {
    let inner = b.shared.lock();
    let word = b.shared.word.load(Ordering::Acquire);
    assert_eq!(BreakerState::from_code(word), inner.state);
    assert_eq!(word >> 2, inner.generation);
    assert!(inner.trials_in_flight <= b.shared.settings.half_open_requests);
    if inner.state != HalfOpen {
        assert_eq!(inner.trials_in_flight, 0);
        assert_eq!(inner.trial_successes, 0);
    }
    assert_eq!(inner.opened_at.is_some(), inner.state == Open);
}

#[test]
fn breaker_and_permit_are_send_sync_static() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Breaker>();
    assert_send_sync::<Permit>();
}

#[test]
fn closed_admit_needs_no_lock_and_no_arc() {
    let b = consecutive(3);
    let guard = b.shared.lock();
    // Would deadlock if the closed path locked.
    let p = b.admit(Instant::now()).unwrap();
    assert!(p.trial.is_none());
    assert_eq!(Arc::strong_count(&b.shared), 1);
    drop(guard);
    drop(p);
}

#[test]
fn opens_on_consecutive_failures() {
    let t0 = Instant::now();
    let b = consecutive(3);
    assert_eq!(run(&b, false, t0), None);
    assert_eq!(run(&b, false, t0), None);
    assert_eq!(b.state(t0), Closed);
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
    assert_eq!(b.state(t0), Open);
    check_invariants(&b);
}

#[test]
fn a_success_resets_the_consecutive_count() {
    let t0 = Instant::now();
    let b = consecutive(3);
    for _ in 0..10 {
        assert_eq!(run(&b, false, t0), None);
        assert_eq!(run(&b, false, t0), None);
        assert_eq!(run(&b, true, t0), None);
    }
    assert_eq!(b.state(t0), Closed);
}

#[test]
fn zero_disables_both_rules() {
    let t0 = Instant::now();
    let b = Breaker::new(settings());
    for _ in 0..1000 {
        assert_eq!(run(&b, false, t0), None);
    }
    assert_eq!(b.state(t0), Closed);
}

#[test]
fn rate_rule_waits_for_min_requests() {
    let t0 = Instant::now();
    let b = rate(0.5, 10);
    for _ in 0..9 {
        assert_eq!(run(&b, false, t0), None, "below min_requests");
    }
    assert_eq!(b.state(t0), Closed);
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
}

#[test]
fn rate_rule_opens_exactly_at_the_threshold() {
    let t0 = Instant::now();
    let b = rate(0.3, 10);
    for _ in 0..7 {
        assert_eq!(run(&b, true, t0), None);
    }
    assert_eq!(run(&b, false, t0), None);
    assert_eq!(run(&b, false, t0), None);
    // 3 failures of 10 = 0.3.
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
}

#[test]
fn rate_rule_stays_closed_below_the_threshold() {
    let t0 = Instant::now();
    let b = rate(0.5, 10);
    for _ in 0..100 {
        assert_eq!(run(&b, true, t0), None);
        assert_eq!(run(&b, true, t0), None);
        assert_eq!(run(&b, false, t0), None);
    }
    assert_eq!(b.state(t0), Closed);
}

#[test]
fn old_failures_fall_out_of_the_window() {
    let t0 = Instant::now();
    // Window 10 s: buckets of 1 s.
    let b = rate(0.5, 10);
    for _ in 0..9 {
        assert_eq!(run(&b, false, t0), None);
    }
    // 9 s later the failures are still in the window: one more opens it.
    let b2 = rate(0.5, 10);
    for _ in 0..9 {
        assert_eq!(run(&b2, false, t0), None);
    }
    assert_eq!(
        run(&b2, false, t0 + Duration::from_millis(9_999)),
        Some((Closed, Open))
    );
    // A full window later they are gone: 9 more failures stay below
    // min_requests, a success then makes it 10 results at 0.9.
    let later = t0 + Duration::from_secs(10);
    for _ in 0..9 {
        assert_eq!(run(&b, false, later), None);
    }
    assert_eq!(run(&b, true, later), Some((Closed, Open)));
}

#[test]
fn window_slides_bucket_by_bucket() {
    let t0 = Instant::now();
    let b = rate(0.5, 4);
    // 2 failures at 0 s, 2 successes at 5 s: 4 results at 0.5 — opens at the
    // 4th if the failures are still counted...
    assert_eq!(run(&b, false, t0), None);
    assert_eq!(run(&b, false, t0), None);
    assert_eq!(run(&b, true, t0 + 5 * SEC), None);
    assert_eq!(
        run(&b, true, t0 + Duration::from_millis(9_999)),
        Some((Closed, Open))
    );
    // ...and not when the first bucket has rotated out.
    let b = rate(0.5, 4);
    assert_eq!(run(&b, false, t0), None);
    assert_eq!(run(&b, false, t0), None);
    assert_eq!(run(&b, true, t0 + 5 * SEC), None);
    assert_eq!(run(&b, true, t0 + 10 * SEC), None);
    assert_eq!(run(&b, false, t0 + 10 * SEC), None);
    assert_eq!(b.state(t0 + 10 * SEC), Closed);
}

#[test]
fn open_refuses_with_the_exact_time_left() {
    let t0 = Instant::now();
    let b = opened(t0);
    assert_eq!(b.admit(t0).unwrap_err(), Duration::from_secs(30));
    assert_eq!(
        b.admit(t0 + Duration::from_millis(12_345)).unwrap_err(),
        Duration::from_millis(17_655)
    );
    assert_eq!(
        b.admit(t0 + Duration::from_secs(30) - Duration::from_nanos(1))
            .unwrap_err(),
        Duration::from_nanos(1)
    );
    // A `now` before the opening (another thread's clock) sees the whole
    // `open_for`.
    let b = opened(t0 + 5 * SEC);
    assert_eq!(b.admit(t0).unwrap_err(), Duration::from_secs(30));
}

#[test]
fn state_reads_half_open_once_open_for_elapsed() {
    let t0 = Instant::now();
    let b = opened(t0);
    assert_eq!(b.state(t0 + 29 * SEC), Open);
    assert_eq!(b.state(t0 + 30 * SEC), HalfOpen);
    // Reading does not transition.
    assert_eq!(b.shared.lock().state, Open);
    let _p = b.admit(t0 + 30 * SEC).unwrap();
    assert_eq!(b.shared.lock().state, HalfOpen);
    assert_eq!(b.state(t0 + 30 * SEC), HalfOpen);
}

#[test]
fn exactly_half_open_requests_trials_at_once() {
    let t0 = Instant::now();
    let b = opened(t0);
    let t = t0 + 30 * SEC;
    let trials: Vec<Permit> = (0..3).map(|_| b.admit(t).expect("trial")).collect();
    assert!(trials.iter().all(|p| p.trial.is_some()));
    assert_eq!(b.admit(t).unwrap_err(), Duration::ZERO);
    assert_eq!(b.admit(t + 100 * SEC).unwrap_err(), Duration::ZERO);
    check_invariants(&b);
    // A success frees a slot without closing yet.
    let mut trials = trials.into_iter();
    assert_eq!(b.record(trials.next().unwrap(), true, t), None);
    let fourth = b.admit(t).expect("slot freed");
    assert_eq!(b.admit(t).unwrap_err(), Duration::ZERO);
    drop(fourth);
}

#[test]
fn trial_successes_close_it() {
    let t0 = Instant::now();
    let b = opened(t0);
    let t = t0 + 30 * SEC;
    let trials: Vec<Permit> = (0..3).map(|_| b.admit(t).unwrap()).collect();
    let mut results = trials.into_iter().map(|p| b.record(p, true, t));
    assert_eq!(results.next(), Some(None));
    assert_eq!(results.next(), Some(None));
    assert_eq!(results.next(), Some(Some((HalfOpen, Closed))));
    assert_eq!(b.state(t), Closed);
    check_invariants(&b);
    // Closed again with a fresh window and consecutive count.
    let p = b.admit(t).unwrap();
    assert!(p.trial.is_none());
    assert_eq!(b.record(p, false, t), Some((Closed, Open)));
}

#[test]
fn successes_must_be_consecutive_trials_one_at_a_time() {
    let t0 = Instant::now();
    let b = opened(t0);
    let t = t0 + 30 * SEC;
    assert_eq!(run(&b, true, t), None);
    assert_eq!(run(&b, true, t), None);
    assert_eq!(b.state(t), HalfOpen);
    assert_eq!(run(&b, true, t), Some((HalfOpen, Closed)));
}

#[test]
fn closing_resets_the_window() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerSettings {
        failure_rate: 0.5,
        min_requests: 4,
        half_open_requests: 1,
        ..settings()
    });
    for _ in 0..3 {
        assert_eq!(run(&b, true, t0), None);
    }
    for _ in 0..2 {
        assert_eq!(run(&b, false, t0), None);
    }
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
    let t = t0 + 30 * SEC;
    assert_eq!(run(&b, true, t), Some((HalfOpen, Closed)));
    // Had the old results stayed, the first failure would make 4 of 7 and
    // open it; in a fresh window it takes min_requests failures.
    for _ in 0..3 {
        assert_eq!(run(&b, false, t), None);
    }
    assert_eq!(run(&b, false, t), Some((Closed, Open)));
}

#[test]
fn a_trial_failure_reopens_and_restarts_the_timer() {
    let t0 = Instant::now();
    let b = opened(t0);
    let t = t0 + 40 * SEC;
    let a = b.admit(t).unwrap();
    let c = b.admit(t).unwrap();
    assert_eq!(b.record(a, true, t), None);
    let fail_at = t + 2 * SEC;
    assert_eq!(b.record(c, false, fail_at), Some((HalfOpen, Open)));
    assert_eq!(b.state(fail_at), Open);
    assert_eq!(b.admit(fail_at + SEC).unwrap_err(), Duration::from_secs(29));
    assert_eq!(b.state(fail_at + 30 * SEC), HalfOpen);
    check_invariants(&b);
    // The successes before the failure do not carry over.
    let t = fail_at + 30 * SEC;
    assert_eq!(run(&b, true, t), None);
    assert_eq!(run(&b, true, t), None);
    assert_eq!(run(&b, true, t), Some((HalfOpen, Closed)));
}

#[test]
fn stale_permit_from_before_opening_does_not_close_half_open() {
    let t0 = Instant::now();
    // One trial success would close it.
    let b = Breaker::new(BreakerSettings {
        consecutive_failures: 1,
        half_open_requests: 1,
        ..settings()
    });
    let slow_ok = b.admit(t0).unwrap();
    let slow_fail = b.admit(t0).unwrap();
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
    // Finishing while open: ignored.
    assert_eq!(b.record(slow_fail, false, t0 + SEC), None);
    let t = t0 + 30 * SEC;
    let trial = b.admit(t).unwrap();
    // Finishing while half-open: neither closes it nor frees the trial slot.
    assert_eq!(b.record(slow_ok, true, t), None);
    assert_eq!(b.state(t), HalfOpen);
    assert_eq!(b.admit(t).unwrap_err(), Duration::ZERO);
    {
        let inner = b.shared.lock();
        assert_eq!(inner.trial_successes, 0);
        assert_eq!(inner.trials_in_flight, 1);
    }
    assert_eq!(b.record(trial, true, t), Some((HalfOpen, Closed)));
    check_invariants(&b);
}

#[test]
fn stale_failure_does_not_reopen_half_open() {
    let t0 = Instant::now();
    let b = consecutive(1);
    let slow = b.admit(t0).unwrap();
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
    let t = t0 + 30 * SEC;
    let trial = b.admit(t).unwrap();
    assert_eq!(b.record(slow, false, t), None);
    assert_eq!(b.state(t), HalfOpen);
    drop(trial);
}

#[test]
fn stale_results_do_not_count_in_the_new_closed_window() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerSettings {
        consecutive_failures: 2,
        half_open_requests: 1,
        ..settings()
    });
    let slow: Vec<Permit> = (0..5).map(|_| b.admit(t0).unwrap()).collect();
    assert_eq!(run(&b, false, t0), None);
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
    let t = t0 + 30 * SEC;
    assert_eq!(run(&b, true, t), Some((HalfOpen, Closed)));
    for p in slow {
        assert_eq!(b.record(p, false, t), None);
    }
    assert_eq!(b.state(t), Closed);
    assert_eq!(b.shared.lock().consecutive_failures, 0);
}

#[test]
fn stale_trial_from_an_earlier_half_open_round_is_ignored() {
    let t0 = Instant::now();
    let b = opened(t0);
    let t = t0 + 30 * SEC;
    let first = b.admit(t).unwrap();
    let second = b.admit(t).unwrap();
    assert_eq!(b.record(first, false, t), Some((HalfOpen, Open)));
    let t = t + 30 * SEC;
    let trials: Vec<Permit> = (0..3).map(|_| b.admit(t).unwrap()).collect();
    // The old trial neither frees a slot of the new round...
    drop(second);
    assert_eq!(b.admit(t).unwrap_err(), Duration::ZERO);
    // ...nor does the new round's success count get skewed.
    let mut results = trials.into_iter().map(|p| b.record(p, true, t));
    assert_eq!(results.next(), Some(None));
    assert_eq!(results.next(), Some(None));
    assert_eq!(results.next(), Some(Some((HalfOpen, Closed))));
}

#[test]
fn dropping_a_trial_permit_frees_its_slot() {
    let t0 = Instant::now();
    let b = opened(t0);
    let t = t0 + 30 * SEC;
    let trials: Vec<Permit> = (0..3).map(|_| b.admit(t).unwrap()).collect();
    assert!(b.admit(t).is_err());
    drop(trials);
    assert_eq!(b.shared.lock().trials_in_flight, 0);
    // Cancelled trials count as nothing: still half-open, 3 successes needed.
    let again: Vec<Permit> = (0..3).map(|_| b.admit(t).unwrap()).collect();
    assert!(b.admit(t).is_err());
    let results: Vec<_> = again.into_iter().map(|p| b.record(p, true, t)).collect();
    assert_eq!(results, [None, None, Some((HalfOpen, Closed))]);
    // All `Arc`s held by trials are gone.
    assert_eq!(Arc::strong_count(&b.shared), 1);
}

#[test]
fn dropping_a_closed_permit_changes_nothing() {
    let t0 = Instant::now();
    let b = consecutive(2);
    drop(b.admit(t0).unwrap());
    assert_eq!(run(&b, false, t0), None);
    drop(b.admit(t0).unwrap());
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
}

#[test]
fn zero_half_open_requests_means_one() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerSettings {
        consecutive_failures: 1,
        half_open_requests: 0,
        ..settings()
    });
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
    let t = t0 + 30 * SEC;
    let p = b.admit(t).unwrap();
    assert!(b.admit(t).is_err());
    assert_eq!(b.record(p, true, t), Some((HalfOpen, Closed)));
}

#[test]
fn zero_open_for_goes_half_open_at_once() {
    let t0 = Instant::now();
    let b = Breaker::new(BreakerSettings {
        consecutive_failures: 1,
        open_for: Duration::ZERO,
        ..settings()
    });
    assert_eq!(run(&b, false, t0), Some((Closed, Open)));
    assert_eq!(b.state(t0), HalfOpen);
    assert!(b.admit(t0).unwrap().trial.is_some());
}

#[test]
fn concurrent_failures_report_one_opening() {
    const THREADS: usize = 8;
    let t0 = Instant::now();
    let b = Arc::new(consecutive(5));
    let barrier = Barrier::new(THREADS);
    let openings = AtomicU32::new(0);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..100 {
                    if let Ok(p) = b.admit(t0) {
                        match b.record(p, false, t0) {
                            Some((Closed, Open)) => {
                                openings.fetch_add(1, Ordering::Relaxed);
                            }
                            None => {}
                            other => panic!("unexpected transition {other:?}"),
                        }
                    }
                }
            });
        }
    });
    assert_eq!(openings.load(Ordering::Relaxed), 1);
    assert_eq!(b.state(t0), Open);
    check_invariants(&b);
}

#[test]
fn concurrent_half_open_admits_exactly_the_slots() {
    const THREADS: usize = 16;
    let t0 = Instant::now();
    let b = opened(t0);
    let t = t0 + 30 * SEC;
    let barrier = Barrier::new(THREADS);
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        for _ in 0..THREADS {
            let tx = tx.clone();
            let (b, barrier) = (&b, &barrier);
            s.spawn(move || {
                barrier.wait();
                if let Ok(p) = b.admit(t) {
                    tx.send(p).unwrap();
                }
            });
        }
    });
    drop(tx);
    let permits: Vec<Permit> = rx.iter().collect();
    assert_eq!(permits.len(), 3);
    check_invariants(&b);
}

#[test]
fn concurrent_mixed_traffic_keeps_invariants() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 3_000;
    let t0 = Instant::now();
    let b = Breaker::new(BreakerSettings {
        failure_rate: 0.5,
        min_requests: 20,
        window: Duration::from_secs(10),
        consecutive_failures: 8,
        open_for: Duration::from_millis(50),
        half_open_requests: 2,
    });
    // Shared clock in milliseconds; threads read it at slightly different
    // moments, so `now` is not monotonic across threads.
    let clock = AtomicU64::new(0);
    let transitions = Mutex::new(Vec::new());
    thread::scope(|s| {
        for seed in 0..THREADS as u64 {
            let (b, clock, transitions) = (&b, &clock, &transitions);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut held: Vec<Permit> = Vec::new();
                let mut seen = Vec::new();
                for _ in 0..ROUNDS {
                    let now = t0 + Duration::from_millis(clock.fetch_add(1, Ordering::Relaxed) / 4);
                    match b.admit(now) {
                        Ok(p) => held.push(p),
                        Err(wait) => assert!(wait <= Duration::from_millis(50)),
                    }
                    if !held.is_empty() && rng.u8(..) < 160 {
                        let p = held.swap_remove(rng.usize(..held.len()));
                        match rng.u8(..) {
                            0..20 => drop(p),
                            // Failure-heavy phases alternate with healthy ones.
                            r => {
                                let bad = ((now - t0).as_millis() / 500).is_multiple_of(2);
                                let success = if bad { r > 140 } else { r > 30 };
                                if let Some(tr) = b.record(p, success, now) {
                                    seen.push(tr);
                                }
                            }
                        }
                    }
                    check_invariants(b);
                }
                drop(held);
                transitions.lock().unwrap().extend(seen);
            });
        }
    });
    check_invariants(&b);
    let inner = b.shared.lock();
    assert_eq!(
        inner.trials_in_flight, 0,
        "every permit recorded or dropped"
    );
    let transitions = transitions.into_inner().unwrap();
    let count = |tr| transitions.iter().filter(|&&t| t == tr).count();
    let (c2o, h2c, h2o) = (
        count((Closed, Open)),
        count((HalfOpen, Closed)),
        count((HalfOpen, Open)),
    );
    assert_eq!(c2o + h2c + h2o, transitions.len());
    assert!(
        c2o > 0 && h2c > 0,
        "the run exercised the state machine: {c2o} {h2c} {h2o}"
    );
    // Every closing follows an opening; the last opening may be unfinished.
    let still_out = usize::from(inner.state != Closed);
    assert_eq!(c2o, h2c + still_out);
    // Each reported transition and each open → half-open move is one
    // generation; every half-open round but the current one has ended.
    let gens = inner.generation as usize;
    let o2h = gens - transitions.len();
    assert_eq!(o2h, h2c + h2o + usize::from(inner.state == HalfOpen));
}
