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
}

impl Stats {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self, entries: u64, bytes: u64) -> CacheStats {
        let hits = self.hits.load(Relaxed);
        let misses = self.misses.load(Relaxed);
        let lookups = hits + misses;
        CacheStats {
            hits,
            misses,
            stale: self.stale.load(Relaxed),
            revalidated: self.revalidated.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            bypass: self.bypass.load(Relaxed),
            stored: self.stored.load(Relaxed),
            hit_rate: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
            upstream_requests: self.upstream_requests.load(Relaxed),
            upstream_calls_saved: hits,
            upstream_bytes_saved: self.upstream_bytes_saved.load(Relaxed),
            compressed_bytes_saved: self.compressed_bytes_saved.load(Relaxed),
            identity_bytes_served: self.identity_bytes_served.load(Relaxed),
            compressions: self.compressions.load(Relaxed),
            entries,
            bytes,
        }
    }
}
