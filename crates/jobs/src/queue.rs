//! This instance's side of the job queue: the store it opened, one
//! [`RouteQueue`] per async route (workers' wake-up and count, quota,
//! statistics), finished jobs kept in memory, and the status document of a
//! job. The workers that run the jobs (`workers.rs`) use it;
//! the HTTP side (submission, status pages, the upstream call) is in
//! `perfgate_proxy`.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use perfgate_config::{AsyncRouteConfig, Config, JobBackend};
use serde_json::{Value, json};
use tokio::sync::Notify;

use perfgate_http::error::{ErrorKind, GatewayError};

use crate::embedded::Embedded;
use crate::redis::RedisStore;
use crate::{Job, JobState, Store, StoreError};

/// The job queue of this instance: the store, the workers' bookkeeping and
/// the per-route statistics.
pub struct Jobs {
    pub store: Store,
    pub max_queued: usize,
    pub result_ttl: Duration,
    /// How long a claimed job stays ours without a heartbeat (Redis).
    pub lease: Duration,
    /// Set once the queue-depth gauge updater runs.
    pub(crate) depth_updater: std::sync::atomic::AtomicBool,
    /// `GET {status_prefix}/{id}` works for every job.
    pub status_prefix: String,
    /// What this instance keeps per async route.
    routes: Mutex<HashMap<String, Arc<RouteQueue>>>,
    started: Instant,
    /// Jobs waiting or running, as last counted by the depth updater (the
    /// health endpoints read it without touching the store).
    pub live: std::sync::atomic::AtomicI64,
    /// L1 of finished jobs (the store is their L2): status reads and
    /// results of jobs that will not change by themselves, kept for
    /// `FINISHED_TTL` (10 s) so an admin retry or discard on another instance is
    /// seen soon, and weighed in bytes (`jobs.finished_cache_bytes`).
    pub finished: moka::sync::Cache<String, Arc<Job>>,
}

/// What a finished job is counted as besides its bodies and header fields
/// (the struct, ids, the map entry), so that many tiny jobs are bounded too.
const FINISHED_OVERHEAD: usize = 512;
/// How long a finished job is served from memory.
const FINISHED_TTL: Duration = Duration::from_secs(10);

/// One async route on this instance: its workers' wake-up and count, its
/// quota, and what it saw.
#[derive(Default)]
pub struct RouteQueue {
    /// Wakes the route's idle workers when a job is submitted.
    pub notify: Notify,
    /// Workers running.
    pub workers: AtomicUsize,
    /// The next time the quota allows a call.
    quota: Mutex<Option<Instant>>,
    stats: Mutex<RouteJobStats>,
}

impl RouteQueue {
    /// How long to wait before the next upstream call under the route's
    /// quota (`rate` per `rate_per`), reserving that slot.
    pub fn quota_wait(&self, aj: &AsyncRouteConfig) -> Duration {
        if aj.rate == 0 {
            return Duration::ZERO;
        }
        let interval = aj.rate_per.get() / aj.rate;
        let now = Instant::now();
        let mut next = self.quota.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = next.filter(|t| *t > now).unwrap_or(now);
        *next = Some(slot + interval);
        slot - now
    }

