//! The log pipeline: one thread ("perfgate-log") takes request events and
//! perfgate's own log lines from a bounded queue, turns events into access
//! lines, and hands every line to the access log (stdout or a rotated
//! file), to OTLP and to the store. Nothing here runs on a request's time:
//! the event sink only clones the event into the queue, and a full queue
//! drops it (counted).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use perfgate_config::{AccessLog, LogsConfig};
use perfgate_observe::{EventSink, RequestEvent};

use crate::file::RotatingFile;
use crate::line::LogLine;
use crate::otlp::{Otlp, OtlpSettings, OtlpStats};
use crate::store::{LogStore, StoreError, StoreSettings};

/// Most lines waiting for the store's indexer thread.
const STORE_QUEUE: usize = 8192;

/// Where access lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    /// Not written.
    Off,
    /// Standard output.
    Stdout,
    /// A file rotated by size.
    File {
        /// The file.
        path: PathBuf,
        /// Rotation size.
        max_bytes: u64,
        /// Rotated files kept.
        keep: usize,
    },
}

/// What the pipeline does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The searchable store, when on.
    pub store: Option<StoreSettings>,
    /// The access log.
    pub access: AccessTarget,
    /// OTLP export, when on.
    pub otlp: Option<OtlpSettings>,
    /// Lines waiting for the pipeline thread.
    pub queue: usize,
}

impl Settings {
    /// The settings of `[logs]`.
    pub fn from_config(c: &LogsConfig) -> Self {
        Self {
            store: c.store.then(|| StoreSettings {
                dir: PathBuf::from(&c.data_dir).join("logs"),
                max_age: c.max_age.get(),
                max_bytes: c.max_bytes.get(),
                commit_interval: c.commit_interval.get(),
                // The indexer's queue holds lines by value (~570 bytes, all
                // allocated up front): it only smooths the gap between two
                // commits; `logs.queue` (boxed events) absorbs the bursts.
                queue: c.queue.min(STORE_QUEUE),
                ..StoreSettings::default()
            }),
            access: match c.access {
                AccessLog::Off => AccessTarget::Off,
                AccessLog::Stdout => AccessTarget::Stdout,
                AccessLog::File => AccessTarget::File {
                    path: PathBuf::from(&c.access_file),
                    max_bytes: c.access_max_bytes.get(),
                    keep: c.access_keep,
                },
            },
            otlp: (!c.otlp.endpoint.is_empty()).then(|| OtlpSettings {
                endpoint: c.otlp.endpoint.clone(),
                batch: c.otlp.batch,
                interval: c.otlp.interval.get(),
                timeout: c.otlp.timeout.get(),
                service_name: c.otlp.service_name.clone(),
                queue: c.queue,
            }),
            queue: c.queue.max(1),
        }
    }

