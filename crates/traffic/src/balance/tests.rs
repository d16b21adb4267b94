use std::sync::Arc;

use proptest::prelude::*;

use super::*;
// Ours, not the proptest prelude's trait of the same name.
use super::Strategy;

fn all(_: usize) -> bool {
    true
}

fn idle(_: usize) -> u32 {
    0
}

/// Picks `n` times and counts the picks per server.
fn counts(
    b: &Balancer,
    n: usize,
    hash: impl Fn(usize) -> Option<u64>,
    exclude: &[usize],
    eligible: impl Fn(usize) -> bool,
    outstanding: impl Fn(usize) -> u32,
) -> Vec<usize> {
    let mut counts = vec![0; b.len()];
    for k in 0..n {
        let i = b
            .pick(hash(k), exclude, &eligible, &outstanding)
            .expect("a server");
        counts[i] += 1;
    }
    counts
}

fn key_hash(k: usize) -> u64 {
    hash_key(format!("key-{k}").as_bytes())
}

// ---- round robin ----

#[test]
fn round_robin_is_exact_over_full_cycles() {
    let b = Balancer::new(Strategy::RoundRobin, &[3, 1, 2]);
    assert_eq!(b.schedule.len(), 6);
    assert_eq!(
        counts(&b, 6000, |_| None, &[], all, idle),
        [3000, 1000, 2000]
    );
}

#[test]
fn round_robin_interleaves() {
    let b = Balancer::new(Strategy::RoundRobin, &[5, 1, 1]);
    let order: Vec<usize> = (0..7)
        .map(|_| b.pick(None, &[], all, idle).unwrap())
        .collect();
    assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
    let equal = Balancer::new(Strategy::RoundRobin, &[1, 1, 1]);
    let order: Vec<usize> = (0..6)
        .map(|_| equal.pick(None, &[], all, idle).unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn schedule_is_reduced_by_gcd_and_capped() {
    assert_eq!(
        Balancer::new(Strategy::RoundRobin, &[200, 100]).schedule,
        [0, 1, 0]
    );
    let b = Balancer::new(Strategy::RoundRobin, &[u32::MAX, 1, u32::MAX / 2]);
    assert!(b.schedule.len() as u64 <= MAX_SCHEDULE + 3);
    let ones = b.schedule.iter().filter(|&&i| i == 1).count();
    assert_eq!(ones, 1, "a tiny weight keeps a slot");
    let zeros = b.schedule.iter().filter(|&&i| i == 0).count();
    let twos = b.schedule.iter().filter(|&&i| i == 2).count();
    assert!(zeros.abs_diff(2 * twos) <= 2, "{zeros} vs 2×{twos}");
}

#[test]
fn zero_weight_counts_as_one() {
    let b = Balancer::new(Strategy::RoundRobin, &[0, 1]);
    assert_eq!(counts(&b, 100, |_| None, &[], all, idle), [50, 50]);
}

#[test]
fn round_robin_skips_excluded_and_ineligible_evenly() {
    let b = Balancer::new(Strategy::RoundRobin, &[1, 1, 1]);
    assert_eq!(
        counts(&b, 1000, |_| None, &[], |i| i != 0, idle),
        [0, 500, 500]
    );
    // Retries (a non-empty exclude) do not take turns: the next one is
    // offered without being consumed.
    let b = Balancer::new(Strategy::RoundRobin, &[1, 1, 1]);
    assert_eq!(counts(&b, 10, |_| None, &[1], all, idle), [10, 0, 0]);
    assert_eq!(
        counts(&b, 1000, |_| None, &[2], |i| i != 0, idle),
        [0, 1000, 0]
    );
}

#[test]
fn retries_leave_the_round_robin_order_of_first_attempts_alone() {
    // Server 1 fails every time; each of its requests is retried.
    let b = Balancer::new(Strategy::RoundRobin, &[1, 1]);
    let mut first = [0; 2];
    for _ in 0..100 {
        let i = b.pick(None, &[], all, idle).unwrap();
        first[i] += 1;
        if i == 1 {
            assert_eq!(b.pick(None, &[1], all, idle), Some(0));
        }
    }
    assert_eq!(first, [50, 50]);
}

#[test]
fn round_robin_is_exact_across_threads() {
    let b = Arc::new(Balancer::new(Strategy::RoundRobin, &[3, 1, 2]));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || counts(&b, 1500, |_| None, &[], all, idle))
        })
        .collect();
    let mut total = [0; 3];
    for t in threads {
        for (sum, n) in total.iter_mut().zip(t.join().unwrap()) {
            *sum += n;
        }
    }
    assert_eq!(total, [3000, 1000, 2000]);
}

