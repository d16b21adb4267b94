//! The health of a pool's servers: active probe state and passive outlier
//! detection (ejection after consecutive failures).
//!
//! A server may take traffic ([`PoolHealth::eligible`]) when it is
//! *probe-healthy* and *not ejected*:
//!
//! - **Probes.** Servers start probe-healthy so traffic flows before the
//!   first probe. `unhealthy` consecutive failed probes take a server down,
//!   `healthy` consecutive successful ones bring it back.
//! - **Outlier ejection.** `consecutive_failures` failed requests in a row
//!   eject a server for `base_ejection × (times ejected)`, capped at
//!   `max_ejection`. An ejection is refused when it would exceed
//!   `max_ejection_percent` of the pool or leave no eligible server. Once
//!   its time has passed the server is eligible again at once; the
//!   [`Transition::Readmitted`] is reported by
//!   [`PoolHealth::readmit_expired`], which the caller runs periodically.
//!
//! **No panic mode.** The rule "at least one server stays eligible" is
//! enforced when state changes, never by overriding [`PoolHealth::eligible`]:
//! an ejection that would leave no eligible server is refused, and when a
//! probe change leaves no eligible server while probe-healthy servers are
//! ejected (the last eligible one went down, or an ejected one came up
//! after all others went down), the ejected one whose ejection ends first
//! is readmitted early. So whenever at least one server is probe-healthy, at least one is
//! eligible. When every server is probe-down, none is eligible and the
//! caller answers 503: probes are the authority on reachability, and
//! sending traffic to servers they report down would only add latency.
//!
//! Writes take a mutex per pool (one short critical section per report or
//! probe); [`PoolHealth::eligible`], on the request path, only reads two
//! atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Thresholds for active probes.
#[derive(Debug, Clone, Copy)]
pub struct ProbeThresholds {
    /// Consecutive successful probes that bring a down server back up
    /// (0 is treated as 1).
    pub healthy: u32,
    /// Consecutive failed probes that take an up server down (0 is treated
    /// as 1).
    pub unhealthy: u32,
}

/// Passive outlier detection settings.
#[derive(Debug, Clone, Copy)]
pub struct OutlierSettings {
    /// Consecutive failures (5xx or connect failures, as reported by the
    /// caller) that eject a server; 0 = disabled.
    pub consecutive_failures: u32,
    /// Ejection time = `base_ejection` × number of times this server has
    /// been ejected (this ejection included), capped at `max_ejection`.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Never eject more than this share of the pool (percent, 0–100; larger
    /// values count as 100); at least one server always stays eligible.
    pub max_ejection_percent: u8,
}

/// A change of a server's state, for logs and metrics. Every
/// [`Transition::Ejected`] is eventually followed by exactly one
/// [`Transition::Readmitted`] for the same server (from
/// [`PoolHealth::readmit_expired`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Outlier detection ejected `server`.
    Ejected {
        /// Index of the server in the pool.
        server: usize,
        /// Length of the ejection.
        until: Duration,
    },
    /// An ejection of `server` ended (expired, or was cut short so that
    /// the pool keeps an eligible server).
    Readmitted {
        /// Index of the server in the pool.
        server: usize,
    },
    /// Probes brought `server` back up.
    ProbeUp {
        /// Index of the server in the pool.
        server: usize,
    },
    /// Probes took `server` down.
    ProbeDown {
        /// Index of the server in the pool.
        server: usize,
    },
}

/// A server's health at one instant, for health endpoints and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerHealth {
    /// Whether active probes consider the server up.
    pub probe_healthy: bool,
    /// Time left on the current ejection; `None` when not ejected (an
    /// expired ejection counts as not ejected).
    pub ejected_for: Option<Duration>,
    /// Times the server has been ejected since the pool was created.
    pub ejections: u32,
    /// Current streak of failed requests.
    pub consecutive_failures: u32,
}

/// The read side of one server, checked on every pick.
#[derive(Debug)]
struct Shared {
    probe_healthy: AtomicBool,
    /// End of the current ejection in nanoseconds since `PoolHealth::epoch`;
    /// 0 when not ejected. The server is ejected while `now < until`.
    ejected_until: AtomicU64,
}

/// The write side of one server, behind the pool's mutex.
#[derive(Debug, Clone, Default)]
struct State {
    probe_healthy: bool,
    probe_successes: u32,
    probe_failures: u32,
    consecutive_failures: u32,
    ejections: u32,
    /// End of the ejection not yet reported as readmitted (nanoseconds since
    /// the epoch, as in `Shared::ejected_until`).
    ejected_until: Option<u64>,
}

