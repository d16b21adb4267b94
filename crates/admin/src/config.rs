//! `POST /admin/config/reload`: re-reads the configuration file and the
//! environment and rebuilds routes, pools, limits and policies through the
//! same code as start-up, without dropping connections or emptying the
//! cache. An invalid configuration is rejected with every problem and the
//! running one stays. (`SIGHUP` does the same.)

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::json;

use crate::AdminState;
use perfgate_proxy::ErrorKind;

use crate::envelope::{ApiError, ok};

/// What a successful reload changed.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Reloads applied since start (this one included).
    pub generation: u64,
    /// Settings that changed but only take effect after a restart
    /// (listeners, TLS, cache size, Redis, compression).
    pub restart_required: Vec<String>,
}

/// Why a reload was refused.
#[derive(Debug, Clone)]
pub enum ReloadError {
    /// The new configuration is invalid: every problem, one line each.
    Invalid(Vec<String>),
    /// Reloading is not available (no configuration source).
    Unavailable(String),
}

/// Reloads the configuration; installed by the binary.
pub type Reloader = Arc<dyn Fn() -> Result<ReloadReport, ReloadError> + Send + Sync>;

pub fn routes() -> Router<AdminState> {
    Router::new().route("/admin/config/reload", post(reload))
}

async fn reload(State(state): State<AdminState>) -> Response {
    let Some(reloader) = state.reloader.clone() else {
        return unavailable("configuration reload is not available in this process".into());
    };
    // Reading files and compiling keys is blocking work.
    match tokio::task::spawn_blocking(move || reloader()).await {
        Ok(Ok(report)) => ok(report),
        Ok(Err(ReloadError::Invalid(problems))) => ApiError::new(
            ErrorKind::InvalidConfig,
            format!(
                "the new configuration has {} problem(s); the running configuration is unchanged",
                problems.len()
            ),
        )
        .field("config")
        .details(json!({ "problems": problems }))
        .into_response(),
        Ok(Err(ReloadError::Unavailable(why))) => unavailable(why),
        Err(e) => ApiError::new(ErrorKind::Internal, format!("reload failed: {e}")).into_response(),
    }
}

fn unavailable(message: String) -> Response {
    ApiError::new(ErrorKind::ReloadUnavailable, message).into_response()
}
