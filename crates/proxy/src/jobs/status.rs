//! The status of a job: `GET {status_path}/{task_id}` (a JSON document)
//! and `GET {status_path}/{task_id}/result` (the upstream's answer as it
//! came: status, headers, body).

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use perfgate_jobs::Job;
use perfgate_jobs::job::is_valid_id;
use serde_json::{Value, json};

use super::{Jobs, head_fields, store_error};
use perfgate_http::body::Body;
use perfgate_http::error::{ErrorKind, GatewayError};

/// Largest result body embedded in the status document; larger ones are
/// only at the result URL.
const EMBED_MAX: usize = 1024 * 1024;

/// The status document of a job (the result embedded when it is JSON or
/// text of at most 1 MiB; always at `result_url`).
pub(crate) fn status_document(job: &Job, status_url: &str, deduplicated: bool) -> Value {
    let ms = |v: Option<u64>| v.map_or(Value::Null, |v| json!(v));
    let mut doc = json!({
        "task_id": job.id,
        "route": job.route,
        "status": job.state.as_str(),
        "status_url": status_url,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at_ms": job.created_ms,
        "started_at_ms": ms(job.started_ms),
        "finished_at_ms": ms(job.finished_ms),
        "next_attempt_at_ms": if job.state == perfgate_jobs::JobState::Queued && job.next_attempt_ms > 0 {
            json!(job.next_attempt_ms)
        } else {
            Value::Null
        },
        "last_error": job.last_error,
        "deduplicated": deduplicated,
    });
    if let Some(r) = &job.result {
        let headers: serde_json::Map<String, Value> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let is_json = r
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.contains("json"));
        let body = if job.result_body.len() > EMBED_MAX {
            Value::Null
        } else if is_json {
            serde_json::from_slice(&job.result_body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&job.result_body).into_owned())
            })
        } else {
            match std::str::from_utf8(&job.result_body) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => Value::Null,
            }
        };
        doc["result"] = json!({
            "status": r.status,
            "headers": headers,
            "body": body,
            "body_bytes": job.result_body.len(),
        });
        doc["result_url"] = json!(format!("{status_url}/result"));
    }
    doc
}

/// A JSON answer that is never cached by anyone.
pub(crate) fn json_response(status: StatusCode, doc: &Value) -> Response<Body> {
    let mut rsp = Response::new(Body::full(doc.to_string()));
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rsp
}

impl Jobs {
    /// The task id (and whether the result itself is asked for) when
    /// `path` is a status URL: `{prefix}/{id}` or `{prefix}/{id}/result`,
    /// for the generic prefix or one of `route_prefixes`.
    pub(crate) fn status_target<'p>(
        &self,
        path: &'p str,
        route_prefixes: &[String],
    ) -> Option<(&'p str, String, bool)> {
        let prefixes = std::iter::once(&self.status_prefix).chain(route_prefixes);
        for prefix in prefixes {
            let Some(rest) = path
                .strip_prefix(prefix.as_str())
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            if rest.is_empty() {
                continue;
            }
            let (id, result) = match rest.strip_suffix("/result") {
                Some(id) => (id, true),
                None => (rest, false),
            };
            return Some((id, prefix.clone(), result));
        }
        None
    }

    /// Answers a status URL.
    pub(crate) async fn status(
        &self,
        id: &str,
        prefix: &str,
        result: bool,
    ) -> Result<Response<Body>, GatewayError> {
        if !is_valid_id(id) {
            return Err(GatewayError::new(
                ErrorKind::BadRequest,
                "task_id: expected 32 lowercase hexadecimal digits",
            ));
        }
        let job = match self.finished.get(id) {
            Some(job) => job,
            None => {
                let job = self
                    .store
                    .get(id)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| GatewayError::new(ErrorKind::NotFound, "no such task"))?;
                let job = std::sync::Arc::new(job);
                self.remember(&job);
                job
            }
        };
        let url = format!("{prefix}/{id}");
        if !result {
            return Ok(json_response(
                StatusCode::OK,
                &status_document(&job, &url, false),
            ));
        }
        let Some(r) = &job.result else {
            return Err(GatewayError::new(
                ErrorKind::NotFound,
                format!("the task is {} and has no result yet", job.state.as_str()),
            ));
        };
        let mut rsp = Response::new(Body::full(job.result_body.clone()));
        *rsp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
        *rsp.headers_mut() = head_fields(&r.headers);
        Ok(rsp)
    }
}

impl crate::gateway::Gateway {
    /// The job-status phase: a GET or HEAD of a status URL is answered here
    /// (200/400/404), before routing; anything else goes on.
    pub(crate) async fn job_status(
        &self,
        policy: &crate::policy::Policy,
        method: &http::Method,
        path: &str,
    ) -> Option<Result<Response<Body>, GatewayError>> {
        let jobs = self.jobs.get()?;
        if method != http::Method::GET && method != http::Method::HEAD {
            return None;
        }
        let (id, prefix, result) = jobs.status_target(path, &policy.job_status_paths)?;
        Some(jobs.status(id, &prefix, result).await)
    }
}
