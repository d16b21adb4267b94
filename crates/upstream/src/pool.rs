//! Upstream pools: the servers a route's requests go to, how one is chosen
//! (`perfgate_traffic::balance`), their health (active probes and passive
//! outlier ejection, `perfgate_traffic::health`), the pool's circuit
//! breaker, retry budget and connection limit. The default upstream and
//! every route `upstream` URL are pools of one server.
//!
//! Pools belong to a policy generation (`perfgate_proxy`). On
//! reload a pool whose settings did not change is carried over as it is
//! (health, breaker and connections intact); a changed one is built anew.
//! Each pool has one background task (probes, readmissions, gauges) that
//! ends when the pool is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use http::{HeaderMap, Request};
use perfgate_config::{Balance, Config, PoolConfig, PoolServer, UpstreamConfig};
use perfgate_observe::{CircuitState, Metrics};
use perfgate_runtime::{Scope, Shutdown, Supervisor};
use perfgate_traffic::balance::{Balancer, Strategy, hash_key};
use perfgate_traffic::breaker::{Breaker, BreakerSettings, BreakerState, Permit};
use perfgate_traffic::health::{OutlierSettings, PoolHealth, ProbeThresholds, Transition};
use perfgate_traffic::retry::RetryBudget;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::upstream::{Refusal, Target, Upstream};
use perfgate_http::body::Body;

/// One server of a pool.
pub struct Server {
    pub target: Arc<Target>,
    /// `host:port`, for metrics and logs.
    pub label: Arc<str>,
    outstanding: AtomicU32,
    /// Duration of the last health probe in microseconds (0: none yet).
    last_probe_us: AtomicU64,
    /// Recent attempt latency (time to the response head), an exponentially
    /// weighted moving average in microseconds, as `f64` bits (0: none yet).
    latency_ewma_us: AtomicU64,
    /// Failed attempts (as the pool's `FailureClass` counts them).
    errors: AtomicU64,
}

/// Weight of the newest attempt in [`Server`]'s latency average: about the
/// last ten attempts count.
const EWMA_WEIGHT: f64 = 0.2;

impl Server {
    /// Adds one attempt's latency to the average. Concurrent updates may
    /// lose one another's sample (load, then store): the figure is for
    /// people to read, and this keeps it to two plain atomic operations.
    fn observe(&self, took: Duration) {
        let us = took.as_secs_f64() * 1e6;
        let old = f64::from_bits(self.latency_ewma_us.load(Ordering::Relaxed));
        let new = if old > 0.0 {
            old + EWMA_WEIGHT * (us - old)
        } else {
            us.max(f64::MIN_POSITIVE)
        };
        self.latency_ewma_us.store(new.to_bits(), Ordering::Relaxed);
    }
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HashKey {
    Path,
    Ip,
    User,
    Header(http::HeaderName),
    Cookie(String),
}

impl HashKey {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s.split_once(':') {
            None if s == "path" => HashKey::Path,
            None if s == "ip" => HashKey::Ip,
            None if s == "user" => HashKey::User,
            Some(("header", h)) => HashKey::Header(
                http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("hash_key: invalid header name {h:?}"))?,
            ),
            Some(("cookie", c)) => HashKey::Cookie(c.to_string()),
            _ => return Err(format!("hash_key: {s:?} is not a hash key")),
        })
    }
}

/// The facts of a request that balancing may use.
pub struct Pick<'a> {
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
    pub user: Option<&'a str>,
}

/// Retry settings of a pool.
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub on_status: Vec<u16>,
}

/// The settings a pool was built from; equal settings on reload mean the
/// pool is kept.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    pool: PoolConfig,
    connect_timeout: perfgate_config::Duration,
    response_timeout: perfgate_config::Duration,
    pool_idle_timeout: perfgate_config::Duration,
    pool_max_idle: usize,
}

