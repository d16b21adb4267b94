//! The L1 store: an in-process, byte-bounded cache (moka, TinyLFU admission
//! and eviction) from primary key to the variants stored under it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::entry::Entry;
use perfgate_runtime::clock::Clock;

/// Most variants kept under one primary key; the oldest is dropped beyond.
const MAX_VARIANTS: usize = 32;

/// Memory a stored key costs beyond its bytes and its variants': moka's
/// entry, deque and timer nodes, the `Arc`s and the `Variants` vector
/// (measured order of magnitude, rounded up; see `scripts/bench-memory.sh`).
pub const KEY_OVERHEAD: usize = 512;

/// Bytes the hit-for-miss marks may hold (keys plus `MARK_OVERHEAD` each);
/// the least used marks are evicted beyond. A mark only spares a key's
/// requests the coalescing wait, so losing one costs little.
pub const UNSHAREABLE_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Memory a hit-for-miss mark costs beyond its key.
const MARK_OVERHEAD: usize = 128;

/// The variants (per `Vary`) stored under one primary key.
#[derive(Debug, Default)]
pub struct Variants {
    /// Entries, oldest first.
    pub entries: Vec<Arc<Entry>>,
}

impl Variants {
    /// What the store charges for `key` and these variants: the key, every
    /// variant (headers, bodies, compressed bodies, `Vary` values, tags) and
    /// the per-key overhead, so that `cache.max_bytes` bounds them all.
    fn weight(&self, key: &str) -> u32 {
        let w: usize = self.entries.iter().map(|e| e.weight()).sum();
        u32::try_from(w + key.len() + KEY_OVERHEAD).unwrap_or(u32::MAX)
    }
}

struct Retention {
    keep_stale: Duration,
    /// moka's timers run on real time; with a manual clock they expire
    /// nothing and [`MemoryCache::lookup`] hides what the clock says is gone.
    manual: bool,
}

impl moka::Expiry<Arc<str>, Arc<Variants>> for Retention {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Arc<Variants>,
        created_at: Instant,
    ) -> Option<Duration> {
        self.remaining(value, created_at)
    }

    fn expire_after_update(
        &self,
        _key: &Arc<str>,
        value: &Arc<Variants>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(value, updated_at)
    }
}

impl Retention {
    fn remaining(&self, v: &Variants, now: Instant) -> Option<Duration> {
        if self.manual {
            return None;
        }
        Some(
            v.entries
                .iter()
                .map(|e| remaining(e, self.keep_stale, now))
                .max()
                .unwrap_or(Duration::ZERO),
        )
    }
}

/// How much longer the store keeps `e` at `now`.
fn remaining(e: &Entry, keep_stale: Duration, now: Instant) -> Duration {
    e.retention(keep_stale)
        .saturating_sub(now.saturating_duration_since(e.stored_at))
}

/// How long a key stays marked as answering with unshareable responses.
const UNSHAREABLE_TTL: Duration = Duration::from_secs(120);

