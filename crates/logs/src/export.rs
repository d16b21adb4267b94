//! Export: every matching line, newest first, read page by page so that a
//! large result is never held in memory at once.

use std::collections::VecDeque;
use std::sync::Arc;

use tantivy::query::Query;

use crate::store::search::{id_range, newest, parse_query};
use crate::store::{SearchError, Shared};

/// Lines read from the index at a time.
pub const EXPORT_PAGE: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub query: String,
    /// Inclusive lower bound of ids (µs).
    pub from: Option<u64>,
    /// Exclusive upper bound of ids (µs).
    pub to: Option<u64>,
}

/// The matching lines as JSON objects (as stored: [`crate::LogLine::to_json`]),
/// newest first. Dropping it half-way is fine.
pub struct Export {
    shared: Arc<Shared>,
    query: Box<dyn Query>,
    from: u64,
    /// Exclusive: the id of the last line handed out.
    to: u64,
    page: VecDeque<Vec<u8>>,
    done: bool,
}

impl Export {
    pub(crate) fn new(shared: Arc<Shared>, req: &ExportRequest) -> Result<Export, SearchError> {
        let (from, to) = id_range(req.from, req.to)?;
        let query = parse_query(&shared, &req.query)?;
        Ok(Export {
            shared,
            query,
            from,
            to,
            page: VecDeque::new(),
            done: false,
        })
    }
}

impl Iterator for Export {
    type Item = Result<Vec<u8>, SearchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.done {
            match newest(
                &self.shared,
                self.query.as_ref(),
                self.from,
                self.to,
                EXPORT_PAGE,
            ) {
                Ok(hits) => {
                    self.done = hits.len() < EXPORT_PAGE;
                    if let Some((last, _)) = hits.last() {
                        self.to = *last;
                    }
                    self.page.extend(hits.into_iter().map(|(_, json)| json));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.page.pop_front().map(Ok)
    }
}
