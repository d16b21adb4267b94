//! The configuration tree. Every field has a default that makes
//! `perfgate serve --upstream URL` work with no file at all.

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};

mod jobs;
mod logs;
mod traffic;
pub use jobs::*;
pub use logs::*;
pub use traffic::*;

/// The whole configuration of one perfgate instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client-facing listener: addresses, TLS, protocol limits, drain.
    pub server: ServerConfig,
    /// The admin listener and its authentication.
    pub admin: AdminConfig,
    /// The default upstream, used by routes that name none.
    pub upstream: UpstreamConfig,
    /// Which `X-Forwarded-*` headers are trusted and how they are written.
    pub forwarded: ForwardedConfig,
    /// The in-process response cache (L1).
    pub cache: CacheConfig,
    /// The shared cache (L2) and invalidation fan-out on Redis.
    pub redis: RedisConfig,
    /// Response compression.
    pub compression: CompressionConfig,
    /// Named upstream pools (several servers, balancing, health, breaker,
    /// retries) that routes target with `pool`.
    pub pools: Vec<PoolConfig>,
    /// Rate-limit rules, checked in order; the first that refuses answers 429.
    pub rate_limits: Vec<RateLimitConfig>,
    /// JWT validation.
    pub jwt: JwtConfig,
    /// The batch endpoint.
    pub batch: BatchConfig,
    /// The queue of async routes (`[routes.async]`).
    pub jobs: JobsConfig,
    /// The access log, the searchable log store and OTLP log export.
    pub logs: LogsConfig,
    /// Routes, matched by longest path prefix (or pattern) first; a request
    /// that matches none goes to the default upstream with the default policy.
    pub routes: Vec<RouteConfig>,
}

/// Client-facing listener settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the proxy listens on.
    pub listen: String,
    /// TLS for the client-facing listener; plain HTTP (with h2c) when absent.
    pub tls: Option<TlsConfig>,
    /// Accept HTTP/2 (h2c with prior knowledge on plain listeners, ALPN `h2` on TLS).
    pub http2: bool,
    /// Largest request head (request line plus headers) accepted; larger → 431.
    pub max_header_bytes: ByteSize,
    /// Most header fields in a request head; more → 431.
    pub max_header_count: usize,
    /// Longest request target (path and query); longer → 414.
    pub max_uri_bytes: ByteSize,
    /// Collapse runs of `/` in request paths (`/a//b` is `/a/b`) before the
    /// route, the cache key and the upstream see the path, as nginx's
    /// `merge_slashes` does by default. Off: `//` is kept everywhere alike.
    pub merge_slashes: bool,
    /// Accept `%2F`/`%5C` in request paths, kept encoded (never decoded
    /// into separators). Off (the default): such requests get 400, since
    /// many upstreams decode them into `/` after perfgate chose the route.
    pub allow_encoded_slashes: bool,
    /// Largest request body accepted; larger → 413.
    pub max_body_bytes: ByteSize,
    /// Requests handled at once; more are refused at once with 503 (load
    /// shedding) so that overload degrades gracefully. 0 = unlimited.
    pub max_concurrent_requests: usize,
    /// Requests slower than this are logged with their timing breakdown.
    pub slow_request_threshold: Duration,
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
    /// How long a client may take to send a request body that perfgate
    /// reads whole (job submissions, `body:` rate-limit keys, replayable
    /// retry bodies, batch requests); slower → 408.
    pub request_body_timeout: Duration,
    /// Client connections open at once; past it the listener stops
    /// accepting (new connections wait in the kernel's accept queue) until
    /// one closes. 0 = unlimited.
    pub max_connections: usize,
    /// Streams one HTTP/2 connection may have open at once; more are
    /// refused by the client's own stack (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub http2_max_concurrent_streams: u32,
    /// An HTTP/2 connection with no open stream for this long is closed
    /// (GOAWAY).
    pub http2_idle_timeout: Duration,
    /// How often an HTTP/2 connection is pinged.
    pub http2_keep_alive_interval: Duration,
    /// An HTTP/2 connection that does not answer a ping within this is closed.
    pub http2_keep_alive_timeout: Duration,
    /// Value of the `Via` pseudonym added to requests and responses.
    pub via_name: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tls: None,
            http2: true,
            max_header_bytes: ByteSize(16 * 1024),
            max_header_count: 100,
            max_uri_bytes: ByteSize(8 * 1024),
            merge_slashes: true,
            allow_encoded_slashes: false,
            max_body_bytes: ByteSize(10 * 1024 * 1024),
            max_concurrent_requests: 10_000,
            slow_request_threshold: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            request_body_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            http2_max_concurrent_streams: 100,
            http2_idle_timeout: Duration::from_secs(300),
            http2_keep_alive_interval: Duration::from_secs(30),
            http2_keep_alive_timeout: Duration::from_secs(10),
            via_name: "perfgate".into(),
        }
    }
}

