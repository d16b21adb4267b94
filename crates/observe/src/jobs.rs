//! Metrics of the async job queue: submissions by outcome, upstream calls
//! made and saved, their estimated cost, and the queue depth per state.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What a submission became; the `outcome` label of `perfgate_jobs_submitted_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Submission {
    /// New work, queued.
    queued,
    /// The same work was queued or running: joined it.
    deduplicated,
    /// The same work had finished: answered from its result.
    cached,
    /// Refused (queue full, store unavailable, body too large).
    refused,
}

/// How an upstream call of a job ended; the `result` label of
/// `perfgate_jobs_upstream_calls_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CallResult {
    /// 2xx/3xx.
    success,
    /// 4xx: the job failed, no retry.
    client_error,
    /// 5xx, timeout or connection error: retried while attempts remain.
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubmitLabels {
    route: Arc<str>,
    outcome: Submission,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    route: Arc<str>,
    result: CallResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    route: Arc<str>,
    state: &'static str,
}

/// The job-queue families (part of `Metrics`).
pub struct JobMetrics {
    submitted: Family<SubmitLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    cost: Family<RouteLabel, Counter<f64, AtomicU64>>,
    saved_cost: Family<RouteLabel, Counter<f64, AtomicU64>>,
    depth: Family<DepthLabels, Gauge>,
}

impl JobMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            submitted: Family::default(),
            calls: Family::default(),
            cost: Family::default(),
            saved_cost: Family::default(),
            depth: Family::default(),
        };
        registry.register(
            "jobs_submitted",
            "Async job submissions by route and outcome (queued, deduplicated, cached, refused)",
            m.submitted.clone(),
        );
        registry.register(
            "jobs_upstream_calls",
            "Upstream calls made by job workers, by route and result",
            m.calls.clone(),
        );
        registry.register(
            "jobs_cost",
            "Estimated cost of the upstream calls made (routes' unit_cost)",
            m.cost.clone(),
        );
        registry.register(
            "jobs_saved_cost",
            "Estimated cost of the upstream calls saved by de-duplication and cached results",
            m.saved_cost.clone(),
        );
        registry.register(
            "jobs_depth",
            "Jobs per route and state (queued, running, succeeded, failed, dead)",
            m.depth.clone(),
        );
        m
    }

    /// Counts one submission; duplicates and cached answers save `unit_cost`.
    pub fn submitted(&self, route: &Arc<str>, outcome: Submission, unit_cost: f64) {
        self.submitted
            .get_or_create(&SubmitLabels {
                route: route.clone(),
                outcome,
            })
            .inc();
        if matches!(outcome, Submission::deduplicated | Submission::cached) && unit_cost > 0.0 {
            self.saved_cost
                .get_or_create(&RouteLabel {
                    route: route.clone(),
                })
                .inc_by(unit_cost);
        }
    }

    /// Counts one upstream call and its cost.
    pub fn call(&self, route: &Arc<str>, result: CallResult, unit_cost: f64) {
        self.calls
            .get_or_create(&CallLabels {
                route: route.clone(),
                result,
            })
            .inc();
        if unit_cost > 0.0 {
            self.cost
                .get_or_create(&RouteLabel {
                    route: route.clone(),
                })
                .inc_by(unit_cost);
        }
    }

    /// Publishes the number of jobs of a route in a state.
    pub fn set_depth(&self, route: &Arc<str>, state: &'static str, n: i64) {
        self.depth
            .get_or_create(&DepthLabels {
                route: route.clone(),
                state,
            })
            .set(n);
    }
}
