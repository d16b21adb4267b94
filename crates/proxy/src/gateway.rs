//! The gateway: configuration compiled once, and the life of a request.
//! See ARCHITECTURE.md, "Life of a request".

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::Limited;
use hyper::body::Incoming;
use perfgate_cache::clock::Clock;
use perfgate_cache::compress::{Compressor, Encoding};
use perfgate_cache::key::{KeyNormalizer, url_hash};
use perfgate_cache::memory::MemoryCache;
use perfgate_cache::redis::L2;
use perfgate_config::{AuthorizedPolicy, Config};
use perfgate_observe::{InvalidationSource, Metrics};

use crate::body::{Body, Watched};
use crate::cached::Shared;
use crate::coalesce::Flights;
use crate::compressing::{self, Compressing};
use crate::error::{ErrorKind, GatewayError};
use crate::guard;
use crate::headers::{append_via, strip_hop_by_hop, strip_tag_headers};
use crate::policy::Policy;
use crate::route::Route;
use crate::stats::{CacheStats, Stats};
use crate::warmup::Warmups;

/// `Cache-Status` (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `Server-Timing`.
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// What one accepted connection tells each of its requests.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection is TLS.
    pub tls: bool,
    /// The client's IP as a header value, formatted once per connection
    /// (for `X-Forwarded-For`).
    pub peer_ip: HeaderValue,
    /// The user of this request (JWT), set per request once validated.
    pub user: Option<Arc<str>>,
}

impl Conn {
    /// Describes a new connection.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        Self {
            peer,
            tls,
            peer_ip,
            user: None,
        }
    }
}

/// Per-request facts gathered on the way, for the response headers, the
/// slow-request log and metrics.
#[derive(Default)]
pub(crate) struct Cx {
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) timing: Waits,
    /// Rate-limit headers for the response.
    pub(crate) limit_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Where a request's time went outside the gateway itself.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Waits {
    /// Waiting for the upstream (every attempt and backoff).
    pub(crate) upstream: Duration,
    /// Waiting for a pool slot (`max_connections`).
    pub(crate) queue: Duration,
    /// Upstream attempts made (retries included).
    pub(crate) attempts: u32,
}

impl std::ops::AddAssign for Waits {
    fn add_assign(&mut self, o: Waits) {
        self.upstream += o.upstream;
        self.queue += o.queue;
        self.attempts += o.attempts;
    }
}

/// `Server-Timing: gateway;dur=0.123[, upstream;dur=45.678]` (milliseconds,
/// microsecond precision), written without `format!`: it is on every
/// response, and float formatting showed in the pass-through profile.
fn server_timing(gateway: Duration, upstream: Duration) -> HeaderValue {
    fn push_ms(out: &mut Vec<u8>, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        push_u64(out, us / 1000);
        out.push(b'.');
        let frac = us % 1000;
        out.extend_from_slice(&[
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ]);
    }
    fn push_u64(out: &mut Vec<u8>, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[i..]);
    }
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(b"gateway;dur=");
    push_ms(&mut out, gateway);
    if !upstream.is_zero() {
        out.extend_from_slice(b", upstream;dur=");
        push_ms(&mut out, upstream);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
        .unwrap_or(HeaderValue::from_static("gateway"))
}

/// A random id for this process, so it can ignore its own fan-out messages.
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The host a client asked for: `Host` (HTTP/1), else the URI's authority
/// (HTTP/2 `:authority`), else empty.
pub(crate) fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> &'a str {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// The request line and headers of a request about to go upstream.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) version: Version,
}

