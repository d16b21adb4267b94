//! Sending a request to a route's pool: breaker admission, a connection
//! slot, server choice, per-attempt and total deadlines, and retries with
//! a budget and jittered backoff.
//!
//! Retries: only requests whose body can be replayed (none, or one of at
//! most [`REPLAY_MAX_BYTES`] with a declared length, which is read before
//! the first attempt; larger and chunked bodies are streamed and never
//! retried), and then only when repeating is safe: an idempotent method
//! (RFC 9110 §9.2.2), or any method when the connection was refused (the
//! upstream never saw the request). A POST that reached the upstream is
//! never repeated. Another server is chosen when the pool has one; every
//! retry is paid from the pool's retry budget.
//!
//! A response is an answer: it is sent again only when its status is in
//! `retry.on_status` (empty by default), another server that has not been
//! tried can take it (never the one that answered), and its `Retry-After`
//! (if any) is shorter than what is left of the total deadline (or of the
//! per-attempt one when the route sets no total); the retry then waits at
//! least that long.
//!
//! Breakers are per route and pool (`Route::breaker`); what counts as a
//! failure for them and for outlier detection is the pool's
//! [`FailureClass`](crate::pool::FailureClass): connection failures,
//! timeouts and 502/503/504 by default, never an application error.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use perfgate_http::body::{Body, ReadError};
use perfgate_observe::{Metrics, UpstreamErrorKind};
use perfgate_traffic::breaker::Breaker;

use crate::pool::{Pick, Pool};
use crate::upstream::{Refusal, Upstream, UpstreamBody, UpstreamError};

/// Request bodies up to this size, with a declared `Content-Length`, are
/// read before the first attempt so a retry can send them again (nginx
/// buffers every request body by default; this keeps larger ones streamed).
pub const REPLAY_MAX_BYTES: u64 = 64 * 1024;

/// RFC 9110 §9.2.2.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Where and how one request is sent: what the route chose (pool, breaker,
/// client, deadlines) and what balancing may hash on.
pub struct Dispatch<'a> {
    /// The route's name: breakers are per route and pool; logs name it.
    pub route: &'a str,
    pub pool: &'a Pool,
    pub breaker: Option<&'a Breaker>,
    /// The route's own client (its own connect timeout), else the pool's.
    pub client: Option<&'a Upstream>,
    /// Keep the client's `Host` instead of the server's authority.
    pub preserve_host: bool,
    /// All attempts and the pauses between them.
    pub total_timeout: Option<Duration>,
    /// One attempt's response head; the pool's when `None`.
    pub response_timeout: Option<Duration>,
    /// How long a client's body may stall while it is read for a replay.
    pub body_timeout: Duration,
    /// What hashing balancers may key on.
    pub client_ip: IpAddr,
    pub user: Option<&'a str>,
    pub metrics: &'a Metrics,
}

/// Where a dispatch spent its time, and how many attempts it made.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Waiting for a connection slot of the pool.
    pub queue: Duration,
    /// Attempts and the pauses between them.
    pub upstream: Duration,
    pub count: u32,
    /// The server of the last attempt.
    pub server: Option<Arc<str>>,
}

