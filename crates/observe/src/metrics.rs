//! Prometheus metrics (OpenMetrics text exposition via `prometheus-client`).
//!
//! The hot path never formats a label: per-route handles are created once
//! at start-up ([`Metrics::route`]) and the common status codes are
//! pre-resolved, so recording a request is a few atomic increments.
//!
//! perfgate's own families are named `perfgate_*`; the standard `process_*`
//! families (process.rs) sit beside them, unprefixed, as every Prometheus
//! client library exports them.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::jobs::JobMetrics;
use crate::process::ProcessCollector;
use crate::traffic::TrafficMetrics;

/// Latency buckets in seconds: 100 µs to ~30 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Status codes whose counters are resolved once per route.
const COMMON_STATUSES: [u16; 20] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408, 413, 429, 431, 500, 502, 503,
    504,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: Arc<str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteClass {
    route: Arc<str>,
    status_class: &'static str,
}

/// The `status_class` label values of `perfgate_request_duration_seconds`:
/// `1xx` to `5xx`, and `other` for the codes 600–999 an upstream may send
/// (HTTP defines none; hyper passes them through).
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The index in [`STATUS_CLASSES`] of a status code's class.
fn status_class(status: u16) -> usize {
    match status / 100 {
        c @ 1..=5 => usize::from(c - 1),
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// What the cache did for one request; the `result` label of
/// `perfgate_cache_requests_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CacheEvent {
    /// Served from the cache without contacting the upstream.
    hit,
    /// Not in the cache; fetched from the upstream.
    miss,
    /// Served stale (stale-while-revalidate or stale-if-error).
    stale,
    /// Stale entry revalidated with the upstream (304).
    revalidated,
    /// A concurrent miss that waited for another request's upstream fetch.
    coalesced,
    /// The request or response is not cacheable, or the route bypasses the cache.
    bypass,
}

/// Number of [`CacheEvent`] variants.
const CACHE_EVENTS: usize = 6;

impl CacheEvent {
    /// Every variant, in declaration order.
    pub const ALL: [CacheEvent; CACHE_EVENTS] = [
        CacheEvent::hit,
        CacheEvent::miss,
        CacheEvent::stale,
        CacheEvent::revalidated,
        CacheEvent::coalesced,
        CacheEvent::bypass,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    layer: &'static str,
    result: CacheEvent,
}

/// Why an upstream exchange failed; the `kind` label of
/// `perfgate_upstream_errors_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum UpstreamErrorKind {
    /// The TCP connection could not be opened.
    connect,
    /// No response head within the response timeout, or the body stalled.
    timeout,
    /// The connection broke or the upstream spoke invalid HTTP.
    protocol,
    /// The upstream answered with a 5xx status.
    status_5xx,
}

/// Where an invalidation came from; the `source` label of
/// `perfgate_invalidations_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum InvalidationSource {
    /// The admin API.
    admin,
    /// A successful unsafe request (RFC 9111 §4.4).
    automatic,
    /// Another instance, through Redis.
    fanout,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: InvalidationSource,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: UpstreamErrorKind,
}

