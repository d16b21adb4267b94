//! perfgate's own log events (`tracing`) into the same pipeline as the
//! access lines: the [`AppLayer`] is part of the process's subscriber from
//! the start, and [`connect`] points it at the running [`Logs`] once they
//! exist (events before that only go to stderr).

use std::fmt::Write as _;
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level as TLevel, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::line::{Level, LogLine};
use crate::pipeline::Logs;

/// Where app events go, and from which level.
static TARGET: RwLock<Option<(Logs, TLevel)>> = RwLock::new(None);

/// Longest message kept, in bytes.
const MAX_MESSAGE: usize = 4096;
/// Most fields kept per event.
const MAX_FIELDS: usize = 32;

/// Sends app events at `level` or above to `logs` (`None`: stop sending).
/// The last call wins (one process, one pipeline).
pub fn connect(logs: Option<(Logs, TLevel)>) {
    *TARGET.write().unwrap_or_else(PoisonError::into_inner) = logs;
}

/// The `tracing` layer that feeds app events in.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppLayer;

impl<S: Subscriber> Layer<S> for AppLayer {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let meta = event.metadata();
        // The store's own crates would feed their warnings back in.
        if meta.target().starts_with("tantivy") || meta.target().starts_with("perfgate_logs") {
            return;
        }
        let guard = TARGET.read().unwrap_or_else(PoisonError::into_inner);
        let Some((logs, level)) = guard.as_ref() else {
            return;
        };
        // tracing orders levels by verbosity: ERROR < WARN < … < TRACE.
        if meta.level() > level {
            return;
        }
        let mut v = Fields::default();
        event.record(&mut v);
        logs.push_line(LogLine {
            id: perfgate_observe::log_id(SystemTime::now()),
            level: level_of(*meta.level()),
            kind: "app".into(),
            message: v.message,
            target: Some(meta.target().to_owned()),
            fields: (!v.fields.is_empty()).then_some(v.fields),
            ..LogLine::default()
        });
    }
}

fn level_of(l: TLevel) -> Level {
    match l {
        TLevel::TRACE => Level::Trace,
        TLevel::DEBUG => Level::Debug,
        TLevel::INFO => Level::Info,
        TLevel::WARN => Level::Warn,
        TLevel::ERROR => Level::Error,
    }
}

/// An event's message and other fields, bounded.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.message = crate::access::cut(&text, MAX_MESSAGE).to_owned();
        } else if self.fields.len() < MAX_FIELDS {
            let value = match value {
                Value::String(s) if s.len() > MAX_MESSAGE => {
                    Value::String(crate::access::cut(&s, MAX_MESSAGE).to_owned())
                }
                v => v,
            };
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, Value::String(s));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
}