    /// Whether there is anything to do at all.
    pub fn any(&self) -> bool {
        self.store.is_some() || self.access != AccessTarget::Off || self.otlp.is_some()
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error("cannot open the log store: {0}")]
    Store(#[from] StoreError),
    /// The access log file could not be opened.
    #[error("cannot open the access log {path}: {source}")]
    Access {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The pipeline thread could not be started.
    #[error("cannot start the log thread: {0}")]
    Thread(std::io::Error),
}

pub(crate) enum Msg {
    Event(Box<RequestEvent>),
    Line(Box<LogLine>),
    Flush(SyncSender<()>),
    Stop,
}

/// Counters of the pipeline.
#[derive(Debug, Default)]
struct Counters {
    /// Lines dropped because the pipeline queue was full.
    dropped_queue: AtomicU64,
    /// Access lines written.
    access_written: AtomicU64,
    /// Access lines that could not be written.
    access_errors: AtomicU64,
    /// Lines the store's queue refused.
    store_refused: AtomicU64,
}

/// What the pipeline has done, for the admin API and health.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineStats {
    /// Lines dropped because the pipeline queue was full.
    pub dropped_queue: u64,
    /// Access lines written.
    pub access_written: u64,
    /// Access lines that could not be written (I/O errors).
    pub access_errors: u64,
    /// Lines the store's own queue refused (the indexer fell behind).
    pub store_refused: u64,
    /// OTLP export, when on.
    pub otlp: Option<OtlpStats>,
}

struct Inner {
    tx: SyncSender<Msg>,
    store: Option<LogStore>,
    counters: Arc<Counters>,
    otlp: Option<Arc<crate::otlp::Counters>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The running log pipeline. Cloning shares it.
#[derive(Clone)]
pub struct Logs(Arc<Inner>);

impl Logs {
    /// Opens the store and the access log and starts the thread.
    pub fn start(settings: Settings) -> Result<Logs, StartError> {
        let store = settings.store.clone().map(LogStore::open).transpose()?;
        let access = match &settings.access {
            AccessTarget::Off => Writer::Off,
            AccessTarget::Stdout => Writer::Stdout(BufWriter::new(std::io::stdout())),
            AccessTarget::File {
                path,
                max_bytes,
                keep,
            } => Writer::File(
                RotatingFile::open(path, *max_bytes, *keep).map_err(|source| {
                    StartError::Access {
                        path: path.clone(),
                        source,
                    }
                })?,
                Vec::with_capacity(64 * 1024),
            ),
        };
        let otlp = settings
            .otlp
            .clone()
            .map(Otlp::start)
            .transpose()
            .map_err(StartError::Thread)?;
        let (tx, rx) = sync_channel(settings.queue.max(1));
        let counters = Arc::new(Counters::default());
        let otlp_counters = otlp.as_ref().map(Otlp::counters);
        let worker = Worker {
            rx,
            access,
            otlp,
            store: store.clone(),
            counters: counters.clone(),
            line: Vec::with_capacity(1024),
        };
        let thread = std::thread::Builder::new()
            .name("perfgate-log".into())
            .spawn(move || worker.run())
            .map_err(StartError::Thread)?;
        Ok(Logs(Arc::new(Inner {
            tx,
            store,
            counters,
            otlp: otlp_counters,
            thread: Mutex::new(Some(thread)),
        })))
    }

    /// The searchable store, when on.
    pub fn store(&self) -> Option<&LogStore> {
        self.0.store.as_ref()
    }

    /// The sink that feeds request events in.
    pub fn sink(&self) -> Arc<dyn EventSink> {
        Arc::new(Sink(self.clone()))
    }

    /// Queues perfgate's own log line (never blocks; counted when full).
    pub(crate) fn push_line(&self, line: LogLine) {
        self.send(Msg::Line(Box::new(line)));
    }

    fn send(&self, msg: Msg) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.0.tx.try_send(msg)
        {
            self.0.counters.dropped_queue.fetch_add(1, Relaxed);
        }
    }

    /// Waits until everything queued before the call is written and
    /// committed (searchable), or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = sync_channel(1);
        if self.0.tx.send(Msg::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }

