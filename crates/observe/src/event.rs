//! One [`RequestEvent`] per finished request: the single source of every
//! per-request outcome (admin statistics, Prometheus metrics, and the access
//! log, traces and analytics that plug in as [`EventSink`]s).
//!
//! Building an event allocates nothing: names are shared `Arc<str>`s, the
//! method is `http::Method` (standard methods are inline), times are
//! `Duration`s and the cache outcome is a bit set.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::CacheEvent;

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// A client request on the proxy listener.
    Client,
    /// One item of a `POST /batch` call.
    BatchItem,
    /// A background refresh (stale-while-revalidate).
    Refresh,
    /// A cache fill whose client went away before it ended.
    Fill,
    /// An async job's call to the upstream.
    Job,
    /// A warm-up fetch.
    Warmup,
}

impl RequestKind {
    /// The label used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Client => "client",
            RequestKind::BatchItem => "batch_item",
            RequestKind::Refresh => "refresh",
            RequestKind::Fill => "fill",
            RequestKind::Job => "job",
            RequestKind::Warmup => "warmup",
        }
    }
}

/// The cache layer that answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheLayer {
    /// The in-process cache.
    L1,
    /// The shared Redis cache.
    L2,
}

/// The cache outcomes one request went through, as a bit set: a
/// revalidation is a `miss` and `revalidated`; stale-if-error is a `miss`
/// and `stale`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheOutcomes(u8);

impl CacheOutcomes {
    fn bit(e: CacheEvent) -> u8 {
        1 << (e as u8)
    }

    /// Adds `e`.
    pub fn insert(&mut self, e: CacheEvent) {
        self.0 |= Self::bit(e);
    }

    /// Whether `e` happened.
    pub fn contains(self, e: CacheEvent) -> bool {
        self.0 & Self::bit(e) != 0
    }

    /// True when the request never touched the cache.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every outcome, in [`CacheEvent`] order.
    pub fn iter(self) -> impl Iterator<Item = CacheEvent> {
        CacheEvent::ALL
            .into_iter()
            .filter(move |e| self.contains(*e))
    }

    /// Both sets.
    pub fn union(self, o: CacheOutcomes) -> CacheOutcomes {
        CacheOutcomes(self.0 | o.0)
    }
}

/// Time spent in each phase of a request. A phase the request did not go
/// through stays zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Guards, routing, identity (JWT) and clamps.
    pub guard: Duration,
    /// Rate limits (a shared limit waits for Redis).
    pub limit: Duration,
    /// The in-process cache lookup.
    pub l1: Duration,
    /// The Redis lookup.
    pub l2: Duration,
    /// Waiting for another request's fetch of the same key.
    pub coalesce_wait: Duration,
    /// Waiting for a connection slot of the upstream pool.
    pub connect: Duration,
    /// Upstream: from sending the request to the response head, every
    /// attempt and backoff included.
    pub ttfb: Duration,
    /// Reading the upstream body (for the cache).
    pub upstream_body: Duration,
    /// Compressing the response (first use of an encoding).
    pub encode: Duration,
    /// The whole request, to the response head.
    pub total: Duration,
}

/// One finished request.
#[derive(Clone, Debug)]
pub struct RequestEvent {
    /// The request's log id ([`log_id`]), given by the [`EventFeed`] as
    /// it hands the event on (0 before): what the access log, the log
    /// store and the slow-request lists call the request.
    pub id: u64,
    /// When the response head was ready.
    pub at: SystemTime,
    /// Where the request came from.
    pub kind: RequestKind,
    /// The route that took it (none for 404s and guard refusals).
    pub route: Option<Arc<str>>,
    /// The route's path template (`/events/{id}`, or its prefix).
    pub template: Option<Arc<str>>,
    /// The method.
    pub method: http::Method,
    /// The target as received (its bytes are shared, not copied).
    pub target: http::Uri,
    /// The status sent.
    pub status: u16,
    /// Request body bytes as declared by `Content-Length` (0 without a
    /// body, or for a chunked one).
    pub bytes_in: u64,
    /// Response body bytes, known when the head is ready: a cached body,
    /// or the declared length of a streamed one (0 for a chunked stream).
    pub bytes_out: u64,
    /// Time per phase.
    pub phases: PhaseTimes,
    /// The cache outcomes.
    pub cache: CacheOutcomes,
    /// The layer that answered, for hits.
    pub layer: Option<CacheLayer>,
    /// Why the response was not stored (the `Cache-Status` detail:
    /// `no-store`, `private`, `no-cache`, …).
    pub detail: Option<&'static str>,
    /// Body bytes an upstream call did not have to send (hits, coalescing).
    pub upstream_bytes_saved: u64,
    /// The upstream server that answered last.
    pub upstream: Option<Arc<str>>,
    /// Upstream attempts (retries included).
    pub attempts: u32,
    /// The authenticated user (JWT subject).
    pub user: Option<Arc<str>>,
    /// The client's address.
    pub client: IpAddr,
    /// The trace this request belongs to (filled by tracing).
    pub trace_id: Option<u128>,
    /// The error kind, when the gateway answered with an error.
    pub error: Option<&'static str>,
}