/// Everything the request path needs, built once from the configuration.
pub struct Gateway {
    /// The reloadable part: routes, pools, guards, limits, JWT.
    policy: ArcSwap<Policy>,
    /// Requests in flight, for load shedding.
    in_flight: AtomicUsize,
    pub(crate) cache: Option<MemoryCache>,
    /// Where the cache tiers read entry ages (tests pass a manual clock).
    pub(crate) clock: Clock,
    pub(crate) keys: KeyNormalizer,
    pub(crate) compressor: Compressor,
    pub(crate) flights: Flights<Option<Shared>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stats: Stats,
    pub(crate) max_object_bytes: usize,
    pub(crate) expose_tag_headers: bool,
    pub(crate) warmups: Warmups,
    pub(crate) l2: Option<L2>,
    pub(crate) l2_max_object_bytes: u64,
    pub(crate) l2_writes: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) keep_stale: Duration,
    pub(crate) instance_id: String,
    pub(crate) flush_pending: std::sync::atomic::AtomicBool,
    /// Some route keys entries per credential (`key\nuser=…`) or keeps
    /// authenticated entries apart (`key\nauth`).
    pub(crate) per_user_routes: bool,
    pub(crate) via_h1: HeaderValue,
    via_h2: HeaderValue,
    /// The async job queue, when some route is async.
    pub(crate) jobs: std::sync::OnceLock<Arc<crate::jobs::Jobs>>,
    /// Stops the job workers (set by `run_background`).
    pub(crate) jobs_stop: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>>,
    /// `server.request_body_timeout`: the deadline of every whole-body read.
    pub(crate) body_timeout: Duration,
}

