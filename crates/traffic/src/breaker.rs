//! Circuit breaker for one upstream server (or pool): stop sending requests
//! to an upstream that keeps failing, and probe it with a few trial requests
//! once it has had time to recover.
//!
//! ```text
//!            rate rule or consecutive rule            open_for elapsed
//!   Closed ───────────────────────────────► Open ─────────────────────► HalfOpen
//!     ▲                                       ▲   (lazily, at admit)       │
//!     │                                       └──── any trial failure ─────┤
//!     └─────────── half_open_requests consecutive trial successes ─────────┘
//! ```
//!
//! * **Closed**: every request is admitted. Outcomes feed a sliding window of
//!   [`BreakerSettings::window`] (a ring of 10 buckets of `window / 10`,
//!   rotated lazily by the `now` of each record, so a result counts for
//!   between 0.9 × `window` and `window`) and a count of consecutive
//!   failures. The breaker opens when the failures reach
//!   [`BreakerSettings::failure_rate`] of the window's results with at least
//!   [`BreakerSettings::min_requests`] results in it, or after
//!   [`BreakerSettings::consecutive_failures`] failures in a row.
//! * **Open**: every request is refused with the time left until half-open.
//!   The move to half-open happens at the first [`Breaker::admit`] after
//!   [`BreakerSettings::open_for`]; [`Breaker::state`] already reports
//!   half-open once the time has passed.
//! * **HalfOpen**: at most [`BreakerSettings::half_open_requests`] trial
//!   requests are in flight at once; that many consecutive trial successes
//!   close the breaker (with an empty window), one trial failure re-opens it
//!   for a fresh `open_for`.
//!
//! **Generations.** Every transition increments a generation number and
//! every [`Permit`] carries the generation it was issued in. A result whose
//! permit is from an earlier generation is ignored entirely (it is *not*
//! counted in the window either): it describes the upstream as it was before
//! the last transition, e.g. a slow request admitted while closed that fails
//! after the breaker opened must not re-open a half-open breaker, and a slow
//! failure from the outage must not count against a freshly closed one.
//!
//! **Hot path.** State and generation live in one `AtomicU64`
//! (`generation << 2 | state`), written only under the mutex that guards
//! the counters: [`Breaker::admit`] on a closed breaker is one atomic load
//! and returns a permit without allocating or cloning anything. Recording a
//! result, and anything done while open or half-open, takes the mutex.
//!
//! **Cancelled requests.** A half-open trial permit holds an `Arc` to the
//! breaker's shared state; dropping it without [`Breaker::record`] (request
//! cancelled, client gone) frees its trial slot and counts as neither
//! success nor failure. Permits are `'static` and `Send`, so they can travel
//! with a response body. Dropping a closed-state permit has no effect.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Number of buckets in the failure-rate window.
const BUCKETS: usize = 10;

/// Generations are stored above the 2 state bits of the atomic word.
const GENERATION_MASK: u64 = u64::MAX >> 2;

/// How a [`Breaker`] decides to open and how it recovers.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Open when the failure share over `window` reaches this (0.0–1.0) and
    /// at least `min_requests` were seen in the window; 0 (or NaN) disables
    /// the rate rule, a value above 1 never trips.
    pub failure_rate: f64,
    /// Results needed in the window before the rate rule applies.
    pub min_requests: u32,
    /// Length of the sliding failure-rate window (10 buckets of
    /// `window / 10`; a zero window only sees results recorded at the same
    /// instant).
    pub window: Duration,
    /// Open after this many consecutive failures; 0 disables the rule.
    pub consecutive_failures: u32,
    /// How long it stays open before letting trial requests through.
    pub open_for: Duration,
    /// Trial requests allowed at once while half-open; this many consecutive
    /// trial successes close it; one trial failure re-opens it. 0 is treated
    /// as 1.
    pub half_open_requests: u32,
}

/// State of a [`Breaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed,
    /// Requests are refused until `open_for` has elapsed.
    Open,
    /// A limited number of trial requests decide whether to close or re-open.
    HalfOpen,
}

impl BreakerState {
    const fn code(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    const fn from_code(word: u64) -> Self {
        match word & 3 {
            0 => Self::Closed,
            1 => Self::Open,
            _ => Self::HalfOpen,
        }
    }
}

/// A circuit breaker; `Send + Sync`, meant to be shared as `Arc<Breaker>`.
/// See the [module documentation](self) for the state machine.
pub struct Breaker {
    shared: Arc<Shared>,
}

/// Proof of admission by [`Breaker::admit`]; hand it to [`Breaker::record`]
/// on the same breaker with the request's outcome.
///
/// Dropping a permit instead of recording it (the request was cancelled)
/// frees its half-open trial slot and counts as neither success nor failure;
/// there is no separate `cancel`. A permit owns what its `Drop` needs (an
/// `Arc` to the breaker's state, only for half-open trials), so it has no
/// lifetime and is `Send`.
#[must_use = "record the outcome with Breaker::record; dropping the permit discards it"]
pub struct Permit {
    generation: u64,
    /// Set for half-open trials, whose slot must be freed on drop.
    trial: Option<Arc<Shared>>,
}

struct Shared {
    settings: BreakerSettings,
    /// `generation << 2 | state code`, mirrors `Inner`; only stored to while
    /// `inner` is locked.
    word: AtomicU64,
    inner: Mutex<Inner>,
}

struct Inner {
    state: BreakerState,
    generation: u64,
    window: Window,
    consecutive_failures: u32,
    /// When the breaker last opened; `Some` while open.
    opened_at: Option<Instant>,
    trials_in_flight: u32,
    trial_successes: u32,
}

/// Success and failure counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    successes: u32,
    failures: u32,
}

