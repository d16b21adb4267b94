//! The log store: time-partitioned tantivy indexes under one directory, fed
//! by one indexer thread through a bounded queue.
//!
//! - [`partition`]: one hour's index and its directory name;
//! - [`indexer`]: the thread that adds, commits and enforces retention;
//! - [`search`]: newest-first search over partitions, with a cursor.
//!
//! Invariants: only the indexer thread writes (one `IndexWriter` per
//! partition); readers are reloaded after each commit, so a line is
//! searchable one commit interval after `push`; searches hold `Arc`s of the
//! partitions they read, so retention can remove a partition under them.

mod indexer;
pub(crate) mod partition;
pub(crate) mod search;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::line::LogLine;
use crate::query::{FieldKind, ParseError};
use crate::schema::Fields;
use crate::translate::Translator;
use partition::Partition;

pub use search::{MAX_LIMIT, SearchPage, SearchRequest};

/// Where and how much to keep.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The directory holding one sub-directory per partition (created 0700).
    pub dir: PathBuf,
    /// Partitions whose hour ended longer ago than this are removed.
    pub max_age: Duration,
    /// The oldest partitions are removed while the store is larger than this.
    pub max_bytes: u64,
    /// How often added lines are committed (made durable and searchable).
    pub commit_interval: Duration,
    /// Lines waiting for the indexer; `push` drops beyond this.
    pub queue: usize,
    /// The indexing memory of a partition's writer (tantivy needs at least 15 MB).
    pub writer_memory: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            dir: PathBuf::from("logs"),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
            commit_interval: Duration::from_millis(500),
            queue: 65_536,
            writer_memory: 32 << 20,
        }
    }
}

/// Opening or writing the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the log directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the log indexer: {0}")]
    Thread(std::io::Error),
    #[error("the log store is shut down")]
    Closed,
    #[error("cannot write the log store: {0}")]
    Write(String),
}

/// A search, analytics or export request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("invalid query at character {}: {}", .0.position, .0.message)]
    Query(ParseError),
    #[error("invalid cursor")]
    Cursor,
    #[error("invalid range: {0}")]
    Range(String),
    #[error("cannot read the log store: {0}")]
    Read(String),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError::Read(e.to_string())
    }
}

/// Whether the store is writing what it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    Warn(String),
}

/// A snapshot of the store's counters.
#[derive(Debug, Clone)]
pub struct StoreStats {
    /// Lines committed since the store was opened.
    pub indexed: u64,
    pub partitions: usize,
    pub disk_bytes: u64,
    /// Lines `push` refused because the queue was full.
    pub dropped_full: u64,
    /// Lines lost to write errors (disk full, I/O).
    pub dropped_write: u64,
    pub last_commit: Option<SystemTime>,
    pub health: Health,
    pub oldest_id: Option<u64>,
    pub newest_id: Option<u64>,
}

/// What the indexer thread is asked to do.
// Lines travel by value, unboxed: `push` must not allocate.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Line(LogLine),
    /// Commit everything received so far, then answer.
    Flush(SyncSender<Result<(), StoreError>>),
    Shutdown,
}

/// What searches and the indexer share.
pub(crate) struct Shared {
    pub settings: StoreSettings,
    pub fields: Fields,
    pub translator: Translator,
    /// Sorted by name, i.e. by time.
    pub partitions: RwLock<Vec<Arc<Partition>>>,
    pub indexed: AtomicU64,
    pub dropped_full: AtomicU64,
    pub dropped_write: AtomicU64,
    /// Microseconds since the epoch; 0 = never.
    pub last_commit_us: AtomicU64,
    pub health: Mutex<Option<String>>,
}

impl Shared {
    /// The partitions as of now (the list may change right after).
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_health(&self, warning: Option<String>) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = warning;
    }
}

/// The embedded log store; clones share it. Dropping the last clone shuts it down.
#[derive(Clone)]
pub struct LogStore(Arc<Inner>);

