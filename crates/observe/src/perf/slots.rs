//! The numbers kept per route and time slot, and the rings of slots that
//! the windows are read from.

use std::collections::HashMap;
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::event::{CacheLayer, RequestEvent};
use crate::metrics::CacheEvent;

/// Highest latency a histogram tells apart (100 s, in µs); slower requests
/// are counted as 100 s. With 2 significant digits a histogram is about
/// 10 KiB, and one exists only for a route and slot that saw a request.
const HIST_MAX_US: u64 = 100_000_000;

/// Where a request's time went, as the bottleneck report splits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// perfgate's own work before the cache: guard, limit, L1.
    Gateway,
    /// The Redis lookup.
    L2,
    /// Waiting for another request's fetch of the same key.
    CoalescingWait,
    /// Waiting for a connection slot of the upstream pool.
    UpstreamConnect,
    /// The upstream's answer: first byte and body.
    UpstreamResponse,
    /// Compression.
    Encode,
    /// The rest of the total (responding, framing, what no phase measured).
    Other,
}

/// Number of [`Phase`]s.
pub(crate) const PHASES: usize = 7;

impl Phase {
    /// Every phase, in report order.
    pub(crate) const ALL: [Phase; PHASES] = [
        Phase::Gateway,
        Phase::L2,
        Phase::CoalescingWait,
        Phase::UpstreamConnect,
        Phase::UpstreamResponse,
        Phase::Encode,
        Phase::Other,
    ];

    /// The name used in reports.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Gateway => "gateway",
            Phase::L2 => "l2",
            Phase::CoalescingWait => "coalescing_wait",
            Phase::UpstreamConnect => "upstream_connect",
            Phase::UpstreamResponse => "upstream_response",
            Phase::Encode => "encode",
            Phase::Other => "other",
        }
    }
}

/// Splits `ev`'s phase times (µs) into [`Phase`]s. `Other` is what the
/// total has beyond the measured phases (zero when they add up to more,
/// as they can for a leader whose fetch ran in its own task).
pub(crate) fn split_phases(ev: &RequestEvent) -> [u64; PHASES] {
    let p = &ev.phases;
    let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let mut out = [0u64; PHASES];
    out[Phase::Gateway as usize] = us(p.guard) + us(p.limit) + us(p.l1);
    out[Phase::L2 as usize] = us(p.l2);
    out[Phase::CoalescingWait as usize] = us(p.coalesce_wait);
    out[Phase::UpstreamConnect as usize] = us(p.connect);
    out[Phase::UpstreamResponse as usize] = us(p.ttfb) + us(p.upstream_body);
    out[Phase::Encode as usize] = us(p.encode);
    let measured: u64 = out.iter().sum();
    out[Phase::Other as usize] = us(p.total).saturating_sub(measured);
    out
}

/// What the cache did for one request, each request counted once (the
/// first that applies, in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered by the in-process cache.
    HitL1,
    /// Answered by Redis.
    HitL2,
    /// Served stale (stale-while-revalidate, stale-if-error).
    Stale,
    /// Took another request's fetch.
    Coalesced,
    /// Fetched from the upstream.
    Miss,
    /// Not eligible for the cache (passed through).
    Bypass,
}

/// Number of [`Outcome`]s.
pub(crate) const OUTCOMES: usize = 6;

impl Outcome {
    /// The outcome of `ev`, if it went through the cache at all.
    pub(crate) fn of(ev: &RequestEvent) -> Option<Outcome> {
        let c = ev.cache;
        // An L2 hit is counted as an L1 `miss` with the L2 layer.
        if ev.layer == Some(CacheLayer::L2) {
            Some(Outcome::HitL2)
        } else if c.contains(CacheEvent::stale) {
            Some(Outcome::Stale)
        } else if c.contains(CacheEvent::hit) {
            Some(Outcome::HitL1)
        } else if c.contains(CacheEvent::coalesced) {
            Some(Outcome::Coalesced)
        } else if c.contains(CacheEvent::miss) {
            Some(Outcome::Miss)
        } else if c.contains(CacheEvent::bypass) {
            Some(Outcome::Bypass)
        } else {
            None
        }
    }
}

