//! The time the cache and the job store read: the system clock in
//! production, a manual clock that only moves when a test advances it.
//!
//! Why not tokio's paused time: the integration tests run a real gateway
//! on real sockets, and a paused runtime jumps to the next timer whenever
//! it waits for I/O, so every upstream and idle deadline would fire at
//! once. A manual clock moves cache ages and job deadlines only, while
//! sockets and deadlines keep real time. (moka's own timers keep real time
//! too: see `MemoryCache::lookup` for how expiry follows a manual clock.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of the current time; cheap to clone. Reading the system clock
/// costs what `Instant::now()` costs: no allocation, no lock.
#[derive(Clone, Debug, Default)]
pub struct Clock(Source);

#[derive(Clone, Debug, Default)]
enum Source {
    #[default]
    System,
    Manual(Arc<Manual>),
}

/// A manual clock's state: the real times it started at and how far it
/// has been advanced since.
#[derive(Debug)]
struct Manual {
    start: Instant,
    start_wall: SystemTime,
    /// Nanoseconds advanced (u64 nanoseconds last about 584 years).
    advanced_ns: AtomicU64,
}

impl Manual {
    fn advanced(&self) -> Duration {
        Duration::from_nanos(self.advanced_ns.load(Ordering::Acquire))
    }
}

impl Clock {
    /// The system clocks (`Instant::now()`, `SystemTime::now()`).
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// The monotonic time now.
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.0 {
            Source::System => Instant::now(),
            Source::Manual(m) => m.start + m.advanced(),
        }
    }

    /// The wall-clock time now.
    #[inline]
    pub fn system_now(&self) -> SystemTime {
        match &self.0 {
            Source::System => SystemTime::now(),
            Source::Manual(m) => m.start_wall + m.advanced(),
        }
    }

    /// Milliseconds since the Unix epoch (0 before it).
    pub fn unix_ms(&self) -> u64 {
        self.system_now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// True for a [`ManualClock`]'s clock: time only moves when advanced.
    #[inline]
    pub fn is_manual(&self) -> bool {
        matches!(self.0, Source::Manual(_))
    }
}

/// A clock for tests: it starts at the real time it was made and moves
/// only by [`advance`](Self::advance). Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Manual>);

impl ManualClock {
    /// A clock standing at the real time now.
    pub fn new() -> Self {
        Self(Arc::new(Manual {
            start: Instant::now(),
            start_wall: SystemTime::now(),
            advanced_ns: AtomicU64::new(0),
        }))
    }

    /// Moves the clock forward by `d` (saturating).
    pub fn advance(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .advanced_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(ns))
            });
    }

    /// The [`Clock`] reading this clock's time.
    pub fn clock(&self) -> Clock {
        Clock(Source::Manual(self.0.clone()))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl From<ManualClock> for Clock {
    fn from(m: ManualClock) -> Self {
        m.clock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let m = ManualClock::new();
        let c = m.clock();
        let (t0, w0, ms0) = (c.now(), c.system_now(), c.unix_ms());
        assert_eq!(c.now(), t0);
        assert_eq!(c.system_now(), w0);
        m.advance(Duration::from_millis(1_500));
        assert_eq!(c.now() - t0, Duration::from_millis(1_500));
        assert_eq!(
            c.system_now().duration_since(w0).unwrap(),
            Duration::from_millis(1_500)
        );
        assert_eq!(c.unix_ms() - ms0, 1_500);
        assert!(c.is_manual() && !Clock::system().is_manual());
    }

    #[test]
    fn the_system_clock_follows_real_time() {
        let c = Clock::default();
        let t0 = c.now();
        assert!(c.now() >= t0);
        assert!(c.unix_ms() > 1_600_000_000_000);
    }
}
