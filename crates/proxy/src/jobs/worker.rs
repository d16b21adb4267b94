//! Running claimed jobs (the [`Runner`] of `perfgate_jobs::workers`):
//! the upstream call through the route's pool (`Gateway::forward`:
//! breaker, health, balancing apply), and the outcome: 2xx/3xx →
//! succeeded; 4xx → failed (never retried); 5xx, timeouts and connection
//! errors → queued again after an exponential, fully jittered backoff,
//! until `max_attempts`, then dead.
//!
//! With `batch_path`, the claimed jobs' JSON bodies are POSTed as one
//! array and the answer's array is split back to the jobs, in order.

use std::net::{IpAddr, SocketAddr};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Uri, Version};
use http_body_util::BodyExt;
use perfgate_config::AsyncRouteConfig;
use perfgate_jobs::{Job, JobResult, JobState};
use perfgate_observe::CallResult;

use crate::context::Waits;
use crate::context::{Conn, Outgoing};
use crate::gateway::Gateway;
use crate::route::Route;
use perfgate_http::body::Body;
use perfgate_jobs::queue::{Jobs, head_fields, stored_fields};
use perfgate_jobs::workers::{self, Runner};

/// Largest upstream answer kept as a job result.
const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// How one attempt ended.
#[derive(Clone)]
enum Attempt {
    /// The upstream answered.
    Answered(JobResult, Bytes),
    /// No usable answer (timeout, connection error, broken body).
    Failed(String),
}

impl Gateway {
    /// Starts the job workers each async route of the current policy is
    /// missing (at start and after every reload), under the supervisor.
    pub fn sync_job_workers(self: &Arc<Self>) {
        let Some(jobs) = self.jobs.get() else { return };
        let policy = self.policy();
        let routes = policy
            .routes
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.async_job.as_ref()?.concurrency)));
        workers::sync(self, jobs, &self.tasks, routes);
    }

    /// One attempt of a job: the upstream call and its whole body, under
    /// the route's `timeout`.
    async fn attempt(&self, route: &Route, aj: &AsyncRouteConfig, job: &Job) -> Attempt {
        let uri: Uri = match job.request.target.parse() {
            Ok(u) => u,
            Err(e) => return Attempt::Failed(format!("invalid target: {e}")),
        };
        let method = Method::from_bytes(job.request.method.as_bytes()).unwrap_or(Method::POST);
        let headers = head_fields(&job.request.headers);
        let conn = submitter(job);
        let mut waits = Waits::default();
        let call = async {
            let rsp = self
                .forward(
                    route,
                    Outgoing {
                        method,
                        uri: &uri,
                        headers,
                        version: Version::HTTP_11,
                    },
                    &conn,
                    Body::full(job.body.clone()),
                    &mut waits,
                )
                .await;
            // A job call is no client request: its attempts are counted here.
            self.records().upstream(Some(route), waits.attempts);
            let rsp = rsp.map_err(|e| e.detail)?;
            let (parts, body) = rsp.into_parts();
            let body = http_body_util::Limited::new(body, MAX_RESULT_BYTES)
                .collect()
                .await
                .map_err(|e| format!("upstream body: {e}"))?
                .to_bytes();
            Ok::<_, String>((
                JobResult {
                    status: parts.status.as_u16(),
                    headers: stored_fields(parts.headers),
                },
                body,
            ))
        };
        match tokio::time::timeout(aj.timeout.get(), call).await {
            Ok(Ok((result, body))) => Attempt::Answered(result, body),
            Ok(Err(e)) => Attempt::Failed(e),
            Err(_) => Attempt::Failed(format!("no answer within {}", aj.timeout)),
        }
    }

    /// Runs claimed jobs: each group of jobs from one caller (see
    /// [`caller_of`]) as one upstream call, the groups at once.
    async fn run_claimed(
        &self,
        jobs: &Jobs,
        route: &Route,
        aj: &AsyncRouteConfig,
        claimed: Vec<Job>,
    ) {
        let groups = by_caller(claimed);
        futures_util::future::join_all(
            groups
                .into_iter()
                .map(|group| self.run(jobs, route, aj, group)),
        )
        .await;
    }

    /// Runs claimed jobs as one upstream call (one job, or a batch to
    /// `batch_path`) and records each job's outcome.
    async fn run(&self, jobs: &Jobs, route: &Route, aj: &AsyncRouteConfig, batch: Vec<Job>) {
        let heartbeat = begin(jobs, route, &batch);
        let wait = jobs.route(&route.name).quota_wait(aj);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let outcomes = match (&aj.batch_path, batch.as_slice()) {
            (None, [job]) => vec![self.attempt(route, aj, job).await],
            _ => self.attempt_batch(route, aj, &batch).await,
        };
        heartbeat.abort();
        if let Some(first) = outcomes.first() {
            self.count_attempt(jobs, route, aj, first);
        }
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            conclude(jobs, route, aj, job, outcome).await;
        }
    }

    /// Metrics and statistics of one upstream call.
    fn count_attempt(&self, jobs: &Jobs, route: &Route, aj: &AsyncRouteConfig, outcome: &Attempt) {
        let result = match outcome {
            Attempt::Answered(r, _) if r.status < 400 => CallResult::success,
            Attempt::Answered(r, _) if r.status < 500 => CallResult::client_error,
            _ => CallResult::error,
        };
        self.metrics.jobs.call(&route.name, result, aj.unit_cost);
        jobs.route(&route.name).count_call(aj.unit_cost);
    }

    /// One batch call: the jobs' JSON bodies as one array; the answer's
    /// array split back in order. Anything else is every job's outcome.
    async fn attempt_batch(
        &self,
        route: &Route,
        aj: &AsyncRouteConfig,
        batch: &[Job],
    ) -> Vec<Attempt> {
        let Some(path) = &aj.batch_path else {
            return Vec::new();
        };
        let items: Vec<serde_json::Value> = batch
            .iter()
            .map(|j| {
                serde_json::from_slice(&j.body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&j.body).into_owned())
                })
            })
            .collect();
        let mut call = batch[0].clone();
        call.request.target = path.clone();
        call.request.method = "POST".into();
        call.request
            .headers
            .retain(|(k, _)| k != "content-type" && k != "content-length");
        call.request
            .headers
            .push(("content-type".into(), "application/json".into()));
        call.body = Bytes::from(serde_json::to_vec(&items).unwrap_or_default());
        let all = |a: &Attempt| -> Vec<Attempt> { batch.iter().map(|_| a.clone()).collect() };
        let outcome = self.attempt(route, aj, &call).await;
        let Attempt::Answered(result, body) = &outcome else {
            return all(&outcome);
        };
        if result.status >= 300 {
            return all(&outcome);
        }
        match serde_json::from_slice::<Vec<serde_json::Value>>(body) {
            Ok(results) if results.len() == batch.len() => results
                .into_iter()
                .map(|item| {
                    Attempt::Answered(
                        JobResult {
                            status: 200,
                            headers: vec![("content-type".into(), "application/json".into())],
                        },
                        Bytes::from(serde_json::to_vec(&item).unwrap_or_default()),
                    )
                })
                .collect(),
            Ok(results) => all(&Attempt::Failed(format!(
                "the batch endpoint answered {} results for {} jobs",
                results.len(),
                batch.len()
            ))),
            Err(e) => all(&Attempt::Failed(format!(
                "the batch endpoint did not answer a JSON array: {e}"
            ))),
        }
    }
}

