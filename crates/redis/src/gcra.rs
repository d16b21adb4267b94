//! The distributed rate limit: one GCRA step per request on Redis, so that
//! every instance draws from the same budget.
//!
//! The state of a limited key is one string, `{prefix}:rl:{key}`, holding
//! the theoretical arrival time (TAT) in microseconds on the Redis server's
//! clock. A Lua script reads the clock (`TIME`, so instances with skewed
//! clocks agree), runs the step and writes the new TAT atomically. It
//! touches that single key, so it works on Redis Cluster.
//!
//! The arithmetic is `perfgate_traffic::gcra::step`'s, in integer
//! microseconds instead of nanoseconds (Lua numbers are doubles, exact up to
//! 2^53 µs, about 285 years, which the clamps below keep every value under):
//!
//! | `step` (ns)                          | script (µs)                         |
//! |--------------------------------------|-------------------------------------|
//! | `T = min(period / rate, 2^50 µs)`    | `ARGV[1]`, computed the same way in Rust (at least 1 µs) |
//! | `τ = min(T × burst, 2^51 µs)`        | `ARGV[2]`                           |
//! | `tat = max(stored, now)`             | `tat = max(GET key or now, now)`    |
//! | `new_tat = tat + T`                  | same                                |
//! | `allow_at = new_tat - τ`             | same                                |
//! | refused when `now < allow_at`        | same; nothing written               |
//! | `retry_after = allow_at - now`       | returned                            |
//! | `reset = tat - now` / `new_tat - now`| returned                            |
//! | `remaining = (τ - reset) / T`        | computed in Rust from `reset`       |
//! | allowed: store `new_tat`             | `SET key new_tat PX ⌈(τ + T) / 1000⌉` |
//!
//! The expiry (`τ + T`) outlives the TAT (`new_tat ≤ now + τ`), after which
//! a missing key means the same as a stored one: a full burst.

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;

use crate::conn::Conn;
use crate::{Error, Redis};

/// Reply of the shared GCRA script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateReply {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Requests that would still be allowed right now after this one.
    pub remaining: u64,
    /// When refused: how long until one request is allowed; zero when
    /// allowed.
    pub retry_after: Duration,
    /// Time until the key is back to a full burst.
    pub reset: Duration,
}

/// `perfgate_traffic::gcra::MAX_EMISSION_INTERVAL`, in µs.
const MAX_EMISSION_US: u64 = 1 << 50;
/// `perfgate_traffic::gcra::MAX_TOLERANCE`, in µs.
const MAX_TOLERANCE_US: u64 = 1 << 51;

/// KEYS[1] = the TAT key; ARGV = T (µs), τ (µs), expiry (ms).
/// Returns {allowed (0/1), retry_after (µs), reset (µs)}.
const LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ARGV[3])
return {1, 0, new_tat - now}
"#;

/// Loaded once per server by redis-rs (EVALSHA, EVAL on NOSCRIPT).
static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LUA));

/// `(T, τ)` in µs, clamped like `perfgate_traffic::gcra::Quota`; T = 0
/// only for a zero period (no limit).
fn intervals_us(rate: u32, period: Duration, burst: u32) -> (u64, u64) {
    let t = match rate {
        _ if period.is_zero() => return (0, 0),
        0 => MAX_EMISSION_US,
        rate => {
            let us = u64::try_from((period / rate).as_micros()).unwrap_or(u64::MAX);
            // Sub-microsecond intervals (over a million per second) are
            // rounded up to 1 µs rather than to "unlimited".
            us.clamp(1, MAX_EMISSION_US)
        }
    };
    let tau = t.saturating_mul(u64::from(burst)).min(MAX_TOLERANCE_US);
    (t, tau)
}

impl Redis {
    /// One GCRA step on `{prefix}:rl:{key}` in Redis, atomically (a
    /// single-key Lua script, so it is Redis-Cluster safe), using the Redis
    /// server's clock (`TIME`) so instances with skewed clocks agree: `rate`
    /// requests per `period`, bursts of `burst`, the same arithmetic as
    /// `perfgate_traffic::gcra::step` (see the module docs). The key expires
    /// after the tolerance + emission interval. Under `redis.timeout` and the
    /// breaker like every hot-path call: Err when Redis is slow/down (the
    /// caller falls back to a local limit).
    ///
    /// Degenerate quotas never fail: a zero period allows everything without
    /// a round trip, `rate = 0` is the largest interval, `burst = 0` refuses
    /// everything.
    pub async fn gcra(
        &self,
        key: &str,
        rate: u32,
        period: Duration,
        burst: u32,
    ) -> Result<RateReply, Error> {
        let (t, tau) = intervals_us(rate, period, burst);
        if t == 0 {
            return Ok(RateReply {
                allowed: true,
                remaining: u64::from(burst),
                retry_after: Duration::ZERO,
                reset: Duration::ZERO,
            });
        }
        let ttl_ms = tau.saturating_add(t).div_ceil(1000).max(1);
        let rkey = self.rate_key(key);
        let (allowed, retry_after, reset): (i64, i64, i64) = self
            .call(self.timeout(), |conn| async move {
                let mut invocation = SCRIPT.key(&rkey);
                invocation.arg(t).arg(tau).arg(ttl_ms);
                match conn {
                    Conn::Standalone(mut c) => invocation.invoke_async(&mut c).await,
                    Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
                }
            })
            .await?;
        let micros = |v: i64| u64::try_from(v).unwrap_or(0);
        let allowed = allowed == 1;
        let reset = micros(reset);
        let remaining = if allowed {
            (tau.saturating_sub(reset) / t).min(u64::from(burst))
        } else {
            0
        };
        Ok(RateReply {
            allowed,
            remaining,
            retry_after: Duration::from_micros(micros(retry_after)),
            reset: Duration::from_micros(reset),
        })
    }

    fn rate_key(&self, key: &str) -> String {
        format!("{}:rl:{key}", self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_mirror_the_quota_and_clamp() {
        let s = Duration::from_secs(1);
        assert_eq!(intervals_us(10, s, 5), (100_000, 500_000));
        assert_eq!(intervals_us(3, s, 2), (333_333, 666_666));
        assert_eq!(intervals_us(0, s, 1), (MAX_EMISSION_US, MAX_EMISSION_US));
        assert_eq!(intervals_us(5, Duration::ZERO, 3), (0, 0));
        assert_eq!(intervals_us(u32::MAX, s, 3), (1, 3));
        assert_eq!(
            intervals_us(1, Duration::MAX, u32::MAX),
            (MAX_EMISSION_US, MAX_TOLERANCE_US)
        );
        assert_eq!(intervals_us(10, s, 0), (100_000, 0));
    }
}
