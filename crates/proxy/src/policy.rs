//! The part of the gateway a configuration reload replaces: routes (with
//! their pools), guards, rate limits, JWT. Built by the same code at start
//! and on reload; swapped atomically, so a request sees one generation from
//! start to end. The cache, L2, metrics and statistics live on.

use std::sync::Arc;
use std::time::Duration;

use perfgate_config::{Config, ConfigErrors, Problem};
use perfgate_observe::Metrics;

use crate::identity::Identity;
use crate::limits::Limits;
use crate::route::Routes;
use perfgate_upstream::pool::Pools;

/// Request-head limits (guard.rs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guards {
    pub(crate) max_body_bytes: u64,
    pub(crate) max_header_count: usize,
    pub(crate) max_uri_bytes: usize,
}

/// One generation of the reloadable configuration.
pub(crate) struct Policy {
    pub(crate) routes: Routes,
    pub(crate) pools: Pools,
    /// JWT validation; `None` when no route uses it.
    pub(crate) identity: Option<Identity>,
    /// Rate-limit rules.
    pub(crate) limits: Limits,
    pub(crate) guards: Guards,
    /// Requests slower than this are logged with their timing breakdown.
    pub(crate) slow_request: Duration,
    /// Requests in flight allowed at once (0 = unlimited).
    pub(crate) max_concurrent: usize,
    /// The batch endpoint.
    pub(crate) batch: perfgate_config::BatchConfig,
    /// Status URL prefixes of the async routes (besides `jobs.status_prefix`).
    pub(crate) job_status_paths: Vec<String>,
}

impl Policy {
    /// Compiles a validated configuration. `previous` is the generation
    /// being replaced, whose pools (and their health) are kept where their
    /// settings did not change.
    pub(crate) fn build(
        config: &Config,
        metrics: &Arc<Metrics>,
        previous: Option<&Policy>,
        tasks: &perfgate_runtime::Supervisor,
    ) -> Result<Self, ConfigErrors> {
        let s = &config.server;
        let pools = Pools::build(config, metrics, previous.map(|p| &p.pools), tasks)
            .map_err(at("pools"))?;
        let routes = Routes::build(config, metrics, &pools).map_err(at("routes"))?;
        let job_status_paths = routes
            .iter()
            .filter_map(|r| r.job_status_path.clone())
            .collect();
        let policy = Self {
            routes,
            job_status_paths,
            pools,
            identity: Identity::build(config).map_err(at("jwt"))?,
            limits: Limits::build(config, metrics, previous.map(|p| &p.limits))
                .map_err(at("rate_limits"))?,
            guards: Guards {
                max_body_bytes: s.max_body_bytes.get(),
                max_header_count: s.max_header_count,
                max_uri_bytes: usize::try_from(s.max_uri_bytes.get()).unwrap_or(usize::MAX),
            },
            slow_request: s.slow_request_threshold.get(),
            max_concurrent: s.max_concurrent_requests,
            batch: config.batch.clone(),
        };
        // A kept pool forgets the breakers of routes that are gone (one left
        // open would pin the pool's reported circuit state).
        let used: Vec<_> = policy
            .routes
            .iter()
            .flat_map(|r| [r.breaker.clone(), r.read_breaker.clone()])
            .flatten()
            .collect();
        for pool in policy.pools.iter() {
            pool.retain_breakers(&used);
        }
        Ok(policy)
    }
}

/// Turns a compiler's reason into the one problem of the section at `path`
/// (the reason names the item, e.g. `route api: …`), reported like the
/// problems validation finds.
pub(crate) fn at(path: &'static str) -> impl Fn(String) -> ConfigErrors {
    move |reason| ConfigErrors {
        problems: vec![Problem::new(path, reason)],
    }
}
