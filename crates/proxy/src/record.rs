//! The last phase of every request: its [`RequestEvent`] feeds the admin
//! statistics and the Prometheus metrics (nothing else counts per-request
//! outcomes), the slow-request log, and then the [`EventSink`]s (access log,
//! traces, analytics), which run off the request path in one background
//! task.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use perfgate_observe::{CacheEvent, CacheOutcomes, EventSink, RequestEvent};
use tokio::sync::mpsc;

use crate::context::RequestContext;
use crate::gateway::Gateway;
use crate::route::Route;
use crate::stats::Stats;

/// Events waiting for the sinks; past this many, new events are dropped
/// (and counted) rather than slow the requests down or grow without bound.
pub const EVENT_QUEUE: usize = 8192;

/// Hands request events to the sinks, off the request path.
#[derive(Default)]
pub struct EventBus {
    tx: OnceLock<mpsc::Sender<RequestEvent>>,
    dropped: AtomicU64,
}

impl EventBus {
    /// Starts the task that feeds `sinks`, in order, every event published
    /// from now on. Only the first call takes effect (false after that).
    pub fn subscribe(&self, sinks: Vec<Arc<dyn EventSink>>) -> bool {
        let (tx, mut rx) = mpsc::channel::<RequestEvent>(EVENT_QUEUE);
        if self.tx.set(tx).is_err() {
            return false;
        }
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                for s in &sinks {
                    s.on_event(&ev);
                }
            }
        });
        true
    }

    /// Queues `ev` for the sinks (nothing to do without any).
    pub fn publish(&self, ev: RequestEvent) {
        if let Some(tx) = self.tx.get()
            && tx.try_send(ev).is_err()
        {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Events dropped because the sinks fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Whether any sink listens.
    pub fn active(&self) -> bool {
        self.tx.get().is_some()
    }
}

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
