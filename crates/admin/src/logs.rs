//! The log store: `GET /admin/logs/search` (newest first, by cursor),
//! `GET /admin/logs/analytics` (counts, error rate and latency percentiles
//! per interval, top paths, statuses, users and IPs), `POST
//! /admin/logs/export` (every matching line streamed as NDJSON, or CSV with
//! `Accept: text/csv`; never buffered whole, stopped when the client goes
//! away) and `GET /admin/logs/stats`.
//!
//! Index reads are blocking (tantivy): they run on tokio's blocking pool.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use perfgate_logs::{
    AnalyticsRequest, By, ExportRequest, LogLine, LogStore, MAX_LIMIT, SearchError, SearchRequest,
};
use perfgate_proxy::ErrorKind;
use serde_json::{Value, json};

use crate::AdminState;
use crate::envelope::{ApiError, ok};
use crate::json::read_object;

/// Lines a search returns unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// The time range analytics cover unless `from` says otherwise.
const DEFAULT_SPAN_US: u64 = 3_600_000_000;
/// Bytes of export output gathered before they are sent.
const EXPORT_CHUNK: usize = 64 * 1024;

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin/logs/search", get(search))
        .route("/admin/logs/analytics", get(analytics))
        .route("/admin/logs/export", post(export))
        .route("/admin/logs/stats", get(stats))
}

fn store(state: &AdminState) -> Result<LogStore, ApiError> {
    state
        .logs
        .as_ref()
        .and_then(|l| l.store().cloned())
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                "the log store is off (logs.store = false, or it could not be opened: see the log)",
            )
        })
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The query string as decoded pairs (`+` is a space, `%XX` a byte); a
/// pair that is not UTF-8 after decoding is refused by name.
fn pairs(q: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k).ok_or_else(|| {
            ApiError::bad_request(
                "query",
                "a parameter name is not valid UTF-8 after decoding",
            )
        })?;
        let v = decode(v)
            .ok_or_else(|| ApiError::bad_request(k.clone(), "not valid UTF-8 after decoding"))?;
        out.push((k, v));
    }
    Ok(out)
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (hi, lo) = (hex(b[i + 1])?, hex(b[i + 2])?);
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `from`/`to` of a request: instants, `from` not after `to`.
fn range(
    from: Option<&str>,
    to: Option<&str>,
    now: u64,
) -> Result<(Option<u64>, Option<u64>), ApiError> {
    let parse = |field: &str, v: Option<&str>| {
        v.map(|v| {
            perfgate_logs::when::parse_instant(v, now).map_err(|e| ApiError::bad_request(field, e))
        })
        .transpose()
    };
    let from = parse("from", from)?;
    let to = parse("to", to)?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::bad_request("from", "`from` is after `to`"));
    }
    Ok((from, to))
}

/// A store error as the admin API answers it: the query's position, the
/// cursor or the range at fault.
fn search_error(e: SearchError, query_field: &str) -> ApiError {
    match e {
        SearchError::Query(p) => ApiError::bad_request(
            query_field,
            format!("{} at character {}", p.message, p.position),
        )
        .details(json!({ "position": p.position })),
        SearchError::Cursor => ApiError::bad_request("cursor", "not a cursor this API gave out"),
        SearchError::Range(m) => ApiError::bad_request("interval", m),
        SearchError::Read(m) => ApiError::new(
            ErrorKind::Internal,
            format!("cannot read the log store: {m}"),
        ),
    }
}

/// A line as the API shows it (with `ts`).
fn line_json(l: &LogLine) -> Value {
    let mut buf = Vec::with_capacity(512);
    l.to_json(&mut buf);
    serde_json::from_slice(&buf).unwrap_or(Value::Null)
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("log store task failed: {e}")))
}

