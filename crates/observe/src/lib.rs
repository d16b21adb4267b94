//! Observability: every metric perfgate exports is named and registered here,
//! and emitted through the small typed handles below, never through string
//! literals scattered across the code. Request events (`event.rs`) feed the
//! sinks, among them the performance windows (`perf.rs`) behind
//! `/admin/performance/*`.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod event;
mod jobs;
mod metrics;
pub mod perf;
mod process;
mod traffic;

pub use event::{
    CacheLayer, CacheOutcomes, EVENT_QUEUE, EventBus, EventFeed, EventSink, PhaseTimes,
    RequestEvent, RequestKind, log_id,
};
pub use jobs::{CallResult, JobMetrics, Submission};
pub use metrics::{
    CacheEvent, InvalidationSource, Metrics, OpenConnection, RouteMetrics, UpstreamErrorKind,
    openmetrics_to_text,
};
pub use perf::{PerfWindows, Window};
pub use process::{ProcessSample, ProcessSampler, ProcessStats};
pub use traffic::{CircuitState, DecisionCounter, LimitResult, TrafficMetrics};
