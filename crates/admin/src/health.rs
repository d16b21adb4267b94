//! Health: `GET /health` (liveness: the process answers) and
//! `GET /health/dependencies` (every upstream pool and Redis) without
//! authentication (load balancers and orchestrators call them), and
//! `GET /health/detailed` (the same plus each server and the instance)
//! behind the admin token, in the `application/health+json` format
//! (draft-inadarei-api-health-check).
//!
//! Every answer comes from state kept by background work (health probes,
//! request outcomes, the Redis breaker): nothing is contacted while the
//! endpoint answers, so it takes microseconds.
//!
//! A dependency that is down makes its check `fail` but the report only
//! `warn`: perfgate keeps serving what it can (cached content, other pools,
//! L1 without Redis), so taking the instance out of a load balancer would
//! only make things worse.

use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use perfgate_proxy::PoolReport;
use serde_json::{Map, Value, json};

use crate::AdminState;

const HEALTH_JSON: &str = "application/health+json";

pub fn routes() -> Router<AdminState> {
    started();
    Router::new()
        .route("/health", get(health))
        .route("/health/dependencies", get(dependencies))
}

/// `/health/detailed` names every server and the instance: behind the token.
pub fn protected_routes() -> Router<AdminState> {
    Router::new().route("/health/detailed", get(detailed))
}

async fn health() -> impl IntoResponse {
    ([(CONTENT_TYPE, HEALTH_JSON)], r#"{"status":"pass"}"#)
}

async fn dependencies(State(state): State<AdminState>) -> impl IntoResponse {
    report(&state, false)
}

async fn detailed(State(state): State<AdminState>) -> impl IntoResponse {
    report(&state, true)
}

fn report(state: &AdminState, detailed: bool) -> impl IntoResponse + use<> {
    let mut checks = Map::new();
    let mut worst = "pass";
    let mut note = |s: &'static str| {
        if rank(s) > rank(worst) {
            worst = s;
        }
    };
    for pool in state.gateway.upstream_health() {
        let status = pool_status(&pool);
        note(status);
        let up = pool.servers.iter().filter(|s| s.up).count();
        let mut check = json!({
            "componentType": "http",
            "status": status,
            "observedValue": up,
            "observedUnit": "servers up",
            "circuit": pool.circuit,
        });
        let probe_ms: Vec<f64> = pool.servers.iter().filter_map(|s| s.probe_ms).collect();
        if !probe_ms.is_empty() {
            check["responseTime"] = json!(probe_ms.iter().copied().fold(0.0, f64::max));
        }
        if detailed {
            check["servers"] = json!(pool.servers);
        }
        checks.insert(format!("upstream:{}", pool.name), Value::Array(vec![check]));
    }
    if let Some(l2) = state.gateway.l2_health() {
        let status = if l2.state == "up" { "pass" } else { "warn" };
        note(status);
        let mut check = json!({
            "componentType": "datastore",
            "status": status,
            "observedValue": l2.state,
            "mode": l2.mode,
        });
        if let Some(err) = l2.last_error {
            check["output"] = Value::String(err);
        }
        checks.insert("redis".into(), Value::Array(vec![check]));
    }
    if let Some(jobs) = state.gateway.jobs() {
        let (backend, live) = jobs.health();
        // The Redis queue is as reachable as the L2 connection it uses.
        let status = match (backend, state.gateway.l2_health()) {
            ("redis", Some(l2)) if l2.state != "up" => "warn",
            _ => "pass",
        };
        note(status);
        checks.insert(
            "jobs".into(),
            Value::Array(vec![json!({
                "componentType": "datastore",
                "status": status,
                "observedValue": live,
                "observedUnit": "jobs waiting or running",
                "backend": backend,
            })]),
        );
    }
    if let Some(logs) = &state.logs {
        let (status, check) = logs_check(logs);
        note(status);
        checks.insert("logs".into(), Value::Array(vec![check]));
    }
    // A failing dependency degrades the instance; it does not kill it.
    let status = if worst == "fail" { "warn" } else { worst };
    let mut body = json!({ "status": status, "checks": checks });
    if detailed {
        body["version"] = json!(env!("CARGO_PKG_VERSION"));
        body["serviceId"] = json!("perfgate");
        body["details"] = json!({
            "uptime": [{
                "componentType": "system",
                "observedValue": started().elapsed().as_secs(),
                "observedUnit": "s",
                "status": "pass",
            }],
        });
    }
    ([(CONTENT_TYPE, HEALTH_JSON)], body.to_string())
}

/// The log pipeline: `warn` when the store cannot write (a full disk) or
/// lines are being dropped; requests are served either way.
fn logs_check(logs: &perfgate_logs::Logs) -> (&'static str, Value) {
    let p = logs.stats();
    let mut status = "pass";
    let mut output = Vec::new();
    let mut check = json!({
        "componentType": "datastore",
        "dropped": p.dropped_queue,
    });
    if let Some(store) = logs.store() {
        let st = store.stats();
        check["observedValue"] = json!(st.disk_bytes);
        check["observedUnit"] = json!("bytes on disk");
        check["dropped"] = json!(p.dropped_queue + st.dropped_full + st.dropped_write);
        if let perfgate_logs::Health::Warn(w) = st.health {
            status = "warn";
            output.push(w);
        }
    }
    if let Some(e) = p.otlp.as_ref().and_then(|o| o.last_error.clone()) {
        output.push(format!("OTLP export: {e}"));
    }
    if p.access_errors > 0 {
        status = "warn";
        output.push(format!(
            "{} access lines could not be written",
            p.access_errors
        ));
    }
    check["status"] = json!(status);
    if !output.is_empty() {
        check["output"] = json!(output.join("; "));
    }
    (status, check)
}

fn rank(s: &str) -> u8 {
    match s {
        "pass" => 0,
        "warn" => 1,
        _ => 2,
    }
}

/// `fail` when the pool cannot take traffic (no server up, or the breaker
/// open), `warn` when it is degraded (some servers out, or half-open).
pub(crate) fn pool_status(pool: &PoolReport) -> &'static str {
    let up = pool.servers.iter().filter(|s| s.up).count();
    if up == 0 || pool.circuit == "open" {
        "fail"
    } else if up < pool.servers.len() || pool.circuit == "half-open" {
        "warn"
    } else {
        "pass"
    }
}

/// When the admin API (and so the process) started.
fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}