/// The last id handed out by [`log_id`].
static LAST_ID: AtomicU64 = AtomicU64::new(0);

/// A log id for something that happened `at`: microseconds since the Unix
/// epoch, bumped past the last id given so that ids are unique and
/// increasing within the process (request events and perfgate's own log
/// lines share them).
pub fn log_id(at: SystemTime) -> u64 {
    let micros = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut last = LAST_ID.load(Relaxed);
    loop {
        let id = micros.max(last + 1);
        match LAST_ID.compare_exchange_weak(last, id, Relaxed, Relaxed) {
            Ok(_) => return id,
            Err(now) => last = now,
        }
    }
}

/// A consumer of request events (access log, traces, analytics). Called
/// off the request path, from one background task, in order.
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event.
    fn on_event(&self, event: &RequestEvent);
}

/// Events waiting for the sinks; past this many, new events are dropped
/// (and counted) rather than slow the requests down or grow without bound.
pub const EVENT_QUEUE: usize = 8192;

/// Hands request events to the sinks, off the request path.
#[derive(Default)]
pub struct EventBus {
    tx: OnceLock<mpsc::Sender<RequestEvent>>,
    dropped: AtomicU64,
}

impl EventBus {
    /// Connects `sinks`: every event published from now on is queued for
    /// them. Returns the [`EventFeed`] the caller runs as a background
    /// service; only the first call connects (None after that).
    pub fn subscribe(&self, sinks: Vec<Arc<dyn EventSink>>) -> Option<EventFeed> {
        let (tx, rx) = mpsc::channel::<RequestEvent>(EVENT_QUEUE);
        self.tx.set(tx).ok()?;
        Some(EventFeed { rx, sinks })
    }

    /// Queues `ev` for the sinks (nothing to do without any).
    pub fn publish(&self, ev: RequestEvent) {
        if let Some(tx) = self.tx.get()
            && tx.try_send(ev).is_err()
        {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Events dropped because the sinks fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// Whether any sink listens.
    pub fn active(&self) -> bool {
        self.tx.get().is_some()
    }
}

/// Hands queued events to the sinks, in order.
pub struct EventFeed {
    rx: mpsc::Receiver<RequestEvent>,
    sinks: Vec<Arc<dyn EventSink>>,
}

impl EventFeed {
    /// Feeds the sinks until `stop` resolves, then hands them what is
    /// still queued and returns.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(mut ev) => self.deliver(&mut ev),
                    None => return,
                },
                () = &mut stop => break,
            }
        }
        while let Ok(mut ev) = self.rx.try_recv() {
            self.deliver(&mut ev);
        }
    }

    fn deliver(&self, ev: &mut RequestEvent) {
        ev.id = log_id(ev.at);
        for s in &self.sinks {
            s.on_event(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Count(Mutex<Vec<u16>>);

    impl EventSink for Count {
        fn on_event(&self, e: &RequestEvent) {
            self.0.lock().expect("sink").push(e.status);
        }
    }

    fn event(status: u16) -> RequestEvent {
        RequestEvent {
            id: 0,
            at: SystemTime::now(),
            kind: RequestKind::Client,
            route: None,
            template: None,
            method: http::Method::GET,
            target: http::Uri::from_static("/"),
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

    /// What is queued when the feed is asked to stop still reaches the
    /// sinks, in order; nothing is queued without a subscriber.
    #[tokio::test]
    async fn a_stopping_feed_delivers_what_is_queued() {
        let bus = EventBus::default();
        assert!(!bus.active());
        bus.publish(event(100));
        let sink = Arc::new(Count::default());
        let feed = bus
            .subscribe(vec![sink.clone() as Arc<dyn EventSink>])
            .expect("first subscriber");
        assert!(bus.subscribe(Vec::new()).is_none(), "only one feed");
        for s in [200, 304, 503] {
            bus.publish(event(s));
        }
        feed.run(std::future::ready(())).await;
        assert_eq!(*sink.0.lock().expect("sink"), vec![200, 304, 503]);
        assert_eq!(bus.dropped(), 0);
    }

    /// Log ids are unique and increasing even for one instant, and follow
    /// the clock otherwise.
    #[test]
    fn log_ids_are_unique_and_follow_the_clock() {
        let at = SystemTime::now();
        let a = log_id(at);
        let b = log_id(at);
        assert!(b > a);
        let later = log_id(at + Duration::from_secs(10));
        assert!(later >= a + 10_000_000);
    }
}
