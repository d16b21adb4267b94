//! The Redis Streams store, shared by every instance on one Redis
//! (standalone or Cluster). It talks to Redis only through
//! [`Redis::command`] and [`Redis::script`], so every call has a deadline and
//! goes through the connection's breaker; a failed call is
//! [`StoreError::Unavailable`].
//!
//! # Keys
//!
//! Everything about one route lives in one hash slot, under the hash-tagged
//! base `B = {P:jobs:ROUTE}` (`P` is `redis.key_prefix`), so the scripts
//! below work unchanged on Redis Cluster. Routes are spread over slots.
//!
//! | key                   | type   | what                                                     |
//! |-----------------------|--------|----------------------------------------------------------|
//! | `B:job:ID`            | hash   | `data` ([`Job::encode`] bytes), `state`, `created` (ms), `band`, `dedup` (key or empty), `entry` (stream entry id while in a stream) |
//! | `B:stream:high`       | stream | queued jobs with priority > 0 (entry field `id` = job id) |
//! | `B:stream:normal`     | stream | priority 0                                               |
//! | `B:stream:low`        | stream | priority < 0                                             |
//! | `B:delayed`           | zset   | job ids waiting for their retry backoff, score = due ms  |
//! | `B:expiry`            | zset   | finished job ids, score = when their record expires      |
//! | `B:counts`            | hash   | state name → jobs of the route in that state (`HINCRBY`) |
//! | `B:cursors`           | hash   | band → `XAUTOCLAIM` cursor, so the lease scan walks the whole pending list |
//! | `B:idx:STATE`         | zset   | job ids per state, score = `created_ms` (for `list`)     |
//! | `B:dedup:KEY`         | string | the job id doing that work                               |
//! | `P:jobs:routes`       | set    | every route that ever had a job (for `get`, `list`, `counts`) |
//!
//! Each stream has the consumer group `workers`; each [`RedisStore`] is one
//! consumer with a unique name. Every state change is one Lua script on
//! the route's slot that updates the record, the streams, the indexes and
//! the counters together, so they never disagree. Scripts declare the
//! route's fixed keys (and the record of the job they are about); record
//! and de-duplication keys a script only learns while it runs (from a
//! stream entry, an index or a record) are built inside it from `B`, which
//! keeps them in the same slot (the pattern BullMQ uses). The job record
//! is found by id alone through `P:jobs:routes` (one lookup per route, all
//! at once; the list is cached for a second).
//!
//! # Claims, priorities and leases
//!
//! A claim (one script) first deletes expired finished jobs (`B:expiry`),
//! moves due retries from `B:delayed` into their stream, then takes over a
//! job whose consumer has not heartbeated for `lease` (`XAUTOCLAIM` with
//! min-idle = lease, one band after the other; the job stays running and
//! its attempt counts again), and otherwise reads one new entry
//! (`XREADGROUP … COUNT 1`, never `BLOCK`: the connection is shared) from
//! the bands high, normal, low in that order. Every fifth claim of a store
//! reads them low, normal, high instead, so low-priority work is never
//! starved. Within a band jobs run in submission order; priorities are
//! therefore honoured by band (> 0, 0, < 0), not by their exact value.
//! Stream entries whose record has moved on (finished, re-queued, gone)
//! are acknowledged and deleted when met.
//!
//! A worker keeps its lease with [`RedisStore::heartbeat`] (`XCLAIM` with
//! idle 0 on its own entry). A finished job's entry is acknowledged and
//! deleted (`XACK` + `XDEL`); a retry gets a new entry (or waits in
//! `B:delayed`).
//!
//! # Guarantees
//!
//! At least once: a job is only removed from its stream when a worker
//! finishes it, and a worker that stops heartbeating loses it to another
//! after `lease`, so a job can run twice (never zero times) when a worker
//! stalls past its lease; whichever attempt finishes last writes the
//! job's final record. The de-duplication check-and-set is part of the
//! submission script, so two instances submitting the same work at once
//! make one job. De-duplication is per route (the key lives in the route's
//! slot); one method and target always select one route, so this only
//! differs from the embedded store across a route reconfiguration.
//!
//! `jobs.max_queued` counts queued and running jobs over all routes: the
//! submitting route's count is read inside the script, the other routes'
//! just before it, so concurrent submissions on different routes may pass
//! the bound by a few jobs; on one route it is exact.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::{Script, cmd};
use perfgate_redis::{Error as RedisError, Redis};

