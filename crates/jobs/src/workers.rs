//! Workers: per async route, `concurrency` services under the gateway's
//! supervisor that claim jobs (a batch of them with `batch_path`: up to
//! `batch_max`, or what arrives within `batch_window`), hand them to the
//! [`Runner`] (the proxy, which makes the upstream call and records the
//! outcome), and wait for work between jobs.
//!
//! Workers follow reloads: each asks the runner for its route
//! before every job, so a lower `concurrency` (or a removed route) makes
//! the extra ones stop, and [`sync`] starts the missing ones. A worker
//! stops claiming when its shutdown is requested and ends once the jobs in
//! hand are recorded; the supervisor waits for that up to its grace
//! (`server.drain_timeout` plus a second) and then aborts it: a job cut
//! short runs again after a restart.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use perfgate_config::AsyncRouteConfig;
use perfgate_runtime::{Shutdown, Supervisor};

use crate::queue::Jobs;
use crate::{Job, JobState};

/// Idle workers look for due retries and other instances' jobs this often.
const POLL: Duration = Duration::from_millis(100);
/// Pause after a store error before trying again.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// What runs claimed jobs: the proxy, which owns routes and upstreams.
pub trait Runner: Send + Sync + 'static {
    /// A route as the runner knows it, held from before the claim until
    /// the claimed jobs are recorded.
    type Route: Send + Sync;
    /// The route and its async settings as of now; `None` once the route
    /// is gone or no longer async.
    fn route(&self, name: &str) -> Option<(Self::Route, Arc<AsyncRouteConfig>)>;
    /// Runs claimed jobs of one route and records every job's outcome.
    fn run(
        &self,
        jobs: &Jobs,
        route: &Self::Route,
        settings: &AsyncRouteConfig,
        claimed: Vec<Job>,
    ) -> impl Future<Output = ()> + Send;
    /// Publishes how many jobs of `route` are in `state`.
    fn depth(&self, route: &Arc<str>, state: &'static str, n: i64);
}

/// Starts, under `services`, the workers each async route is missing (at
/// start and after every reload), and the queue-depth updater once.
/// `routes` are the async routes and their `concurrency`.
pub fn sync<R: Runner>(
    runner: &Arc<R>,
    jobs: &Arc<Jobs>,
    services: &Supervisor,
    routes: impl IntoIterator<Item = (Arc<str>, usize)>,
) {
    for (route, concurrency) in routes {
        let queue = jobs.route(&route);
        loop {
            let n = queue.workers.load(Ordering::Acquire);
            if n >= concurrency {
                break;
            }
            if queue
                .workers
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let (runner, jobs, route) = (Arc::downgrade(runner), jobs.clone(), route.clone());
                services.spawn("job worker", move |shutdown| {
                    worker(runner, jobs, route, n, shutdown)
                });
            }
        }
    }
    if !jobs.depth_updater.swap(true, Ordering::AcqRel) {
        let (runner, jobs) = (Arc::downgrade(runner), jobs.clone());
        services.spawn("job queue depth", move |shutdown| {
            depth_updater(runner, jobs, shutdown)
        });
    }
}

/// More jobs for a batch: up to `batch_max`, or what arrives within
/// `batch_window` after the first.
async fn fill_batch(jobs: &Jobs, route: &str, aj: &AsyncRouteConfig, first: Job) -> Vec<Job> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + aj.batch_window.get();
    let queue = jobs.route(route);
    while batch.len() < aj.batch_max {
        match jobs.store.claim(route).await {
            Ok(Some(job)) => batch.push(job),
            Ok(None) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                let wait = (deadline - now).min(Duration::from_millis(5));
                tokio::select! {
                    () = queue.notify.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(_) => break,
        }
    }
    batch
}

async fn worker<R: Runner>(
    runner: Weak<R>,
    jobs: Arc<Jobs>,
    route_name: Arc<str>,
    index: usize,
    mut shutdown: Shutdown,
) {
    let queue = jobs.route(&route_name);
    loop {
        if shutdown.is_requested() {
            break;
        }
        let Some(runner) = runner.upgrade() else {
            break;
        };
        let Some((route, aj)) = runner.route(&route_name) else {
            break;
        };
        if index >= aj.concurrency {
            break;
        }
        match jobs.store.claim(&route_name).await {
            Ok(Some(job)) => {
                let batch = if aj.batch_path.is_some() {
                    fill_batch(&jobs, &route_name, &aj, job).await
                } else {
                    vec![job]
                };
                runner.run(&jobs, &route, &aj, batch).await;
            }
            Ok(None) => {
                drop(route);
                drop(runner);
                tokio::select! {
                    () = queue.notify.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    () = shutdown.requested() => {}
                }
            }
            Err(e) => {
                drop(route);
                drop(runner);
                tracing::warn!(route = %route_name, error = %e, "job store unavailable; workers pause");
                tokio::select! {
                    () = tokio::time::sleep(STORE_ERROR_PAUSE) => {}
                    () = shutdown.requested() => {}
                }
            }
        }
    }
    queue.workers.fetch_sub(1, Ordering::AcqRel);
}

/// Publishes `perfgate_jobs_depth` every second.
async fn depth_updater<R: Runner>(runner: Weak<R>, jobs: Arc<Jobs>, mut shutdown: Shutdown) {
    loop {
        let Some(r) = runner.upgrade() else { return };
        let counts = jobs.store.counts().await;
        let live = counts.total(JobState::Queued) + counts.total(JobState::Running);
        jobs.live
            .store(i64::try_from(live).unwrap_or(i64::MAX), Ordering::Relaxed);
        for (route, states) in &counts.by_route {
            let route: Arc<str> = Arc::from(route.as_str());
            for st in JobState::ALL {
                let n = states.get(&st).copied().unwrap_or(0).max(0);
                r.depth(&route, st.as_str(), n);
            }
        }
        drop(r);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.requested() => return,
        }
    }
}
