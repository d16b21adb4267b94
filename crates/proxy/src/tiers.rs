//! The shared tier: L2 lookups and promotion to L1, L2 writes off the hot
//! path, invalidation across tiers and instances, and the fan-out listener.
//! Only `perfgate_redis` talks to Redis and `perfgate_cache::redis` owns the L2
//! entries; this module decides when.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use perfgate_cache::entry::Entry;
use perfgate_cache::key::key_target;
use perfgate_cache::policy::Reuse;
use perfgate_cache::redis::{InvalidationMsg, L2Error, L2Event, L2Health};
use perfgate_observe::InvalidationSource;

use crate::context::{L2Outcome, Waits};
use crate::gateway::Gateway;
use crate::invalidate::{InvalidateReport, Targets};
use crate::lookup::CacheReq;
use crate::route::Route;
use crate::stats::Stats;

/// What L2 had for a key.
pub(crate) enum L2Lookup {
    /// A fresh variant, now also in L1.
    Fresh(Arc<Entry>),
    /// Only a stale variant: a base for revalidation.
    Stale(Arc<Entry>),
    /// Nothing usable (or L2 unavailable).
    Nothing,
}

impl Gateway {
    /// The L2's state, when one is configured.
    pub fn l2_health(&self) -> Option<L2Health> {
        self.l2.as_ref().map(|l2| l2.health())
    }

    /// Looks `key` up in L2 (under its deadline); a fresh variant usable by
    /// this request is promoted to L1 with its remaining freshness.
    /// The outcome goes into `upstream` (counted when the request is
    /// recorded).
    pub(crate) async fn l2_lookup(
        &self,
        route: &Route,
        key: &str,
        creq: &CacheReq,
        upstream: &mut Waits,
    ) -> L2Lookup {
        let Some(l2) = &self.l2 else {
            return L2Lookup::Nothing;
        };
        let started = Instant::now();
        let found = l2.get(key, &creq.headers).await;
        upstream.l2 += started.elapsed();
        let found = match found {
            Ok(e) => e,
            Err(e) => {
                if !matches!(e, L2Error::Skipped) {
                    upstream.l2_outcome = Some(L2Outcome::Error);
                    tracing::debug!(error = %e, "L2 call failed; going on without it");
                }
                return L2Lookup::Nothing;
            }
        };
        let now = self.clock.now();
        // The digest chose the variant; the reader's own check confirms it.
        let usable = found.filter(|e| crate::lookup::reusable(&route.policy, &creq.headers, e));
        let Some(entry) = usable.map(Arc::new) else {
            upstream.l2_outcome = Some(L2Outcome::Miss);
            return L2Lookup::Nothing;
        };
        if matches!(entry.reuse(now), Reuse::Fresh) {
            if let Some(cache) = &self.cache {
                cache.insert(key, entry.clone());
            }
            upstream.l2_outcome = Some(L2Outcome::Hit);
            L2Lookup::Fresh(entry)
        } else {
            upstream.l2_outcome = Some(L2Outcome::Miss);
            L2Lookup::Stale(entry)
        }
    }

    fn l2_failed(&self, e: &L2Error) {
        if !matches!(e, L2Error::Skipped) {
            Stats::inc(&self.stats.l2_errors);
            self.metrics.l2_error();
            tracing::debug!(error = %e, "L2 call failed; going on without it");
        }
    }

    /// Copies an entry to L2 in the background (never on the request's time).
    pub(crate) fn l2_store(&self, key: &str, entry: &Arc<Entry>) {
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

    /// Applies an invalidation everywhere: this instance's L1, the L2, and
    /// (through Redis) every other instance's L1.
    pub(crate) async fn invalidate_targets(
        &self,
        targets: Targets,
        source: InvalidationSource,
    ) -> InvalidateReport {
        let l1_removed = self.apply_l1(&targets);
        let mut report = self.invalidate_shared(targets, source).await;
        report.l1_removed = l1_removed;
        report
    }

    /// The shared part of an invalidation: L2 and the other instances.
    pub(crate) async fn invalidate_shared(
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
                // everyone to flush their L1 (see `run_fanout`).
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
            keys.push(format!("{k}{}", crate::lookup::AUTHENTICATED_SUFFIX));
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
    pub(crate) async fn key_for_hash(&self, hash: &str) -> Option<String> {
        if let Some(k) = self.cache.as_ref().and_then(|c| c.key_for_hash(hash)) {
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

    /// Starts the fan-out listener (when Redis is configured) under the
    /// supervisor.
    pub fn run_background(self: &Arc<Self>) {
        let Some(l2) = self.l2.clone() else { return };
        let gw = Arc::downgrade(self);
        let mut events = l2.subscribe();
        self.tasks
            .spawn("invalidation fan-out", move |mut shutdown| async move {
                loop {
                    let event = tokio::select! {
                        e = events.recv() => e,
                        () = shutdown.requested() => None,
                    };
                    let (Some(event), Some(gw)) = (event, gw.upgrade()) else {
                        break;
                    };
                    gw.on_fanout(event).await;
                }
            });
    }

    async fn on_fanout(&self, event: L2Event) {
        match event {
            L2Event::Invalidate(msg) if msg.from == self.instance_id => {}
            L2Event::Invalidate(msg) if msg.flush => {
                if let Some(c) = &self.cache {
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
                if let Some(c) = &self.cache {
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