use crate::error::StoreError;
use crate::job::{Counts, Submitted};
use crate::job::{Job, JobState, now_ms};

/// Deadline of the calls workers and submissions make.
const HOT: Duration = Duration::from_millis(500);
/// Deadline of the status and admin calls.
const ADMIN: Duration = Duration::from_secs(2);
/// Every fifth claim reads the priority bands lowest first.
const FAIR_EVERY: u64 = 5;
/// How long the route list is trusted before it is read again.
const ROUTES_FRESH: Duration = Duration::from_secs(1);

/// Handle to the Redis store; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    lease_ms: u64,
    /// This store's consumer name in every group.
    consumer: String,
    /// Claims made, for the every-fifth fair claim.
    claims: AtomicU64,
    /// `P:jobs:routes` as last read, and when.
    routes: Mutex<Option<(Instant, Vec<String>)>>,
}

/// The keys of one route, in the order the scripts expect.
struct RouteKeys {
    /// `{P:jobs:ROUTE}`.
    base: String,
    /// KEYS[1..=12]: see [`route_keys`].
    keys: Vec<String>,
}

impl RouteKeys {
    fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.base)
    }

    /// The route's keys followed by one job's record (KEYS[13]).
    fn with_job(&self, id: &str) -> Vec<String> {
        let mut keys = self.keys.clone();
        keys.push(self.job(id));
        keys
    }
}

/// KEYS[1..=12] of every route script: streams (bands 1–3), delayed,
/// expiry, counts, cursors, then the state indexes in [`JobState::ALL`]
/// order.
fn route_keys(redis: &Redis, route: &str) -> RouteKeys {
    let base = format!("{{{}}}", redis.key(&format!("jobs:{route}")));
    let mut keys: Vec<String> = ["stream:high", "stream:normal", "stream:low"]
        .into_iter()
        .chain(["delayed", "expiry", "counts", "cursors"])
        .map(|k| format!("{base}:{k}"))
        .collect();
    keys.extend(
        JobState::ALL
            .iter()
            .map(|s| format!("{base}:idx:{}", s.as_str())),
    );
    RouteKeys { base, keys }
}

/// The stream (1 = high, 2 = normal, 3 = low) of a priority.
fn band(priority: i32) -> u8 {
    match priority {
        p if p > 0 => 1,
        0 => 2,
        _ => 3,
    }
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Unavailable(format!("unexpected reply from the job store: {what}"))
}

fn state_of(name: &[u8]) -> Result<JobState, StoreError> {
    std::str::from_utf8(name)
        .ok()
        .and_then(JobState::parse)
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "unknown job state {:?}",
                String::from_utf8_lossy(name)
            ))
        })
}

fn arg(v: impl ToString) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Helpers shared by the scripts (see the module doc for KEYS).
const PRELUDE: &str = r#"
local GROUP = 'workers'
local IDX = {queued = 8, running = 9, succeeded = 10, failed = 11, dead = 12}
local TERMINAL = {succeeded = true, failed = true, dead = true}
local BASE = ARGV[1]
local function job_key(id) return BASE .. ':job:' .. id end
local function dedup_key(d) return BASE .. ':dedup:' .. d end
-- Moves a job between state indexes and counters (from or to may be false).
local function move(id, from, to, created)
  if from == to then return end
  if from and IDX[from] then
    redis.call('ZREM', KEYS[IDX[from]], id)
    redis.call('HINCRBY', KEYS[6], from, -1)
  end
  if to then
    redis.call('ZADD', KEYS[IDX[to]], created, id)
    redis.call('HINCRBY', KEYS[6], to, 1)
  end
end
-- Appends a job to its band's stream (made with the group when missing).
local function enqueue(rec, id, band)
  local stream = KEYS[band]
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
  end
  redis.call('HSET', rec, 'entry', redis.call('XADD', stream, '*', 'id', id))
end
local function drop(stream, entry)
  redis.call('XACK', stream, GROUP, entry)
  redis.call('XDEL', stream, entry)
