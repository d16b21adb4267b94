//! Newest-first search: partitions are walked from the newest hour down and
//! the walk stops as soon as a page is full; a cursor continues below the
//! last id returned.

use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery};
use tantivy::schema::Value;
use tantivy::{DocAddress, Order, Searcher, TantivyDocument, Term};

use super::partition::{HOUR_US, Partition};
use super::{SearchError, Shared};
use crate::line::LogLine;
use crate::query::{self, Expr};

/// The most lines in one page.
pub const MAX_LIMIT: usize = 1000;

/// One page of a search.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// The query (empty: every line).
    pub query: String,
    /// Inclusive lower bound of ids (µs since the epoch).
    pub from: Option<u64>,
    /// Exclusive upper bound of ids.
    pub to: Option<u64>,
    /// Lines per page, 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// From [`SearchPage::next_cursor`]: continue with lines older than the last page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SearchPage {
    /// Newest first.
    pub lines: Vec<LogLine>,
    /// Present when older lines may match.
    pub next_cursor: Option<String>,
    pub took: Duration,
}

/// Parses `text` with the store's schema; empty = every line.
pub(crate) fn parse_query(shared: &Shared, text: &str) -> Result<Box<dyn Query>, SearchError> {
    let expr = if text.trim().is_empty() {
        Expr::All
    } else {
        query::parse(text, crate::schema::field_kind).map_err(SearchError::Query)?
    };
    shared.translator.query(&expr).map_err(SearchError::Query)
}

/// The id range [from, to) of a request, or an error when from > to.
pub(crate) fn id_range(from: Option<u64>, to: Option<u64>) -> Result<(u64, u64), SearchError> {
    let (from, to) = (from.unwrap_or(0), to.unwrap_or(u64::MAX));
    if from > to {
        return Err(SearchError::Range(format!(
            "from ({from}) is after to ({to})"
        )));
    }
    Ok((from, to))
}

pub(crate) fn encode_cursor(id: u64) -> String {
    let mut digits = Vec::new();
    let mut n = id;
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<u64, SearchError> {
    if cursor.is_empty() || cursor.len() > 13 {
        return Err(SearchError::Cursor);
    }
    u64::from_str_radix(cursor, 36).map_err(|_| SearchError::Cursor)
}

pub(crate) fn search(shared: &Shared, req: &SearchRequest) -> Result<SearchPage, SearchError> {
    let started = Instant::now();
    let (from, mut to) = id_range(req.from, req.to)?;
    if let Some(cursor) = &req.cursor {
        to = to.min(decode_cursor(cursor)?);
    }
    let query = parse_query(shared, &req.query)?;
    let limit = req.limit.clamp(1, MAX_LIMIT);
    // One more than asked says whether there is a next page.
    let mut hits = newest(shared, query.as_ref(), from, to, limit + 1)?;
    let more = hits.len() > limit;
    hits.truncate(limit);
    let next_cursor = if more {
        hits.last().map(|(id, _)| encode_cursor(*id))
    } else {
        None
    };
    let lines = hits
        .iter()
        .map(|(_, json)| {
            LogLine::from_json(json)
                .map_err(|e| SearchError::Read(format!("a stored line is not valid: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SearchPage {
        lines,
        next_cursor,
        took: started.elapsed(),
    })
}

/// The query restricted to ids in [from, to) (to > from).
pub(crate) fn within(shared: &Shared, query: &dyn Query, from: u64, to: u64) -> Box<dyn Query> {
    let ids = RangeQuery::new(
        Bound::Included(Term::from_field_u64(shared.fields.id, from)),
        Bound::Excluded(Term::from_field_u64(shared.fields.id, to)),
    );
    let clauses: Vec<(Occur, Box<dyn Query>)> = vec![
        (Occur::Must, query.box_clone()),
        (Occur::Must, Box::new(ids)),
    ];
    Box::new(BooleanQuery::new(clauses))
}

/// The partitions whose hour meets [from, to), grouped by hour, newest hour first.
pub(crate) fn hours_newest_first(shared: &Shared, from: u64, to: u64) -> Vec<Vec<Arc<Partition>>> {
    let mut groups: Vec<Vec<Arc<Partition>>> = Vec::new();
    for p in shared.partitions().into_iter().rev() {
        let (start, end) = (p.hour * HOUR_US, (p.hour + 1) * HOUR_US);
        if end <= from || start >= to {
            continue;
        }
        match groups.last_mut() {
            Some(g) if g[0].hour == p.hour => g.push(p),
            _ => groups.push(vec![p]),
        }
    }
    groups
}

/// Up to `n` matching lines (id, JSON) with ids in [from, to), newest first.
pub(crate) fn newest(
    shared: &Shared,
    query: &dyn Query,
    from: u64,
    to: u64,
    n: usize,
) -> Result<Vec<(u64, Vec<u8>)>, SearchError> {
    let mut out = Vec::with_capacity(n.min(MAX_LIMIT + 1));
    if from >= to || n == 0 {
        return Ok(out);
    }
    let query = within(shared, query, from, to);
    for group in hours_newest_first(shared, from, to) {
        let want = n - out.len();
        // Hours do not overlap, so the newest lines of this hour come before any
        // of older hours; within the hour, merge its partitions.
        let mut found: Vec<(u64, usize, DocAddress)> = Vec::new();
        let searchers: Vec<Searcher> = group.iter().map(|p| p.reader.searcher()).collect();
        for (i, searcher) in searchers.iter().enumerate() {
            let top = searcher.search(
                query.as_ref(),
                &TopDocs::with_limit(want).order_by_u64_field("id", Order::Desc),
            )?;
            found.extend(top.into_iter().map(|(id, addr)| (id.unwrap_or(0), i, addr)));
        }
        found.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
        found.truncate(want);
        for (id, i, addr) in found {
            let doc: TantivyDocument = searchers[i].doc(addr)?;
            let json = doc
                .get_first(shared.fields.source)
                .and_then(|v| v.as_bytes())
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            out.push((id, json));
        }
        if out.len() >= n {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        for id in [1, 35, 36, 1_796_515_200_123_456, u64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        }
        assert!(decode_cursor("").is_err());
        assert!(decode_cursor("!!").is_err());
        assert!(decode_cursor("zzzzzzzzzzzzzz").is_err());
        assert!(decode_cursor("-1").is_err());
    }
}
