//! The life of a request: [`Gateway::handle`] runs the phases in order,
//! each in its own module, and turns the outcome into a response and one
//! [`RequestEvent`](perfgate_observe::RequestEvent) (`record.rs`).
//!
//! ```text
//! guard → route → identify → limit → clamp → cache lookup (L1, L2,
//! coalescing) → upstream (pool, breaker, retry) → store → respond → record
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body::Body as _;
use http_body_util::Limited;
use hyper::body::Incoming;
use perfgate_observe::RequestKind;

use crate::context::Conn;
use crate::context::RequestContext;
use crate::gateway::Gateway;
use crate::policy::Policy;
use crate::{cached, clamp, guard, identity};
use perfgate_http::body::Body;
use perfgate_http::error::{ErrorKind, GatewayError};

/// `Server-Timing`.
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

impl Gateway {
    /// The life of a proxied request. Never fails: errors become responses here.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: Conn) -> Response<Body> {
        let policy = self.policy.load_full();
        let req = req.map(|b| request_body(b, policy.guards.max_body_bytes));
        self.handle_with(policy, req, conn, RequestKind::Client)
            .await
    }

    /// [`handle`](Self::handle) for a request whose body is already ours
    /// (the batch endpoint's items).
    pub(crate) async fn handle_with(
        self: Arc<Self>,
        policy: Arc<Policy>,
        req: Request<Body>,
        conn: Conn,
        kind: RequestKind,
    ) -> Response<Body> {
        let mut cx = RequestContext::new(kind, req.method(), req.uri(), &conn);
        cx.slow = policy.slow_request;
        // Load shedding: past the limit, answer at once rather than queue.
        let in_flight = InFlight::enter(&self.in_flight);
        let outcome = if policy.max_concurrent > 0 && in_flight.count > policy.max_concurrent {
            self.metrics.traffic.shed();
            Err(
                GatewayError::new(ErrorKind::Overloaded, "too many requests in flight")
                    .retry_after(Duration::from_secs(1)),
            )
        } else if policy.batch.enabled
            && req.method() == Method::POST
            && req.uri().path() == policy.batch.path
        {
            match crate::guard::check(&req, &policy.guards) {
                Ok(declared) => {
                    cx.bytes_in = declared;
                    self.batch(&policy, req, &conn).await // batch.rs: 200/400/413
                }
                Err(e) => Err(e),
            }
        } else {
            self.phases(&policy, req, conn, &mut cx).await
        };
        drop(in_flight);
        let mut rsp = match outcome {
            Ok(rsp) => rsp,
            Err(e) => {
                cx.error = Some(e.kind.code());
                e.into_response()
            }
        };
        self.finish(&mut cx, &mut rsp);
        rsp
    }

    /// The phases of one request, in order, with the statuses each can
    /// answer with. A phase either hands the request on or answers.
    async fn phases(
        self: &Arc<Self>,
        policy: &Policy,
        mut req: Request<Body>,
        mut conn: Conn,
        cx: &mut RequestContext,
    ) -> Result<Response<Body>, GatewayError> {
        cx.bytes_in = guard::admit(&mut req, &policy.guards, &self.keys)?; // guard.rs, target.rs: 400/405/413/414/431
        if let Some(rsp) = self
            .job_status(policy, req.method(), req.uri().path())
            .await
        {
            return rsp; // jobs/status.rs: 200/400/404
        }
        let route = policy.routes.select(req.method(), req.uri().path())?; // route.rs: 404/405
        cx.route = Some(route.clone());
        let own = cx.kind == RequestKind::Warmup; // perfgate's own: no identity, no limits
        if !own {
            identity::identify(
                policy.identity.as_ref(),
                route,
                &mut req,
                &mut conn,
                &self.metrics,
            )?; // identity.rs: 401
            cx.user = conn.user.clone();
        }
        cx.guard_end = Some(Instant::now());
        if !own {
            let env = self.limit_env();
            policy
                .limits
                .check_request(&env, route, &mut req, &conn, cx)
                .await?; // limits.rs: 400/408/413/429
        }
        cx.limit_end = Some(Instant::now());
        clamp::clamp(&route.clamps, &mut req)?; // clamp.rs: 400
        if let Some(aj) = &route.async_job
            && req.method() == Method::POST
        {
            return self.submit_job(route, aj, req, &conn).await; // jobs/submit.rs: 202/413/503
        }
        let eligible = cached::eligibility(self.tiers.l1.is_some(), route, &req);
        match eligible {
            // cached.rs: key, L1, L2 (perfgate_cache::tiers), coalescing, fetch (forward.rs), store, respond
            Ok(()) => self.cached(route.clone(), req, conn, cx).await, // 2xx…/502/503/504
            Err(_) if own => Err(GatewayError::new(
                ErrorKind::BadRequest,
                "the route bypasses the cache",
            )),
            // pass.rs: forward.rs, streamed back; unsafe methods invalidate
            Err(label) => self.pass(route.clone(), req, &conn, cx, label).await, // 2xx…/502/503/504
        }
    }

    /// The response head the client gets: `Server-Timing`, the rate-limit
    /// fields; and the request's event.
    fn finish(&self, cx: &mut RequestContext, rsp: &mut Response<Body>) {
        let total = cx.start.elapsed();
        let waited = cx.timing.upstream + cx.timing.queue;
        let timing = server_timing(total.saturating_sub(waited), cx.timing.upstream);
        let h = rsp.headers_mut();
        h.insert(SERVER_TIMING, timing);
        // Ours replace any the upstream sent: one RateLimit answer per response.
        for (name, value) in cx.limit_headers.drain(..) {
            h.insert(name, value);
        }
        let bytes_out = rsp.body().size_hint().exact().unwrap_or(0);
        self.records()
            .request(cx, rsp.status().as_u16(), bytes_out, total);
    }
}

impl Gateway {
    /// Where request records go (`record.rs`).
    pub(crate) fn records(&self) -> crate::record::Records<'_> {
        crate::record::Records {
            stats: &self.stats,
            metrics: &self.metrics,
            events: &self.events,
        }
    }

    /// What the limit phase reads besides its rules.
    pub(crate) fn limit_env(&self) -> crate::limits::LimitEnv<'_> {
        crate::limits::LimitEnv {
            redis: self.redis.as_ref(),
            metrics: &self.metrics,
            body_timeout: self.body_timeout,
        }
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
    if body.is_end_stream() {
        return Body::Empty;
    }
    Body::stream(Limited::new(
        body,
        usize::try_from(max).unwrap_or(usize::MAX),
    ))
}

#[cfg(test)]
mod tests;
