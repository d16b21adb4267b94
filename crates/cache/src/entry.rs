//! A stored response: headers, the body as received, and the compressed
//! variants produced from it (each at most once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::OnceCell;

use crate::cache_control::CacheControl;
use crate::compress::{Compressor, Encoding};
use crate::policy::{Freshness, Reuse, current_age, explicitly_shared, reuse};
use crate::vary::VaryKey;

/// Memory an entry costs beyond its headers and bodies: the struct, the
/// `HeaderMap`'s tables, the `Arc`.
const ENTRY_OVERHEAD: usize = 384;

/// One cached response variant.
#[derive(Debug)]
pub struct Entry {
    /// Response status.
    pub status: StatusCode,
    /// Stored response headers, without hop-by-hop fields, `Content-Length`
    /// and `Set-Cookie`.
    pub headers: HeaderMap,
    /// The body exactly as received from the upstream.
    pub body: Bytes,
    /// True when the upstream sent the body with a `Content-Encoding`: it is
    /// passed through as is and never recompressed.
    pub upstream_encoded: bool,
    /// True when perfgate may negotiate a compressed variant of this body.
    pub compressible: bool,
    /// Request header values this variant was selected with (`Vary`).
    pub vary: VaryKey,
    /// Freshness computed when the response was stored or revalidated.
    pub freshness: Freshness,
    /// When the entry was stored (monotonic clock, for `Age`).
    pub stored_at: Instant,
    /// Validator for revalidation and client conditionals.
    pub etag: Option<HeaderValue>,
    /// Validator for revalidation and client conditionals.
    pub last_modified: Option<HeaderValue>,
    /// RFC 9111 §3.5: may answer requests that carry `Authorization`.
    pub auth_reusable: bool,
    /// The stored headers say `public` or `s-maxage`: may answer requests
    /// that carry `Cookie` (derived from the headers, so every tier agrees).
    pub explicitly_shared: bool,
    /// Invalidation tags (route tags and the upstream's `Surrogate-Key`/`Cache-Tag`).
    pub tags: Vec<Arc<str>>,
    /// Compressed variants, indexed by `Encoding::index() - 1`; `None`
    /// inside means compression did not make the body smaller.
    /// Each is produced once, off the request threads; concurrent requests
    /// for one wait for that compression.
    encoded: [OnceCell<Option<Bytes>>; 3],
    /// Set once a background refresh was started, so it starts only once.
    refreshing: AtomicBool,
}

/// Everything needed to build an [`Entry`].
pub struct EntryParts {
    /// Response status.
    pub status: StatusCode,
    /// Stored headers (already cleaned by the caller).
    pub headers: HeaderMap,
    /// Body as received.
    pub body: Bytes,
    /// The body carries an upstream `Content-Encoding`.
    pub upstream_encoded: bool,
    /// Perfgate may compress this body.
    pub compressible: bool,
    /// Selecting request header values.
    pub vary: VaryKey,
    /// Computed freshness.
    pub freshness: Freshness,
    /// May answer requests with `Authorization`.
    pub auth_reusable: bool,
    /// Invalidation tags.
    pub tags: Vec<Arc<str>>,
}

impl Entry {
    /// Builds an entry stored now.
    pub fn new(mut p: EntryParts, now: Instant) -> Self {
        // Stored headers outlive the connection they came from: copy them
        // out of hyper's read buffer (see `vary::owned`).
        crate::vary::own_values(&mut p.headers);
        let etag = p.headers.get(http::header::ETAG).cloned();
        let last_modified = p.headers.get(http::header::LAST_MODIFIED).cloned();
        let explicitly_shared = explicitly_shared(&CacheControl::from_headers(&p.headers));
        Self {
            status: p.status,
            headers: p.headers,
            body: p.body,
            upstream_encoded: p.upstream_encoded,
            compressible: p.compressible && !p.upstream_encoded,
            vary: p.vary,
            freshness: p.freshness,
            stored_at: now,
            etag,
            last_modified,
            auth_reusable: p.auth_reusable,
            explicitly_shared,
            tags: p.tags,
            encoded: Default::default(),
            refreshing: AtomicBool::new(false),
        }
    }

    /// Rebuilds an entry read back from another tier: `variants` are the
    /// compressed bodies that were already produced (each `(encoding, body)`).
    pub fn restore(p: EntryParts, variants: Vec<(Encoding, Bytes)>, now: Instant) -> Self {
        let entry = Self::new(p, now);
        for (enc, body) in variants {
            if enc != Encoding::Identity {
                let _ = entry.encoded[enc.index() - 1].set(Some(body));
            }
        }
        entry
    }

