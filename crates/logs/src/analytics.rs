//! Analytics over access lines: per time bucket the request count, errors
//! (status >= 500), error rate and latency percentiles, optionally the top
//! keys of one dimension; and top paths, statuses, users and IPs overall.
//!
//! A custom collector reads fast fields only (id, status, latency, and the
//! dictionary-encoded route, path, user and IP), never the stored JSON.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader, Term};

use crate::store::search::{hours_newest_first, parse_query, within};
use crate::store::{SearchError, Shared};

/// The most buckets in one request.
pub const MAX_BUCKETS: u64 = 1440;
/// The most keys in a top list.
pub const MAX_TOP: usize = 100;
/// Latencies are recorded in microseconds up to an hour, 2 significant digits.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A dimension to split buckets by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Route,
    Status,
    User,
    Ip,
}

#[derive(Debug, Clone)]
pub struct AnalyticsRequest {
    /// Restricts the lines counted (always only `kind:access`).
    pub query: String,
    /// Inclusive, µs since the epoch.
    pub from: u64,
    /// Exclusive.
    pub to: u64,
    /// At least a second; at most [`MAX_BUCKETS`] buckets.
    pub interval: Duration,
    pub by: Option<By>,
    /// Keys per top list (1 to [`MAX_TOP`]).
    pub top: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// Start of the bucket, µs since the epoch.
    pub start: u64,
    pub count: u64,
    /// Lines with status >= 500.
    pub errors: u64,
    /// errors / count (0 when empty).
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// The top keys of `by` in this bucket, most frequent first.
    pub by: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analytics {
    pub buckets: Vec<Bucket>,
    pub top_paths: Vec<(String, u64)>,
    pub top_statuses: Vec<(String, u64)>,
    pub top_users: Vec<(String, u64)>,
    pub top_ips: Vec<(String, u64)>,
    pub total: u64,
}

pub(crate) fn analytics(shared: &Shared, req: &AnalyticsRequest) -> Result<Analytics, SearchError> {
    if req.from >= req.to {
        return Err(SearchError::Range(format!(
            "from ({}) must be before to ({})",
            req.from, req.to
        )));
    }
    if req.interval < Duration::from_secs(1) {
        return Err(SearchError::Range(
            "the interval must be at least 1 s".into(),
        ));
    }
    let interval_us = u64::try_from(req.interval.as_micros()).unwrap_or(u64::MAX);
    let buckets = (req.to - req.from).div_ceil(interval_us);
    if buckets > MAX_BUCKETS {
        return Err(SearchError::Range(format!(
            "{buckets} buckets; at most {MAX_BUCKETS}"
        )));
    }
    let user = parse_query(shared, &req.query)?;
    let kind = shared
        .fields
        .get("kind")
        .ok_or_else(|| SearchError::Read("no kind field".into()))?;
    let access: Box<dyn Query> = Box::new(TermQuery::new(
        Term::from_field_text(kind, "access"),
        IndexRecordOption::Basic,
    ));
    let query: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
        (Occur::Must, user),
        (Occur::Must, access),
    ]));
    let query = within(shared, query.as_ref(), req.from, req.to);
    let collector = AnalyticsCollector {
        from: req.from,
        interval_us,
        buckets: buckets as usize,
        by: req.by,
    };
    let mut acc = Acc::new(buckets as usize);
    for group in hours_newest_first(shared, req.from, req.to) {
        for part in group {
            let searcher = part.reader.searcher();
            acc.merge(searcher.search(query.as_ref(), &collector)?);
        }
    }
    Ok(acc.finish(req.from, interval_us, req.top.clamp(1, MAX_TOP)))
}

/// Counts by key (strings after a segment's ords are resolved).
type Counts = HashMap<String, u64>;

#[derive(Default)]
struct BucketAcc {
    count: u64,
    errors: u64,
    latency: Option<Histogram<u64>>,
    by: Counts,
}

/// The fruit: what one segment (or, merged, the whole request) counted.
pub(crate) struct Acc {
    buckets: Vec<BucketAcc>,
    paths: Counts,
    statuses: Counts,
    users: Counts,
    ips: Counts,
}

fn add_counts(into: &mut Counts, from: Counts) {
    for (k, v) in from {
        *into.entry(k).or_insert(0) += v;
    }
}