// ---- none qualifies ----

#[test]
fn nothing_qualifies_gives_none() {
    for strategy in [
        Strategy::RoundRobin,
        Strategy::LeastOutstanding,
        Strategy::ConsistentHash,
    ] {
        let b = Balancer::new(strategy, &[1, 2, 3]);
        for hash in [None, Some(42)] {
            assert_eq!(b.pick(hash, &[], |_| false, idle), None, "{strategy:?}");
            assert_eq!(b.pick(hash, &[0, 1, 2], all, idle), None, "{strategy:?}");
            assert_eq!(b.pick(hash, &[0, 2], |i| i != 1, idle), None);
            assert_eq!(b.pick(hash, &[0, 2], all, idle), Some(1));
        }
        let empty = Balancer::new(strategy, &[]);
        assert!(empty.is_empty());
        assert_eq!(empty.pick(Some(1), &[], all, idle), None);
        assert_eq!(empty.pick(None, &[], all, idle), None);
    }
}

#[test]
fn large_pools_beyond_the_inline_bitset() {
    let weights = vec![1; 200];
    for strategy in [
        Strategy::RoundRobin,
        Strategy::LeastOutstanding,
        Strategy::ConsistentHash,
    ] {
        let b = Balancer::new(strategy, &weights);
        assert_eq!(b.pick(Some(7), &[], |i| i == 150, idle), Some(150));
        assert_eq!(b.pick(None, &[], |i| i == 150, idle), Some(150));
        assert_eq!(b.pick(Some(7), &[150], |i| i == 150, idle), None);
        assert_eq!(b.pick(None, &[], |_| false, idle), None);
    }
}

#[test]
fn eligibility_is_asked_once_per_server_when_scanning() {
    use std::cell::Cell;
    for strategy in [Strategy::RoundRobin, Strategy::ConsistentHash] {
        let b = Balancer::new(strategy, &[7, 5, 3]);
        let asked = Cell::new(0);
        let none = |_| {
            asked.set(asked.get() + 1);
            false
        };
        assert_eq!(b.pick(Some(9), &[], none, idle), None);
        assert_eq!(asked.get(), 3, "{strategy:?}");
    }
}

// ---- least outstanding (power of two choices) ----

#[test]
fn two_choices_follow_weights_when_idle() {
    fastrand::seed(7);
    let b = Balancer::new(Strategy::LeastOutstanding, &[1, 3]);
    let c = counts(&b, 20_000, |_| None, &[], all, idle);
    let share = c[1] as f64 / 20_000.0;
    assert!((share - 0.75).abs() < 0.02, "share {share}");
}

#[test]
fn two_choices_never_pick_the_loaded_server() {
    fastrand::seed(11);
    let b = Balancer::new(Strategy::LeastOutstanding, &[1, 1]);
    let load = |i| if i == 0 { 100 } else { 0 };
    assert_eq!(counts(&b, 1000, |_| None, &[], all, load), [0, 1000]);

    // With more servers the loaded one can still never win: it is always
    // compared with an idle one.
    let b = Balancer::new(Strategy::LeastOutstanding, &[1, 1, 1, 1, 1]);
    let load = |i| if i == 3 { 100 } else { 0 };
    let c = counts(&b, 5000, |_| None, &[], all, load);
    assert_eq!(c[3], 0);
    assert!(
        c.iter().enumerate().all(|(i, &n)| i == 3 || n > 1000),
        "{c:?}"
    );
}

