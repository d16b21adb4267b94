//! A job: the request to make upstream, its state, attempts, timings and,
//! once done, the upstream's answer. Stored as one versioned binary value
//! (metadata as JSON, request and result bodies as raw bytes). Also what
//! a submission became and jobs counted per route and state.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker (also between retries: see `next_attempt_ms`).
    Queued,
    /// A worker is calling the upstream.
    Running,
    /// The upstream answered with a success (2xx/3xx).
    Succeeded,
    /// The upstream refused it (4xx): not retried.
    Failed,
    /// Every attempt failed (5xx, timeout, connection error): dead letter.
    Dead,
}

impl JobState {
    /// Every state, in the order of reports.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
    ];

    /// The lowercase name (`queued`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
        }
    }

    /// Parses a name as written by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job will not run again by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Dead
        )
    }
}

/// The upstream request a job makes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    /// Method (usually POST).
    pub method: String,
    /// Path and query on the route's upstream.
    pub target: String,
    /// Header fields sent (end-to-end fields of the submission).
    pub headers: Vec<(String, String)>,
    /// The submitting client's address (after trusted proxies), sent on as
    /// `X-Forwarded-For`; `None` for jobs stored by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The submission came over TLS (`X-Forwarded-Proto: https`).
    #[serde(default)]
    pub tls: bool,
    /// The submitter's user (validated JWT), for balancing by user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The upstream's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Status code.
    pub status: u16,
    /// Header fields (end-to-end).
    pub headers: Vec<(String, String)>,
}

/// One job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// 32 lowercase hex digits.
    pub id: String,
    /// The async route's name.
    pub route: String,
    /// Higher runs first.
    pub priority: i32,
    /// Current state.
    pub state: JobState,
    /// Upstream calls started so far.
    pub attempts: u32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: u32,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the last attempt started.
    pub started_ms: Option<u64>,
    /// When the job reached a terminal state.
    pub finished_ms: Option<u64>,
    /// Not before this time (retry backoff); 0 = now.
    pub next_attempt_ms: u64,
    /// Hash of the normalized request (and, unless the route's scope is
    /// global, of the caller), when de-duplication is on.
    pub dedup: Option<String>,
    /// Only the submitter can be given this job's result: de-duplication
    /// is off, or per caller with a caller identity. Otherwise other
    /// callers may join it, and its result is stored without `Set-Cookie`.
    #[serde(default)]
    pub private_result: bool,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// What to send upstream.
    pub request: JobRequest,
    /// The upstream's answer, once there is one.
    pub result: Option<JobResult>,
    /// Request body.
    #[serde(skip)]
    pub body: Bytes,
    /// Result body.
    #[serde(skip)]
    pub result_body: Bytes,
}

/// Format version of stored jobs; an unknown version is never decoded.
const VERSION: u8 = 1;

impl Job {
    /// A new queued job with a fresh id.
    pub fn new(route: &str, request: JobRequest, body: Bytes, now_ms: u64) -> Job {
        Job {
            id: new_id(),
            route: route.to_string(),
            priority: 0,
            state: JobState::Queued,
            attempts: 0,
            max_attempts: 1,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
            next_attempt_ms: 0,
            dedup: None,
            private_result: false,
            last_error: None,
            request,
            result: None,
            body,
            result_body: Bytes::new(),
        }
    }

    /// `[version][u32 meta length][meta JSON][u32 body length][body][result body]`.
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(9 + meta.len() + self.body.len() + self.result_body.len());
        out.push(VERSION);
        out.extend_from_slice(&len32(meta.len()).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&len32(self.body.len()).to_be_bytes());
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&self.result_body);
        out
    }

    /// The inverse of [`encode`](Self::encode).
    pub fn decode(bytes: &[u8]) -> Result<Job, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt(why.to_string());
        let (&version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty value"))?;
        if version != VERSION {
            return Err(corrupt(&format!("unknown format version {version}")));
        }
        let (meta, rest) = take_prefixed(rest).ok_or_else(|| corrupt("truncated metadata"))?;
        let mut job: Job =
            serde_json::from_slice(meta).map_err(|e| corrupt(&format!("metadata: {e}")))?;
        let (body, rest) = take_prefixed(rest).ok_or_else(|| corrupt("truncated body"))?;
        job.body = Bytes::copy_from_slice(body);
        job.result_body = Bytes::copy_from_slice(rest);
        Ok(job)
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn take_prefixed(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = b.split_first_chunk::<4>()?;
    let n = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (rest.len() >= n).then(|| rest.split_at(n))
}

/// A random 128-bit id as 32 hex digits, from the operating system's
/// random source: ids work as capabilities (whoever has one can read the
/// job), so they must not be predictable from earlier ones.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // The OS source is not expected to fail; if it does, still answer.
        b[..8].copy_from_slice(&fastrand::u64(..).to_ne_bytes());
        b[8..].copy_from_slice(&fastrand::u64(..).to_ne_bytes());
        tracing::warn!("the OS random source failed; a task id was made without it");
    }
    format!("{:032x}", u128::from_be_bytes(b))
}