impl Counts {
    fn total(self) -> u64 {
        u64::from(self.successes) + u64::from(self.failures)
    }
}

/// Ring of [`BUCKETS`] buckets; bucket `tick % BUCKETS` holds the results
/// of tick `tick`, where a tick is `bucket_nanos` since `origin` (the first
/// result recorded since the last reset).
struct Window {
    bucket_nanos: u128,
    origin: Option<Instant>,
    /// Tick of the newest bucket.
    head: u64,
    buckets: [Counts; BUCKETS],
}

impl Window {
    fn new(window: Duration) -> Self {
        Self {
            bucket_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            origin: None,
            head: 0,
            buckets: [Counts::default(); BUCKETS],
        }
    }

    fn reset(&mut self) {
        self.origin = None;
        self.head = 0;
        self.buckets = [Counts::default(); BUCKETS];
    }

    /// Counts one result at `now` and returns the window's totals.
    fn record(&mut self, success: bool, now: Instant) -> Counts {
        let origin = *self.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        let tick = u64::try_from(elapsed / self.bucket_nanos).unwrap_or(u64::MAX);
        if tick > self.head {
            let advance = tick - self.head;
            if advance >= BUCKETS as u64 {
                self.buckets = [Counts::default(); BUCKETS];
            } else {
                for t in self.head + 1..=tick {
                    self.buckets[(t % BUCKETS as u64) as usize] = Counts::default();
                }
            }
            self.head = tick;
        }
        // A `now` older than the head (callers on other threads) counts in
        // the head bucket.
        let bucket = &mut self.buckets[(self.head % BUCKETS as u64) as usize];
        if success {
            bucket.successes = bucket.successes.saturating_add(1);
        } else {
            bucket.failures = bucket.failures.saturating_add(1);
        }
        self.buckets
            .iter()
            .fold(Counts::default(), |sum, b| Counts {
                successes: sum.successes.saturating_add(b.successes),
                failures: sum.failures.saturating_add(b.failures),
            })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held; should it ever, the counters
        // are still consistent enough to keep going.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters `to`, starting a new generation, and publishes it.
    fn transition(&self, inner: &mut Inner, to: BreakerState, now: Instant) {
        inner.state = to;
        inner.generation = inner.generation.wrapping_add(1) & GENERATION_MASK;
        match to {
            BreakerState::Closed => {
                inner.window.reset();
                inner.consecutive_failures = 0;
                inner.opened_at = None;
            }
            BreakerState::Open => inner.opened_at = Some(now),
            BreakerState::HalfOpen => inner.opened_at = None,
        }
        inner.trials_in_flight = 0;
        inner.trial_successes = 0;
        self.word
            .store(inner.generation << 2 | to.code(), Ordering::Release);
    }

    /// Time left in the open state at `now` (zero once `open_for` elapsed).
    fn open_remaining(&self, inner: &Inner, now: Instant) -> Duration {
        inner.opened_at.map_or(Duration::ZERO, |at| {
            self.settings
                .open_for
                .saturating_sub(now.saturating_duration_since(at))
        })
    }

    /// Whether the closed-state counters call for opening.
    fn should_open(&self, inner: &Inner, counts: Counts) -> bool {
        let s = &self.settings;
        let consecutive =
            s.consecutive_failures > 0 && inner.consecutive_failures >= s.consecutive_failures;
        let total = counts.total();
        let rate = s.failure_rate > 0.0
            && total > 0
            && total >= u64::from(s.min_requests)
            && f64::from(counts.failures) / total as f64 >= s.failure_rate;
        consecutive || rate
    }
}

impl Breaker {
    /// A closed breaker with an empty window.
    pub fn new(settings: BreakerSettings) -> Self {
        let settings = BreakerSettings {
            half_open_requests: settings.half_open_requests.max(1),
            ..settings
        };
        let inner = Inner {
            state: BreakerState::Closed,
            generation: 0,
            window: Window::new(settings.window),
            consecutive_failures: 0,
            opened_at: None,
            trials_in_flight: 0,
            trial_successes: 0,
        };
        Self {
            shared: Arc::new(Shared {
                settings,
                word: AtomicU64::new(BreakerState::Closed.code()),
                inner: Mutex::new(inner),
            }),
        }
    }

