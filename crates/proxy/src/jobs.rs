//! Async routes: a `POST` to a route with `[routes.async]` is stored as a
//! job and answered `202 Accepted` with its task id and status URL; workers
//! (`perfgate_jobs::workers`, with `jobs/worker.rs` making the call) make the upstream call through the route's pool, with
//! retries, priorities and a quota; `GET {status_path}/{task_id}` shows the
//! job and, once done, the upstream's answer (`…/{task_id}/result` returns
//! it as it came).
//!
//! De-duplication: a submission identical to a queued or running job joins
//! it (`202`, same task id, `"deduplicated": true`); one identical to a job
//! that finished within `jobs.result_ttl` is answered at once with `200`
//! and that job's status document, result included, without an upstream
//! call. Dead jobs are no answer: the same submission is new work.

mod status;
mod submit;
mod worker;

pub use perfgate_jobs::queue::Jobs;
