//! The cache tiers of one instance: L1 (in memory) and L2 (Redis). L2
//! lookups and promotion to L1, L2 writes off the hot path, invalidation
//! across tiers and instances, and the fan-out listener. Only
//! `perfgate_redis` talks to Redis and [`crate::redis`] owns the L2
//! entries; this module decides when. The proxy asks it from its cache
//! phase and its invalidation entry points.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use perfgate_observe::{InvalidationSource, Metrics};
use perfgate_runtime::Supervisor;
use perfgate_runtime::clock::Clock;

use crate::entry::Entry;
use crate::invalidate::{InvalidateReport, Targets};
use crate::key::key_target;
use crate::memory::{MemoryCache, Variants};
use crate::policy::Reuse;
use crate::redis::{InvalidationMsg, L2, L2Error, L2Event, L2Health};

/// What keeps an authenticated response of a `shared` route apart from the
/// public one: its key is the public key plus this suffix.
pub const AUTHENTICATED_SUFFIX: &str = "\nauth";

/// What L2 had for a key.
pub enum L2Lookup {
    /// A fresh variant, now also in L1.
    Fresh(Arc<Entry>),
    /// Only a stale variant: a base for revalidation.
    Stale(Arc<Entry>),
    /// Nothing usable (or L2 unavailable).
    Nothing,
}

/// What one L2 lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L2Outcome {
    /// A fresh variant this request may use.
    Hit,
    /// Nothing usable, or only a stale base for revalidation.
    Miss,
    /// Redis failed or timed out.
    Error,
}

/// Where a request's L2 lookups went.
#[derive(Debug, Default, Clone, Copy)]
pub struct L2Spent {
    /// Time waiting for L2.
    pub time: Duration,
    /// What the last lookup found.
    pub outcome: Option<L2Outcome>,
}

/// L1 and L2 of this instance, and what it needs to keep them in step
/// with the other instances.
pub struct Tiers {
    /// L1; `None` when the response cache is off.
    pub l1: Option<MemoryCache>,
    /// L2; `None` without Redis.
    pub l2: Option<L2>,
    /// Where entry ages are read (tests pass a manual clock).
    clock: Clock,
    /// How long stale entries are kept (for revalidation and errors).
    keep_stale: Duration,
    l2_max_object_bytes: u64,
    l2_writes: Arc<AtomicU64>,
    /// L2 failures outside a request's lookup (invalidations, purges).
    l2_errors: AtomicU64,
    /// Fan-out messages from this instance carry it (and are ignored here).
    instance_id: String,
    /// An invalidation could not be fanned out: ask every instance to flush
    /// its L1 once Redis is back.
    flush_pending: AtomicBool,
    /// Some route keys entries per credential (`key\nuser=…`) or keeps
    /// authenticated entries apart (`key\nauth`): exact keys need the walk.
    suffixed_keys: bool,
    metrics: Arc<Metrics>,
}

/// How a [`Tiers`] is set up.
pub struct TierSettings {
    pub keep_stale: Duration,
    pub l2_max_object_bytes: u64,
    pub instance_id: String,
    /// Some route keys entries per credential or per authentication.
    pub suffixed_keys: bool,
}

impl Tiers {
    pub fn new(
        l1: Option<MemoryCache>,
        l2: Option<L2>,
        settings: TierSettings,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Tiers {
            l1,
            l2,
            clock,
            keep_stale: settings.keep_stale,
            l2_max_object_bytes: settings.l2_max_object_bytes,
            l2_writes: Arc::default(),
            l2_errors: AtomicU64::new(0),
            instance_id: settings.instance_id,
            flush_pending: AtomicBool::new(false),
            suffixed_keys: settings.suffixed_keys,
            metrics,
        }
    }

    /// The L2's state, when one is configured.
    pub fn l2_health(&self) -> Option<L2Health> {
        self.l2.as_ref().map(|l2| l2.health())
    }

    /// Entries written to L2 so far.
    pub fn l2_writes(&self) -> u64 {
        self.l2_writes.load(Ordering::Relaxed)
    }

    /// L2 failures outside requests' lookups (those are counted with the
    /// request).
    pub fn l2_errors(&self) -> u64 {
        self.l2_errors.load(Ordering::Relaxed)
    }

