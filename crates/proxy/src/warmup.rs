//! Cache warm-up: fill the cache for a list of paths, or for the keys that
//! were requested most recently. Warm-up requests go through the routes like
//! client requests (so they only ever reach configured upstreams), share the
//! coalesced fetch path, and run concurrency-limited in the background with
//! their progress kept for the admin API.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use perfgate_cache::policy::Reuse;
use serde::Serialize;

use crate::cached::{CacheReq, Fetched};
use crate::gateway::{Conn, Gateway};

/// How many finished jobs are kept for status queries.
const KEEP_JOBS: usize = 64;
/// Bytes the hot-key counters may hold (host and path of each, plus
/// `HOT_OVERHEAD`); the least used are evicted beyond. With 7 KB query
/// strings that is still about a thousand keys, plenty for a warm-up.
const HOT_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Memory one counter costs beyond its host and path.
const HOT_OVERHEAD: usize = 160;

/// A warm-up as the admin API receives it (already validated).
#[derive(Debug, Clone, Default)]
pub struct WarmupRequest {
    /// Paths (with query) to fill.
    pub urls: Vec<String>,
    /// Also fill the N most requested keys seen recently.
    pub top: Option<usize>,
    /// Requests at once (default: `cache.warmup_concurrency`).
    pub concurrency: Option<usize>,
    /// `Host` of the warm-up requests (default: the proxy's listen address).
    pub host: Option<String>,
}

/// One URL that could not be warmed.
#[derive(Debug, Clone, Serialize)]
pub struct WarmupFailure {
    /// The path.
    pub url: String,
    /// Why.
    pub error: String,
}

/// Progress of a warm-up job.
#[derive(Debug, Clone, Serialize)]
pub struct WarmupStatus {
    /// Job id.
    pub id: String,
    /// `running` or `done`.
    pub state: &'static str,
    /// URLs in the job.
    pub total: u64,
    /// URLs finished.
    pub done: u64,
    /// URLs now in the cache.
    pub succeeded: u64,
    /// URLs that failed.
    pub failed: u64,
    /// The failures.
    pub errors: Vec<WarmupFailure>,
}

struct Job {
    id: String,
    total: u64,
    done: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    finished: AtomicBool,
    errors: Mutex<Vec<WarmupFailure>>,
}

