//! The admin API: health, metrics, monitoring, logs, performance reports
//! and cache administration (statistics, invalidation, warm-up), each
//! resource in its own module, all but
//! `/health` and `/health/dependencies` behind one auth layer (auth.rs). It uses only the public
//! handles of the proxy crate.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod auth;
mod cache;
mod config;
mod envelope;
mod health;
mod invalidate;
mod jobs;
mod json;
mod logs;
mod metrics;
mod monitoring;
mod performance;
#[cfg(test)]
mod tests;
mod warmup;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use perfgate_observe::ProcessSampler;
use perfgate_proxy::Gateway;
use tokio::net::TcpListener;

pub use config::{ReloadError, ReloadReport, Reloader};
pub use envelope::{ApiError, ok};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The running gateway.
    pub gateway: Arc<Gateway>,
    /// Bearer token; `None` means loopback clients only, read-only unless
    /// `allow_unauthenticated`.
    pub token: Option<Arc<str>>,
    /// Without a token, loopback clients may also change things
    /// (`admin.allow_unauthenticated`).
    pub allow_unauthenticated: bool,
    /// Host names accepted besides IP literals and `localhost`
    /// (`admin.allowed_hosts`).
    pub allowed_hosts: Arc<[String]>,
    /// Serve `/metrics` without the token.
    pub metrics_public: bool,
    /// Reloads the configuration (`POST /admin/config/reload`).
    pub reloader: Option<Reloader>,
    /// The log pipeline and its store (`/admin/logs/*`), when on.
    pub logs: Option<perfgate_logs::Logs>,
    /// The performance windows behind `/admin/performance/*`; `None` → 503
    /// `disabled`.
    pub perf: Option<Arc<perfgate_observe::PerfWindows>>,
    /// The process's last CPU reading (`GET /admin/monitoring/metrics`).
    pub process: Arc<ProcessSampler>,
}

/// The admin router. New resources add a module and a `merge` here.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .merge(health::protected_routes())
        .merge(cache::routes())
        .merge(invalidate::routes())
        .merge(warmup::routes())
        .merge(jobs::routes())
        .merge(logs::routes())
        .merge(performance::routes())
        .merge(config::routes())
        .merge(monitoring::routes())
        .merge(metrics::routes(!state.metrics_public))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes(state.metrics_public))
        .merge(protected)
        .fallback(envelope::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::host,
        ))
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