/// A pool of upstream servers.
pub struct Pool {
    pub name: Arc<str>,
    pub servers: Vec<Server>,
    balancer: Balancer,
    hash_key: HashKey,
    pub health: PoolHealth,
    /// Settings of the breakers, `None` when the pool uses none.
    breaker: Option<BreakerSettings>,
    /// One breaker per route that targets this pool (by route name), so a
    /// failing route opens only its own. Kept with the pool on reload.
    breakers: Mutex<HashMap<Arc<str>, Arc<Breaker>>>,
    /// What counts as a failure for the breakers and outlier detection.
    pub failures: FailureClass,
    budget: RetryBudget,
    pub retry: RetryPolicy,
    slots: Option<Arc<Semaphore>>,
    queue_timeout: Duration,
    pub client: Upstream,
    /// Deadline of one attempt's response head.
    pub response_timeout: Duration,
    probe: Option<Probe>,
    spec: Spec,
    metrics: Arc<Metrics>,
    /// Set when a reload replaced this pool: it stops publishing gauges
    /// (its successor, or nobody, owns them now) while requests of the old
    /// generation finish on it.
    retired: AtomicBool,
    /// The pool's background service (probes, re-admission, breaker
    /// gauges): stopped when a reload retires the pool, or with the process.
    services: Scope,
}

#[derive(Clone)]
struct Probe {
    path: String,
    interval: Duration,
    timeout: Duration,
}

/// What counts as a failure of an upstream exchange, for the breakers and
/// outlier detection (`breaker.on_errors`, `breaker.on_status`): by
/// default connection failures, timeouts and 502/503/504. Any other answer
/// from a reachable server (a 500 of one endpoint, a 404) is a success: the
/// server is up and talking.
#[derive(Debug, Clone, Default)]
pub struct FailureClass {
    connect: bool,
    timeout: bool,
    protocol: bool,
    statuses: Vec<u16>,
}

impl FailureClass {
    fn new(errors: &[String], statuses: &[u32]) -> Self {
        let has = |k: &str| errors.iter().any(|e| e == k);
        Self {
            connect: has("connect"),
            timeout: has("timeout"),
            protocol: has("protocol"),
            statuses: statuses
                .iter()
                .filter_map(|s| u16::try_from(*s).ok())
                .collect(),
        }
    }

    /// Whether an answer with this status counts as a failure.
    pub fn status(&self, status: http::StatusCode) -> bool {
        self.statuses.contains(&status.as_u16())
    }

    /// Whether an exchange error of this kind counts as a failure.
    pub fn error(&self, kind: perfgate_observe::UpstreamErrorKind) -> bool {
        use perfgate_observe::UpstreamErrorKind as K;
        match kind {
            K::connect => self.connect,
            K::timeout => self.timeout,
            K::protocol => self.protocol,
            K::status_5xx => false,
        }
    }
}