end
-- Acknowledges and deletes the job's stream entry, if it has one.
local function release(rec)
  local entry = redis.call('HGET', rec, 'entry')
  if entry then
    drop(KEYS[tonumber(redis.call('HGET', rec, 'band'))], entry)
    redis.call('HDEL', rec, 'entry')
  end
end
-- The job's dedup key when it still names this job, else false.
local function own_dedup(rec, id)
  local d = redis.call('HGET', rec, 'dedup')
  if d and d ~= '' then
    local k = dedup_key(d)
    if redis.call('GET', k) == id then return k end
  end
  return false
end
-- Finished jobs past their result_ttl leave the indexes and counters
-- (their records expire by themselves; deleted here if still there).
local function sweep(now)
  local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[5], id)
    for _, st in ipairs({'succeeded', 'failed', 'dead'}) do
      if redis.call('ZREM', KEYS[IDX[st]], id) == 1 then
        redis.call('HINCRBY', KEYS[6], st, -1)
      end
    end
    local rec = job_key(id)
    local st = redis.call('HGET', rec, 'state')
    if not st or TERMINAL[st] then
      local k = own_dedup(rec, id)
      if k then redis.call('DEL', k) end
      redis.call('DEL', rec)
    end
  end
end
-- Retries whose backoff is over go to their stream.
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    if redis.call('ZREM', KEYS[4], id) == 1 then
      local rec = job_key(id)
      if redis.call('HGET', rec, 'state') == 'queued' then
        enqueue(rec, id, tonumber(redis.call('HGET', rec, 'band')))
      end
    end
  end
end
"#;

/// KEYS[1] = `P:jobs:routes`; ARGV[1] = route. Registers the route and
/// returns every route.
const ROUTES_LUA: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('SMEMBERS', KEYS[1])
"#;

/// ARGV: base, data, id, band, created, due, now, max_queued, live on other
/// routes, dedup key (or empty). Returns {'new'}, {'duplicate'|'done',
/// data, state} or {'full'}.
const SUBMIT_LUA: &str = r#"
local data, id, band, created = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local dedup = ARGV[10]
if dedup ~= '' then
  local existing = redis.call('GET', dedup_key(dedup))
  if existing then
    local rec = job_key(existing)
    local st = redis.call('HGET', rec, 'state')
    if st == 'queued' or st == 'running' then
      return {'duplicate', redis.call('HGET', rec, 'data'), st}
    elseif st == 'succeeded' then
      return {'done', redis.call('HGET', rec, 'data'), st}
    end
    -- Failed (4xx), dead or gone: this is new work.
  end
end
local live = tonumber(redis.call('HGET', KEYS[6], 'queued') or '0')
  + tonumber(redis.call('HGET', KEYS[6], 'running') or '0') + tonumber(ARGV[9])
if live >= tonumber(ARGV[8]) then return {'full'} end
local rec = KEYS[13]
redis.call('HSET', rec, 'data', data, 'state', 'queued', 'created', created, 'band', band, 'dedup', dedup)
move(id, false, 'queued', created)
if dedup ~= '' then redis.call('SET', dedup_key(dedup), id) end
if tonumber(ARGV[6]) > tonumber(ARGV[7]) then
  redis.call('ZADD', KEYS[4], ARGV[6], id)
else
  enqueue(rec, id, band)
end
return {'new'}
"#;

/// ARGV: base, consumer, now, lease (ms), band order ('123' or '321').
/// Returns {} or {'takeover'|'new', id, data}; the record is marked running.
const CLAIM_LUA: &str = r#"
local consumer, now, lease, order = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
sweep(now)
promote(now)
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return false
end
-- The record behind an entry, when the entry is still the job's current one.
local function current(entry, want)
  local id = field(entry[2], 'id')
  if not id then return false end
  local rec = job_key(id)
  if redis.call('HGET', rec, 'entry') == entry[1] and redis.call('HGET', rec, 'state') == want then
    return id, rec
  end
  return false
