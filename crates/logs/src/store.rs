//! TEMPORARY stand-in for the log store (replaced at merge).
#![allow(missing_docs, clippy::unused_self)]

use std::path::PathBuf;
use std::time::Duration;

use crate::line::LogLine;

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub dir: PathBuf,
    pub max_age: Duration,
    pub max_bytes: u64,
    pub commit_interval: Duration,
    pub queue: usize,
    pub writer_memory: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("perfgate-data/logs"),
            max_age: Duration::from_secs(7 * 86400),
            max_bytes: 1 << 30,
            commit_interval: Duration::from_millis(500),
            queue: 65536,
            writer_memory: 32 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

#[derive(Clone)]
pub struct LogStore;

impl LogStore {
    pub fn open(_s: StoreSettings) -> Result<LogStore, StoreError> {
        Ok(LogStore)
    }
    pub fn push(&self, _line: LogLine) -> bool {
        true
    }
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    pub fn shutdown(&self) {}
}