/// TLS certificate and key, read from PEM files (never inline).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

/// Admin listener settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin API (health, metrics, cache administration).
    pub listen: String,
    /// File holding the bearer token (trailing whitespace ignored). The
    /// token may also come from `PERFGATE_ADMIN_TOKEN`. With no token the
    /// admin API answers only clients on loopback, and only reads unless
    /// `allow_unauthenticated` is set.
    pub token_file: Option<String>,
    /// Serve `/metrics` without the token (for scrapers on a private network).
    pub metrics_public: bool,
    /// Without a token, let loopback clients change things (purge,
    /// invalidate, warm up, reload, retry jobs). Off (the default): with no
    /// token the admin API is read-only, and mutating calls get 403.
    pub allow_unauthenticated: bool,
    /// Host names (optionally `name:port`) the admin API answers to besides
    /// IP literals and `localhost`; any other `Host` gets 421, so a web page
    /// cannot reach the API through a name of its own that resolves to this
    /// machine (DNS rebinding). `/health` answers every Host.
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
            token_file: None,
            metrics_public: false,
            allow_unauthenticated: false,
            allowed_hosts: Vec::new(),
        }
    }
}

/// An upstream server and how perfgate talks to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL, `http://host:port` (a path prefix is allowed and prepended).
    pub url: String,
    /// Time allowed to open a TCP connection.
    pub connect_timeout: Duration,
    /// Time allowed between sending the request and receiving the response head.
    pub response_timeout: Duration,
    /// Longest silence allowed while streaming a response body.
    pub body_idle_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream host.
    pub pool_max_idle: usize,
    /// Forward the client's `Host` instead of the upstream's authority.
    pub preserve_host: bool,
    /// Active health probes of the default upstream and of route `upstream` URLs.
    pub health: HealthConfig,
    /// Passive outlier detection (for those upstreams).
    pub outlier: OutlierConfig,
    /// Circuit breaker (for those upstreams).
    pub breaker: BreakerConfig,
    /// Retries (for those upstreams).
    pub retry: RetryConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle: 256,
            preserve_host: false,
            health: HealthConfig::default(),
            outlier: OutlierConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

/// Trust of the forwarding headers (`Forwarded`, `X-Forwarded-*`,
/// `X-Real-IP`) sent by clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardedConfig {
    /// Peers (IP addresses or CIDR blocks) whose `trusted_headers` are kept
    /// (`X-Forwarded-For` appended to); from anyone else every forwarding
    /// header is removed and perfgate sets its own
    /// `X-Forwarded-For/Proto/Host`.
    pub trusted_proxies: Vec<String>,
    /// The forwarding headers a trusted proxy may pass upstream, among
    /// `forwarded`, `x-forwarded-for`, `x-forwarded-proto`,
    /// `x-forwarded-host`, `x-forwarded-port`, `x-forwarded-prefix` and
    /// `x-real-ip`; the others are removed even from trusted proxies. Those
    /// passed that can change the answer (all but `x-forwarded-for` and
    /// `x-real-ip`) are part of the cache key.
    pub trusted_headers: Vec<String>,
}

/// The forwarding headers `forwarded.trusted_headers` may name.
pub const FORWARDING_HEADERS: [&str; 7] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
];

