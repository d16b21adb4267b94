//! The status of a job: `GET {status_path}/{task_id}` (a JSON document)
//! and `GET {status_path}/{task_id}/result` (the upstream's answer as it
//! came: status, headers, body).

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use perfgate_jobs::job::is_valid_id;
use serde_json::Value;

use perfgate_http::body::Body;
use perfgate_http::error::{ErrorKind, GatewayError};
use perfgate_jobs::queue::{Jobs, head_fields, status_document, store_error};

/// A JSON answer that is never cached by anyone.
pub(crate) fn json_response(status: StatusCode, doc: &Value) -> Response<Body> {
    let mut rsp = Response::new(Body::full(doc.to_string()));
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rsp
}

/// The task id (and whether the result itself is asked for) when
/// `path` is a status URL: `{prefix}/{id}` or `{prefix}/{id}/result`,
/// for the generic prefix or one of `route_prefixes`.
fn status_target<'p>(
    jobs: &Jobs,
    path: &'p str,
    route_prefixes: &[String],
) -> Option<(&'p str, String, bool)> {
    let prefixes = std::iter::once(&jobs.status_prefix).chain(route_prefixes);
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
async fn status(
    jobs: &Jobs,
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
    let job = match jobs.finished.get(id) {
        Some(job) => job,
        None => {
            let job = jobs
                .store
                .get(id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| GatewayError::new(ErrorKind::NotFound, "no such task"))?;
            let job = std::sync::Arc::new(job);
            jobs.remember(&job);
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
        let (id, prefix, result) = status_target(jobs, path, &policy.job_status_paths)?;
        Some(status(jobs, id, &prefix, result).await)
    }
}