    fn with_stats(&self, f: impl FnOnce(&mut RouteJobStats)) {
        f(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn count_call(&self, unit_cost: f64) {
        self.with_stats(|s| {
            s.calls += 1;
            s.cost += unit_cost;
        });
    }

    pub fn count_saved(&self, unit_cost: f64) {
        self.with_stats(|s| {
            s.saved += 1;
            s.saved_cost += unit_cost;
        });
    }

    pub fn record_wait(&self, ms: u64) {
        self.with_stats(|s| s.wait.record(ms.max(1)));
    }

    pub fn record_done(&self, run_ms: u64) {
        self.with_stats(|s| {
            s.completed += 1;
            s.run.record(run_ms.max(1));
        });
    }
}

/// What this instance saw of one async route.
struct RouteJobStats {
    calls: u64,
    saved: u64,
    completed: u64,
    cost: f64,
    saved_cost: f64,
    /// Milliseconds from submission to the first attempt.
    wait: Millis,
    /// Milliseconds from the first attempt to the end (retries included).
    run: Millis,
}

/// A histogram of milliseconds, from one millisecond to a day with two
/// significant digits. Those bounds are constant and valid, so it is always
/// there; the `Option` only spares a panic path for the impossible case.
struct Millis(Option<Histogram<u64>>);

impl Millis {
    fn new() -> Self {
        Self(Histogram::new_with_bounds(1, 24 * 3600 * 1000, 2).ok())
    }

    fn record(&mut self, ms: u64) {
        if let Some(h) = &mut self.0 {
            h.saturating_record(ms);
        }
    }

    fn percentiles(&self) -> Value {
        self.0.as_ref().map_or(json!({"count": 0}), percentiles)
    }
}

impl Default for RouteJobStats {
    fn default() -> Self {
        Self {
            calls: 0,
            saved: 0,
            completed: 0,
            cost: 0.0,
            saved_cost: 0.0,
            wait: Millis::new(),
            run: Millis::new(),
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    match h {
        h if !h.is_empty() => json!({
            "p50": h.value_at_quantile(0.5),
            "p95": h.value_at_quantile(0.95),
            "p99": h.value_at_quantile(0.99),
            "max": h.max(),
            "count": h.len(),
        }),
        _ => json!({ "count": 0 }),
    }
}

impl Jobs {
    /// Opens the configured store when some route is async; `None`
    /// otherwise. The Redis backend needs the Redis connection.
    pub fn open(
        config: &Config,
        redis: Option<&perfgate_redis::Redis>,
        clock: &perfgate_runtime::clock::Clock,
    ) -> Result<Option<Arc<Jobs>>, String> {
        if !config.routes.iter().any(|r| r.async_job.is_some()) {
            return Ok(None);
        }
        let j = &config.jobs;
        let store = match j.backend {
            JobBackend::Embedded => {
                let dir = std::path::Path::new(&j.data_dir);
                Store::Embedded(Embedded::open_with_clock(dir, clock.clone()).map_err(|e| {
                    format!(
                        "jobs.data_dir: {e} (is another perfgate using {}?)",
                        dir.display()
                    )
                })?)
            }
            JobBackend::Redis => {
                let redis = redis.ok_or("jobs.backend = \"redis\" needs [redis] url or cluster")?;
                Store::Redis(RedisStore::new(redis.clone(), j.lease.get()))
            }
        };
        tracing::info!(backend = store.kind(), "job queue ready");
        Ok(Some(Arc::new(Jobs {
            store,
            max_queued: j.max_queued,
            result_ttl: j.result_ttl.get(),
            lease: j.lease.get(),
            depth_updater: std::sync::atomic::AtomicBool::new(false),
            status_prefix: j.status_prefix.trim_end_matches('/').to_string(),
            routes: Mutex::default(),
            started: Instant::now(),
            live: std::sync::atomic::AtomicI64::new(0),
            finished: moka::sync::Cache::builder()
                .max_capacity(j.finished_cache_bytes.get())
                .weigher(|_, job: &Arc<Job>| weight(job))
                .time_to_live(FINISHED_TTL.min(j.result_ttl.get()))
                .build(),
        })))
    }

    /// This instance's state of an async route (made on first use).
    pub fn route(&self, name: &str) -> Arc<RouteQueue> {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// `GET /admin/jobs/stats`: depth per state, calls made and saved,
    /// estimated cost, throughput and wait/run percentiles, per route.
    pub async fn stats(&self) -> Value {
        let counts = self.store.counts().await;
        let queues: HashMap<String, Arc<RouteQueue>> = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let minutes = (self.started.elapsed().as_secs_f64() / 60.0).max(1.0 / 60.0);
        let mut routes = serde_json::Map::new();
        let mut names: Vec<&String> = counts.by_route.keys().chain(queues.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let depth: serde_json::Map<String, Value> = JobState::ALL
                .iter()
                .map(|st| {
                    let n = counts
                        .by_route
                        .get(name)
                        .and_then(|m| m.get(st))
                        .copied()
                        .unwrap_or(0)
                        .max(0);
                    (st.as_str().to_string(), json!(n))
                })
                .collect();
            let stats = queues
                .get(name)
                .map(|q| q.stats.lock().unwrap_or_else(PoisonError::into_inner));
            let s = stats.as_deref();
            let get = |f: fn(&RouteJobStats) -> u64| s.map_or(0, f);
            routes.insert(
                name.clone(),
                json!({
                    "depth": depth,
                    "upstream_calls": get(|s| s.calls),
                    "calls_saved": get(|s| s.saved),
                    "cost": s.map_or(0.0, |s| s.cost),
                    "cost_saved": s.map_or(0.0, |s| s.saved_cost),
                    "completed": get(|s| s.completed),
                    "completed_per_minute": get(|s| s.completed) as f64 / minutes,
                    "wait_ms": s.map_or(json!({"count": 0}), |s| s.wait.percentiles()),
                    "run_ms": s.map_or(json!({"count": 0}), |s| s.run.percentiles()),
                }),
            );
        }
        json!({ "backend": self.store.kind(), "routes": routes })
    }

    /// `GET /admin/jobs?state=…`: jobs in a state, oldest first.
    pub async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Value>, GatewayError> {
        let jobs = self.store.list(state, limit).await.map_err(store_error)?;
        Ok(jobs
            .iter()
            .map(|j| status_document(j, &self.status_url_of(j), false))
            .collect())
    }

    /// Keeps a finished job in memory (nothing else is kept).
    pub fn remember(&self, job: &Arc<Job>) {
        if job.state.is_terminal() {
            self.finished.insert(job.id.clone(), job.clone());
        }
    }

    /// Puts a dead or failed job back in the queue (attempts reset).
    pub async fn retry(&self, id: &str) -> Result<Value, GatewayError> {
        self.finished.invalidate(id);
        let job = self.store.requeue(id).await.map_err(store_error)?;
        self.route(&job.route).notify.notify_waiters();
        Ok(status_document(&job, &self.status_url_of(&job), false))
    }

    /// Deletes a finished job.
    pub async fn discard(&self, id: &str) -> Result<(), GatewayError> {
        self.finished.invalidate(id);
        self.store.discard(id).await.map_err(store_error)
    }

    /// For the health endpoints, from state kept in the background: the
    /// backend and the jobs waiting or running at the last count.
    pub fn health(&self) -> (&'static str, i64) {
        (
            self.store.kind(),
            self.live.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The generic status URL of a job.
    pub(crate) fn status_url_of(&self, job: &Job) -> String {
        format!("{}/{}", self.status_prefix, job.id)
    }
}

/// Largest result body embedded in the status document; larger ones are
/// only at the result URL.
const EMBED_MAX: usize = 1024 * 1024;

/// The status document of a job (the result embedded when it is JSON or
/// text of at most 1 MiB; always at `result_url`).
pub fn status_document(job: &Job, status_url: &str, deduplicated: bool) -> Value {
    let ms = |v: Option<u64>| v.map_or(Value::Null, |v| json!(v));
    let mut doc = json!({
        "task_id": job.id,
        "route": job.route,
        "status": job.state.as_str(),
        "status_url": status_url,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at_ms": job.created_ms,
        "started_at_ms": ms(job.started_ms),
        "finished_at_ms": ms(job.finished_ms),
        "next_attempt_at_ms": if job.state == crate::JobState::Queued && job.next_attempt_ms > 0 {
            json!(job.next_attempt_ms)
        } else {
            Value::Null
        },
        "last_error": job.last_error,
        "deduplicated": deduplicated,
    });
    if let Some(r) = &job.result {
        let headers: serde_json::Map<String, Value> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let is_json = r
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.contains("json"));
        let body = if job.result_body.len() > EMBED_MAX {
            Value::Null
        } else if is_json {
            serde_json::from_slice(&job.result_body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&job.result_body).into_owned())
            })
        } else {
            match std::str::from_utf8(&job.result_body) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => Value::Null,
            }
        };
        doc["result"] = json!({
            "status": r.status,
            "headers": headers,
            "body": body,
            "body_bytes": job.result_body.len(),
        });
        doc["result_url"] = json!(format!("{status_url}/result"));
    }
    doc
}

/// The bytes a finished job holds in memory, as weighed by `Jobs::finished`.
fn weight(job: &Job) -> u32 {
    let fields =
        |f: &[(String, String)]| f.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>();
    let n = FINISHED_OVERHEAD
        + job.body.len()
        + job.result_body.len()
        + job.request.target.len()
        + fields(&job.request.headers)
        + job.result.as_ref().map_or(0, |r| fields(&r.headers))
        + job.last_error.as_ref().map_or(0, String::len);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The end-to-end fields of a head, as a job stores them (hop-by-hop
/// fields removed, values that are not text dropped).
pub fn stored_fields(mut headers: http::HeaderMap) -> Vec<(String, String)> {
    perfgate_http::headers::strip_hop_by_hop(&mut headers);
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Stored fields back into a head (any that no longer parse are skipped).
pub fn head_fields(fields: &[(String, String)]) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(fields.len());
    for (k, v) in fields {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.append(k, v);
        }
    }
    headers
}

/// The client-facing error for a store failure.
pub fn store_error(e: StoreError) -> GatewayError {
    match e {
        StoreError::Full(n) => GatewayError::new(
            ErrorKind::QueueFull,
            format!("the job queue is full ({n} jobs waiting or running); try again later"),
        )
        .retry_after(Duration::from_secs(5)),
        StoreError::NotFound => GatewayError::new(ErrorKind::NotFound, "no such job"),
        StoreError::WrongState(s) => {
            GatewayError::new(ErrorKind::BadRequest, format!("the job is {s}"))
        }
        StoreError::Unavailable(why) | StoreError::Corrupt(why) => {
            tracing::error!(error = %why, "job store unavailable");
            GatewayError::new(
                ErrorKind::StoreUnavailable,
                "the job store is unavailable; the job was not accepted",
            )
            .retry_after(Duration::from_secs(5))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perfgate_config::{AsyncRouteConfig, ByteSize, RouteConfig};

    #[test]
    fn finished_jobs_in_memory_are_bounded_in_bytes() {
        let dir = std::env::temp_dir().join(format!(
            "perfgate-finished-{}-{}",
            std::process::id(),
            crate::job::new_id()
        ));
        let mut config = Config::default();
        config.jobs.data_dir = dir.to_string_lossy().into_owned();
        config.jobs.finished_cache_bytes = ByteSize(1024 * 1024);
        config.routes.push(RouteConfig {
            async_job: Some(AsyncRouteConfig::default()),
            ..RouteConfig::default()
        });
        let jobs = Jobs::open(&config, None, &Default::default())
            .unwrap()
            .unwrap();
        // 100 finished jobs of 100 KiB results: 10 MiB, against 1 MiB.
        for _ in 0..100 {
            let mut job = Job::new("r", crate::JobRequest::default(), bytes::Bytes::new(), 0);
            job.state = JobState::Succeeded;
            job.result_body = bytes::Bytes::from(vec![b'x'; 100 * 1024]);
            jobs.remember(&Arc::new(job));
        }
        jobs.finished.run_pending_tasks();
        assert!(
            jobs.finished.weighted_size() <= 1024 * 1024,
            "{} bytes kept",
            jobs.finished.weighted_size()
        );
        assert!(jobs.finished.entry_count() <= 10);
        drop(jobs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
