//! The gateway: configuration compiled once, and the life of a request.
//! See ARCHITECTURE.md, "Life of a request".

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue, Version};
use perfgate_cache::compress::Compressor;
use perfgate_cache::key::KeyNormalizer;
use perfgate_cache::memory::MemoryCache;
use perfgate_cache::redis::{L2, L2Health};
use perfgate_cache::tiers::{TierSettings, Tiers};
use perfgate_config::{AuthorizedPolicy, Config};
use perfgate_observe::Metrics;
use perfgate_runtime::clock::Clock;

use crate::hot::Warmups;
use crate::policy::Policy;
use crate::stats::{CacheStats, Stats};
use perfgate_cache::coalesce::{Flights, Shared};

/// `Cache-Status` (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// A random id for this process, so it can ignore its own fan-out messages.
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Everything the request path needs, built once from the configuration.
pub struct Gateway {
    /// The reloadable part: routes, pools, guards, limits, JWT.
    pub(crate) policy: ArcSwap<Policy>,
    /// Requests in flight, for load shedding.
    pub(crate) in_flight: AtomicUsize,
    /// L1 and L2, invalidation across them and across instances.
    pub(crate) tiers: Arc<Tiers>,
    /// Where the cache tiers read entry ages (tests pass a manual clock).
    pub(crate) clock: Clock,
    pub(crate) keys: KeyNormalizer,
    pub(crate) compressor: Compressor,
    pub(crate) flights: Flights<Option<Shared>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stats: Stats,
    pub(crate) max_object_bytes: usize,
    pub(crate) expose_tag_headers: bool,
    pub(crate) warmups: Warmups,
    /// The shared Redis connection (L2, shared rate limits, job queue).
    pub(crate) redis: Option<perfgate_redis::Redis>,
    pub(crate) via_h1: HeaderValue,
    via_h2: HeaderValue,
    /// The async job queue, when some route is async.
    pub(crate) jobs: std::sync::OnceLock<Arc<perfgate_jobs::queue::Jobs>>,
    /// `server.request_body_timeout`: the deadline of every whole-body read.
    pub(crate) body_timeout: Duration,
    /// Request events for the sinks (access log, traces, analytics).
    pub(crate) events: perfgate_observe::EventBus,
    /// Every background service of this gateway (probes, fan-out, job
    /// workers, warm-ups), and the servers `main` adds to it.
    pub(crate) tasks: perfgate_runtime::Supervisor,
}

