//! HTTP caching for perfgate: the pure RFC 9111 logic (directive parsing,
//! cache keys, storability and freshness, conditional requests, `Vary`) and
//! the cache tiers built on it.
//!
//! `cache_control`, `key`, `policy`, `conditional` and `vary` are free of I/O
//! and async so that the hot path can call them directly and tests can cover
//! them exhaustively.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cache_control;
pub mod coalesce;
pub mod compress;
pub mod conditional;
pub mod entry;
pub mod invalidate;
pub mod key;
pub mod memory;
pub mod policy;
pub mod redis;
pub mod tiers;
pub mod vary;

#[cfg(test)]
mod test_util;
