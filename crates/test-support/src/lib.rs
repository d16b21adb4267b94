//! Real servers for integration tests, after linkerd's integration crate:
//! a programmable [`Origin`], a [`Gateway`] started in-process on port 0, a
//! small keep-alive [`Client`], raw-TCP helpers for malformed requests, the
//! real `perfgate` binary as a child process ([`Binary`]), real Redis
//! servers ([`RedisServer`], [`RedisCluster`]) and helpers for gateways that
//! share one (`Gateway::member`, the cache admin API, `Cache-Status` values).
//!
//! ```ignore
//! let origin = Origin::new()
//!     .route("/events", Rsp::json(r#"{"events":[]}"#).header("cache-control", "max-age=60"))
//!     .run()
//!     .await;
//! let gw = Gateway::builder().upstream(origin.addr()).spawn().await;
//! assert_eq!(gw.get("/events").await.header("cache-status"), "perfgate; fwd=miss; stored");
//! assert_eq!(gw.get("/events").await.header("cache-status"), "perfgate; hit");
//! assert_eq!(origin.hits("/events"), 1);
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binary;
mod client;
mod gateway;
pub mod jwt;
mod origin;
mod pools;
mod raw;
mod raw_upstream;
mod redis;
mod shared;
mod util;

pub use binary::{Binary, BinaryBuilder, free_port};
pub use client::{Client, RequestBuilder, TestResponse};
pub use gateway::{Gateway, GatewayBuilder, RunningGateway};
pub use origin::{Gate, Origin, Recorded, Req, Rsp, RunningOrigin};
pub use pools::{ClosedPort, Instance, Listeners, pool_of, pool_of_urls, pool_route};
pub use raw::{raw, raw_timeout};
pub use raw_upstream::{Framing, RawUpstream, Seen};
pub use redis::{RedisCluster, RedisServer};
pub use shared::{
    L1_HIT, L2_HIT, SHARED_HOST, STORED, TOKEN, cache_status, is_hit, metric_value,
    redis_check_status, until_not_hit,
};
pub use util::{TempDir, eventually, eventually_async, stays, unique_name};

/// Generous upper bound for anything a test waits on: the suite must pass
/// on a loaded two-core machine.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);
