use std::sync::Arc;

use proptest::prelude::*;

use super::*;

const S: Duration = Duration::from_secs(1);

fn outlier(consecutive_failures: u32, max_ejection_percent: u8) -> OutlierSettings {
    OutlierSettings {
        consecutive_failures,
        base_ejection: 10 * S,
        max_ejection: 25 * S,
        max_ejection_percent,
    }
}

fn probes(healthy: u32, unhealthy: u32) -> Option<ProbeThresholds> {
    Some(ProbeThresholds { healthy, unhealthy })
}

/// Reports `n` failures on `server` and returns the last result.
fn fail(h: &PoolHealth, server: usize, n: u32, now: Instant) -> Option<Transition> {
    let mut last = None;
    for _ in 0..n {
        last = h.report(server, false, now);
    }
    last
}

fn eligible(h: &PoolHealth, now: Instant) -> Vec<bool> {
    (0..h.shared.len()).map(|i| h.eligible(i, now)).collect()
}

fn ejected(server: usize, secs: u64) -> Option<Transition> {
    Some(Transition::Ejected {
        server,
        until: Duration::from_secs(secs),
    })
}

#[test]
fn thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PoolHealth>();
}

// ---- outlier ejection ----

#[test]
fn ejects_after_consecutive_failures() {
    let t0 = Instant::now();
    let h = PoolHealth::new(3, None, outlier(3, 100), t0);
    assert_eq!(fail(&h, 1, 2, t0), None);
    assert_eq!(h.snapshot(t0)[1].consecutive_failures, 2);
    assert!(h.eligible(1, t0));
    assert_eq!(h.report(1, false, t0), ejected(1, 10));
    assert_eq!(eligible(&h, t0), [true, false, true]);
    assert_eq!(
        h.snapshot(t0 + 4 * S)[1],
        ServerHealth {
            probe_healthy: true,
            ejected_for: Some(6 * S),
            ejections: 1,
            consecutive_failures: 0,
        }
    );
}

#[test]
fn success_resets_the_streak() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, None, outlier(3, 100), t0);
    assert_eq!(fail(&h, 0, 2, t0), None);
    assert_eq!(h.report(0, true, t0), None);
    assert_eq!(h.snapshot(t0)[0].consecutive_failures, 0);
    assert_eq!(fail(&h, 0, 2, t0), None);
    assert_eq!(h.report(0, false, t0), ejected(0, 10));
}

#[test]
fn disabled_detection_never_ejects() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, None, outlier(0, 100), t0);
    assert_eq!(fail(&h, 0, 1000, t0), None);
    assert!(h.eligible(0, t0));
    assert_eq!(h.snapshot(t0)[0].consecutive_failures, 1000);
}

#[test]
fn ejection_time_grows_and_is_capped() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, None, outlier(1, 100), t0);
    let mut now = t0;
    for expected in [10, 20, 25, 25] {
        assert_eq!(h.report(0, false, now), ejected(0, expected));
        now += Duration::from_secs(expected);
        assert_eq!(
            h.readmit_expired(now),
            [Transition::Readmitted { server: 0 }]
        );
    }
    assert_eq!(h.snapshot(now)[0].ejections, 4);
}

#[test]
fn max_ejection_percent_is_respected() {
    let t0 = Instant::now();
    let h = PoolHealth::new(4, None, outlier(2, 50), t0);
    assert_eq!(fail(&h, 0, 2, t0), ejected(0, 10));
    assert_eq!(fail(&h, 1, 2, t0), ejected(1, 10));
    assert_eq!(fail(&h, 2, 2, t0), None, "a third of four exceeds 50 %");
    assert_eq!(fail(&h, 3, 5, t0), None);
    assert_eq!(eligible(&h, t0), [false, false, true, true]);
    // The refused streak is kept: once room is made, the next failure ejects.
    let later = t0 + 10 * S;
    assert_eq!(h.snapshot(later)[2].consecutive_failures, 2);
    assert_eq!(h.report(2, false, later), ejected(2, 10));
}

