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
use http::{HeaderValue, Request, Uri};
use serde::Serialize;

use perfgate_observe::RequestKind;

use crate::body::Body;
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
        // A service: on shutdown it starts no further fetch (those under
        // way finish or are cut with the rest).
        self.tasks.spawn("warm-up", move |mut shutdown| async move {
            let mut tasks = Vec::with_capacity(targets.len());
            for (host, path) in targets {
                let permit = tokio::select! {
                    p = limit.clone().acquire_owned() => p,
                    () = shutdown.requested() => break,
                };
                let Ok(permit) = permit else {
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

    /// Fills the cache for one path, as a client GET would: the request
    /// goes through the same phases (without identity and rate limits: it
    /// is perfgate's own), and succeeds when its answer is in the cache.
    async fn warm_one(self: &Arc<Self>, host: &str, path: &str) -> Result<(), String> {
        let uri: Uri = path.parse().map_err(|_| "not a valid path".to_string())?;
        let mut req = Request::new(Body::Empty);
        *req.uri_mut() = uri;
        req.headers_mut().insert(
            HOST,
            HeaderValue::from_str(host).map_err(|_| "invalid host".to_string())?,
        );
        let conn = Conn::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false);
        let rsp = self
            .clone()
            .handle_with(self.policy(), req, conn, RequestKind::Warmup)
            .await;
        let label = rsp
            .headers()
            .get(crate::gateway::CACHE_STATUS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let cached = label.starts_with("perfgate; hit")
            || label.contains("; stored")
            || label.contains("; collapsed");
        if cached {
            return Ok(());
        }
        let status = rsp.status();
        if label.is_empty() {
            // A gateway error: its envelope says why.
            let body = http_body_util::BodyExt::collect(rsp.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| "no answer".to_string());
            return Err(format!("{why} (status {status})"));
        }
        Err(format!("not stored (status {status}): {label}"))
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
