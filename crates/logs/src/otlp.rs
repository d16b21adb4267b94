//! Shipping log lines to an OpenTelemetry collector as OTLP logs
//! (OTLP/HTTP with the JSON encoding, `POST /v1/logs`), so that an existing
//! store (Loki, Elasticsearch, OpenSearch, ClickHouse) takes over when one
//! machine's disk is not enough.
//!
//! One thread ("perfgate-otlp") gathers encoded records into batches of
//! `batch` lines, or whatever arrived within `interval`, and posts each
//! batch on a fresh connection under `timeout`. A batch the collector
//! refuses or does not answer is dropped and counted; lines that find the
//! queue full are dropped and counted. Nothing waits for the collector but
//! this thread.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::line::{Level, LogLine};

/// Where and how lines are shipped.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The collector's logs URL (`http://host:port/v1/logs`).
    pub endpoint: String,
    /// Lines per request.
    pub batch: usize,
    /// Longest wait for a partial batch.
    pub interval: Duration,
    /// Deadline of one request (connect, send, answer).
    pub timeout: Duration,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Lines waiting to be shipped.
    pub queue: usize,
}

/// What the exporter has done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OtlpStats {
    /// Lines the collector accepted.
    pub sent: u64,
    /// Lines in batches that failed.
    pub failed: u64,
    /// Lines dropped because the queue was full.
    pub dropped: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// The exporter's counters, shared with the pipeline.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> OtlpStats {
        OtlpStats {
            sent: self.sent.load(Relaxed),
            failed: self.failed.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// The running exporter; dropping it sends what is queued and stops the
/// thread.
pub(crate) struct Otlp {
    tx: Option<SyncSender<Vec<u8>>>,
    counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Otlp {
    /// Starts the exporter thread.
    pub(crate) fn start(settings: OtlpSettings) -> std::io::Result<Otlp> {
        let target = Target::parse(&settings.endpoint)?;
        let (tx, rx) = sync_channel(settings.queue.max(1));
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("perfgate-otlp".into())
            .spawn(move || run(&settings, &target, &rx, &c))?;
        Ok(Otlp {
            tx: Some(tx),
            counters,
            thread: Some(thread),
        })
    }

    pub(crate) fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Queues `line` (never blocks).
    pub(crate) fn push(&self, line: &LogLine) {
        let Some(tx) = &self.tx else { return };
        let mut rec = Vec::with_capacity(512);
        if serde_json::to_writer(&mut rec, &record(line)).is_err() || tx.try_send(rec).is_err() {
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The collector's address and request path.
struct Target {
    authority: String,
    path: String,
}

impl Target {
    fn parse(endpoint: &str) -> std::io::Result<Target> {
        let url = perfgate_config::parse_upstream_url(endpoint)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let path = if url.prefix.is_empty() {
            "/v1/logs".to_owned()
        } else {
            url.prefix.clone()
        };
        Ok(Target {
            authority: url.authority(),
            path,
        })
    }
}

fn run(s: &OtlpSettings, target: &Target, rx: &Receiver<Vec<u8>>, c: &Counters) {
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(s.batch);
    loop {
        let deadline = Instant::now() + s.interval;
        let mut open = true;
        while batch.len() < s.batch.max(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(rec) => batch.push(rec),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            match post(s, target, &envelope(&s.service_name, &batch)) {
                Ok(()) => {
                    c.sent.fetch_add(n, Relaxed);
                }
                Err(e) => {
                    c.failed.fetch_add(n, Relaxed);
                    *c.last_error.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(e.to_string());
                }
            }
            batch.clear();
        }
        if !open {
            return;
        }
    }
}

/// The request body: one resource, one scope, the batch's records.
fn envelope(service: &str, records: &[Vec<u8>]) -> Vec<u8> {
    let resource = json!({
        "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
    });
    let mut out = Vec::with_capacity(256 + records.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(b"{\"resourceLogs\":[{\"resource\":");
    let _ = serde_json::to_writer(&mut out, &resource);
    out.extend_from_slice(b",\"scopeLogs\":[{\"scope\":{\"name\":\"perfgate\"},\"logRecords\":[");
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.extend_from_slice(b"]}]}]}");
    out
}

/// Posts `body`; Ok when the collector answers 2xx.
fn post(s: &OtlpSettings, t: &Target, body: &[u8]) -> std::io::Result<()> {
    let started = Instant::now();
    let left = || {
        s.timeout
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    let addr = t
        .authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the collector's host resolves to nothing"))?;
    let mut conn = TcpStream::connect_timeout(&addr, left()?)?;
    conn.set_write_timeout(Some(left()?))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: perfgate\r\n\r\n",
        t.path,
        t.authority,
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.set_read_timeout(Some(left()?))?;
    // The status line is all that matters; the rest is read (bounded) so
    // the collector is not reset mid-answer.
    let mut answer = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    while answer.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if answer.contains(&b'\n') => {
                let _ = e;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let status = answer
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("the collector sent no HTTP status"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the collector answered {status}"
        )))
    }
}

/// One OTLP `LogRecord` (JSON encoding: 64-bit integers as strings, ids
/// in hex).
fn record(l: &LogLine) -> Value {
    let (number, text) = match l.level {
        Level::Trace => (1, "TRACE"),
        Level::Debug => (5, "DEBUG"),
        Level::Info => (9, "INFO"),
        Level::Warn => (13, "WARN"),
        Level::Error => (17, "ERROR"),
    };
    let mut attrs = Vec::with_capacity(20);
    let mut s = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            attrs.push(json!({"key": k, "value": {"stringValue": v}}));
        }
    };
    s("log.kind", &Some(l.kind.clone()));
    s("code.namespace", &l.target);
    s("http.request.method", &l.method);
    s("url.path", &l.path);
    s("http.route", &l.route);
    s("perfgate.route_name", &l.route_name);
    s("perfgate.cache", &l.cache);
    s("perfgate.cache_layer", &l.layer);
    s("perfgate.cache_detail", &l.detail);
    s("server.address", &l.upstream);
    s("enduser.id", &l.user);
    s("client.address", &l.ip);
    s("error.type", &l.error);
    s("perfgate.request_kind", &l.request_kind);
    let mut int = |k: &str, v: Option<u64>| {
        if let Some(v) = v {
            attrs.push(json!({"key": k, "value": {"intValue": v.to_string()}}));
        }
    };
    int("perfgate.log_id", Some(l.id));
    int("http.response.status_code", l.status.map(u64::from));
    int("http.request.body.size", l.bytes_in);
    int("http.response.body.size", l.bytes_out);
    int("perfgate.attempts", l.attempts.map(u64::from));
    if let Some(ms) = l.latency_ms {
        attrs.push(json!({"key": "perfgate.latency_ms", "value": {"doubleValue": ms}}));
    }
    if let Some(fields) = &l.fields {
        for (k, v) in fields {
            let value = match v {
                Value::String(s) => json!({"stringValue": s}),
                Value::Bool(b) => json!({"boolValue": b}),
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    json!({"intValue": n.to_string()})
                }
                Value::Number(n) => json!({"doubleValue": n.as_f64()}),
                other => json!({"stringValue": other.to_string()}),
            };
            attrs.push(json!({"key": format!("perfgate.field.{k}"), "value": value}));
        }
    }
    let observed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut rec = json!({
        "timeUnixNano": (u128::from(l.id) * 1000).to_string(),
        "observedTimeUnixNano": observed.to_string(),
        "severityNumber": number,
        "severityText": text,
        "body": {"stringValue": l.message},
        "attributes": attrs,
    });
    if let Some(t) = &l.trace_id
        && let Some(obj) = rec.as_object_mut()
    {
        obj.insert("traceId".into(), Value::String(t.clone()));
    }
    rec
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::net::TcpListener;

    use super::*;

    /// A collector on 127.0.0.1:0 that answers `status` and hands over the
    /// bodies it got.
    fn collector(status: u16) -> (String, std::sync::mpsc::Receiver<Value>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/logs", l.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let mut conn = conn.unwrap();
                let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut len = 0;
                let mut first = String::new();
                r.read_line(&mut first).unwrap();
                assert!(first.starts_with("POST /v1/logs HTTP/1.1"), "{first}");
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h == "\r\n" {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("content-type:") {
                        assert!(lower.contains("application/json"));
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let _ = tx.send(serde_json::from_slice(&body).unwrap());
                let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\n{{}}");
            }
        });
        (url, rx)
    }

    fn settings(endpoint: String) -> OtlpSettings {
        OtlpSettings {
            endpoint,
            batch: 2,
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(2),
            service_name: "perfgate-test".into(),
            queue: 100,
        }
    }

    fn line(id: u64, status: u16) -> LogLine {
        LogLine {
            id,
            level: if status >= 500 {
                Level::Error
            } else {
                Level::Info
            },
            kind: "access".into(),
            message: format!("GET /x \"quoted\" {status}"),
            method: Some("GET".into()),
            path: Some("/x".into()),
            status: Some(status),
            latency_ms: Some(1.25),
            user: Some("42".into()),
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            ..LogLine::default()
        }
    }

    /// Lines arrive at the collector as OTLP JSON: batched, with the
    /// service name, time in nanoseconds, severity, body and attributes.
    #[test]
    fn lines_reach_the_collector_as_otlp_json() {
        let (url, bodies) = collector(200);
        let otlp = Otlp::start(settings(url)).unwrap();
        for (i, s) in [200, 503, 404].into_iter().enumerate() {
            otlp.push(&line(1_765_000_000_000_000 + i as u64, s));
        }
        let counters = otlp.counters();
        drop(otlp);
        let mut records = Vec::new();
        while let Ok(body) = bodies.recv_timeout(Duration::from_secs(5)) {
            let rl = &body["resourceLogs"][0];
            assert_eq!(
                rl["resource"]["attributes"][0]["value"]["stringValue"],
                "perfgate-test"
            );
            let recs = rl["scopeLogs"][0]["logRecords"].as_array().unwrap();
            assert!(recs.len() <= 2, "batches of at most 2");
            records.extend(recs.iter().cloned());
            if records.len() == 3 {
                break;
            }
        }
        assert_eq!(records.len(), 3);
        let r = &records[1];
        assert_eq!(r["timeUnixNano"], "1765000000000001000");
        assert_eq!(r["severityNumber"], 17);
        assert_eq!(r["severityText"], "ERROR");
        assert_eq!(r["body"]["stringValue"], "GET /x \"quoted\" 503");
        assert_eq!(r["traceId"], "0af7651916cd43dd8448eb211c80319c");
        let attr = |k: &str| {
            r["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == k)
                .map(|a| a["value"].clone())
        };
        assert_eq!(
            attr("http.response.status_code").unwrap()["intValue"],
            "503"
        );
        assert_eq!(attr("enduser.id").unwrap()["stringValue"], "42");
        assert_eq!(attr("perfgate.latency_ms").unwrap()["doubleValue"], 1.25);
        assert_eq!(counters.snapshot().sent, 3);
    }

    /// A collector that refuses, or is not there, costs the batch (counted,
    /// with the reason), never the caller.
    #[test]
    fn failures_are_counted_not_raised() {
        let (url, _bodies) = collector(503);
        let otlp = Otlp::start(settings(url)).unwrap();
        otlp.push(&line(1, 200));
        let c = otlp.counters();
        drop(otlp);
        let s = c.snapshot();
        assert_eq!((s.sent, s.failed), (0, 1));
        assert!(s.last_error.unwrap().contains("503"));

        // Nobody listens on a port just freed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let otlp = Otlp::start(settings(format!("http://{port}/v1/logs"))).unwrap();
        otlp.push(&line(2, 200));
        let c = otlp.counters();
        drop(otlp);
        assert_eq!(c.snapshot().failed, 1);
    }
}
