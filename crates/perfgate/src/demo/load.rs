//! The demo's load generator: a fixed request mix from N concurrent
//! workers for a set time, with latency in an HDR histogram.
//!
//! Every worker repeats the same mix (shifted, so they do not march in
//! step), which makes a run against the backend and a run through perfgate
//! comparable request for request.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{ACCEPT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

/// Event ids the detail requests draw from.
const DETAIL_IDS: u64 = 20;

/// Pages the link-analysis requests ask about.
const ANALYZE_URLS: [&str; 5] = [
    "https%3A%2F%2Fexample.com%2Fpricing",
    "https%3A%2F%2Fexample.com%2Fblog%2Flaunch",
    "https%3A%2F%2Fdocs.example.org%2Fguide",
    "https%3A%2F%2Fnews.example.net%2F2025%2F06%2Fstory",
    "https%3A%2F%2Fshop.example.io%2Fitem%2F42",
];

/// Progress redraws per second.
const PROGRESS_TICK: Duration = Duration::from_millis(100);
const PROGRESS_WIDTH: usize = 20;

/// One kind of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /api/v1/events`.
    EventsList,
    /// `GET /api/v1/events/{id}`, id in 1..=20.
    EventDetail,
    /// `GET /api/v1/analyze?url=…`, one of five pages.
    Analyze,
    /// `POST /api/v1/chat`.
    Chat,
}

/// The mix every worker repeats: 55 % list, 30 % detail, 10 % analyze,
/// 5 % chat, interleaved so slow requests are spread out.
pub const MIX: [Kind; 20] = {
    use Kind::*;
    [
        EventsList,
        EventDetail,
        EventsList,
        Analyze,
        EventsList,
        EventDetail,
        EventsList,
        EventDetail,
        EventsList,
        Chat,
        EventsList,
        EventDetail,
        EventsList,
        Analyze,
        EventsList,
        EventDetail,
        EventsList,
        EventDetail,
        EventsList,
        EventsList,
    ]
};

/// What to load and for how long.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Server to send the requests to (plain HTTP/1.1).
    pub target: SocketAddr,
    /// Concurrent workers, each with at most one request in flight.
    pub concurrency: usize,
    /// Time during which workers start new requests; requests in flight at
    /// the end are allowed to finish.
    pub duration: Duration,
    /// Shown before the progress bar.
    pub label: String,
}

/// The outcome of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadReport {
    /// Completed requests, errors included.
    pub requests: u64,
    /// Transport failures and responses other than 2xx/304.
    pub errors: u64,
    /// Wall time from the first request to the last completed one.
    pub elapsed: Duration,
    /// Median latency (until the whole body was read).
    pub p50: Duration,
    /// 95th percentile latency.
    pub p95: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Completed requests per second.
    pub rps: f64,
    /// Body bytes received as sent on the wire (compressed when the server
    /// compressed them).
    pub body_bytes: u64,
}

