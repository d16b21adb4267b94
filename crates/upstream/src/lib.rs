//! Talking to upstreams: the pooled keep-alive client ([`client`],
//! [`upstream`]), pools of servers with balancing, health, outlier
//! detection, breakers and retry budgets ([`pool`]), and sending one
//! request to a pool with admission, deadlines and retries ([`dispatch`]).
//! It knows nothing of routes, caches or clients' identities: the proxy
//! hands it a [`Dispatch`] with what the route chose.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
pub mod dispatch;
pub mod pool;
pub mod upstream;

pub use dispatch::{Attempts, Dispatch, REPLAY_MAX_BYTES, dispatch};
pub use pool::{Pick, Pool, PoolReport, Pools, ServerReport};
pub use upstream::{Refusal, Target, Upstream, UpstreamBody, UpstreamError};
