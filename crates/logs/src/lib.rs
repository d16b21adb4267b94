//! Logs: every request's access line and perfgate's own log events, written
//! to the access log, the embedded searchable store and an OTLP collector,
//! off the request path.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod app;
mod file;
pub mod line;
pub mod otlp;
pub mod pipeline;
pub mod query;
pub mod store;
#[cfg(test)]
mod testdir;
pub mod when;

pub use line::{Level, LogLine};
pub use pipeline::{AccessTarget, Logs, PipelineStats, Settings, StartError};
pub use store::{LogStore, StoreSettings};