    /// Admits a request at `now`, or refuses it with how long to wait.
    ///
    /// `Err(d)` when open, `d` being the exact time left until half-open
    /// (rounding up to whole seconds for a `Retry-After` is the caller's
    /// business); `Err(Duration::ZERO)` when half-open with every trial slot
    /// taken (no time is known: a slot frees as soon as a trial finishes).
    /// The first call after `open_for` has elapsed moves the breaker to
    /// half-open and takes a trial slot.
    pub fn admit(&self, now: Instant) -> Result<Permit, Duration> {
        let word = self.shared.word.load(Ordering::Acquire);
        if BreakerState::from_code(word) == BreakerState::Closed {
            return Ok(Permit {
                generation: word >> 2,
                trial: None,
            });
        }
        self.admit_slow(now)
    }

    #[cold]
    fn admit_slow(&self, now: Instant) -> Result<Permit, Duration> {
        let shared = &self.shared;
        let mut inner = shared.lock();
        match inner.state {
            BreakerState::Closed => Ok(Permit {
                generation: inner.generation,
                trial: None,
            }),
            BreakerState::Open => {
                let remaining = shared.open_remaining(&inner, now);
                if !remaining.is_zero() {
                    return Err(remaining);
                }
                shared.transition(&mut inner, BreakerState::HalfOpen, now);
                self.admit_trial(&mut inner)
            }
            BreakerState::HalfOpen => self.admit_trial(&mut inner),
        }
    }

    fn admit_trial(&self, inner: &mut Inner) -> Result<Permit, Duration> {
        if inner.trials_in_flight >= self.shared.settings.half_open_requests {
            return Err(Duration::ZERO);
        }
        inner.trials_in_flight += 1;
        Ok(Permit {
            generation: inner.generation,
            trial: Some(Arc::clone(&self.shared)),
        })
    }

    /// Records the outcome of an admitted request at `now` (what counts as a
    /// failure — connect error, timeout, 5xx — is the caller's decision).
    ///
    /// Returns `Some((from, to))` when this result made the breaker change
    /// state (for logs and metrics): `(Closed, Open)`, `(HalfOpen, Open)` or
    /// `(HalfOpen, Closed)`. The move from open to half-open happens in
    /// [`admit`](Self::admit) and is not reported here. A permit from an
    /// earlier generation (issued before the last transition) is ignored and
    /// returns `None`.
    pub fn record(
        &self,
        mut permit: Permit,
        success: bool,
        now: Instant,
    ) -> Option<(BreakerState, BreakerState)> {
        // The slot is released below (under the same lock), not by `Drop`.
        let trial = permit.trial.take();
        debug_assert!(
            trial.as_ref().is_none_or(|t| Arc::ptr_eq(t, &self.shared)),
            "permit recorded on a breaker that did not issue it"
        );
        let shared = &self.shared;
        let mut inner = shared.lock();
        if inner.generation != permit.generation {
            return None;
        }
        match inner.state {
            BreakerState::Closed => {
                let counts = inner.window.record(success, now);
                inner.consecutive_failures = if success {
                    0
                } else {
                    inner.consecutive_failures.saturating_add(1)
                };
                if shared.should_open(&inner, counts) {
                    shared.transition(&mut inner, BreakerState::Open, now);
                    Some((BreakerState::Closed, BreakerState::Open))
                } else {
                    None
                }
            }
            // Only trial permits carry a half-open generation.
            BreakerState::HalfOpen => {
                inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
                if !success {
                    shared.transition(&mut inner, BreakerState::Open, now);
                    return Some((BreakerState::HalfOpen, BreakerState::Open));
                }
                inner.trial_successes += 1;
                if inner.trial_successes >= shared.settings.half_open_requests {
                    shared.transition(&mut inner, BreakerState::Closed, now);
                    Some((BreakerState::HalfOpen, BreakerState::Closed))
                } else {
                    None
                }
            }
            // No permit is issued in an open generation.
            BreakerState::Open => None,
        }
    }

    /// The state at `now`; an open breaker whose `open_for` has elapsed
    /// reads as [`BreakerState::HalfOpen`] (it moves there at the next
    /// [`admit`](Self::admit)). Lock-free unless the breaker is open.
    pub fn state(&self, now: Instant) -> BreakerState {
        let word = self.shared.word.load(Ordering::Acquire);
        match BreakerState::from_code(word) {
            BreakerState::Open => {
                let inner = self.shared.lock();
                if inner.state == BreakerState::Open
                    && self.shared.open_remaining(&inner, now).is_zero()
                {
                    BreakerState::HalfOpen
                } else {
                    inner.state
                }
            }
            state => state,
        }
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.shared.word.load(Ordering::Acquire);
        f.debug_struct("Breaker")
            .field("settings", &self.shared.settings)
            .field("state", &BreakerState::from_code(word))
            .field("generation", &(word >> 2))
            .finish()
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("generation", &self.generation)
            .field("trial", &self.trial.is_some())
            .finish()
    }
}

impl Drop for Permit {
    /// Frees the half-open trial slot of a permit that was not recorded.
    fn drop(&mut self) {
        if let Some(shared) = self.trial.take() {
            let mut inner = shared.lock();
            if inner.generation == self.generation && inner.state == BreakerState::HalfOpen {
                inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests;
