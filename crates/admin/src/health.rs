//! Health, no authentication (load balancers and orchestrators call it):
//! `GET /health` (liveness) and `GET /health/dependencies` (alias
//! `/health/detailed`), the state of the dependencies in the
//! `application/health+json` format (draft-inadarei-api-health-check).
//!
//! A dependency that is down makes the report `warn`, never `fail`: perfgate
//! keeps serving from L1 and the upstream without Redis, so taking the
//! instance out of a load balancer would only make things worse.

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::AdminState;

const HEALTH_JSON: &str = "application/health+json";

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/dependencies", get(dependencies))
        .route("/health/detailed", get(dependencies))
}

async fn health() -> impl IntoResponse {
    ([(CONTENT_TYPE, HEALTH_JSON)], r#"{"status":"pass"}"#)
}

async fn dependencies(State(state): State<AdminState>) -> impl IntoResponse {
    let mut checks = Map::new();
    let mut status = "pass";
    if let Some(l2) = state.gateway.l2_health() {
        let check_status = if l2.state == "up" { "pass" } else { "warn" };
        if check_status != "pass" {
            status = "warn";
        }
        let mut check = json!({
            "componentType": "datastore",
            "status": check_status,
            "observedValue": l2.state,
        });
        if let Some(err) = l2.last_error {
            check["output"] = Value::String(err);
        }
        checks.insert("redis".into(), Value::Array(vec![check]));
    }
    let body = json!({ "status": status, "checks": checks });
    ([(CONTENT_TYPE, HEALTH_JSON)], body.to_string())
}