#[test]
fn zero_percent_never_ejects() {
    let t0 = Instant::now();
    let h = PoolHealth::new(4, None, outlier(1, 0), t0);
    assert_eq!(fail(&h, 0, 10, t0), None);
    assert_eq!(eligible(&h, t0), [true; 4]);
}

#[test]
fn a_single_server_is_never_ejected() {
    let t0 = Instant::now();
    let h = PoolHealth::new(1, None, outlier(1, 100), t0);
    assert_eq!(fail(&h, 0, 100, t0), None);
    assert!(h.eligible(0, t0));
}

#[test]
fn the_last_eligible_server_is_never_ejected() {
    let t0 = Instant::now();
    let h = PoolHealth::new(3, probes(1, 1), outlier(1, 100), t0);
    assert_eq!(
        h.probe(2, false, t0),
        Some(Transition::ProbeDown { server: 2 })
    );
    assert_eq!(h.report(0, false, t0), ejected(0, 10));
    assert_eq!(h.report(1, false, t0), None, "server 2 is probe-down");
    assert_eq!(eligible(&h, t0), [false, true, false]);
}

#[test]
fn reports_while_ejected_are_ignored() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, None, outlier(2, 100), t0);
    assert_eq!(fail(&h, 0, 2, t0), ejected(0, 10));
    assert_eq!(fail(&h, 0, 5, t0 + S), None);
    assert_eq!(h.snapshot(t0 + S)[0].consecutive_failures, 0);
    assert_eq!(h.snapshot(t0 + S)[0].ejections, 1);
}

// ---- readmission ----

#[test]
fn readmission_after_the_ejection_time() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, None, outlier(1, 100), t0);
    assert_eq!(h.report(1, false, t0), ejected(1, 10));
    let before = t0 + 10 * S - Duration::from_millis(1);
    assert!(!h.eligible(1, before));
    assert_eq!(h.readmit_expired(before), []);
    // Eligible as soon as the time has passed, before the periodic task runs.
    let at = t0 + 10 * S;
    assert!(h.eligible(1, at));
    assert_eq!(h.snapshot(at)[1].ejected_for, None);
    assert_eq!(
        h.readmit_expired(at),
        [Transition::Readmitted { server: 1 }]
    );
    assert_eq!(h.readmit_expired(at), [], "reported once");
    assert!(h.eligible(1, at));
}

#[test]
fn an_expired_ejection_is_readmitted_before_the_next_one() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, None, outlier(1, 100), t0);
    assert_eq!(h.report(0, false, t0), ejected(0, 10));
    // The periodic task has not run; a new failure ejects again.
    let later = t0 + 11 * S;
    assert_eq!(h.report(0, false, later), ejected(0, 20));
    assert_eq!(
        h.readmit_expired(later),
        [Transition::Readmitted { server: 0 }]
    );
    assert!(!h.eligible(0, later), "the second ejection stands");
    assert_eq!(
        h.readmit_expired(later + 20 * S),
        [Transition::Readmitted { server: 0 }]
    );
}

#[test]
fn instants_before_creation_count_as_creation() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, None, outlier(1, 100), t0 + S);
    assert_eq!(h.report(0, false, t0), ejected(0, 10));
    assert!(!h.eligible(0, t0));
    assert!(!h.eligible(0, t0 + 10 * S));
    assert!(h.eligible(0, t0 + 11 * S));
}

// ---- probes ----

#[test]
fn servers_start_up() {
    let t0 = Instant::now();
    let h = PoolHealth::new(3, probes(2, 2), outlier(5, 50), t0);
    assert_eq!(eligible(&h, t0), [true; 3]);
    assert!(h.snapshot(t0).iter().all(|s| s.probe_healthy));
}

