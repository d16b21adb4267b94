//! The last phase of every request: its [`RequestEvent`] feeds the admin
//! statistics and the Prometheus metrics (nothing else counts per-request
//! outcomes), the slow-request log, and then the [`EventSink`]s (access log,
//! traces, analytics), which run off the request path in one background
//! task.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use perfgate_observe::{CacheEvent, CacheOutcomes};

use crate::context::{L2Outcome, RequestContext};
use crate::gateway::Gateway;
use crate::route::Route;
use crate::stats::Stats;

/// Adds one request's cache outcomes to the instance's and the route's
/// statistics.
pub(crate) fn count(stats: &Stats, route: Option<&Route>, cache: CacheOutcomes) {
    for e in cache.iter() {
        let field: fn(&Stats) -> &AtomicU64 = match e {
            CacheEvent::miss => |s| &s.misses,
            CacheEvent::stale => |s| &s.stale,
            CacheEvent::revalidated => |s| &s.revalidated,
            CacheEvent::coalesced => |s| &s.coalesced,
            CacheEvent::bypass => |s| &s.bypass,
            CacheEvent::hit => continue,
        };
        Stats::inc(field(stats));
        if let Some(r) = route {
            Stats::inc(field(&r.stats));
        }
    }
}

/// Counts `attempts` requests sent upstream, for the instance and the
/// route: from a request's record, and from job calls (which have no
/// request of their own).
pub(crate) fn count_upstream(
    stats: &Stats,
    route: Option<&Route>,
    metrics: &perfgate_observe::Metrics,
    attempts: u32,
) {
    if attempts == 0 {
        return;
    }
    let n = u64::from(attempts);
    Stats::add(&stats.upstream_requests, n);
    if let Some(r) = route {
        Stats::add(&r.stats.upstream_requests, n);
    }
    metrics.upstream_requests(n);
}

impl Gateway {
    /// Records a finished request: statistics, metrics, the slow-request
    /// log, and the sinks. Statistics and metrics read the fields the event
    /// is made of; the event itself is built only when a sink listens (it
    /// is a few hundred bytes to fill and move: callgrind showed it on the
    /// hit path).
    pub(crate) fn record(&self, cx: &RequestContext, status: u16, bytes_out: u64, total: Duration) {
        let route = cx.route.as_deref();
        let cache = cx.timing.cache;
        count(&self.stats, route, cache);
        count_upstream(&self.stats, route, &self.metrics, cx.timing.attempts);
        let saved = &cx.timing;
        if saved.saved_calls > 0 {
            let n = u64::from(saved.saved_calls);
            Stats::add(&self.stats.hits, n);
            Stats::add(&self.stats.upstream_bytes_saved, saved.bytes_saved);
            if let Some(r) = route {
                Stats::add(&r.stats.hits, n);
                Stats::add(&r.stats.upstream_bytes_saved, saved.bytes_saved);
            }
        }
        match saved.l2_outcome {
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
        for e in cache.iter() {
            self.metrics.cache_event("l1", e);
            if e == CacheEvent::coalesced {
                self.metrics.coalesced_waiter();
            }
        }
        if let Some(r) = route {
            r.metrics.record(status, total.as_secs_f64());
        }
        if total >= cx.slow {
            let t = &cx.timing;
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
}