/// Runs the mix against `opts.target` and reports what it saw.
pub async fn run(opts: &LoadOptions) -> anyhow::Result<LoadReport> {
    let plan = Arc::new(Plan::new(opts.target)?);
    let concurrency = opts.concurrency.max(1);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_max_idle_per_host(concurrency)
        .pool_idle_timeout(Duration::from_secs(30));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = builder.build(connector);

    let started = Instant::now();
    let deadline = started + opts.duration;
    let done = Arc::new(AtomicU64::new(0));
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::spawn(opts.label.clone(), started, opts.duration, done.clone()));

    let workers: Vec<_> = (0..concurrency)
        .map(|n| {
            let worker = Worker {
                client: client.clone(),
                plan: plan.clone(),
                done: done.clone(),
                deadline,
                slot: n % MIX.len(),
                // Distinct odd seeds give each worker its own id sequence.
                rng: 0x9E37_79B9_7F4A_7C15 ^ (((n as u64) << 1) | 1),
            };
            tokio::spawn(worker.run())
        })
        .collect();

    let mut total = Tally::new()?;
    let mut failure = None;
    for w in workers {
        match w.await {
            Ok(Ok(tally)) => total.merge(&tally)?,
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow!("load worker failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    if let Some(p) = progress {
        p.stop().await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(total.report(elapsed))
}

/// The requests of the mix, built once.
struct Plan {
    events: Uri,
    details: Vec<Uri>,
    analyze: Vec<Uri>,
    chat: Uri,
    chat_body: Bytes,
}

impl Plan {
    fn new(target: SocketAddr) -> anyhow::Result<Self> {
        let uri = |path: &str| -> anyhow::Result<Uri> {
            format!("http://{target}{path}")
                .parse()
                .with_context(|| format!("building the URL of {path}"))
        };
        Ok(Self {
            events: uri("/api/v1/events")?,
            details: (1..=DETAIL_IDS)
                .map(|id| uri(&format!("/api/v1/events/{id}")))
                .collect::<Result<_, _>>()?,
            analyze: ANALYZE_URLS
                .iter()
                .map(|u| uri(&format!("/api/v1/analyze?url={u}")))
                .collect::<Result<_, _>>()?,
            chat: uri("/api/v1/chat")?,
            chat_body: Bytes::from_static(
                b"{\"message\":\"Which events in Lisbon are good for beginners?\"}",
            ),
        })
    }

    fn request(&self, kind: Kind, pick: u64) -> Request<Full<Bytes>> {
        let (method, uri, body) = match kind {
            Kind::EventsList => (Method::GET, &self.events, Bytes::new()),
            Kind::EventDetail => (Method::GET, pick_from(&self.details, pick), Bytes::new()),
            Kind::Analyze => (Method::GET, pick_from(&self.analyze, pick), Bytes::new()),
            Kind::Chat => (Method::POST, &self.chat, self.chat_body.clone()),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
        req.headers_mut()
            .insert(ACCEPT_ENCODING, HeaderValue::from_static("br, gzip"));
        if kind == Kind::Chat {
            req.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        req
    }
}

fn pick_from(uris: &[Uri], pick: u64) -> &Uri {
    // `uris` is built from non-empty constants, so the modulo is in range.
    &uris[(pick % uris.len() as u64) as usize]
}

struct Worker {
    client: Client<HttpConnector, Full<Bytes>>,
    plan: Arc<Plan>,
    done: Arc<AtomicU64>,
    deadline: Instant,
    slot: usize,
    rng: u64,
}

impl Worker {
    async fn run(mut self) -> anyhow::Result<Tally> {
        let mut tally = Tally::new()?;
        while Instant::now() < self.deadline {
            let kind = MIX[self.slot % MIX.len()];
            self.slot += 1;
            let pick = self.next_random();
            let req = self.plan.request(kind, pick);
            let start = Instant::now();
            let outcome = self.send(req).await;
            let latency = start.elapsed();
            tally.requests += 1;
            self.done.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok((status, bytes)) => {
                    tally.record(latency);
                    tally.body_bytes += bytes;
                    if !(status.is_success() || status == StatusCode::NOT_MODIFIED) {
                        tally.errors += 1;
                    }
                }
                Err(_) => {
                    tally.errors += 1;
                    // A refused connection fails at once; pausing keeps a
                    // dead target from turning the worker into a busy loop.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        Ok(tally)
    }

    /// Sends one request and reads its body, counting bytes without
    /// buffering them.
    async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, u64)> {
        let rsp = self.client.request(req).await?;
        let status = rsp.status();
        let mut body = rsp.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame?.data_ref() {
                bytes += data.len() as u64;
            }
        }
        Ok((status, bytes))
    }

    /// xorshift64: enough to spread detail ids, no dependency needed.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// Per-worker counts, merged at the end so workers never share a lock.
struct Tally {
    latency_us: Histogram<u64>,
    requests: u64,
    errors: u64,
    body_bytes: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        // 1 µs to 10 min at 3 significant digits.
        let latency_us = Histogram::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| anyhow!("latency histogram: {e:?}"))?;
        Ok(Self {
            latency_us,
            requests: 0,
            errors: 0,
            body_bytes: 0,
        })
    }

    fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us.max(1));
    }

    fn merge(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latency_us
            .add(&other.latency_us)
            .map_err(|e| anyhow!("merging latency histograms: {e:?}"))?;
        self.requests += other.requests;
        self.errors += other.errors;
        self.body_bytes += other.body_bytes;
        Ok(())
    }

    fn report(&self, elapsed: Duration) -> LoadReport {
        let q = |q: f64| {
            if self.latency_us.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_micros(self.latency_us.value_at_quantile(q))
            }
        };
        let secs = elapsed.as_secs_f64();
        LoadReport {
            requests: self.requests,
            errors: self.errors,
            elapsed,
            p50: q(0.50),
            p95: q(0.95),
            p99: q(0.99),
            rps: if secs > 0.0 {
                self.requests as f64 / secs
            } else {
                0.0
            },
            body_bytes: self.body_bytes,
        }
    }
}