impl Default for ForwardedConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            trusted_headers: ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// The L1 response cache.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Turn response caching on or off for every route.
    pub enabled: bool,
    /// Memory budget of the L1 cache (bodies, compressed variants and headers).
    pub max_bytes: ByteSize,
    /// Responses larger than this are streamed through and not stored.
    pub max_object_bytes: ByteSize,
    /// Query parameters dropped from the cache key; a trailing `*` matches a prefix.
    pub drop_query_params: Vec<String>,
    /// Deprecated and ignored (accepted so older files still load):
    /// concurrent misses now wait for the one upstream request as long as
    /// that request's own deadlines allow (the route's response/total
    /// timeouts, retries, `upstream.body_idle_timeout`), so a slow upstream
    /// is never stampeded when a shorter wait runs out.
    pub coalesce_timeout: Option<Duration>,
    /// How long a stale entry with validators is kept for revalidation.
    pub keep_stale: Duration,
    /// Largest freshness given by the Last-Modified heuristic (RFC 9111 §4.2.2).
    pub max_heuristic_ttl: Duration,
    /// Pass the upstream's `Surrogate-Key`/`Cache-Tag` headers on to clients
    /// (they are stripped by default: they are meant for caches).
    pub expose_tag_headers: bool,
    /// Warm-up requests sent to the upstreams at once.
    pub warmup_concurrency: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: ByteSize(256 * 1024 * 1024),
            max_object_bytes: ByteSize(8 * 1024 * 1024),
            drop_query_params: vec![
                "utm_*".into(),
                "fbclid".into(),
                "gclid".into(),
                "mc_cid".into(),
                "mc_eid".into(),
            ],
            coalesce_timeout: None,
            keep_stale: Duration::from_secs(600),
            max_heuristic_ttl: Duration::from_secs(86_400),
            expose_tag_headers: false,
            warmup_concurrency: 8,
        }
    }
}

/// Redis: the shared L2 cache and the invalidation fan-out between
/// instances. Without `url` or `cluster`, perfgate runs with L1 only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Standalone Redis, `redis://[:password@]host:port[/db]` (also
    /// `PERFGATE_REDIS_URL` or `--redis`).
    pub url: String,
    /// Redis Cluster seed nodes, `host:port` each (instead of `url`).
    pub cluster: Vec<String>,
    /// Deadline of every Redis call on the request path; past it the
    /// request goes on without L2.
    pub timeout: Duration,
    /// Responses larger than this are kept in L1 only.
    pub max_object_bytes: ByteSize,
    /// Prefix of every key perfgate writes (share one Redis between
    /// deployments by giving each its own).
    pub key_prefix: String,
    /// After a failed call, how long L2 is skipped before it is tried again.
    pub retry_after: Duration,
    /// Most variants (per `Vary` values) kept under one key in Redis; the
    /// least recently written is dropped beyond.
    pub max_variants: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            cluster: Vec::new(),
            timeout: Duration::from_millis(50),
            max_object_bytes: ByteSize(1024 * 1024),
            key_prefix: "perfgate".into(),
            retry_after: Duration::from_secs(1),
            max_variants: 32,
        }
    }
}

impl RedisConfig {
    /// True when an L2 is configured.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty() || !self.cluster.is_empty()
    }
}

/// Response compression.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Compress responses for clients that accept it.
    pub enabled: bool,
    /// Bodies smaller than this are sent as they are.
    pub min_bytes: ByteSize,
    /// Encodings offered, in order of preference when the client weighs them equally.
    pub algorithms: Vec<String>,
    /// gzip level (1–9).
    pub gzip_level: u32,
    /// brotli quality (0–11); above 6 is slow on large bodies.
    pub brotli_level: u32,
    /// zstd level (1–19).
    pub zstd_level: i32,
    /// Content types (without parameters) worth compressing; a trailing `*`
    /// matches a prefix, as in `text/*`.
    pub content_types: Vec<String>,
    /// Compressions of stored responses running at once, on threads of
    /// their own (never on the threads that serve requests). When all are
    /// busy a request gets the identity body rather than wait.
    pub max_concurrent: usize,
    /// Streamed (uncached) responses compressed at once; each encoder holds
    /// a bounded window (brotli 256 KiB, zstd 256 KiB, gzip 32 KiB). Past
    /// this, streamed responses are sent uncompressed.
    pub max_streams: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_bytes: ByteSize(500),
            algorithms: vec!["br".into(), "zstd".into(), "gzip".into()],
            gzip_level: 6,
            brotli_level: 5,
            zstd_level: 3,
            content_types: vec![
                "text/*".into(),
                "application/json".into(),
                "application/*+json".into(),
                "application/javascript".into(),
                "application/xml".into(),
                "application/*+xml".into(),
                "application/x-ndjson".into(),
                "image/svg+xml".into(),
            ],
            max_concurrent: 2,
            max_streams: 256,
        }
    }
}