async fn search(State(state): State<AdminState>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let store = store(&state)?;
        let (mut text, mut from, mut to, mut limit, mut cursor) =
            (String::new(), None, None, DEFAULT_LIMIT, None);
        for (k, v) in pairs(q.as_deref())? {
            match k.as_str() {
                "q" => text = v,
                "from" => from = Some(v),
                "to" => to = Some(v),
                "cursor" => cursor = Some(v),
                "limit" => {
                    limit = v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        ApiError::bad_request("limit", format!("{v:?}: use 1 to {MAX_LIMIT}"))
                    })?;
                }
                other => {
                    return Err(ApiError::bad_request(
                        other,
                        "unknown parameter: use q, from, to, limit and cursor",
                    ));
                }
            }
        }
        // More than the cap is not an error: the page is the cap's size,
        // and the cursor gives the rest.
        let limit = limit.min(MAX_LIMIT);
        let (from, to) = range(from.as_deref(), to.as_deref(), now_us())?;
        let req = SearchRequest {
            query: text,
            from,
            to,
            limit,
            cursor,
        };
        let page = blocking(move || store.search(&req))
            .await?
            .map_err(|e| search_error(e, "q"))?;
        let lines: Vec<Value> = page.lines.iter().map(line_json).collect();
        Ok::<_, ApiError>(ok(json!({
            "count": lines.len(),
            "limit": limit,
            "lines": lines,
            "next_cursor": page.next_cursor,
            "took_ms": page.took.as_secs_f64() * 1000.0,
        })))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn analytics(State(state): State<AdminState>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let store = store(&state)?;
        let (mut text, mut from, mut to, mut interval, mut by, mut top) = (
            String::new(),
            None,
            None,
            Duration::from_secs(60),
            None,
            10usize,
        );
        for (k, v) in pairs(q.as_deref())? {
            match k.as_str() {
                "q" => text = v,
                "from" => from = Some(v),
                "to" => to = Some(v),
                "interval" => {
                    interval = parse_interval(&v).ok_or_else(|| {
                        ApiError::bad_request(
                            "interval",
                            format!("{v:?}: use a duration such as 10s, 1m or 1h"),
                        )
                    })?;
                }
                "by" => {
                    by = Some(match v.as_str() {
                        "route" => By::Route,
                        "status" => By::Status,
                        "user" => By::User,
                        "ip" => By::Ip,
                        _ => {
                            return Err(ApiError::bad_request(
                                "by",
                                format!("{v:?}: use route, status, user or ip"),
                            ));
                        }
                    });
                }
                "top" => {
                    top = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=perfgate_logs::analytics::MAX_TOP).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "top",
                                format!("{v:?}: use 1 to {}", perfgate_logs::analytics::MAX_TOP),
                            )
                        })?;
                }
                other => {
                    return Err(ApiError::bad_request(
                        other,
                        "unknown parameter: use q, from, to, interval, by and top",
                    ));
                }
            }
        }
        let now = now_us();
        let (from, to) = range(from.as_deref(), to.as_deref(), now)?;
        let to = to.unwrap_or(now);
        let from = from.unwrap_or_else(|| to.saturating_sub(DEFAULT_SPAN_US));
        if from >= to {
            return Err(ApiError::bad_request("from", "`from` must be before `to`"));
        }
        let req = AnalyticsRequest {
            query: text,
            from,
            to,
            interval,
            by,
            top,
        };
        let a = blocking(move || store.analytics(&req))
            .await?
            .map_err(|e| search_error(e, "q"))?;
        let pairs = |v: &[(String, u64)]| -> Vec<Value> {
            v.iter()
                .map(|(k, n)| json!({ "key": k, "count": n }))
                .collect()
        };
        let buckets: Vec<Value> = a
            .buckets
            .iter()
            .map(|b| {
                let mut o = json!({
                    "start": rfc3339(b.start),
                    "count": b.count,
                    "errors": b.errors,
                    "error_rate": b.error_rate,
                    "p50_ms": b.p50_ms,
                    "p95_ms": b.p95_ms,
                    "p99_ms": b.p99_ms,
                });
                if by.is_some() {
                    o["by"] = Value::Array(pairs(&b.by));
                }
                o
            })
            .collect();
        Ok::<_, ApiError>(ok(json!({
            "from": rfc3339(from),
            "to": rfc3339(to),
            "interval_seconds": interval.as_secs_f64(),
            "total": a.total,
            "buckets": buckets,
            "top": {
                "paths": pairs(&a.top_paths),
                "statuses": pairs(&a.top_statuses),
                "users": pairs(&a.top_users),
                "ips": pairs(&a.top_ips),
            },
        })))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `10s`, `1m`, `1h`, `1d`: the configuration's durations, with the unit
