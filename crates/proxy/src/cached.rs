//! The cache path of a GET/HEAD request: lookup, freshness, coalesced
//! fetch or revalidation, storing, and answering from a stored entry.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{
    ACCEPT_ENCODING, AGE, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, SET_COOKIE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use perfgate_cache::cache_control::CacheControl;
use perfgate_cache::compress::Encoding;
use perfgate_cache::conditional::{
    has_conditionals, merge_304, not_modified, not_modified_headers, revalidation_headers,
};
use perfgate_cache::entry::{Entry, EntryParts};
use perfgate_cache::key::url_hash;
use perfgate_cache::memory::MemoryCache;
use perfgate_cache::policy::{Reuse, Timing, Uncacheable, evaluate};
use perfgate_cache::vary::{VaryKey, vary_fields};
use perfgate_config::AuthorizedPolicy;
use perfgate_observe::{CacheEvent, CacheLayer, RequestKind};

use crate::compressing::{add_vary_accept_encoding, weaken_etag};
use crate::context::{Conn, Outgoing};
use crate::context::{RequestContext, Waits};
use crate::gateway::{CACHE_STATUS, Gateway};
use crate::lookup::{CacheReq, reusable};
use crate::route::Route;
use crate::stats::Stats;
use crate::target::request_host;
use perfgate_cache::coalesce::{Join, Shared};
use perfgate_cache::invalidate::response_tags;
use perfgate_cache::tiers::{L2Lookup, L2Spent};
use perfgate_http::body::{Body, Watched};
use perfgate_http::error::{ErrorKind, GatewayError};
use perfgate_http::headers::{append_via, strip_hop_by_hop, strip_tag_headers};
use perfgate_upstream::upstream::Refusal;

const HIT: HeaderValue = HeaderValue::from_static("perfgate; hit");
const HIT_SWR: HeaderValue =
    HeaderValue::from_static("perfgate; hit; detail=stale-while-revalidate");
const HIT_L2: HeaderValue = HeaderValue::from_static("perfgate; hit; detail=l2");
const HIT_FOR_MISS: HeaderValue =
    HeaderValue::from_static("perfgate; fwd=miss; detail=hit-for-miss");
const MISS_STORED: HeaderValue = HeaderValue::from_static("perfgate; fwd=miss; stored");
const MISS_COLLAPSED: HeaderValue = HeaderValue::from_static("perfgate; fwd=miss; collapsed");
const MISS_HEAD: HeaderValue = HeaderValue::from_static("perfgate; fwd=miss; detail=head");
const STALE_502: HeaderValue =
    HeaderValue::from_static("perfgate; fwd=stale; fwd-status=502; detail=stale-if-error");
const STALE_OPEN: HeaderValue =
    HeaderValue::from_static("perfgate; fwd=stale; detail=circuit-open");
const REVALIDATED: HeaderValue =
    HeaderValue::from_static("perfgate; fwd=stale; fwd-status=304; stored");
const REFETCHED: HeaderValue =
    HeaderValue::from_static("perfgate; fwd=stale; fwd-status=200; stored");

