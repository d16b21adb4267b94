//! Real servers for integration tests, after linkerd's integration crate:
//! a programmable [`Origin`], a small keep-alive [`Client`], raw-TCP helpers
//! for malformed requests, the real `perfgate` binary as a child process
//! ([`Binary`]), real Redis servers ([`RedisServer`], [`RedisCluster`]),
//! pools of origins for the traffic-control tests ([`pool_of`]) and what the
//! shared-cache tests compare against (`Cache-Status` values, `/metrics`
//! samples).
//!
//! The gateway started in-process (`Gateway`, `Instance`) needs the binary
//! crate's `perfgate::app`, so it lives with the binary's integration tests
//! in `crates/perfgate/tests/it/support/`: this crate does not depend on
//! `perfgate`. There, with both:
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
pub use origin::{Gate, Origin, Recorded, Req, Rsp, RunningOrigin};
pub use pools::{ClosedPort, pool_of, pool_of_urls, pool_route};
pub use raw::{raw, raw_timeout};
pub use raw_upstream::{Framing, RawUpstream, Seen};
pub use redis::{RedisCluster, RedisServer};
pub use shared::{
    L1_HIT, L2_HIT, SHARED_HOST, STORED, TOKEN, cache_status, is_hit, metric_value,
    redis_check_status,
};
pub use util::{TempDir, eventually, eventually_async, stays, unique_name};

/// Generous upper bound for anything a test waits on: the suite must pass
/// on a loaded two-core machine.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);