/// written out and greater than zero.
fn parse_interval(v: &str) -> Option<Duration> {
    if v.ends_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    perfgate_config::parse_duration(v)
        .ok()
        .map(Duration::from)
        .filter(|d| !d.is_zero())
}

fn rfc3339(us: u64) -> String {
    let mut b = Vec::with_capacity(32);
    perfgate_logs::line::write_rfc3339_micros(us, &mut b);
    String::from_utf8(b).unwrap_or_default()
}

async fn export(State(state): State<AdminState>, headers: HeaderMap, body: Body) -> Response {
    let run = async {
        let store = store(&state)?;
        let fields = read_object(&headers, body, &["q", "from", "to"]).await?;
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) if name != "q" => Ok(Some(n.to_string())),
                Some(other) => Err(ApiError::bad_request(
                    name,
                    format!("expected a string, got {}", crate::json::kind(other)),
                )),
            }
        };
        let q = text("q")?.unwrap_or_default();
        let (from, to) = range(text("from")?.as_deref(), text("to")?.as_deref(), now_us())?;
        let csv = headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| {
                a.split(',').any(|t| {
                    t.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .eq_ignore_ascii_case("text/csv")
                })
            });
        let req = ExportRequest { query: q, from, to };
        // Parse the query before answering, so that a bad one is a 400.
        let lines = blocking(move || store.export(&req))
            .await?
            .map_err(|e| search_error(e, "q"))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::task::spawn_blocking(move || stream_lines(lines, csv, &tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
        });
        let mut rsp = Body::from_stream(stream).into_response();
        rsp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if csv {
                "text/csv; charset=utf-8"
            } else {
                "application/x-ndjson"
            }),
        );
        Ok::<_, ApiError>(rsp)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Writes the export into `tx` chunk by chunk; stops as soon as the
/// receiver is gone (the client went away). A read error ends the output
/// with one last line saying so.
fn stream_lines(lines: perfgate_logs::Export, csv: bool, tx: &tokio::sync::mpsc::Sender<Bytes>) {
    let mut buf = Vec::with_capacity(EXPORT_CHUNK + 4096);
    if csv {
        buf.extend_from_slice(CSV_HEADER.as_bytes());
    }
    for item in lines {
        match item {
            Ok(json) if csv => match LogLine::from_json(&json) {
                Ok(l) => csv_row(&l, &mut buf),
                Err(_) => continue,
            },
            Ok(json) => {
                buf.extend_from_slice(&json);
                buf.push(b'\n');
            }
            Err(e) => {
                let msg = json!({ "error": e.to_string() }).to_string();
                buf.extend_from_slice(msg.as_bytes());
                buf.push(b'\n');
                let _ = tx.blocking_send(Bytes::from(std::mem::take(&mut buf)));
                return;
            }
        }
        if buf.len() >= EXPORT_CHUNK
            && tx
                .blocking_send(Bytes::from(std::mem::replace(
                    &mut buf,
                    Vec::with_capacity(EXPORT_CHUNK + 4096),
                )))
                .is_err()
        {
            return;
        }
    }
    if !buf.is_empty() {
        let _ = tx.blocking_send(Bytes::from(buf));
    }
}

