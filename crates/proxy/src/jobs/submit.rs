//! Accepting a submission: the body is read (bounded), the upstream
//! request is recorded with its priority and de-duplication key, and the
//! store decides whether it is new work, joins a live job, or is answered
//! from a finished one.

use http::header::{AUTHORIZATION, CONTENT_LENGTH, COOKIE, HOST, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};
use perfgate_config::{AsyncRouteConfig, DedupScope};
use perfgate_jobs::{Job, JobRequest, Submitted};
use perfgate_observe::Submission;
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_128;

use super::status::json_response;
use crate::context::Conn;
use crate::gateway::Gateway;
use crate::route::Route;
use perfgate_http::body::{Body, read_bounded};
use perfgate_http::error::{ErrorKind, GatewayError};
use perfgate_jobs::queue::{status_document, store_error, stored_fields};

/// Priorities are clamped to this range.
const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -1000..=1000;

impl Gateway {
    /// `POST` on an async route: 202 with the task (or 200 with a finished
    /// duplicate's result).
    pub(crate) async fn submit_job(
        &self,
        route: &Route,
        aj: &AsyncRouteConfig,
        req: Request<Body>,
        conn: &Conn,
    ) -> Result<Response<Body>, GatewayError> {
        let Some(jobs) = self.jobs.get() else {
            return Err(GatewayError::new(
                ErrorKind::StoreUnavailable,
                "async routes were added by a reload; restart perfgate to open the job store",
            ));
        };
        let metrics = &self.metrics.jobs;
        let limit = aj.max_body_bytes.get();
        let (parts, body) = req.into_parts();
        let body = match read_bounded(body, &parts.headers, limit, self.body_timeout).await {
            Ok(b) => b,
            Err(e) => {
                metrics.submitted(&route.name, Submission::refused, 0.0);
                return Err(GatewayError::body_read(e, limit));
            }
        };

        // Parsed once, for the priority and the de-duplication key.
        let json = serde_json::from_slice::<Value>(&body).ok();
        let priority = priority_of(&parts.headers, json.as_ref())?;
        let path = parts.uri.path();
        let upstream_path = match &aj.upstream_path {
            Some(p) => p.clone(),
            None => path
                .strip_suffix(aj.strip_suffix.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or(path)
                .to_string(),
        };
        let target = match parts.uri.query() {
            Some(q) => format!("{upstream_path}?{q}"),
            None => upstream_path,
        };
        let client_ip =
            perfgate_http::headers::client_ip(&parts.headers, conn.peer.ip(), &route.trusted);
        let caller = match aj.dedup_scope {
            DedupScope::Global => None,
            DedupScope::PerCaller => Some(caller_identity(conn, &parts.headers)),
        };
        let mut headers = parts.headers;
        headers.remove(CONTENT_LENGTH);
        headers.remove(HOST);
        // The call describes the submitter from what is stored below, not
        // from what the client claimed (nor from the worker's connection).
        for name in FORWARDING {
            headers.remove(name);
        }
        let headers = stored_fields(headers);
        let method = parts.method.as_str().to_string();
        let dedup = perfgate_jobs::dedup::key_parsed(
            aj.dedup,
            &aj.dedup_url_field,
            &method,
            &target,
            &body,
            json,
            caller.as_deref(),
        );
        // Others can join this job (and be given its result) unless
        // de-duplication is off or bound to a caller with an identity.
        let private_result = dedup.is_none() || caller.as_deref().is_some_and(|c| c != ANONYMOUS);
        let mut job = Job::new(
            &route.name,
            JobRequest {
                method,
                target,
                headers,
                client_ip: Some(client_ip.to_string()),
                tls: conn.tls,
                user: conn.user.as_deref().map(str::to_string),
            },
            body,
            jobs.store.now_ms(),
        );
        job.priority = priority;
        job.max_attempts = aj.max_attempts.max(1);
        job.dedup = dedup;
        job.private_result = private_result;

        let prefix = route
            .job_status_path
            .as_deref()
            .unwrap_or(&jobs.status_prefix);
        let answer = |status: StatusCode, job: &Job, dedup: bool| {
            let url = format!("{prefix}/{}", job.id);
            let mut rsp = json_response(status, &status_document(job, &url, dedup));
            if let Ok(v) = HeaderValue::from_str(&url) {
                rsp.headers_mut().insert(LOCATION, v);
            }
            rsp
        };
        match jobs.store.submit(job, jobs.max_queued).await {
            Ok(Submitted::New(job)) => {
                metrics.submitted(&route.name, Submission::queued, 0.0);
                jobs.route(&route.name).notify.notify_one();
                Ok(answer(StatusCode::ACCEPTED, &job, false))
            }
            Ok(Submitted::Duplicate(job)) => {
                metrics.submitted(&route.name, Submission::deduplicated, aj.unit_cost);
                jobs.route(&route.name).count_saved(aj.unit_cost);
                Ok(answer(StatusCode::ACCEPTED, &job, true))
            }
            Ok(Submitted::Done(job)) => {
                metrics.submitted(&route.name, Submission::cached, aj.unit_cost);
                jobs.route(&route.name).count_saved(aj.unit_cost);
                Ok(answer(StatusCode::OK, &job, true))
            }
            Err(e) => {
                metrics.submitted(&route.name, Submission::refused, 0.0);
                Err(store_error(e))
            }
        }
    }
}

/// Fields that describe how a request reached perfgate; a job's call sets
/// them again from the stored client address and protocol.
const FORWARDING: [&str; 7] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// The caller identity of callers with no credentials at all.
const ANONYMOUS: &str = "anonymous";

/// Who submits, for per-caller de-duplication: the validated JWT user
/// when the route has one, else a hash of the `Authorization` and `Cookie`
/// values (each field length-prefixed, so no two lists read alike), else
/// [`ANONYMOUS`].
fn caller_identity(conn: &Conn, headers: &http::HeaderMap) -> String {
    if let Some(user) = &conn.user {
        return format!("user:{user}");
    }
    let mut material = Vec::new();
    for name in [AUTHORIZATION, COOKIE] {
        for v in headers.get_all(&name) {
            material.extend_from_slice(name.as_str().as_bytes());
            material.extend_from_slice(&(v.len() as u64).to_be_bytes());
            material.extend_from_slice(v.as_bytes());
        }
    }
    if material.is_empty() {
        return ANONYMOUS.to_string();
    }
    format!("credentials:{:032x}", xxh3_128(&material))
}

/// The priority: the `X-Priority` header, else a top-level `"priority"`
/// number in a JSON body, else 0; clamped to ±1000. A header that is not an
/// integer is a 400.
fn priority_of(headers: &http::HeaderMap, json: Option<&Value>) -> Result<i32, GatewayError> {
    let clamp = |n: i64| {
        i32::try_from(n.clamp(*PRIORITY_RANGE.start(), *PRIORITY_RANGE.end())).unwrap_or(0)
    };
    if let Some(v) = headers.get("x-priority") {
        return v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(clamp)
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorKind::BadRequest,
                    "X-Priority: expected an integer (higher runs first)",
                )
            });
    }
    if let Some(Value::Object(m)) = json
        && let Some(n) = m.get("priority").and_then(Value::as_i64)
    {
        return Ok(clamp(n));
    }
    Ok(0)
}
