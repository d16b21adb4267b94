//! Checks of the `[logs]` section.

use super::nonzero;
use crate::model::{AccessLog, Config};

/// The longest commit interval: past it a line is not searchable within
/// the promised second, nor is a crash's loss bounded by it.
const MAX_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Fewest bytes the store may keep (one partition's worth of small lines).
const MIN_STORE_BYTES: u64 = 16 * 1024 * 1024;

pub(super) fn check(config: &Config, p: &mut impl FnMut(String, String)) {
    let l = &config.logs;
    if l.store && l.data_dir.trim().is_empty() {
        p(
            "logs.data_dir".into(),
            "empty: the log store needs a directory (or set logs.store = false)".into(),
        );
    }
    nonzero(l.max_age, "logs.max_age", p);
    if l.max_bytes.get() < MIN_STORE_BYTES {
        p(
            "logs.max_bytes".into(),
            format!(
                "{} bytes is too small: use at least 16MiB",
                l.max_bytes.get()
            ),
        );
    }
    nonzero(l.commit_interval, "logs.commit_interval", p);
    if l.commit_interval.get() > MAX_COMMIT_INTERVAL {
        p(
            "logs.commit_interval".into(),
            "at most 10s: lines become searchable (and durable) only at a commit".into(),
        );
    }
    if l.queue == 0 {
        p("logs.queue".into(), "must be greater than 0".into());
    }
    if l.access == AccessLog::File {
        if l.access_file.trim().is_empty() {
            p(
                "logs.access_file".into(),
                "empty: access = \"file\" needs a file".into(),
            );
        }
        if l.access_max_bytes.get() < 4096 {
            p(
                "logs.access_max_bytes".into(),
                "too small: use at least 4KiB".into(),
            );
        }
    }
    let o = &l.otlp;
    if !o.endpoint.is_empty() {
        if let Err(e) = super::parse_upstream_url(&o.endpoint) {
            p(
                "logs.otlp.endpoint".into(),
                format!("{e} (e.g. \"http://127.0.0.1:4318/v1/logs\")"),
            );
        }
        if o.batch == 0 || o.batch > 10_000 {
            p(
                "logs.otlp.batch".into(),
                format!("{} is out of range: use 1 to 10000", o.batch),
            );
        }
        nonzero(o.interval, "logs.otlp.interval", p);
        nonzero(o.timeout, "logs.otlp.timeout", p);
    }
}