const CSV_HEADER: &str = "ts,id,level,kind,method,path,route,status,latency_ms,bytes_in,bytes_out,cache,user,ip,upstream,error,message\r\n";

/// One CSV row (RFC 4180). Text that a spreadsheet would run as a formula
/// (`=`, `+`, `-`, `@`, tab, CR first) is prefixed with `'`: paths and
/// messages come from clients.
fn csv_row(l: &LogLine, out: &mut Vec<u8>) {
    let mut cell = |s: &str, last: bool| {
        let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
        let quote = formula || s.contains([',', '"', '\n', '\r']);
        if quote {
            out.push(b'"');
            if formula {
                out.push(b'\'');
            }
            for c in s.bytes() {
                if c == b'"' {
                    out.push(b'"');
                }
                out.push(c);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(if last { b"\r\n" } else { b"," });
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
    cell(&rfc3339(l.id), false);
    cell(&l.id.to_string(), false);
    cell(l.level.as_str(), false);
    cell(&l.kind, false);
    cell(&opt(&l.method), false);
    cell(&opt(&l.path), false);
    cell(&opt(&l.route), false);
    cell(&num(l.status.map(u64::from)), false);
    cell(
        &l.latency_ms.map(|v| v.to_string()).unwrap_or_default(),
        false,
    );
    cell(&num(l.bytes_in), false);
    cell(&num(l.bytes_out), false);
    cell(&opt(&l.cache), false);
    cell(&opt(&l.user), false);
    cell(&opt(&l.ip), false);
    cell(&opt(&l.upstream), false);
    cell(&opt(&l.error), false);
    cell(&l.message, true);
}

async fn stats(State(state): State<AdminState>) -> Response {
    let Some(logs) = state.logs.clone() else {
        return ApiError::new(
            ErrorKind::NotFound,
            "no log pipeline is running (logs.store, logs.access and logs.otlp are all off)",
        )
        .into_response();
    };
    let store = logs.store().map(|s| {
        let st = s.stats();
        json!({
            "indexed": st.indexed,
            "partitions": st.partitions,
            "disk_bytes": st.disk_bytes,
            "dropped_full": st.dropped_full,
            "dropped_write": st.dropped_write,
            "health": match &st.health { perfgate_logs::Health::Ok => "ok".to_string(), perfgate_logs::Health::Warn(w) => w.clone() },
            "oldest": st.oldest_id.map(rfc3339),
            "newest": st.newest_id.map(rfc3339),
        })
    });
    ok(json!({ "pipeline": logs.stats(), "store": store }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        let p = pairs(Some("q=status%3A500+AND+route%3A%22%2Fa%22&limit=5&x")).unwrap();
        assert_eq!(p[0], ("q".into(), "status:500 AND route:\"/a\"".into()));
        assert_eq!(p[1], ("limit".into(), "5".into()));
        assert_eq!(p[2], ("x".into(), String::new()));
        assert!(pairs(Some("q=%FF")).is_err());
        // A stray or short escape is kept as it is.
        assert_eq!(decode("100%").unwrap(), "100%");
        assert_eq!(decode("%4").unwrap(), "%4");
        assert!(decode("%zz").is_none());
    }

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        let l = LogLine {
            id: 1,
            kind: "access".into(),
            message: "=HYPERLINK(\"x\")".into(),
            path: Some("/a,b".into()),
            ..LogLine::default()
        };
        let mut out = Vec::new();
        csv_row(&l, &mut out);
        let row = String::from_utf8(out).unwrap();
        assert!(row.contains(",\"/a,b\","), "{row}");
        assert!(row.ends_with(",\"'=HYPERLINK(\"\"x\"\")\"\r\n"), "{row}");
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_interval("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_interval("0s"), None);
        assert_eq!(parse_interval("1"), None);
        assert_eq!(parse_interval("1y"), None);
        assert_eq!(parse_interval("99999999999999999999d"), None);
    }
}
