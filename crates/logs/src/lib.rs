//! The embedded log store: access lines and perfgate's own events, indexed
//! with tantivy in hourly partitions, searchable with the query language
//! within a second of being pushed.
//!
//! - [`line`]: a log line and its JSON form;
//! - [`query`]: the query language (parser);
//! - [`schema`]: the indexed fields and their kinds;
//! - [`translate`]: from a parsed query to a tantivy query;
//! - [`store`]: the store (partitions, indexer thread, search);
//! - [`analytics`]: counts, error rates and percentiles per time bucket;
//! - [`export`]: every matching line, page by page.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod analytics;
pub mod export;
pub mod line;
pub mod query;
pub mod schema;
pub mod store;
pub mod translate;

pub use analytics::{Analytics, AnalyticsRequest, Bucket, By};
pub use export::{Export, ExportRequest};
pub use line::{Level, LogLine, Phases};
pub use store::{
    Health, LogStore, MAX_LIMIT, SearchError, SearchPage, SearchRequest, StoreError, StoreSettings,
    StoreStats,
};
