//! Logs: the access log, the embedded searchable log store, and shipping
//! the same lines to an OTLP collector.

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Duration};

/// Where the access log (one JSON line per request) is written.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AccessLog {
    /// Not written (requests are still searchable in the store).
    #[default]
    Off,
    /// Standard output.
    Stdout,
    /// `logs.access_file`, rotated by size.
    File,
}

/// The `[logs]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Keep every request (and perfgate's own log events) in the embedded,
    /// searchable log store (`/admin/logs/search`).
    pub store: bool,
    /// Directory of the store: `<data_dir>/logs` (created when missing).
    pub data_dir: String,
    /// Lines older than this are deleted (whole hours at a time).
    pub max_age: Duration,
    /// The store's size on disk; the oldest lines go first past it.
    pub max_bytes: ByteSize,
    /// How often new lines are committed (made searchable and durable): a
    /// crash loses at most this much.
    pub commit_interval: Duration,
    /// Lines waiting to be indexed or written; past it new lines are
    /// dropped and counted (a request never waits for its log line).
    pub queue: usize,
    /// The access log: `off` (default), `stdout` or `file`.
    pub access: AccessLog,
    /// The access log file (`access = "file"`).
    pub access_file: String,
    /// Size at which the access log file is rotated (`access.log.1`, …).
    pub access_max_bytes: ByteSize,
    /// Rotated access log files kept.
    pub access_keep: usize,
    /// perfgate's own log events at or above this level also go to the
    /// store (`trace`, `debug`, `info`, `warn`, `error`, or `off`).
    pub app_level: String,
    /// Ship the same lines to an OpenTelemetry collector as OTLP logs.
    pub otlp: OtlpConfig,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            store: true,
            data_dir: "perfgate-data".into(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: ByteSize(1024 * 1024 * 1024),
            commit_interval: Duration::from_millis(500),
            queue: 65_536,
            access: AccessLog::Off,
            access_file: "perfgate-data/access.log".into(),
            access_max_bytes: ByteSize(100 * 1024 * 1024),
            access_keep: 5,
            app_level: "info".into(),
            otlp: OtlpConfig::default(),
        }
    }
}

/// OTLP/HTTP log export (JSON encoding), for when one machine's disk is not
/// enough: a collector forwards the lines to Loki, Elasticsearch,
/// OpenSearch or ClickHouse.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's logs URL, e.g. `http://127.0.0.1:4318/v1/logs`;
    /// empty (default) = off.
    pub endpoint: String,
    /// Lines per request to the collector.
    pub batch: usize,
    /// Longest wait before a partial batch is sent.
    pub interval: Duration,
    /// Deadline of one export request.
    pub timeout: Duration,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            batch: 512,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            service_name: "perfgate".into(),
        }
    }
}
