//! Performance windows: request events counted per route in time slots, so
//! that the admin API can say, for the last minute, five minutes or hour,
//! how fast each route is (rate, percentiles, errors, hit rates, bytes)
//! and where its time goes (phases, regressions, slow requests, verdicts).
//!
//! [`PerfWindows`] is an [`EventSink`]: it is fed by the event feed's one
//! background task, in order, and never on the request path. Time comes
//! from the events (`RequestEvent::at`) and, for reports, from the caller
//! (`*_at`), so tests script events at explicit times and never sleep.
//!
//! Slots: 10-second slots × 60 (the 1m and 5m windows and the windows
//! before them) and 1-minute slots × 120 (the 1h window and the hour
//! before). A window is its slots up to the one `now` falls in, so it spans
//! between its length minus one slot and its length; rates divide by the
//! time it actually spans.
//!
//! Memory: per slot, one entry per route that had requests in it, with a
//! latency histogram of about 10 KiB (µs, 2 significant digits, up to
//! 100 s). A route busy in every slot costs 180 entries (≈ 2 MiB). Route
//! names come from the configuration; past [`MAX_KEYS`] distinct names,
//! new ones are counted under [`OTHER`]. The slow-request list keeps the
//! last [`SLOW_KEPT`].
//!
//! Only requests a client waits for are counted (kinds `client` and
//! `batch_item`): background refreshes, fills, job calls and warm-up
//! fetches would blur the rates and latencies clients see.

mod report;
mod slots;
#[cfg(test)]
mod tests;
mod verdicts;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

pub use report::{
    BottleneckReport, Bytes, CacheRates, Errors, Latency, MetricsReport, PhaseShare, PhaseShares,
    RankedRoute, Regression, RouteBottleneck, RoutePerf, SlowPhases, SlowRequest,
};
pub use verdicts::Verdict;

use crate::event::{EventSink, RequestEvent, RequestKind};
use slots::{Ring, split_phases};

/// Distinct route names counted separately; later ones go under [`OTHER`].
pub const MAX_KEYS: usize = 256;

/// Where routes past [`MAX_KEYS`] are counted.
pub const OTHER: &str = "other";

/// Where requests without a route (404s, guard refusals) are counted.
pub const NO_ROUTE: &str = "-";

/// Slow requests kept for the bottleneck report.
pub const SLOW_KEPT: usize = 100;

/// 10-second slots: 1m and 5m windows and the ones before them.
const FINE_SLOT_SECS: u64 = 10;
const FINE_SLOTS: usize = 60;
/// 1-minute slots: the 1h window and the hour before it.
const COARSE_SLOT_SECS: u64 = 60;
const COARSE_SLOTS: usize = 120;

/// A report's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last minute.
    OneMinute,
    /// The last five minutes.
    FiveMinutes,
    /// The last hour.
    OneHour,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 3] = [Window::OneMinute, Window::FiveMinutes, Window::OneHour];

    /// `1m`, `5m` or `1h`.
    pub fn parse(s: &str) -> Option<Window> {
        Self::ALL.into_iter().find(|w| w.as_str() == s)
    }

    /// The name used in queries and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::OneMinute => "1m",
            Window::FiveMinutes => "5m",
            Window::OneHour => "1h",
        }
    }

    /// The window's length.
    pub fn length(self) -> Duration {
        Duration::from_secs(match self {
            Window::OneMinute => 60,
            Window::FiveMinutes => 300,
            Window::OneHour => 3600,
        })
    }
}

/// Request events counted per route in sliding windows; see the module
/// documentation.
#[derive(Debug)]
pub struct PerfWindows {
    slow_threshold: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Route names seen so far (at most [`MAX_KEYS`]).
    keys: HashSet<Arc<str>>,
    no_route: Arc<str>,
    other: Arc<str>,
    fine: Ring,
    coarse: Ring,
    /// The last [`SLOW_KEPT`] requests slower than the threshold, oldest first.
    slow: VecDeque<SlowRequest>,
}

impl PerfWindows {
    /// Windows that list requests slower than `slow_threshold`
    /// (`server.slow_request_threshold`) as slow.
    pub fn new(slow_threshold: Duration) -> Self {
        Self {
            slow_threshold,
            inner: Mutex::new(Inner {
                keys: HashSet::new(),
                no_route: Arc::from(NO_ROUTE),
                other: Arc::from(OTHER),
                fine: Ring::new(FINE_SLOT_SECS, FINE_SLOTS),
                coarse: Ring::new(COARSE_SLOT_SECS, COARSE_SLOTS),
                slow: VecDeque::with_capacity(SLOW_KEPT),
            }),
        }
    }

