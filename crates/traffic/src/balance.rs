//! Choosing a server in a pool.
//!
//! A [`Balancer`] knows only the pool's size and weights; which servers may
//! take traffic (health, outlier ejection, open breakers) and how busy they
//! are is asked of the caller at pick time through closures, so the
//! balancer itself holds no per-server state and never locks:
//!
//! - [`Strategy::RoundRobin`] walks a smooth weighted round-robin schedule
//!   computed once at construction (a server of weight 3 gets three picks
//!   per cycle for every pick of a weight-1 server, interleaved rather than
//!   in runs) with one shared atomic cursor.
//! - [`Strategy::LeastOutstanding`] uses the power of two choices: two
//!   distinct servers drawn at random in proportion to their weights, the one
//!   with fewer in-flight requests per unit of weight wins.
//! - [`Strategy::ConsistentHash`] places `160 × weight` points per server on
//!   a hash ring and walks clockwise from the request's hash, so a server
//!   leaving the pool only moves the keys it held.
//!
//! Servers that are ineligible or already tried by the request are skipped
//! by every strategy; `None` means no server qualifies.

use std::sync::atomic::{AtomicUsize, Ordering};

use xxhash_rust::xxh3::xxh3_64;

/// How a [`Balancer`] chooses among the servers of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Weighted round robin in a smooth (interleaved) order.
    RoundRobin,
    /// Power of two choices on in-flight requests divided by weight.
    LeastOutstanding,
    /// Hash ring on the request's hash key; round robin for requests
    /// without a key.
    ConsistentHash,
}

/// Longest round-robin schedule. Weights whose sum (after dividing by their
/// greatest common divisor) exceeds it are scaled down proportionally, so
/// very uneven weights are approximated rather than followed exactly.
const MAX_SCHEDULE: u64 = 8192;

/// Ring points per unit of weight in consistent hashing.
const POINTS_PER_WEIGHT: u64 = 160;

/// Largest total weight placed on the hash ring (bounds the ring to about
/// `512 × 160` points, plus rounding); larger sums are scaled down.
const MAX_RING_WEIGHT: u64 = 512;

/// Draws tried at random before least-outstanding falls back to an
/// exhaustive weighted draw among the qualifying servers.
const SAMPLE_ATTEMPTS: usize = 4;

/// Picks among the servers `0..weights.len()` of a pool.
///
/// Thread-safe and lock-free: the only mutable state is the round-robin
/// cursor, an atomic counter. Picking never allocates for pools of up to
/// 64 servers.
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    /// Weights as given (zero raised to one), for least-outstanding.
    weights: Vec<u32>,
    /// Running sums of `weights`, for weighted random draws.
    cumulative: Vec<u64>,
    /// One cycle of smooth weighted round robin (server indices); empty for
    /// least-outstanding.
    schedule: Vec<u32>,
    cursor: AtomicUsize,
    /// Ring point hashes, sorted ascending (consistent hashing only).
    ring_points: Vec<u64>,
    /// Owner of each ring point, parallel to `ring_points`.
    ring_owners: Vec<u32>,
}

impl Balancer {
    /// Builds a balancer for a pool whose server `i` has weight
    /// `weights[i]`. Weights are meant to be at least 1; a zero weight is
    /// treated as 1. An empty pool is allowed: every pick returns `None`.
    ///
    /// Construction does the expensive work once: the round-robin schedule
    /// (also for consistent hashing, which falls back to it for requests
    /// without a key) and, for [`Strategy::ConsistentHash`], the ring.
    pub fn new(strategy: Strategy, weights: &[u32]) -> Self {
        let weights: Vec<u32> = weights.iter().map(|&w| w.max(1)).collect();
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        let schedule = if strategy == Strategy::LeastOutstanding {
            Vec::new()
        } else {
            smooth_schedule(&normalize(&weights, MAX_SCHEDULE))
        };
        let (ring_points, ring_owners) = if strategy == Strategy::ConsistentHash {
            build_ring(&normalize(&weights, MAX_RING_WEIGHT))
        } else {
            (Vec::new(), Vec::new())
        };
        Self {
            strategy,
            weights,
            cumulative,
            schedule,
            cursor: AtomicUsize::new(0),
            ring_points,
            ring_owners,
        }
    }

