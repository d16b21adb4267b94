//! `GET /admin/monitoring/metrics`: one JSON document with what an operator
//! looks at first — the process (CPU, memory, descriptors, threads, uptime),
//! the proxy listener's connections and requests in flight, every upstream
//! pool and server, Redis and the job queues.
//!
//! Everything but two figures comes from state kept elsewhere (the same the
//! health endpoints and `/metrics` read): `/proc/self` is read once, and
//! Redis is sent one `PING` under [`PING_DEADLINE`] for its round-trip time.
//! Nothing here reads client input beyond the path.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use perfgate_proxy::{PoolReport, ServerReport};
use serde_json::{Value, json};

use crate::AdminState;
use crate::envelope::ok;

/// Deadline of the Redis `PING`: long enough for a loaded server nearby,
/// short enough that an unreachable one does not hold the answer.
pub(crate) const PING_DEADLINE: Duration = Duration::from_millis(250);

pub fn routes() -> Router<AdminState> {
    Router::new().route("/admin/monitoring/metrics", get(metrics))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let gw = &state.gateway;
    let redis = redis(&state).await;
    let jobs = match gw.jobs() {
        None => Value::Null,
        Some(jobs) => {
            let (backend, live) = jobs.health();
            json!({
                "backend": backend,
                "live": live,
                "routes": jobs.stats().await,
            })
        }
    };
    ok(json!({
        "process": state.process.sample(),
        "connections": {
            "open": gw.metrics().client_connections(),
            "requests_in_flight": gw.in_flight(),
        },
        "upstreams": gw.upstream_health().iter().map(pool).collect::<Vec<_>>(),
        "redis": redis,
        "jobs": jobs,
    }))
}

/// One pool: its health-check status (as `/health/dependencies` says it),
/// its breakers, and each server.
fn pool(p: &PoolReport) -> Value {
    json!({
        "name": p.name,
        "status": crate::health::pool_status(p),
        "circuit": p.circuit,
        "circuits": p.circuits,
        "servers": p.servers.iter().map(server).collect::<Vec<_>>(),
    })
}

fn server(s: &ServerReport) -> Value {
    json!({
        "address": s.address,
        "state": server_state(s),
        "in_flight": s.in_flight,
        "latency_ms": s.latency_ms,
        "errors": s.errors,
        "ejections": s.ejections,
        "ejected_ms": s.ejected_ms,
        "probe_ms": s.probe_ms,
    })
}

/// `unhealthy` (failing its active probes), `ejected` (by outlier
/// detection, for `ejected_ms` more) or `healthy`.
pub(crate) fn server_state(s: &ServerReport) -> &'static str {
    if !s.probe_healthy {
        "unhealthy"
    } else if s.ejected_ms.is_some() {
        "ejected"
    } else {
        "healthy"
    }
}

/// Redis: the connection's state as the health endpoints report it, and one
/// `PING`'s round-trip time.
async fn redis(state: &AdminState) -> Value {
    let gw = &state.gateway;
    let Some(health) = gw.l2_health() else {
        return json!({ "configured": false });
    };
    let (ping_ms, error) = match gw.redis_ping(PING_DEADLINE).await {
        Some(Ok(rtt)) => (Some(rtt.as_secs_f64() * 1000.0), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    json!({
        "configured": true,
        "state": if ping_ms.is_some() { "up" } else { "down" },
        "connection": health.state,
        "mode": health.mode,
        "ping_ms": ping_ms,
        "error": error.or(health.last_error),
    })
}
