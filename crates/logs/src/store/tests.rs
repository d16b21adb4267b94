//! The store against real files in a temporary directory.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::partition::{HOUR_US, partition_name};
use super::search::newest;
use super::*;
use crate::analytics::{AnalyticsRequest, By};
use crate::export::ExportRequest;
use crate::line::Level;
use crate::query::Expr;

/// A directory under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "perfgate-logs-{name}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 2026-12-06T00:00:00Z in µs.
const BASE: u64 = 1_796_515_200_000_000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn settings(dir: &Path) -> StoreSettings {
    StoreSettings {
        dir: dir.to_path_buf(),
        max_age: Duration::from_secs(100 * 365 * 24 * 3600),
        commit_interval: Duration::from_millis(100),
        queue: 4096,
        writer_memory: 15_000_000,
        ..StoreSettings::default()
    }
}

fn access(
    id: u64,
    method: &str,
    path: &str,
    route: &str,
    status: u16,
    latency_ms: f64,
    user: &str,
) -> LogLine {
    LogLine {
        id,
        level: Level::for_status(status),
        kind: "access".into(),
        message: format!("{method} {path} {status}"),
        method: Some(method.into()),
        path: Some(path.into()),
        route: Some(route.into()),
        status: Some(status),
        latency_ms: Some(latency_ms),
        user: Some(user.into()),
        ip: Some(format!("10.0.0.{}", id % 4)),
        ..LogLine::default()
    }
}

/// 30 access lines and 2 app lines, one millisecond apart.
fn scripted() -> Vec<LogLine> {
    let mut lines: Vec<LogLine> = (0..30u64)
        .map(|i| {
            let (path, route) = if i % 2 == 0 {
                (format!("/events/{i}"), "/events/{id}")
            } else {
                (format!("/users/{i}"), "/users/{id}")
            };
            let status = match i {
                7 => 503,
                _ if i % 10 == 3 => 500,
                _ if i % 10 == 4 => 404,
                _ => 200,
            };
            let mut line = access(
                BASE + i * 1000 + 1,
                if i % 4 == 1 { "POST" } else { "GET" },
                &path,
                route,
                status,
                i as f64 * 50.0,
                &(40 + i % 5).to_string(),
            );
            line.cache = Some(["hit", "miss revalidated", "miss"][(i % 3) as usize].into());
            line
        })
        .collect();
    for (i, message) in ["cache warmed up for events", "config reloaded"]
        .into_iter()
        .enumerate()
    {
        lines.push(LogLine {
            id: BASE + 40_000 + i as u64,
            kind: "app".into(),
            message: message.into(),
            target: Some("perfgate::warm".into()),
            ..LogLine::default()
        });
    }
    lines
}

fn open_with(dir: &Path, lines: &[LogLine]) -> LogStore {
    let store = LogStore::open(settings(dir)).unwrap();
    for line in lines {
        assert!(store.push(line.clone()));
    }
    store.flush().unwrap();
    store
}