/// The metric registry and the families perfgate records into.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: Family<RouteClass, Histogram>,
    cache: Family<CacheLabels, Counter>,
    /// L1 results resolved once (the hot path records one per request).
    l1: [OnceLock<Counter>; CACHE_EVENTS],
    upstream_errors: Family<ErrorLabels, Counter>,
    upstream_requests: Counter,
    coalesced_waiters: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    compression_saved: Counter,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    invalidations: Family<SourceLabels, Counter>,
    l2_up: Gauge,
    l2_errors: Counter,
    l2_writes: Counter,
    client_connections: Gauge,
    /// Traffic control: shedding, limits, JWT, upstream health, breakers.
    pub traffic: TrafficMetrics,
    /// The async job queue.
    pub jobs: JobMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric family.
    pub fn new() -> Self {
        // The root registry holds the unprefixed `process_*` collector;
        // perfgate's own families are in the `perfgate` sub-registry.
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("perfgate");
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status code",
            requests.clone(),
        );
        let latency = Family::<RouteClass, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head received to response head sent, by route and status class (1xx to 5xx, other)",
            latency.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_requests",
            "Cache lookups by layer and result (hit, miss, stale, revalidated, coalesced, bypass)",
            cache.clone(),
        );
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failed upstream exchanges by kind",
            upstream_errors.clone(),
        );
        let upstream_requests = Counter::default();
        registry.register(
            "upstream_requests",
            "Requests sent to upstreams",
            upstream_requests.clone(),
        );
        let coalesced_waiters = Counter::default();
        registry.register(
            "coalesced_waiters",
            "Requests that waited for another request's upstream fetch instead of sending their own",
            coalesced_waiters.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "upstream_received_bytes",
            "Body bytes received from upstreams",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "client_sent_bytes",
            "Body bytes sent to clients (after compression)",
            bytes_out.clone(),
        );
        let compression_saved = Counter::default();
        registry.register(
            "compression_saved_bytes",
            "Body bytes not sent thanks to compression",
            compression_saved.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Objects in the L1 cache",
            cache_entries.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_size_bytes",
            "Bytes held by the L1 cache",
            cache_bytes.clone(),
        );
        let invalidations = Family::<SourceLabels, Counter>::default();
        registry.register(
            "invalidations",
            "Invalidations applied, by source (admin, automatic, fanout)",
            invalidations.clone(),
        );
        let l2_up = Gauge::default();
        registry.register(
            "l2_up",
            "1 when the Redis L2 answers, 0 when it is degraded or unreachable",
            l2_up.clone(),
        );
        let l2_errors = Counter::default();
        registry.register(
            "l2_errors",
            "Redis L2 calls that failed or hit their deadline",
            l2_errors.clone(),
        );
        let l2_writes = Counter::default();
        registry.register(
            "l2_writes",
            "Entries written to the Redis L2",
            l2_writes.clone(),
        );
        let client_connections = Gauge::default();
        registry.register(
            "client_connections",
            "Client connections open on the proxy listener (TLS handshakes included)",
            client_connections.clone(),
        );
        let traffic = TrafficMetrics::register(registry);
        let jobs = JobMetrics::register(registry);
        Self {
            traffic,
            jobs,
            registry: root,
            client_connections,
            invalidations,
            l2_up,
            l2_errors,
            l2_writes,
            requests,
            latency,
            cache,
            l1: Default::default(),
            upstream_errors,
            upstream_requests,
            coalesced_waiters,
            bytes_in,
            bytes_out,
            compression_saved,
            cache_entries,
            cache_bytes,
        }
    }

    /// Pre-resolved handles for one route (call once per route at start-up).
    pub fn route(&self, name: &str) -> RouteMetrics {
        let route: Arc<str> = Arc::from(name);
        RouteMetrics {
            route,
            common: Default::default(),
            requests: self.requests.clone(),
            classes: Default::default(),
            latency: self.latency.clone(),
        }
    }

    /// Counts one cache outcome for a layer (`"l1"` today, `"l2"` later).
    pub fn cache_event(&self, layer: &'static str, result: CacheEvent) {
        if layer == "l1" {
            self.l1[result as usize]
                .get_or_init(|| {
                    self.cache
                        .get_or_create_owned(&CacheLabels { layer, result })
                })
                .inc();
        } else {
            self.cache
                .get_or_create(&CacheLabels { layer, result })
                .inc();
        }
    }

    /// Counts one applied invalidation.
    pub fn invalidation(&self, source: InvalidationSource) {
        self.invalidations
            .get_or_create(&SourceLabels { source })
            .inc();
    }

    /// Publishes whether the L2 answers.
    pub fn set_l2_up(&self, up: bool) {
        self.l2_up.set(i64::from(up));
    }

    /// Counts one failed or timed-out L2 call.
    pub fn l2_error(&self) {
        self.l2_errors.inc();
    }

    /// Counts one entry written to L2.
    pub fn l2_write(&self) {
        self.l2_writes.inc();
    }

    /// Counts one failed upstream exchange.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .get_or_create(&ErrorLabels { kind })
            .inc();
    }

    /// Counts `n` requests sent upstream.
    pub fn upstream_requests(&self, n: u64) {
        self.upstream_requests.inc_by(n);
    }

    /// Counts one request that waited on another's fetch.
    pub fn coalesced_waiter(&self) {
        self.coalesced_waiters.inc();
    }

    /// Adds body bytes received from an upstream.
    pub fn bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    /// Adds body bytes sent to a client, and the bytes compression saved.
    pub fn bytes_out(&self, sent: u64, saved: u64) {
        self.bytes_out.inc_by(sent);
        if saved > 0 {
            self.compression_saved.inc_by(saved);
        }
    }

    /// Publishes the L1 cache's size (called by the scrape handler).
    pub fn set_cache_size(&self, entries: u64, bytes: u64) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts one client connection as open until the returned guard
    /// drops (the proxy's accept loop holds it for the connection's life).
    pub fn connection_opened(&self) -> OpenConnection {
        self.client_connections.inc();
        OpenConnection(self.client_connections.clone())
    }

    /// Client connections open on the proxy listener now.
    pub fn client_connections(&self) -> u64 {
        u64::try_from(self.client_connections.get()).unwrap_or(0)
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The content type of [`Metrics::encode`]'s output.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// The Prometheus text format (0.0.4) exposition of every metric, for
    /// scrapers that do not ask for OpenMetrics (curl, `promtool check
    /// metrics`, older agents). See [`openmetrics_to_text`].
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    /// The content type of [`Metrics::encode_text`]'s output.
    pub const TEXT_CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}

