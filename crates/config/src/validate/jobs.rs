//! Checks of the job queue and the async routes.

use super::nonzero;
use crate::model::{Config, DedupMode, JobBackend};

const MAX_CONCURRENCY: usize = 1024;
const MAX_BATCH: usize = 1000;

pub(super) fn check(config: &Config, p: &mut impl FnMut(String, String)) {
    let j = &config.jobs;
    let any_async = config.routes.iter().any(|r| r.async_job.is_some());
    if j.max_queued == 0 {
        p("jobs.max_queued".into(), "must be greater than 0".into());
    }
    nonzero(j.result_ttl, "jobs.result_ttl", p);
    nonzero(j.lease, "jobs.lease", p);
    if j.finished_cache_bytes.get() == 0 {
        p(
            "jobs.finished_cache_bytes".into(),
            "must be greater than 0".into(),
        );
    }
    if !j.status_prefix.starts_with('/') || j.status_prefix.trim_end_matches('/').is_empty() {
        p(
            "jobs.status_prefix".into(),
            format!(
                "{:?}: use a path such as \"/perfgate/jobs\"",
                j.status_prefix
            ),
        );
    }
    if any_async && j.backend == JobBackend::Embedded && j.data_dir.trim().is_empty() {
        p(
            "jobs.data_dir".into(),
            "empty: the embedded job store needs a directory".into(),
        );
    }
    if any_async && j.backend == JobBackend::Redis && !config.redis.enabled() {
        p(
            "jobs.backend".into(),
            "\"redis\" needs [redis] url or cluster".into(),
        );
    }
    for (i, r) in config.routes.iter().enumerate() {
        let Some(a) = &r.async_job else { continue };
        let at = |f: &str| format!("routes[{i}].async.{f}");
        if a.concurrency == 0 || a.concurrency > MAX_CONCURRENCY {
            p(
                at("concurrency"),
                format!(
                    "{} is out of range: use 1 to {MAX_CONCURRENCY}",
                    a.concurrency
                ),
            );
        }
        if a.max_attempts == 0 {
            p(at("max_attempts"), "must be at least 1".into());
        }
        nonzero(a.timeout, &at("timeout"), p);
        nonzero(a.rate_per, &at("rate_per"), p);
        nonzero(a.backoff_base, &at("backoff_base"), p);
        if a.backoff_max.get() < a.backoff_base.get() {
            p(
                at("backoff_max"),
                format!(
                    "{} is less than backoff_base ({})",
                    a.backoff_max, a.backoff_base
                ),
            );
        }
        if a.max_body_bytes.get() == 0 {
            p(at("max_body_bytes"), "must be greater than 0".into());
        }
        if a.batch_path.is_some() && (a.batch_max < 1 || a.batch_max > MAX_BATCH) {
            p(
                at("batch_max"),
                format!("{} is out of range: use 1 to {MAX_BATCH}", a.batch_max),
            );
        }
        if a.batch_path.is_some() {
            nonzero(a.batch_window, &at("batch_window"), p);
        }
        for (field, v) in [
            ("status_path", &a.status_path),
            ("upstream_path", &a.upstream_path),
            ("batch_path", &a.batch_path),
        ] {
            if let Some(v) = v
                && (!v.starts_with('/') || v.contains(['?', '#', ' ']))
            {
                p(at(field), format!("{v:?}: use a path starting with /"));
            }
        }
        if !a.unit_cost.is_finite() || a.unit_cost < 0.0 {
            p(
                at("unit_cost"),
                format!("{}: use a number of at least 0", a.unit_cost),
            );
        }
        if a.dedup == DedupMode::Url && a.dedup_url_field.trim().is_empty() {
            p(
                at("dedup_url_field"),
                "empty: dedup = \"url\" needs the JSON field holding the URL".into(),
            );
        }
    }
}
