//! The indexer thread: adds lines to the partition of their hour, commits
//! every commit interval, and removes partitions past the age or size budget.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tantivy::{IndexWriter, TantivyDocument};

use super::partition::{HOUR_US, Partition, parse_partition_name, partition_name};
use super::{Msg, Shared, StoreError};
use crate::line::LogLine;
use crate::schema::Fields;

/// How often retention runs when no partition rolls.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// A partition larger than this share of the size budget is closed and a new one
/// started for the same hour, so that size retention removes a fraction of the
/// logs at a time rather than the whole current hour.
const ROLL_FRACTION: u64 = 8;
/// Writers of partitions not written for this long are closed.
const WRITER_IDLE: Duration = Duration::from_secs(120);

/// Opens the partitions found in `dir`; an unreadable one is skipped (and
/// logged) and its name returned in the second list so that it is not reused.
pub fn open_partitions(
    dir: &Path,
    fields: &Fields,
) -> std::io::Result<(Vec<Arc<Partition>>, HashSet<String>)> {
    let mut parts = Vec::new();
    let mut broken = HashSet::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((hour, _)) = parse_partition_name(&name) else {
            continue;
        };
        match Partition::open(&entry.path(), &name, hour, fields) {
            Ok(p) => parts.push(Arc::new(p)),
            Err(e) => {
                tracing::warn!(partition = %name, error = %e, "skipping an unreadable log partition");
                broken.insert(name);
            }
        }
    }
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((parts, broken))
}

struct Writer {
    part: Arc<Partition>,
    writer: IndexWriter<TantivyDocument>,
    /// Lines added since the last commit.
    pending: u64,
    last_used: Instant,
}

pub struct Indexer {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    writers: HashMap<String, Writer>,
    /// Partitions found unreadable at open: never written to.
    broken: HashSet<String>,
    /// The partition the last line went to, by hour (the common case: the same one).
    current: Option<(u64, String)>,
    /// When the first line since the last commit was added.
    dirty_since: Option<Instant>,
    next_retention: Instant,
    /// The last write error since the last flush: a flush reports it.
    unflushed_error: Option<String>,
    json: Vec<u8>,
}

impl Indexer {
    pub fn new(shared: Arc<Shared>, rx: Receiver<Msg>, broken: HashSet<String>) -> Indexer {
        Indexer {
            shared,
            rx,
            writers: HashMap::new(),
            broken,
            current: None,
            dirty_since: None,
            // Retention runs right away: the store may have been closed for days.
            next_retention: Instant::now(),
            unflushed_error: None,
            json: Vec::with_capacity(1024),
        }
    }

