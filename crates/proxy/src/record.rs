//! The last phase of every request: its record feeds the admin statistics
//! and the Prometheus metrics (nothing else counts per-request outcomes),
//! the slow-request log, and then the [`EventSink`](perfgate_observe::EventSink)s
//! (access log, traces, analytics), which run off the request path in one
//! background task.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use perfgate_observe::{CacheEvent, EventBus, Metrics};

use crate::context::{L2Outcome, RequestContext};
use crate::route::Route;
use crate::stats::Stats;

/// Where a request's record goes.
pub(crate) struct Records<'a> {
    /// The instance's statistics (the route's are on the route).
    pub(crate) stats: &'a Stats,
    pub(crate) metrics: &'a Metrics,
    pub(crate) events: &'a EventBus,
}

impl Records<'_> {
    /// Records a finished request: statistics, metrics, the slow-request
    /// log, and the sinks. Statistics and metrics read the fields the event
    /// is made of; the event itself is built only when a sink listens (it
    /// is a few hundred bytes to fill and move: callgrind showed it on the
    /// hit path).
    pub(crate) fn request(
        &self,
        cx: &RequestContext,
        status: u16,
        bytes_out: u64,
        total: Duration,
    ) {
        let route = cx.route.as_deref();
        let t = &cx.timing;
        for e in t.cache.iter() {
            self.metrics.cache_event("l1", e);
            let field: fn(&Stats) -> &AtomicU64 = match e {
                CacheEvent::miss => |s| &s.misses,
                CacheEvent::stale => |s| &s.stale,
                CacheEvent::revalidated => |s| &s.revalidated,
                CacheEvent::coalesced => {
                    self.metrics.coalesced_waiter();
                    |s| &s.coalesced
                }
                CacheEvent::bypass => |s| &s.bypass,
                // Hits are counted as saved calls below.
                CacheEvent::hit => continue,
            };
            self.add(route, field, 1);
        }
        self.upstream(route, t.attempts);
        if t.saved_calls > 0 {
            self.add(route, |s| &s.hits, u64::from(t.saved_calls));
            self.add(route, |s| &s.upstream_bytes_saved, t.bytes_saved);
        }
        match t.l2_outcome {
            Some(L2Outcome::Hit) => {
                Stats::inc(&self.stats.l2_hits);
                self.metrics.cache_event("l2", CacheEvent::hit);
            }
            Some(L2Outcome::Miss) => {
                Stats::inc(&self.stats.l2_misses);
                self.metrics.cache_event("l2", CacheEvent::miss);
            }
            Some(L2Outcome::Error) => {
                Stats::inc(&self.stats.l2_errors);
                self.metrics.l2_error();
            }
            None => {}
        }
        if let Some(r) = route {
            r.metrics.record(status, total.as_secs_f64());
        }
        if total >= cx.slow {
            tracing::warn!(
                kind = cx.kind.as_str(),
                method = %cx.method,
                path = %cx.target.path(),
                route = route.map_or("-", |r| &*r.name),
                status,
                total_ms = total.as_millis() as u64,
                gateway_ms = total.saturating_sub(t.upstream + t.queue).as_millis() as u64,
                queue_ms = t.queue.as_millis() as u64,
                upstream_ms = t.upstream.as_millis() as u64,
                attempts = t.attempts,
                "slow request"
            );
        }
        if self.events.active() {
            self.events.publish(cx.event(status, bytes_out, total));
        }
    }

    /// Counts `attempts` requests sent upstream: from a request's record,
    /// and from job calls (which have no request of their own).
    pub(crate) fn upstream(&self, route: Option<&Route>, attempts: u32) {
        if attempts > 0 {
            self.add(route, |s| &s.upstream_requests, u64::from(attempts));
            self.metrics.upstream_requests(u64::from(attempts));
        }
    }

    /// Adds `n` to one counter of the instance and of the route.
    fn add(&self, route: Option<&Route>, field: fn(&Stats) -> &AtomicU64, n: u64) {
        Stats::add(field(self.stats), n);
        if let Some(r) = route {
            Stats::add(field(&r.stats), n);
        }
    }
}