/// The in-process response cache.
#[derive(Clone)]
pub struct MemoryCache {
    inner: Cache<Arc<str>, Arc<Variants>>,
    /// Keys whose last response could not be stored ("hit-for-miss" in
    /// Varnish terms), each with the time its mark ends: their requests
    /// skip coalescing, since waiting for a response that cannot be shared
    /// only adds latency.
    unshareable: Cache<Arc<str>, Instant>,
    /// Where entry ages and mark lifetimes are read.
    clock: Clock,
    keep_stale: Duration,
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` (approximately) of entries; stale
    /// entries with validators are kept `keep_stale` for revalidation.
    /// Reads the system clock.
    pub fn new(max_bytes: u64, keep_stale: Duration) -> Self {
        Self::with_clock(max_bytes, keep_stale, Clock::system())
    }

    /// Like [`new`](Self::new), reading time from `clock`.
    pub fn with_clock(max_bytes: u64, keep_stale: Duration, clock: Clock) -> Self {
        let inner = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &Arc<str>, v: &Arc<Variants>| v.weight(k))
            .expire_after(Retention {
                keep_stale,
                manual: clock.is_manual(),
            })
            .build();
        // The TTL only bounds how long moka holds a mark; whether it still
        // counts is read from `clock` (see `is_unshareable`).
        let unshareable = Cache::builder()
            .max_capacity(UNSHAREABLE_MAX_BYTES)
            .weigher(|k: &Arc<str>, _: &Instant| {
                u32::try_from(k.len() + MARK_OVERHEAD).unwrap_or(u32::MAX)
            })
            .time_to_live(UNSHAREABLE_TTL)
            .build();
        Self {
            inner,
            unshareable,
            clock,
            keep_stale,
        }
    }

    /// The clock entry ages are read from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The time now by [`clock`](Self::clock).
    #[inline]
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Remembers that `key`'s last response could not be stored.
    pub fn mark_unshareable(&self, key: &str) {
        let until = self.clock.now() + UNSHAREABLE_TTL;
        self.unshareable.insert(Arc::from(key), until);
    }

    /// Forgets the mark (the key's response is storable again).
    pub fn unmark_unshareable(&self, key: &str) {
        self.unshareable.remove(key);
    }

    /// True when `key`'s recent responses could not be stored.
    pub fn is_unshareable(&self, key: &str) -> bool {
        self.unshareable
            .get(key)
            .is_some_and(|until| self.clock.now() < until)
    }

    /// The first variant under `key` that `accept` takes (the caller checks
    /// `Vary` and authorization).
    pub fn lookup(&self, key: &str, accept: impl Fn(&Entry) -> bool) -> Option<Arc<Entry>> {
        let variants = self.inner.get(key)?;
        if self.clock.is_manual() {
            // moka expires nothing under a manual clock (its timers run on
            // real time): hide what the clock says the store no longer keeps.
            let now = self.clock.now();
            return variants
                .entries
                .iter()
                .rev()
                .find(|e| !remaining(e, self.keep_stale, now).is_zero() && accept(e))
                .cloned();
        }
        variants.entries.iter().rev().find(|e| accept(e)).cloned()
    }

    /// Stores `entry` under `key`, replacing the variant with the same
    /// `Vary` values.
    pub fn insert(&self, key: &str, entry: Arc<Entry>) {
        let key: Arc<str> = Arc::from(key);
        let mut entries: Vec<Arc<Entry>> = match self.inner.get(&key) {
            Some(v) => v
                .entries
                .iter()
                .filter(|e| e.vary != entry.vary)
                .cloned()
                .collect(),
            None => Vec::with_capacity(1),
        };
        if entries.len() >= MAX_VARIANTS {
            entries.remove(0);
        }
        entries.push(entry);
        self.inner.insert(key, Arc::new(Variants { entries }));
    }

    /// Re-inserts the variants under `key` so the store re-weighs them
    /// (after a compressed variant was added to an entry).
    pub fn reweigh(&self, key: &str) {
        if let Some(v) = self.inner.get(key) {
            self.inner.insert(Arc::from(key), v);
        }
    }

    /// Removes every key for which `pred(key, variants)` holds; returns how
    /// many were removed. Walks the whole cache: an admin-path operation.
    pub fn remove_matching(&self, pred: impl Fn(&str, &Variants) -> bool) -> u64 {
        let keys: Vec<Arc<str>> = self
            .inner
            .iter()
            .filter(|(k, v)| pred(k, v))
            .map(|(k, _)| (*k).clone())
            .collect();
        let n = keys.len() as u64;
        for k in keys {
            self.inner.invalidate(&k);
        }
        n
    }

    /// Marks every variant under the keys for which `pred` holds as stale
    /// (soft purge); returns how many keys were softened.
    pub fn soften_matching(&self, pred: impl Fn(&str, &Variants) -> bool) -> u64 {
        let now = self.clock.now();
        let hits: Vec<(Arc<str>, Arc<Variants>)> = self
            .inner
            .iter()
            .filter(|(k, v)| pred(k, v))
            .map(|(k, v)| ((*k).clone(), v))
            .collect();
        let n = hits.len() as u64;
        for (k, v) in hits {
            let entries = v
                .entries
                .iter()
                .map(|e| Arc::new(e.softened(now)))
                .collect();
            self.inner.insert(k, Arc::new(Variants { entries }));
        }
        n
    }

    /// The primary key whose `url_hash` is `hash`, if stored here.
    pub fn key_for_hash(&self, hash: &str) -> Option<String> {
        self.inner
            .iter()
            .find(|(k, _)| crate::key::url_hash(k) == hash)
            .map(|(k, _)| k.to_string())
    }

    /// Removes every variant under `key`; true if something was there.
    pub fn remove(&self, key: &str) -> bool {
        self.inner.remove(key).is_some()
    }

    /// Removes everything.
    pub fn clear(&self) {
        self.inner.invalidate_all();
        self.unshareable.invalidate_all();
    }

    /// Number of primary keys stored (approximate until pending work runs).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Bytes held (approximate until pending work runs).
    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }

    /// Bytes held by the hit-for-miss marks (approximate until pending
    /// work runs); at most [`UNSHAREABLE_MAX_BYTES`] once it has.
    pub fn unshareable_bytes(&self) -> u64 {
        self.unshareable.weighted_size()
    }

    /// Applies pending maintenance so counts are exact (tests, stats).
    pub fn sync(&self) {
        self.inner.run_pending_tasks();
        self.unshareable.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryParts;
    use crate::policy::Freshness;
    use crate::vary::VaryKey;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

    fn entry(headers: HeaderMap, body: usize, vary: VaryKey) -> Arc<Entry> {
        Arc::new(Entry::new(
            EntryParts {
                status: StatusCode::OK,
                headers,
                body: Bytes::from(vec![b'x'; body]),
                upstream_encoded: false,
                compressible: false,
                vary,
                freshness: Freshness::for_tests(Duration::from_secs(60)),
                auth_reusable: false,
                tags: vec![Arc::from("tag")],
            },
            Instant::now(),
        ))
    }

    /// Issue #11 item 7: the key, the header block and the `Vary` values are
    /// charged to `cache.max_bytes`, not only the body.
    #[test]
    fn the_weight_counts_key_headers_and_vary_values() {
        let cache = MemoryCache::new(1 << 30, Duration::ZERO);
        let key = format!("GET http://h/p?q={}", "k".repeat(7_000));
        let mut headers = HeaderMap::new();
        headers.insert("x-big", HeaderValue::from_str(&"h".repeat(3_000)).unwrap());
        let vary = VaryKey::from_entries(vec![(
            HeaderName::from_static("x-tenant"),
            Some(HeaderValue::from_str(&"v".repeat(2_000)).unwrap()),
        )]);
        cache.insert(&key, entry(headers, 100, vary));
        cache.sync();
        let w = cache.weighted_size();
        assert!(
            w >= (7_000 + 3_000 + 2_000 + 100 + KEY_OVERHEAD) as u64,
            "weighed {w} bytes"
        );
    }

    /// Many stored keys never hold more than `max_bytes` by the weigher's
    /// count, keys included.
    #[test]
    fn long_keys_are_bounded_by_max_bytes() {
        let max = 4 * 1024 * 1024;
        let cache = MemoryCache::new(max, Duration::ZERO);
        for i in 0..2_000 {
            let key = format!("GET http://h/p?{i}&q={}", "k".repeat(7_000));
            cache.insert(&key, entry(HeaderMap::new(), 16, VaryKey::default()));
        }
        cache.sync();
        assert!(cache.weighted_size() <= max, "{}", cache.weighted_size());
        // 2,000 × ~7.6 KB would be ~15 MB: most were evicted.
        assert!(cache.entry_count() < 600, "{}", cache.entry_count());
    }

    /// A mark lasts `UNSHAREABLE_TTL` by the cache's clock.
    #[test]
    fn hit_for_miss_marks_end_by_the_clock() {
        let time = perfgate_runtime::clock::ManualClock::new();
        let cache = MemoryCache::with_clock(1 << 20, Duration::ZERO, time.clock());
        cache.mark_unshareable("k");
        time.advance(UNSHAREABLE_TTL - Duration::from_millis(1));
        assert!(cache.is_unshareable("k"));
        time.advance(Duration::from_millis(1));
        assert!(!cache.is_unshareable("k"));
    }

    /// Under a manual clock an entry is found until its retention has
    /// passed by that clock, however long it takes in real time.
    #[test]
    fn entries_are_kept_until_their_retention_by_the_clock() {
        let time = perfgate_runtime::clock::ManualClock::new();
        let cache = MemoryCache::with_clock(1 << 20, Duration::ZERO, time.clock());
        let e = Arc::new(Entry::new(
            EntryParts {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"x"),
                upstream_encoded: false,
                compressible: false,
                vary: VaryKey::default(),
                freshness: Freshness::for_tests(Duration::from_secs(60)),
                auth_reusable: false,
                tags: vec![],
            },
            cache.now(),
        ));
        let retention = e.retention(Duration::ZERO);
        cache.insert("k", e);
        time.advance(retention - Duration::from_millis(1));
        assert!(cache.lookup("k", |_| true).is_some());
        time.advance(Duration::from_millis(1));
        assert!(cache.lookup("k", |_| true).is_none());
    }

    /// The hit-for-miss marks stay within their byte budget however many
    /// long keys are marked.
    #[test]
    fn hit_for_miss_marks_stay_within_their_budget() {
        let cache = MemoryCache::new(1 << 20, Duration::ZERO);
        let pad = "k".repeat(7_000);
        for i in 0..3_000 {
            cache.mark_unshareable(&format!("GET http://h/p?{i}&q={pad}"));
        }
        cache.sync();
        assert!(
            cache.unshareable_bytes() <= UNSHAREABLE_MAX_BYTES,
            "{}",
            cache.unshareable_bytes()
        );
        assert!(cache.unshareable_bytes() > UNSHAREABLE_MAX_BYTES / 2);
    }
}
