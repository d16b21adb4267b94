//! The state of one request on its way through the phases
//! ([`RequestContext`]), what a fetch for the cache brings back with it
//! ([`Waits`]), and the [`RequestEvent`] both turn into at the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use perfgate_observe::{
    CacheEvent, CacheLayer, CacheOutcomes, PhaseTimes, RequestEvent, RequestKind,
};

use crate::route::Route;

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

/// The request line and headers of a request about to go upstream.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) version: Version,
}

/// What a request gathers on its way through the phases: the route it
/// took, where its time went, the cache outcome, the upstream attempts and
/// the headers it owes the response. It becomes the request's
/// [`RequestEvent`] when the response head is ready.
pub(crate) struct RequestContext {
    pub(crate) kind: RequestKind,
    pub(crate) start: Instant,

    pub(crate) method: Method,
    /// The target as received (a clone shares its bytes).
    pub(crate) target: Uri,
    /// Requests slower than this are logged (`server.slow_request`).
    pub(crate) slow: Duration,
    pub(crate) route: Option<Arc<Route>>,
    /// The authenticated user, once the identity phase validated one.
    pub(crate) user: Option<Arc<str>>,
    pub(crate) client: std::net::IpAddr,
    /// The request body's declared length (`Content-Length`; 0 without
    /// one: a chunked body is counted by the metric as it streams).
    pub(crate) bytes_in: u64,
    /// Everything below the cache lookup: upstream time and attempts,
    /// cache outcomes (a fill that runs in its own task brings its own
    /// back, and it is added here).
    pub(crate) timing: Waits,
    /// When the guard phases (guard, route, identity) ended.
    pub(crate) guard_end: Option<Instant>,
    /// When the limit phase ended.
    pub(crate) limit_end: Option<Instant>,
    /// When the L1 lookup ended (it starts at `limit_end`).
    pub(crate) l1_end: Option<Instant>,
    /// Rate-limit headers for the response.
    pub(crate) limit_headers: Vec<(HeaderName, HeaderValue)>,
    /// The error kind, when the gateway answered with an error.
    pub(crate) error: Option<&'static str>,
}

impl RequestContext {
    /// A request starting now.
    pub(crate) fn new(kind: RequestKind, method: &Method, target: &Uri, conn: &Conn) -> Self {
        let now = Instant::now();
        Self {
            kind,
            start: now,
            method: method.clone(),
            target: target.clone(),
            slow: Duration::MAX,
            route: None,
            user: conn.user.clone(),
            client: conn.peer.ip(),
            bytes_in: 0,
            timing: Waits::default(),
            guard_end: None,
            limit_end: None,
            l1_end: None,
            limit_headers: Vec::new(),
            error: None,
        }
    }

    /// The event of this request, answered with `status` after `total`.
    pub(crate) fn event(&self, status: u16, bytes_out: u64, total: Duration) -> RequestEvent {
        let t = &self.timing;
        // Phase ends are clock reads taken on the way; the durations are
        // worked out here, only when an event is built.
        let since = |end: Option<Instant>, start: Option<Instant>| match (end, start) {
            (Some(e), Some(s)) => e.saturating_duration_since(s),
            _ => Duration::ZERO,
        };
        RequestEvent {
            id: 0,
            at: std::time::SystemTime::now(),
            kind: self.kind,
            route: self.route.as_ref().map(|r| r.name.clone()),
            template: self.route.as_ref().map(|r| r.template().clone()),
            method: self.method.clone(),
            target: self.target.clone(),
            status,
            bytes_in: self.bytes_in,
            bytes_out,
            phases: PhaseTimes {
                guard: since(self.guard_end, Some(self.start)),
                limit: since(self.limit_end, self.guard_end),
                l1: since(self.l1_end, self.limit_end),
                l2: t.l2,
                coalesce_wait: t.coalesce_wait,
                connect: t.queue,
                ttfb: t.upstream,
                upstream_body: t.upstream_body,
                encode: t.encode,
                total,
            },
            cache: t.cache,
            layer: t.layer,
            detail: t.detail,
            upstream_bytes_saved: t.bytes_saved,
            upstream: t.server.clone(),
            attempts: t.attempts,
            user: self.user.clone(),
            client: self.client,
            trace_id: None,
            error: self.error,
        }
    }
}

/// What the work below the cache lookup brings back: where the time went
/// outside the gateway itself, the upstream attempts, and the cache
/// outcomes. A fill in its own task keeps its own and hands it back.
#[derive(Debug, Default, Clone)]
pub(crate) struct Waits {
    /// Waiting for the upstream (every attempt and backoff).
    pub(crate) upstream: Duration,
    /// Waiting for a pool slot (`max_connections`).
    pub(crate) queue: Duration,
    /// Upstream attempts made (retries included).
    pub(crate) attempts: u32,
    /// The upstream server that answered last.
    pub(crate) server: Option<Arc<str>>,
    /// The Redis lookup.
    pub(crate) l2: Duration,
    /// Waiting for another request's fetch.
    pub(crate) coalesce_wait: Duration,
    /// Reading an upstream body for the cache.
    pub(crate) upstream_body: Duration,
    /// Compressing a cached body.
    pub(crate) encode: Duration,
    /// Cache outcomes.
    pub(crate) cache: CacheOutcomes,
    /// The layer that answered a hit.
    pub(crate) layer: Option<CacheLayer>,
    /// Why the upstream's answer was not stored, or `no-cache` when a
    /// stored answer must be revalidated on every use.
    pub(crate) detail: Option<&'static str>,
    /// Upstream calls this request did not have to make (a hit, a
    /// coalesced wait, stale-while-revalidate, an L2 hit).
    pub(crate) saved_calls: u32,
    /// Body bytes those calls would have brought.
    pub(crate) bytes_saved: u64,
    /// What the L2 lookup found, when there was one.
    pub(crate) l2_outcome: Option<L2Outcome>,
}

pub(crate) use perfgate_cache::tiers::L2Outcome;

impl Waits {
    /// Records a cache outcome.
    pub(crate) fn count(&mut self, e: CacheEvent) {
        self.cache.insert(e);
    }

    /// Records an upstream call saved, whose body is `bytes` long.
    pub(crate) fn saved_call(&mut self, bytes: usize) {
        self.saved_calls += 1;
        self.bytes_saved += bytes as u64;
    }
}

impl std::ops::AddAssign for Waits {
    fn add_assign(&mut self, o: Waits) {
        self.upstream += o.upstream;
        self.queue += o.queue;
        self.attempts += o.attempts;
        if o.server.is_some() {
            self.server = o.server;
        }
        self.l2 += o.l2;
        self.coalesce_wait += o.coalesce_wait;
        self.upstream_body += o.upstream_body;
        self.encode += o.encode;
        self.cache = self.cache.union(o.cache);
        self.layer = o.layer.or(self.layer);
        self.saved_calls += o.saved_calls;
        self.bytes_saved += o.bytes_saved;
        self.l2_outcome = o.l2_outcome.or(self.l2_outcome);
    }
}