#[test]
fn probe_thresholds_both_ways() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, probes(2, 3), outlier(0, 0), t0);
    assert_eq!(h.probe(0, false, t0), None);
    assert_eq!(h.probe(0, false, t0), None);
    assert_eq!(h.probe(0, true, t0), None, "a success restarts the count");
    assert_eq!(h.probe(0, false, t0), None);
    assert_eq!(h.probe(0, false, t0), None);
    assert!(h.eligible(0, t0));
    assert_eq!(
        h.probe(0, false, t0),
        Some(Transition::ProbeDown { server: 0 })
    );
    assert!(!h.eligible(0, t0));
    assert_eq!(h.probe(0, false, t0), None, "already down");

    assert_eq!(h.probe(0, true, t0), None);
    assert_eq!(h.probe(0, false, t0), None, "a failure restarts the count");
    assert_eq!(h.probe(0, true, t0), None);
    assert!(!h.eligible(0, t0));
    assert_eq!(
        h.probe(0, true, t0),
        Some(Transition::ProbeUp { server: 0 })
    );
    assert!(h.eligible(0, t0));
    assert_eq!(h.probe(0, true, t0), None, "already up");
}

#[test]
fn zero_thresholds_act_as_one() {
    let t0 = Instant::now();
    let h = PoolHealth::new(1, probes(0, 0), outlier(0, 0), t0);
    assert_eq!(
        h.probe(0, false, t0),
        Some(Transition::ProbeDown { server: 0 })
    );
    assert_eq!(
        h.probe(0, true, t0),
        Some(Transition::ProbeUp { server: 0 })
    );
}

#[test]
fn probes_are_ignored_without_thresholds() {
    let t0 = Instant::now();
    let h = PoolHealth::new(1, None, outlier(0, 0), t0);
    for _ in 0..10 {
        assert_eq!(h.probe(0, false, t0), None);
    }
    assert!(h.eligible(0, t0));
}

#[test]
fn all_probe_down_means_nothing_eligible() {
    let t0 = Instant::now();
    let h = PoolHealth::new(3, probes(1, 1), outlier(1, 100), t0);
    for i in 0..3 {
        assert_eq!(
            h.probe(i, false, t0),
            Some(Transition::ProbeDown { server: i })
        );
    }
    assert_eq!(eligible(&h, t0), [false; 3]);
}

// ---- both together ----

#[test]
fn eligible_combines_probes_and_ejection() {
    let t0 = Instant::now();
    let h = PoolHealth::new(4, probes(1, 1), outlier(1, 100), t0);
    // 0: up, not ejected. 1: down, not ejected. 2: up, ejected. 3: both.
    h.probe(1, false, t0);
    assert_eq!(h.report(2, false, t0), ejected(2, 10));
    assert_eq!(h.report(3, false, t0), ejected(3, 10));
    h.probe(3, false, t0);
    assert_eq!(eligible(&h, t0), [true, false, false, false]);
    // The ejections end; the probe still keeps 1 and 3 out.
    let later = t0 + 10 * S;
    assert_eq!(eligible(&h, later), [true, false, true, false]);
    h.probe(3, true, later);
    assert_eq!(eligible(&h, later), [true, false, true, true]);
}

#[test]
fn last_eligible_going_down_readmits_an_ejected_server() {
    let t0 = Instant::now();
    let h = PoolHealth::new(3, probes(1, 1), outlier(1, 100), t0);
    assert_eq!(h.report(0, false, t0), ejected(0, 10));
    assert_eq!(h.report(1, false, t0 + S), ejected(1, 10));
    assert_eq!(
        h.probe(2, false, t0 + 2 * S),
        Some(Transition::ProbeDown { server: 2 })
    );
    // Server 0's ejection ends first: it comes back early.
    assert_eq!(eligible(&h, t0 + 2 * S), [true, false, false]);
    assert_eq!(
        h.readmit_expired(t0 + 2 * S),
        [Transition::Readmitted { server: 0 }]
    );
    assert_eq!(h.snapshot(t0 + 2 * S)[0].ejected_for, None);
}