impl Pool {
    fn build(
        name: &str,
        spec: Spec,
        metrics: &Arc<Metrics>,
        tasks: &Supervisor,
    ) -> Result<Arc<Self>, String> {
        let cfg = &spec.pool;
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                let target = Arc::new(Target::parse(&s.url)?);
                Ok(Server {
                    label: Arc::from(target.authority.as_str()),
                    target,
                    outstanding: AtomicU32::new(0),
                    last_probe_us: AtomicU64::new(0),
                    latency_ewma_us: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if servers.is_empty() {
            return Err(format!("pool {name}: no servers"));
        }
        let weights: Vec<u32> = cfg.servers.iter().map(|s| s.weight.max(1)).collect();
        let strategy = match cfg.balance {
            Balance::RoundRobin => Strategy::RoundRobin,
            Balance::LeastOutstanding => Strategy::LeastOutstanding,
            Balance::ConsistentHash => Strategy::ConsistentHash,
        };
        let probe = cfg.health.path.as_ref().map(|path| Probe {
            path: path.clone(),
            interval: cfg.health.interval.get(),
            timeout: cfg.health.timeout.get(),
        });
        let thresholds = probe.as_ref().map(|_| ProbeThresholds {
            healthy: cfg.health.healthy_threshold,
            unhealthy: cfg.health.unhealthy_threshold,
        });
        let o = &cfg.outlier;
        let health = PoolHealth::new(
            servers.len(),
            thresholds,
            OutlierSettings {
                consecutive_failures: o.consecutive_failures,
                base_ejection: o.base_ejection.get(),
                max_ejection: o.max_ejection.get(),
                max_ejection_percent: u8::try_from(o.max_ejection_percent.min(100)).unwrap_or(100),
            },
            Instant::now(),
        );
        let b = &cfg.breaker;
        let breaker = b.enabled.then(|| BreakerSettings {
            failure_rate: b.failure_rate,
            min_requests: b.min_requests,
            window: b.window.get(),
            consecutive_failures: b.consecutive_failures,
            open_for: b.open_for.get(),
            half_open_requests: b.half_open_requests,
        });
        let failures = FailureClass::new(&b.on_errors, &b.on_status);
        let r = &cfg.retry;
        let upstream_cfg = UpstreamConfig {
            connect_timeout: cfg.connect_timeout.unwrap_or(spec.connect_timeout),
            response_timeout: spec.response_timeout,
            pool_idle_timeout: spec.pool_idle_timeout,
            pool_max_idle: spec.pool_max_idle,
            ..UpstreamConfig::default()
        };
        let pool = Arc::new(Self {
            name: Arc::from(name),
            balancer: Balancer::new(strategy, &weights),
            hash_key: HashKey::parse(&cfg.hash_key)?,
            servers,
            health,
            breaker,
            breakers: Mutex::default(),
            failures,
            budget: RetryBudget::new(
                f64::from(r.budget_percent) / 100.0,
                r.min_per_second,
                Duration::from_secs(10),
            ),
            retry: RetryPolicy {
                attempts: r.attempts,
                backoff_base: r.backoff_base.get(),
                backoff_max: r.backoff_max.get(),
                on_status: r
                    .on_status
                    .iter()
                    .filter_map(|s| u16::try_from(*s).ok())
                    .collect(),
            },
            slots: (cfg.max_connections > 0).then(|| Arc::new(Semaphore::new(cfg.max_connections))),
            queue_timeout: cfg.queue_timeout.get(),
            client: Upstream::new(&upstream_cfg),
            response_timeout: spec.response_timeout.get(),
            probe,
            spec,
            metrics: metrics.clone(),
            retired: AtomicBool::new(false),
            services: tasks.scope(),
        });
        for s in &pool.servers {
            metrics.traffic.set_server_up(&pool.name, &s.label, true);
        }
        metrics
            .traffic
            .set_circuit(&pool.name, CircuitState::Closed);
        let weak = Arc::downgrade(&pool);
        pool.services
            .spawn("pool health", move |shutdown| maintain(weak, shutdown));
        Ok(pool)
    }

    /// The breaker of route `route` on this pool (made on first use, then
    /// the same one for as long as the pool lives, reloads included);
    /// `None` when the pool uses no breaker.
    pub fn breaker_for(&self, route: &str) -> Option<Arc<Breaker>> {
        let settings = self.breaker?;
        let mut map = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        Some(
            map.entry(Arc::from(route))
                .or_insert_with(|| Arc::new(Breaker::new(settings)))
                .clone(),
        )
    }

    /// Drops the breakers that none of `used` is (routes gone on reload).
    pub fn retain_breakers(&self, used: &[Arc<Breaker>]) {
        let mut map = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, b| used.iter().any(|u| Arc::ptr_eq(u, b)));
    }

    /// Admission by a route's breaker on this pool; `Ok(None)` without one.
    pub fn admit(
        &self,
        breaker: Option<&Breaker>,
        now: Instant,
    ) -> Result<Option<Permit>, Refusal> {
        match breaker {
            None => Ok(None),
            Some(b) => b.admit(now).map(Some).map_err(|d| {
                // Half-open with every trial slot taken: no known time.
                Refusal::CircuitOpen(d.max(Duration::from_secs(1)))
            }),
        }
    }

    /// Records the final outcome of an admitted request on its route's breaker.
    pub fn record(
        &self,
        route: &str,
        breaker: Option<&Breaker>,
        permit: Option<Permit>,
        success: bool,
    ) {
        let (Some(b), Some(p)) = (breaker, permit) else {
            return;
        };
        if let Some((from, to)) = b.record(p, success, Instant::now()) {
            self.circuit_changed(route, from, to);
        }
    }

    fn circuit_changed(&self, route: &str, from: BreakerState, to: BreakerState) {
        if !self.is_retired()
            && let Some(state) = self.circuit(Instant::now())
        {
            self.metrics
                .traffic
                .set_circuit(&self.name, circuit_state(state));
        }
        match to {
            BreakerState::Open => {
                tracing::warn!(pool = %self.name, route = %route, from = ?from, "circuit breaker opened: this route's requests to this pool are refused until it recovers")
            }
            BreakerState::Closed => {
                tracing::info!(pool = %self.name, route = %route, "circuit breaker closed: the pool recovered")
            }
            BreakerState::HalfOpen => {
                tracing::info!(pool = %self.name, route = %route, "circuit breaker half-open: sending trial requests")
            }
        }
    }

    /// The worst state of the pool's breakers now (for health and
    /// metrics): open when some route's breaker is open.
    pub fn circuit(&self, now: Instant) -> Option<BreakerState> {
        self.breaker?;
        let map = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let rank = |s: BreakerState| match s {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        Some(
            map.values()
                .map(|b| b.state(now))
                .max_by_key(|s| rank(*s))
                .unwrap_or(BreakerState::Closed),
        )
    }

    /// Waits for a connection slot when the pool limits them.
    pub async fn slot(&self) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        let Some(sem) = &self.slots else {
            return Ok(None);
        };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        match tokio::time::timeout(self.queue_timeout, sem.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(Refusal::Busy),
        }
    }

    /// Chooses a server not yet tried by this request.
    pub fn pick(&self, req: &Pick<'_>, tried: &[usize], now: Instant) -> Option<usize> {
        let hash = match self.balancer.strategy() {
            Strategy::ConsistentHash => self.hash(req),
            _ => None,
        };
        self.balancer.pick(
            hash,
            tried,
            |i| self.health.eligible(i, now),
            |i| {
                self.servers
                    .get(i)
                    .map_or(0, |s| s.outstanding.load(Ordering::Relaxed))
            },
        )
    }

    fn hash(&self, req: &Pick<'_>) -> Option<u64> {
        match &self.hash_key {
            HashKey::Path => Some(hash_key(req.path_and_query.as_bytes())),
            HashKey::Ip => Some(hash_key(req.client_ip.to_string().as_bytes())),
            HashKey::User => req.user.map(|u| hash_key(u.as_bytes())),
            HashKey::Header(h) => req.headers.get(h).map(|v| hash_key(v.as_bytes())),
            HashKey::Cookie(name) => cookie(req.headers, name).map(|v| hash_key(v.as_bytes())),
        }
    }

    /// Counts a request in flight on server `i` until the guard drops.
    pub(crate) fn start(&self, i: usize) -> Outstanding<'_> {
        if let Some(s) = self.servers.get(i) {
            s.outstanding.fetch_add(1, Ordering::Relaxed);
        }
        Outstanding { pool: self, i }
    }