fn top(counts: Counts, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).ok()
}

impl Acc {
    fn new(buckets: usize) -> Acc {
        Acc {
            buckets: (0..buckets).map(|_| BucketAcc::default()).collect(),
            paths: Counts::new(),
            statuses: Counts::new(),
            users: Counts::new(),
            ips: Counts::new(),
        }
    }

    fn merge(&mut self, other: Acc) {
        for (into, from) in self.buckets.iter_mut().zip(other.buckets) {
            into.count += from.count;
            into.errors += from.errors;
            match (&mut into.latency, from.latency) {
                (Some(a), Some(b)) => {
                    let _ = a.add(&b);
                }
                (a @ None, Some(b)) => *a = Some(b),
                _ => {}
            }
            add_counts(&mut into.by, from.by);
        }
        add_counts(&mut self.paths, other.paths);
        add_counts(&mut self.statuses, other.statuses);
        add_counts(&mut self.users, other.users);
        add_counts(&mut self.ips, other.ips);
    }

    fn finish(self, from: u64, interval_us: u64, n: usize) -> Analytics {
        let mut total = 0;
        let buckets = self
            .buckets
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                total += b.count;
                let pct = |q: f64| {
                    b.latency
                        .as_ref()
                        .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
                };
                Bucket {
                    start: from + i as u64 * interval_us,
                    count: b.count,
                    errors: b.errors,
                    error_rate: if b.count == 0 {
                        0.0
                    } else {
                        b.errors as f64 / b.count as f64
                    },
                    p50_ms: pct(0.50),
                    p95_ms: pct(0.95),
                    p99_ms: pct(0.99),
                    by: top(b.by, n),
                }
            })
            .collect();
        Analytics {
            buckets,
            top_paths: top(self.paths, n),
            top_statuses: top(self.statuses, n),
            top_users: top(self.users, n),
            top_ips: top(self.ips, n),
            total,
        }
    }
}

struct AnalyticsCollector {
    from: u64,
    interval_us: u64,
    buckets: usize,
    by: Option<By>,
}

/// count, errors, latencies, and counts of the `by` key (ordinal or status).
type SegmentBucket = (u64, u64, Option<Histogram<u64>>, HashMap<u64, u64>);

/// Per-segment counts, by dictionary ordinal until harvest.
struct SegmentAcc {
    from: u64,
    interval_us: u64,
    by: Option<By>,
    id: Column<u64>,
    status: Option<Column<u64>>,
    latency: Option<Column<f64>>,
    path: Option<StrColumn>,
    route: Option<StrColumn>,
    user: Option<StrColumn>,
    ip: Option<StrColumn>,
    buckets: Vec<SegmentBucket>,
    /// Counts by ordinal, dense: one slot per term of the segment's dictionary.
    paths: Vec<u64>,
    users: Vec<u64>,
    ips: Vec<u64>,
    statuses: HashMap<u64, u64>,
}

fn dense(column: &Option<StrColumn>) -> Vec<u64> {
    vec![0; column.as_ref().map_or(0, |c| c.num_terms())]
}