/// Whether the cache may be used for this request; the `Cache-Status`
/// to send when it may not.
pub(crate) fn eligibility<B>(
    cache_on: bool,
    route: &Route,
    req: &Request<B>,
) -> Result<(), HeaderValue> {
    if !cache_on || route.bypass {
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

/// The outcome of one upstream fetch for the cache.
pub(crate) enum Fetched {
    /// Answer from this entry.
    Entry {
        entry: Arc<Entry>,
        label: HeaderValue,
        shareable: bool,
        /// Cookies set by the upstream: only for the client that caused the fetch.
        set_cookie: Vec<HeaderValue>,
    },
    /// Not storable: streamed through to this client only.
    Stream(Response<Body>),
}

impl Fetched {
    fn shared(&self) -> Option<Shared> {
        match self {
            Fetched::Entry {
                entry,
                shareable: true,
                ..
            } => Some(Shared {
                entry: entry.clone(),
            }),
            _ => None,
        }
    }
}

impl Gateway {
    /// The cache key of a request: normalized URL, plus the credential when
    /// the route caches per user.
    pub(crate) fn key_for(
        &self,
        route: &Route,
        uri: &Uri,
        headers: &HeaderMap,
        conn: &Conn,
    ) -> String {
        self.key_with_host(route, request_host(uri, headers), uri, headers, conn)
    }

    /// [`key_for`](Self::key_for) with the request's host already read.
    fn key_with_host(
        &self,
        route: &Route,
        host: &str,
        uri: &Uri,
        headers: &HeaderMap,
        conn: &Conn,
    ) -> String {
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
            key.push_str(crate::lookup::AUTHENTICATED_SUFFIX);
        }
        // Forwarding fields a trusted proxy passes upstream can change the
        // answer (links, redirects): they are part of the key.
        if !route.trusted.is_empty()
            && let Some(fwd) = perfgate_http::headers::forwarded_key(
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

    /// Answers a cache-eligible GET or HEAD.
    pub(crate) async fn cached(
        self: &Arc<Self>,
        route: Arc<Route>,
        req: Request<Body>,
        conn: Conn,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, GatewayError> {
        let Some(cache) = &self.tiers.l1 else {
            return Err(GatewayError::new(ErrorKind::Internal, "cache disabled"));
        };
        let host = request_host(req.uri(), req.headers());
        let key = self.key_with_host(&route, host, req.uri(), req.headers(), &conn);
        let found = cache.lookup(&key, |e| reusable(&route.policy, req.headers(), e));
        let now = self.clock.now();
        // Phase times are real time, whatever clock the cache reads.
        cx.l1_end = Some(if self.clock.is_manual() {
            Instant::now()
        } else {
            now
        });
        // A warm-up does not count toward the hottest keys, and settles
        // for nothing less than a fresh entry.
        let warmup = cx.kind == RequestKind::Warmup;
        if !warmup {
            self.warmups.record(
                &key,
                host,
                req.uri().path_and_query().map_or("/", |p| p.as_str()),
            );
        }
        if let Some(entry) = &found {
            let reuse = match entry.reuse(now) {
                Reuse::Fresh => Reuse::Fresh,
                _ if warmup => Reuse::Revalidate,
                other => other,
            };
            match reuse {
                Reuse::Fresh | Reuse::Stale => {
                    cx.timing.count(CacheEvent::hit);
                    cx.timing.layer = Some(CacheLayer::L1);
                    cx.timing.saved_call(entry.body.len());
                    return Ok(self
                        .respond(&key, entry, req.method(), req.headers(), HIT, &[])
                        .await);
                }
                Reuse::StaleWhileRevalidate => {
                    cx.timing.count(CacheEvent::stale);
                    cx.timing.layer = Some(CacheLayer::L1);
                    cx.timing.saved_call(entry.body.len());
                    // A refresh counts toward `max_concurrent_requests`;
                    // with no room it is left for a later request.
                    if self.has_room() && entry.try_start_refresh() {
                        let creq = self.cache_req(&req, conn.clone());
                        self.spawn_refresh(route.clone(), key.clone(), creq, entry.clone());
                    }
                    return Ok(self
                        .respond(&key, entry, req.method(), req.headers(), HIT_SWR, &[])
                        .await);
                }
                Reuse::Revalidate => {}
            }
        }
        if req.method() == Method::HEAD {
            // A HEAD miss is answered by the upstream and not stored: it has
            // no body to store.
            cx.timing.count(CacheEvent::miss);
            let (parts, body) = req.into_parts();
            drop(body);
            let rsp = self
                .forward(
                    &route,
                    Outgoing {
                        method: Method::HEAD,
                        uri: &parts.uri,
                        headers: cleaned_for_fetch(&parts.headers),
                        version: parts.version,
                    },
                    &conn,
                    Body::Empty,
                    &mut cx.timing,
                )
                .await
                .map_err(|e| e.to_gateway())?;
            return Ok(self.stream_response(&route, rsp, MISS_HEAD, Encoding::Identity));
        }
        let (parts, _body) = req.into_parts();
        let creq = CacheReq {
            uri: parts.uri,
            headers: parts.headers,
            version: parts.version,
            conn,
        };
        if cache.is_unshareable(&key) {
            // Hit-for-miss: this key's last response could not be stored, so
            // this request fetches on its own (no coalescing: waiting for
            // another request's fetch would only add its latency). Its
            // response is still evaluated: a storable one is stored and
            // lifts the mark at once.
            let hit_for_miss = found.is_none();
            let mut fetched = self
                .fetch(&route, &key, &creq, found, true, &mut cx.timing)
                .await?;
            if hit_for_miss && let Fetched::Stream(rsp) = &mut fetched {
                rsp.headers_mut().insert(CACHE_STATUS, HIT_FOR_MISS);
            }
            return Ok(self
                .answer(&key, fetched, &Method::GET, &creq.headers)
                .await);
        }
        let creq = Arc::new(creq);
        let fetched = self
            .fill(&route, &key, &creq, found, &mut cx.timing)
            .await?;
        Ok(self
            .answer(&key, fetched, &Method::GET, &creq.headers)
            .await)
    }

    /// Gets `creq` into the cache (or at least answers it), sharing one
    /// upstream request between concurrent callers for the same key. Keys
    /// marked hit-for-miss never come here (`cached` fetches them at once).
    async fn fill(
        self: &Arc<Self>,
        route: &Arc<Route>,
        key: &str,
        creq: &Arc<CacheReq>,
        found: Option<Arc<Entry>>,
        upstream: &mut Waits,
    ) -> Result<Fetched, GatewayError> {
        match self.flights.join(key) {
            Join::Leader(leader) => {
                // The fetch runs in its own task so that it completes (and
                // serves the waiters) even if this client goes away.
                let gw = self.clone();
                let (route2, key2, creq2) = (route.clone(), key.to_string(), creq.clone());
                // The fill counts toward `server.max_concurrent_requests`
                // for as long as it runs, with or without its client; the
                // client's own count is lent to it while it waits.
                let slot = self.fill_slot();
                let _lent = self.lend_slot();
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let _slot = slot;
                    let work = async {
                        let mut upstream = Waits::default();
                        // L2 first: another instance may have fetched it already.
                        let mut spent = L2Spent::default();
                        let usable = |e: &Entry| reusable(&route2.policy, &creq2.headers, e);
                        let l2 = gw
                            .tiers
                            .l2_lookup(&key2, &creq2.headers, usable, &mut spent)
                            .await;
                        upstream.l2 += spent.time;
                        if spent.outcome.is_some() {
                            upstream.l2_outcome = spent.outcome;
                        }
                        let found = match l2 {
                            L2Lookup::Fresh(entry) => {
                                upstream.saved_call(entry.body.len());
                                upstream.layer = Some(CacheLayer::L2);
                                let out = Ok(Fetched::Entry {
                                    entry,
                                    label: HIT_L2,
                                    shareable: true,
                                    set_cookie: Vec::new(),
                                });
                                leader.complete(out.as_ref().ok().and_then(Fetched::shared));
                                return (out, upstream);
                            }
                            L2Lookup::Stale(entry) => found.or(Some(entry)),
                            L2Lookup::Nothing => found,
                        };
                        let out = gw
                            .fetch(&route2, &key2, &creq2, found, false, &mut upstream)
                            .await;
                        let shared = out.as_ref().ok().and_then(Fetched::shared);
                        leader.complete(shared);
                        (out, upstream)
                    };
                    let (out, upstream) = work.await;
                    // The client went away: the fill is recorded on its own
                    // (its upstream call and outcome still count).
                    if let Err((out, upstream)) = tx.send((out, upstream)) {
                        gw.record_detached(RequestKind::Fill, &route2, &creq2, &out, upstream);
                    }
                });
                let (out, took) = rx
                    .await
                    .map_err(|_| GatewayError::new(ErrorKind::Internal, "cache fetch failed"))?;
                *upstream += took;
                out
            }
            Join::Waiter(mut rx) => {
                // As long as the leader's fetch takes: its own deadlines
                // (attempts, retries, body stalls) end it, and nothing else
                // can (it runs in its own task). Giving up earlier only
                // sends every waiter to a slow upstream at once.
                let wait_start = Instant::now();
                let waited = rx
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|v| v.clone().flatten());
                upstream.coalesce_wait += wait_start.elapsed();
                let usable = |e: &Entry| reusable(&route.policy, &creq.headers, e);
                match waited {
                    Some(shared) if usable(&shared.entry) => {
                        upstream.count(CacheEvent::coalesced);
                        upstream.saved_call(shared.entry.body.len());
                        Ok(Fetched::Entry {
                            entry: shared.entry,
                            label: MISS_COLLAPSED,
                            shareable: true,
                            set_cookie: Vec::new(),
                        })
                    }
                    // Nothing shareable came in time: fetch for ourselves.
                    _ => self.fetch(route, key, creq, found, false, upstream).await,
                }
            }
        }
    }

    /// The response to the client whose request caused a fetch.
    async fn answer(
        &self,
        key: &str,
        fetched: Fetched,
        method: &Method,
        headers: &HeaderMap,
    ) -> Response<Body> {
        match fetched {
            Fetched::Entry {
                entry,
                label,
                set_cookie,
                ..
            } => {
                self.respond(key, &entry, method, headers, label, &set_cookie)
                    .await
            }
            Fetched::Stream(rsp) => rsp,
        }
    }

    fn cache_req<B>(&self, req: &Request<B>, conn: Conn) -> CacheReq {
        CacheReq {
            uri: req.uri().clone(),
            headers: req.headers().clone(),
            version: req.version(),
            conn,
        }
    }

    /// Refreshes a stale-while-revalidate entry in the background, once.
    fn spawn_refresh(
        self: &Arc<Self>,
        route: Arc<Route>,
        key: String,
        creq: CacheReq,
        entry: Arc<Entry>,
    ) {
        let gw = self.clone();
        let slot = self.fill_slot();
        tokio::spawn(async move {
            let _slot = slot;
            if let Join::Leader(leader) = gw.flights.join(&key) {
                let mut upstream = Waits::default();
                let out = gw
                    .fetch(&route, &key, &creq, Some(entry), false, &mut upstream)
                    .await;
                leader.complete(out.as_ref().ok().and_then(Fetched::shared));
                gw.record_detached(RequestKind::Refresh, &route, &creq, &out, upstream);
            }
        });
    }

    /// Records cache work that no client request carries (a background
    /// refresh, a fill whose client went away) as a request of its own.
    fn record_detached(
        &self,
        kind: RequestKind,
        route: &Arc<Route>,
        creq: &CacheReq,
        out: &Result<Fetched, GatewayError>,
        upstream: Waits,
    ) {
        let mut cx = RequestContext::new(kind, &Method::GET, &creq.uri, &creq.conn);
        cx.route = Some(route.clone());
        cx.timing = upstream;
        let status = match out {
            Ok(Fetched::Entry { entry, .. }) => entry.status.as_u16(),
            Ok(Fetched::Stream(rsp)) => rsp.status().as_u16(),
            Err(e) => e.kind.status().as_u16(),
        };
        self.records().request(&cx, status, 0, cx.start.elapsed());
    }

    /// Fetches `creq` from the upstream for the cache (conditionally when a
    /// stale entry with validators is at hand), stores what may be stored,
    /// and falls back to the stale entry when the upstream fails and
    /// `stale-if-error` allows it. `marked`: the caller saw the key marked
    /// hit-for-miss (no second lookup to mark it again).
    async fn fetch(
        &self,
        route: &Route,
        key: &str,
        creq: &CacheReq,
        stale: Option<Arc<Entry>>,
        marked: bool,
        upstream: &mut Waits,
    ) -> Result<Fetched, GatewayError> {
        let cache = self
            .tiers
            .l1
            .as_ref()
            .ok_or_else(|| GatewayError::new(ErrorKind::Internal, "cache disabled"))?;
        // A revalidation costs an upstream call too: it is a miss.
        upstream.count(CacheEvent::miss);
        let mut headers = cleaned_for_fetch(&creq.headers);
        if let Some(s) = &stale {
            headers.extend(revalidation_headers(
                s.etag.as_ref(),
                s.last_modified.as_ref(),
            ));
        }
        // What this client accepts, should the response have to be streamed.
        let enc = self.compressor.negotiate(creq.headers.get(ACCEPT_ENCODING));
        let request_time = SystemTime::now();
        let sent = self
            .forward(
                route,
                Outgoing {
                    method: Method::GET,
                    uri: &creq.uri,
                    headers,
                    version: creq.version,
                },
                &creq.conn,
                Body::Empty,
                upstream,
            )
            .await;
        let rsp = match sent {
            Ok(rsp) => rsp,
            Err(e) => return self.unanswered(stale, &e, upstream),
        };
        let status = rsp.status();
        if status.is_server_error()
            && let Some(entry) = stale
                .clone()
                .filter(|s| s.usable_if_error(self.clock.now()))
        {
            let label = format!(
                "perfgate; fwd=stale; fwd-status={}; detail=stale-if-error",
                status.as_u16()
            );
            let label = HeaderValue::from_str(&label).unwrap_or(STALE_502);
            return Ok(stale_if_error(entry, label, upstream));
        }
        let timing = Timing {
            request_time,
            response_time: SystemTime::now(),
        };
        if status == StatusCode::NOT_MODIFIED
            && let Some(old) = &stale
        {
            if old.freshness.no_cache {
                upstream.detail = Some(Uncacheable::NoCache.as_str());
            }
            let mut merged = old.headers.clone();
            merge_304(&mut merged, rsp.headers());
            let evaluated = evaluate(
                &Method::GET,
                &creq.headers,
                old.status,
                &merged,
                &timing,
                &route.policy,
            );
            return Ok(self.revalidated(cache, key, old, merged, evaluated, upstream));
        }
        let freshness = match storable(route, creq, &rsp, &timing) {
            Ok(f) => f,
            Err(reason) => {
                // Only the upstream's answer says something about the URL;
                // a client's `no-store` or credentials say something about
                // this request alone and must not turn caching off for
                // everyone (issue #11, item 6).
                if !reason.is_request_only() {
                    // A server error says nothing about the stored
                    // representation: the stale copy is kept (it may stand
                    // in while the breaker is open).
                    if stale.is_some() && !status.is_server_error() {
                        cache.remove(key);
                    }
                    if !marked && !cache.is_unshareable(key) {
                        cache.mark_unshareable(key);
                    }
                }
                upstream.detail = Some(reason.as_str());
                let label = uncacheable_label(reason);
                return Ok(Fetched::Stream(
                    self.stream_response(route, rsp, label, enc),
                ));
            }
        };
        let (parts, body) = match self.read_whole(cache, route, key, rsp, enc).await? {
            Ok(whole) => whole,
            Err(streamed) => return Ok(streamed),
        };
        self.metrics.bytes_in(body.len() as u64);
        let (entry, set_cookie) = self.new_entry(route, creq, parts, body, freshness);
        if entry.freshness.no_cache {
            // Stored, but every use goes back to the upstream.
            upstream.detail = Some(Uncacheable::NoCache.as_str());
        }
        cache.insert(key, entry.clone());
        cache.unmark_unshareable(key);
        self.tiers.l2_store(key, &entry);
        Stats::inc(&self.stats.stored);
        Stats::inc(&route.stats.stored);
        Ok(Fetched::Entry {
            entry,
            label: if stale.is_some() {
                REFETCHED
            } else {
                MISS_STORED
            },
            shareable: true,
            set_cookie,
        })
    }

    /// The upstream gave no answer: a stale copy stands in where allowed.
    /// While the route's breaker is open, any stale copy the response
    /// allows to be served stale does (not only within `stale-if-error`).
    fn unanswered(
        &self,
        stale: Option<Arc<Entry>>,
        e: &perfgate_upstream::upstream::UpstreamError,
        upstream: &mut Waits,
    ) -> Result<Fetched, GatewayError> {
        let open = matches!(e.refused, Some(Refusal::CircuitOpen(_)));
        match stale {
            Some(entry) if open && entry.usable_while_open() => {
                Ok(stale_if_error(entry, STALE_OPEN, upstream))
            }
            Some(entry) if entry.usable_if_error(self.clock.now()) => {
                Ok(stale_if_error(entry, STALE_502, upstream))
            }
            _ => Err(e.to_gateway()),
        }
    }

    /// A 304 to a revalidation, given the stored headers merged with it
    /// (RFC 9111 §3.2) and their evaluation: the entry stored again, or, when the refreshed headers
    /// forbid storing, this client answered with the old body and the entry
    /// forgotten (unless only this request's credentials forbid it).
    fn revalidated(
        &self,
        cache: &MemoryCache,
        key: &str,
        old: &Arc<Entry>,
        merged: HeaderMap,
        evaluated: Result<perfgate_cache::policy::Freshness, Uncacheable>,
        upstream: &mut Waits,
    ) -> Fetched {
        match evaluated {
            Ok(freshness) => {
                let entry = Arc::new(old.revalidated(merged, freshness, self.clock.now()));
                cache.insert(key, entry.clone());
                cache.unmark_unshareable(key);
                self.tiers.l2_store(key, &entry);
                upstream.count(CacheEvent::revalidated);
                Fetched::Entry {
                    entry,
                    label: REVALIDATED,
                    shareable: true,
                    set_cookie: Vec::new(),
                }
            }
            Err(reason) => {
                if !reason.is_request_only() {
                    cache.remove(key);
                }
                let label = detail_label("perfgate; fwd=stale; fwd-status=304", reason.as_str());
                Fetched::Entry {
                    entry: old.clone(),
                    label,
                    shareable: false,
                    set_cookie: Vec::new(),
                }
            }
        }
    }

    /// Reads a storable response's body whole, under the route's body idle
    /// timeout. `Ok(Err(streamed))` when it is (declared, or turns out)
    /// larger than `cache.max_object_bytes`: the key is marked
    /// hit-for-miss and the response streamed on (buffered prefix + rest).
    async fn read_whole(
        &self,
        cache: &MemoryCache,
        route: &Route,
        key: &str,
        rsp: Response<perfgate_upstream::upstream::UpstreamBody>,
        enc: Encoding,
    ) -> Result<Result<(http::response::Parts, Bytes), Fetched>, GatewayError> {
        let declared = perfgate_http::body::declared_length(rsp.headers());
        if declared.is_some_and(|n| n > self.max_object_bytes as u64) {
            cache.mark_unshareable(key);
            let label = detail_label("perfgate; fwd=miss", "too-large");
            return Ok(Err(Fetched::Stream(
                self.stream_response(route, rsp, label, enc),
            )));
        }
        let (parts, mut body) = rsp.into_parts();
        let mut buf = BytesMut::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
        let deadline = route.body_idle_timeout;
        loop {
            let frame =
                match tokio::time::timeout(deadline, http_body_util::BodyExt::frame(&mut body))
                    .await
                {
                    Ok(Some(Ok(frame))) => frame,
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        tracing::warn!(route = %route.name, error = %e, "upstream body failed");
                        self.metrics
                            .upstream_error(perfgate_observe::UpstreamErrorKind::protocol);
                        return Err(GatewayError::new(
                            ErrorKind::UpstreamUnavailable,
                            "the upstream response broke off",
                        ));
                    }
                    Err(_) => {
                        self.metrics
                            .upstream_error(perfgate_observe::UpstreamErrorKind::timeout);
                        return Err(GatewayError::new(
                            ErrorKind::UpstreamTimeout,
                            "the upstream body stalled",
                        ));
                    }
                };
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                if buf.len() > self.max_object_bytes {
                    // Too big to store after all: stream the rest through.
                    if !cache.is_unshareable(key) {
                        cache.mark_unshareable(key);
                    }
                    let label = detail_label("perfgate; fwd=miss", "too-large");
                    let prefix = Body::full(buf.freeze());
                    let rest = Watched::new(body, deadline, |_| {});
                    let rsp = Response::from_parts(parts, chain(prefix, rest));
                    return Ok(Err(Fetched::Stream(self.streamed(rsp, label, enc))));
                }
            }
        }
        Ok(Ok((parts, buf.freeze())))
    }

    /// The entry to store for a response read whole, and the `Set-Cookie`
    /// fields that go to this client only (never stored).
    fn new_entry(
        &self,
        route: &Route,
        creq: &CacheReq,
        parts: http::response::Parts,
        body: Bytes,
        freshness: perfgate_cache::policy::Freshness,
    ) -> (Arc<Entry>, Vec<HeaderValue>) {
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(CONTENT_LENGTH);
        let set_cookie: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().cloned().collect();
        headers.remove(SET_COOKIE);
        let tags = response_tags(&route.tags, &headers);
        if !self.expose_tag_headers {
            strip_tag_headers(&mut headers);
        }
        let cc = CacheControl::from_headers(&headers);
        let upstream_encoded = headers
            .get(CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        let compressible = !upstream_encoded
            && !cc.no_transform
            && self
                .compressor
                .is_compressible(headers.get(CONTENT_TYPE), body.len());
        let fields = vary_fields(&headers).unwrap_or_default();
        let skip: &[http::HeaderName] = if upstream_encoded {
            &[]
        } else {
            &[ACCEPT_ENCODING]
        };
        let vary = VaryKey::capture(&fields, &creq.headers, skip);
        let auth_reusable = match route.policy.authorized {
            AuthorizedPolicy::Rfc => cc.public || cc.s_maxage.is_some() || cc.must_revalidate,
            AuthorizedPolicy::Bypass => false,
            AuthorizedPolicy::PerUser | AuthorizedPolicy::Shared => true,
        };
        let entry = Arc::new(Entry::new(
            EntryParts {
                status: parts.status,
                headers,
                body,
                upstream_encoded,
                compressible,
                vary,
                freshness,
                auth_reusable,
                tags,
            },
            self.clock.now(),
        ));
        (entry, set_cookie)
    }

    /// Builds the response for a stored entry: a 304 when the client's
    /// validators match, otherwise the body in the negotiated encoding
    /// (compressed at most once per entry and encoding).
    async fn respond(
        &self,
        key: &str,
        entry: &Arc<Entry>,
        method: &Method,
        req_headers: &HeaderMap,
        label: HeaderValue,
        set_cookie: &[HeaderValue],
    ) -> Response<Body> {
        let age = HeaderValue::from(entry.age(self.clock.now()).as_secs());
        let enc = if entry.compressible {
            self.compressor.negotiate(req_headers.get(ACCEPT_ENCODING))
        } else {
            Encoding::Identity
        };
        if entry.status == StatusCode::OK
            && has_conditionals(req_headers)
            && not_modified(
                req_headers,
                entry.etag.as_ref(),
                entry.last_modified.as_ref(),
            )
        {
            let mut h = not_modified_headers(&entry.headers);
            if entry.compressible {
                add_vary_accept_encoding(&mut h);
                if enc != Encoding::Identity {
                    weaken_etag(&mut h);
                }
            }
            h.insert(AGE, age);
            h.insert(CACHE_STATUS, label);
            append_via(&mut h, &self.via_h1);
            let mut rsp = Response::new(Body::Empty);
            *rsp.status_mut() = StatusCode::NOT_MODIFIED;
            *rsp.headers_mut() = h;
            return rsp;
        }
        // Compressed off the request threads on first use (see
        // `Entry::body_for`); later requests find the variant ready.
        let (enc, body, produced) = entry.body_for(enc, &self.compressor).await;
        if produced {
            Stats::inc(&self.stats.compressions);
            if let Some(c) = &self.tiers.l1 {
                c.reweigh(key);
            }
            // Share the new variant with the other instances.
            self.tiers.l2_store(key, entry);
        }
        let mut h = entry.headers.clone();
        if entry.compressible {
            add_vary_accept_encoding(&mut h);
            if enc != Encoding::Identity {
                h.insert(CONTENT_ENCODING, enc.header_value());
                weaken_etag(&mut h);
            }
        }
        h.insert(AGE, age);
        h.insert(CACHE_STATUS, label);
        append_via(&mut h, &self.via_h1);
        for c in set_cookie {
            h.append(SET_COOKIE, c.clone());
        }
        let identity = entry.body.len() as u64;
        let sent = body.len() as u64;
        Stats::add(&self.stats.identity_bytes_served, identity);
        let saved = identity.saturating_sub(sent);
        Stats::add(&self.stats.compressed_bytes_saved, saved);
        self.metrics.bytes_out(sent, saved);
        let body = if method == Method::HEAD {
            h.insert(CONTENT_LENGTH, HeaderValue::from(sent));
            Body::Empty
        } else {
            Body::full(body)
        };
        let mut rsp = Response::new(body);
        *rsp.status_mut() = entry.status;
        *rsp.headers_mut() = h;
        rsp
    }
}