end
-- Jobs whose consumer stopped heartbeating.
for band = 1, 3 do
  local stream = KEYS[band]
  if redis.call('EXISTS', stream) == 1 then
    local cursor = redis.call('HGET', KEYS[7], band) or '0-0'
    local r = redis.call('XAUTOCLAIM', stream, GROUP, consumer, lease, cursor, 'COUNT', 1)
    if r[1] ~= cursor then redis.call('HSET', KEYS[7], band, r[1]) end
    for _, e in ipairs(r[2]) do
      if e and e[2] then
        local id, rec = current(e, 'running')
        if id then return {'takeover', id, redis.call('HGET', rec, 'data')} end
        drop(stream, e[1])
      end
    end
  end
end
-- New work, most urgent band first (or least urgent, on fair turns).
for i = 1, 3 do
  local stream = KEYS[tonumber(string.sub(order, i, i))]
  if redis.call('EXISTS', stream) == 1 then
    for _ = 1, 100 do
      local r = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', 1, 'STREAMS', stream, '>')
      if not r or not r[1] or not r[1][2][1] then break end
      local e = r[1][2][1]
      local id, rec = current(e, 'queued')
      if id then
        redis.call('HSET', rec, 'state', 'running')
        move(id, 'queued', 'running', redis.call('HGET', rec, 'created'))
        return {'new', id, redis.call('HGET', rec, 'data')}
      end
      drop(stream, e[1])
    end
  end
end
return {}
"#;

/// KEYS[13] = the record; ARGV: base, id, data, state, due, now, result
/// ttl (ms), expiry time (ms). Returns 0 when the job is gone.
const FINISH_LUA: &str = r#"
local rec, id, state = KEYS[13], ARGV[2], ARGV[4]
local old = redis.call('HGET', rec, 'state')
if not old then return 0 end
if state ~= 'running' then release(rec) end
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
redis.call('HSET', rec, 'data', ARGV[3], 'state', state)
move(id, old, state, redis.call('HGET', rec, 'created'))
local dk = own_dedup(rec, id)
if state == 'queued' then
  redis.call('PERSIST', rec)
  if dk then redis.call('PERSIST', dk) end
  if tonumber(ARGV[5]) > tonumber(ARGV[6]) then
    redis.call('ZADD', KEYS[4], ARGV[5], id)
  else
    enqueue(rec, id, tonumber(redis.call('HGET', rec, 'band')))
  end
elseif TERMINAL[state] then
  redis.call('ZADD', KEYS[5], ARGV[8], id)
  if dk then
    -- A dead or refused (4xx) job answers nobody: an identical submission
    -- is new work.
    if state == 'succeeded' then redis.call('PEXPIRE', dk, ARGV[7]) else redis.call('DEL', dk) end
  end
  redis.call('PEXPIRE', rec, ARGV[7])
end
return 1
"#;

/// KEYS[13] = the record; ARGV: base, consumer. Returns 'ok', 'missing',
/// 'lost' (another consumer holds it) or the job's state.
const HEARTBEAT_LUA: &str = r#"
local rec, consumer = KEYS[13], ARGV[2]
local st = redis.call('HGET', rec, 'state')
if not st then return 'missing' end
local entry = redis.call('HGET', rec, 'entry')
if st ~= 'running' or not entry then return st end
local stream = KEYS[tonumber(redis.call('HGET', rec, 'band'))]
local p = redis.call('XPENDING', stream, GROUP, entry, entry, 1)
if not p[1] or p[1][2] ~= consumer then return 'lost' end
redis.call('XCLAIM', stream, GROUP, consumer, 0, entry, 'JUSTID')
return 'ok'
"#;

/// KEYS[13] = the record; ARGV: base, id, data. Returns 'ok', 'missing' or
/// the state that forbids it.
const REQUEUE_LUA: &str = r#"
local rec, id = KEYS[13], ARGV[2]
local st = redis.call('HGET', rec, 'state')
if not st then return 'missing' end
if st ~= 'dead' and st ~= 'failed' then return st end
redis.call('ZREM', KEYS[5], id)
redis.call('PERSIST', rec)
redis.call('HSET', rec, 'data', ARGV[3], 'state', 'queued')
move(id, st, 'queued', redis.call('HGET', rec, 'created'))
local dk = own_dedup(rec, id)
if dk then redis.call('PERSIST', dk) end
enqueue(rec, id, tonumber(redis.call('HGET', rec, 'band')))
return 'ok'
"#;