/// Before a call: the wait time of first attempts, and a heartbeat that
/// keeps the jobs ours while the call lasts (Redis: other instances take
/// over jobs whose lease ran out). Abort the handle when done.
fn begin(jobs: &Jobs, route: &Route, batch: &[Job]) -> tokio::task::JoinHandle<()> {
    let started = jobs.store.now_ms();
    let queue = jobs.route(&route.name);
    for job in batch {
        if job.attempts == 1 {
            queue.record_wait(started.saturating_sub(job.created_ms));
        }
    }
    let store = jobs.store.clone();
    let batch = batch.to_vec();
    let every = (jobs.lease / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            for job in &batch {
                if let Err(e) = store.heartbeat(job).await {
                    tracing::warn!(task_id = %job.id, error = %e, "job heartbeat failed");
                }
            }
        }
    })
}

/// Records what an attempt made of a job: succeeded (2xx/3xx), failed
/// (4xx), or queued again after a backoff / dead (5xx, no answer).
async fn conclude(
    jobs: &Jobs,
    route: &Route,
    aj: &AsyncRouteConfig,
    mut job: Job,
    outcome: Attempt,
) {
    let now = jobs.store.now_ms();
    // A result others may be given never carries the submitter's cookies.
    let outcome = match outcome {
        Attempt::Answered(mut result, body) if !job.private_result => {
            result
                .headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("set-cookie"));
            Attempt::Answered(result, body)
        }
        other => other,
    };
    let retry = |job: &mut Job, why: String| {
        job.last_error = Some(why);
        if job.attempts < job.max_attempts {
            let pause = perfgate_traffic::retry::backoff(
                job.attempts,
                aj.backoff_base.get(),
                aj.backoff_max.get(),
            );
            job.state = JobState::Queued;
            job.next_attempt_ms =
                now.saturating_add(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
        } else {
            job.state = JobState::Dead;
            job.finished_ms = Some(now);
        }
    };
    match outcome {
        Attempt::Answered(result, body) if result.status < 400 => {
            job.state = JobState::Succeeded;
            job.finished_ms = Some(now);
            job.last_error = None;
            job.result = Some(result);
            job.result_body = body;
        }
        Attempt::Answered(result, body) if result.status < 500 => {
            job.state = JobState::Failed;
            job.finished_ms = Some(now);
            job.last_error = Some(format!("the upstream answered {}", result.status));
            job.result = Some(result);
            job.result_body = body;
        }
        Attempt::Answered(result, body) => {
            let why = format!("the upstream answered {}", result.status);
            job.result = Some(result);
            job.result_body = body;
            retry(&mut job, why);
        }
        Attempt::Failed(why) => retry(&mut job, why),
    }
    if job.state.is_terminal() {
        let first = job.started_ms.unwrap_or(now);
        jobs.route(&route.name)
            .record_done(now.saturating_sub(first));
        if job.state == JobState::Dead {
            tracing::warn!(task_id = %job.id, route = %route.name, attempts = job.attempts, error = job.last_error.as_deref().unwrap_or(""), "job dead after its last attempt");
        }
    }
    let id = job.id.clone();
    let ttl = u64::try_from(jobs.result_ttl.as_millis()).unwrap_or(u64::MAX);
    let done = job.state.is_terminal().then(|| Arc::new(job.clone()));
    let recorded = jobs.store.finish(job, ttl).await;
    if let (Ok(()), Some(done)) = (&recorded, &done) {
        jobs.remember(done);
    }
    if let Err(e) = recorded {
        // The job stays running in the store: after a restart (or the
        // lease, on Redis) it runs again. At least once.
        tracing::error!(task_id = %id, error = %e, "could not record a job's outcome");
    }
}

