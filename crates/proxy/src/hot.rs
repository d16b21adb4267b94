//! What warm-up keeps between requests: the most requested keys (exact,
//! bounded counters) and the progress of the last warm-up jobs. The jobs
//! themselves run in `warmup.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

/// How many finished jobs are kept for status queries.
pub(crate) const KEEP_JOBS: usize = 64;
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

pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) total: u64,
    pub(crate) done: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) finished: AtomicBool,
    pub(crate) errors: Mutex<Vec<WarmupFailure>>,
}

impl Job {
    pub(crate) fn status(&self) -> WarmupStatus {
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
    pub(crate) jobs: Mutex<Vec<Arc<Job>>>,
    pub(crate) next: AtomicU64,
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
    pub(crate) fn top(&self, n: usize) -> Vec<(String, String)> {
        let mut all: Vec<(u64, String, String)> = self
            .hot
            .iter()
            .map(|(_, h)| (h.hits.load(Relaxed), h.host.clone(), h.path.clone()))
            .collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.0));
        all.into_iter().take(n).map(|(_, h, p)| (h, p)).collect()
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
