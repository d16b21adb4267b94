//! Cache warm-up: fill the cache for a list of paths, or for the keys that
//! were requested most recently. Warm-up requests go through the routes like
//! client requests (so they only ever reach configured upstreams), share the
//! coalesced fetch path, and run concurrency-limited in the background with
//! their progress kept for the admin API.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use http::header::HOST;
use http::{HeaderValue, Request, Uri};

use perfgate_observe::RequestKind;

use crate::context::Conn;
use crate::gateway::Gateway;
use crate::hot::{Job, KEEP_JOBS, WarmupFailure, WarmupRequest, WarmupStatus};
use perfgate_http::body::Body;

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