/// The connection a job's upstream call describes: the submitting client's
/// address and protocol, and its user. Jobs stored before these were kept
/// fall back to the loopback address.
fn submitter(job: &Job) -> Conn {
    let ip = job
        .request
        .client_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let mut conn = Conn::new(SocketAddr::new(ip, 0), job.request.tls);
    conn.user = job.request.user.as_deref().map(Arc::from);
    conn
}

/// What makes two jobs one caller's, so that one upstream call can carry
/// both: the same credentials (`Authorization`, `Cookie`), user, client
/// address and protocol. A batch call is sent with its first job's head,
/// so jobs that differ in any of these never share one.
fn caller_of(job: &Job) -> impl Eq + '_ {
    let credentials: Vec<&(String, String)> = job
        .request
        .headers
        .iter()
        .filter(|(k, _)| {
            k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("cookie")
        })
        .collect();
    (
        credentials,
        job.request.user.as_deref(),
        job.request.client_ip.as_deref(),
        job.request.tls,
    )
}

/// Claimed jobs split into groups of one caller each, in claim order.
fn by_caller(claimed: Vec<Job>) -> Vec<Vec<Job>> {
    let mut groups: Vec<Vec<Job>> = Vec::new();
    for job in claimed {
        match groups
            .iter_mut()
            .find(|g| g.first().is_some_and(|f| caller_of(f) == caller_of(&job)))
        {
            Some(g) => g.push(job),
            None => groups.push(vec![job]),
        }
    }
    groups
}

impl Runner for Gateway {
    type Route = Arc<Route>;

    fn route(&self, name: &str) -> Option<(Arc<Route>, Arc<AsyncRouteConfig>)> {
        let policy = self.policy();
        let route = policy.routes.iter().find(|r| &*r.name == name)?;
        Some((route.clone(), route.async_job.clone()?))
    }

    async fn run(&self, jobs: &Jobs, route: &Arc<Route>, aj: &AsyncRouteConfig, claimed: Vec<Job>) {
        self.run_claimed(jobs, route, aj, claimed).await;
    }

    fn depth(&self, route: &Arc<str>, state: &'static str, n: i64) {
        self.metrics.jobs.set_depth(route, state, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perfgate_jobs::JobRequest;

    fn job(auth: &str, ip: &str) -> Job {
        Job::new(
            "r",
            JobRequest {
                headers: vec![("authorization".into(), auth.into())],
                client_ip: Some(ip.into()),
                ..JobRequest::default()
            },
            Bytes::new(),
            0,
        )
    }

    #[test]
    fn a_batch_is_split_by_caller_in_claim_order() {
        let claimed = vec![
            job("Bearer a", "192.0.2.1"),
            job("Bearer b", "192.0.2.1"),
            job("Bearer a", "192.0.2.1"),
            job("Bearer a", "192.0.2.2"),
        ];
        let ids: Vec<String> = claimed.iter().map(|j| j.id.clone()).collect();
        let groups: Vec<Vec<String>> = by_caller(claimed)
            .into_iter()
            .map(|g| g.into_iter().map(|j| j.id).collect())
            .collect();
        assert_eq!(
            groups,
            [
                vec![ids[0].clone(), ids[2].clone()],
                vec![ids[1].clone()],
                vec![ids[3].clone()],
            ]
        );
    }

    #[test]
    fn the_call_describes_the_submitter() {
        let mut j = job("Bearer a", "203.0.113.9");
        j.request.tls = true;
        j.request.user = Some("alice".into());
        let conn = submitter(&j);
        assert_eq!(conn.peer.ip().to_string(), "203.0.113.9");
        assert!(conn.tls);
        assert_eq!(conn.user.as_deref(), Some("alice"));
    }
}