    /// Reports the outcome of one attempt on server `i` that took `took` to
    /// its response head (or its failure): to outlier detection, and to the
    /// server's latency average and error count (the monitoring API).
    pub fn report(&self, i: usize, success: bool, took: Duration) {
        if let Some(s) = self.servers.get(i) {
            s.observe(took);
            if !success {
                s.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(t) = self.health.report(i, success, Instant::now()) {
            self.transition(t);
        }
    }

    /// A request starts: it pays into the retry budget.
    pub(crate) fn deposit(&self) {
        self.budget.deposit(Instant::now());
    }

    /// May this request be retried (budget)?
    pub(crate) fn withdraw(&self) -> bool {
        self.budget.try_withdraw(Instant::now())
    }

    fn transition(&self, t: Transition) {
        let (server, up) = match t {
            Transition::Ejected { server, until } => {
                let label = self.label(server);
                tracing::warn!(pool = %self.name, server = %label, ejected_for = ?until, "upstream server ejected after consecutive failures");
                self.metrics.traffic.ejection(&self.name, &label);
                (server, false)
            }
            Transition::Readmitted { server } => {
                tracing::info!(pool = %self.name, server = %self.label(server), "upstream server readmitted");
                (server, true)
            }
            Transition::ProbeDown { server } => {
                tracing::warn!(pool = %self.name, server = %self.label(server), "upstream server failed its health probes");
                (server, false)
            }
            Transition::ProbeUp { server } => {
                tracing::info!(pool = %self.name, server = %self.label(server), "upstream server passed its health probes");
                (server, true)
            }
        };
        let now = Instant::now();
        let eligible = up && self.health.eligible(server, now);
        if !self.is_retired() {
            self.metrics
                .traffic
                .set_server_up(&self.name, &self.label(server), eligible);
        }
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Publishes every gauge of this pool from its current state.
    fn publish(&self) {
        if self.is_retired() {
            return;
        }
        let now = Instant::now();
        for (i, s) in self.servers.iter().enumerate() {
            self.metrics
                .traffic
                .set_server_up(&self.name, &s.label, self.health.eligible(i, now));
        }
        let state = self.circuit(now).unwrap_or(BreakerState::Closed);
        self.metrics
            .traffic
            .set_circuit(&self.name, circuit_state(state));
    }

    fn label(&self, i: usize) -> Arc<str> {
        self.servers
            .get(i)
            .map_or_else(|| Arc::from("?"), |s| s.label.clone())
    }

    /// Probes every server once, concurrently.
    async fn probe_all(self: &Arc<Self>, probe: &Probe) {
        let mut set = tokio::task::JoinSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            let uri = Upstream::uri(&s.target, &probe.path);
            let client = self.client.clone();
            let timeout = probe.timeout;
            let host = s.target.authority.clone();
            set.spawn(async move {
                let Ok(uri) = uri else {
                    return (i, false, Duration::ZERO);
                };
                let mut req = Request::new(Body::Empty);
                *req.uri_mut() = uri;
                if let Ok(h) = http::HeaderValue::from_str(host.as_str()) {
                    req.headers_mut().insert(http::header::HOST, h);
                }
                req.headers_mut().insert(
                    http::header::USER_AGENT,
                    http::HeaderValue::from_static("perfgate-health-probe"),
                );
                let t0 = Instant::now();
                let ok = match client.send_within(req, timeout).await {
                    Ok(rsp) => {
                        let ok = rsp.status().is_success() || rsp.status().is_redirection();
                        // Drain so the connection can be reused.
                        let _ = tokio::time::timeout(
                            timeout,
                            http_body_util::BodyExt::collect(rsp.into_body()),
                        )
                        .await;
                        ok
                    }
                    Err(_) => false,
                };
                (i, ok, t0.elapsed())
            });
        }
        while let Some(Ok((i, ok, took))) = set.join_next().await {
            if let Some(s) = self.servers.get(i) {
                let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
                s.last_probe_us.store(us, Ordering::Relaxed);
            }
            if let Some(t) = self.health.probe(i, ok, Instant::now()) {
                self.transition(t);
            }
        }
    }
}

/// The state of one pool, for the health endpoints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolReport {
    /// The pool's name (a `[[pools]]` name or an upstream URL).
    pub name: String,
    /// `closed`, `half-open`, `open` or `disabled`: the worst of its breakers.
    pub circuit: &'static str,
    /// The breaker of each route that sent requests to this pool, by route
    /// name (`closed`, `half-open` or `open`); empty without breakers.
    pub circuits: std::collections::BTreeMap<String, &'static str>,
    /// Its servers.
    pub servers: Vec<ServerReport>,
}

/// The state of one server.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerReport {
    /// `host:port`.
    pub address: String,
    /// Takes traffic now (probe-healthy and not ejected).
    pub up: bool,
    /// Active probes consider it healthy (true when there are no probes).
    pub probe_healthy: bool,
    /// Time left on an ejection, in milliseconds.
    pub ejected_ms: Option<u64>,
    /// Times ejected since the pool was built.
    pub ejections: u32,
    /// Requests in flight.
    pub in_flight: u32,
    /// Duration of the last health probe in milliseconds, when probed.
    pub probe_ms: Option<f64>,
    /// Recent latency of its attempts (to the response head), a moving
    /// average in milliseconds; `None` before the first attempt.
    pub latency_ms: Option<f64>,
    /// Failed attempts since the pool was built.
    pub errors: u64,
}

