//! The hot path: the client-facing server, routing, guards, the upstream
//! client, the cache path with coalescing, and compression of responses.
//! ARCHITECTURE.md tells the life of a request through these modules.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod batch;
mod cached;
mod clamp;
mod compressing;
mod context;
mod forward;
mod gateway;
mod guard;
mod hot;
mod identity;
mod invalidate;
mod jobs;
mod limits;
mod lookup;
mod pass;
mod pipeline;
mod policy;
mod record;
mod route;
mod server;
mod stats;
mod target;
mod tls;
mod warmup;

pub use context::Conn;
pub use gateway::{CACHE_STATUS, Gateway};
pub use hot::{WarmupFailure, WarmupRequest, WarmupStatus};
pub use invalidate::{InvalidateReport, InvalidateRequest, Targets};
pub use jobs::Jobs;
pub use perfgate_cache::redis::L2Health;
pub use perfgate_http::body::Body;
pub use perfgate_http::error::{Error, ErrorKind, GatewayError, Side, envelope};
pub use perfgate_jobs::JobState;
pub use perfgate_jobs::job::is_valid_id as is_valid_task_id;
pub use perfgate_observe::{EVENT_QUEUE, EventBus};
pub use perfgate_upstream::{PoolReport, ServerReport};
pub use server::{ServerOptions, serve};
pub use stats::{CacheStats, L1Stats, L2Stats, Layers, RouteCacheStats};
pub use tls::load_tls;