    /// The threshold above which a request is listed as slow.
    pub fn slow_threshold(&self) -> Duration {
        self.slow_threshold
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counting never leaves the state half-changed in a way that
        // matters: a poisoned lock is still good to read and write.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one finished request.
    pub fn record(&self, ev: &RequestEvent) {
        if !matches!(ev.kind, RequestKind::Client | RequestKind::BatchItem) {
            return;
        }
        let phases = split_phases(ev);
        let secs = unix_secs(ev.at);
        let mut inner = self.lock();
        let key = inner.key(ev.route.as_ref());
        inner.fine.with(secs, &key, |s| s.add_event(ev, &phases));
        inner.coarse.with(secs, &key, |s| s.add_event(ev, &phases));
        if ev.phases.total > self.slow_threshold {
            if inner.slow.len() == SLOW_KEPT {
                inner.slow.pop_front();
            }
            inner.slow.push_back(SlowRequest::new(ev, &key, &phases));
        }
    }

    /// Per-route metrics over the `window` ending now.
    pub fn metrics(&self, window: Window) -> MetricsReport {
        self.metrics_at(window, SystemTime::now())
    }

    /// Per-route metrics over the `window` ending at `now`.
    pub fn metrics_at(&self, window: Window, now: SystemTime) -> MetricsReport {
        let (span, routes) = {
            let inner = self.lock();
            let span = Span::of(inner.ring(window), window, now);
            (span, inner.ring(window).sum(span.from, span.to))
        };
        report::metrics(window, span.seconds, routes)
    }

    /// Where the time went over the `window` ending now.
    pub fn bottlenecks(&self, window: Window) -> BottleneckReport {
        self.bottlenecks_at(window, SystemTime::now())
    }

    /// Where the time went over the `window` ending at `now`, compared
    /// with the window of the same length before it.
    pub fn bottlenecks_at(&self, window: Window, now: SystemTime) -> BottleneckReport {
        let (span, current, previous, slow) = {
            let inner = self.lock();
            let ring = inner.ring(window);
            let span = Span::of(ring, window, now);
            let slots = span.to + 1 - span.from;
            let previous = match span.from.checked_sub(slots) {
                Some(from) => ring.sum(from, span.from - 1),
                None => Default::default(),
            };
            let since = now
                .checked_sub(window.length())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let slow: Vec<SlowRequest> = inner
                .slow
                .iter()
                .filter(|s| s.at >= since && s.at <= now)
                .cloned()
                .collect();
            (span, ring.sum(span.from, span.to), previous, slow)
        };
        report::bottlenecks(
            window,
            span.seconds,
            current,
            &previous,
            slow,
            self.slow_threshold,
        )
    }
}

impl EventSink for PerfWindows {
    fn on_event(&self, event: &RequestEvent) {
        self.record(event);
    }
}

impl Inner {
    /// The name `route` is counted under.
    fn key(&mut self, route: Option<&Arc<str>>) -> Arc<str> {
        let Some(route) = route else {
            return self.no_route.clone();
        };
        if let Some(k) = self.keys.get(route) {
            return k.clone();
        }
        if self.keys.len() < MAX_KEYS {
            self.keys.insert(route.clone());
            return route.clone();
        }
        self.other.clone()
    }

    fn ring(&self, window: Window) -> &Ring {
        match window {
            Window::OneMinute | Window::FiveMinutes => &self.fine,
            Window::OneHour => &self.coarse,
        }
    }
}

/// The slots a window reads, and the seconds they span up to `now`.
#[derive(Clone, Copy, Debug)]
struct Span {
    from: u64,
    to: u64,
    seconds: f64,
}

impl Span {
    fn of(ring: &Ring, window: Window, now: SystemTime) -> Span {
        let width = ring.width();
        let slots = window.length().as_secs() / width;
        let to = ring.slot_of(unix_secs(now));
        let from = (to + 1).saturating_sub(slots);
        let start = Duration::from_secs(from * width);
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Span {
            from,
            to,
            // At least a second: a window read right as its first slot
            // begins must not divide by (nearly) zero.
            seconds: now.saturating_sub(start).as_secs_f64().max(1.0),
        }
    }
}

/// Whole seconds since the Unix epoch (0 before it).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
