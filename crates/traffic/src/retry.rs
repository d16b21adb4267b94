//! Retry budget and backoff.
//!
//! [`RetryBudget`] limits retries to a share of the requests, like Envoy's
//! retry budget and Finagle's `RetryBudget`, so that retries cannot multiply
//! the load on an upstream that is already failing: every original request
//! deposits `ratio` tokens, every retry withdraws one, and tokens (and
//! withdrawals) count for `ttl`. A floor of `min_per_sec` retries per second
//! lets low-traffic routes retry at all.
//!
//! [`backoff`] spaces retries out with "full jitter" exponential backoff.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Slots in the sliding window of tokens.
const SLOTS: u32 = 10;
/// Fixed-point unit: one retry costs `SCALE` milli-tokens.
const SCALE: i32 = 1000;
/// Largest ratio accepted (beyond it, the deposit would not fit the slots).
const MAX_RATIO: f64 = 1000.0;
/// Shortest slot, so that the 32-bit slot tags wrap after 49 days at least.
const MIN_SLOT: Duration = Duration::from_millis(1);

/// A retry budget shared by the requests to one upstream (or route); lock-free,
/// `Send + Sync`.
///
/// # Accounting
///
/// Tokens are kept in fixed point, in milli-tokens: a deposit adds
/// `round(ratio × 1000)`, a retry costs 1000, so the ratio is exact to 1/1000
/// (0.2 is exactly one retry per 5 requests) and sums never drift. Deposits
/// and withdrawals land in a ring of 10 slots of `ttl / 10` (at least 1 ms),
/// tagged with their tick number and rotated lazily by the `now` of each
/// call; a slot counts while the current tick is less than 10 ticks past it,
/// so an amount counts for between 0.9 × `ttl` and `ttl` (exactly: it
/// expires at the first tick boundary at least `ttl` after the slot began;
/// ticks start at the first call's `now`).
///
/// [`try_withdraw`](Self::try_withdraw) succeeds from the ratio tokens when
/// the balance over the window — deposits minus withdrawals, both of the
/// last `ttl` — is at least one token. Concretely: with `ratio = 0.2`,
/// `min_per_sec = 0` and 100 deposits within one `ttl`, exactly 20 retries
/// succeed and the 21st fails; a retry keeps counting against the budget for
/// `ttl` even when the deposits that paid for it expire earlier. Concurrent
/// withdrawals never overdraw: each adds its withdrawal first, checks the
/// balance, and takes it back on failure — so two calls racing for the last
/// token may both fail, but the budget is never exceeded.
///
/// Otherwise the retry is charged to the floor: at most `min_per_sec`
/// retries per whole second (seconds counted from the first call's `now`;
/// the count resets at each second boundary, so a burst straddling a
/// boundary may see up to twice that within one second). The floor is used
/// only when the ratio tokens are spent.
///
/// Each call is one compare-and-swap on the current slot (plus a read of the
/// ring, and at most one more CAS on the way back or for the floor in
/// `try_withdraw`); a `now` older than a slot's tick, from a caller on
/// another thread, is added to that newer slot rather than lost.
#[derive(Debug)]
pub struct RetryBudget {
    /// Milli-tokens per deposit.
    deposit: i32,
    min_per_sec: u32,
    slot_nanos: u128,
    /// `now` of the first call; ticks and floor seconds count from it.
    origin: OnceLock<Instant>,
    /// `tick << 32 | amount as u32` (amount: signed milli-tokens).
    slots: [AtomicU64; SLOTS as usize],
    /// `second << 32 | floor retries in that second`.
    floor: AtomicU64,
}