impl Gateway {
    /// Compiles a validated configuration.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, perfgate_config::ConfigErrors> {
        Self::with_clock(config, metrics, Clock::system())
    }

    /// Like [`new`](Self::new), with the cache and the job store reading
    /// time from `clock`.
    pub fn with_clock(
        config: &Config,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Arc<Self>, perfgate_config::ConfigErrors> {
        use crate::policy::at;
        let tasks = perfgate_runtime::Supervisor::new();
        let policy = Policy::build(config, &metrics, None, &tasks)?;
        let cache = config.cache.enabled.then(|| {
            let c = &config.cache;
            MemoryCache::with_clock(c.max_bytes.get(), c.keep_stale.get(), clock.clone())
        });
        let via = |v: &str| {
            HeaderValue::from_str(&format!("{v} {}", config.server.via_name))
                .map_err(|_| "not a valid header value".to_string())
                .map_err(at("server.via_name"))
        };
        // Started whenever Redis is configured: shared rate limits use it
        // even when the response cache is off.
        let redis = if config.redis.enabled() {
            Some(perfgate_redis::Redis::start(&config.redis).map_err(at("redis"))?)
        } else {
            None
        };
        let l2 = redis.clone().map(|r| L2::new(r, &config.redis));
        if config.cache.coalesce_timeout.is_some() {
            tracing::warn!(
                "cache.coalesce_timeout is deprecated and ignored: waiters wait for the leader's fetch, which its own deadlines bound"
            );
        }
        let jobs = std::sync::OnceLock::new();
        if let Some(j) =
            perfgate_jobs::queue::Jobs::open(config, redis.as_ref(), &clock).map_err(at("jobs"))?
        {
            let _ = jobs.set(j);
        }
        Ok(Arc::new(Self {
            jobs,
            redis,
            tiers: Arc::new(Tiers::new(
                cache,
                l2,
                TierSettings {
                    keep_stale: config.cache.keep_stale.get(),
                    l2_max_object_bytes: config.redis.max_object_bytes.get(),
                    instance_id: instance_id(),
                    // Keys with a suffix (`\nuser=`, `\nauth`, `\nfwd=`) need the walk.
                    suffixed_keys: config.routes.iter().any(|r| {
                        matches!(
                            r.cache.authorized,
                            AuthorizedPolicy::PerUser | AuthorizedPolicy::Shared
                        )
                    }) || !config.forwarded.trusted_proxies.is_empty(),
                },
                clock.clone(),
                metrics.clone(),
            )),
            policy: ArcSwap::from_pointee(policy),
            in_flight: AtomicUsize::new(0),
            clock,
            keys: KeyNormalizer::new(&config.cache.drop_query_params).with_path_rules(
                perfgate_cache::key::PathRules {
                    merge_slashes: config.server.merge_slashes,
                    allow_encoded_slashes: config.server.allow_encoded_slashes,
                },
            ),
            compressor: Compressor::new(&config.compression),
            flights: Flights::default(),
            metrics,
            stats: Stats::default(),
            max_object_bytes: usize::try_from(config.cache.max_object_bytes.get())
                .unwrap_or(usize::MAX),
            expose_tag_headers: config.cache.expose_tag_headers,
            warmups: Warmups::new(
                config.server.listen.clone(),
                config.cache.warmup_concurrency,
            ),
            via_h1: via("1.1")?,
            via_h2: via("2")?,
            body_timeout: config.server.request_body_timeout.get(),
            events: perfgate_observe::EventBus::default(),
            tasks,
        }))
    }

    /// The async job queue, when some route is async.
    pub fn jobs(&self) -> Option<&Arc<perfgate_jobs::queue::Jobs>> {
        self.jobs.get()
    }

    /// Feeds every finished request's event to `sinks`, in order, in one
    /// background task (off the request path). Only the first call takes
    /// effect; false after that.
    pub fn subscribe_events(&self, sinks: Vec<Arc<dyn perfgate_observe::EventSink>>) -> bool {
        let Some(feed) = self.events.subscribe(sinks) else {
            return false;
        };
        // A service like the others: on shutdown it hands the sinks what
        // is still queued, then stops.
        self.tasks.spawn("event sinks", move |mut shutdown| {
            feed.run(async move { shutdown.requested().await })
        });
        true
    }

    /// The supervisor of this gateway's background services; `main` starts
    /// the servers under it too, and stops everything through it.
    pub fn supervisor(&self) -> &perfgate_runtime::Supervisor {
        &self.tasks
    }

    /// Request events dropped because the sinks fell behind.
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped()
    }

    /// The L2's state, when one is configured.
    pub fn l2_health(&self) -> Option<L2Health> {
        self.tiers.l2_health()
    }

    /// Requests in flight now: client requests being answered, plus the
    /// cache fills and refreshes running in tasks of their own (the count
    /// `server.max_concurrent_requests` limits).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// One `PING` to Redis under `deadline` (through the connection's
    /// breaker, like every call): its round-trip time, or why it failed.
    /// `None` when no Redis is configured.
    pub async fn redis_ping(&self, deadline: Duration) -> Option<Result<Duration, String>> {
        let redis = self.redis.as_ref()?;
        Some(redis.ping(deadline).await.map_err(|e| e.to_string()))
    }

    /// Starts the invalidation fan-out listener (when Redis is configured)
    /// under the supervisor.
    pub fn run_background(&self) {
        self.tiers.run_fanout(&self.tasks);
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A snapshot of the cache statistics.
    pub fn cache_stats(&self) -> CacheStats {
        let (entries, bytes) = match &self.tiers.l1 {
            Some(c) => {
                c.sync();
                (c.entry_count(), c.weighted_size())
            }
            None => (0, 0),
        };
        self.metrics.set_cache_size(entries, bytes);
        let t = &self.tiers;
        let mut stats = self
            .stats
            .snapshot(entries, bytes, t.l2_writes(), t.l2_errors());
        stats.layers.l2.state = match self.l2_health() {
            None => "disabled",
            Some(h) => h.state,
        };
        self.metrics.set_l2_up(stats.layers.l2.state == "up");
        stats.routes = self
            .policy()
            .routes
            .iter()
            .map(|r| r.stats.route_snapshot(&r.name))
            .collect();
        stats
    }

    /// The current generation of the reloadable configuration.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub(crate) fn swap_policy(&self, new: Policy) -> Arc<Policy> {
        let new = Arc::new(new);
        self.policy.store(new.clone());
        new
    }

    /// The `Via` value for requests of this version.
    pub(crate) fn via_for(&self, version: Version) -> &HeaderValue {
        if version == Version::HTTP_2 {
            &self.via_h2
        } else {
            &self.via_h1
        }
    }

    /// Counts upstream work the gateway does in a task of its own (a cache
    /// fill that outlives its client, a background refresh) as a request in
    /// flight, for load shedding, until the returned guard drops.
    pub(crate) fn fill_slot(self: &Arc<Self>) -> FillSlot {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        FillSlot(self.clone())
    }

    /// While a client waits for a fill it started, the fill's slot stands
    /// for the client's own: the client's count is lent to it until the
    /// guard drops. So a waiting client counts once, and a fill whose
    /// client went away still counts.
    pub(crate) fn lend_slot(&self) -> LentSlot<'_> {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        LentSlot(&self.in_flight)
    }

    /// Whether one more request in flight stays within
    /// `server.max_concurrent_requests` (for work that may be skipped, such
    /// as a background refresh).
    pub(crate) fn has_room(&self) -> bool {
        let max = self.policy.load().max_concurrent;
        max == 0 || self.in_flight.load(Ordering::Relaxed) < max
    }
}

