//! Async jobs: the queue shared by every async route, and the per-route
//! settings that make a route answer `202 Accepted` and call its upstream
//! from a worker.

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};

/// Where accepted jobs are kept.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum JobBackend {
    /// A crash-safe file in `jobs.data_dir` (redb), owned by this instance.
    #[default]
    Embedded,
    /// Redis Streams with consumer groups (the `[redis]` connection), shared
    /// by every instance.
    Redis,
}

/// The job queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// `embedded` (default) or `redis`.
    pub backend: JobBackend,
    /// Directory of the embedded store (created when missing).
    pub data_dir: String,
    /// Jobs waiting or running at once, over all async routes; past it a
    /// submission is refused with 503 and `Retry-After` (never dropped).
    pub max_queued: usize,
    /// How long a finished job (and its result) is kept; an identical
    /// submission within it is answered from the result.
    pub result_ttl: Duration,
    /// How long a claimed job stays invisible to other workers without a
    /// heartbeat (Redis backend): a worker that died is replaced after it.
    pub lease: Duration,
    /// Generic status URL of every job: `GET {status_prefix}/{task_id}`.
    pub status_prefix: String,
    /// Bytes of finished jobs (results included) kept in memory for status
    /// reads, on top of the store.
    pub finished_cache_bytes: ByteSize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            backend: JobBackend::Embedded,
            data_dir: "perfgate-data".into(),
            max_queued: 100_000,
            result_ttl: Duration::from_secs(3600),
            lease: Duration::from_secs(30),
            status_prefix: "/perfgate/jobs".into(),
            finished_cache_bytes: ByteSize(64 * 1024 * 1024),
        }
    }
}

/// How submissions of an async route are recognised as the same work.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DedupMode {
    /// Method, path, query and the body (JSON canonicalised: keys sorted,
    /// whitespace dropped; other bodies byte for byte).
    #[default]
    Request,
    /// Like `request`, but the URL in the JSON field `dedup_url_field` is
    /// normalised first (scheme and host case, default port, sorted query,
    /// tracking parameters and fragment dropped): link analysis.
    Url,
    /// Every submission is new work.
    Off,
}

/// Whose submissions can share one job.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DedupScope {
    /// Only the same caller's: the JWT subject where the route validates
    /// tokens, else the `Authorization` and `Cookie` values (callers with
    /// neither are one anonymous caller).
    #[default]
    PerCaller,
    /// Everyone's: any caller gets the task (and result) of the same work.
    /// Results are then stored without `Set-Cookie`.
    Global,
}

/// An async route: `POST` answers `202 Accepted` with a task id; a worker
/// makes the upstream call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AsyncRouteConfig {
    /// Path the worker calls on the route's upstream (default: the path of
    /// the submission with `strip_suffix` removed).
    pub upstream_path: Option<String>,
    /// Suffix removed from the submitted path to get the upstream path
    /// (`/api/v1/analyze/async` → `/api/v1/analyze`).
    pub strip_suffix: String,
    /// Status URL prefix of this route: `GET {status_path}/{task_id}`
    /// (e.g. `/api/v1/analyze/status`); the generic `jobs.status_prefix`
    /// works too.
    pub status_path: Option<String>,
    /// Upstream calls of this route at once (workers).
    pub concurrency: usize,
    /// Upstream calls allowed per `rate_per` (0 = no limit): a third-party
    /// API's quota.
    pub rate: u32,
    /// The period of `rate`.
    pub rate_per: Duration,
    /// Attempts before a job is dead (retries on 5xx, timeouts and
    /// connection errors; never on 4xx).
    pub max_attempts: u32,
    /// First retry delay (exponential, full jitter).
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Deadline of one upstream call.
    pub timeout: Duration,
    /// Largest submission body; larger → 413.
    pub max_body_bytes: ByteSize,
    /// How duplicates are recognised.
    pub dedup: DedupMode,
    /// The JSON field holding the URL, for `dedup = "url"`.
    pub dedup_url_field: String,
    /// `per-caller` (default): a submission joins only the same caller's
    /// job; `global`: anyone's.
    pub dedup_scope: DedupScope,
    /// Estimated cost of one upstream call (any currency), for cost tracking.
    pub unit_cost: f64,
    /// Batching: when set, workers collect up to `batch_max` jobs (or what
    /// arrives within `batch_window`) and POST their JSON bodies as one
    /// array to this upstream path; the answer must be a JSON array with
    /// one result per job, in order.
    pub batch_path: Option<String>,
    /// Most jobs in one batch call.
    pub batch_max: usize,
    /// How long a worker waits for more jobs to fill a batch.
    pub batch_window: Duration,
}

impl Default for AsyncRouteConfig {
    fn default() -> Self {
        Self {
            upstream_path: None,
            strip_suffix: "/async".into(),
            status_path: None,
            concurrency: 4,
            rate: 0,
            rate_per: Duration::from_secs(1),
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
            max_body_bytes: ByteSize(1024 * 1024),
            dedup: DedupMode::Request,
            dedup_url_field: "url".into(),
            dedup_scope: DedupScope::PerCaller,
            unit_cost: 0.0,
            batch_path: None,
            batch_max: 10,
            batch_window: Duration::from_millis(50),
        }
    }
}