    /// Flushes and stops the thread (idempotent): at shutdown, after the
    /// event feed has handed over what it had.
    pub fn shutdown(&self) {
        let handle = self
            .0
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = self.0.tx.send(Msg::Stop);
            let _ = h.join();
        }
        if let Some(s) = &self.0.store {
            s.shutdown();
        }
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> PipelineStats {
        let c = &self.0.counters;
        PipelineStats {
            dropped_queue: c.dropped_queue.load(Relaxed),
            access_written: c.access_written.load(Relaxed),
            access_errors: c.access_errors.load(Relaxed),
            store_refused: c.store_refused.load(Relaxed),
            otlp: self.0.otlp.as_ref().map(|o| o.snapshot()),
        }
    }
}

/// The event sink: clones the event into the queue, nothing more.
struct Sink(Logs);

impl EventSink for Sink {
    fn on_event(&self, event: &RequestEvent) {
        self.0.send(Msg::Event(Box::new(event.clone())));
    }
}

enum Writer {
    Off,
    Stdout(BufWriter<std::io::Stdout>),
    /// The file and the lines gathered for it since the last write.
    File(RotatingFile, Vec<u8>),
}

/// The pipeline thread's state.
struct Worker {
    rx: Receiver<Msg>,
    access: Writer,
    otlp: Option<Otlp>,
    store: Option<LogStore>,
    counters: Arc<Counters>,
    /// One line's JSON, reused.
    line: Vec<u8>,
}

/// Messages handled between two writes of the access log.
const BATCH: usize = 1024;

impl Worker {
    fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut next = Some(first);
            let mut n = 0;
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Event(ev) => {
                        let line = crate::access::line_of(&ev);
                        self.write_access(&line);
                        self.ship(line);
                    }
                    Msg::Line(line) => self.ship(*line),
                    Msg::Flush(ack) => {
                        self.flush_access();
                        if let Some(s) = &self.store {
                            let _ = s.flush();
                        }
                        let _ = ack.send(());
                    }
                    Msg::Stop => {
                        self.flush_access();
                        return;
                    }
                }
                n += 1;
                if n < BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            self.flush_access();
        }
    }

    fn ship(&mut self, line: LogLine) {
        if let Some(o) = &self.otlp {
            o.push(&line);
        }
        if let Some(s) = &self.store
            && !s.push(line)
        {
            self.counters.store_refused.fetch_add(1, Relaxed);
        }
    }

    fn write_access(&mut self, line: &LogLine) {
        let buf = match &mut self.access {
            Writer::Off => return,
            Writer::Stdout(_) | Writer::File(..) => &mut self.line,
        };
        buf.clear();
        line.to_json(buf);
        buf.push(b'\n');
        let ok = match &mut self.access {
            Writer::Off => true,
            Writer::Stdout(w) => w.write_all(&self.line).is_ok(),
            Writer::File(_, pending) => {
                pending.extend_from_slice(&self.line);
                true
            }
        };
        if ok {
            self.counters.access_written.fetch_add(1, Relaxed);
        } else {
            self.counters.access_errors.fetch_add(1, Relaxed);
        }
    }

    fn flush_access(&mut self) {
        match &mut self.access {
            Writer::Off => {}
            Writer::Stdout(w) => {
                let _ = w.flush();
            }
            Writer::File(f, pending) => {
                if pending.is_empty() {
                    return;
                }
                if let Err(e) = f.write_lines(pending) {
                    let lines = pending.iter().filter(|b| **b == b'\n').count() as u64;
                    self.counters.access_errors.fetch_add(lines, Relaxed);
                    tracing::warn!(error = %e, lines, "cannot write the access log");
                }
                pending.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::SystemTime;

    use perfgate_observe::{CacheOutcomes, PhaseTimes, RequestKind};

    use super::*;
    use crate::testdir::TempDir;

    fn event(status: u16) -> RequestEvent {
        RequestEvent {
            id: 0,
            at: SystemTime::now(),
            kind: RequestKind::Client,
            route: None,
            template: None,
            method: http::Method::GET,
            target: http::Uri::from_static("/events/1?q=x"),
            status,
            bytes_in: 0,
            bytes_out: 0,
            phases: PhaseTimes::default(),
            cache: CacheOutcomes::default(),
            layer: None,
            detail: None,
            upstream_bytes_saved: 0,
            upstream: None,
            attempts: 0,
            user: None,
            client: IpAddr::from([127, 0, 0, 1]),
            trace_id: None,
            error: None,
        }
    }

    fn file_settings(dir: &TempDir, queue: usize) -> (Settings, PathBuf) {
        let path = dir.path().join("access.log");
        let s = Settings {
            store: None,
            access: AccessTarget::File {
                path: path.clone(),
                max_bytes: 1 << 20,
                keep: 1,
            },
            otlp: None,
            queue,
        };
        (s, path)
    }

    /// Events fed to the sink become JSON lines in the access log, in
    /// order, once flushed.
    #[test]
    fn events_become_json_lines_in_the_access_log() {
        let dir = TempDir::new("pipeline");
        let (s, path) = file_settings(&dir, 1024);
        let logs = Logs::start(s).unwrap();
        let sink = logs.sink();
        for status in [200, 404, 503] {
            sink.on_event(&event(status));
        }
        assert!(logs.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        let statuses: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["status"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(statuses, [200, 404, 503]);
        assert_eq!(logs.stats().access_written, 3);
        logs.shutdown();
        logs.shutdown();
    }

    /// A full queue drops events and counts them; the sink never waits,
    /// and every event is either written or counted as dropped.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let dir = TempDir::new("pipeline-full");
        let (s, path) = file_settings(&dir, 2);
        let logs = Logs::start(s).unwrap();
        let sink = logs.sink();
        let n = 20_000;
        for _ in 0..n {
            sink.on_event(&event(200));
        }
        assert!(logs.flush(Duration::from_secs(10)));
        let st = logs.stats();
        assert!(st.dropped_queue > 0, "{st:?}");
        let written = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert_eq!(written, st.access_written);
        assert_eq!(written + st.dropped_queue, n);
        logs.shutdown();
    }
}
