//! The embedded store: one redb file in `jobs.data_dir`, owned by this
//! instance (redb locks it). Crash-safe: a submission is answered only
//! after its transaction is committed with `fsync`.
//!
//! One writer thread applies every change. It takes all the operations
//! waiting when it wakes and commits them in one transaction (group
//! commit), so many concurrent submissions share one `fsync`. Reads
//! (status lookups) use their own read transactions on the caller's thread
//! and never wait for the writer.
//!
//! Tables (keys are bytes ordered as written):
//! - `jobs`: id → encoded [`Job`];
//! - `ready`: route NUL, priority (descending), sequence → id: the queue;
//! - `fifo`: route NUL, sequence → the `ready` key: the same queue by age,
//!   so every fifth claim takes the oldest job (no starvation);
//! - `delayed`: due time, id → id: retries waiting for their backoff;
//! - `dedup`: de-duplication key → id;
//! - `expiry`: time, id → id: finished jobs to delete after `result_ttl`.
//!
//! After a crash, jobs found `running` were interrupted: they go back to
//! the queue (at-least-once), keeping their attempt count.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::error::StoreError;
use crate::job::{Counts, Submitted};
use crate::job::{Job, JobState};
use perfgate_runtime::clock::Clock;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const READY: TableDefinition<&[u8], &str> = TableDefinition::new("ready");
const FIFO: TableDefinition<&[u8], &[u8]> = TableDefinition::new("fifo");
const DELAYED: TableDefinition<&[u8], &str> = TableDefinition::new("delayed");
const DEDUP: TableDefinition<&str, &str> = TableDefinition::new("dedup");
const EXPIRY: TableDefinition<&[u8], &str> = TableDefinition::new("expiry");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Every fifth claim takes the oldest job instead of the most urgent.
const FIFO_EVERY: u64 = 5;
/// Finished jobs deleted per sweep at most (keeps one commit short).
const SWEEP_MAX: usize = 1000;

enum Op {
    Submit {
        job: Box<Job>,
        /// `job.encode()`, made by the caller (off the writer thread).
        encoded: Vec<u8>,
        max_queued: usize,
        reply: oneshot::Sender<Result<Submitted, StoreError>>,
    },
    Claim {
        route: String,
        reply: oneshot::Sender<Result<Option<Job>, StoreError>>,
    },
    Finish {
        job: Box<Job>,
        result_ttl_ms: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Requeue {
        id: String,
        reply: oneshot::Sender<Result<Job, StoreError>>,
    },
    Discard {
        id: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// Handle to the embedded store; cheap to clone.
#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
    ops: Sender<Op>,
    counts: Arc<Mutex<Counts>>,
    clock: Clock,
}

impl Embedded {
    /// Opens (or creates) `dir/jobs.redb`, puts interrupted jobs back in
    /// the queue and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Embedded, StoreError> {
        Self::open_with_clock(dir, Clock::system())
    }

    /// Like [`open`](Self::open), reading time (due retries, leases,
    /// result retention) from `clock`.
    pub fn open_with_clock(dir: &Path, clock: Clock) -> Result<Embedded, StoreError> {
        let path = private_file(dir, "jobs.redb")?;
        let db = Database::create(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let db = Arc::new(db);
        let counts = recover(&db)?;
        let counts = Arc::new(Mutex::new(counts));
        let (ops, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            counts: counts.clone(),
            claims: AtomicU64::new(0),
            clock: clock.clone(),
        };
        std::thread::Builder::new()
            .name("perfgate-jobs-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Embedded {
            db,
            ops,
            counts,
            clock,
        })
    }

    /// The clock this store reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    async fn call<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(op(tx))
            .map_err(|_| StoreError::Unavailable("the job store has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the job store has stopped".into()))?
    }

    /// Stores a new job, or returns the live job it duplicates.
    pub async fn submit(&self, job: Job, max_queued: usize) -> Result<Submitted, StoreError> {
        let encoded = job.encode();
        self.call(|reply| Op::Submit {
            job: Box::new(job),
            encoded,
            max_queued,
            reply,
        })
        .await
    }

    /// Takes the next job of `route` (marked running, attempt counted).
    pub async fn claim(&self, route: &str) -> Result<Option<Job>, StoreError> {
        let route = route.to_string();
        self.call(|reply| Op::Claim { route, reply }).await
    }