impl Gateway {
    /// Compiles a validated configuration.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        Self::with_clock(config, metrics, Clock::system())
    }

    /// Like [`new`](Self::new), with the cache and the job store reading
    /// time from `clock`.
    pub fn with_clock(
        config: &Config,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Arc<Self>, String> {
        let policy = Policy::build(config, &metrics, None)?;
        let cache = config.cache.enabled.then(|| {
            let c = &config.cache;
            MemoryCache::with_clock(c.max_bytes.get(), c.keep_stale.get(), clock.clone())
        });
        let via = |v: &str| {
            HeaderValue::from_str(&format!("{v} {}", config.server.via_name))
                .map_err(|_| "server.via_name is not a valid header value".to_string())
        };
        // Started whenever Redis is configured: shared rate limits use it
        // even when the response cache is off.
        let l2 = if config.redis.enabled() {
            Some(L2::start(&config.redis).map_err(|e| format!("redis: {e}"))?)
        } else {
            None
        };
        if config.cache.coalesce_timeout.is_some() {
            tracing::warn!(
                "cache.coalesce_timeout is deprecated and ignored: waiters wait for the leader's fetch, which its own deadlines bound"
            );
        }
        let jobs = std::sync::OnceLock::new();
        if let Some(j) = crate::jobs::Jobs::open(config, l2.as_ref(), &clock)? {
            let _ = jobs.set(j);
        }
        Ok(Arc::new(Self {
            jobs,
            jobs_stop: std::sync::OnceLock::new(),
            l2,
            l2_max_object_bytes: config.redis.max_object_bytes.get(),
            l2_writes: Arc::default(),
            keep_stale: config.cache.keep_stale.get(),
            instance_id: instance_id(),
            flush_pending: std::sync::atomic::AtomicBool::new(false),
            // Keys with a suffix (`\nuser=`, `\nauth`, `\nfwd=`) need the walk.
            per_user_routes: config.routes.iter().any(|r| {
                matches!(
                    r.cache.authorized,
                    AuthorizedPolicy::PerUser | AuthorizedPolicy::Shared
                )
            }) || !config.forwarded.trusted_proxies.is_empty(),
            policy: ArcSwap::from_pointee(policy),
            in_flight: AtomicUsize::new(0),
            cache,
            clock,
            keys: KeyNormalizer::new(&config.cache.drop_query_params).with_path_rules(
                perfgate_cache::key::PathRules {
                    merge_slashes: config.server.merge_slashes,
                    allow_encoded_slashes: config.server.allow_encoded_slashes,
                },
            ),
            compressor: Compressor::new(&config.compression),
            flights: Flights::default(),
            metrics,
            stats: Stats::default(),
            max_object_bytes: usize::try_from(config.cache.max_object_bytes.get())
                .unwrap_or(usize::MAX),
            expose_tag_headers: config.cache.expose_tag_headers,
            warmups: Warmups::new(
                config.server.listen.clone(),
                config.cache.warmup_concurrency,
            ),
            via_h1: via("1.1")?,
            via_h2: via("2")?,
            body_timeout: config.server.request_body_timeout.get(),
        }))
    }

    /// The async job queue, when some route is async.
    pub fn jobs(&self) -> Option<&Arc<crate::jobs::Jobs>> {
        self.jobs.get()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A snapshot of the cache statistics.
    pub fn cache_stats(&self) -> CacheStats {
        let (entries, bytes) = match &self.cache {
            Some(c) => {
                c.sync();
                (c.entry_count(), c.weighted_size())
            }
            None => (0, 0),
        };
        self.metrics.set_cache_size(entries, bytes);
        let l2_writes = self.l2_writes.load(std::sync::atomic::Ordering::Relaxed);
        let mut stats = self.stats.snapshot(entries, bytes, l2_writes);
        stats.layers.l2.state = match self.l2_health() {
            None => "disabled",
            Some(h) => h.state,
        };
        self.metrics.set_l2_up(stats.layers.l2.state == "up");
        stats.routes = self
            .policy()
            .routes
            .iter()
            .map(|r| r.stats.route_snapshot(&r.name))
            .collect();
        stats
    }

    /// The current generation of the reloadable configuration.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub(crate) fn swap_policy(&self, new: Policy) -> Arc<Policy> {
        let new = Arc::new(new);
        self.policy.store(new.clone());
        new
    }

    /// The life of a proxied request. Never fails: errors become responses here.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: Conn) -> Response<Body> {
        let policy = self.policy();
        let req = req.map(|b| request_body(b, policy.guards.max_body_bytes));
        self.handle_with(policy, req, conn).await
    }

    /// [`handle`](Self::handle) for a request whose body is already ours
    /// (the batch endpoint's sub-requests).
    pub(crate) async fn handle_with(
        self: Arc<Self>,
        policy: Arc<Policy>,
        req: Request<Body>,
        conn: Conn,
    ) -> Response<Body> {
        let start = Instant::now();
        let mut cx = Cx::default();
        // Load shedding: past the limit, answer at once rather than queue.
        let _in_flight = InFlight::enter(&self.in_flight);
        let mut rsp = if policy.max_concurrent > 0 && _in_flight.count > policy.max_concurrent {
            self.metrics.traffic.shed();
            GatewayError::new(ErrorKind::Overloaded, "too many requests in flight")
                .retry_after(Duration::from_secs(1))
                .into_response()
        } else {
            // For the slow-request log: a clone of the parsed target shares
            // its bytes (no allocation per request).
            let method = req.method().clone();
            let target = req.uri().clone();
            let batch = policy.batch.enabled
                && req.method() == Method::POST
                && req.uri().path() == policy.batch.path;
            let rsp = match if batch {
                match guard::check(&req, &policy.guards) {
                    Ok(()) => self.batch(&policy, req, &conn).await,
                    Err(e) => Err(e),
                }
            } else {
                self.proxy(&policy, req, conn, &mut cx).await
            } {
                Ok(rsp) => rsp,
                Err(e) => e.into_response(),
            };
            let total = start.elapsed();
            if total >= policy.slow_request {
                tracing::warn!(
                    method = %method,
                    path = %target.path(),
                    route = cx.route.as_ref().map_or("-", |r| &*r.name),
                    status = rsp.status().as_u16(),
                    total_ms = total.as_millis() as u64,
                    gateway_ms = total.saturating_sub(cx.timing.upstream + cx.timing.queue).as_millis() as u64,
                    queue_ms = cx.timing.queue.as_millis() as u64,
                    upstream_ms = cx.timing.upstream.as_millis() as u64,
                    attempts = cx.timing.attempts,
                    "slow request"
                );
            }
            rsp
        };
        let total = start.elapsed();
        let waited = cx.timing.upstream + cx.timing.queue;
        let timing = server_timing(total.saturating_sub(waited), cx.timing.upstream);
        let h = rsp.headers_mut();
        h.insert(SERVER_TIMING, timing);
        // Ours replace any the upstream sent: one RateLimit answer per response.
        for (name, value) in cx.limit_headers.drain(..) {
            h.insert(name, value);
        }
        if let Some(route) = &cx.route {
            route
                .metrics
                .record(rsp.status().as_u16(), total.as_secs_f64());
        }
        rsp
    }

    async fn proxy(
        self: &Arc<Self>,
        policy: &Policy,
        req: Request<Body>,
        conn: Conn,
        cx: &mut Cx,
    ) -> Result<Response<Body>, GatewayError> {
        guard::check(&req, &policy.guards)?;
        let mut req = req;
        // Hop-by-hop fields go first, before perfgate adds its own (claims,
        // forwarding fields, Via): a client naming those in `Connection`
        // cannot remove them. `Upgrade` stays for `cache_eligibility`; it is
        // removed with the rest on the way upstream.
        crate::headers::strip_hop_by_hop_keeping(req.headers_mut(), true);
        // One normalized path from here on: route, limits, clamps, cache
        // key and upstream all read this one (target.rs: 400).
        crate::target::normalize(&self.keys, req.uri_mut())?;
        if let Some(jobs) = self.jobs.get()
            && (req.method() == Method::GET || req.method() == Method::HEAD)
            && let Some((id, prefix, result)) =
                jobs.status_target(req.uri().path(), &policy.job_status_paths)
        {
            return jobs.status(id, &prefix, result).await; // jobs/status.rs: 400/404
        }
        let route = policy
            .routes
            .select(req.method(), req.uri().path())? // route.rs: 404/405
            .clone();
        cx.route = Some(route.clone());
        let mut conn = conn;
        self.identify(policy, &route, &mut req, &mut conn)?; // identity.rs: 401
        // A rule keyed by a body field (a login's account) needs the body
        // first; it is read (bounded) and put back.
        let body_key = if policy.limits.needs_body(&route.name, req.method()) {
            let (parts, body) = req.into_parts();
            let max = crate::limits::BODY_KEY_MAX;
            let bytes = crate::body::read_bounded(body, &parts.headers, max, self.body_timeout)
                .await
                .map_err(|e| GatewayError::body_read(e, max))?;
            req = Request::from_parts(parts, Body::full(bytes.clone()));
            Some(bytes)
        } else {
            None
        };
        let (method, uri, headers) = (req.method(), req.uri(), req.headers());
        self.limit(
            policy,
            &route,
            method,
            uri,
            headers,
            &conn,
            body_key.as_deref(),
            cx,
        )
        .await?; // limits.rs: 429
        if let Some(uri) = crate::clamp::apply(&route.clamps, req.uri())? {
            *req.uri_mut() = uri;
        }
        if let Some(aj) = &route.async_job
            && req.method() == Method::POST
        {
            return self.submit_job(&route, aj, req, &conn).await; // jobs/submit.rs: 202/413/503
        }
        match self.cache_eligibility(&route, &req) {
            Ok(()) => self.cached(route, req, conn, cx).await,
            Err(label) => {
                self.count(&route, perfgate_observe::CacheEvent::bypass);
                let unsafe_req = (!req.method().is_safe() && self.cache.is_some())
                    .then(|| (req.uri().clone(), req.headers().clone()));
                let rsp = self.pass(&route, req, &conn, cx, label).await?;
                // RFC 9111 §4.4: a successful unsafe request invalidates its
                // target URI, the same-host Location/Content-Location URIs,
                // and the tags the route declares.
                if let Some((uri, headers)) = unsafe_req
                    && (rsp.status().is_success() || rsp.status().is_redirection())
                {
                    let targets = self.unsafe_targets(&route, &uri, &headers, rsp.headers(), &conn);
                    // This instance's L1 now (read-your-writes here); L2 and
                    // the other instances in the background, so a slow Redis
                    // never holds the client's response.
                    self.apply_l1(&targets);
                    let gw = self.clone();
                    tokio::spawn(async move {
                        gw.invalidate_shared(targets, InvalidationSource::automatic)
                            .await;
                    });
                }
                Ok(rsp)
            }
        }
    }

    /// Whether the cache may be used for this request; the `Cache-Status`
    /// to send when it may not.
    fn cache_eligibility<B>(&self, route: &Route, req: &Request<B>) -> Result<(), HeaderValue> {
        if self.cache.is_none() || route.bypass {
            return Err(HeaderValue::from_static("perfgate; fwd=bypass"));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(HeaderValue::from_static("perfgate; fwd=method"));
        }
        if req.headers().contains_key(AUTHORIZATION)
            && route.policy.authorized == AuthorizedPolicy::Bypass
        {
            return Err(HeaderValue::from_static(
                "perfgate; fwd=request; detail=authorization",
            ));
        }
        if req.headers().contains_key(http::header::COOKIE)
            && route.policy.cookies == perfgate_config::CookiePolicy::Bypass
        {
            return Err(HeaderValue::from_static(
                "perfgate; fwd=request; detail=cookie",
            ));
        }
        if perfgate_cache::conditional::has_other_preconditions(req.headers()) {
            // If-Match, If-Unmodified-Since and If-Range are the origin's to judge.
            return Err(HeaderValue::from_static(
                "perfgate; fwd=request; detail=precondition",
            ));
        }
        if req.headers().contains_key(http::header::UPGRADE) {
            return Err(HeaderValue::from_static(
                "perfgate; fwd=request; detail=upgrade",
            ));
        }
        Ok(())
    }

    /// The cache key of a request: normalized URL, plus the credential when
    /// the route caches per user.
    pub(crate) fn key_for(
        &self,
        route: &Route,
        uri: &Uri,
        headers: &HeaderMap,
        conn: &Conn,
    ) -> String {
        let host = request_host(uri, headers);
        let scheme = if conn.tls { "https" } else { "http" };
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut key = self.keys.primary_key(scheme, host, pq);
        if route.policy.authorized == AuthorizedPolicy::PerUser
            && let Some(auth) = headers.get(AUTHORIZATION)
        {
            key.push_str("\nuser=");
            key.push_str(&url_hash(&String::from_utf8_lossy(auth.as_bytes())));
        }
        // `shared`: what authenticated clients stored is for authenticated
        // clients only. A key of its own keeps it out of anonymous lookups,
        // coalesced flights and L2 reads alike.
        if route.policy.authorized == AuthorizedPolicy::Shared
            && headers.contains_key(AUTHORIZATION)
        {
            key.push_str(crate::cached::AUTHENTICATED_SUFFIX);
        }
        // Forwarding fields a trusted proxy passes upstream can change the
        // answer (links, redirects): they are part of the key.
        if !route.trusted.is_empty()
            && let Some(fwd) = crate::headers::forwarded_key(
                headers,
                route.trusted.iter().any(|n| n.contains(conn.peer.ip())),
                &route.trusted_headers,
            )
        {
            key.push_str("\nfwd=");
            key.push_str(&url_hash(&fwd));
        }
        key
    }

    /// The `Via` value for requests of this version.
    pub(crate) fn via_for(&self, version: Version) -> &HeaderValue {
        if version == Version::HTTP_2 {
            &self.via_h2
        } else {
            &self.via_h1
        }
    }

    /// Streams a request to the upstream and the response back, untouched
    /// but for hop-by-hop fields.
    pub(crate) async fn pass(
        &self,
        route: &Route,
        req: Request<Body>,
        conn: &Conn,
        cx: &mut Cx,
        label: HeaderValue,
    ) -> Result<Response<Body>, GatewayError> {
        let (parts, body) = req.into_parts();
        let enc = if parts.method == Method::HEAD {
            Encoding::Identity
        } else {
            self.compressor
                .negotiate(parts.headers.get(http::header::ACCEPT_ENCODING))
        };
        let rsp = self
            .forward(
                route,
                Outgoing {
                    method: parts.method,
                    uri: &parts.uri,
                    headers: parts.headers,
                    version: parts.version,
                },
                conn,
                body,
                &mut cx.timing,
            )
            .await
            .map_err(|e| e.to_gateway())?;
        Ok(self.stream_response(route, rsp, label, enc))
    }

    /// A streamed upstream response: hop-by-hop fields removed, `Via` and
    /// `Cache-Status` added, the body watched for stalls, counted, and
    /// compressed on the fly when `enc` asks for it.
    pub(crate) fn stream_response(
        &self,
        route: &Route,
        rsp: Response<crate::upstream::UpstreamBody>,
        label: HeaderValue,
        enc: Encoding,
    ) -> Response<Body> {
        let (parts, body) = rsp.into_parts();
        let metrics = self.metrics.clone();
        let body = Watched::new(body, route.body_idle_timeout, move |n| {
            metrics.bytes_in(n);
            metrics.bytes_out(n, 0);
        });
        self.streamed(Response::from_parts(parts, Body::stream(body)), label, enc)
    }

    /// Finishes a streamed response whose body is already watched.
    pub(crate) fn streamed(
        &self,
        rsp: Response<Body>,
        label: HeaderValue,
        enc: Encoding,
    ) -> Response<Body> {
        let (mut parts, body) = rsp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if !self.expose_tag_headers {
            strip_tag_headers(&mut parts.headers);
        }
        append_via(&mut parts.headers, &self.via_h1);
        parts.headers.insert(CACHE_STATUS, label);
        let body =
            match compressing::prepare(&self.compressor, enc, parts.status, &mut parts.headers) {
                Some(encoder) => Body::stream(Compressing::new(body, encoder)),
                None => body,
            };
        Response::from_parts(parts, body)
    }
}