/// KEYS[13] = the record; ARGV: base, id. Returns 'ok', 'missing' or the
/// state that forbids it.
const DISCARD_LUA: &str = r#"
local rec, id = KEYS[13], ARGV[2]
local st = redis.call('HGET', rec, 'state')
if not st then return 'missing' end
if st == 'queued' or st == 'running' then return st end
release(rec)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
move(id, st, false, 0)
local dk = own_dedup(rec, id)
if dk then redis.call('DEL', dk) end
redis.call('DEL', rec)
return 'ok'
"#;

/// ARGV: base, state, limit, now. Returns the records of the oldest jobs
/// in the state.
const LIST_LUA: &str = r#"
sweep(ARGV[4])
local ids = redis.call('ZRANGE', KEYS[IDX[ARGV[2]]], 0, tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local data = redis.call('HGET', job_key(id), 'data')
  if data then table.insert(out, data) end
end
return out
"#;

/// ARGV: base, now. Returns the route's counters (HGETALL).
const COUNTS_LUA: &str = r#"
sweep(ARGV[2])
return redis.call('HGETALL', KEYS[6])
"#;

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

static ROUTES: LazyLock<Script> = LazyLock::new(|| Script::new(ROUTES_LUA));
static SUBMIT: LazyLock<Script> = LazyLock::new(|| with_prelude(SUBMIT_LUA));
static CLAIM: LazyLock<Script> = LazyLock::new(|| with_prelude(CLAIM_LUA));
static FINISH: LazyLock<Script> = LazyLock::new(|| with_prelude(FINISH_LUA));
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| with_prelude(HEARTBEAT_LUA));
static REQUEUE: LazyLock<Script> = LazyLock::new(|| with_prelude(REQUEUE_LUA));
static DISCARD: LazyLock<Script> = LazyLock::new(|| with_prelude(DISCARD_LUA));
static LIST: LazyLock<Script> = LazyLock::new(|| with_prelude(LIST_LUA));
static COUNTS: LazyLock<Script> = LazyLock::new(|| with_prelude(COUNTS_LUA));

/// A job record as found by id.
struct Found {
    route: String,
    data: Vec<u8>,
    state: Option<String>,
}

impl Found {
    /// The job, with the record's state (authoritative: a claim marks the
    /// state before the worker's copy is written back).
    fn job(&self) -> Result<Job, StoreError> {
        let mut job = Job::decode(&self.data)?;
        if let Some(s) = self.state.as_deref().and_then(JobState::parse) {
            job.state = s;
        }
        Ok(job)
    }
}

impl RedisStore {
    /// A store on the shared Redis connection; a claimed job whose worker stops
    /// heartbeating for `lease` is given to another worker.
    pub fn new(redis: Redis, lease: Duration) -> RedisStore {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        RedisStore {
            inner: Arc::new(Inner {
                redis,
                lease_ms,
                consumer: format!("{}-{:016x}", std::process::id(), fastrand::u64(..)),
                claims: AtomicU64::new(0),
                routes: Mutex::new(None),
            }),
        }
    }

    /// Stores a new job, or returns the live (or finished) job it
    /// duplicates; [`StoreError::Full`] when `max_queued` jobs are queued or
    /// running over all routes.
    pub async fn submit(&self, job: Job, max_queued: usize) -> Result<Submitted, StoreError> {
        let routes = self.register(&job.route).await?;
        let others: Vec<String> = routes.into_iter().filter(|r| *r != job.route).collect();
        let others_live: i64 = self
            .per_route(&others, |redis, keys| async move {
                let c = cmd("HMGET")
                    .arg(&keys.keys[5])
                    .arg("queued")
                    .arg("running")
                    .clone();
                redis.command::<(Option<i64>, Option<i64>)>(&c, HOT).await
            })
            .await?
            .into_iter()
            .map(|(_, (q, r))| q.unwrap_or(0) + r.unwrap_or(0))
            .sum();
        let keys = route_keys(&self.inner.redis, &job.route);
        let args = vec![
            keys.base.clone().into_bytes(),
            job.encode(),
            arg(&job.id),
            arg(band(job.priority)),
            arg(job.created_ms),
            arg(job.next_attempt_ms),
            arg(now_ms()),
            arg(max_queued),
            arg(others_live.max(0)),
            arg(job.dedup.as_deref().unwrap_or("")),
        ];
        let reply: Vec<Vec<u8>> = self
            .inner
            .redis
            .script(&SUBMIT, &keys.with_job(&job.id), &args, HOT)
            .await
            .map_err(unavailable)?;
        let existing = |reply: &[Vec<u8>]| -> Result<Job, StoreError> {
            let [_, data, state] = reply else {
                return Err(unexpected("submit"));
            };
            let mut found = Job::decode(data)?;
            found.state = state_of(state)?;
            Ok(found)
        };
        match reply.first().map(Vec::as_slice) {
            Some(b"new") => Ok(Submitted::New(job)),
            Some(b"duplicate") => Ok(Submitted::Duplicate(existing(&reply)?)),
            Some(b"done") => Ok(Submitted::Done(existing(&reply)?)),
            Some(b"full") => Err(StoreError::Full(max_queued)),
            _ => Err(unexpected("submit")),
        }
    }