struct Inner {
    shared: Arc<Shared>,
    tx: SyncSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LogStore {
    /// Opens (or creates) the store in `settings.dir`, reopening its partitions,
    /// and starts the indexer thread.
    pub fn open(settings: StoreSettings) -> Result<LogStore, StoreError> {
        partition::create_private_dir(&settings.dir).map_err(|source| StoreError::Dir {
            path: settings.dir.clone(),
            source,
        })?;
        let fields = Fields::new();
        let (partitions, broken) =
            indexer::open_partitions(&settings.dir, &fields).map_err(|source| StoreError::Dir {
                path: settings.dir.clone(),
                source,
            })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let shared = Arc::new(Shared {
            translator: Translator::new(fields.clone()),
            fields,
            settings,
            partitions: RwLock::new(partitions),
            indexed: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_write: AtomicU64::new(0),
            last_commit_us: AtomicU64::new(0),
            health: Mutex::new(None),
        });
        let indexer = indexer::Indexer::new(shared.clone(), rx, broken);
        let thread = std::thread::Builder::new()
            .name("perfgate-logs".into())
            .spawn(move || indexer.run())
            .map_err(StoreError::Thread)?;
        Ok(LogStore(Arc::new(Inner {
            shared,
            tx,
            thread: Mutex::new(Some(thread)),
        })))
    }

    /// Queues a line for indexing. Never blocks: a full queue (or a shut-down
    /// store) drops the line, counts it and returns false.
    pub fn push(&self, line: LogLine) -> bool {
        match self.0.tx.try_send(Msg::Line(line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.0.shared.dropped_full.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Like [`LogStore::push`], but a full queue hands the line back (not
    /// counted as dropped), for callers that can wait and retry.
    // The line comes back by value, unboxed, for the reason it travels so.
    #[allow(clippy::result_large_err)]
    pub fn try_push(&self, line: LogLine) -> Result<(), LogLine> {
        match self.0.tx.try_send(Msg::Line(line)) {
            Ok(()) => Ok(()),
            Err(
                TrySendError::Full(Msg::Line(line)) | TrySendError::Disconnected(Msg::Line(line)),
            ) => Err(line),
            Err(_) => Ok(()),
        }
    }

    /// Returns once everything pushed before the call is committed and searchable.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        self.0
            .tx
            .send(Msg::Flush(ack))
            .map_err(|_| StoreError::Closed)?;
        done.recv().map_err(|_| StoreError::Closed)?
    }

    /// Commits what is queued and stops the indexer thread; later calls do nothing.
    pub fn shutdown(&self) {
        self.0.shutdown();
    }

    /// The kind of a field of the query language, `None` if there is no such field.
    pub fn field_kind(name: &str) -> Option<FieldKind> {
        crate::schema::field_kind(name)
    }

    /// Lines matching `req`, newest first, one page at a time.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchPage, SearchError> {
        search::search(&self.0.shared, req)
    }

    /// Request counts, errors and latency percentiles per time bucket.
    pub fn analytics(
        &self,
        req: &crate::analytics::AnalyticsRequest,
    ) -> Result<crate::analytics::Analytics, SearchError> {
        crate::analytics::analytics(&self.0.shared, req)
    }

    /// Every matching line, newest first, read page by page as the iterator advances.
    pub fn export(
        &self,
        req: &crate::export::ExportRequest,
    ) -> Result<crate::export::Export, SearchError> {
        crate::export::Export::new(self.0.shared.clone(), req)
    }

    pub fn stats(&self) -> StoreStats {
        let shared = &self.0.shared;
        let partitions = shared.partitions();
        let last = shared.last_commit_us.load(Ordering::Relaxed);
        StoreStats {
            indexed: shared.indexed.load(Ordering::Relaxed),
            partitions: partitions.len(),
            disk_bytes: partitions
                .iter()
                .map(|p| p.bytes.load(Ordering::Relaxed))
                .sum(),
            dropped_full: shared.dropped_full.load(Ordering::Relaxed),
            dropped_write: shared.dropped_write.load(Ordering::Relaxed),
            last_commit: (last > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_micros(last)),
            health: match shared
                .health
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
            {
                None => Health::Ok,
                Some(w) => Health::Warn(w),
            },
            oldest_id: partitions.iter().find_map(|p| p.id_bounds()).map(|b| b.0),
            newest_id: partitions
                .iter()
                .rev()
                .find_map(|p| p.id_bounds())
                .map(|b| b.1),
        }
    }
}

impl Inner {
    fn shutdown(&self) {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // The indexer drains the queue up to this message, commits and exits.
            let _ = self.tx.send(Msg::Shutdown);
            if thread.join().is_err() {
                tracing::warn!("the log indexer thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}