    /// The strategy this balancer was built with.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Number of servers in the pool.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether the pool has no servers.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Picks a server that is `eligible` and not in `exclude`.
    ///
    /// - `hash`: the request's key hash (see [`hash_key`]) for
    ///   [`Strategy::ConsistentHash`]; `None` falls back to round robin.
    ///   Ignored by the other strategies.
    /// - `exclude`: servers this request already tried (retries).
    /// - `eligible(i)`: whether server `i` may take traffic now (healthy,
    ///   not ejected, breaker not open), decided by the caller. It may be
    ///   called several times per pick and for any server.
    /// - `outstanding(i)`: in-flight requests on server `i`, used by
    ///   [`Strategy::LeastOutstanding`] only.
    ///
    /// Returns `None` when no server qualifies.
    ///
    /// A pick with a non-empty `exclude` is a retry: round robin gives it
    /// the server whose turn is next without taking that turn, so retries
    /// do not shift the order first attempts follow (with one failing
    /// server, the other would otherwise get every first attempt after a
    /// retry, and the failing one every other).
    pub fn pick(
        &self,
        hash: Option<u64>,
        exclude: &[usize],
        eligible: impl Fn(usize) -> bool,
        outstanding: impl Fn(usize) -> u32,
    ) -> Option<usize> {
        let ok = |i: usize| !exclude.contains(&i) && eligible(i);
        match (self.strategy, hash) {
            (Strategy::RoundRobin, _) | (Strategy::ConsistentHash, None) => {
                self.round_robin(ok, exclude.is_empty())
            }
            (Strategy::LeastOutstanding, _) => self.two_choices(ok, outstanding),
            (Strategy::ConsistentHash, Some(hash)) => self.ring_walk(hash, ok),
        }
    }

    /// Next schedule entry that qualifies. With `advance`, the turn is
    /// taken and the cursor moved past the entries skipped, so the server
    /// after a skipped one does not also take the skipped one's turn on the
    /// next pick; without it (retries), the cursor is left alone.
    fn round_robin(&self, ok: impl Fn(usize) -> bool, advance: bool) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let start = if advance {
            self.cursor.fetch_add(1, Ordering::Relaxed)
        } else {
            self.cursor.load(Ordering::Relaxed)
        } % len;
        let mut rejected = Rejected::default();
        for k in 0..len {
            let i = self.schedule[(start + k) % len] as usize;
            if rejected.contains(i) {
                continue;
            }
            if ok(i) {
                if advance && k > 0 {
                    self.cursor.fetch_add(k, Ordering::Relaxed);
                }
                return Some(i);
            }
            if rejected.insert(i) == self.len() {
                break;
            }
        }
        None
    }

    /// Power of two choices: two distinct qualifying servers drawn in
    /// proportion to weight; fewer outstanding per unit of weight wins, the
    /// first draw on a tie.
    fn two_choices(
        &self,
        ok: impl Fn(usize) -> bool,
        outstanding: impl Fn(usize) -> u32,
    ) -> Option<usize> {
        let a = self.weighted_draw(&ok)?;
        let Some(b) = self.weighted_draw(|i| i != a && ok(i)) else {
            return Some(a);
        };
        // a/wa <= b/wb  ⇔  a·wb <= b·wa (no division, no overflow in u64).
        let load =
            |i: usize, other: usize| u64::from(outstanding(i)) * u64::from(self.weights[other]);
        if load(a, b) <= load(b, a) {
            Some(a)
        } else {
            Some(b)
        }
    }

    /// A server satisfying `ok`, drawn with probability proportional to its
    /// weight among those that do. A few unconditional draws are tried
    /// first (the common case: most servers qualify); then the qualifying
    /// weight is summed and drawn from exactly.
    fn weighted_draw(&self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let server_at = |r: u64| self.cumulative.partition_point(|&c| c <= r);
        for _ in 0..SAMPLE_ATTEMPTS {
            let i = server_at(fastrand::u64(0..total));
            if ok(i) {
                return Some(i);
            }
        }
        let qualifying: u64 = (0..self.len())
            .filter(|&i| ok(i))
            .map(|i| u64::from(self.weights[i]))
            .sum();
        if qualifying == 0 {
            return None;
        }
        let mut r = fastrand::u64(0..qualifying);
        let mut last = None;
        for i in (0..self.len()).filter(|&i| ok(i)) {
            let w = u64::from(self.weights[i]);
            if r < w {
                return Some(i);
            }
            r -= w;
            last = Some(i);
        }
        // Eligibility changed between the two passes: take what is left.
        last
    }

    /// First qualifying owner clockwise from `hash` on the ring.
    fn ring_walk(&self, hash: u64, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.ring_points.len();
        if len == 0 {
            return None;
        }
        let start = self.ring_points.partition_point(|&p| p < hash);
        let mut rejected = Rejected::default();
        for k in 0..len {
            let i = self.ring_owners[(start + k) % len] as usize;
            if rejected.contains(i) {
                continue;
            }
            if ok(i) {
                return Some(i);
            }
            if rejected.insert(i) == self.len() {
                break;
            }
        }
        None
    }
}

