//! The async job queue: `GET /admin/jobs?state=dead&limit=100` (jobs in a
//! state, oldest first), `POST /admin/jobs/{id}/retry` (a dead or failed
//! job back to the queue), `DELETE /admin/jobs/{id}` (discard a finished
//! job), `GET /admin/jobs/stats` (depth per state, upstream calls made and
//! saved, estimated cost, throughput, wait and run percentiles per route).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use perfgate_proxy::{Error, JobState, Jobs, is_valid_task_id};

use crate::AdminState;
use crate::envelope::{ApiError, ok};

/// Most jobs one listing returns.
const MAX_LIMIT: usize = 1000;

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin/jobs", get(list))
        .route("/admin/jobs/stats", get(stats))
        .route("/admin/jobs/{id}/retry", post(retry))
        .route("/admin/jobs/{id}", delete(discard))
}

fn queue(state: &AdminState) -> Result<Arc<Jobs>, ApiError> {
    state
        .gateway
        .jobs()
        .cloned()
        .ok_or_else(|| ApiError::not_found("no async routes are configured: there is no job queue"))
}

fn from_gateway(e: Error) -> ApiError {
    e.into()
}

fn id_of(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Ok(Path(id)) = id else {
        return Err(ApiError::bad_request("id", "missing task id"));
    };
    if !is_valid_task_id(&id) {
        return Err(ApiError::bad_request(
            "id",
            "expected 32 lowercase hexadecimal digits",
        ));
    }
    Ok(id)
}

async fn list(State(state): State<AdminState>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let jobs = queue(&state)?;
        let mut st = JobState::Dead;
        let mut limit = 100usize;
        for pair in q
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "state" => {
                    st = JobState::parse(v).ok_or_else(|| {
                        ApiError::bad_request(
                            "state",
                            format!("{v:?}: use queued, running, succeeded, failed or dead"),
                        )
                    })?
                }
                "limit" => {
                    limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request("limit", format!("{v:?}: use 1 to {MAX_LIMIT}"))
                        })?
                }
                other => {
                    return Err(ApiError::bad_request(
                        other.to_string(),
                        "unknown parameter: use state and limit",
                    ));
                }
            }
        }
        let items = jobs.list(st, limit).await.map_err(from_gateway)?;
        Ok::<_, ApiError>(ok(serde_json::json!({
            "state": st.as_str(),
            "count": items.len(),
            "jobs": items,
        })))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn stats(State(state): State<AdminState>) -> Response {
    match queue(&state) {
        Ok(jobs) => ok(jobs.stats().await),
        Err(e) => e.into_response(),
    }
}

async fn retry(
    State(state): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let run = async {
        let id = id_of(id)?;
        let job = queue(&state)?.retry(&id).await.map_err(from_gateway)?;
        Ok::<_, ApiError>((StatusCode::ACCEPTED, ok(job)).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn discard(
    State(state): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let run = async {
        let id = id_of(id)?;
        queue(&state)?.discard(&id).await.map_err(from_gateway)?;
        Ok::<_, ApiError>(ok(serde_json::json!({ "discarded": id })))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