/// A fill's place in the in-flight count; see [`Gateway::fill_slot`].
pub(crate) struct FillSlot(Arc<Gateway>);

impl Drop for FillSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client's place lent to its fill; see [`Gateway::lend_slot`].
pub(crate) struct LentSlot<'a>(&'a AtomicUsize);

impl Drop for LentSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Gateway {
    /// The state of every upstream pool (health endpoints), sorted by name.
    pub fn upstream_health(&self) -> Vec<perfgate_upstream::pool::PoolReport> {
        self.policy().pools.iter().map(|p| p.snapshot()).collect()
    }

    /// Replaces the reloadable configuration (routes, pools, guards, limits,
    /// JWT) with one compiled from `config`, which must be validated. In
    /// flight requests finish with the generation they started with; the
    /// cache and the statistics are kept. Err (every problem, with its
    /// path) leaves the running one.
    pub fn reload(self: &Arc<Self>, config: &Config) -> Result<(), perfgate_config::ConfigErrors> {
        let old = self.policy();
        let new = Policy::build(config, self.metrics(), Some(&old), &self.tasks)?;
        if self.jobs.get().is_none()
            && let Some(j) =
                perfgate_jobs::queue::Jobs::open(config, self.redis.as_ref(), &self.clock)
                    .map_err(crate::policy::at("jobs"))?
        {
            // The first async route arrived with this reload.
            let _ = self.jobs.set(j);
        }
        let new = self.swap_policy(new);
        new.pools.retire_replaced(&old.pools, self.metrics());
        self.sync_job_workers();
        Ok(())
    }
}