/// Whether a response may be stored, and its freshness: RFC 9111 §3
/// (`policy::evaluate`), and not when stored but never reusable (no
/// lifetime, no validators, no `stale-if-error`: not worth storing, nor
/// sharing with coalesced waiters, which RFC 9111 §4 would not allow).
fn storable(
    route: &Route,
    creq: &CacheReq,
    rsp: &Response<perfgate_upstream::upstream::UpstreamBody>,
    timing: &Timing,
) -> Result<perfgate_cache::policy::Freshness, Uncacheable> {
    let f = evaluate(
        &Method::GET,
        &creq.headers,
        rsp.status(),
        rsp.headers(),
        timing,
        &route.policy,
    )?;
    let has_validators =
        rsp.headers().contains_key(ETAG) || rsp.headers().contains_key(http::header::LAST_MODIFIED);
    if f.lifetime.is_zero() && !has_validators && f.stale_if_error.is_zero() {
        return Err(Uncacheable::NoFreshness);
    }
    Ok(f)
}

/// The client's headers as sent on a fetch for the cache: its own
/// conditionals and ranges removed (the cache answers those from the full
/// stored response), and `Accept-Encoding` removed so the upstream sends
/// the identity body that perfgate compresses once per encoding.
///
/// A new map, sized for what `forward` adds (`Host`, the forwarding fields,
/// `Via`, validators): cloning and removing made it grow and rehash on the
/// pass-through hot path.
fn cleaned_for_fetch(h: &HeaderMap) -> HeaderMap {
    const DROPPED: [HeaderName; 7] = [
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_MATCH,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
        ACCEPT_ENCODING,
    ];
    let dropped = DROPPED;
    let mut out = HeaderMap::with_capacity(h.len() + 8);
    for (name, value) in h {
        if !dropped.contains(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// `Cache-Status` of a response that could not be stored, built at compile
/// time: this is the pass-through hot path, and `from_static` validates its
/// bytes each time it runs.
fn uncacheable_label(reason: Uncacheable) -> HeaderValue {
    match reason {
        Uncacheable::Method => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=method") }
        }
        Uncacheable::Status => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=status") }
        }
        Uncacheable::NoStore => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=no-store") }
        }
        Uncacheable::RequestNoStore => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=request-no-store") }
        }
        Uncacheable::Cookie => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=cookie") }
        }
        Uncacheable::Private => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=private") }
        }
        Uncacheable::Authorization => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=authorization") }
        }
        Uncacheable::SetCookie => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=set-cookie") }
        }
        Uncacheable::VaryStar => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=vary-star") }
        }
        Uncacheable::NoFreshness => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=no-freshness") }
        }
        Uncacheable::NoCache => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=no-cache") }
        }
        Uncacheable::Partial => {
            const { HeaderValue::from_static("perfgate; fwd=miss; detail=partial") }
        }
    }
}

fn detail_label(base: &str, detail: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{base}; detail={detail}"))
        .unwrap_or(HeaderValue::from_static("perfgate; fwd=miss"))
}

/// A buffered prefix followed by the rest of an upstream body.
fn chain<B>(prefix: Body, rest: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<perfgate_http::body::BoxError>,
{
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    let first = futures_util::stream::once(async move {
        match prefix {
            Body::Full(Some(b)) => Ok(http_body::Frame::data(b)),
            _ => Ok(http_body::Frame::data(Bytes::new())),
        }
    });
    let rest = rest
        .into_data_stream()
        .map(|r| r.map(http_body::Frame::data).map_err(Into::into));
    Body::stream(StreamBody::new(first.chain(rest)))
}

/// A stale entry standing in for an upstream that failed or gave no answer.
fn stale_if_error(entry: Arc<Entry>, label: HeaderValue, upstream: &mut Waits) -> Fetched {
    upstream.count(CacheEvent::stale);
    Fetched::Entry {
        entry,
        label,
        shareable: true,
        set_cookie: Vec::new(),
    }
}