fn pack(tag: u32, value: u32) -> u64 {
    u64::from(tag) << 32 | u64::from(value)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Whether wrapping tick `a` is after `b`.
fn is_after(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 31
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per request (clamped to
    /// 0.0–1000.0, NaN counts as 0, rounded to 1/1000) over the last `ttl`
    /// (at least 10 ms), plus `min_per_sec` retries per second regardless of
    /// traffic.
    pub fn new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, MAX_RATIO)
        };
        let slot = (ttl / SLOTS).max(MIN_SLOT);
        Self {
            deposit: (ratio * f64::from(SCALE)).round() as i32,
            min_per_sec,
            slot_nanos: slot.as_nanos(),
            origin: OnceLock::new(),
            slots: Default::default(),
            floor: AtomicU64::new(0),
        }
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(*self.origin.get_or_init(|| now))
    }

    /// Current tick; wraps around (tags are compared with wrapping
    /// arithmetic).
    fn tick(&self, now: Instant) -> u32 {
        (self.elapsed(now).as_nanos() / self.slot_nanos) as u32
    }

    /// Adds `delta` milli-tokens to the slot of `tick`; returns the tag of
    /// the slot it went into.
    fn add(&self, tick: u32, delta: i32) -> u32 {
        let slot = &self.slots[(tick % SLOTS) as usize];
        let mut word = slot.load(Ordering::SeqCst);
        loop {
            let (tag, amount) = unpack(word);
            let (tag, amount) = if is_after(tick, tag) {
                // The slot's previous content has expired.
                (tick, delta)
            } else {
                (tag, (amount as i32).saturating_add(delta))
            };
            match slot.compare_exchange_weak(
                word,
                pack(tag, amount as u32),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return tag,
                Err(current) => word = current,
            }
        }
    }

    /// Takes back `delta` from the slot tagged `tag`, unless it has expired
    /// meanwhile.
    fn undo(&self, tag: u32, delta: i32) {
        let slot = &self.slots[(tag % SLOTS) as usize];
        let _ = slot.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
            let (t, amount) = unpack(word);
            (t == tag).then(|| pack(t, (amount as i32).saturating_sub(delta) as u32))
        });
    }

    /// Deposits minus withdrawals, in milli-tokens, over the window ending
    /// at `tick` (slots a little ahead, from callers with a later `now`,
    /// count too).
    fn balance(&self, tick: u32) -> i64 {
        self.slots
            .iter()
            .map(|slot| unpack(slot.load(Ordering::SeqCst)))
            .filter(|&(tag, _)| tick.wrapping_sub(tag) < SLOTS || tag.wrapping_sub(tick) < SLOTS)
            .map(|(_, amount)| i64::from(amount as i32))
            .sum()
    }

    /// Records an original request at `now`: deposits `ratio` tokens. Call
    /// once per request, not per attempt.
    pub fn deposit(&self, now: Instant) {
        if self.deposit > 0 {
            self.add(self.tick(now), self.deposit);
        }
    }

    /// Asks for one retry at `now`: `true` withdraws a token (or uses the
    /// per-second floor) and the retry may go ahead; `false` means the budget
    /// is spent and the request must not be retried.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        if self.deposit > 0 {
            let tick = self.tick(now);
            let tag = self.add(tick, -SCALE);
            if self.balance(tick) >= 0 {
                return true;
            }
            self.undo(tag, -SCALE);
        }
        self.try_floor(now)
    }

    fn try_floor(&self, now: Instant) -> bool {
        if self.min_per_sec == 0 {
            return false;
        }
        let second = self.elapsed(now).as_secs() as u32;
        self.floor
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                let (tag, used) = unpack(word);
                let (tag, used) = if is_after(second, tag) {
                    (second, 0)
                } else {
                    (tag, used)
                };
                (used < self.min_per_sec).then(|| pack(tag, used + 1))
            })
            .is_ok()
    }
}

/// Delay before retry number `attempt` (1 = first retry; 0 is treated as 1)
/// with "full jitter": uniform in `[0, min(max, base × 2^(attempt-1))]`,
/// drawn with `fastrand`. Computed in 128-bit nanoseconds, so it never
/// overflows: any `attempt` for which `base × 2^(attempt-1)` exceeds `max`
/// (up to `u32::MAX`) is capped at `max`; a zero `base` always gives zero.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let cap = backoff_cap(attempt, base, max).as_nanos();
    from_nanos(fastrand::u128(0..=cap))
}

/// `min(max, base × 2^(attempt-1))`, the upper bound of [`backoff`].
fn backoff_cap(attempt: u32, base: Duration, max: Duration) -> Duration {
    let base = base.as_nanos();
    if base == 0 {
        return Duration::ZERO;
    }
    let exp = attempt.saturating_sub(1);
    // `base << exp` loses no bits exactly when exp < leading zeros.
    if exp < base.leading_zeros() {
        let grown = base << exp;
        if grown < max.as_nanos() {
            return from_nanos(grown);
        }
    }
    max
}

/// Nanoseconds to a `Duration`; `nanos` must come from a `Duration`'s range
/// (at most `u64::MAX` seconds).
fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    Duration::new(
        (nanos / NANOS_PER_SEC) as u64,
        (nanos % NANOS_PER_SEC) as u32,
    )
}

#[cfg(test)]
mod tests;