/// Ids matching `expr`, newest first.
fn matching(store: &LogStore, expr: Expr) -> Vec<u64> {
    let query = store.0.shared.translator.query(&expr).unwrap();
    newest(&store.0.shared, query.as_ref(), 0, u64::MAX, 10_000)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// Ids of the lines that satisfy `keep`, newest first.
fn expected(lines: &[LogLine], keep: impl Fn(&LogLine) -> bool) -> Vec<u64> {
    let mut ids: Vec<u64> = lines.iter().filter(|l| keep(l)).map(|l| l.id).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

fn range(field: &str, lower: Bound<f64>, upper: Bound<f64>) -> Expr {
    Expr::Range {
        field: field.into(),
        lower,
        upper,
    }
}

fn keyword(field: &str, value: &str) -> Expr {
    Expr::Keyword {
        field: field.into(),
        value: value.into(),
        prefix: false,
    }
}

fn text(field: Option<&str>, text: &str, phrase: bool) -> Expr {
    Expr::Text {
        field: field.map(Into::into),
        text: text.into(),
        phrase,
    }
}

#[test]
fn field_range_text_and_boolean_queries() {
    let dir = TempDir::new("queries");
    let lines = scripted();
    let store = open_with(dir.path(), &lines);
    let status = |l: &LogLine| l.status.unwrap_or(0);
    let path = |l: &LogLine| l.path.clone().unwrap_or_default();

    assert_eq!(matching(&store, Expr::All).len(), 32);
    assert_eq!(
        matching(
            &store,
            range("status", Bound::Included(500.0), Bound::Included(500.0))
        ),
        expected(&lines, |l| status(l) == 500)
    );
    assert_eq!(
        matching(&store, keyword("route", "/events/{id}")),
        expected(&lines, |l| l.route.as_deref() == Some("/events/{id}"))
    );
    assert_eq!(
        matching(&store, keyword("user", "42")),
        expected(&lines, |l| l.user.as_deref() == Some("42"))
    );
    assert_eq!(
        matching(
            &store,
            range("latency_ms", Bound::Excluded(1000.0), Bound::Unbounded)
        ),
        expected(&lines, |l| l.latency_ms.is_some_and(|v| v > 1000.0))
    );
    assert_eq!(
        matching(
            &store,
            range("status", Bound::Included(500.0), Bound::Included(599.0))
        ),
        expected(&lines, |l| (500..=599).contains(&status(l)))
    );
    // Free text: message or path.
    assert_eq!(
        matching(&store, text(None, "events", false)),
        expected(&lines, |l| l.message.contains("events"))
    );
    assert_eq!(
        matching(&store, text(None, "USERS", false)),
        expected(&lines, |l| path(l).starts_with("/users"))
    );
    assert_eq!(
        matching(&store, text(None, "config reloaded", true)).len(),
        1
    );
    assert_eq!(
        matching(&store, text(None, "reloaded config", true)).len(),
        0
    );
    assert_eq!(
        matching(&store, text(Some("message"), "post users", false)),
        expected(&lines, |l| l.method.as_deref() == Some("POST")
            && path(l).starts_with("/users"))
    );
    // An exact path, not a longer one.
    assert_eq!(
        matching(&store, text(Some("path"), "/events/2", true)),
        expected(&lines, |l| path(l) == "/events/2")
    );
    assert_eq!(
        matching(&store, text(Some("path"), "events", false)),
        expected(&lines, |l| path(l).starts_with("/events"))
    );
    // Each word of the cache outcome.
    assert_eq!(
        matching(&store, keyword("cache", "revalidated")),
        expected(&lines, |l| l.cache.as_deref() == Some("miss revalidated"))
    );
    assert_eq!(
        matching(&store, keyword("cache", "miss")),
        expected(&lines, |l| l
            .cache
            .as_deref()
            .is_some_and(|c| c.starts_with("miss")))
    );
    assert_eq!(
        matching(&store, keyword("level", "ERROR")),
        expected(&lines, |l| status(l) >= 500)
    );
    assert_eq!(
        matching(&store, keyword("method", "post")),
        expected(&lines, |l| l.method.as_deref() == Some("POST"))
    );
    assert_eq!(
        matching(
            &store,
            Expr::Keyword {
                field: "route".into(),
                value: "/us".into(),
                prefix: true
            }
        ),
        expected(&lines, |l| l.route.as_deref() == Some("/users/{id}"))
    );
    // AND, OR, NOT and nesting.
    assert_eq!(
        matching(
            &store,
            Expr::And(vec![
                keyword("route", "/events/{id}"),
                Expr::Not(Box::new(range(
                    "status",
                    Bound::Included(200.0),
                    Bound::Included(200.0)
                )))
            ])
        ),
        expected(&lines, |l| l.route.as_deref() == Some("/events/{id}")
            && status(l) != 200)
    );
    assert_eq!(
        matching(
            &store,
            Expr::Or(vec![
                keyword("user", "42"),
                range("status", Bound::Included(404.0), Bound::Included(404.0))
            ])
        ),
        expected(&lines, |l| l.user.as_deref() == Some("42")
            || status(l) == 404)
    );
    assert_eq!(
        matching(&store, Expr::Not(Box::new(keyword("kind", "access")))),
        expected(&lines, |l| l.kind == "app")
    );
    assert_eq!(
        matching(
            &store,
            Expr::And(vec![
                Expr::Or(vec![keyword("user", "41"), keyword("user", "43")]),
                Expr::Not(Box::new(text(None, "users", false))),
            ])
        ),
        expected(&lines, |l| matches!(l.user.as_deref(), Some("41" | "43"))
            && !path(l).starts_with("/users"))
    );
    // Wrong kinds are errors, not panics.
    let t = &store.0.shared.translator;
    assert!(t.query(&keyword("status", "500")).is_err());
    assert!(
        t.query(&range("user", Bound::Unbounded, Bound::Unbounded))
            .is_err()
    );
    assert!(t.query(&text(Some("route"), "x", false)).is_err());
    assert!(
        t.query(&range(
            "status",
            Bound::Included(f64::NAN),
            Bound::Unbounded
        ))
        .is_err()
    );
    // Lines come back whole.
    let page = store
        .search(&SearchRequest {
            limit: 1,
            ..SearchRequest::default()
        })
        .unwrap();
    assert_eq!(page.lines, vec![lines[31].clone()]);
}

#[test]
fn bad_requests_are_errors() {
    let dir = TempDir::new("bad");
    let store = open_with(dir.path(), &scripted());
    let req = |from, to, cursor: Option<&str>| SearchRequest {
        from,
        to,
        cursor: cursor.map(Into::into),
        limit: 10,
        ..SearchRequest::default()
    };
    assert!(matches!(
        store.search(&req(Some(5), Some(4), None)),
        Err(SearchError::Range(_))
    ));
    assert!(matches!(
        store.search(&req(None, None, Some("not a cursor"))),
        Err(SearchError::Cursor)
    ));
    assert!(matches!(
        store.search(&req(None, None, Some(""))),
        Err(SearchError::Cursor)
    ));
    assert_eq!(
        store
            .search(&req(Some(5), Some(5), None))
            .unwrap()
            .lines
            .len(),
        0
    );
    let limits = |limit| {
        store
            .search(&SearchRequest {
                limit,
                ..SearchRequest::default()
            })
            .unwrap()
            .lines
            .len()
    };
    assert_eq!(limits(0), 1);
    assert_eq!(limits(usize::MAX), 32);
}

#[test]
fn pages_by_cursor_across_partitions() {
    let dir = TempDir::new("pages");
    let lines: Vec<LogLine> = (0..50u64)
        .map(|i| {
            access(
                BASE + (i / 25) * HOUR_US + i * 1000 + 1,
                "GET",
                &format!("/p/{i}"),
                "/p/{n}",
                200,
                1.0,
                "u",
            )
        })
        .collect();
    let store = open_with(dir.path(), &lines);
    assert_eq!(store.stats().partitions, 2);
    let all = expected(&lines, |_| true);
    let mut seen = Vec::new();
    let mut cursor = None;
    for page_no in 0.. {
        let page = store
            .search(&SearchRequest {
                limit: 7,
                cursor: cursor.clone(),
                ..SearchRequest::default()
            })
            .unwrap();
        seen.extend(page.lines.iter().map(|l| l.id));
        // Newer lines arriving meanwhile do not shift the pages.
        store.push(access(
            BASE + 2 * HOUR_US + page_no,
            "GET",
            "/new",
            "/new",
            200,
            1.0,
            "u",
        ));
        store.flush().unwrap();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, all);
    // Within a time range.
    let page = store
        .search(&SearchRequest {
            from: Some(BASE),
            to: Some(BASE + HOUR_US),
            limit: 1000,
            ..SearchRequest::default()
        })
        .unwrap();
    assert_eq!(page.lines.len(), 25);
    assert!(page.next_cursor.is_none());
}

#[test]
fn pushed_lines_are_searchable_within_a_second() {
    let dir = TempDir::new("latency");
    let store = LogStore::open(StoreSettings {
        commit_interval: Duration::from_millis(500),
        ..settings(dir.path())
    })
    .unwrap();
    let start = now_us();
    let pusher = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut pushed = Vec::with_capacity(1000);
            let t0 = Instant::now();
            for i in 0..1000u64 {
                // A steady pace over about two seconds.
                let due = t0 + Duration::from_micros(i * 2000);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let id = start + i + 1;
                assert!(store.push(access(id, "GET", "/t", "/t", 200, 1.0, "u")));
                pushed.push(Instant::now());
            }
            pushed
        })
    };
    let mut seen_at: Vec<Option<Instant>> = vec![None; 1000];
    let mut next = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while next < 1000 && Instant::now() < deadline {
        let page = store
            .search(&SearchRequest {
                from: Some(start + next as u64 + 1),
                limit: 1000,
                ..SearchRequest::default()
            })
            .unwrap();
        let now = Instant::now();
        for line in &page.lines {
            let i = (line.id - start - 1) as usize;
            seen_at[i].get_or_insert(now);
        }
        while next < 1000 && seen_at[next].is_some() {
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pushed = pusher.join().unwrap();
    let mut delays: Vec<Duration> = pushed
        .iter()
        .zip(&seen_at)
        .map(|(p, s)| s.expect("every line is seen").saturating_duration_since(*p))
        .collect();
    delays.sort_unstable();
    let p99 = delays[989];
    assert!(
        p99 <= Duration::from_secs(1),
        "p99 time to searchable {p99:?}"
    );
}

#[test]
fn a_restart_keeps_the_logs() {
    let dir = TempDir::new("restart");
    let lines = scripted();
    let store = open_with(dir.path(), &lines);
    store.shutdown();
    store.shutdown();
    assert!(!store.push(lines[0].clone()));
    assert!(matches!(store.flush(), Err(StoreError::Closed)));
    drop(store);
    let store = LogStore::open(settings(dir.path())).unwrap();
    assert_eq!(matching(&store, Expr::All), expected(&lines, |_| true));
    let stats = store.stats();
    assert_eq!(
        (stats.oldest_id, stats.newest_id),
        (Some(lines[0].id), Some(lines[31].id))
    );
    // Lines pushed and dropped without a flush are committed by the last handle's drop.
    store.push(access(
        BASE + 50_000,
        "GET",
        "/late",
        "/late",
        200,
        1.0,
        "u",
    ));
    drop(store);
    let store = LogStore::open(settings(dir.path())).unwrap();
    assert_eq!(matching(&store, Expr::All).len(), 33);
}

#[test]
fn an_unreadable_partition_is_skipped() {
    let dir = TempDir::new("broken");
    let store = open_with(dir.path(), &scripted());
    drop(store);
    let hour = BASE / HOUR_US;
    std::fs::write(
        dir.path().join(partition_name(hour, 0)).join("meta.json"),
        b"{ not json",
    )
    .unwrap();
    let store = LogStore::open(settings(dir.path())).unwrap();
    assert_eq!(store.stats().partitions, 0);
    // New lines of that hour go to a partition of their own.
    store.push(access(BASE + 90_000, "GET", "/x", "/x", 200, 1.0, "u"));
    store.flush().unwrap();
    assert_eq!(matching(&store, Expr::All), vec![BASE + 90_000]);
    assert!(dir.path().join(partition_name(hour, 1)).is_dir());
}

#[test]
fn retention_by_age_removes_old_partitions() {
    let dir = TempDir::new("age");
    let now = now_us();
    let days = |d: u64| now - d * 24 * HOUR_US;
    let lines: Vec<LogLine> = [days(10), days(3), now]
        .iter()
        .map(|&id| access(id, "GET", "/a", "/a", 200, 1.0, "u"))
        .collect();
    let store = LogStore::open(StoreSettings {
        max_age: Duration::from_secs(7 * 24 * 3600),
        ..settings(dir.path())
    })
    .unwrap();
    for line in &lines {
        store.push(line.clone());
    }
    store.flush().unwrap();
    assert_eq!(matching(&store, Expr::All), vec![now, days(3)]);
    assert_eq!(store.stats().partitions, 2);
    assert!(
        !dir.path()
            .join(partition_name(days(10) / HOUR_US, 0))
            .exists()
    );
    drop(store);
    // Reopened with a shorter budget, the store drops the 3-day-old hour at once.
    let store = LogStore::open(StoreSettings {
        max_age: Duration::from_secs(2 * 24 * 3600),
        ..settings(dir.path())
    })
    .unwrap();
    store.flush().unwrap();
    assert_eq!(matching(&store, Expr::All), vec![now]);
    assert!(
        !dir.path()
            .join(partition_name(days(3) / HOUR_US, 0))
            .exists()
    );
}

#[test]
fn retention_by_size_keeps_the_newest_within_the_budget() {
    let dir = TempDir::new("size");
    let first_hour = now_us() / HOUR_US - 12;
    let store = LogStore::open(StoreSettings {
        max_bytes: 400_000,
        ..settings(dir.path())
    })
    .unwrap();
    let mut sizes = Vec::new();
    for h in 0..12u64 {
        for i in 0..300u64 {
            let mut line = access(
                (first_hour + h) * HOUR_US + i + 1,
                "GET",
                &format!("/s/{h}/{i}"),
                "/s",
                200,
                1.0,
                &format!("user{i}"),
            );
            line.error = Some(format!("{:x}", fastrand::u128(..)));
            store.push(line);
        }
        store.flush().unwrap();
        sizes.push(store.stats().disk_bytes);
    }
    let stats = store.stats();
    assert!(stats.disk_bytes <= 400_000, "{sizes:?}");
    assert!(stats.partitions < 12, "{sizes:?}");
    // The newest hour is all there.
    let newest = first_hour + 11;
    let page = store
        .search(&SearchRequest {
            from: Some(newest * HOUR_US),
            limit: 1000,
            ..SearchRequest::default()
        })
        .unwrap();
    assert_eq!(page.lines.len(), 300);
    assert!(dir.path().join(partition_name(newest, 0)).is_dir());
    assert!(!dir.path().join(partition_name(first_hour, 0)).exists());
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = TempDir::new("full");
    let store = LogStore::open(StoreSettings {
        queue: 4,
        ..settings(dir.path())
    })
    .unwrap();
    let started = Instant::now();
    let mut refused = 0;
    for i in 0..20_000u64 {
        if !store.push(access(BASE + i + 1, "GET", "/f", "/f", 200, 1.0, "u")) {
            refused += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(refused > 0);
    assert_eq!(store.stats().dropped_full, refused);
    store.flush().unwrap();
    assert_eq!(store.stats().indexed, 20_000 - refused);
}

#[test]
fn a_write_error_warns_drops_and_recovers() {
    let dir = TempDir::new("ioerror");
    let store = LogStore::open(settings(dir.path())).unwrap();
    // A file where the partition's directory should go.
    let blocker = dir.path().join(partition_name(BASE / HOUR_US, 0));
    std::fs::write(&blocker, b"in the way").unwrap();
    assert!(store.push(access(BASE + 1, "GET", "/e", "/e", 200, 1.0, "u")));
    assert!(store.push(access(BASE + 2, "GET", "/e", "/e", 200, 1.0, "u")));
    assert!(matches!(store.flush(), Err(StoreError::Write(_))));
    let stats = store.stats();
    assert_eq!(stats.dropped_write, 2);
    assert!(
        matches!(&stats.health, Health::Warn(w) if w.starts_with("cannot write the log store")),
        "{:?}",
        stats.health
    );
    std::fs::remove_file(&blocker).unwrap();
    assert!(store.push(access(BASE + 3, "GET", "/e", "/e", 200, 1.0, "u")));
    store.flush().unwrap();
    assert_eq!(store.stats().health, Health::Ok);
    assert_eq!(matching(&store, Expr::All), vec![BASE + 3]);
}

#[test]
fn analytics_counts_errors_and_percentiles() {
    let dir = TempDir::new("analytics");
    let minute = 60_000_000;
    let mut lines = vec![
        access(BASE + 1, "GET", "/a/1", "r1", 200, 10.0, "alice"),
        access(BASE + 2, "GET", "/a/1", "r1", 200, 20.0, "alice"),
        access(BASE + 3, "GET", "/b", "r2", 500, 30.0, "bob"),
        access(BASE + 4, "GET", "/a/2", "r1", 404, 40.0, "carol"),
        access(BASE + minute + 1, "GET", "/b", "r2", 503, 1000.0, "bob"),
        access(BASE + minute + 2, "GET", "/a/1", "r1", 200, 100.0, "alice"),
    ];
    lines.push(LogLine {
        id: BASE + 5,
        kind: "app".into(),
        message: "not a request".into(),
        ..LogLine::default()
    });
    let store = open_with(dir.path(), &lines);
    let req = AnalyticsRequest {
        query: String::new(),
        from: BASE,
        to: BASE + 3 * minute,
        interval: Duration::from_secs(60),
        by: Some(By::Route),
        top: 10,
    };
    let a = store.analytics(&req).unwrap();
    assert_eq!(a.total, 6);
    let counts: Vec<(u64, u64, u64)> = a
        .buckets
        .iter()
        .map(|b| (b.start, b.count, b.errors))
        .collect();
    assert_eq!(
        counts,
        vec![
            (BASE, 4, 1),
            (BASE + minute, 2, 1),
            (BASE + 2 * minute, 0, 0)
        ]
    );
    assert_eq!(a.buckets[0].error_rate, 0.25);
    assert_eq!(a.buckets[1].error_rate, 0.5);
    let near = |a: f64, b: f64| (a - b).abs() <= b * 0.02;
    assert!(near(a.buckets[0].p50_ms, 20.0), "{:?}", a.buckets[0]);
    assert!(
        near(a.buckets[0].p95_ms, 40.0) && near(a.buckets[0].p99_ms, 40.0),
        "{:?}",
        a.buckets[0]
    );
    assert!(near(a.buckets[1].p99_ms, 1000.0), "{:?}", a.buckets[1]);
    assert_eq!(
        a.buckets[0].by,
        vec![("r1".to_string(), 3), ("r2".to_string(), 1)]
    );
    assert_eq!(a.top_paths[0], ("/a/1".to_string(), 3));
    assert_eq!(
        a.top_statuses,
        vec![
            ("200".to_string(), 3),
            ("404".to_string(), 1),
            ("500".to_string(), 1),
            ("503".to_string(), 1)
        ]
    );
    assert_eq!(
        a.top_users,
        vec![
            ("alice".to_string(), 3),
            ("bob".to_string(), 2),
            ("carol".to_string(), 1)
        ]
    );
    assert_eq!(a.top_ips.iter().map(|(_, n)| n).sum::<u64>(), 6);
    let by_status = store
        .analytics(&AnalyticsRequest {
            by: Some(By::Status),
            top: 1,
            ..req.clone()
        })
        .unwrap();
    assert_eq!(by_status.buckets[0].by, vec![("200".to_string(), 2)]);
    assert_eq!(by_status.top_users.len(), 1);
    // Bounds.
    assert!(matches!(
        store.analytics(&AnalyticsRequest {
            interval: Duration::from_millis(10),
            ..req.clone()
        }),
        Err(SearchError::Range(_))
    ));
    assert!(matches!(
        store.analytics(&AnalyticsRequest {
            to: BASE + 2000 * minute,
            ..req.clone()
        }),
        Err(SearchError::Range(_))
    ));
    assert!(matches!(
        store.analytics(&AnalyticsRequest {
            from: BASE + 1,
            to: BASE,
            ..req
        }),
        Err(SearchError::Range(_))
    ));
}

#[test]
fn export_yields_every_line_once_newest_first() {
    let dir = TempDir::new("export");
    let lines: Vec<LogLine> = (0..2500u64)
        .map(|i| {
            access(
                BASE + (i / 1250) * HOUR_US + i + 1,
                "GET",
                "/x",
                "/x",
                200,
                1.0,
                "u",
            )
        })
        .collect();
    let store = open_with(dir.path(), &lines);
    let ids: Vec<u64> = store
        .export(&ExportRequest::default())
        .unwrap()
        .map(|json| LogLine::from_json(&json.unwrap()).unwrap().id)
        .collect();
    assert_eq!(ids, expected(&lines, |_| true));
    let mut half = store
        .export(&ExportRequest {
            from: Some(BASE),
            to: Some(BASE + HOUR_US),
            ..ExportRequest::default()
        })
        .unwrap();
    let first = half.next().unwrap().unwrap();
    assert_eq!(LogLine::from_json(&first).unwrap().id, BASE + 1250);
    assert_eq!(half.by_ref().take(1000).count(), 1000);
    drop(half);
}

#[test]
fn a_search_survives_its_partition_being_removed() {
    let dir = TempDir::new("removed");
    let old = now_us() - 30 * 24 * HOUR_US;
    let store = LogStore::open(settings(dir.path())).unwrap();
    store.push(access(old, "GET", "/o", "/o", 200, 1.0, "u"));
    store.flush().unwrap();
    let parts = store.0.shared.partitions();
    let searcher = parts[0].reader.searcher();
    drop(store);
    let store = LogStore::open(StoreSettings {
        max_age: Duration::from_secs(3600),
        ..settings(dir.path())
    })
    .unwrap();
    store.flush().unwrap();
    assert_eq!(store.stats().partitions, 0);
    assert!(!parts[0].dir.exists());
    assert_eq!(
        searcher
            .search(&tantivy::query::AllQuery, &tantivy::collector::Count)
            .unwrap(),
        1
    );
}

#[test]
fn string_queries_through_the_parser() {
    let dir = TempDir::new("parser");
    let lines = scripted();
    let store = open_with(dir.path(), &lines);
    let ids = |q: &str| -> Vec<u64> {
        let page = store
            .search(&SearchRequest {
                query: q.into(),
                limit: 1000,
                ..SearchRequest::default()
            })
            .unwrap();
        page.lines.iter().map(|l| l.id).collect()
    };
    let status = |l: &LogLine| l.status.unwrap_or(0);
    let path = |l: &LogLine| l.path.clone().unwrap_or_default();
    let user = |l: &LogLine| l.user.clone().unwrap_or_default();
    assert_eq!(ids(""), expected(&lines, |_| true));
    assert_eq!(ids("status:500"), expected(&lines, |l| status(l) == 500));
    assert_eq!(
        ids("status:5xx"),
        expected(&lines, |l| (500..600).contains(&status(l)))
    );
    assert_eq!(
        ids(r#"route:"/events/{id}""#),
        expected(&lines, |l| l.route.as_deref() == Some("/events/{id}"))
    );
    assert_eq!(ids("user:42"), expected(&lines, |l| user(l) == "42"));
    assert_eq!(
        ids("latency_ms:>1000"),
        expected(&lines, |l| l.latency_ms.is_some_and(|v| v > 1000.0))
    );
    assert_eq!(
        ids("status:[500 TO 599]"),
        expected(&lines, |l| (500..=599).contains(&status(l)))
    );
    assert_eq!(
        ids("events"),
        expected(&lines, |l| l.message.contains("events"))
    );
    assert_eq!(
        ids(r#"path:"/events/4""#),
        expected(&lines, |l| path(l) == "/events/4")
    );
    assert_eq!(
        ids("cache:revalidated"),
        expected(&lines, |l| l.cache.as_deref() == Some("miss revalidated"))
    );
    assert_eq!(
        ids("route:/users*"),
        expected(&lines, |l| l.route.as_deref() == Some("/users/{id}"))
    );
    assert_eq!(
        ids("users AND NOT status:200"),
        expected(&lines, |l| path(l).starts_with("/users")
            && status(l) != 200)
    );
    assert_eq!(
        ids("user:42 OR status:404"),
        expected(&lines, |l| user(l) == "42" || status(l) == 404)
    );
    assert_eq!(
        ids("(user:41 OR user:43) AND -users"),
        expected(&lines, |l| matches!(user(l).as_str(), "41" | "43")
            && !path(l).starts_with("/users"))
    );
    assert_eq!(
        ids("NOT kind:access"),
        expected(&lines, |l| l.kind == "app")
    );
    assert_eq!(ids(r#""config reloaded""#).len(), 1);
    assert_eq!(ids("target:perfgate::warm").len(), 2);
    assert!(matches!(
        store.search(&SearchRequest {
            query: "nosuchfield:1".into(),
            limit: 10,
            ..SearchRequest::default()
        }),
        Err(SearchError::Query(_))
    ));
    assert!(matches!(
        store.search(&SearchRequest {
            query: "status:(".into(),
            limit: 10,
            ..SearchRequest::default()
        }),
        Err(SearchError::Query(_))
    ));
    // Analytics and export take the same language.
    let a = store
        .analytics(&AnalyticsRequest {
            query: "route:/events*".into(),
            from: BASE,
            to: BASE + 60_000_000,
            interval: Duration::from_secs(60),
            by: None,
            top: 5,
        })
        .unwrap();
    assert_eq!(a.total, 15);
    let exported = store
        .export(&ExportRequest {
            query: "status:>=500".into(),
            ..ExportRequest::default()
        })
        .unwrap()
        .count();
    assert_eq!(exported, expected(&lines, |l| status(l) >= 500).len());
}