impl State {
    /// Ejected at `now` (an ejection whose time has passed is not).
    fn ejected_at(&self, now: u64) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    fn eligible_at(&self, now: u64) -> bool {
        self.probe_healthy && !self.ejected_at(now)
    }
}

#[derive(Debug)]
struct Locked {
    servers: Vec<State>,
    /// Readmissions that happened outside `readmit_expired` (an expired
    /// ejection cleared by a report, or an early readmission), for
    /// `readmit_expired` to return.
    pending: Vec<Transition>,
}

/// The health of every server of one pool. Thread-safe.
#[derive(Debug)]
pub struct PoolHealth {
    probes: Option<ProbeThresholds>,
    outlier: OutlierSettings,
    /// Reference instant of the atomically stored times.
    epoch: Instant,
    shared: Box<[Shared]>,
    locked: Mutex<Locked>,
}

impl PoolHealth {
    /// Health of a pool of `servers` servers, all probe-healthy and not
    /// ejected. With `probes` `None` the pool has no active probes:
    /// [`PoolHealth::probe`] results are ignored and servers stay
    /// probe-healthy.
    pub fn new(
        servers: usize,
        probes: Option<ProbeThresholds>,
        outlier: OutlierSettings,
        now: Instant,
    ) -> Self {
        let shared = (0..servers)
            .map(|_| Shared {
                probe_healthy: AtomicBool::new(true),
                ejected_until: AtomicU64::new(0),
            })
            .collect();
        let state = State {
            probe_healthy: true,
            ..State::default()
        };
        Self {
            probes,
            outlier,
            epoch: now,
            shared,
            locked: Mutex::new(Locked {
                servers: vec![state; servers],
                pending: Vec::new(),
            }),
        }
    }

