//! The async job queue: submissions to slow upstream endpoints are stored
//! durably and answered with `202 Accepted`; workers make the upstream
//! calls with retries, priorities and de-duplication.
//!
//! - [`job`]: a job and its stored form;
//! - [`dedup`]: recognising the same work;
//! - [`store`]: the store interface, over [`embedded`] (redb, the default)
//!   and [`redis`] (Redis Streams, shared by instances);
//! - [`error`]: store errors.
//!
//! The HTTP side (routes, workers calling the upstream, status pages) is in
//! `perfgate_proxy::jobs`; this crate does no HTTP.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod dedup;
pub mod embedded;
pub mod error;
pub mod job;
pub mod redis;
pub mod store;

pub use error::StoreError;
pub use job::{Job, JobRequest, JobResult, JobState};
pub use store::{Counts, Store, Submitted};