impl Gateway {
    /// Counts upstream work the gateway does in a task of its own (a cache
    /// fill that outlives its client, a background refresh) as a request in
    /// flight, for load shedding, until the returned guard drops.
    pub(crate) fn fill_slot(self: &Arc<Self>) -> FillSlot {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        FillSlot(self.clone())
    }

    /// While a client waits for a fill it started, the fill's slot stands
    /// for the client's own: the client's count is lent to it until the
    /// guard drops. So a waiting client counts once, and a fill whose
    /// client went away still counts.
    pub(crate) fn lend_slot(&self) -> LentSlot<'_> {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        LentSlot(&self.in_flight)
    }

    /// Whether one more request in flight stays within
    /// `server.max_concurrent_requests` (for work that may be skipped, such
    /// as a background refresh).
    pub(crate) fn has_room(&self) -> bool {
        let max = self.policy.load().max_concurrent;
        max == 0 || self.in_flight.load(Ordering::Relaxed) < max
    }
}

/// A fill's place in the in-flight count; see [`Gateway::fill_slot`].
pub(crate) struct FillSlot(Arc<Gateway>);

impl Drop for FillSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client's place lent to its fill; see [`Gateway::lend_slot`].
pub(crate) struct LentSlot<'a>(&'a AtomicUsize);

impl Drop for LentSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a> {
    counter: &'a AtomicUsize,
    /// Requests in flight including this one.
    count: usize,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        Self { counter, count }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's request body as sent upstream: nothing when it has none,
/// otherwise streamed under the size limit.
fn request_body(body: Incoming, max: u64) -> Body {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Body::Empty;
    }
    Body::stream(Limited::new(
        body,
        usize::try_from(max).unwrap_or(usize::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_is_milliseconds_with_three_decimals() {
        let v = server_timing(Duration::from_micros(123), Duration::ZERO);
        assert_eq!(v, "gateway;dur=0.123");
        let v = server_timing(
            Duration::from_micros(1_005),
            Duration::from_micros(45_678_901),
        );
        assert_eq!(v, "gateway;dur=1.005, upstream;dur=45678.901");
    }
}