/// Rewrites the OpenMetrics text that `prometheus-client` writes into the
/// Prometheus text format 0.0.4. The samples are the same; the differences
/// are in the metadata: an OpenMetrics counter family `x` has the sample
/// `x_total`, and 0.0.4 names the family by its sample (`# HELP x_total`,
/// `# TYPE x_total counter`); `# UNIT` and `# EOF` do not exist in 0.0.4,
/// and `unknown` is called `untyped`. perfgate exports no info, stateset or
/// gauge-histogram families and no exemplars, the OpenMetrics features
/// 0.0.4 cannot express.
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + om.len() / 16);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((kind, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if kind == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(kind);
                out.push_str(name);
                out.push_str(suffix);
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A client connection counted in `perfgate_client_connections`, until it
/// drops.
#[must_use = "the connection counts as open only while this is held"]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Metric handles of one route, resolved at start-up.
#[derive(Clone)]
pub struct RouteMetrics {
    route: Arc<str>,
    /// Counters of the common statuses, created on first use so the
    /// exposition lists only statuses that occurred.
    common: [OnceLock<Counter>; COMMON_STATUSES.len()],
    requests: Family<RouteStatus, Counter>,
    /// The route's latency histogram per status class, created on first
    /// use like the status counters.
    classes: [OnceLock<Histogram>; STATUS_CLASSES.len()],
    latency: Family<RouteClass, Histogram>,
}

impl RouteMetrics {
    /// Records one answered request.
    pub fn record(&self, status: u16, seconds: f64) {
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(i) => {
                self.common[i]
                    .get_or_init(|| {
                        self.requests.get_or_create_owned(&RouteStatus {
                            route: self.route.clone(),
                            status,
                        })
                    })
                    .inc();
            }
            None => {
                self.requests
                    .get_or_create(&RouteStatus {
                        route: self.route.clone(),
                        status,
                    })
                    .inc();
            }
        }
        let class = status_class(status);
        self.classes[class]
            .get_or_init(|| {
                self.latency.get_or_create_owned(&RouteClass {
                    route: self.route.clone(),
                    status_class: STATUS_CLASSES[class],
                })
            })
            .observe(seconds);
    }

    /// The route's name as used in labels.
    pub fn name(&self) -> &str {
        &self.route
    }
}

#[cfg(test)]
mod tests;