    /// The compressed bodies produced so far (for copying to another tier).
    pub fn variants(&self) -> Vec<(Encoding, Bytes)> {
        Encoding::COMPRESSED
            .iter()
            .filter_map(|enc| {
                self.encoded[enc.index() - 1]
                    .get()
                    .and_then(|v| v.clone())
                    .map(|b| (*enc, b))
            })
            .collect()
    }

    /// A copy that is stale from now on but keeps its stale windows (soft
    /// purge: the next request revalidates, stale-while-revalidate still
    /// applies).
    pub fn softened(&self, now: Instant) -> Self {
        let freshness = Freshness {
            lifetime: Duration::ZERO,
            initial_age: Duration::ZERO,
            ..self.freshness
        };
        self.revalidated(self.headers.clone(), freshness, now)
    }

    /// A copy refreshed by a `304 Not Modified`: new headers and freshness,
    /// the same body and the compressed variants already produced.
    pub fn revalidated(&self, mut headers: HeaderMap, freshness: Freshness, now: Instant) -> Self {
        crate::vary::own_values(&mut headers);
        let etag = headers.get(http::header::ETAG).cloned();
        let last_modified = headers.get(http::header::LAST_MODIFIED).cloned();
        let explicitly_shared = explicitly_shared(&CacheControl::from_headers(&headers));
        let encoded: [OnceCell<Option<Bytes>>; 3] = Default::default();
        for (new, old) in encoded.iter().zip(&self.encoded) {
            if let Some(v) = old.get() {
                let _ = new.set(v.clone());
            }
        }
        Self {
            status: self.status,
            headers,
            body: self.body.clone(),
            upstream_encoded: self.upstream_encoded,
            compressible: self.compressible,
            vary: self.vary.clone(),
            freshness,
            stored_at: now,
            etag,
            last_modified,
            auth_reusable: self.auth_reusable,
            explicitly_shared,
            tags: self.tags.clone(),
            encoded,
            refreshing: AtomicBool::new(false),
        }
    }

    /// The entry's current age (RFC 9111 §4.2.3).
    pub fn age(&self, now: Instant) -> Duration {
        current_age(&self.freshness, self.stored_at, now)
    }

    /// How the entry may be used at `now` (request directives are not
    /// honoured: like nginx and Varnish, a client cannot force origin traffic
    /// with `no-cache`; see ARCHITECTURE.md).
    pub fn reuse(&self, now: Instant) -> Reuse {
        reuse(&self.freshness, self.age(now), &CacheControl::default())
    }

    /// True when a stale copy may be served because the upstream failed.
    pub fn usable_if_error(&self, now: Instant) -> bool {
        !self.freshness.no_cache && self.freshness.usable_if_error(self.age(now))
    }

    /// True when this copy may stand in for the upstream while the route's
    /// circuit breaker is open, however stale: any copy the store still
    /// holds (within its stale windows, or kept for `cache.keep_stale`)
    /// unless the response forbade serving it stale (`no-cache`,
    /// `must-revalidate`, `proxy-revalidate`, or `s-maxage` without an
    /// explicit `stale-while-revalidate`/`stale-if-error`).
    pub fn usable_while_open(&self) -> bool {
        !self.freshness.no_cache && !self.freshness.must_revalidate
    }

    /// True when the entry has a validator to revalidate with.
    pub fn has_validators(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }

    /// How long the store should keep this entry: its freshness, plus the
    /// windows in which a stale copy is still useful.
    pub fn retention(&self, keep_stale: Duration) -> Duration {
        let f = &self.freshness;
        if self.has_validators() {
            let window = f
                .stale_while_revalidate
                .max(f.stale_if_error)
                .max(keep_stale);
            f.lifetime
                .saturating_add(window)
                .saturating_sub(f.initial_age)
        } else {
            f.time_to_live()
        }
    }

    /// Claims the one background refresh of this entry; true for the caller
    /// that should run it.
    pub fn try_start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// The body in `enc` if that variant is settled already (no waiting):
    /// the compressed body, or identity when compression did not help, or
    /// when `enc` is identity or the entry is not compressible.
    pub fn ready_body(&self, enc: Encoding) -> Option<(Encoding, Bytes)> {
        if enc == Encoding::Identity || !self.compressible {
            return Some((Encoding::Identity, self.body.clone()));
        }
        self.encoded[enc.index() - 1]
            .get()
            .map(|v| self.settled(enc, v))
    }

