//! Micro-benchmarks of the functions a cache hit runs through (issue #4).
//!
//! Run with `cargo bench -p perfgate-cache --bench hot_path` (add `-- --quick`
//! for a short run). Results are recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{
    ACCEPT_ENCODING, ACCEPT_LANGUAGE, AGE, CACHE_CONTROL, CONTENT_TYPE, DATE, ETAG, LAST_MODIFIED,
    SERVER, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use perfgate_cache::cache_control::CacheControl;
use perfgate_cache::compress::{Compressor, Encoding};
use perfgate_cache::entry::{Entry, EntryParts};
use perfgate_cache::key::KeyNormalizer;
use perfgate_cache::memory::MemoryCache;
use perfgate_cache::policy::{Reuse, RoutePolicy, Timing, evaluate};
use perfgate_cache::vary::{VaryKey, vary_fields};
use perfgate_config::CompressionConfig;

/// Entries in the L1 store for the lookup benchmark.
const ENTRIES: usize = 10_000;

/// A static `Cache-Status` value, as the gateway adds to every hit.
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
const HIT_LABEL: HeaderValue = HeaderValue::from_static("perfgate; hit");

/// A request as a browser sends it.
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        ACCEPT_ENCODING,
        HeaderValue::from_static("gzip, deflate, br, zstd"),
    );
    h.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("en-US,en;q=0.9"));
    h.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) bench"),
    );
    h.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    h
}

/// Eight typical stored response headers.
fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    h.insert(ETAG, HeaderValue::from_static("\"5f2b-1a9c3e7d\""));
    h.insert(
        LAST_MODIFIED,
        HeaderValue::from_static("Tue, 14 Apr 2026 08:00:00 GMT"),
    );
    h.insert(
        DATE,
        HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())).unwrap(),
    );
    h.insert(SERVER, HeaderValue::from_static("origin/1.4"));
    h.insert(
        VARY,
        HeaderValue::from_static("Accept-Encoding, Accept-Language"),
    );
    h.insert(
        HeaderName::from_static("x-request-id"),
        HeaderValue::from_static("7d1c0b6e-2f4a-4c1e-9a0b-3c5d7e9f1a2b"),
    );
    h
}

/// A ~4 KiB JSON body.
fn json_body() -> Bytes {
    let mut s = String::from("[");
    for i in 0..48 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":{i},"name":"event {i}","kind":"page_view","ts":"2026-04-14T08:00:{:02}Z","tags":["a","b"]}}"#,
            i % 60
        ));
    }
    s.push(']');
    Bytes::from(s)
}

/// An entry built the way the gateway stores a `200` with `max-age=60`.
fn entry(req: &HeaderMap, rsp: &HeaderMap, body: Bytes, now: Instant) -> Entry {
    let sys_now = SystemTime::now();
    let timing = Timing {
        request_time: sys_now,
        response_time: sys_now,
    };
    let freshness = evaluate(
        &Method::GET,
        req,
        StatusCode::OK,
        rsp,
        &timing,
        &RoutePolicy::default(),
    )
    .expect("storable");
    let fields = vary_fields(rsp).expect("no Vary: *");
    Entry::new(
        EntryParts {
            status: StatusCode::OK,
            headers: rsp.clone(),
            body,
            upstream_encoded: false,
            compressible: true,
            vary: VaryKey::capture(&fields, req, &[ACCEPT_ENCODING]),
            freshness,
            auth_reusable: false,
            tags: Vec::new(),
        },
        now,
    )
}