    /// Takes the next job of `route`: one whose worker lost its lease, else
    /// the most urgent queued one (every fifth claim, the least urgent).
    /// The job comes back running, with its attempt counted.
    pub async fn claim(&self, route: &str) -> Result<Option<Job>, StoreError> {
        let n = self.inner.claims.fetch_add(1, Ordering::Relaxed);
        let order = if n % FAIR_EVERY == FAIR_EVERY - 1 {
            "321"
        } else {
            "123"
        };
        let keys = route_keys(&self.inner.redis, route);
        let now = now_ms();
        let args = vec![
            keys.base.clone().into_bytes(),
            arg(&self.inner.consumer),
            arg(now),
            arg(self.inner.lease_ms),
            arg(order),
        ];
        let reply: Vec<Vec<u8>> = self
            .inner
            .redis
            .script(&CLAIM, &keys.keys, &args, HOT)
            .await
            .map_err(unavailable)?;
        let [kind, id, data] = reply.as_slice() else {
            return if reply.is_empty() {
                Ok(None)
            } else {
                Err(unexpected("claim"))
            };
        };
        let id = String::from_utf8_lossy(id);
        // An undecodable job (e.g. written by a newer version) stays claimed
        // by nobody alive: after the lease another instance may take it.
        let mut job = Job::decode(data).inspect_err(|e| {
            tracing::warn!(route, job = %id, error = %e, "claimed job is unreadable");
        })?;
        if kind.as_slice() == b"takeover" {
            tracing::info!(route, job = %id, "job taken over after its lease expired");
        }
        job.state = JobState::Running;
        job.attempts += 1;
        job.started_ms = Some(now);
        // The script has marked the record running; this writes the worker's
        // copy (attempt, start time) back. Should it fail, the job stays
        // claimed with no worker, and another store takes it over after the
        // lease: the at-least-once path.
        let c = cmd("HSET")
            .arg(keys.job(&job.id))
            .arg("data")
            .arg(job.encode())
            .clone();
        self.inner
            .redis
            .command::<i64>(&c, HOT)
            .await
            .map_err(unavailable)?;
        Ok(Some(job))
    }

    /// Writes what a worker made of a job: terminal (kept `result_ttl_ms`,
    /// its stream entry acknowledged), or queued again (at once, or after
    /// `next_attempt_ms`).
    pub async fn finish(&self, job: Job, result_ttl_ms: u64) -> Result<(), StoreError> {
        let keys = route_keys(&self.inner.redis, &job.route);
        let now = now_ms();
        let args = vec![
            keys.base.clone().into_bytes(),
            arg(&job.id),
            job.encode(),
            arg(job.state.as_str()),
            arg(job.next_attempt_ms),
            arg(now),
            arg(result_ttl_ms),
            arg(now.saturating_add(result_ttl_ms)),
        ];
        let found: i64 = self
            .inner
            .redis
            .script(&FINISH, &keys.with_job(&job.id), &args, HOT)
            .await
            .map_err(unavailable)?;
        if found == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Renews the lease of a running job this store claimed.
    /// [`StoreError::WrongState`] when the job is no longer running or
    /// another store has taken it over (`running`), [`StoreError::NotFound`]
    /// when it is gone: either way the worker has lost it.
    pub async fn heartbeat(&self, job: &Job) -> Result<(), StoreError> {
        let keys = route_keys(&self.inner.redis, &job.route);
        let args = vec![keys.base.clone().into_bytes(), arg(&self.inner.consumer)];
        let reply: Vec<u8> = self
            .inner
            .redis
            .script(&HEARTBEAT, &keys.with_job(&job.id), &args, HOT)
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            b"ok" => Ok(()),
            b"missing" => Err(StoreError::NotFound),
            b"lost" => Err(StoreError::WrongState(JobState::Running.as_str())),
            state => Err(StoreError::WrongState(state_of(state)?.as_str())),
        }
    }

