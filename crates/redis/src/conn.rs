//! The data connection (standalone or cluster) and the circuit breaker that
//! keeps an unavailable Redis from adding latency to requests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisResult, Value};

/// Longest pause between connection attempts (commands and pub/sub).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First pause after a failed connection attempt.
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// A connection that reconnects by itself: redis-rs' `ConnectionManager`
/// for a standalone server, its cluster connection (which follows slot
/// moves and reconnects nodes) for a cluster. Both are cheap handles to a
/// multiplexed connection, so cloning per call is the intended use.
#[derive(Clone)]
pub(crate) enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Runs one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self.clone() {
            Conn::Standalone(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }

    /// Runs groups of commands, each group touching one key, and returns the
    /// replies per group. A standalone server gets them all in one pipeline
    /// (one round trip); a cluster gets one pipeline per group, sent
    /// concurrently, because a pipeline must stay within one hash slot.
    pub(crate) async fn groups(&self, groups: Vec<Vec<Cmd>>) -> RedisResult<Vec<Vec<Value>>> {
        match self {
            Conn::Standalone(c) => {
                let mut pipe = Pipeline::new();
                for cmd in groups.iter().flatten() {
                    pipe.add_command(cmd.clone());
                }
                let mut replies: Vec<Value> = pipe.query_async(&mut c.clone()).await?;
                // Split the flat reply list back into the groups, from the end.
                let mut out = Vec::with_capacity(groups.len());
                for g in groups.iter().rev() {
                    let at = replies.len().saturating_sub(g.len());
                    out.push(replies.split_off(at));
                }
                out.reverse();
                Ok(out)
            }
            Conn::Cluster(c) => {
                let mut set = tokio::task::JoinSet::new();
                let n = groups.len();
                for (i, g) in groups.into_iter().enumerate() {
                    let mut c = c.clone();
                    set.spawn(async move {
                        let mut pipe = Pipeline::new();
                        for cmd in g {
                            pipe.add_command(cmd);
                        }
                        let r: RedisResult<Vec<Value>> = pipe.query_async(&mut c).await;
                        (i, r)
                    });
                }
                let mut out = vec![Vec::new(); n];
                while let Some(joined) = set.join_next().await {
                    let (i, r) = joined.map_err(|e| {
                        RedisError::from((::redis::ErrorKind::Client, "task failed", e.to_string()))
                    })?;
                    if let Some(slot) = out.get_mut(i) {
                        *slot = r?;
                    }
                }
                Ok(out)
            }
        }
    }
}

/// True for errors that mean Redis is unreachable or unhealthy (as opposed
/// to a reply error about one key, such as `WRONGTYPE`).
pub(crate) fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || e.is_unrecoverable_error()
}

/// After a failure, calls are refused for `retry_after` so that requests do
/// not each wait for the deadline while Redis is down; then one call is let
/// through as a probe (half-open), and its success closes the breaker.
pub(crate) struct Breaker {
    base: Instant,
    retry_after: Duration,
    /// Millis since `base` until which calls are skipped; 0 when closed.
    skip_until: AtomicU64,
    degraded: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Breaker {
    pub(crate) fn new(retry_after: Duration) -> Self {
        Self {
            base: Instant::now(),
            retry_after,
            skip_until: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1 keeps "now" apart from the closed marker 0.
        u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn reopen_at(&self, now: u64) -> u64 {
        let wait = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
        now.saturating_add(wait.max(1))
    }

    /// Ok when a call may go to Redis now.
    pub(crate) fn admit(&self) -> bool {
        let until = self.skip_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        // Exactly one caller wins the probe; the others keep skipping until
        // it reports back.
        self.skip_until
            .compare_exchange(
                until,
                self.reopen_at(now),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub(crate) fn success(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("redis reachable again");
        }
        self.skip_until.store(0, Ordering::Release);
    }

    pub(crate) fn failure(&self, error: String) {
        self.skip_until
            .store(self.reopen_at(self.now_ms()), Ordering::Release);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(%error, retry_after = ?self.retry_after, "redis failed; skipping it for a while");
        }
        self.set_last_error(error);
    }

    pub(crate) fn set_last_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }

    pub(crate) fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|l| l.clone())
    }
}
