//! The index schema: which fields of a [`LogLine`] are searchable, and how.

use tantivy::TantivyDocument;
use tantivy::schema::{FAST, Field, STORED, STRING, Schema, TEXT};

use crate::line::LogLine;
use crate::query::FieldKind;

/// Tokenized text fields (default tokenizer: words, lowercased).
pub const TEXT_FIELDS: &[&str] = &["message", "path"];
/// Exact-value fields. `cache` indexes each word of its value.
pub const KEYWORD_FIELDS: &[&str] = &[
    "route",
    "route_name",
    "method",
    "user",
    "ip",
    "kind",
    "level",
    "cache",
    "layer",
    "detail",
    "upstream",
    "error",
    "trace_id",
    "request_kind",
    "target",
];
/// Number fields (fast fields). `latency_ms` is an f64, the others u64.
pub const NUMBER_FIELDS: &[&str] = &[
    "id",
    "status",
    "latency_ms",
    "bytes_in",
    "bytes_out",
    "attempts",
];

/// Keyword fields the analytics collector reads as fast (columnar) fields.
const FAST_KEYWORDS: &[&str] = &["route", "user", "ip"];

/// What kind of values `name` holds, for the query parser; `None` for an unknown field.
pub fn field_kind(name: &str) -> Option<FieldKind> {
    if TEXT_FIELDS.contains(&name) {
        Some(FieldKind::Text)
    } else if KEYWORD_FIELDS.contains(&name) {
        Some(FieldKind::Keyword)
    } else if NUMBER_FIELDS.contains(&name) {
        Some(FieldKind::Number)
    } else {
        None
    }
}

/// The fields of the schema, resolved once.
#[derive(Clone)]
pub struct Fields {
    pub schema: Schema,
    pub source: Field,
    pub message: Field,
    pub path: Field,
    /// The raw path, for exact matches and top paths.
    pub path_exact: Field,
    pub id: Field,
    pub status: Field,
    pub latency_ms: Field,
    pub bytes_in: Field,
    pub bytes_out: Field,
    pub attempts: Field,
    keywords: Vec<Field>,
}

impl Fields {
    pub fn new() -> Fields {
        let mut b = Schema::builder();
        let source = b.add_bytes_field("_source", STORED);
        let message = b.add_text_field("message", TEXT);
        let path = b.add_text_field("path", TEXT);
        let path_exact = b.add_text_field("path_exact", STRING | FAST);
        let keywords = KEYWORD_FIELDS
            .iter()
            .map(|name| {
                if FAST_KEYWORDS.contains(name) {
                    b.add_text_field(name, STRING | FAST)
                } else {
                    b.add_text_field(name, STRING)
                }
            })
            .collect();
        // Numbers are fast (columnar) only: tantivy answers a range over a fast
        // field from the column, never from the inverted index, and indexing
        // them put one term per distinct value (every id, nearly every
        // latency) in the term dictionary.
        let id = b.add_u64_field("id", FAST);
        let status = b.add_u64_field("status", FAST);
        let latency_ms = b.add_f64_field("latency_ms", FAST);
        let bytes_in = b.add_u64_field("bytes_in", FAST);
        let bytes_out = b.add_u64_field("bytes_out", FAST);
        let attempts = b.add_u64_field("attempts", FAST);
        Fields {
            schema: b.build(),
            source,
            message,
            path,
            path_exact,
            id,
            status,
            latency_ms,
            bytes_in,
            bytes_out,
            attempts,
            keywords,
        }
    }

    /// The field called `name` (any kind).
    pub fn get(&self, name: &str) -> Option<Field> {
        self.schema.get_field(name).ok()
    }

    /// The document for `line`; `json` is the line's JSON ([`LogLine::to_json`]).
    pub fn document(&self, line: &LogLine, json: &[u8]) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_bytes(self.source, json);
        doc.add_u64(self.id, line.id);
        doc.add_text(self.message, &line.message);
        if let Some(path) = &line.path {
            doc.add_text(self.path, path);
            doc.add_text(self.path_exact, path);
        }
        let values: [Option<&str>; 15] = [
            line.route.as_deref(),
            line.route_name.as_deref(),
            line.method.as_deref(),
            line.user.as_deref(),
            line.ip.as_deref(),
            Some(&line.kind),
            Some(line.level.as_str()),
            line.cache.as_deref(),
            line.layer.as_deref(),
            line.detail.as_deref(),
            line.upstream.as_deref(),
            line.error.as_deref(),
            line.trace_id.as_deref(),
            line.request_kind.as_deref(),
            line.target.as_deref(),
        ];
        for (i, (field, value)) in self.keywords.iter().zip(values).enumerate() {
            let Some(value) = value else { continue };
            if KEYWORD_FIELDS[i] == "cache" {
                // "miss revalidated" is both `cache:miss` and `cache:revalidated`.
                for word in value.split_whitespace() {
                    doc.add_text(*field, word);
                }
            } else {
                doc.add_text(*field, value);
            }
        }
        if let Some(v) = line.status {
            doc.add_u64(self.status, u64::from(v));
        }
        if let Some(v) = line.latency_ms.filter(|v| v.is_finite()) {
            doc.add_f64(self.latency_ms, v);
        }
        if let Some(v) = line.bytes_in {
            doc.add_u64(self.bytes_in, v);
        }
        if let Some(v) = line.bytes_out {
            doc.add_u64(self.bytes_out, v);
        }
        if let Some(v) = line.attempts {
            doc.add_u64(self.attempts, u64::from(v));
        }
        doc
    }
}

impl Default for Fields {
    fn default() -> Self {
        Fields::new()
    }
}