impl Pool {
    /// A snapshot for the health endpoints.
    pub fn snapshot(&self) -> PoolReport {
        let now = Instant::now();
        let snap = self.health.snapshot(now);
        let circuits = match self.breaker {
            None => Default::default(),
            Some(_) => self
                .breakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(route, b)| (route.to_string(), breaker_name(b.state(now))))
                .collect(),
        };
        PoolReport {
            name: self.name.to_string(),
            circuit: self.circuit(now).map_or("disabled", breaker_name),
            circuits,
            servers: self
                .servers
                .iter()
                .zip(snap)
                .enumerate()
                .map(|(i, (s, h))| {
                    let us = s.last_probe_us.load(Ordering::Relaxed);
                    let ewma = f64::from_bits(s.latency_ewma_us.load(Ordering::Relaxed));
                    ServerReport {
                        address: s.label.to_string(),
                        up: self.health.eligible(i, now),
                        probe_healthy: h.probe_healthy,
                        ejected_ms: h
                            .ejected_for
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                        ejections: h.ejections,
                        in_flight: s.outstanding.load(Ordering::Relaxed),
                        probe_ms: (us > 0).then(|| us as f64 / 1000.0),
                        latency_ms: (ewma > 0.0).then(|| ewma / 1000.0),
                        errors: s.errors.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        }
    }
}

/// In-flight count of one server, decremented on drop.
pub(crate) struct Outstanding<'a> {
    pool: &'a Pool,
    i: usize,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.pool.servers.get(self.i) {
            s.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn breaker_name(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half-open",
        BreakerState::Open => "open",
    }
}

fn circuit_state(s: BreakerState) -> CircuitState {
    match s {
        BreakerState::Closed => CircuitState::Closed,
        BreakerState::HalfOpen => CircuitState::HalfOpen,
        BreakerState::Open => CircuitState::Open,
    }
}

/// A cookie's value from the `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The pool's background work: probes, readmissions, gauges. Ends when the
/// pool is dropped (a reload replaced it, or the gateway stopped).
async fn maintain(pool: Weak<Pool>, mut shutdown: Shutdown) {
    const TICK: Duration = Duration::from_secs(1);
    let mut next_probe = tokio::time::Instant::now();
    loop {
        let Some(p) = pool.upgrade() else { return };
        let now = tokio::time::Instant::now();
        if let Some(probe) = p.probe.clone()
            && now >= next_probe
        {
            next_probe = now + probe.interval;
            p.probe_all(&probe).await;
        }
        for t in p.health.readmit_expired(Instant::now()) {
            p.transition(t);
        }
        if let Some(state) = p.circuit(Instant::now())
            && !p.is_retired()
        {
            p.metrics.traffic.set_circuit(&p.name, circuit_state(state));
        }
        let wait = match &p.probe {
            Some(_) => next_probe
                .saturating_duration_since(tokio::time::Instant::now())
                .min(TICK),
            None => TICK,
        };
        drop(p);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.requested() => return,
        }
    }
}

/// Every pool of one policy generation: the named ones and those made for
/// upstream URLs.
#[derive(Default)]
pub struct Pools {
    by_name: HashMap<String, Arc<Pool>>,
}

impl Pools {
    /// Builds the pools of `config`, keeping the pools of `previous` whose
    /// settings are unchanged.
    pub fn build(
        config: &Config,
        metrics: &Arc<Metrics>,
        previous: Option<&Pools>,
        tasks: &Supervisor,
    ) -> Result<Self, String> {
        let up = &config.upstream;
        let spec = |pool: PoolConfig| Spec {
            pool,
            connect_timeout: up.connect_timeout,
            response_timeout: up.response_timeout,
            pool_idle_timeout: up.pool_idle_timeout,
            pool_max_idle: up.pool_max_idle,
        };
        let implicit = |url: &str| PoolConfig {
            name: url.to_string(),
            servers: vec![PoolServer {
                url: url.to_string(),
                weight: 1,
            }],
            health: up.health.clone(),
            outlier: up.outlier.clone(),
            breaker: up.breaker.clone(),
            retry: up.retry.clone(),
            ..PoolConfig::default()
        };
        let mut wanted: Vec<(String, Spec)> = config
            .pools
            .iter()
            .map(|p| (p.name.clone(), spec(p.clone())))
            .collect();
        let urls = std::iter::once(&up.url)
            .filter(|u| !u.is_empty())
            .chain(config.routes.iter().filter_map(|r| r.upstream.as_ref()));
        for url in urls {
            if !wanted.iter().any(|(n, _)| n == url) {
                wanted.push((url.clone(), spec(implicit(url))));
            }
        }
        let mut by_name = HashMap::with_capacity(wanted.len());
        for (name, spec) in wanted {
            let kept = previous
                .and_then(|p| p.by_name.get(&name))
                .filter(|p| p.spec == spec)
                .cloned();
            let pool = match kept {
                Some(p) => p,
                None => Pool::build(&name, spec, metrics, tasks)?,
            };
            by_name.insert(name, pool);
        }
        Ok(Self { by_name })
    }

