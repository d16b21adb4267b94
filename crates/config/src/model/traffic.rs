//! Traffic control settings: upstream pools with balancing, health,
//! circuit breaking and retries; rate limits; JWT; route guards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};

/// A named group of upstream servers that routes target with `pool`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Name routes refer to.
    pub name: String,
    /// The servers, `{ url = "http://host:port", weight = 1 }` each.
    pub servers: Vec<PoolServer>,
    /// How a server is chosen for each request.
    pub balance: Balance,
    /// What consistent hashing hashes: `path` (path and query), `ip` (the
    /// client), `user` (the JWT user), `header:NAME` or `cookie:NAME`.
    pub hash_key: String,
    /// Another pool that takes the safe requests (GET/HEAD/OPTIONS), such as
    /// read replicas; this pool then takes only the others.
    pub read_pool: Option<String>,
    /// Requests in flight to this pool at once; 0 = unlimited. Requests over
    /// the limit wait up to `queue_timeout`, then get 503.
    pub max_connections: usize,
    /// How long a request may wait for one of the `max_connections` slots.
    pub queue_timeout: Duration,
    /// Time allowed to open a TCP connection (default: `upstream.connect_timeout`).
    pub connect_timeout: Option<Duration>,
    /// Active health probes.
    pub health: HealthConfig,
    /// Passive outlier detection.
    pub outlier: OutlierConfig,
    /// The pool's circuit breaker.
    pub breaker: BreakerConfig,
    /// Retries of failed requests.
    pub retry: RetryConfig,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            servers: Vec::new(),
            balance: Balance::default(),
            hash_key: "path".into(),
            read_pool: None,
            max_connections: 0,
            queue_timeout: Duration::from_secs(1),
            connect_timeout: None,
            health: HealthConfig::default(),
            outlier: OutlierConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

/// One server of a pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolServer {
    /// Base URL, `http://host:port` (a path prefix is allowed and prepended).
    pub url: String,
    /// Share of the traffic relative to the other servers (1–1000).
    pub weight: u32,
}

impl Default for PoolServer {
    fn default() -> Self {
        Self {
            url: String::new(),
            weight: 1,
        }
    }
}

/// Load-balancing strategy.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Power of two random choices, the one with fewer requests in flight.
    LeastOutstanding,
    /// A hash ring over `hash_key`: a key keeps its server while it is up.
    ConsistentHash,
}

/// Active health probes of every server in a pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Path probed with GET; no probes when absent. Any 2xx/3xx is healthy.
    pub path: Option<String>,
    /// Time between probes of one server.
    pub interval: Duration,
    /// Deadline of one probe.
    pub timeout: Duration,
    /// Consecutive successful probes that bring a server back.
    pub healthy_threshold: u32,
    /// Consecutive failed probes that take a server out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Passive outlier detection: servers that keep failing are ejected for a while.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Consecutive failures (connect errors, timeouts, 5xx) that eject a
    /// server; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// Ejection time, multiplied by the number of times the server was ejected.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Largest share of the pool ejected at once (percent); at least one
    /// server always stays in.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// The circuit breaker of a pool: while open, requests are not sent; stale
/// content is served where the cache has it, otherwise 503 with `Retry-After`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Use the breaker.
    pub enabled: bool,
    /// Opens when this share of the requests in `window` failed (0.0–1.0)…
    pub failure_rate: f64,
    /// …and at least this many requests were seen in the window.
    pub min_requests: u32,
    /// The sliding window of the failure rate.
    pub window: Duration,
    /// Also opens after this many consecutive failures; 0 = only the rate.
    pub consecutive_failures: u32,
    /// How long it stays open before trial requests are let through.
    pub open_for: Duration,
    /// Trial requests at once while half-open; as many successes close it.
    pub half_open_requests: u32,
    /// Which exchange failures count against the breaker (and outlier
    /// detection): `connect` (the connection could not be opened),
    /// `timeout` (no response head in time) and `protocol` (the connection
    /// broke or the upstream spoke invalid HTTP). Default: all three.
    pub on_errors: Vec<String>,
    /// Which upstream statuses count against the breaker (and outlier
    /// detection), 400–599. Default `[502, 503, 504]`: an application error
    /// such as a 500 from a reachable server is an answer, not a sick upstream.
    pub on_status: Vec<u32>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            consecutive_failures: 10,
            open_for: Duration::from_secs(10),
            half_open_requests: 1,
            on_errors: vec!["connect".into(), "timeout".into(), "protocol".into()],
            on_status: vec![502, 503, 504],
        }
    }
}