/// One route: which requests it matches, where they go, how they are cached.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and logs; defaults to the path.
    pub name: Option<String>,
    /// Path prefix matched on segment boundaries (`/events` matches
    /// `/events` and `/events/42`, not `/eventsx`). Exactly one of `path`
    /// and `pattern` is set.
    pub path: Option<String>,
    /// Path pattern with `{name}` segments and an optional trailing `*`,
    /// e.g. `/events/{id}` or `/static/*`.
    pub pattern: Option<String>,
    /// Methods matched; empty matches every method.
    pub methods: Vec<String>,
    /// Upstream base URL for this route; the default upstream when neither
    /// this nor `pool` is set.
    pub upstream: Option<String>,
    /// Name of the pool this route targets (instead of `upstream`).
    pub pool: Option<String>,
    /// JWT validation on this route (default: `jwt.mode`).
    pub jwt: Option<JwtMode>,
    /// Deadlines of this route's upstream requests.
    pub timeouts: RouteTimeouts,
    /// Query parameters clamped before routing on and caching.
    pub query_clamps: Vec<QueryClamp>,
    /// Cache policy of this route.
    pub cache: RouteCachePolicy,
    /// Make this route async: `POST` answers `202 Accepted` with a task id
    /// and a worker calls the upstream (`[routes.async]`).
    #[serde(rename = "async")]
    pub async_job: Option<AsyncRouteConfig>,
}

/// Per-route cache policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteCachePolicy {
    /// Never use the cache for this route.
    pub bypass: bool,
    /// Freshness given to responses that carry no explicit freshness
    /// (`max-age`, `s-maxage`, `Expires`) and are not marked uncacheable.
    pub default_ttl: Option<Duration>,
    /// `stale-while-revalidate` window applied when the response has none.
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error` window applied when the response has none.
    pub stale_if_error: Option<Duration>,
    /// How requests with `Authorization` are treated.
    pub authorized: AuthorizedPolicy,
    /// How requests with `Cookie` are treated (default `rfc`: like
    /// `Authorization` under RFC 9111 §3.5, shared only when the response
    /// is explicitly `public` or has `s-maxage`).
    pub cookies: CookiePolicy,
    /// Store responses that set cookies (the cookie is stripped from the
    /// stored copy and from hits; only the client that caused the fetch sees it).
    pub allow_set_cookie: bool,
    /// Tags attached to every response stored through this route (in
    /// addition to the upstream's `Surrogate-Key`/`Cache-Tag`).
    pub tags: Vec<String>,
    /// Tags purged after a successful unsafe request (POST/PUT/PATCH/DELETE)
    /// on this route, e.g. `["events"]` on `/events/{id}/bookings`.
    pub invalidate_tags: Vec<String>,
}

/// Caching of requests that carry `Authorization`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorizedPolicy {
    /// RFC 9111 §3.5: only responses marked `public`, `s-maxage` or
    /// `must-revalidate` are stored and shared.
    #[default]
    Rfc,
    /// Never cache requests with `Authorization`.
    Bypass,
    /// Cache per credential: the `Authorization` value is part of the key.
    PerUser,
    /// Share responses between all authenticated clients (the upstream
    /// answers the same to everyone who is authenticated). Requests without
    /// `Authorization` never read what authenticated ones stored.
    Shared,
}

/// Caching of requests that carry `Cookie`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CookiePolicy {
    /// Like `Authorization` under RFC 9111 §3.5: a response to a request
    /// with `Cookie` is stored and shared only when it is explicitly
    /// `public` or has `s-maxage`, and such a request is only answered from
    /// entries marked so.
    #[default]
    Rfc,
    /// Never cache requests with `Cookie`.
    Bypass,
    /// Cookies do not change the response (e.g. only analytics cookies):
    /// requests with `Cookie` are cached like any other.
    Ignore,
}
