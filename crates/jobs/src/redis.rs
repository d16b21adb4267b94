//! The Redis Streams store (shared by instances). Placeholder until the
//! implementation lands: every call reports the store as unavailable.

use perfgate_cache::redis::L2;

use crate::error::StoreError;
use crate::job::{Job, JobState};
use crate::store::{Counts, Submitted};

/// Handle to the Redis store; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    _l2: L2,
}

fn todo() -> StoreError {
    StoreError::Unavailable("the Redis job store is not built yet".into())
}

impl RedisStore {
    /// A store on the L2 connection.
    pub fn new(l2: L2, _lease: std::time::Duration) -> RedisStore {
        RedisStore { _l2: l2 }
    }
    pub async fn submit(&self, _job: Job, _max_queued: usize) -> Result<Submitted, StoreError> {
        Err(todo())
    }
    pub async fn claim(&self, _route: &str) -> Result<Option<Job>, StoreError> {
        Err(todo())
    }
    pub async fn finish(&self, _job: Job, _result_ttl_ms: u64) -> Result<(), StoreError> {
        Err(todo())
    }
    pub async fn heartbeat(&self, _job: &Job) -> Result<(), StoreError> {
        Err(todo())
    }
    pub async fn get(&self, _id: &str) -> Result<Option<Job>, StoreError> {
        Err(todo())
    }
    pub async fn list(&self, _state: JobState, _limit: usize) -> Result<Vec<Job>, StoreError> {
        Err(todo())
    }
    pub async fn requeue(&self, _id: &str) -> Result<Job, StoreError> {
        Err(todo())
    }
    pub async fn discard(&self, _id: &str) -> Result<(), StoreError> {
        Err(todo())
    }
    pub async fn counts(&self) -> Counts {
        Counts::default()
    }
}