/// Hash of a consistent-hashing key (xxh3, 64 bits). The proxy hashes its
/// request keys with this so they land on the ring the same way in every
/// process.
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Weights divided by their greatest common divisor, then scaled down
/// proportionally (each kept at least 1) if their sum still exceeds `cap`.
fn normalize(weights: &[u32], cap: u64) -> Vec<u64> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w)).max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w / g)).collect();
    let sum: u64 = reduced.iter().sum();
    if sum <= cap {
        return reduced;
    }
    reduced
        .iter()
        .map(|&w| (u128::from(w) * u128::from(cap) / u128::from(sum)).max(1) as u64)
        .collect()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One cycle of smooth weighted round robin (the nginx algorithm): every
/// step each server's credit grows by its weight, the server with the most
/// credit is picked and pays the total weight. Each server appears exactly
/// `weight` times, spread out rather than in runs.
fn smooth_schedule(weights: &[u64]) -> Vec<u32> {
    if weights.iter().all(|&w| w == 1) {
        return (0..weights.len() as u32).collect();
    }
    let total: u64 = weights.iter().sum();
    let weights: Vec<i64> = weights.iter().map(|&w| w as i64).collect();
    let mut credit = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in credit.iter_mut().zip(&weights) {
            *c += w;
        }
        // Strictly greater: ties go to the lowest index.
        let best =
            (1..credit.len()).fold(0, |best, i| if credit[i] > credit[best] { i } else { best });
        credit[best] -= total as i64;
        schedule.push(best as u32);
    }
    schedule
}

/// The hash ring: `POINTS_PER_WEIGHT × weight` points per server, each the
/// xxh3 hash of `"{server}-{replica}"`, sorted by hash (then owner, so
/// colliding points order deterministically).
fn build_ring(weights: &[u64]) -> (Vec<u64>, Vec<u32>) {
    let mut ring: Vec<(u64, u32)> = Vec::new();
    for (server, &w) in weights.iter().enumerate() {
        for replica in 0..w * POINTS_PER_WEIGHT {
            let point = xxh3_64(format!("{server}-{replica}").as_bytes());
            ring.push((point, server as u32));
        }
    }
    ring.sort_unstable();
    ring.into_iter().unzip()
}

/// Servers a scan found unusable, so each is asked about once and the scan
/// stops once every server has been. Allocation-free up to 64 servers.
#[derive(Default)]
struct Rejected {
    low: u64,
    high: Vec<u64>,
    count: usize,
}

impl Rejected {
    fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.low & (1 << i) != 0
        } else {
            let (word, bit) = ((i - 64) / 64, (i - 64) % 64);
            self.high.get(word).is_some_and(|w| w & (1 << bit) != 0)
        }
    }

    /// Records `i` (not already recorded) and returns how many are.
    fn insert(&mut self, i: usize) -> usize {
        if i < 64 {
            self.low |= 1 << i;
        } else {
            let (word, bit) = ((i - 64) / 64, (i - 64) % 64);
            if self.high.len() <= word {
                self.high.resize(word + 1, 0);
            }
            self.high[word] |= 1 << bit;
        }
        self.count += 1;
        self.count
    }
}

#[cfg(test)]
mod tests;
