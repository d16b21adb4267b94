//! perfgate's one Redis client: the connection (standalone or Cluster),
//! a deadline on every call, the breaker that keeps an unavailable Redis
//! from adding latency to requests, Lua scripts, SCAN over every master,
//! pub/sub with its own reconnect loop, and the shared GCRA rate limit.
//!
//! Users build their own keys with [`Redis::key`] (the deployment's
//! `redis.key_prefix`) and keep every command to one key or one hash slot,
//! so everything works on Redis Cluster. The cache's L2 tier
//! (`perfgate_cache::redis`), the job queue's Redis Streams store
//! (`perfgate_jobs::redis`) and the shared rate limits all go through one
//! [`Redis`] handle, so they share its connection, breaker and health.
//!
//! Invariants: every call has a deadline; a failed call opens the breaker
//! and for `redis.retry_after` calls return [`Error::Skipped`] at once, then
//! one call probes again.

mod client;
mod conn;
mod gcra;
mod pubsub;

pub use client::{Health, Redis, glob_escape};
pub use gcra::RateReply;
pub use pubsub::Push;

/// Re-exported so that users build commands and scripts with the same
/// redis-rs version as the connection.
pub use ::redis::{Cmd, FromRedisValue, Script, Value, cmd};

/// Why a Redis call returned nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The call did not finish within its deadline.
    #[error("redis call timed out")]
    Timeout,
    /// Redis is not connected yet or answered with an error.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Not attempted: a call failed less than `retry_after` ago.
    #[error("redis skipped after a recent failure")]
    Skipped,
}