/// Sends a request whose head is ready (hop-by-hop fields stripped,
/// forwarding fields set) to the pool and returns the response head. See
/// the module documentation for retries.
pub async fn dispatch(
    d: Dispatch<'_>,
    method: Method,
    uri: &Uri,
    mut headers: HeaderMap,
    body: Body,
    timing: &mut Attempts,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let start = Instant::now();
    let (pool, breaker) = (d.pool, d.breaker);
    let permit = pool.admit(breaker, start).map_err(UpstreamError::refused)?;
    let queued = Instant::now();
    let slot = pool.slot().await;
    timing.queue += queued.elapsed();
    let _slot = slot.map_err(UpstreamError::refused)?;
    if !headers.contains_key(HOST)
        && let Some(a) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(HOST, v);
    }
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let client_ip = d.client_ip;

    let body = if pool.retry.attempts > 0 && matches!(body, Body::Stream(_)) {
        replayable_body(body, &headers, d.body_timeout).await?
    } else {
        body
    };
    let replayable = matches!(body, Body::Empty | Body::Full(_));
    let retries = if replayable { pool.retry.attempts } else { 0 };
    let deadline = d.total_timeout.map(|t| start + t);
    let per_attempt = d.response_timeout.unwrap_or(pool.response_timeout);
    let client = d.client.unwrap_or(&pool.client);
    pool.deposit();
    let mut body = Some(body);
    let mut tried: Vec<usize> = Vec::new();
    // The server a retry after a response goes to, chosen before that
    // response is let go (never the one that answered).
    let mut next: Option<usize> = None;
    let mut attempt = 0u32;
    loop {
        let pick = Pick {
            path_and_query: pq,
            headers: &headers,
            client_ip,
            user: d.user,
        };
        let Some(i) = next.take().or_else(|| {
            pool.pick(&pick, &tried, Instant::now()).or_else(|| {
                // Every untried server is out: a retry after a failed
                // exchange may go back to one already tried rather
                // than fail.
                (!tried.is_empty())
                    .then(|| pool.pick(&pick, &[], Instant::now()))
                    .flatten()
            })
        }) else {
            pool.record(d.route, breaker, permit, false);
            return Err(UpstreamError::refused(Refusal::NoHealthy));
        };
        tried.push(i);
        let server = &pool.servers[i];
        let mut h = if attempt < retries {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        if !d.preserve_host
            && let Ok(v) = HeaderValue::from_str(server.target.authority.as_str())
        {
            h.insert(HOST, v);
        }
        let up_uri =
            Upstream::uri_with(&server.target, pq, uri.path_and_query()).map_err(|_| {
                UpstreamError {
                    kind: UpstreamErrorKind::protocol,
                    detail: "invalid request target".into(),
                    body_too_large: false,
                    body_broken: false,
                    refused: None,
                }
            })?;
        let attempt_body = match &body {
            Some(Body::Full(Some(bytes))) if attempt < retries => Body::Full(Some(bytes.clone())),
            _ => body.take().unwrap_or(Body::Empty),
        };
        let mut req = Request::new(attempt_body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = up_uri;
        *req.headers_mut() = h;

        let limit = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(per_attempt),
            None => per_attempt,
        };
        let t0 = Instant::now();
        let result = {
            let _in_flight = pool.start(i);
            client.send_within(req, limit).await
        };
        let took = t0.elapsed();
        timing.upstream += took;
        timing.count += 1;
        timing.server = Some(server.label.clone());
        // What the breaker and outlier detection count: connection
        // failures, timeouts and 502/503/504 by default. Any other
        // answer means the server is up.
        let failed = match &result {
            Ok(rsp) => pool.failures.status(rsp.status()),
            Err(e) => !e.clients_fault() && pool.failures.error(e.kind),
        };
        if !matches!(&result, Err(e) if e.clients_fault()) {
            pool.report(i, !failed, took);
        }
        match &result {
            Ok(rsp) if rsp.status().is_server_error() => {
                d.metrics.upstream_error(UpstreamErrorKind::status_5xx);
            }
            Ok(_) => {}
            Err(e) if e.clients_fault() => {}
            Err(e) => {
                d.metrics.upstream_error(e.kind);
                tracing::warn!(route = %d.route, pool = %pool.name, server = %server.label, attempt = attempt + 1, error = %e.detail, "upstream request failed");
            }
        }
        let backoff = || {
            perfgate_traffic::retry::backoff(
                attempt + 1,
                pool.retry.backoff_base,
                pool.retry.backoff_max,
            )
        };
        let pause = if attempt >= retries {
            None
        } else {
            match &result {
                // Never reached the upstream: safe for any method.
                Err(e) if e.kind == UpstreamErrorKind::connect => Some(backoff()),
                Err(e) if !e.clients_fault() && idempotent(&method) => Some(backoff()),
                Err(_) => None,
                // A response is an answer: sent again only when its
                // status is listed, to another server, and not before
                // its `Retry-After`.
                Ok(rsp)
                    if idempotent(&method)
                        && pool.retry.on_status.contains(&rsp.status().as_u16()) =>
                {
                    // `headers` is still whole: this is not the last attempt.
                    let pick = Pick {
                        path_and_query: pq,
                        headers: &headers,
                        client_ip,
                        user: d.user,
                    };
                    next = pool.pick(&pick, &tried, Instant::now());
                    let wait = retry_after(rsp.headers(), SystemTime::now());
                    // Without a total deadline, the per-attempt one is
                    // the most this request is worth waiting for.
                    let budget = deadline
                        .map_or(per_attempt, |d| d.saturating_duration_since(Instant::now()));
                    match (next, wait) {
                        (None, _) => None,
                        (Some(_), Some(w)) if w >= budget => None,
                        (Some(_), w) => Some(backoff().max(w.unwrap_or_default())),
                    }
                }
                Ok(_) => None,
            }
        };
        if let Some(pause) = pause {
            let in_time = deadline.is_none_or(|d| Instant::now() + pause < d);
            if in_time && pool.withdraw() {
                attempt += 1;
                d.metrics.traffic.retry(&pool.name);
                drop(result);
                tokio::time::sleep(pause).await;
                timing.upstream += pause;
                continue;
            }
        }
        pool.record(d.route, breaker, permit, !failed);
        return result;
    }
}

/// How long an upstream's `Retry-After` asks to wait (RFC 9110 §10.2.3:
/// delay-seconds or an HTTP-date); `None` when absent or unreadable.
fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// A small client body with a declared length, read into memory so it can
/// be sent again; any other body as it was (streamed, not replayable).
async fn replayable_body(
    body: Body,
    headers: &http::HeaderMap,
    deadline: std::time::Duration,
) -> Result<Body, UpstreamError> {
    if perfgate_http::body::declared_length(headers).is_none_or(|n| n > REPLAY_MAX_BYTES) {
        return Ok(body);
    }
    let failed = |detail: String, body_too_large: bool| UpstreamError {
        kind: UpstreamErrorKind::protocol,
        detail,
        body_too_large,
        body_broken: !body_too_large,
        refused: None,
    };
    match perfgate_http::body::read_bounded(body, headers, REPLAY_MAX_BYTES, deadline).await {
        Ok(bytes) => Ok(Body::full(bytes)),
        Err(ReadError::TooLarge) => Err(failed("the client's body is too large".into(), true)),
        Err(ReadError::Broken(e)) => Err(failed(format!("reading the client's body: {e}"), false)),
        // The client's fault, answered 408 (`server.request_body_timeout`).
        Err(ReadError::TimedOut(d)) => Err(UpstreamError {
            refused: Some(Refusal::ClientBodyTimeout(d)),
            ..failed(format!("the client's body stalled for {d:?}"), false)
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, HeaderValue};

    use super::retry_after;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after(&with("3"), now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&with(" 0 "), now), Some(Duration::ZERO));
        // 2015-10-21 07:28:10 GMT is 10 s after `now`.
        let date = "Wed, 21 Oct 2015 07:28:10 GMT";
        assert_eq!(retry_after(&with(date), now), Some(Duration::from_secs(10)));
        // A date in the past: no wait.
        let past = "Wed, 21 Oct 2015 07:27:00 GMT";
        assert_eq!(retry_after(&with(past), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&with("soon"), now), None);
        assert_eq!(retry_after(&with("-1"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