#[test]
fn two_choices_compare_load_per_weight() {
    fastrand::seed(3);
    // 3 in flight on weight 4 (0.75 each) beats 1 on weight 1.
    let b = Balancer::new(Strategy::LeastOutstanding, &[1, 4]);
    let load = |i| if i == 0 { 1 } else { 3 };
    assert_eq!(counts(&b, 500, |_| None, &[], all, load), [0, 500]);
    // 5 on weight 4 (1.25 each) loses to 1 on weight 1.
    let load = |i| if i == 0 { 1 } else { 5 };
    assert_eq!(counts(&b, 500, |_| None, &[], all, load), [500, 0]);
}

#[test]
fn two_choices_with_one_candidate_and_exclusions() {
    fastrand::seed(5);
    let b = Balancer::new(Strategy::LeastOutstanding, &[1, 1, 1]);
    let load = |i| if i == 2 { 100 } else { 0 };
    // Only the loaded server qualifies: it is picked anyway.
    assert_eq!(
        counts(&b, 100, |_| None, &[0], |i| i != 1, load),
        [0, 0, 100]
    );
    // Excluded and ineligible servers are never drawn.
    let c = counts(&b, 1000, |_| None, &[0], all, idle);
    assert_eq!(c[0], 0);
    assert!(c[1] > 350 && c[2] > 350, "{c:?}");
}

#[test]
fn two_choices_ignore_the_hash() {
    fastrand::seed(1);
    let b = Balancer::new(Strategy::LeastOutstanding, &[1, 1]);
    let load = |i| if i == 0 { 100 } else { 0 };
    assert_eq!(
        counts(&b, 100, |k| Some(k as u64), &[], all, load),
        [0, 100]
    );
}

// ---- consistent hashing ----

#[test]
fn hash_key_is_xxh3() {
    assert_eq!(hash_key(b"user-42"), xxh3_64(b"user-42"));
    assert_ne!(hash_key(b"user-42"), hash_key(b"user-43"));
}

#[test]
fn same_key_same_server() {
    let b = Balancer::new(Strategy::ConsistentHash, &[1, 1, 1, 1]);
    let other = Balancer::new(Strategy::ConsistentHash, &[1, 1, 1, 1]);
    for k in 0..1000 {
        let h = Some(key_hash(k));
        let first = b.pick(h, &[], all, idle);
        assert_eq!(b.pick(h, &[], all, idle), first);
        // Independent of the instance (e.g. another gateway process).
        assert_eq!(other.pick(h, &[], all, idle), first);
    }
}

#[test]
fn ring_spreads_keys_by_weight() {
    let b = Balancer::new(Strategy::ConsistentHash, &[1, 1, 1, 1]);
    let c = counts(&b, 10_000, |k| Some(key_hash(k)), &[], all, idle);
    assert!(c.iter().all(|&n| (1800..=3200).contains(&n)), "{c:?}");

    let b = Balancer::new(Strategy::ConsistentHash, &[1, 2]);
    let c = counts(&b, 10_000, |k| Some(key_hash(k)), &[], all, idle);
    let share = c[1] as f64 / 10_000.0;
    assert!((0.58..0.75).contains(&share), "{c:?}");
}

#[test]
fn removing_a_server_moves_only_its_keys() {
    let b = Balancer::new(Strategy::ConsistentHash, &[1, 1, 1, 1]);
    let mut moved = 0;
    for k in 0..10_000 {
        let h = Some(key_hash(k));
        let before = b.pick(h, &[], all, idle).unwrap();
        let ineligible = b.pick(h, &[], |i| i != 2, idle).unwrap();
        let excluded = b.pick(h, &[2], all, idle).unwrap();
        assert_eq!(ineligible, excluded);
        assert_ne!(ineligible, 2);
        if before == 2 {
            moved += 1;
        } else {
            assert_eq!(ineligible, before, "key {k} moved off server {before}");
        }
    }
    assert!(moved > 1500, "server 2 held {moved} keys");
}