/// Retries of failed requests: only idempotent methods (or requests the
/// upstream never received), on another server where possible.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt; 0 = none.
    pub attempts: u32,
    /// Retries allowed as a share of the requests (percent), so retries
    /// never multiply the load on a failing upstream.
    pub budget_percent: u32,
    /// Retries always allowed per second, whatever the traffic.
    pub min_per_second: u32,
    /// First backoff (full jitter: a random delay up to this, doubling per attempt).
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Upstream statuses after which an idempotent request is sent again,
    /// to another server only (never to the one that answered), and not
    /// before the answer's `Retry-After`. Default empty: a response is an
    /// answer. Connect errors and timeouts are retried regardless.
    pub on_status: Vec<u32>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 2,
            budget_percent: 20,
            min_per_second: 3,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            on_status: Vec::new(),
        }
    }
}

/// A rate-limit rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Name in the `RateLimit-Policy` header, metrics and logs.
    pub name: String,
    /// What is counted: `ip` (the client, after trusted proxies), `user`
    /// (the JWT user), `route`, `global`, `header:NAME` (an API key),
    /// `query:NAME` or `body:FIELD` (a top-level field of a JSON or form
    /// body, e.g. the account of a login; bodies of requests such a rule
    /// applies to are read first, up to 64 KiB, larger → 413). A request
    /// without that value is not limited by the rule.
    pub key: String,
    /// Requests allowed per `per`.
    pub rate: u32,
    /// The period of `rate`.
    pub per: Duration,
    /// Requests allowed at once after a quiet period (default: `rate`).
    pub burst: Option<u32>,
    /// Route names the rule applies to; empty = every route.
    pub routes: Vec<String>,
    /// Methods the rule applies to; empty = every method.
    pub methods: Vec<String>,
    /// Count in Redis, shared by every instance, when Redis is configured.
    /// If Redis is unreachable the instance falls back to its own local count.
    pub shared: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            key: "ip".into(),
            rate: 0,
            per: Duration::from_secs(1),
            burst: None,
            routes: Vec::new(),
            methods: Vec::new(),
            shared: true,
        }
    }
}

/// JWT validation mode of a route.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum JwtMode {
    /// Tokens are not looked at.
    #[default]
    Off,
    /// A bearer token, when present, must be valid (else 401); its user is
    /// used for limits and analytics.
    Optional,
    /// A valid bearer token is required (else 401).
    Required,
}

/// JWT validation (HS256, RS256, ES256).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Mode of routes that set none.
    pub mode: JwtMode,
    /// Algorithms accepted.
    pub algorithms: Vec<String>,
    /// File with the HS256 secret (also `PERFGATE_JWT_SECRET`).
    pub secret_file: Option<String>,
    /// PEM files with RSA or EC public keys.
    pub public_key_files: Vec<String>,
    /// A JWKS file (`{"keys": [...]}`); the token's `kid` picks the key.
    pub jwks_file: Option<String>,
    /// Accepted `iss` values; empty = not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty = not checked.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim holding the user id.
    pub user_claim: String,
    /// Claims sent to the upstream as headers, claim → header name, e.g.
    /// `{ sub = "X-User-Id" }`. Client-sent headers of those names are removed.
    pub forward_claims: BTreeMap<String, String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            mode: JwtMode::Off,
            algorithms: vec!["HS256".into(), "RS256".into(), "ES256".into()],
            secret_file: None,
            public_key_files: Vec::new(),
            jwks_file: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            user_claim: "sub".into(),
            forward_claims: BTreeMap::new(),
        }
    }
}

/// A query parameter clamped to a range, e.g. `page_size` at most 100,
/// 20 when absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueryClamp {
    /// Parameter name.
    pub param: String,
    /// Smallest value.
    pub min: Option<u64>,
    /// Largest value.
    pub max: Option<u64>,
    /// Value added when the parameter is absent.
    pub default: Option<u64>,
}

/// Per-route deadlines (each defaults to the pool's or `upstream`'s).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteTimeouts {
    /// Time allowed to open a TCP connection.
    pub connect: Option<Duration>,
    /// Time allowed for one attempt's response head.
    pub response: Option<Duration>,
    /// Time allowed for the whole exchange up to the response head,
    /// retries and backoff included.
    pub total: Option<Duration>,
}

/// The batch endpoint: one POST carrying several GET requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Serve the batch endpoint on the proxy listener (off by default: it
    /// takes a path from the upstream's namespace).
    pub enabled: bool,
    /// Its path.
    pub path: String,
    /// Most requests in one batch.
    pub max_requests: usize,
    /// Requests of one batch served at once.
    pub concurrency: usize,
    /// Bytes of sub-responses one batch may hold in memory (its answer is
    /// about this size at most); an item that does not fit is answered
    /// with its own 413 error in the list.
    pub max_response_bytes: ByteSize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: "/batch".into(),
            max_requests: 50,
            concurrency: 8,
            max_response_bytes: ByteSize(16 * 1024 * 1024),
        }
    }
}
