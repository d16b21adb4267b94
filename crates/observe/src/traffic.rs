//! Metrics of traffic control: load shedding, rate limits, JWT, upstream
//! server health, ejections, circuit breakers, retries and config reloads.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The state of a circuit breaker, as the value of `perfgate_circuit_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests flow (0).
    Closed = 0,
    /// Trial requests only (1).
    HalfOpen = 1,
    /// No requests are sent (2).
    Open = 2,
}

/// A rate-limit decision; the `result` label of `perfgate_rate_limit_decisions_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LimitResult {
    /// Let through.
    allowed,
    /// Refused with 429.
    limited,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: Arc<str>,
    result: LimitResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    pool: Arc<str>,
    server: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// One series of `perfgate_rate_limit_decisions_total`, resolved once.
#[derive(Clone, Debug, Default)]
pub struct DecisionCounter(Counter);

impl DecisionCounter {
    /// Counts one decision.
    pub fn inc(&self) {
        self.0.inc();
    }
}

/// The traffic-control families (part of `Metrics`).
pub struct TrafficMetrics {
    shed: Counter,
    limits: Family<RuleLabels, Counter>,
    limit_fallbacks: Family<RuleLabel, Counter>,
    jwt_failures: Family<ReasonLabel, Counter>,
    server_up: Family<ServerLabels, Gauge>,
    ejections: Family<ServerLabels, Counter>,
    circuit: Family<PoolLabel, Gauge>,
    retries: Family<PoolLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
}

impl TrafficMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            shed: Counter::default(),
            limits: Family::default(),
            limit_fallbacks: Family::default(),
            jwt_failures: Family::default(),
            server_up: Family::default(),
            ejections: Family::default(),
            circuit: Family::default(),
            retries: Family::default(),
            reloads: Family::default(),
        };
        registry.register(
            "shed_requests",
            "Requests refused with 503 because server.max_concurrent_requests were in flight",
            m.shed.clone(),
        );
        registry.register(
            "rate_limit_decisions",
            "Rate-limit checks by rule and result (allowed, limited)",
            m.limits.clone(),
        );
        registry.register(
            "rate_limit_fallbacks",
            "Shared rate-limit checks answered by the local limiter because Redis did not answer",
            m.limit_fallbacks.clone(),
        );
        registry.register(
            "jwt_failures",
            "Requests refused with 401, by reason",
            m.jwt_failures.clone(),
        );
        registry.register(
            "upstream_server_up",
            "1 when an upstream server takes traffic (healthy and not ejected), else 0",
            m.server_up.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Times an upstream server was ejected by outlier detection",
            m.ejections.clone(),
        );
        registry.register(
            "circuit_state",
            "Circuit breaker of each pool: 0 closed, 1 half-open, 2 open",
            m.circuit.clone(),
        );
        registry.register(
            "upstream_retries",
            "Upstream requests retried, by pool",
            m.retries.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by result (ok, rejected)",
            m.reloads.clone(),
        );
        m
    }

    /// Counts one request refused by load shedding.
    pub fn shed(&self) {
        self.shed.inc();
    }

    /// The counter of one rule's decisions of one kind, resolved once (the
    /// request path only increments it).
    pub fn rate_limit_counter(&self, rule: &Arc<str>, result: LimitResult) -> DecisionCounter {
        DecisionCounter(
            self.limits
                .get_or_create(&RuleLabels {
                    rule: rule.clone(),
                    result,
                })
                .clone(),
        )
    }

    /// Counts one shared limit answered locally (Redis unavailable).
    pub fn rate_limit_fallback(&self, rule: &Arc<str>) {
        self.limit_fallbacks
            .get_or_create(&RuleLabel { rule: rule.clone() })
            .inc();
    }

    /// Counts one token refused.
    pub fn jwt_failure(&self, reason: &'static str) {
        self.jwt_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Publishes whether a server takes traffic.
    pub fn set_server_up(&self, pool: &Arc<str>, server: &Arc<str>, up: bool) {
        self.server_up
            .get_or_create(&ServerLabels {
                pool: pool.clone(),
                server: server.clone(),
            })
            .set(i64::from(up));
    }

    /// Drops the series of a server that left its pool (reload).
    pub fn forget_server(&self, pool: &Arc<str>, server: &Arc<str>) {
        let labels = ServerLabels {
            pool: pool.clone(),
            server: server.clone(),
        };
        self.server_up.remove(&labels);
        self.ejections.remove(&labels);
    }

    /// Drops the series of a pool that is no longer configured (reload).
    pub fn forget_pool(&self, pool: &Arc<str>) {
        let labels = PoolLabel { pool: pool.clone() };
        self.circuit.remove(&labels);
        self.retries.remove(&labels);
    }

    /// Counts one ejection.
    pub fn ejection(&self, pool: &Arc<str>, server: &Arc<str>) {
        self.ejections
            .get_or_create(&ServerLabels {
                pool: pool.clone(),
                server: server.clone(),
            })
            .inc();
    }

    /// Publishes a breaker's state.
    pub fn set_circuit(&self, pool: &Arc<str>, state: CircuitState) {
        self.circuit
            .get_or_create(&PoolLabel { pool: pool.clone() })
            .set(state as i64);
    }

    /// Counts one retry.
    pub fn retry(&self, pool: &Arc<str>) {
        self.retries
            .get_or_create(&PoolLabel { pool: pool.clone() })
            .inc();
    }

    /// Counts one reload attempt (`ok` or `rejected`).
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }
}