/// Whether `s` has the shape of a job id (so a malformed one is a 400, not
/// a lookup).
pub fn is_valid_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a submission became.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// A new job, queued.
    New(Job),
    /// The same work is queued or running already: that job.
    Duplicate(Job),
    /// The same work finished within `result_ttl`: that job, with its result.
    Done(Job),
}

/// Jobs per route and state.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// route → state → jobs.
    pub by_route: HashMap<String, HashMap<JobState, i64>>,
}

impl Counts {
    /// Adds `n` (possibly negative) jobs of `route` in `state`.
    pub(crate) fn add(&mut self, route: &str, state: JobState, n: i64) {
        let e = self
            .by_route
            .entry(route.to_string())
            .or_default()
            .entry(state)
            .or_insert(0);
        *e += n;
    }

    /// Adds every count of `other`.
    pub(crate) fn merge(&mut self, other: &Counts) {
        for (route, states) in &other.by_route {
            for (state, n) in states {
                self.add(route, *state, *n);
            }
        }
    }

    /// Jobs in `state` over all routes, as counted (deltas may be negative).
    pub(crate) fn total_signed(&self, state: JobState) -> i64 {
        self.by_route.values().filter_map(|s| s.get(&state)).sum()
    }

    /// Jobs in `state` over all routes.
    pub fn total(&self, state: JobState) -> u64 {
        u64::try_from(self.total_signed(state).max(0)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        let mut j = Job::new(
            "analyze",
            JobRequest {
                method: "POST".into(),
                target: "/api/v1/analyze".into(),
                headers: vec![("content-type".into(), "application/json".into())],
                client_ip: Some("192.0.2.7".into()),
                tls: true,
                user: None,
            },
            Bytes::from_static(b"{\"url\":\"https://example.com\"}"),
            1_700_000_000_000,
        );
        j.result = Some(JobResult {
            status: 200,
            headers: vec![],
        });
        j.result_body = Bytes::from_static(&[0, 159, 146, 150]);
        j
    }

    #[test]
    fn encode_roundtrips_binary_bodies() {
        let j = job();
        assert_eq!(Job::decode(&j.encode()).unwrap(), j);
    }

    #[test]
    fn jobs_stored_before_the_caller_fields_still_decode() {
        // The metadata of a version-1 job written before `client_ip`,
        // `tls`, `user` and `private_result` existed.
        let meta = br#"{"id":"0123456789abcdef0123456789abcdef","route":"r","priority":0,"state":"queued","attempts":0,"max_attempts":1,"created_ms":1,"started_ms":null,"finished_ms":null,"next_attempt_ms":0,"dedup":null,"last_error":null,"request":{"method":"POST","target":"/a","headers":[]},"result":null}"#;
        let mut b = vec![1u8];
        b.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        b.extend_from_slice(meta);
        b.extend_from_slice(&0u32.to_be_bytes());
        let j = Job::decode(&b).unwrap();
        assert_eq!(j.request.client_ip, None);
        assert!(!j.request.tls);
        // Unknown: treated as shareable, so its Set-Cookie is never stored.
        assert!(!j.private_result);
    }

    #[test]
    fn decode_refuses_unknown_versions_and_truncation() {
        let mut b = job().encode();
        assert!(Job::decode(&b[..3]).is_err());
        b[0] = 9;
        assert!(Job::decode(&b).is_err());
        assert!(Job::decode(&[]).is_err());
    }

    #[test]
    fn ids_are_32_hex_digits() {
        let id = new_id();
        assert!(is_valid_id(&id), "{id}");
        assert!(!is_valid_id("../etc/passwd"));
        assert!(!is_valid_id(&id.to_uppercase()));
        assert!(!is_valid_id(&id[1..]));
    }
}