impl Collector for AnalyticsCollector {
    type Fruit = Acc;
    type Child = SegmentAcc;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SegmentAcc> {
        let ff = segment.fast_fields();
        let (path, user, ip) = (ff.str("path_exact")?, ff.str("user")?, ff.str("ip")?);
        Ok(SegmentAcc {
            from: self.from,
            interval_us: self.interval_us,
            by: self.by,
            id: ff.u64("id")?,
            status: ff.column_opt("status")?,
            latency: ff.column_opt("latency_ms")?,
            route: ff.str("route")?,
            buckets: (0..self.buckets)
                .map(|_| (0, 0, None, HashMap::new()))
                .collect(),
            paths: dense(&path),
            users: dense(&user),
            ips: dense(&ip),
            path,
            user,
            ip,
            statuses: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Acc>) -> tantivy::Result<Acc> {
        let mut acc = Acc::new(self.buckets);
        for f in fruits {
            acc.merge(f);
        }
        Ok(acc)
    }
}

fn first_ord(column: &Option<StrColumn>, doc: DocId) -> Option<u64> {
    column.as_ref().and_then(|c| c.ords().first(doc))
}

fn count_ord(counts: &mut [u64], column: &Option<StrColumn>, doc: DocId) {
    if let Some(slot) = first_ord(column, doc).and_then(|o| counts.get_mut(o as usize)) {
        *slot += 1;
    }
}

/// Resolves `(ordinal, slot, count)` items to their strings in one pass over
/// the dictionary (a lookup per ordinal would decode a block each time).
fn resolve(
    column: &Option<StrColumn>,
    mut items: Vec<(u64, usize, u64)>,
    mut put: impl FnMut(usize, String, u64),
) {
    let Some(column) = column else { return };
    items.sort_unstable_by_key(|i| i.0);
    let ords: Vec<u64> = items.iter().map(|i| i.0).collect();
    let mut next = items.into_iter();
    let _ = column.dictionary().sorted_ords_to_term_cb(&ords, |bytes| {
        if let Some((_, slot, n)) = next.next() {
            put(slot, String::from_utf8_lossy(bytes).into_owned(), n);
        }
    });
}

fn resolve_dense(column: &Option<StrColumn>, counts: Vec<u64>) -> Counts {
    let items: Vec<(u64, usize, u64)> = counts
        .into_iter()
        .enumerate()
        .filter(|(_, n)| *n > 0)
        .map(|(ord, n)| (ord as u64, 0, n))
        .collect();
    let mut out = Counts::with_capacity(items.len());
    resolve(column, items, |_, key, n| *out.entry(key).or_insert(0) += n);
    out
}

impl SegmentCollector for SegmentAcc {
    type Fruit = Acc;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(id) = self.id.first(doc) else { return };
        let Some(i) = id
            .checked_sub(self.from)
            .map(|d| (d / self.interval_us) as usize)
        else {
            return;
        };
        let Some(bucket) = self.buckets.get_mut(i) else {
            return;
        };
        let status = self.status.as_ref().and_then(|c| c.first(doc));
        bucket.0 += 1;
        if status.is_some_and(|s| s >= 500) {
            bucket.1 += 1;
        }
        if let Some(ms) = self.latency.as_ref().and_then(|c| c.first(doc)) {
            let us = (ms * 1000.0).clamp(1.0, MAX_LATENCY_US as f64) as u64;
            if bucket.2.is_none() {
                bucket.2 = new_histogram();
            }
            if let Some(h) = bucket.2.as_mut() {
                h.saturating_record(us);
            }
        }
        let by_key = match self.by {
            None => None,
            Some(By::Status) => status,
            Some(By::Route) => first_ord(&self.route, doc),
            Some(By::User) => first_ord(&self.user, doc),
            Some(By::Ip) => first_ord(&self.ip, doc),
        };
        if let Some(k) = by_key {
            *bucket.3.entry(k).or_insert(0) += 1;
        }
        if let Some(s) = status {
            *self.statuses.entry(s).or_insert(0) += 1;
        }
        count_ord(&mut self.paths, &self.path, doc);
        count_ord(&mut self.users, &self.user, doc);
        count_ord(&mut self.ips, &self.ip, doc);
    }

    fn harvest(self) -> Acc {
        let by_column = match self.by {
            Some(By::Route) => &self.route,
            Some(By::User) => &self.user,
            Some(By::Ip) => &self.ip,
            _ => &None,
        };
        let mut by_items = Vec::new();
        let mut buckets: Vec<BucketAcc> = Vec::with_capacity(self.buckets.len());
        for (i, (count, errors, latency, by)) in self.buckets.into_iter().enumerate() {
            let mut b = BucketAcc {
                count,
                errors,
                latency,
                by: Counts::new(),
            };
            if self.by == Some(By::Status) {
                b.by = by.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
            } else {
                by_items.extend(by.into_iter().map(|(ord, n)| (ord, i, n)));
            }
            buckets.push(b);
        }
        resolve(by_column, by_items, |i, key, n| {
            *buckets[i].by.entry(key).or_insert(0) += n
        });
        Acc {
            buckets,
            paths: resolve_dense(&self.path, self.paths),
            statuses: self
                .statuses
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect(),
            users: resolve_dense(&self.user, self.users),
            ips: resolve_dense(&self.ip, self.ips),
        }
    }
}