    /// Looks `key` up in L2 (under its deadline); a fresh variant usable by
    /// this request is promoted to L1 with its remaining freshness.
    /// `usable` is the reader's own check of the variant L2 chose. The
    /// time spent and the outcome go into `spent` (counted when the
    /// request is recorded).
    pub async fn l2_lookup(
        &self,
        key: &str,
        headers: &HeaderMap,
        usable: impl FnOnce(&Entry) -> bool,
        spent: &mut L2Spent,
    ) -> L2Lookup {
        let Some(l2) = &self.l2 else {
            return L2Lookup::Nothing;
        };
        let started = Instant::now();
        let found = l2.get(key, headers).await;
        spent.time += started.elapsed();
        let found = match found {
            Ok(e) => e,
            Err(e) => {
                if !matches!(e, L2Error::Skipped) {
                    spent.outcome = Some(L2Outcome::Error);
                    tracing::debug!(error = %e, "L2 call failed; going on without it");
                }
                return L2Lookup::Nothing;
            }
        };
        let now = self.clock.now();
        // The digest chose the variant; the reader's own check confirms it.
        let usable = found.filter(|e| usable(e));
        let Some(entry) = usable.map(Arc::new) else {
            spent.outcome = Some(L2Outcome::Miss);
            return L2Lookup::Nothing;
        };
        if matches!(entry.reuse(now), Reuse::Fresh) {
            if let Some(cache) = &self.l1 {
                cache.insert(key, entry.clone());
            }
            spent.outcome = Some(L2Outcome::Hit);
            L2Lookup::Fresh(entry)
        } else {
            spent.outcome = Some(L2Outcome::Miss);
            L2Lookup::Stale(entry)
        }
    }

    fn l2_failed(&self, e: &L2Error) {
        if !matches!(e, L2Error::Skipped) {
            self.l2_errors.fetch_add(1, Ordering::Relaxed);
            self.metrics.l2_error();
            tracing::debug!(error = %e, "L2 call failed; going on without it");
        }
    }

    /// Copies an entry to L2 in the background (never on the request's time).
    pub fn l2_store(&self, key: &str, entry: &Arc<Entry>) {
        let Some(l2) = self.l2.clone() else { return };
        if entry.body.len() as u64 > self.l2_max_object_bytes {
            return;
        }
        let (key, entry) = (key.to_string(), entry.clone());
        let retention = entry.retention(self.keep_stale);
        let metrics = self.metrics.clone();
        let writes = self.l2_writes.clone();
        tokio::spawn(async move {
            match l2.put(&key, &entry, retention).await {
                Ok(()) => {
                    writes.fetch_add(1, Ordering::Relaxed);
                    metrics.l2_write();
                }
                Err(L2Error::Skipped) => {}
                Err(e) => {
                    metrics.l2_error();
                    tracing::debug!(error = %e, "L2 write failed");
                }
            }
        });
    }

    /// Applies targets to this instance's L1; returns the keys touched.
    pub fn apply_l1(&self, t: &Targets) -> u64 {
        let Some(cache) = &self.l1 else { return 0 };
        if t.is_empty() {
            return 0;
        }
        // Exact keys are removed directly; a walk over every entry is only
        // needed for paths, prefixes, tags, or per-user keys (`key\nuser=…`).
        let exact_only = t.prefixes.is_empty()
            && t.tags.is_empty()
            && !self.suffixed_keys
            && t.keys.iter().all(|k| !k.starts_with('/'));
        if exact_only && !t.soft {
            return t.keys.iter().filter(|k| cache.remove(k)).count() as u64;
        }
        let pred = |k: &str, v: &Variants| t.matches(k, v);
        if t.soft {
            cache.soften_matching(pred)
        } else {
            cache.remove_matching(pred)
        }
    }

    /// The shared part of an invalidation: L2 and the other instances.
    pub async fn invalidate_shared(
        &self,
        targets: Targets,
        source: InvalidationSource,
    ) -> InvalidateReport {
        self.metrics.invalidation(source);
        let mut report = InvalidateReport {
            l1_removed: 0,
            l2_removed: 0,
            soft: targets.soft,
            fanout: "local-only",
        };
        let Some(l2) = &self.l2 else {
            return report;
        };
        match self.l2_keys(&targets).await {
            Ok(keys) if !keys.is_empty() => {
                let done = if targets.soft {
                    l2.soften(&keys).await
                } else {
                    l2.remove(&keys).await
                };
                match done {
                    Ok(n) => report.l2_removed = n,
                    Err(e) => self.l2_failed(&e),
                }
            }
            Ok(_) => {}
            Err(e) => self.l2_failed(&e),
        }
        let msg = InvalidationMsg {
            from: self.instance_id.clone(),
            keys: targets.keys,
            prefixes: targets.prefixes,
            tags: targets.tags,
            soft: targets.soft,
            flush: false,
        };
        match l2.publish(&msg).await {
            Ok(()) => report.fanout = "sent",
            Err(e) => {
                // Other instances could not be told: once Redis is back, ask
                // everyone to flush their L1 (see `on_fanout`).
                self.flush_pending.store(true, Ordering::Relaxed);
                tracing::warn!(error = %e, "invalidation not fanned out; every instance will flush its L1 when Redis is back");
            }
        }
        report
    }