    /// Writes a job a worker finished with (terminal, or queued for a retry).
    pub async fn finish(&self, job: Job, result_ttl_ms: u64) -> Result<(), StoreError> {
        self.call(|reply| Op::Finish {
            job: Box::new(job),
            result_ttl_ms,
            reply,
        })
        .await
    }

    /// Puts a dead (or failed) job back in the queue with fresh attempts.
    pub async fn requeue(&self, id: &str) -> Result<Job, StoreError> {
        let id = id.to_string();
        self.call(|reply| Op::Requeue { id, reply }).await
    }

    /// Deletes a job that is not running.
    pub async fn discard(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.call(|reply| Op::Discard { id, reply }).await
    }

    /// One job, read without waiting for the writer.
    pub fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let txn = self.db.begin_read()?;
        let jobs = match txn.open_table(JOBS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match jobs.get(id)? {
            Some(v) => Job::decode(v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Jobs in `state` (any route), oldest first, at most `limit`.
    pub fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, StoreError> {
        let txn = self.db.begin_read()?;
        let jobs = txn.open_table(JOBS)?;
        let mut out = Vec::new();
        for entry in jobs.iter()? {
            let (_, v) = entry?;
            let job = Job::decode(v.value())?;
            if job.state == state {
                out.push(job);
            }
        }
        out.sort_by_key(|j| j.created_ms);
        out.truncate(limit);
        Ok(out)
    }

    /// Jobs per route and state.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `dir/name`, made ready to hold the jobs (request bodies with their
/// credentials, results): the directory is created owner-only (0700) when
/// missing and refused when anyone may write to it (they could replace the
/// file); the file is created, or narrowed, to 0600.
fn private_file(dir: &Path, name: &str) -> Result<std::path::PathBuf, StoreError> {
    let failed = |what: &str, p: &Path, e: std::io::Error| {
        StoreError::Unavailable(format!("cannot {what} {}: {e}", p.display()))
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| failed("create", dir, e))?;
    let path = dir.join(name);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let meta = std::fs::metadata(dir).map_err(|e| failed("read", dir, e))?;
        if meta.permissions().mode() & 0o002 != 0 {
            return Err(StoreError::Unavailable(format!(
                "{} is world-writable; use a directory only perfgate's user can write to",
                dir.display()
            )));
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| failed("create", &path, e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| failed("restrict", &path, e))?;
    }
    Ok(path)
}

fn ready_key(route: &str, priority: i32, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(route.len() + 13);
    k.extend_from_slice(route.as_bytes());
    k.push(0);
    // Descending priority: flip the sign bit (order as unsigned), then invert.
    let ordered = (priority as u32) ^ 0x8000_0000;
    k.extend_from_slice(&(!ordered).to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn fifo_key(route: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(route.len() + 9);
    k.extend_from_slice(route.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn time_key(ms: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + id.len());
    k.extend_from_slice(&ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The byte range of keys that start with `route NUL`.
fn route_range(route: &str) -> (Vec<u8>, Vec<u8>) {
    let mut lo = route.as_bytes().to_vec();
    lo.push(0);
    let mut hi = route.as_bytes().to_vec();
    hi.push(1);
    (lo, hi)
}

/// Puts running jobs back in the queue and counts the rest.
fn recover(db: &Database) -> Result<Counts, StoreError> {
    let txn = db.begin_write()?;
    let mut counts = Counts::default();
    {
        let mut jobs = txn.open_table(JOBS)?;
        let mut ready = txn.open_table(READY)?;
        let mut fifo = txn.open_table(FIFO)?;
        let mut meta = txn.open_table(META)?;
        // Create the other tables so readers find them.
        txn.open_table(DELAYED)?;
        txn.open_table(DEDUP)?;
        txn.open_table(EXPIRY)?;
        let mut seq = meta.get("seq")?.map_or(0, |v| v.value());
        let mut interrupted = Vec::new();
        for entry in jobs.iter()? {
            let (k, v) = entry?;
            let job = Job::decode(v.value())?;
            if job.state == JobState::Running {
                interrupted.push((k.value().to_string(), job));
            } else {
                counts.add(&job.route, job.state, 1);
            }
        }
        for (id, mut job) in interrupted {
            job.state = JobState::Queued;
            job.last_error = Some("interrupted: perfgate stopped during the attempt".into());
            seq += 1;
            let rk = ready_key(&job.route, job.priority, seq);
            ready.insert(rk.as_slice(), id.as_str())?;
            fifo.insert(fifo_key(&job.route, seq).as_slice(), rk.as_slice())?;
            jobs.insert(id.as_str(), job.encode().as_slice())?;
            counts.add(&job.route, JobState::Queued, 1);
        }
        meta.insert("seq", seq)?;
        if counts.total(JobState::Queued) > 0 {
            tracing::info!(
                queued = counts.total(JobState::Queued),
                "job store opened: queued jobs resume"
            );
        }
    }
    txn.commit()?;
    Ok(counts)
}

struct Writer {
    db: Arc<Database>,
    counts: Arc<Mutex<Counts>>,
    claims: AtomicU64,
    clock: Clock,
}

/// What to send back once the transaction is committed.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

impl Writer {
    fn run(self, rx: Receiver<Op>) {
        let mut last_sweep = 0u64;
        loop {
            let first = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch: Vec<Op> = first.into_iter().collect();
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let now = self.clock.unix_ms();
            let sweep = now.saturating_sub(last_sweep) >= 100;
            if batch.is_empty() && !sweep {
                continue;
            }
            if sweep {
                last_sweep = now;
            }
            self.apply(batch, sweep, now);
        }
    }

    /// Applies a batch in one transaction; replies after the commit.
    fn apply(&self, batch: Vec<Op>, sweep: bool, now: u64) {
        let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
        let mut delta = Counts::default();
        let result = (|| -> Result<bool, StoreError> {
            let txn = self.db.begin_write()?;
            let mut changed = false;
            {
                let mut t = Tables {
                    jobs: txn.open_table(JOBS)?,
                    ready: txn.open_table(READY)?,
                    fifo: txn.open_table(FIFO)?,
                    delayed: txn.open_table(DELAYED)?,
                    dedup: txn.open_table(DEDUP)?,
                    expiry: txn.open_table(EXPIRY)?,
                    meta: txn.open_table(META)?,
                    seq: None,
                };
                if sweep {
                    changed |= t.sweep(now, &mut delta)?;
                }
                let queued_now = {
                    let c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
                    c.total(JobState::Queued) + c.total(JobState::Running)
                };
                for op in batch {
                    changed = true;
                    match op {
                        Op::Submit {
                            job,
                            encoded,
                            max_queued,
                            reply,
                        } => {
                            let live = queued_now as i64
                                + delta.total_signed(JobState::Queued)
                                + delta.total_signed(JobState::Running);
                            let r = t.submit(*job, &encoded, max_queued, live, &mut delta, now);
                            replies.push(after(reply, r));
                        }
                        Op::Claim { route, reply } => {
                            // Counted over jobs handed out, so idle polls do
                            // not decide which claim is the oldest-first one.
                            let fifo =
                                self.claims.load(Ordering::Relaxed) % FIFO_EVERY == FIFO_EVERY - 1;
                            let r = t.claim(&route, fifo, &mut delta, now);
                            if matches!(r, Ok(Some(_))) {
                                self.claims.fetch_add(1, Ordering::Relaxed);
                            }
                            replies.push(after(reply, r));
                        }
                        Op::Finish {
                            job,
                            result_ttl_ms,
                            reply,
                        } => {
                            let r = t.finish(*job, result_ttl_ms, &mut delta, now);
                            replies.push(after(reply, r));
                        }
                        Op::Requeue { id, reply } => {
                            let r = t.requeue(&id, &mut delta);
                            replies.push(after(reply, r));
                        }
                        Op::Discard { id, reply } => {
                            let r = t.discard(&id, &mut delta);
                            replies.push(after(reply, r));
                        }
                    }
                }
                t.flush()?;
            }
            if changed {
                txn.commit()?;
            } else {
                txn.abort()?;
            }
            Ok(changed)
        })();
        match result {
            Ok(_) => {
                self.counts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .merge(&delta);
                for r in replies {
                    r(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "job store transaction failed");
                for r in replies {
                    r(Some(&e));
                }
            }
        }
    }
}

/// A reply to send once the batch's fate is known: the operation's own
/// result if the commit succeeded, the commit's error otherwise.
fn after<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, StoreError>>,
    r: Result<T, StoreError>,
) -> Reply {
    Box::new(move |commit_error| {
        let out = match commit_error {
            None => r,
            Some(e) => Err(StoreError::Unavailable(e.to_string())),
        };
        let _ = reply.send(out);
    })
}

struct Tables<'t> {
    jobs: redb::Table<'t, &'static str, &'static [u8]>,
    ready: redb::Table<'t, &'static [u8], &'static str>,
    fifo: redb::Table<'t, &'static [u8], &'static [u8]>,
    delayed: redb::Table<'t, &'static [u8], &'static str>,
    dedup: redb::Table<'t, &'static str, &'static str>,
    expiry: redb::Table<'t, &'static [u8], &'static str>,
    meta: redb::Table<'t, &'static str, u64>,
    /// The queue sequence, read once per transaction and written back by
    /// [`Tables::flush`].
    seq: Option<u64>,
}

impl Tables<'_> {
    fn next_seq(&mut self) -> Result<u64, StoreError> {
        let seq = match self.seq {
            Some(s) => s,
            None => self.meta.get("seq")?.map_or(0, |v| v.value()),
        } + 1;
        self.seq = Some(seq);
        Ok(seq)
    }

    /// Writes back what is kept in memory during the transaction.
    fn flush(&mut self) -> Result<(), StoreError> {
        if let Some(seq) = self.seq {
            self.meta.insert("seq", seq)?;
        }
        Ok(())
    }

    fn load(&self, id: &str) -> Result<Option<Job>, StoreError> {
        match self.jobs.get(id)? {
            Some(v) => Job::decode(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn save(&mut self, job: &Job) -> Result<(), StoreError> {
        self.jobs.insert(job.id.as_str(), job.encode().as_slice())?;
        Ok(())
    }

    fn enqueue(&mut self, job: &Job) -> Result<(), StoreError> {
        let seq = self.next_seq()?;
        let rk = ready_key(&job.route, job.priority, seq);
        self.ready.insert(rk.as_slice(), job.id.as_str())?;
        self.fifo
            .insert(fifo_key(&job.route, seq).as_slice(), rk.as_slice())?;
        Ok(())
    }

    fn submit(
        &mut self,
        job: Job,
        encoded: &[u8],
        max_queued: usize,
        live: i64,
        delta: &mut Counts,
        now: u64,
    ) -> Result<Submitted, StoreError> {
        if let Some(key) = &job.dedup {
            let existing = self.dedup.get(key.as_str())?.map(|v| v.value().to_string());
            if let Some(id) = existing
                && let Some(found) = self.load(&id)?
            {
                match found.state {
                    JobState::Queued | JobState::Running => return Ok(Submitted::Duplicate(found)),
                    // Kept until `result_ttl` after it finished (the sweep).
                    JobState::Succeeded => return Ok(Submitted::Done(found)),
                    // A refusal (4xx) or a dead job is not an answer to
                    // anyone else: do the work again.
                    JobState::Failed | JobState::Dead => {}
                }
            }
        }
        if live >= max_queued as i64 {
            return Err(StoreError::Full(max_queued));
        }
        if let Some(key) = &job.dedup {
            self.dedup.insert(key.as_str(), job.id.as_str())?;
        }
        self.jobs.insert(job.id.as_str(), encoded)?;
        self.queue_or_delay(&job, now)?;
        delta.add(&job.route, JobState::Queued, 1);
        Ok(Submitted::New(job))
    }

    fn claim(
        &mut self,
        route: &str,
        fifo: bool,
        delta: &mut Counts,
        now: u64,
    ) -> Result<Option<Job>, StoreError> {
        let (lo, hi) = route_range(route);
        let range = lo.as_slice()..hi.as_slice();
        // The entry to take, as its keys in both indexes: the oldest (a
        // `fifo` entry holds its `ready` key), or the most urgent (its
        // `fifo` key is the route prefix and the sequence ending its key).
        let keys = if fifo {
            self.fifo
                .range(range)?
                .next()
                .transpose()?
                .map(|(k, v)| (v.value().to_vec(), k.value().to_vec()))
        } else {
            self.ready.range(range)?.next().transpose()?.map(|(k, _)| {
                let rk = k.value().to_vec();
                let mut fk = lo.clone();
                fk.extend_from_slice(&rk[rk.len().saturating_sub(8)..]);
                (rk, fk)
            })
        };
        let Some((rk, fk)) = keys else {
            return Ok(None);
        };
        self.fifo.remove(fk.as_slice())?;
        let Some(id) = self
            .ready
            .remove(rk.as_slice())?
            .map(|v| v.value().to_string())
        else {
            return Ok(None);
        };
        let Some(mut job) = self.load(&id)? else {
            return Ok(None);
        };
        job.state = JobState::Running;
        job.attempts += 1;
        job.started_ms = Some(now);
        self.save(&job)?;
        delta.add(&job.route, JobState::Queued, -1);
        delta.add(&job.route, JobState::Running, 1);
        Ok(Some(job))
    }

    fn finish(
        &mut self,
        job: Job,
        result_ttl_ms: u64,
        delta: &mut Counts,
        now: u64,
    ) -> Result<(), StoreError> {
        let Some(before) = self.load(&job.id)? else {
            return Err(StoreError::NotFound);
        };
        delta.add(&job.route, before.state, -1);
        delta.add(&job.route, job.state, 1);
        if job.state == JobState::Queued {
            self.queue_or_delay(&job, now)?;
        } else {
            if matches!(job.state, JobState::Dead | JobState::Failed) {
                // A dead or refused job answers nobody: an identical
                // submission is new work.
                self.unlink_dedup(&job)?;
            }
            let at = now.saturating_add(result_ttl_ms);
            self.expiry
                .insert(time_key(at, &job.id).as_slice(), job.id.as_str())?;
        }
        self.save(&job)
    }

    fn requeue(&mut self, id: &str, delta: &mut Counts) -> Result<Job, StoreError> {
        let Some(mut job) = self.load(id)? else {
            return Err(StoreError::NotFound);
        };
        if !matches!(job.state, JobState::Dead | JobState::Failed) {
            return Err(StoreError::WrongState(job.state.as_str()));
        }
        delta.add(&job.route, job.state, -1);
        delta.add(&job.route, JobState::Queued, 1);
        job.state = JobState::Queued;
        job.attempts = 0;
        job.next_attempt_ms = 0;
        job.finished_ms = None;
        self.save(&job)?;
        self.enqueue(&job)?;
        Ok(job)
    }

    fn discard(&mut self, id: &str, delta: &mut Counts) -> Result<(), StoreError> {
        let Some(job) = self.load(id)? else {
            return Err(StoreError::NotFound);
        };
        if matches!(job.state, JobState::Queued | JobState::Running) {
            return Err(StoreError::WrongState(job.state.as_str()));
        }
        self.remove(&job)?;
        delta.add(&job.route, job.state, -1);
        Ok(())
    }

    fn remove(&mut self, job: &Job) -> Result<(), StoreError> {
        self.jobs.remove(job.id.as_str())?;
        self.unlink_dedup(job)
    }

    /// Forgets the job's de-duplication key, if it still names this job.
    fn unlink_dedup(&mut self, job: &Job) -> Result<(), StoreError> {
        if let Some(key) = &job.dedup
            && self
                .dedup
                .get(key.as_str())?
                .is_some_and(|v| v.value() == job.id)
        {
            self.dedup.remove(key.as_str())?;
        }
        Ok(())
    }

    /// A queued job into the queue, or among the delayed until its time.
    fn queue_or_delay(&mut self, job: &Job, now: u64) -> Result<(), StoreError> {
        if job.next_attempt_ms > now {
            self.delayed.insert(
                time_key(job.next_attempt_ms, &job.id).as_slice(),
                job.id.as_str(),
            )?;
            Ok(())
        } else {
            self.enqueue(job)
        }
    }

    /// Due retries back to the queue; expired finished jobs deleted.
    fn sweep(&mut self, now: u64, delta: &mut Counts) -> Result<bool, StoreError> {
        let upto = time_key(now.saturating_add(1), "");
        let due: Vec<(Vec<u8>, String)> = self
            .delayed
            .range(..upto.as_slice())?
            .take(SWEEP_MAX)
            .map(|e| e.map(|(k, v)| (k.value().to_vec(), v.value().to_string())))
            .collect::<Result<_, _>>()?;
        let expired: Vec<(Vec<u8>, String)> = self
            .expiry
            .range(..upto.as_slice())?
            .take(SWEEP_MAX)
            .map(|e| e.map(|(k, v)| (k.value().to_vec(), v.value().to_string())))
            .collect::<Result<_, _>>()?;
        let changed = !due.is_empty() || !expired.is_empty();
        for (k, id) in due {
            self.delayed.remove(k.as_slice())?;
            if let Some(job) = self.load(&id)?
                && job.state == JobState::Queued
            {
                self.enqueue(&job)?;
            }
        }
        for (k, id) in expired {
            self.expiry.remove(k.as_slice())?;
            if let Some(job) = self.load(&id)?
                && job.state.is_terminal()
            {
                self.remove(&job)?;
                delta.add(&job.route, job.state, -1);
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests;
