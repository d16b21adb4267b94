//! Observability: every metric perfgate exports is named and registered here,
//! and emitted through the small typed handles below, never through string
//! literals scattered across the code.

mod metrics;

pub use metrics::{CacheEvent, InvalidationSource, Metrics, RouteMetrics, UpstreamErrorKind};