/// One route's numbers over one slot, or over a window (slots merged).
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteStats {
    pub(crate) requests: u64,
    pub(crate) status_4xx: u64,
    pub(crate) status_5xx: u64,
    /// Answered 429 by a rate limit (`error == "rate_limited"`).
    pub(crate) rate_limited: u64,
    /// Requests per [`Outcome`].
    pub(crate) cache: [u64; OUTCOMES],
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// µs per [`Phase`], summed.
    pub(crate) phases: [u64; PHASES],
    /// µs of the whole requests, summed.
    pub(crate) total_us: u64,
    /// Why responses were not stored: `(detail, requests)`, a handful at
    /// most (the `Cache-Status` details).
    pub(crate) details: Vec<(&'static str, u64)>,
    /// Total time per request (µs); made at the first request.
    pub(crate) latency: Option<Box<Histogram<u32>>>,
}

impl RouteStats {
    /// Counts `ev`, whose phases were split into `phases`.
    pub(crate) fn add_event(&mut self, ev: &RequestEvent, phases: &[u64; PHASES]) {
        self.requests += 1;
        match ev.status {
            400..=499 => self.status_4xx += 1,
            500..=599 => self.status_5xx += 1,
            _ => {}
        }
        if ev.error == Some("rate_limited") {
            self.rate_limited += 1;
        }
        if let Some(o) = Outcome::of(ev) {
            self.cache[o as usize] += 1;
        }
        self.bytes_in += ev.bytes_in;
        self.bytes_out += ev.bytes_out;
        for (sum, v) in self.phases.iter_mut().zip(phases) {
            *sum += v;
        }
        let total = u64::try_from(ev.phases.total.as_micros()).unwrap_or(u64::MAX);
        self.total_us += total;
        if let Some(d) = ev.detail {
            self.add_detail(d, 1);
        }
        if let Some(h) = self.histogram() {
            h.saturating_record(total.clamp(1, HIST_MAX_US));
        }
    }

    fn add_detail(&mut self, detail: &'static str, n: u64) {
        match self.details.iter_mut().find(|(d, _)| *d == detail) {
            Some((_, c)) => *c += n,
            None => self.details.push((detail, n)),
        }
    }

    fn histogram(&mut self) -> Option<&mut Histogram<u32>> {
        if self.latency.is_none() {
            // The bounds are constants that hdrhistogram accepts; a
            // failure would only lose the percentiles, never a request.
            self.latency = Histogram::new_with_bounds(1, HIST_MAX_US, 2)
                .ok()
                .map(Box::new);
        }
        self.latency.as_deref_mut()
    }

    /// Adds `o`'s numbers to these.
    pub(crate) fn merge(&mut self, o: &RouteStats) {
        self.requests += o.requests;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.rate_limited += o.rate_limited;
        for (a, b) in self.cache.iter_mut().zip(&o.cache) {
            *a += b;
        }
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        for (a, b) in self.phases.iter_mut().zip(&o.phases) {
            *a += b;
        }
        self.total_us += o.total_us;
        for &(d, n) in &o.details {
            self.add_detail(d, n);
        }
        if let Some(h) = &o.latency
            && let Some(mine) = self.histogram()
        {
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.add(&**h);
        }
    }

    /// The latency at quantile `q` (0..=1), in µs; 0 without requests.
    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
        self.latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0, |h| h.value_at_quantile(q))
    }
}

/// One time slot: the numbers of every route that had requests in it.
#[derive(Debug)]
struct Slot {
    /// Seconds since the Unix epoch divided by the slot width.
    number: u64,
    routes: HashMap<Arc<str>, RouteStats>,
}

/// A ring of `len` slots of `width` seconds: the last `len × width`
/// seconds, the oldest slot reused for the newest.
#[derive(Debug)]
pub(crate) struct Ring {
    width: u64,
    slots: Vec<Option<Slot>>,
    /// The newest slot number written.
    newest: u64,
}

impl Ring {
    pub(crate) fn new(width_secs: u64, len: usize) -> Self {
        Self {
            width: width_secs,
            slots: (0..len).map(|_| None).collect(),
            newest: 0,
        }
    }

    /// Slot width in seconds.
    pub(crate) fn width(&self) -> u64 {
        self.width
    }

    /// The slot that second `secs` (since the epoch) falls in.
    pub(crate) fn slot_of(&self, secs: u64) -> u64 {
        secs / self.width
    }

    /// Hands `f` the numbers of `route` in the slot of second `secs`.
    /// Too old for the ring (older than its oldest slot) → ignored.
    pub(crate) fn with(&mut self, secs: u64, route: &Arc<str>, f: impl FnOnce(&mut RouteStats)) {
        let n = self.slot_of(secs);
        let len = self.slots.len() as u64;
        if n + len <= self.newest {
            return;
        }
        let cell = &mut self.slots[(n % len) as usize];
        match cell {
            Some(s) if s.number == n => {}
            // A newer slot holds the place: this one is gone already.
            Some(s) if s.number > n => return,
            _ => {
                *cell = Some(Slot {
                    number: n,
                    routes: HashMap::new(),
                })
            }
        }
        self.newest = self.newest.max(n);
        if let Some(slot) = cell {
            let stats = match slot.routes.get_mut(route) {
                Some(s) => s,
                None => slot.routes.entry(route.clone()).or_default(),
            };
            f(stats);
        }
    }

    /// Every route's numbers over slots `from..=to`, merged.
    pub(crate) fn sum(&self, from: u64, to: u64) -> HashMap<Arc<str>, RouteStats> {
        let mut out: HashMap<Arc<str>, RouteStats> = HashMap::new();
        let len = self.slots.len() as u64;
        for n in from..=to {
            if let Some(Some(slot)) = self.slots.get((n % len) as usize)
                && slot.number == n
            {
                for (route, stats) in &slot.routes {
                    out.entry(route.clone()).or_default().merge(stats);
                }
            }
        }
        out
    }
}
