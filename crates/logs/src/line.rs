//! One log line: a request (`kind: "access"`) or one of perfgate's own events
//! (`kind: "app"`), and its JSON form.

use serde::{Deserialize, Serialize};

/// The longest string field kept, in bytes (cut on a char boundary).
pub const MAX_STRING_BYTES: usize = 4 * 1024;
/// The most `fields` kept, in bytes of JSON.
pub const MAX_FIELDS_BYTES: usize = 16 * 1024;

/// Severity, lowest first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl Level {
    /// The lowercase name, as in JSON and in the index.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// The level of an access line: 5xx is an error, 4xx a warning.
    pub fn for_status(status: u16) -> Level {
        match status {
            500.. => Level::Error,
            400..=499 => Level::Warn,
            _ => Level::Info,
        }
    }
}

/// Milliseconds spent in each phase of a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Phases {
    pub guard: f64,
    pub limit: f64,
    pub l1: f64,
    pub l2: f64,
    pub coalesce_wait: f64,
    pub connect: f64,
    pub ttfb: f64,
    pub upstream_body: f64,
    pub encode: f64,
}

/// One log line, stored as one JSON document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Unique and increasing: microseconds since the Unix epoch, assigned by the caller (never 0).
    pub id: u64,
    #[serde(default)]
    pub level: Level,
    /// `"access"` (a request) or `"app"` (perfgate's own log event).
    #[serde(default)]
    pub kind: String,
    /// Access: `"GET /events/42 200"`; app: the event's message.
    #[serde(default)]
    pub message: String,
    /// App: the tracing target (module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The path, without the query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The route template, e.g. `/events/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// E.g. `"hit"`, `"miss"`, `"miss revalidated"`, `"bypass"`; each word is searchable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// `"l1"` or `"l2"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Why the response was not cached, e.g. `"no-store"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// `client`, `batch_item`, `refresh`, `fill`, `job` or `warmup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
    /// App: the event's other fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

impl LogLine {
    /// Writes one JSON object (no newline): `{"ts":"<RFC 3339 from id>",` then the fields.
    pub fn to_json(&self, out: &mut Vec<u8>) {
        let start = out.len();
        // A struct of strings, numbers and a JSON map cannot fail to serialize
        // into a Vec; should it ever, the line is written without its fields.
        if serde_json::to_writer(&mut *out, self).is_err() {
            out.truncate(start);
            out.extend_from_slice(b"{\"id\":");
            out.extend_from_slice(self.id.to_string().as_bytes());
            out.push(b'}');
        }
        let mut prefix = Vec::with_capacity(40);
        prefix.extend_from_slice(b"{\"ts\":\"");
        write_rfc3339_micros(self.id, &mut prefix);
        prefix.extend_from_slice(b"\",");
        // Replace the opening brace by the prefix (the object always has `id`).
        out.splice(start..start + 1, prefix);
    }

    /// Reads a line written by [`LogLine::to_json`] (`ts` is ignored: the id holds the time).
    pub fn from_json(bytes: &[u8]) -> Result<LogLine, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Cuts every string to [`MAX_STRING_BYTES`] and `fields` to [`MAX_FIELDS_BYTES`],
    /// so that no line makes a huge document.
    pub fn bound(&mut self) {
        truncate(&mut self.kind);
        truncate(&mut self.message);
        for s in [
            &mut self.target,
            &mut self.method,
            &mut self.path,
            &mut self.route,
            &mut self.route_name,
            &mut self.cache,
            &mut self.layer,
            &mut self.detail,
            &mut self.upstream,
            &mut self.user,
            &mut self.ip,
            &mut self.error,
            &mut self.trace_id,
            &mut self.request_kind,
        ]
        .into_iter()
        .flatten()
        {
            truncate(s);
        }
        if let Some(fields) = self.fields.as_mut() {
            bound_fields(fields);
        }
    }
}

/// Cuts `s` to at most [`MAX_STRING_BYTES`] on a char boundary.
fn truncate(s: &mut String) {
    if s.len() > MAX_STRING_BYTES {
        let mut end = MAX_STRING_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Keeps the entries of `fields` that fit in [`MAX_FIELDS_BYTES`] of JSON (in
/// order), with long strings cut; a cut map says so with `"_truncated": true`.
fn bound_fields(fields: &mut serde_json::Map<String, serde_json::Value>) {
    let mut total = 0usize;
    let mut cut = false;
    let old = std::mem::take(fields);
    for (mut key, mut value) in old {
        truncate(&mut key);
        if let serde_json::Value::String(s) = &mut value {
            truncate(s);
        }
        let size = key.len() + 4 + serde_json::to_vec(&value).map_or(usize::MAX / 2, |v| v.len());
        if total + size > MAX_FIELDS_BYTES {
            cut = true;
            continue;
        }
        total += size;
        fields.insert(key, value);
    }
    if cut {
        fields.insert("_truncated".into(), serde_json::Value::Bool(true));
    }
}

/// Writes `2026-12-06T00:12:01.123456Z` for microseconds since the Unix epoch.
pub fn write_rfc3339_micros(micros: u64, out: &mut Vec<u8>) {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let s = format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{frac:06}Z");
    out.extend_from_slice(s.as_bytes());
}

/// The civil date (proleptic Gregorian) of a day count since 1970-01-01.
///
/// Shifts the epoch to 0000-03-01 so that leap days fall at the end of each
/// year, then splits into 400-year eras of 146,097 days.
pub fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(20_793), (2026, 12, 6));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
    }

    #[test]
    fn json_starts_with_ts_and_round_trips() {
        let line = LogLine {
            id: 20_793 * 86_400_000_000 + 12 * 60_000_000 + 1_123_456,
            level: Level::Warn,
            kind: "access".into(),
            message: "GET /a\"b\u{0}\n 404".into(),
            path: Some("/a\"b".into()),
            status: Some(404),
            latency_ms: Some(1.5),
            ..LogLine::default()
        };
        let mut out = Vec::new();
        line.to_json(&mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            text.starts_with("{\"ts\":\"2026-12-06T00:12:01.123456Z\",\"id\":"),
            "{text}"
        );
        assert!(!text.contains("target"));
        assert_eq!(LogLine::from_json(&out).unwrap(), line);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["level"], "warn");
    }

    #[test]
    fn bound_cuts_on_char_boundaries() {
        let mut line = LogLine {
            id: 1,
            message: "é".repeat(5000),
            user: Some("x".repeat(10_000)),
            fields: Some(
                (0..100)
                    .map(|i| (format!("k{i}"), serde_json::Value::String("v".repeat(1000))))
                    .collect(),
            ),
            ..LogLine::default()
        };
        line.bound();
        assert_eq!(line.message.len(), 4096);
        assert_eq!(line.user.as_ref().unwrap().len(), 4096);
        let fields = line.fields.as_ref().unwrap();
        assert!(serde_json::to_vec(fields).unwrap().len() <= MAX_FIELDS_BYTES + 32);
        assert_eq!(fields["_truncated"], true);
    }
}