    fn settled(&self, enc: Encoding, v: &Option<Bytes>) -> (Encoding, Bytes) {
        match v {
            Some(b) => (enc, b.clone()),
            None => (Encoding::Identity, self.body.clone()),
        }
    }

    /// The body in `enc`, compressed on first use on the blocking pool
    /// ([`Compressor::compress_off_thread`]); concurrent callers for the
    /// same variant wait for that one compression. Returns the identity body
    /// when `enc` is identity, the entry is not compressible, compression did
    /// not help, or every compression slot is busy (then nothing is settled
    /// and a later request tries again). The flag says whether this call
    /// produced the variant (the caller then re-weighs the entry).
    pub async fn body_for(
        &self,
        enc: Encoding,
        compressor: &Compressor,
    ) -> (Encoding, Bytes, bool) {
        if let Some((enc, body)) = self.ready_body(enc) {
            return (enc, body, false);
        }
        let slot = &self.encoded[enc.index() - 1];
        let produced = AtomicBool::new(false);
        let v = slot
            .get_or_try_init(|| async {
                let out = compressor.compress_off_thread(enc, self.body.clone()).await;
                produced.store(out.is_ok(), Ordering::Relaxed);
                out
            })
            .await;
        match v {
            Ok(v) => {
                let (enc, body) = self.settled(enc, v);
                (enc, body, produced.load(Ordering::Relaxed))
            }
            Err(_busy) => (Encoding::Identity, self.body.clone(), false),
        }
    }

    /// Approximate memory held by the entry, in bytes.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        let encoded: usize = self
            .encoded
            .iter()
            .filter_map(|s| s.get().and_then(|v| v.as_ref()).map(Bytes::len))
            .sum();
        let vary: usize = self
            .vary
            .entries()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.as_ref().map_or(0, HeaderValue::len) + 48)
            .sum();
        let tags: usize = self.tags.iter().map(|t| t.len() + 32).sum();
        ENTRY_OVERHEAD + headers + vary + tags + self.body.len() + encoded
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use perfgate_config::CompressionConfig;

    use super::*;
    use crate::policy::Freshness;

    fn entry(body: &str) -> Arc<Entry> {
        Arc::new(Entry::new(
            EntryParts {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from(body.to_string()),
                upstream_encoded: false,
                compressible: true,
                vary: Default::default(),
                freshness: Freshness::for_tests(Duration::from_secs(60)),
                auth_reusable: false,
                tags: Vec::new(),
            },
            Instant::now(),
        ))
    }

    /// Concurrent requests for one variant share one compression (run on
    /// the blocking pool), and every one gets the compressed body.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_compression() {
        let e = entry(&"{\"id\":1,\"name\":\"event\"}".repeat(2000));
        let compressor = Arc::new(Compressor::new(&CompressionConfig::default()));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (e, c) = (e.clone(), compressor.clone());
                tokio::spawn(async move { e.body_for(Encoding::Brotli, &c).await })
            })
            .collect();
        let mut produced = 0;
        for t in tasks {
            let (enc, body, p) = t.await.unwrap();
            assert_eq!(enc, Encoding::Brotli);
            assert!(body.len() < e.body.len());
            produced += usize::from(p);
        }
        assert_eq!(produced, 1, "one compression for sixteen requests");
        assert!(e.ready_body(Encoding::Brotli).is_some());
    }

    /// With every compression slot busy, a request gets identity at once,
    /// and nothing is settled: a later request compresses.
    #[tokio::test]
    async fn busy_compressor_serves_identity_without_settling() {
        let e = entry(&"abcdefgh".repeat(500));
        let compressor = Compressor::new(&CompressionConfig {
            max_concurrent: 1,
            ..CompressionConfig::default()
        });
        let held = compressor
            .hold_compression_slot_for_tests()
            .unwrap_or_else(|| panic!("no free compression slot"));
        let (enc, body, produced) = e.body_for(Encoding::Gzip, &compressor).await;
        assert_eq!((enc, produced), (Encoding::Identity, false));
        assert_eq!(body, e.body);
        assert!(e.ready_body(Encoding::Gzip).is_none(), "not settled");
        drop(held);
        let (enc, _, produced) = e.body_for(Encoding::Gzip, &compressor).await;
        assert_eq!((enc, produced), (Encoding::Gzip, true));
    }
}
