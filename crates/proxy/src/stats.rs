//! Cache statistics kept as plain atomics (cheap on the hot path) and read
//! by the admin API and the demo.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Running counters.
#[derive(Default)]
pub struct Stats {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) revalidated: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) bypass: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) upstream_requests: AtomicU64,
    pub(crate) upstream_bytes_saved: AtomicU64,
    pub(crate) compressed_bytes_saved: AtomicU64,
    pub(crate) identity_bytes_served: AtomicU64,
    pub(crate) compressions: AtomicU64,
    pub(crate) l2_hits: AtomicU64,
    pub(crate) l2_misses: AtomicU64,
    pub(crate) l2_errors: AtomicU64,
}

/// A snapshot of the cache statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheStats {
    /// Answered from the cache without contacting the upstream (including
    /// coalesced waiters and stale-while-revalidate).
    pub hits: u64,
    /// Fetched from the upstream for the cache.
    pub misses: u64,
    /// Served stale (stale-while-revalidate or stale-if-error).
    pub stale: u64,
    /// Revalidated with a 304.
    pub revalidated: u64,
    /// Waited for another request's fetch.
    pub coalesced: u64,
    /// Not cacheable or bypassed.
    pub bypass: u64,
    /// Responses stored.
    pub stored: u64,
    /// `hits / (hits + misses)`, 0 when there was no lookup.
    pub hit_rate: f64,
    /// Requests sent upstream.
    pub upstream_requests: u64,
    /// Upstream requests avoided by hits and coalescing.
    pub upstream_calls_saved: u64,
    /// Body bytes that did not have to come from the upstream.
    pub upstream_bytes_saved: u64,
    /// Bytes not sent thanks to compression.
    pub compressed_bytes_saved: u64,
    /// Uncompressed size of every body served from the cache.
    pub identity_bytes_served: u64,
    /// Compressed variants produced (each at most once per object).
    pub compressions: u64,
    /// Objects in L1.
    pub entries: u64,
    /// Bytes held by L1.
    pub bytes: u64,
    /// Per layer.
    pub layers: Layers,
    /// Per route.
    pub routes: Vec<RouteCacheStats>,
}

/// Statistics per cache layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Layers {
    /// The in-process cache.
    pub l1: L1Stats,
    /// The shared Redis cache.
    pub l2: L2Stats,
}

/// L1 figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct L1Stats {
    /// Answered from L1.
    pub hits: u64,
    /// Not answered from L1.
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_rate: f64,
    /// Objects held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
}

/// L2 figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct L2Stats {
    /// `disabled`, `connecting`, `up` or `degraded`.
    pub state: &'static str,
    /// L1 misses answered from L2.
    pub hits: u64,
    /// L1 misses L2 could not answer.
    pub misses: u64,
    /// Failed or timed-out calls.
    pub errors: u64,
    /// Entries written.
    pub writes: u64,
    /// `hits / (hits + misses)`.
    pub hit_rate: f64,
}

/// Cache figures of one route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteCacheStats {
    /// Route name.
    pub route: String,
    /// Answered without an upstream call.
    pub hits: u64,
    /// Needed an upstream call.
    pub misses: u64,
    /// `hits / (hits + misses)`.
    pub hit_rate: f64,
    /// Served stale.
    pub stale: u64,
    /// Waited for another request's fetch.
    pub coalesced: u64,
    /// Responses stored.
    pub stored: u64,
    /// Requests that bypassed the cache.
    pub bypass: u64,
    /// Requests sent upstream.
    pub upstream_requests: u64,
    /// Body bytes that did not have to come from the upstream.
    pub upstream_bytes_saved: u64,
}

fn rate(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    }
}

impl Stats {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// `l2_writes` and the L2 failures outside requests (`l2_errors`) are
    /// counted by the tiers, outside `Stats`.
    pub(crate) fn snapshot(
        &self,
        entries: u64,
        bytes: u64,
        l2_writes: u64,
        l2_errors: u64,
    ) -> CacheStats {
        let hits = self.hits.load(Relaxed);
        let misses = self.misses.load(Relaxed);
        CacheStats {
            hits,
            misses,
            stale: self.stale.load(Relaxed),
            revalidated: self.revalidated.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            bypass: self.bypass.load(Relaxed),
            stored: self.stored.load(Relaxed),
            hit_rate: rate(hits, misses),
            upstream_requests: self.upstream_requests.load(Relaxed),
            upstream_calls_saved: hits,
            upstream_bytes_saved: self.upstream_bytes_saved.load(Relaxed),
            compressed_bytes_saved: self.compressed_bytes_saved.load(Relaxed),
            identity_bytes_served: self.identity_bytes_served.load(Relaxed),
            compressions: self.compressions.load(Relaxed),
            entries,
            bytes,
            layers: Layers {
                l1: L1Stats {
                    hits,
                    misses,
                    hit_rate: rate(hits, misses),
                    entries,
                    bytes,
                },
                l2: {
                    let (h, m) = (self.l2_hits.load(Relaxed), self.l2_misses.load(Relaxed));
                    L2Stats {
                        state: "disabled",
                        hits: h,
                        misses: m,
                        errors: self.l2_errors.load(Relaxed) + l2_errors,
                        writes: l2_writes,
                        hit_rate: rate(h, m),
                    }
                },
            },
            routes: Vec::new(),
        }
    }

    pub(crate) fn route_snapshot(&self, route: &str) -> RouteCacheStats {
        let (hits, misses) = (self.hits.load(Relaxed), self.misses.load(Relaxed));
        RouteCacheStats {
            route: route.to_string(),
            hits,
            misses,
            hit_rate: rate(hits, misses),
            stale: self.stale.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            stored: self.stored.load(Relaxed),
            bypass: self.bypass.load(Relaxed),
            upstream_requests: self.upstream_requests.load(Relaxed),
            upstream_bytes_saved: self.upstream_bytes_saved.load(Relaxed),
        }
    }
}