    /// The L2 keys an invalidation touches.
    async fn l2_keys(&self, t: &Targets) -> Result<Vec<String>, L2Error> {
        let Some(l2) = &self.l2 else {
            return Ok(Vec::new());
        };
        let mut keys: Vec<String> = Vec::new();
        let (exact, paths): (Vec<&String>, Vec<&String>) =
            t.keys.iter().partition(|k| !k.starts_with('/'));
        for k in exact {
            // The authenticated copy of a `shared` route lives beside it.
            keys.push(format!("{k}{AUTHENTICATED_SUFFIX}"));
            keys.push(k.clone());
        }
        let (key_prefixes, path_prefixes): (Vec<&String>, Vec<&String>) =
            t.prefixes.iter().partition(|p| !p.starts_with('/'));
        for p in key_prefixes {
            keys.extend(l2.keys_with_prefix(p).await?);
        }
        if !paths.is_empty() || !path_prefixes.is_empty() {
            let paths: Vec<String> = paths.into_iter().cloned().collect();
            let path_prefixes: Vec<String> = path_prefixes.into_iter().cloned().collect();
            let found = l2
                .keys_matching(move |k| {
                    let target = key_target(k).map_or("", |(_, t)| t);
                    paths.iter().any(|p| p == target)
                        || path_prefixes.iter().any(|p| target.starts_with(p.as_str()))
                })
                .await?;
            keys.extend(found);
        }
        if !t.tags.is_empty() {
            keys.extend(l2.take_tagged(&t.tags).await?);
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// The key whose `url_hash` is `hash`, from L1 or L2.
    pub async fn key_for_hash(&self, hash: &str) -> Option<String> {
        if let Some(k) = self.l1.as_ref().and_then(|c| c.key_for_hash(hash)) {
            return Some(k);
        }
        let l2 = self.l2.as_ref()?;
        match l2.key_for_hash(hash).await {
            Ok(k) => k,
            Err(e) => {
                self.l2_failed(&e);
                None
            }
        }
    }

    /// Starts the fan-out listener (when Redis is configured) under
    /// `services`: other instances' invalidations applied to this L1.
    pub fn run_fanout(self: &Arc<Self>, services: &Supervisor) {
        let Some(l2) = self.l2.clone() else { return };
        let tiers = Arc::downgrade(self);
        let mut events = l2.subscribe();
        services.spawn("invalidation fan-out", move |mut shutdown| async move {
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    () = shutdown.requested() => None,
                };
                let (Some(event), Some(tiers)) = (event, tiers.upgrade()) else {
                    break;
                };
                tiers.on_fanout(event).await;
            }
        });
    }

    async fn on_fanout(&self, event: L2Event) {
        match event {
            L2Event::Invalidate(msg) if msg.from == self.instance_id => {}
            L2Event::Invalidate(msg) if msg.flush => {
                if let Some(c) = &self.l1 {
                    c.clear();
                }
                self.metrics.invalidation(InvalidationSource::fanout);
                tracing::info!(from = %msg.from, "L1 flushed on request of another instance");
            }
            L2Event::Invalidate(msg) => {
                let targets = Targets {
                    keys: msg.keys,
                    prefixes: msg.prefixes,
                    tags: msg.tags,
                    soft: msg.soft,
                };
                self.apply_l1(&targets);
                self.metrics.invalidation(InvalidationSource::fanout);
            }
            L2Event::Resynced => {
                // Invalidations sent while we were disconnected are lost:
                // start again from L2 and the upstream rather than risk
                // serving something purged meanwhile.
                if let Some(c) = &self.l1 {
                    c.clear();
                }
                tracing::warn!(
                    "reconnected to Redis: L1 flushed, invalidations may have been missed"
                );
                if self.flush_pending.swap(false, Ordering::Relaxed)
                    && let Some(l2) = &self.l2
                {
                    let msg = InvalidationMsg {
                        from: self.instance_id.clone(),
                        flush: true,
                        ..InvalidationMsg::default()
                    };
                    if l2.publish(&msg).await.is_err() {
                        self.flush_pending.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}