/// The `\r[#####.....] 3.0s/5.0s  1234 req` line on a terminal's stderr.
struct Progress {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn spawn(label: String, started: Instant, total: Duration, done: Arc<AtomicU64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_TICK);
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let line = progress_line(
                    &label,
                    started.elapsed(),
                    total,
                    done.load(Ordering::Relaxed),
                );
                let mut err = std::io::stderr().lock();
                // Progress is best effort: a closed stderr must not fail the run.
                let _ = write!(err, "\r{line}");
                let _ = err.flush();
            }
        });
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        // Clear the line so the report starts on a clean one.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

/// Formats one progress line (without the leading `\r`).
pub fn progress_line(label: &str, elapsed: Duration, total: Duration, requests: u64) -> String {
    let fraction = if total.is_zero() {
        1.0
    } else {
        (elapsed.as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0)
    };
    let filled = ((fraction * PROGRESS_WIDTH as f64).round() as usize).min(PROGRESS_WIDTH);
    let shown = elapsed.min(total);
    format!(
        "{label}[{}{}] {:.1}s/{:.1}s  {requests} req",
        "#".repeat(filled),
        ".".repeat(PROGRESS_WIDTH - filled),
        shown.as_secs_f64(),
        total.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_has_the_documented_shares() {
        let share = |k: Kind| MIX.iter().filter(|m| **m == k).count() * 100 / MIX.len();
        assert_eq!(share(Kind::EventsList), 55);
        assert_eq!(share(Kind::EventDetail), 30);
        assert_eq!(share(Kind::Analyze), 10);
        assert_eq!(share(Kind::Chat), 5);
    }

    #[test]
    fn plan_builds_requests() {
        let plan = Plan::new("127.0.0.1:8080".parse().unwrap()).unwrap();
        let req = plan.request(Kind::EventDetail, 41);
        assert_eq!(req.uri(), "http://127.0.0.1:8080/api/v1/events/2");
        assert_eq!(req.headers()[ACCEPT_ENCODING], "br, gzip");
        let req = plan.request(Kind::Chat, 0);
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.headers()[CONTENT_TYPE], "application/json");
        let req = plan.request(Kind::Analyze, 7);
        assert_eq!(req.uri().path(), "/api/v1/analyze");
    }

    #[test]
    fn progress_line_format() {
        let line = progress_line("", Duration::from_secs(3), Duration::from_secs(5), 1234);
        assert_eq!(line, "[############........] 3.0s/5.0s  1234 req");
        let over = progress_line("x ", Duration::from_secs(9), Duration::from_secs(5), 1);
        assert_eq!(over, "x [####################] 5.0s/5.0s  1 req");
    }

    #[test]
    fn tally_percentiles() {
        let mut a = Tally::new().unwrap();
        let mut b = Tally::new().unwrap();
        for ms in 1..=100 {
            a.record(Duration::from_millis(ms));
            a.requests += 1;
        }
        b.requests = 1;
        b.errors = 1;
        b.body_bytes = 10;
        a.merge(&b).unwrap();
        let r = a.report(Duration::from_secs(2));
        assert_eq!(r.requests, 101);
        assert_eq!(r.errors, 1);
        assert_eq!(r.body_bytes, 10);
        assert!((r.rps - 50.5).abs() < 1e-9);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        assert!((ms(r.p50) - 50.0).abs() < 0.1, "{:?}", r.p50);
        assert!((ms(r.p99) - 99.0).abs() < 0.1, "{:?}", r.p99);
    }

    #[tokio::test]
    async fn runs_against_the_sample_backend() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = super::super::backend::Backend::spawn(listener).unwrap();
        let report = run(&LoadOptions {
            target: backend.addr(),
            // Workers 0 and 1 start on the list and a detail (50 and 20 ms),
            // so the run ends before any slow request is sent.
            concurrency: 2,
            duration: Duration::from_millis(60),
            label: String::new(),
        })
        .await
        .unwrap();
        assert!(report.requests >= 2, "{report:?}");
        assert_eq!(report.errors, 0);
        assert!(report.body_bytes > 0);
        assert_eq!(backend.stats().api_calls(), report.requests);
        backend.shutdown().await;
    }
}
