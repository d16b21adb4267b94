//! The async job queue: submissions to slow upstream endpoints are stored
//! durably and answered with `202 Accepted`; workers make the upstream
//! calls with retries, priorities and de-duplication.
//!
//! - [`job`]: a job and its stored form;
//! - [`dedup`]: recognising the same work;
//! - [`store`]: the store interface, over [`embedded`] (redb, the default)
//!   and [`redis`] (Redis Streams, shared by instances);
//! - [`error`]: store errors;
//! - [`queue`]: this instance's queue (the store it opened, per-route
//!   wake-ups, quotas and statistics, finished jobs in memory, status
//!   documents);
//! - [`workers`]: the workers that claim jobs and hand them to a
//!   [`workers::Runner`].
//!
//! The HTTP side (submission, status pages, the upstream call: the
//! `Runner`) is in `perfgate_proxy::jobs`; this crate makes no HTTP call.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod dedup;
pub mod embedded;
pub mod error;
pub mod job;
pub mod queue;
pub mod redis;
pub mod store;
pub mod workers;

pub use error::StoreError;
pub use job::{Job, JobRequest, JobResult, JobState};
pub use store::{Counts, Store, Submitted};
