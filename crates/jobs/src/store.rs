//! The store behind the queue: embedded (redb) or Redis Streams, one
//! interface.

use std::collections::HashMap;

use crate::embedded::Embedded;
use crate::error::StoreError;
use crate::job::{Job, JobState};
use crate::redis::RedisStore;

/// What a submission became.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// A new job, queued.
    New(Job),
    /// The same work is queued or running already: that job.
    Duplicate(Job),
    /// The same work finished within `result_ttl`: that job, with its result.
    Done(Job),
}

/// Jobs per route and state.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// route → state → jobs.
    pub by_route: HashMap<String, HashMap<JobState, i64>>,
}

impl Counts {
    /// Adds `n` (possibly negative) jobs of `route` in `state`.
    pub(crate) fn add(&mut self, route: &str, state: JobState, n: i64) {
        let e = self
            .by_route
            .entry(route.to_string())
            .or_default()
            .entry(state)
            .or_insert(0);
        *e += n;
    }

    /// Adds every count of `other`.
    pub(crate) fn merge(&mut self, other: &Counts) {
        for (route, states) in &other.by_route {
            for (state, n) in states {
                self.add(route, *state, *n);
            }
        }
    }

    /// Jobs in `state` over all routes, as counted (deltas may be negative).
    pub(crate) fn total_signed(&self, state: JobState) -> i64 {
        self.by_route.values().filter_map(|s| s.get(&state)).sum()
    }

    /// Jobs in `state` over all routes.
    pub fn total(&self, state: JobState) -> u64 {
        u64::try_from(self.total_signed(state).max(0)).unwrap_or(0)
    }
}

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