fn cache_hit(c: &mut Criterion) {
    let req = request_headers();
    let rsp = response_headers();
    let body = json_body();
    let keys = KeyNormalizer::new(&[]);
    let now = Instant::now();
    let cache = MemoryCache::new(1 << 30, Duration::from_secs(300));
    for i in 0..ENTRIES {
        let key = keys.primary_key("http", "api.example.com", &format!("/api/v1/events/{i}"));
        cache.insert(
            &key,
            std::sync::Arc::new(entry(&req, &rsp, body.clone(), now)),
        );
    }
    cache.sync();
    assert_eq!(cache.entry_count(), ENTRIES as u64);
    let key = keys.primary_key("http", "api.example.com", "/api/v1/events/4321");
    let hit = cache
        .lookup(&key, |e| e.vary.matches(&req))
        .expect("stored key is a hit");
    let compressor = Compressor::new(&CompressionConfig::default());
    // Produce the brotli variant once: a hit never compresses.
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let (enc, _, _) = rt.block_on(hit.body_for(Encoding::Brotli, &compressor));
    assert_eq!(enc, Encoding::Brotli);

    let mut g = c.benchmark_group("cache_hit");
    g.bench_function("lookup_10k_entries", |b| {
        b.iter(|| cache.lookup(black_box(&key), |e| e.vary.matches(&req)))
    });
    g.bench_function("entry_reuse", |b| {
        b.iter(|| {
            let r = black_box(&hit).reuse(Instant::now());
            debug_assert_eq!(r, Reuse::Fresh);
            r
        })
    });
    g.bench_function("body_for_brotli_existing", |b| {
        b.iter(|| black_box(&hit).ready_body(black_box(Encoding::Brotli)))
    });
    g.finish();
}

fn key_normalization(c: &mut Criterion) {
    let keys = KeyNormalizer::new(&["utm_*".into(), "fbclid".into()]);
    let mut g = c.benchmark_group("primary_key");
    g.bench_function("query_with_dropped_param", |b| {
        b.iter(|| {
            keys.primary_key(
                black_box("http"),
                black_box("api.example.com"),
                black_box("/api/v1/events?page=2&utm_source=x&sort=date"),
            )
        })
    });
    g.bench_function("short_path_no_query", |b| {
        b.iter(|| {
            keys.primary_key(
                black_box("http"),
                black_box("api.example.com"),
                black_box("/api/v1/events"),
            )
        })
    });
    g.finish();
}

fn header_writing(c: &mut Criterion) {
    let stored = response_headers();
    c.bench_function("hit_headers/clone_8_insert_age_cache_status", |b| {
        b.iter(|| {
            let mut h = black_box(&stored).clone();
            h.insert(AGE, HeaderValue::from(black_box(17_u64)));
            h.insert(CACHE_STATUS, HIT_LABEL);
            h
        })
    });
}

fn cache_control_parsing(c: &mut Criterion) {
    let mut two_lines = HeaderMap::new();
    two_lines.append(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    two_lines.append(
        CACHE_CONTROL,
        HeaderValue::from_static("stale-while-revalidate=30, stale-if-error=300"),
    );
    let long: &[u8] = b"public, max-age=600, s-maxage=300, stale-while-revalidate=30, \
        stale-if-error=86400, must-revalidate, proxy-revalidate, no-transform, immutable, \
        x-vendor-ext=\"a, b\", community=\"UCI\"";

    let mut g = c.benchmark_group("cache_control");
    g.bench_function("parse_short", |b| {
        b.iter(|| {
            CacheControl::parse(black_box(
                b"public, max-age=60, stale-while-revalidate=30".as_slice(),
            ))
        })
    });
    g.bench_function("parse_long_11_directives", |b| {
        b.iter(|| CacheControl::parse(black_box(long)))
    });
    g.bench_function("from_headers_two_lines", |b| {
        b.iter(|| CacheControl::from_headers(black_box(&two_lines)))
    });
    g.finish();
}

fn negotiate(c: &mut Criterion) {
    let compressor = Compressor::new(&CompressionConfig::default());
    let plain = HeaderValue::from_static("gzip, deflate, br, zstd");
    let weighted = HeaderValue::from_static("br;q=1.0, gzip;q=0.8, *;q=0.1");
    assert_eq!(compressor.negotiate(Some(&plain)), Encoding::Brotli);
    assert_eq!(compressor.negotiate(Some(&weighted)), Encoding::Brotli);

    let mut g = c.benchmark_group("negotiate");
    g.bench_function("browser_list", |b| {
        b.iter(|| compressor.negotiate(black_box(Some(&plain))))
    });
    g.bench_function("q_values_and_star", |b| {
        b.iter(|| compressor.negotiate(black_box(Some(&weighted))))
    });
    g.finish();
}

criterion_group!(
    benches,
    cache_hit,
    key_normalization,
    header_writing,
    cache_control_parsing,
    negotiate
);
criterion_main!(benches);
