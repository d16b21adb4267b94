//! Traffic control decisions, free of HTTP and I/O so they can be tested
//! with plain values and a chosen clock (every call takes `now`): load
//! balancing, active health and passive outlier detection, circuit
//! breaking, retry budgets and backoff, and GCRA rate limiting. The proxy
//! crate applies them to requests.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod balance;
pub mod breaker;
pub mod gcra;
pub mod health;
pub mod retry;
