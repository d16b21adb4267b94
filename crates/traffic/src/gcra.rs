//! Rate limiting with GCRA, the generic cell rate algorithm: a token bucket
//! stored as one number per key, the *theoretical arrival time* (TAT).
//!
//! A [`Quota`] of `rate` requests per `period` with bursts of `burst` has an
//! emission interval `T = period / rate` (the sustained spacing between
//! requests) and a tolerance `τ = T × burst` (how far ahead of schedule a
//! client may run). Times are integers on a monotonic clock; one step
//! ([`step`]) for a request arriving at `now` is:
//!
//! ```text
//! tat      = max(stored TAT, now)        // a key never seen has TAT ≤ now
//! new_tat  = tat + T
//! allow_at = new_tat - τ
//! if now < allow_at:                     // refused, TAT unchanged
//!     retry_after = allow_at - now
//!     reset       = tat - now
//!     remaining   = 0
//! else:                                  // allowed, store new_tat
//!     retry_after = 0
//!     reset       = new_tat - now        // until a full burst is back
//!     remaining   = (τ - reset) / T      // integer division
//! ```
//!
//! `remaining` follows from the allow condition: `k` more requests at the
//! same instant are allowed exactly when `new_tat + k·T - τ ≤ now`. A TAT at
//! or before `now` means "full burst available", which is also what a key
//! that was never seen means, so a stored `0` and `None` are equivalent and a
//! key may be forgotten once its TAT has passed (after at most `τ` idle).
//!
//! The shared limit on Redis (`perfgate_redis::Redis::gcra`) runs the
//! same arithmetic in a Lua script, in integer microseconds on the Redis
//! server's clock, with `T` and `τ` computed and clamped the same way (see
//! [`MAX_EMISSION_INTERVAL`], [`MAX_TOLERANCE`]); this module works in
//! nanoseconds.
//!
//! Degenerate quotas never panic (validation happens in the configuration):
//! `rate = 0` behaves as the largest emission interval, `period = 0` allows
//! everything (`T = 0`), `burst = 0` refuses everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::policy::EvictionPolicy;

#[cfg(test)]
mod tests;

/// The largest emission interval (2^50 µs, about 35.7 years); longer ones
/// (and `rate = 0`) are clamped to it. Together with [`MAX_TOLERANCE`] it
/// keeps every TAT of a realistic clock below 2^53 µs, so the Redis script,
/// whose Lua numbers are doubles, computes exactly what [`step`] computes.
pub const MAX_EMISSION_INTERVAL: Duration = Duration::from_micros(1 << 50);

/// The largest tolerance (2^51 µs, about 71 years); see
/// [`MAX_EMISSION_INTERVAL`].
pub const MAX_TOLERANCE: Duration = Duration::from_micros(1 << 51);

/// `rate` requests per `period`, with bursts of up to `burst` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Sustained number of requests per `period`.
    pub rate: u32,
    /// The period over which `rate` requests are allowed.
    pub period: Duration,
    /// How many requests may arrive at once (after being idle long enough).
    pub burst: u32,
}

impl Quota {
    /// `T = period / rate`: the sustained spacing between requests, clamped
    /// to [`MAX_EMISSION_INTERVAL`] (also for `rate = 0`).
    pub fn emission_interval(&self) -> Duration {
        match self.rate {
            0 => MAX_EMISSION_INTERVAL,
            rate => (self.period / rate).min(MAX_EMISSION_INTERVAL),
        }
    }

    /// `τ = T × burst`: how far ahead of schedule a client may run, clamped
    /// to [`MAX_TOLERANCE`]. Also the time a full burst takes to refill.
    pub fn tolerance(&self) -> Duration {
        self.emission_interval()
            .checked_mul(self.burst)
            .map_or(MAX_TOLERANCE, |t| t.min(MAX_TOLERANCE))
    }
}

/// The outcome of one request against a quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Requests that would still be allowed right now after this one.
    pub remaining: u32,
    /// Time until the limiter is back to a full burst (for the `RateLimit`
    /// header `t`).
    pub reset: Duration,
    /// When refused: how long until one request is allowed (`Retry-After`);
    /// zero when allowed.
    pub retry_after: Duration,
}