#[test]
fn ejected_server_coming_up_alone_is_readmitted() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, probes(1, 1), outlier(1, 100), t0);
    assert_eq!(h.report(0, false, t0), ejected(0, 10));
    h.probe(0, false, t0); // ejected and down
    h.probe(1, false, t0); // the only eligible one goes down
    assert_eq!(eligible(&h, t0), [false, false]);
    assert_eq!(h.readmit_expired(t0), []);
    assert_eq!(
        h.probe(0, true, t0 + S),
        Some(Transition::ProbeUp { server: 0 })
    );
    assert_eq!(eligible(&h, t0 + S), [true, false]);
    assert_eq!(
        h.readmit_expired(t0 + S),
        [Transition::Readmitted { server: 0 }]
    );
}

#[test]
fn out_of_range_servers_are_ignored() {
    let t0 = Instant::now();
    let h = PoolHealth::new(2, probes(1, 1), outlier(1, 100), t0);
    assert_eq!(h.report(2, false, t0), None);
    assert_eq!(h.probe(2, false, t0), None);
    assert!(!h.eligible(2, t0));
    assert_eq!(h.snapshot(t0).len(), 2);
    let empty = PoolHealth::new(0, None, outlier(1, 100), t0);
    assert_eq!(empty.readmit_expired(t0), []);
    assert_eq!(empty.snapshot(t0), []);
}

#[test]
fn concurrent_reports_eject_once() {
    let t0 = Instant::now();
    let h = Arc::new(PoolHealth::new(4, None, outlier(100, 100), t0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                (0..50)
                    .filter_map(|_| h.report(0, false, t0))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let transitions: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(transitions, [ejected(0, 10).unwrap()]);
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Op {
    Report { server: usize, success: bool },
    Probe { server: usize, ok: bool },
    Advance { secs: u64 },
    Readmit,
}

fn op(servers: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..servers, any::<bool>()).prop_map(|(server, success)| Op::Report { server, success }),
        2 => (0..servers, any::<bool>()).prop_map(|(server, ok)| Op::Probe { server, ok }),
        1 => (0u64..15).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Readmit),
    ]
}

proptest! {
    /// Whatever happens: ejections stay within the configured share, a
    /// probe-healthy server is always eligible somewhere in the pool, every
    /// Ejected is matched by one Readmitted, and the atomic read side
    /// agrees with the snapshot.
    #[test]
    fn prop_invariants(
        servers in 1usize..6,
        percent in 0u8..=100,
        ops in prop::collection::vec(op(6), 1..200),
    ) {
        let t0 = Instant::now();
        let h = PoolHealth::new(servers, probes(2, 2), outlier(2, percent), t0);
        let mut now = t0;
        let mut open = vec![0i32; servers];
        let mut count = |transitions: &[Transition]| {
            for t in transitions {
                match *t {
                    Transition::Ejected { server, .. } => open[server] += 1,
                    Transition::Readmitted { server } => open[server] -= 1,
                    _ => {}
                }
            }
        };
        for op in ops {
            match op {
                Op::Report { server, success } => {
                    count(&h.report(server % servers, success, now).into_iter().collect::<Vec<_>>());
                }
                Op::Probe { server, ok } => {
                    count(&h.probe(server % servers, ok, now).into_iter().collect::<Vec<_>>());
                }
                Op::Advance { secs } => now += Duration::from_secs(secs),
                Op::Readmit => count(&h.readmit_expired(now)),
            }
            let snap = h.snapshot(now);
            let ejected = snap.iter().filter(|s| s.ejected_for.is_some()).count();
            prop_assert!(ejected * 100 <= usize::from(percent) * servers);
            let elig = eligible(&h, now);
            for (s, &e) in snap.iter().zip(&elig) {
                prop_assert_eq!(e, s.probe_healthy && s.ejected_for.is_none());
            }
            if snap.iter().any(|s| s.probe_healthy) {
                prop_assert!(elig.contains(&true), "{:?}", snap);
            }
        }
        count(&h.readmit_expired(now + 1000 * S));
        prop_assert!(open.iter().all(|&n| n == 0), "{:?}", open);
    }
}