    /// Called once this generation replaced `old`: the pools of `old` that
    /// were not carried over stop publishing, the series of servers and
    /// pools that are gone leave the metrics, and this generation's gauges
    /// are published again (a replaced pool may have written them last).
    pub fn retire_replaced(&self, old: &Pools, metrics: &Metrics) {
        for (name, was) in &old.by_name {
            let now = self.by_name.get(name);
            if now.is_some_and(|p| Arc::ptr_eq(p, was)) {
                continue;
            }
            was.retired.store(true, Ordering::Relaxed);
            was.services.stop();
            for s in &was.servers {
                let kept = now.is_some_and(|p| p.servers.iter().any(|n| n.label == s.label));
                if !kept {
                    metrics.traffic.forget_server(&was.name, &s.label);
                }
            }
            if now.is_none() {
                metrics.traffic.forget_pool(&was.name);
            }
        }
        for p in self.by_name.values() {
            p.publish();
        }
    }

    /// The pool called `name` (a `[[pools]]` name or an upstream URL).
    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.by_name.get(name)
    }

    /// The pool a route names in `read_pool` of its pool, if any.
    pub fn read_pool_of(&self, config: &Config, pool: &str) -> Option<Arc<Pool>> {
        config
            .pools
            .iter()
            .find(|p| p.name == pool)
            .and_then(|p| p.read_pool.as_ref())
            .and_then(|rp| self.by_name.get(rp))
            .cloned()
    }