#[test]
fn keys_of_a_removed_server_spread_over_the_rest() {
    let b = Balancer::new(Strategy::ConsistentHash, &[1, 1, 1, 1]);
    let mut landed = [0; 4];
    for k in 0..10_000 {
        let h = Some(key_hash(k));
        if b.pick(h, &[], all, idle) == Some(2) {
            landed[b.pick(h, &[2], all, idle).unwrap()] += 1;
        }
    }
    assert_eq!(landed[2], 0);
    assert!(
        landed.iter().enumerate().all(|(i, &n)| i == 2 || n > 300),
        "{landed:?}"
    );
}

#[test]
fn consistent_hash_without_key_is_round_robin() {
    let b = Balancer::new(Strategy::ConsistentHash, &[2, 1]);
    assert_eq!(counts(&b, 300, |_| None, &[], all, idle), [200, 100]);
}

#[test]
fn ring_size_follows_normalized_weights() {
    let b = Balancer::new(Strategy::ConsistentHash, &[2, 4]);
    assert_eq!(b.ring_points.len() as u64, 3 * POINTS_PER_WEIGHT);
    assert!(b.ring_points.is_sorted());
    let huge = Balancer::new(Strategy::ConsistentHash, &[u32::MAX, 1]);
    assert!(huge.ring_points.len() as u64 <= (MAX_RING_WEIGHT + 2) * POINTS_PER_WEIGHT);
    assert!(huge.ring_owners.contains(&1));
    // Only consistent hashing builds a ring.
    assert!(
        Balancer::new(Strategy::RoundRobin, &[1, 1])
            .ring_points
            .is_empty()
    );
}

// ---- properties ----

proptest! {
    #[test]
    fn prop_round_robin_cycle_is_exact(weights in prop::collection::vec(1u32..20, 1..8)) {
        let b = Balancer::new(Strategy::RoundRobin, &weights);
        let g = weights.iter().fold(0, |g, &w| gcd(g, w));
        let cycle: u32 = weights.iter().map(|w| w / g).sum();
        let c = counts(&b, cycle as usize * 3, |_| None, &[], all, idle);
        let expected: Vec<usize> = weights.iter().map(|w| (w / g * 3) as usize).collect();
        prop_assert_eq!(c, expected);
    }

    #[test]
    fn prop_pick_respects_eligibility_and_exclusion(
        weights in prop::collection::vec(1u32..5, 1..10),
        eligible_mask in any::<u16>(),
        exclude in prop::collection::vec(0usize..10, 0..4),
        hash in any::<u64>(),
        strategy in prop_oneof![
            Just(Strategy::RoundRobin),
            Just(Strategy::LeastOutstanding),
            Just(Strategy::ConsistentHash),
        ],
    ) {
        let b = Balancer::new(strategy, &weights);
        let eligible = |i: usize| eligible_mask & (1 << i) != 0;
        let any = (0..weights.len()).any(|i| eligible(i) && !exclude.contains(&i));
        for h in [None, Some(hash)] {
            let pick = b.pick(h, &exclude, eligible, |i| i as u32);
            prop_assert_eq!(pick.is_some(), any);
            if let Some(i) = pick {
                prop_assert!(i < weights.len() && eligible(i) && !exclude.contains(&i));
            }
        }
    }

    #[test]
    fn prop_ring_removal_moves_only_the_removed_servers_keys(
        weights in prop::collection::vec(1u32..4, 2..6),
        removed in 0usize..6,
        keys in prop::collection::vec(any::<u64>(), 1..200),
    ) {
        let removed = removed % weights.len();
        let b = Balancer::new(Strategy::ConsistentHash, &weights);
        for h in keys {
            let before = b.pick(Some(h), &[], all, idle).unwrap();
            let after = b.pick(Some(h), &[], |i| i != removed, idle).unwrap();
            prop_assert!(before == removed || after == before);
            prop_assert_ne!(after, removed);
        }
    }
}