    /// One job.
    pub async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.locate(id).await?.map(|f| f.job()).transpose()
    }

    /// Jobs in `state` (any route), oldest first, at most `limit`.
    /// Unreadable records are left out (and logged).
    pub async fn list(&self, state: JobState, limit: usize) -> Result<Vec<Job>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let routes = self.refresh_routes().await?;
        let now = now_ms();
        let per_route = self
            .per_route(&routes, |redis, keys| async move {
                let args = vec![
                    keys.base.into_bytes(),
                    arg(state.as_str()),
                    arg(limit),
                    arg(now),
                ];
                redis
                    .script::<Vec<Vec<u8>>>(&LIST, &keys.keys, &args, ADMIN)
                    .await
            })
            .await?;
        let mut out = Vec::new();
        for (route, records) in per_route {
            for data in records {
                match Job::decode(&data) {
                    Ok(mut job) => {
                        job.state = state;
                        out.push(job);
                    }
                    Err(e) => {
                        tracing::warn!(route = %route, error = %e, "unreadable job left out of the list")
                    }
                }
            }
        }
        out.sort_by_key(|j| j.created_ms);
        out.truncate(limit);
        Ok(out)
    }

    /// Puts a dead or failed job back in the queue with fresh attempts.
    pub async fn requeue(&self, id: &str) -> Result<Job, StoreError> {
        let found = self.locate(id).await?.ok_or(StoreError::NotFound)?;
        let mut job = found.job()?;
        if !matches!(job.state, JobState::Dead | JobState::Failed) {
            return Err(StoreError::WrongState(job.state.as_str()));
        }
        job.state = JobState::Queued;
        job.attempts = 0;
        job.next_attempt_ms = 0;
        job.finished_ms = None;
        let keys = route_keys(&self.inner.redis, &found.route);
        let args = vec![keys.base.clone().into_bytes(), arg(id), job.encode()];
        let reply: Vec<u8> = self
            .inner
            .redis
            .script(&REQUEUE, &keys.with_job(id), &args, ADMIN)
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            b"ok" => Ok(job),
            b"missing" => Err(StoreError::NotFound),
            state => Err(StoreError::WrongState(state_of(state)?.as_str())),
        }
    }

    /// Deletes a job that is neither queued nor running.
    pub async fn discard(&self, id: &str) -> Result<(), StoreError> {
        let found = self.locate(id).await?.ok_or(StoreError::NotFound)?;
        let keys = route_keys(&self.inner.redis, &found.route);
        let args = vec![keys.base.clone().into_bytes(), arg(id)];
        let reply: Vec<u8> = self
            .inner
            .redis
            .script(&DISCARD, &keys.with_job(id), &args, ADMIN)
            .await
            .map_err(unavailable)?;
        match reply.as_slice() {
            b"ok" => Ok(()),
            b"missing" => Err(StoreError::NotFound),
            state => Err(StoreError::WrongState(state_of(state)?.as_str())),
        }
    }

    /// Jobs per route and state; empty when Redis does not answer.
    pub async fn counts(&self) -> Counts {
        match self.try_counts().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "job counts unavailable");
                Counts::default()
            }
        }
    }

    async fn try_counts(&self) -> Result<Counts, StoreError> {
        let routes = self.refresh_routes().await?;
        let now = now_ms();
        let per_route = self
            .per_route(&routes, |redis, keys| async move {
                let args = vec![keys.base.into_bytes(), arg(now)];
                redis
                    .script::<Vec<String>>(&COUNTS, &keys.keys, &args, ADMIN)
                    .await
            })
            .await?;
        let mut counts = Counts::default();
        for (route, flat) in per_route {
            for pair in flat.chunks_exact(2) {
                if let (Some(state), Ok(n)) = (JobState::parse(&pair[0]), pair[1].parse::<i64>()) {
                    counts.add(&route, state, n);
                }
            }
        }
        Ok(counts)
    }

    /// The record of job `id`, looked up on every known route.
    async fn locate(&self, id: &str) -> Result<Option<Found>, StoreError> {
        let (routes, fresh) = self.routes().await?;
        if let Some(found) = self.find(id, &routes).await? {
            return Ok(Some(found));
        }
        if fresh {
            return Ok(None);
        }
        // The job may be on a route another instance registered since.
        let newer: Vec<String> = self
            .refresh_routes()
            .await?
            .into_iter()
            .filter(|r| !routes.contains(r))
            .collect();
        self.find(id, &newer).await
    }

    async fn find(&self, id: &str, routes: &[String]) -> Result<Option<Found>, StoreError> {
        let id = id.to_string();
        let found = self
            .per_route(routes, |redis, keys| {
                let c = cmd("HMGET")
                    .arg(keys.job(&id))
                    .arg("data")
                    .arg("state")
                    .clone();
                async move {
                    redis
                        .command::<(Option<Vec<u8>>, Option<String>)>(&c, ADMIN)
                        .await
                }
            })
            .await?;
        Ok(found
            .into_iter()
            .find_map(|(route, (data, state))| data.map(|data| Found { route, data, state })))
    }

    /// The known routes, read again when older than [`ROUTES_FRESH`]; true
    /// when they were just read.
    async fn routes(&self) -> Result<(Vec<String>, bool), StoreError> {
        let cached = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match cached {
            Some((at, routes)) if at.elapsed() < ROUTES_FRESH => Ok((routes, false)),
            _ => Ok((self.refresh_routes().await?, true)),
        }
    }

    async fn refresh_routes(&self) -> Result<Vec<String>, StoreError> {
        let c = cmd("SMEMBERS").arg(self.routes_key()).clone();
        let routes: Vec<String> = self
            .inner
            .redis
            .command(&c, ADMIN)
            .await
            .map_err(unavailable)?;
        self.remember_routes(&routes);
        Ok(routes)
    }

    /// Adds `route` to the route set unless it was seen there within
    /// [`ROUTES_FRESH`] (so a Redis that lost its data relearns it), and
    /// returns every route.
    async fn register(&self, route: &str) -> Result<Vec<String>, StoreError> {
        if let Ok((routes, _)) = self.routes().await
            && routes.iter().any(|r| r == route)
        {
            return Ok(routes);
        }
        let routes: Vec<String> = self
            .inner
            .redis
            .script(&ROUTES, &[self.routes_key()], &[arg(route)], HOT)
            .await
            .map_err(unavailable)?;
        self.remember_routes(&routes);
        Ok(routes)
    }

    fn remember_routes(&self, routes: &[String]) {
        *self
            .inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), routes.to_vec()));
    }

    fn routes_key(&self) -> String {
        self.inner.redis.key("jobs:routes")
    }

    /// Runs `f` for every route at once (each route is its own slot, so
    /// possibly its own node); fails when any of them fails.
    async fn per_route<T, F, Fut>(
        &self,
        routes: &[String],
        f: F,
    ) -> Result<Vec<(String, T)>, StoreError>
    where
        T: Send + 'static,
        F: Fn(Redis, RouteKeys) -> Fut,
        Fut: Future<Output = Result<T, RedisError>> + Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        for route in routes {
            let fut = f(
                self.inner.redis.clone(),
                route_keys(&self.inner.redis, route),
            );
            let route = route.clone();
            set.spawn(async move { (route, fut.await) });
        }
        let mut out = Vec::with_capacity(routes.len());
        while let Some(joined) = set.join_next().await {
            let (route, r) = joined.map_err(|e| StoreError::Unavailable(e.to_string()))?;
            out.push((route, r.map_err(unavailable)?));
        }
        Ok(out)
    }
}