    /// Every pool, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        let mut v: Vec<_> = self.by_name.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use perfgate_observe::UpstreamErrorKind as K;

    use super::FailureClass;

    #[test]
    fn default_failures_are_sick_upstream_signals_only() {
        let d = perfgate_config::BreakerConfig::default();
        let c = FailureClass::new(&d.on_errors, &d.on_status);
        for s in [502, 503, 504] {
            assert!(c.status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 404, 429, 500, 501] {
            assert!(!c.status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        assert!(c.error(K::connect) && c.error(K::timeout) && c.error(K::protocol));
        let only_connect = FailureClass::new(&["connect".into()], &[500]);
        assert!(only_connect.error(K::connect));
        assert!(!only_connect.error(K::timeout));
        assert!(only_connect.status(StatusCode::INTERNAL_SERVER_ERROR));
    }

    /// A reload that replaces a pool stops its health service through the
    /// same signal as shutdown; one that keeps the pool keeps the service.
    #[tokio::test]
    async fn a_reload_stops_the_services_of_the_pools_it_retires() {
        use std::sync::Arc;
        use std::time::Duration;

        let tasks = perfgate_runtime::Supervisor::new();
        let metrics = Arc::new(perfgate_observe::Metrics::new());
        let mut config = perfgate_config::Config::default();
        config.upstream.url = "http://127.0.0.1:9".into();
        let first = super::Pools::build(&config, &metrics, None, &tasks).expect("pools");
        assert_eq!(tasks.running(), 1, "one pool, one health service");

        let same = super::Pools::build(&config, &metrics, Some(&first), &tasks).expect("pools");
        same.retire_replaced(&first, &metrics);
        assert_eq!(
            tasks.running(),
            1,
            "an unchanged pool is kept with its service"
        );

        config.upstream.url = "http://127.0.0.1:10".into();
        let next = super::Pools::build(&config, &metrics, Some(&same), &tasks).expect("pools");
        next.retire_replaced(&same, &metrics);
        drop((first, same));
        for _ in 0..200 {
            if tasks.running() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(tasks.running(), 1, "the retired pool's service stopped");
        assert!(tasks.shutdown(Duration::from_secs(5)).await.is_empty());
        assert_eq!(tasks.running(), 0);
    }
}