impl Job {
    fn status(&self) -> WarmupStatus {
        WarmupStatus {
            id: self.id.clone(),
            state: if self.finished.load(Relaxed) {
                "done"
            } else {
                "running"
            },
            total: self.total,
            done: self.done.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
            failed: self.failed.load(Relaxed),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// A recently requested key: enough to request it again.
struct Hot {
    host: String,
    path: String,
    hits: AtomicU64,
}

/// Warm-up jobs and the hot-key tracker.
pub(crate) struct Warmups {
    jobs: Mutex<Vec<Arc<Job>>>,
    next: AtomicU64,
    /// By the xxh3 of the cache key: a collision only merges two counts.
    hot: moka::sync::Cache<u64, Arc<Hot>>,
    pub(crate) default_host: String,
    pub(crate) concurrency: usize,
}

impl Warmups {
    pub(crate) fn new(default_host: String, concurrency: usize) -> Self {
        Self {
            jobs: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            hot: moka::sync::Cache::builder()
                .max_capacity(HOT_MAX_BYTES)
                .weigher(|_: &u64, h: &Arc<Hot>| {
                    u32::try_from(h.host.len() + h.path.len() + HOT_OVERHEAD).unwrap_or(u32::MAX)
                })
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            default_host,
            concurrency: concurrency.max(1),
        }
    }

    /// Records a request for `key`. Counting is exact (a lookup in a small
    /// concurrent map per cache-path request): sampling made the ranking
    /// arbitrary at low volume, which is exactly when warm-up after a purge
    /// matters.
    pub(crate) fn record(&self, key: &str, host: &str, path: &str) {
        let id = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        match self.hot.get(&id) {
            Some(h) => {
                h.hits.fetch_add(1, Relaxed);
            }
            None => self.hot.insert(
                id,
                Arc::new(Hot {
                    host: host.to_string(),
                    path: path.to_string(),
                    hits: AtomicU64::new(1),
                }),
            ),
        }
    }

    /// The `n` most requested `(host, path)` pairs.
    fn top(&self, n: usize) -> Vec<(String, String)> {
        let mut all: Vec<(u64, String, String)> = self
            .hot
            .iter()
            .map(|(_, h)| (h.hits.load(Relaxed), h.host.clone(), h.path.clone()))
            .collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.0));
        all.into_iter().take(n).map(|(_, h, p)| (h, p)).collect()
    }
}

impl Gateway {
    /// Starts a warm-up job in the background and returns its first status.
    pub fn start_warmup(self: &Arc<Self>, req: WarmupRequest) -> WarmupStatus {
        let w = &self.warmups;
        let host = req.host.clone().unwrap_or_else(|| w.default_host.clone());
        let mut targets: Vec<(String, String)> =
            req.urls.iter().map(|u| (host.clone(), u.clone())).collect();
        if let Some(n) = req.top {
            targets.extend(w.top(n));
        }
        targets.dedup();
        let id = format!("w{}", w.next.fetch_add(1, Relaxed));
        let job = Arc::new(Job {
            id,
            total: targets.len() as u64,
            done: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            finished: AtomicBool::new(targets.is_empty()),
            errors: Mutex::new(Vec::new()),
        });
        {
            let mut jobs = w.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            if jobs.len() >= KEEP_JOBS {
                jobs.remove(0);
            }
            jobs.push(job.clone());
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(
            req.concurrency.unwrap_or(w.concurrency).max(1),
        ));
        let gw = self.clone();
        let status = job.status();
        tokio::spawn(async move {
            let mut tasks = Vec::with_capacity(targets.len());
            for (host, path) in targets {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let (gw, job) = (gw.clone(), job.clone());
                tasks.push(tokio::spawn(async move {
                    let result = gw.warm_one(&host, &path).await;
                    drop(permit);
                    match result {
                        Ok(()) => job.succeeded.fetch_add(1, Relaxed),
                        Err(error) => {
                            job.errors
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(WarmupFailure { url: path, error });
                            job.failed.fetch_add(1, Relaxed)
                        }
                    };
                    job.done.fetch_add(1, Relaxed);
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            job.finished.store(true, Relaxed);
            tracing::info!(job = %job.id, total = job.total, failed = job.failed.load(Relaxed), "warm-up finished");
        });
        status
    }

    /// The status of a warm-up job.
    pub fn warmup_status(&self, id: &str) -> Option<WarmupStatus> {
        self.warmups
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|j| j.id == id)
            .map(|j| j.status())
    }

    /// Fills the cache for one path, as a client GET would.
    async fn warm_one(self: &Arc<Self>, host: &str, path: &str) -> Result<(), String> {
        let mut uri: Uri = path.parse().map_err(|_| "not a valid path".to_string())?;
        // The path a client's GET would have after normalization (target.rs).
        crate::target::normalize(&self.keys, &mut uri).map_err(|e| e.message)?;
        let route = self
            .policy()
            .routes
            .select(&Method::GET, uri.path())
            .map_err(|e| e.message)?
            .clone();
        if route.bypass || self.cache.is_none() {
            return Err("the route bypasses the cache".into());
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            HOST,
            HeaderValue::from_str(host).map_err(|_| "invalid host".to_string())?,
        );
        let conn = Conn::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false);
        let key = self.key_for(&route, &uri, &headers, &conn);
        let cache = self.cache.as_ref().ok_or("cache disabled")?;
        let found = cache.lookup(&key, |e| e.vary.matches(&headers));
        if let Some(e) = &found
            && matches!(e.reuse(self.clock.now()), Reuse::Fresh)
        {
            return Ok(());
        }
        let creq = Arc::new(CacheReq {
            uri,
            headers,
            version: Version::HTTP_11,
            conn,
        });
        let mut upstream = crate::gateway::Waits::default();
        // A warm-up counts toward `server.max_concurrent_requests` like a
        // client request (its place is lent to the fill it starts).
        let _slot = self.fill_slot();
        match self.fill(&route, &key, &creq, found, &mut upstream).await {
            Ok(Fetched::Entry { .. }) => Ok(()),
            Ok(Fetched::Stream(rsp)) => {
                let why = rsp
                    .headers()
                    .get(crate::gateway::CACHE_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("not cacheable")
                    .to_string();
                Err(format!("{} (status {}): {why}", "not stored", rsp.status()))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #11 item 7: unique long URLs do not grow the hot-key counters
    /// past their byte budget.
    #[test]
    fn hot_keys_stay_within_their_budget() {
        let w = Warmups::new("h".into(), 1);
        let pad = "q".repeat(7_000);
        for i in 0..3_000 {
            let path = format!("/p?{i}&{pad}");
            w.record(&format!("GET http://h{path}"), "h", &path);
        }
        w.hot.run_pending_tasks();
        assert!(
            w.hot.weighted_size() <= HOT_MAX_BYTES,
            "{}",
            w.hot.weighted_size()
        );
        assert!(w.hot.weighted_size() > HOT_MAX_BYTES / 2);
        assert!(!w.top(5).is_empty());
    }
}
