//! Logs: every request's access line and perfgate's own log events, written
//! off the request path to the access log, the embedded searchable store
//! and an OTLP collector.
//!
//! - [`pipeline`]: the thread that turns request events into lines and
//!   hands them on ([`Logs`]); [`access`]: an event's line; [`app`]:
//!   perfgate's own `tracing` events; [`otlp`]: export to a collector;
//! - [`line`]: a log line and its JSON form;
//! - [`query`]: the query language (parser); [`when`]: instants;
//! - [`schema`]: the indexed fields and their kinds;
//! - [`translate`]: from a parsed query to a tantivy query;
//! - [`store`]: the store (hourly tantivy partitions, indexer thread,
//!   search);
//! - [`analytics`]: counts, error rates and percentiles per time bucket;
//! - [`export`]: every matching line, page by page.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod analytics;
pub mod app;
pub mod export;
mod file;
pub mod line;
pub mod otlp;
pub mod pipeline;
pub mod query;
pub mod schema;
pub mod store;
#[cfg(test)]
mod testdir;
pub mod translate;
pub mod when;

pub use analytics::{Analytics, AnalyticsRequest, Bucket, By};
pub use export::{Export, ExportRequest};
pub use line::{Level, LogLine, Phases};
pub use pipeline::{AccessTarget, Logs, PipelineStats, Settings, StartError};
pub use store::{
    Health, LogStore, MAX_LIMIT, SearchError, SearchPage, SearchRequest, StoreError, StoreSettings,
    StoreStats,
};
