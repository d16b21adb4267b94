//! The store behind the queue: embedded (redb) or Redis Streams, one
//! interface.

use crate::embedded::Embedded;
use crate::error::StoreError;
use crate::job::{Job, JobState};
use crate::redis::RedisStore;

pub use crate::job::{Counts, Submitted};

/// The job store.
#[derive(Clone)]
pub enum Store {
    /// One redb file, this instance only.
    Embedded(Embedded),
    /// Redis Streams, shared by the instances.
    Redis(RedisStore),
}

impl Store {
    /// Stores a new job, or returns the one it duplicates.
    pub async fn submit(&self, job: Job, max_queued: usize) -> Result<Submitted, StoreError> {
        match self {
            Store::Embedded(s) => s.submit(job, max_queued).await,
            Store::Redis(s) => s.submit(job, max_queued).await,
        }
    }

    /// The next job of `route`, marked running.
    pub async fn claim(&self, route: &str) -> Result<Option<Job>, StoreError> {
        match self {
            Store::Embedded(s) => s.claim(route).await,
            Store::Redis(s) => s.claim(route).await,
        }
    }

    /// Records what a worker made of a job: terminal, or queued again.
    pub async fn finish(&self, job: Job, result_ttl_ms: u64) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.finish(job, result_ttl_ms).await,
            Store::Redis(s) => s.finish(job, result_ttl_ms).await,
        }
    }

    /// Tells the store a running job is still being worked on.
    pub async fn heartbeat(&self, job: &Job) -> Result<(), StoreError> {
        match self {
            // The embedded store is owned by this instance: nobody else
            // could take the job over.
            Store::Embedded(_) => Ok(()),
            Store::Redis(s) => s.heartbeat(job).await,
        }
    }

    /// One job.
    pub async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        match self {
            Store::Embedded(s) => s.get(id),
            Store::Redis(s) => s.get(id).await,
        }
    }

    /// Jobs in a state, oldest first.
    pub async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, StoreError> {
        match self {
            Store::Embedded(s) => s.list(state, limit),
            Store::Redis(s) => s.list(state, limit).await,
        }
    }

    /// A dead or failed job back to the queue, attempts reset.
    pub async fn requeue(&self, id: &str) -> Result<Job, StoreError> {
        match self {
            Store::Embedded(s) => s.requeue(id).await,
            Store::Redis(s) => s.requeue(id).await,
        }
    }

    /// Deletes a finished job.
    pub async fn discard(&self, id: &str) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.discard(id).await,
            Store::Redis(s) => s.discard(id).await,
        }
    }

    /// Jobs per route and state.
    pub async fn counts(&self) -> Counts {
        match self {
            Store::Embedded(s) => s.counts(),
            Store::Redis(s) => s.counts().await,
        }
    }

    /// Milliseconds since the Unix epoch by the store's clock: what job
    /// timestamps and retry times are measured against. (The Redis store
    /// reads the system clock.)
    pub fn now_ms(&self) -> u64 {
        match self {
            Store::Embedded(s) => s.clock().unix_ms(),
            Store::Redis(_) => crate::job::now_ms(),
        }
    }

    /// `embedded` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
        }
    }
}