    /// Records the result of a proxied request on `server`: a success ends
    /// the failure streak, a failure extends it and may eject the server
    /// (within `max_ejection_percent`, and never the last eligible one).
    ///
    /// Results reported while the server is ejected (requests that were in
    /// flight when it was ejected) are ignored. Out-of-range servers are
    /// ignored.
    pub fn report(&self, server: usize, success: bool, now: Instant) -> Option<Transition> {
        let now_ns = self.nanos(now);
        let mut locked = self.lock();
        let Locked { servers, pending } = &mut *locked;
        let state = servers.get_mut(server)?;
        if state.ejected_at(now_ns) {
            return None;
        }
        if state.ejected_until.is_some() {
            // Expired but not yet collected by `readmit_expired`: readmit
            // now so the next ejection is reported after its readmission.
            self.clear_ejection(server, state);
            pending.push(Transition::Readmitted { server });
        }
        if success {
            state.consecutive_failures = 0;
            return None;
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let threshold = self.outlier.consecutive_failures;
        if threshold == 0 || state.consecutive_failures < threshold {
            return None;
        }
        // The streak stays at or above the threshold while the ejection is
        // refused, so every further failure asks again.
        if !self.may_eject(servers, server, now_ns) {
            return None;
        }
        let state = &mut servers[server];
        state.ejections = state.ejections.saturating_add(1);
        state.consecutive_failures = 0;
        let length = self
            .outlier
            .base_ejection
            .saturating_mul(state.ejections)
            .min(self.outlier.max_ejection);
        let until = now_ns.saturating_add(duration_nanos(length));
        state.ejected_until = Some(until);
        self.shared[server]
            .ejected_until
            .store(until, Ordering::Release);
        Some(Transition::Ejected {
            server,
            until: length,
        })
    }

    /// Records the result of an active probe of `server`: after `healthy`
    /// consecutive successes a down server is up, after `unhealthy`
    /// consecutive failures an up server is down. Ignored without probe
    /// thresholds and for out-of-range servers.
    ///
    /// When a probe change leaves no eligible server although some are
    /// probe-healthy (the last eligible one went down, or an ejected one
    /// came up), the probe-healthy server whose ejection ends first is
    /// readmitted early; that [`Transition::Readmitted`] is returned by the
    /// next [`PoolHealth::readmit_expired`].
    pub fn probe(&self, server: usize, ok: bool, now: Instant) -> Option<Transition> {
        let thresholds = self.probes?;
        let now_ns = self.nanos(now);
        let mut locked = self.lock();
        let Locked { servers, pending } = &mut *locked;
        let state = servers.get_mut(server)?;
        let transition = if ok {
            state.probe_failures = 0;
            state.probe_successes = state.probe_successes.saturating_add(1);
            if state.probe_healthy || state.probe_successes < thresholds.healthy.max(1) {
                return None;
            }
            Transition::ProbeUp { server }
        } else {
            state.probe_successes = 0;
            state.probe_failures = state.probe_failures.saturating_add(1);
            if !state.probe_healthy || state.probe_failures < thresholds.unhealthy.max(1) {
                return None;
            }
            Transition::ProbeDown { server }
        };
        state.probe_healthy = ok;
        self.shared[server]
            .probe_healthy
            .store(ok, Ordering::Release);
        self.keep_one_eligible(servers, pending, now_ns);
        Some(transition)
    }

    /// Whether `server` may take traffic now: probe-healthy and not ejected.
    /// An ejection whose time has passed no longer counts, even before
    /// [`PoolHealth::readmit_expired`] reports it. Out-of-range servers are
    /// not eligible.
    ///
    /// There is no panic mode (see the module docs): when every server is
    /// probe-down, this is `false` for all of them.
    pub fn eligible(&self, server: usize, now: Instant) -> bool {
        self.shared.get(server).is_some_and(|s| {
            s.probe_healthy.load(Ordering::Acquire)
                && self.nanos(now) >= s.ejected_until.load(Ordering::Acquire)
        })
    }

    /// Readmits the servers whose ejection has expired and returns the
    /// readmissions (including those that happened since the last call in
    /// [`PoolHealth::report`] or [`PoolHealth::probe`]), for logs and
    /// metrics. The caller runs it periodically.
    pub fn readmit_expired(&self, now: Instant) -> Vec<Transition> {
        let now_ns = self.nanos(now);
        let mut locked = self.lock();
        let Locked { servers, pending } = &mut *locked;
        let mut transitions = std::mem::take(pending);
        for (server, state) in servers.iter_mut().enumerate() {
            if state.ejected_until.is_some() && !state.ejected_at(now_ns) {
                self.clear_ejection(server, state);
                transitions.push(Transition::Readmitted { server });
            }
        }
        transitions
    }

    /// Every server's health at `now`, indexed like the pool.
    pub fn snapshot(&self, now: Instant) -> Vec<ServerHealth> {
        let now_ns = self.nanos(now);
        self.lock()
            .servers
            .iter()
            .map(|s| ServerHealth {
                probe_healthy: s.probe_healthy,
                ejected_for: s
                    .ejected_until
                    .filter(|&until| now_ns < until)
                    .map(|until| Duration::from_nanos(until - now_ns)),
                ejections: s.ejections,
                consecutive_failures: s.consecutive_failures,
            })
            .collect()
    }

    /// Whether ejecting `server` now keeps the pool within
    /// `max_ejection_percent` and leaves another server eligible.
    fn may_eject(&self, servers: &[State], server: usize, now: u64) -> bool {
        let ejected = servers.iter().filter(|s| s.ejected_at(now)).count();
        let percent = usize::from(self.outlier.max_ejection_percent.min(100));
        let within_share = (ejected + 1) * 100 <= percent * servers.len();
        let other_eligible = servers
            .iter()
            .enumerate()
            .any(|(i, s)| i != server && s.eligible_at(now));
        within_share && other_eligible
    }

    /// Restores "at least one server is eligible when any is
    /// probe-healthy" after a probe change: if no server is eligible, the
    /// probe-healthy server whose ejection ends first is readmitted early.
    fn keep_one_eligible(&self, servers: &mut [State], pending: &mut Vec<Transition>, now: u64) {
        if servers.iter().any(|s| s.eligible_at(now)) {
            return;
        }
        let earliest = servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.probe_healthy)
            .filter_map(|(i, s)| Some((s.ejected_until?, i)))
            .min();
        if let Some((_, server)) = earliest {
            self.clear_ejection(server, &mut servers[server]);
            pending.push(Transition::Readmitted { server });
        }
    }

    /// Ends `server`'s ejection; its failure streak starts afresh.
    fn clear_ejection(&self, server: usize, state: &mut State) {
        state.ejected_until = None;
        state.consecutive_failures = 0;
        self.shared[server]
            .ejected_until
            .store(0, Ordering::Release);
    }

    /// `now` in nanoseconds since the epoch (0 for earlier instants).
    fn nanos(&self, now: Instant) -> u64 {
        duration_nanos(now.saturating_duration_since(self.epoch))
    }

    fn lock(&self) -> MutexGuard<'_, Locked> {
        // Critical sections do not panic, but a poisoned lock must not take
        // the pool down with it.
        self.locked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `d` in nanoseconds, saturating (u64 nanoseconds span 584 years).
fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