    pub fn run(mut self) {
        let interval = self.shared.settings.commit_interval;
        loop {
            let deadline = match self.dirty_since {
                Some(t) => (t + interval).min(self.next_retention),
                None => self.next_retention,
            };
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Msg::Line(line)) => self.add(line),
                Ok(Msg::Flush(ack)) => {
                    let result = self.commit();
                    let earlier = self.unflushed_error.take();
                    let result = result.and(earlier.map_or(Ok(()), |e| Err(StoreError::Write(e))));
                    self.retention();
                    let _ = ack.send(result);
                }
                Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.dirty_since.is_some_and(|t| t.elapsed() >= interval) {
                let _ = self.commit();
            }
            if Instant::now() >= self.next_retention {
                self.retention();
            }
        }
        let _ = self.commit();
        self.writers.clear();
    }

    fn add(&mut self, mut line: LogLine) {
        line.bound();
        self.json.clear();
        line.to_json(&mut self.json);
        let doc = self.shared.fields.document(&line, &self.json);
        let name = match self.writer_for(line.id / HOUR_US) {
            Ok(name) => name,
            Err(e) => return self.write_failed(1, &e),
        };
        let Some(w) = self.writers.get_mut(&name) else {
            return;
        };
        match w.writer.add_document(doc) {
            Ok(_) => {
                w.pending += 1;
                self.dirty_since.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                // The writer is dead (its thread failed to write a segment): the
                // lines it held since the last commit are lost with this one.
                let e = e.to_string();
                let lost = self.writers.remove(&name).map_or(0, |w| w.pending);
                self.current = None;
                self.write_failed(lost + 1, &e);
            }
        }
    }

    /// The name of the partition (with an open writer) for lines of `hour`.
    fn writer_for(&mut self, hour: u64) -> Result<String, String> {
        if let Some((h, name)) = &self.current
            && *h == hour
            && self.writers.contains_key(name)
        {
            let name = name.clone();
            if !self.should_roll(&name) {
                return Ok(name);
            }
        }
        let newest = self
            .shared
            .partitions()
            .into_iter()
            .rev()
            .find(|p| p.hour == hour);
        let part = match newest {
            Some(p) if p.bytes.load(Ordering::Relaxed) <= self.roll_bytes() => p,
            newest => {
                let seq = newest
                    .as_ref()
                    .and_then(|p| parse_partition_name(&p.name))
                    .map_or(0, |(_, s)| s + 1);
                let Some(part) = self.create(hour, seq)? else {
                    // No name left for this hour: keep writing to the last partition.
                    return newest
                        .map(|p| self.open_writer(p))
                        .transpose()?
                        .ok_or_else(|| "no partition".into());
                };
                part
            }
        };
        let name = self.open_writer(part)?;
        self.current = Some((hour, name.clone()));
        Ok(name)
    }

    fn roll_bytes(&self) -> u64 {
        (self.shared.settings.max_bytes / ROLL_FRACTION).max(1)
    }

    fn should_roll(&self, name: &str) -> bool {
        self.writers
            .get(name)
            .is_some_and(|w| w.part.bytes.load(Ordering::Relaxed) > self.roll_bytes())
    }

    /// Creates the first free partition of `hour` from sequence number `seq`;
    /// `None` when the hour has no name left.
    fn create(&mut self, hour: u64, mut seq: u32) -> Result<Option<Arc<Partition>>, String> {
        while self.broken.contains(&partition_name(hour, seq)) {
            seq += 1;
        }
        if seq > 999 {
            return Ok(None);
        }
        let name = partition_name(hour, seq);
        let dir = self.shared.settings.dir.join(&name);
        let part = Arc::new(
            Partition::create(&dir, &name, hour, &self.shared.fields).map_err(|e| e.to_string())?,
        );
        let mut parts = self
            .shared
            .partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let at = parts.partition_point(|p| p.name < name);
        parts.insert(at, part.clone());
        drop(parts);
        // A new partition is a good time to apply the size budget.
        self.next_retention = Instant::now();
        Ok(Some(part))
    }

    fn open_writer(&mut self, part: Arc<Partition>) -> Result<String, String> {
        let name = part.name.clone();
        if let Some(w) = self.writers.get_mut(&name) {
            w.last_used = Instant::now();
            return Ok(name);
        }
        let memory = self.shared.settings.writer_memory.max(15_000_000);
        let writer = part
            .index
            .writer_with_num_threads(1, memory)
            .map_err(|e| e.to_string())?;
        self.writers.insert(
            name.clone(),
            Writer {
                part,
                writer,
                pending: 0,
                last_used: Instant::now(),
            },
        );
        Ok(name)
    }

    fn write_failed(&mut self, lines: u64, error: &str) {
        self.unflushed_error = Some(error.to_string());
        self.shared
            .dropped_write
            .fetch_add(lines, Ordering::Relaxed);
        let message = format!("cannot write the log store: {error}");
        let mut health = self
            .shared
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if health.as_deref() != Some(message.as_str()) {
            tracing::warn!(error = %error, "cannot write the log store; dropping lines");
            *health = Some(message);
        }
    }

    /// Commits every partition with new lines and reloads its reader. A failed
    /// commit loses that partition's batch (counted) and reopens its writer on
    /// the next line.
    fn commit(&mut self) -> Result<(), StoreError> {
        self.dirty_since = None;
        let mut failed = None;
        let mut committed = false;
        let mut lost = Vec::new();
        for (name, w) in &mut self.writers {
            if w.pending == 0 {
                continue;
            }
            let pending = std::mem::take(&mut w.pending);
            match w.writer.commit() {
                Ok(_) => {
                    committed = true;
                    self.shared.indexed.fetch_add(pending, Ordering::Relaxed);
                    if let Err(e) = w.part.reader.reload() {
                        tracing::warn!(partition = %name, error = %e, "cannot reload a log partition");
                    }
                    w.part.measure();
                }
                Err(e) => {
                    lost.push((name.clone(), pending, e.to_string()));
                }
            }
        }
        for (name, pending, error) in lost {
            self.writers.remove(&name);
            self.write_failed(pending, &error);
            failed = Some(error);
        }
        if let Some(error) = failed {
            self.current = None;
            return Err(StoreError::Write(error));
        }
        if committed {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.shared
                .last_commit_us
                .store(now.as_micros() as u64, Ordering::Relaxed);
            self.shared.set_health(None);
        }
        Ok(())
    }

    /// Removes partitions older than the age budget, then the oldest while the
    /// store is over the size budget (keeping the newest), and closes idle writers.
    fn retention(&mut self) {
        self.next_retention = Instant::now() + RETENTION_EVERY;
        let now_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let max_age_us = self.shared.settings.max_age.as_micros() as u64;
        let cutoff = now_us.saturating_sub(max_age_us);
        let parts = self.shared.partitions();
        let mut total: u64 = parts.iter().map(|p| p.measure()).sum();
        let mut keep = parts.len();
        for p in &parts {
            let expired = (p.hour + 1) * HOUR_US <= cutoff;
            let over = total > self.shared.settings.max_bytes && keep > 1;
            if !expired && !over {
                // Partitions are sorted by time: younger ones are not expired either.
                break;
            }
            total -= p.bytes.load(Ordering::Relaxed);
            keep -= 1;
            self.remove(p);
        }
        let idle: Vec<String> = self
            .writers
            .iter()
            .filter(|(_, w)| w.pending == 0 && w.last_used.elapsed() >= WRITER_IDLE)
            .map(|(n, _)| n.clone())
            .collect();
        for name in idle {
            self.writers.remove(&name);
        }
    }

    fn remove(&mut self, part: &Arc<Partition>) {
        if let Some(w) = self.writers.remove(&part.name)
            && w.pending > 0
        {
            // Lines not yet committed go with their partition.
            self.shared
                .dropped_write
                .fetch_add(w.pending, Ordering::Relaxed);
        }
        if self.current.as_ref().is_some_and(|(_, n)| *n == part.name) {
            self.current = None;
        }
        self.shared
            .partitions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|p| p.name != part.name);
        // Searches still holding the partition keep reading it: its files stay
        // mapped until they let go.
        if let Err(e) = std::fs::remove_dir_all(&part.dir) {
            tracing::warn!(partition = %part.name, error = %e, "cannot remove a log partition");
        }
        tracing::info!(partition = %part.name, "removed a log partition (retention)");
    }
}