/// Nanoseconds of `d`, saturating at `u64::MAX` (about 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One GCRA step (see the module docs for the arithmetic, which the Redis
/// script mirrors) on a theoretical arrival time in nanoseconds on any
/// monotonic clock; `tat` None = never seen (equivalent to any TAT ≤ `now`,
/// such as `Some(0)`). Returns the decision and the new TAT to store:
/// unchanged when refused (`tat`, or 0 for None).
///
/// Saturating throughout: never panics, whatever the quota or clock.
pub fn step(quota: &Quota, tat: Option<u64>, now: u64) -> (Decision, u64) {
    let stored = tat.unwrap_or(0);
    let t = nanos(quota.emission_interval());
    let tau = nanos(quota.tolerance());
    let tat = stored.max(now);
    let new_tat = tat.saturating_add(t);
    let allow_at = new_tat.saturating_sub(tau);
    if now < allow_at {
        let decision = Decision {
            allowed: false,
            remaining: 0,
            reset: Duration::from_nanos(tat - now),
            retry_after: Duration::from_nanos(allow_at - now),
        };
        return (decision, stored);
    }
    let reset = new_tat - now;
    // With T = 0 (period 0) nothing is ever used up.
    let remaining = tau
        .saturating_sub(reset)
        .checked_div(t)
        .unwrap_or(u64::MAX)
        .min(u64::from(quota.burst));
    let decision = Decision {
        allowed: true,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset: Duration::from_nanos(reset),
        retry_after: Duration::ZERO,
    };
    (decision, new_tat)
}

/// A keyed in-process limiter: one TAT per key, updated atomically (a
/// compare-exchange loop), in a bounded map.
///
/// Keys idle for `τ + T` expire (their TAT has passed by then, so
/// forgetting them changes nothing), and at most about `max_keys` are kept:
/// beyond that the least recently used key is evicted, which resets its
/// budget to a full burst. Looking up an existing key takes one map lookup
/// and allocates nothing.
pub struct LocalLimiter {
    quota: Quota,
    /// `check`'s instants are converted to nanoseconds since this.
    base: Instant,
    tats: moka::sync::Cache<String, Arc<AtomicU64>>,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("quota", &self.quota)
            .field("keys", &self.tats.entry_count())
            .finish()
    }
}

/// Moka refuses idle times over 1000 years; clamped TATs stay far below.
const MAX_IDLE: Duration = Duration::from_secs(500 * 365 * 24 * 3600);

impl LocalLimiter {
    /// A limiter for `quota` keeping at most about `max_keys` keys (at least
    /// one).
    pub fn new(quota: Quota, max_keys: u64) -> Self {
        let idle = quota
            .tolerance()
            .saturating_add(quota.emission_interval())
            .clamp(Duration::from_millis(1), MAX_IDLE);
        let tats = moka::sync::Cache::builder()
            .max_capacity(max_keys.max(1))
            .time_to_idle(idle)
            // LRU, not TinyLFU: a new key must always be admitted, or a
            // rejected one would start from a full burst on every request.
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            quota,
            base: Instant::now(),
            tats,
        }
    }

    /// The quota every key is limited to.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// One request for `key` at `now`. `now` is an Instant so tests can
    /// pass `base + Duration`; the limiter keeps its own base Instant, set
    /// at construction, and instants before it count as the base.
    pub fn check(&self, key: &str, now: Instant) -> Decision {
        let now = nanos(now.saturating_duration_since(self.base));
        // A lookup by &str; the key is only copied when it is new. TAT 0 is
        // "never seen".
        let cell = self
            .tats
            .get_with_by_ref(key, || Arc::new(AtomicU64::new(0)));
        let mut current = cell.load(Ordering::Acquire);
        loop {
            let (decision, new_tat) = step(&self.quota, Some(current), now);
            if !decision.allowed || new_tat == current {
                return decision;
            }
            match cell.compare_exchange_weak(current, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return decision,
                Err(actual) => current = actual,
            }
        }
    }
}

/// Seconds of `d`, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `name` as a Structured Field String: `"` and `\` escaped, characters
/// outside printable ASCII replaced by `_`.
fn sf_string(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    push_sf_string(&mut out, name);
    out
}

fn push_sf_string(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
}

/// The header values of draft-ietf-httpapi-ratelimit-headers (draft 08+),
/// as `(RateLimit-Policy, RateLimit)`:
///
/// - `RateLimit-Policy: "<name>";q=<burst>;w=<window>`, where the window is
///   the tolerance `τ` in seconds (rounded up, at least 1): the time in
///   which a full burst of `q` refills, so `q / w` is the sustained rate;
///   with `burst = rate` it is the quota's period;
/// - `RateLimit: "<name>";r=<remaining>;t=<reset>`, with `reset` in seconds
///   rounded up.
///
/// `name` is written as a Structured Field String (quotes and backslashes
/// escaped, non-printable or non-ASCII characters replaced by `_`).
pub fn headers(name: &str, quota: &Quota, decision: &Decision) -> (String, String) {
    let window = ceil_secs(quota.tolerance()).max(1);
    let policy = format!("{};q={};w={window}", sf_string(name), quota.burst);
    (policy, limit_header(name, decision))
}

/// The `RateLimit` value alone (the policy depends on the quota only, so
/// callers make it once): `"<name>";r=<remaining>;t=<reset>`.
pub fn limit_header(name: &str, decision: &Decision) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(name.len() + 24);
    push_sf_string(&mut out, name);
    let _ = write!(
        out,
        ";r={};t={}",
        decision.remaining,
        ceil_secs(decision.reset)
    );
    out
}
