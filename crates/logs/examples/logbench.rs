//! Log store benchmark: sustained ingest (push → flush) of realistic access
//! lines, disk bytes per line, and search latency over the indexed lines.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/tgt/logs cargo run --release -p perfgate-logs --example logbench -- <dir> <lines>
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use perfgate_logs::{Level, LogLine, LogStore, Phases, SearchRequest, StoreSettings};

const ROUTES: &[&str] = &[
    "/events/{id}",
    "/users/{id}",
    "/search",
    "/orders/{id}/items",
    "/health",
];
const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
];

fn line(id: u64, rng: &mut fastrand::Rng) -> LogLine {
    let route = ROUTES[rng.usize(..ROUTES.len())];
    let n = rng.u32(..100_000);
    let path = match route {
        "/search" => format!("/search/{}", WORDS[rng.usize(..WORDS.len())]),
        "/health" => "/health".to_string(),
        r => r.replace("{id}", &n.to_string()),
    };
    let status = match rng.u32(..1000) {
        0..=9 => 500,
        10..=14 => 503,
        15..=59 => 404,
        60..=79 => 304,
        _ => 200,
    };
    let method = if rng.u32(..10) == 0 { "POST" } else { "GET" };
    let latency = rng.f64() * rng.f64() * 400.0;
    LogLine {
        id,
        level: Level::for_status(status),
        kind: "access".into(),
        message: format!("{method} {path} {status}"),
        method: Some(method.into()),
        path: Some(path),
        route: Some(route.into()),
        route_name: Some(
            route
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
                .into(),
        ),
        status: Some(status),
        latency_ms: Some(latency),
        bytes_in: Some(if method == "POST" {
            rng.u64(100..5000)
        } else {
            0
        }),
        bytes_out: Some(rng.u64(200..50_000)),
        cache: Some(["hit", "miss", "miss revalidated", "bypass"][rng.usize(..4)].into()),
        layer: Some(if rng.bool() { "l1" } else { "l2" }.into()),
        upstream: Some(format!("10.1.0.{}:8080", rng.u8(1..5))),
        attempts: Some(1),
        user: Some(rng.u32(..1000).to_string()),
        ip: Some(format!("192.168.{}.{}", rng.u8(..4), rng.u8(..255))),
        trace_id: Some(format!("{:032x}", rng.u128(..))),
        request_kind: Some("client".into()),
        phases: Some(Phases {
            guard: 0.01,
            limit: 0.002,
            l1: 0.02,
            connect: 0.3,
            ttfb: latency * 0.8,
            ..Phases::default()
        }),
        ..LogLine::default()
    }
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: logbench <dir> <lines>");
    let total: u64 = args.get(2).map_or(1_000_000, |n| n.parse().expect("lines"));
    let memory: usize = std::env::var("WRITER_MEMORY")
        .ok()
        .map_or(StoreSettings::default().writer_memory, |m| {
            m.parse().unwrap()
        });
    let settings = StoreSettings {
        dir: dir.into(),
        queue: 65_536,
        writer_memory: memory,
        max_bytes: 64 << 30,
        ..StoreSettings::default()
    };
    let store = LogStore::open(settings).unwrap();
    // Ids of the last hour up to now: one partition boundary at most.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let step = (3_000_000_000 / total).max(1);
    let first = now - total * step;
    let mut rng = fastrand::Rng::with_seed(7);
    // Lines are built beforehand: the benchmark measures the store, not the generator.
    let g = Instant::now();
    let lines: Vec<LogLine> = (0..total)
        .map(|i| line(first + i * step, &mut rng))
        .collect();
    let gen_time = g.elapsed();
    let started = Instant::now();
    let mut pushed = 0u64;
    let mut waits = 0u64;
    for mut l in lines {
        // A full queue is back-pressure here: wait and retry, counting the waits.
        while let Err(back) = store.try_push(l) {
            waits += 1;
            l = back;
            std::thread::sleep(Duration::from_micros(200));
        }
        pushed += 1;
    }
    store.flush().unwrap();
    let elapsed = started.elapsed();
    let stats = store.stats();
    println!(
        "ingest: {pushed} lines in {:.2} s (push to flushed; {:.2} s generating before) = {:.0} lines/s; full-queue waits {waits}; writer memory {} MiB",
        elapsed.as_secs_f64(),
        gen_time.as_secs_f64(),
        pushed as f64 / elapsed.as_secs_f64(),
        memory >> 20
    );
    println!(
        "disk: {} bytes in {} partitions = {:.1} bytes/line; dropped full {} write {}",
        stats.disk_bytes,
        stats.partitions,
        stats.disk_bytes as f64 / stats.indexed.max(1) as f64,
        stats.dropped_full,
        stats.dropped_write
    );
    for query in [
        "status:500",
        "user:42",
        "charlie",
        "route:\"/events/{id}\" AND status:5xx",
        "latency_ms:>300",
        "",
    ] {
        let mut times = Vec::with_capacity(100);
        let mut n = 0;
        for _ in 0..100 {
            let t = Instant::now();
            let page = store
                .search(&SearchRequest {
                    query: query.into(),
                    limit: 100,
                    ..SearchRequest::default()
                })
                .unwrap();
            times.push(t.elapsed());
            n = page.lines.len();
        }
        times.sort_unstable();
        println!(
            "search {query:?} (limit 100, {n} lines): p50 {:.2} ms p95 {:.2} ms",
            pct(&times, 0.5).as_secs_f64() * 1e3,
            pct(&times, 0.95).as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let a = store
        .analytics(&perfgate_logs::AnalyticsRequest {
            query: String::new(),
            from: first,
            to: now + 1,
            interval: Duration::from_secs(60),
            by: Some(perfgate_logs::By::Route),
            top: 10,
        })
        .unwrap();
    println!(
        "analytics over {} lines (60 buckets, by route): {:.0} ms",
        a.total,
        t.elapsed().as_secs_f64() * 1e3
    );
    searchable_at(&store, 20_000, Duration::from_secs(5));
    store.shutdown();
}

/// Pushes `rate` lines/s for `period` while polling for the newest searchable
/// line; prints the time from push to searchable (p50/p99/max).
fn searchable_at(store: &LogStore, rate: u64, period: Duration) {
    let now = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    let total = rate * period.as_secs();
    let first = now();
    let t0 = Instant::now();
    let pusher = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(9);
            let mut pushed = Vec::with_capacity(total as usize);
            for i in 0..total {
                let due = Duration::from_micros(i * 1_000_000 / rate);
                let ahead = due.saturating_sub(t0.elapsed());
                if ahead > Duration::from_millis(1) {
                    std::thread::sleep(ahead);
                }
                // Ids are one µs apart from `first`: the pace is in push times.
                let ok = store.push(line(first + i, &mut rng));
                pushed.push((t0.elapsed(), ok));
            }
            pushed
        })
    };
    // Lines are pushed in id order by one thread and committed by one, so the
    // newest searchable id says that every older line is searchable too.
    let mut seen: Vec<(Duration, u64)> = Vec::new();
    let mut polls = Vec::new();
    while t0.elapsed() < period + Duration::from_secs(3) {
        let p = Instant::now();
        let page = store
            .search(&SearchRequest {
                from: Some(first),
                limit: 1,
                ..SearchRequest::default()
            })
            .unwrap();
        polls.push(p.elapsed());
        if let Some(l) = page.lines.first() {
            seen.push((t0.elapsed(), l.id - first));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pushed = pusher.join().unwrap();
    let dropped = pushed.iter().filter(|p| !p.1).count();
    let mut delays: Vec<Duration> = Vec::with_capacity(pushed.len());
    let mut k = 0;
    for (i, (at, ok)) in pushed.iter().enumerate() {
        if !ok {
            continue;
        }
        while k < seen.len() && seen[k].1 < i as u64 {
            k += 1;
        }
        match seen.get(k) {
            Some((when, _)) => delays.push(when.saturating_sub(*at)),
            None => delays.push(Duration::MAX),
        }
    }
    delays.sort_unstable();
    polls.sort_unstable();
    let ms = |d: Duration| {
        if d == Duration::MAX {
            f64::INFINITY
        } else {
            d.as_secs_f64() * 1e3
        }
    };
    println!(
        "searchable at {rate} lines/s for {period:?}: {} lines, dropped {dropped}; push -> searchable p50 {:.0} ms p99 {:.0} ms max {:.0} ms (poll p50 {:.1} ms)",
        pushed.len(),
        ms(pct(&delays, 0.5)),
        ms(pct(&delays, 0.99)),
        ms(*delays.last().unwrap()),
        ms(pct(&polls, 0.5)),
    );
}
