//! Loading a configuration: a TOML file (optional), then `PERFGATE_…`
//! environment overrides, then deserialization and [`validate`]. Every
//! problem is collected and reported with the setting's path and the file
//! line or the environment variable it came from.
//!
//! # Environment overrides
//!
//! Any setting can be overridden by `PERFGATE_<PATH>`, the path's segments
//! upper-cased and joined by double underscores:
//!
//! ```text
//! PERFGATE_SERVER__LISTEN=0.0.0.0:8080
//! PERFGATE_CACHE__MAX_BYTES=1GiB
//! PERFGATE_ROUTES__0__UPSTREAM=http://10.0.0.5:8000
//! PERFGATE_ROUTES__0__CACHE__DEFAULT_TTL=30s
//! PERFGATE_COMPRESSION__ALGORITHMS=br,gzip
//! ```
//!
//! Values are typed by the setting: integers for numbers, `true`/`false` for
//! switches, comma-separated items for lists (an empty value is an empty
//! list), text otherwise. A route index beyond the routes in the file adds
//! routes. A variable naming no setting is a problem.
//!
//! Only variables with a `__` after the prefix, or a single segment naming a
//! top-level scalar setting (there are none today), are overrides. Other
//! `PERFGATE_…` variables are ignored here; in particular these belong to the
//! command line: `PERFGATE_UPSTREAM`, `PERFGATE_LISTEN`,
//! `PERFGATE_ADMIN_LISTEN`, `PERFGATE_CONFIG`, `PERFGATE_ADMIN_TOKEN`,
//! `PERFGATE_ADMIN_TOKEN_FILE`, `PERFGATE_LOG`, `PERFGATE_LOG_FORMAT`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Value;
use toml::de::{DeTable, DeValue};

use crate::model::Config;
use crate::problem::{ConfigErrors, Origin, Problem};
use crate::units::{parse_byte_size, parse_duration};
use crate::validate::validate;

/// Prefix of every override variable.
const PREFIX: &str = "PERFGATE_";

/// Variables of the command line, never config overrides.
const CLI_VARS: [&str; 8] = [
    "PERFGATE_UPSTREAM",
    "PERFGATE_LISTEN",
    "PERFGATE_ADMIN_LISTEN",
    "PERFGATE_CONFIG",
    "PERFGATE_ADMIN_TOKEN",
    "PERFGATE_ADMIN_TOKEN_FILE",
    "PERFGATE_LOG",
    "PERFGATE_LOG_FORMAT",
];

/// Most routes an override may create; guards against
/// `PERFGATE_ROUTES__99999999__PATH` allocating millions of tables.
const MAX_ROUTE_INDEX: usize = 1024;

/// Loads `path`, applies overrides from the process environment and
/// validates the result.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    load_file_with_env(path, std::env::vars_os())
}

/// [`load_file`] with the environment given explicitly (for tests and for
/// callers that filter it).
pub fn load_file_with_env<I, K, V>(path: &Path, env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, &name, env),
        Err(e) => Err(ConfigErrors {
            problems: vec![Problem {
                path: String::new(),
                reason: format!("cannot read the configuration file: {e}"),
                origin: Origin::File {
                    name,
                    position: None,
                },
            }],
        }),
    }
}

/// Loads a configuration from TOML `text` (named `origin` in messages, e.g.
/// the file name), applies the `PERFGATE_…` overrides found in `env` (pass
/// `std::env::vars_os()`) and validates the result.
pub fn load_str<I, K, V>(text: &str, origin: &str, env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let spans = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let position = e.span().map(|s| line_col(text, s.start));
            return Err(ConfigErrors {
                problems: vec![Problem {
                    path: String::new(),
                    reason: format!("invalid TOML: {}", e.message().trim()),
                    origin: Origin::File {
                        name: origin.to_string(),
                        position,
                    },
                }],
            });
        }
    };
    let table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        // Cannot happen after DeTable accepted the text; reported rather than
        // trusted all the same.
        Err(e) => {
            return Err(ConfigErrors {
                problems: vec![Problem {
                    path: String::new(),
                    reason: format!("invalid TOML: {}", e.message().trim()),
                    origin: Origin::File {
                        name: origin.to_string(),
                        position: None,
                    },
                }],
            });
        }
    };
    let file = FileSpans {
        name: origin,
        text,
        root: spans.get_ref(),
    };
    build(table, Some(&file), env)
}

/// Builds a configuration from defaults and the `PERFGATE_…` overrides in
/// `env` alone (no file), and validates it.
pub fn from_env_only<I, K, V>(env: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    build(toml::Table::new(), None, env)
}

/// The file a document came from, to turn paths into line numbers.
struct FileSpans<'a> {
    name: &'a str,
    text: &'a str,
    root: &'a DeTable<'a>,
}

/// What a load has found so far.
#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    /// Paths whose value was rejected and removed before deserializing;
    /// validation problems about them would only repeat the first one.
    pruned: Vec<String>,
    /// Setting paths set by the environment, and by which variable.
    env_paths: HashMap<String, String>,
    /// Sections and route entries that exist only because a variable set
    /// something inside them, and the first such variable.
    env_created: HashMap<String, String>,
}

fn build<I, K, V>(
    mut table: toml::Table,
    file: Option<&FileSpans<'_>>,
    env: I,
) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut f = Findings::default();
    apply_env(&mut table, env, &mut f);
    check_table(&mut table, CONFIG, "", &mut f);
    let config = match Config::deserialize(Value::Table(table)) {
        Ok(c) => c,
        Err(e) => {
            // Only reachable if SCHEMA and the model disagree (a test guards
            // that); report it rather than panic.
            f.problems
                .push(Problem::new("", format!("internal: {}", e.message())));
            return Err(finish(f, file));
        }
    };
    let pruned = std::mem::take(&mut f.pruned);
    for problem in validate(&config) {
        if !pruned.iter().any(|p| related(p, &problem.path)) {
            f.problems.push(problem);
        }
    }
    if f.problems.is_empty() {
        Ok(config)
    } else {
        Err(finish(f, file))
    }
}

/// Whether one path is the other or contains it.
fn related(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    within(a, b) || within(b, a)
}

/// Locates every problem and orders them: file lines first, then the
/// environment, then the rest.
fn finish(mut f: Findings, file: Option<&FileSpans<'_>>) -> ConfigErrors {
    let mut problems = std::mem::take(&mut f.problems);
    for p in &mut problems {
        if p.origin == Origin::Unknown {
            p.origin = locate(&p.path, file, &f);
        }
    }
    problems.sort_by_key(|p| match &p.origin {
        Origin::File {
            position: Some(pos),
            ..
        } => (0, *pos),
        Origin::File { position: None, .. } => (1, (0, 0)),
        Origin::Env { .. } => (2, (0, 0)),
        Origin::Unknown => (3, (0, 0)),
    });
    ConfigErrors { problems }
}

fn locate(path: &str, file: Option<&FileSpans<'_>>, f: &Findings) -> Origin {
    if let Some(var) = f.env_paths.get(path) {
        return Origin::Env { var: var.clone() };
    }
    let segs = split_path(path);
    // The setting itself if it is written in the file or set by a variable,
    // else its nearest ancestor that is: the `[[routes]]` header of a route
    // missing its path, or the variable that created the route. Never the
    // document root, which says nothing.
    for n in (1..=segs.len()).rev() {
        if let Some(var) = f.env_created.get(&join_path(&segs[..n])) {
            return Origin::Env { var: var.clone() };
        }
        if let Some(file) = file
            && let Some(span) = span_of(file.root, &segs[..n])
        {
            return Origin::File {
                name: file.name.to_string(),
                position: Some(line_col(file.text, span.start)),
            };
        }
    }
    match file {
        Some(file) => Origin::File {
            name: file.name.to_string(),
            position: None,
        },
        None => Origin::Unknown,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|s| !s.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(at) => part.split_at(at),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(Seg::Key(key.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some((n, after)) = r.split_once(']') else {
                break;
            };
            match n.parse() {
                Ok(i) => segs.push(Seg::Index(i)),
                Err(_) => break,
            }
            rest = after;
        }
    }
    segs
}

fn join_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Span of a setting in the file: its key for table entries (where the eye
/// looks for it), the element itself for array items.
fn span_of(root: &DeTable<'_>, segs: &[Seg]) -> Option<Range<usize>> {
    let (first, rest) = segs.split_first()?;
    let Seg::Key(k) = first else { return None };
    let (key, value) = root.get_key_value(k.as_str())?;
    let mut span = key.span();
    let mut value: &DeValue<'_> = value.get_ref();
    for seg in rest {
        match (seg, value) {
            (Seg::Key(k), DeValue::Table(t)) => {
                let (key, v) = t.get_key_value(k.as_str())?;
                span = key.span();
                value = v.get_ref();
            }
            (Seg::Index(i), DeValue::Array(a)) => {
                let v = a.get(*i)?;
                span = v.span();
                value = v.get_ref();
            }
            _ => return None,
        }
    }
    Some(span)
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

// ---------------------------------------------------------------------------
// The schema: what the walk and the environment overrides check against.
// It mirrors model.rs; `schema_matches_model` in the tests fails when the two
// drift apart.

/// The type of a setting.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    U32,
    I32,
    U64,
    Usize,
    Duration,
    ByteSize,
    StrList,
    /// A list of integers from 0 to `u32::MAX`.
    U32List,
    /// A floating-point number (an integer is accepted too).
    F64,
    /// A table of string values under names of the user's choosing.
    StrMap,
    Enum(&'static [&'static str]),
    Table(&'static [Field]),
    /// An array of tables (`[[routes]]`).
    Tables(&'static [Field]),
}

struct Field {
    name: &'static str,
    kind: Kind,
}

const fn f(name: &'static str, kind: Kind) -> Field {
    Field { name, kind }
}

use Kind::*;

const CONFIG: &[Field] = &[
    f("server", Table(SERVER)),
    f("admin", Table(ADMIN)),
    f("upstream", Table(UPSTREAM)),
    f("forwarded", Table(FORWARDED)),
    f("cache", Table(CACHE)),
    f("redis", Table(REDIS)),
    f("compression", Table(COMPRESSION)),
    f("pools", Tables(POOL)),
    f("rate_limits", Tables(RATE_LIMIT)),
    f("jwt", Table(JWT)),
    f("batch", Table(BATCH)),
    f("jobs", Table(JOBS)),
    f("logs", Table(LOGS)),
    f("routes", Tables(ROUTE)),
];
const LOGS: &[Field] = &[
    f("store", Bool),
    f("data_dir", Str),
    f("max_age", Duration),
    f("max_bytes", ByteSize),
    f("commit_interval", Duration),
    f("queue", Usize),
    f("access", Enum(&["off", "stdout", "file"])),
    f("access_file", Str),
    f("access_max_bytes", ByteSize),
    f("access_keep", Usize),
    f(
        "app_level",
        Enum(&["off", "trace", "debug", "info", "warn", "error"]),
    ),
    f("otlp", Table(OTLP)),
];
const OTLP: &[Field] = &[
    f("endpoint", Str),
    f("batch", Usize),
    f("interval", Duration),
    f("timeout", Duration),
    f("service_name", Str),
];
const JOBS: &[Field] = &[
    f("backend", Enum(&["embedded", "redis"])),
    f("data_dir", Str),
    f("max_queued", Usize),
    f("result_ttl", Duration),
    f("lease", Duration),
    f("status_prefix", Str),
    f("finished_cache_bytes", ByteSize),
];
const ROUTE_ASYNC: &[Field] = &[
    f("upstream_path", Str),
    f("strip_suffix", Str),
    f("status_path", Str),
    f("concurrency", Usize),
    f("rate", U32),
    f("rate_per", Duration),
    f("max_attempts", U32),
    f("backoff_base", Duration),
    f("backoff_max", Duration),
    f("timeout", Duration),
    f("max_body_bytes", ByteSize),
    f("dedup", Enum(&["request", "url", "off"])),
    f("dedup_url_field", Str),
    f("dedup_scope", Enum(&["per-caller", "global"])),
    f("unit_cost", F64),
    f("batch_path", Str),
    f("batch_max", Usize),
    f("batch_window", Duration),
];
const POOL: &[Field] = &[
    f("name", Str),
    f("servers", Tables(POOL_SERVER)),
    f(
        "balance",
        Enum(&["round-robin", "least-outstanding", "consistent-hash"]),
    ),
    f("hash_key", Str),
    f("read_pool", Str),
    f("max_connections", Usize),
    f("queue_timeout", Duration),
    f("connect_timeout", Duration),
    f("health", Table(HEALTH)),
    f("outlier", Table(OUTLIER)),
    f("breaker", Table(BREAKER)),
    f("retry", Table(RETRY)),
];
const POOL_SERVER: &[Field] = &[f("url", Str), f("weight", U32)];
const HEALTH: &[Field] = &[
    f("path", Str),
    f("interval", Duration),
    f("timeout", Duration),
    f("healthy_threshold", U32),
    f("unhealthy_threshold", U32),
];
const OUTLIER: &[Field] = &[
    f("consecutive_failures", U32),
    f("base_ejection", Duration),
    f("max_ejection", Duration),
    f("max_ejection_percent", U32),
];
const BREAKER: &[Field] = &[
    f("enabled", Bool),
    f("failure_rate", F64),
    f("min_requests", U32),
    f("window", Duration),
    f("consecutive_failures", U32),
    f("open_for", Duration),
    f("half_open_requests", U32),
    f("on_errors", StrList),
    f("on_status", U32List),
];
const RETRY: &[Field] = &[
    f("attempts", U32),
    f("budget_percent", U32),
    f("min_per_second", U32),
    f("backoff_base", Duration),
    f("backoff_max", Duration),
    f("on_status", U32List),
];
const RATE_LIMIT: &[Field] = &[
    f("name", Str),
    f("key", Str),
    f("rate", U32),
    f("per", Duration),
    f("burst", U32),
    f("routes", StrList),
    f("methods", StrList),
    f("shared", Bool),
];
const JWT: &[Field] = &[
    f("mode", Enum(JWT_MODES)),
    f("algorithms", StrList),
    f("secret_file", Str),
    f("public_key_files", StrList),
    f("jwks_file", Str),
    f("issuers", StrList),
    f("audiences", StrList),
    f("leeway", Duration),
    f("user_claim", Str),
    f("forward_claims", StrMap),
];
const JWT_MODES: &[&str] = &["off", "optional", "required"];
const BATCH: &[Field] = &[
    f("enabled", Bool),
    f("path", Str),
    f("max_requests", Usize),
    f("concurrency", Usize),
    f("max_response_bytes", ByteSize),
];
const REDIS: &[Field] = &[
    f("url", Str),
    f("cluster", StrList),
    f("timeout", Duration),
    f("max_object_bytes", ByteSize),
    f("key_prefix", Str),
    f("retry_after", Duration),
    f("max_variants", Usize),
];
const SERVER: &[Field] = &[
    f("listen", Str),
    f("tls", Table(TLS)),
    f("http2", Bool),
    f("max_header_bytes", ByteSize),
    f("max_header_count", Usize),
    f("max_uri_bytes", ByteSize),
    f("merge_slashes", Bool),
    f("allow_encoded_slashes", Bool),
    f("max_body_bytes", ByteSize),
    f("max_concurrent_requests", Usize),
    f("slow_request_threshold", Duration),
    f("header_read_timeout", Duration),
    f("drain_timeout", Duration),
    f("request_body_timeout", Duration),
    f("max_connections", Usize),
    f("http2_max_concurrent_streams", U32),
    f("http2_idle_timeout", Duration),
    f("http2_keep_alive_interval", Duration),
    f("http2_keep_alive_timeout", Duration),
    f("via_name", Str),
];
const TLS: &[Field] = &[f("cert_file", Str), f("key_file", Str)];
const ADMIN: &[Field] = &[
    f("listen", Str),
    f("token_file", Str),
    f("metrics_public", Bool),
    f("allow_unauthenticated", Bool),
    f("allowed_hosts", StrList),
];
const UPSTREAM: &[Field] = &[
    f("url", Str),
    f("connect_timeout", Duration),
    f("response_timeout", Duration),
    f("body_idle_timeout", Duration),
    f("pool_idle_timeout", Duration),
    f("pool_max_idle", Usize),
    f("preserve_host", Bool),
    f("health", Table(HEALTH)),
    f("outlier", Table(OUTLIER)),
    f("breaker", Table(BREAKER)),
    f("retry", Table(RETRY)),
];
const FORWARDED: &[Field] = &[f("trusted_proxies", StrList), f("trusted_headers", StrList)];
const CACHE: &[Field] = &[
    f("enabled", Bool),
    f("max_bytes", ByteSize),
    f("max_object_bytes", ByteSize),
    f("drop_query_params", StrList),
    f("coalesce_timeout", Duration),
    f("keep_stale", Duration),
    f("max_heuristic_ttl", Duration),
    f("expose_tag_headers", Bool),
    f("warmup_concurrency", Usize),
];
const COMPRESSION: &[Field] = &[
    f("enabled", Bool),
    f("min_bytes", ByteSize),
    f("algorithms", StrList),
    f("gzip_level", U32),
    f("brotli_level", U32),
    f("zstd_level", I32),
    f("content_types", StrList),
    f("max_concurrent", Usize),
    f("max_streams", Usize),
];
const ROUTE: &[Field] = &[
    f("name", Str),
    f("path", Str),
    f("pattern", Str),
    f("methods", StrList),
    f("upstream", Str),
    f("pool", Str),
    f("jwt", Enum(JWT_MODES)),
    f("timeouts", Table(ROUTE_TIMEOUTS)),
    f("query_clamps", Tables(QUERY_CLAMP)),
    f("cache", Table(ROUTE_CACHE)),
    f("async", Table(ROUTE_ASYNC)),
];
const ROUTE_TIMEOUTS: &[Field] = &[
    f("connect", Duration),
    f("response", Duration),
    f("total", Duration),
];
const QUERY_CLAMP: &[Field] = &[
    f("param", Str),
    f("min", U64),
    f("max", U64),
    f("default", U64),
];
const ROUTE_CACHE: &[Field] = &[
    f("bypass", Bool),
    f("default_ttl", Duration),
    f("stale_while_revalidate", Duration),
    f("stale_if_error", Duration),
    f("authorized", Enum(&["rfc", "bypass", "per-user", "shared"])),
    f("cookies", Enum(&["rfc", "bypass", "ignore"])),
    f("allow_set_cookie", Bool),
    f("tags", StrList),
    f("invalidate_tags", StrList),
];

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn unknown_key(path: &str, key: &str, fields: &[Field]) -> String {
    let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
    let section = if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {path}")
    };
    match closest(key, &names) {
        Some(best) => format!("unknown setting `{key}` {section}: did you mean `{best}`?"),
        None => format!(
            "unknown setting `{key}` {section}: expected one of {}",
            names.join(", ")
        ),
    }
}

/// The name within edit distance 2 of `key`, if any (typo hints).
fn closest<'a>(key: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (edit_distance(key, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks a table against its fields, removing unknown keys and rejected
/// values so that the rest can still be deserialized and validated.
fn check_table(table: &mut toml::Table, fields: &[Field], path: &str, f: &mut Findings) {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let here = child(path, &key);
        let Some(field) = fields.iter().find(|fl| fl.name == key) else {
            f.problems
                .push(Problem::new(&here, unknown_key(path, &key, fields)));
            table.remove(&key);
            continue;
        };
        let keep = match table.get_mut(&key) {
            Some(v) => check_value(v, field.kind, &here, f),
            None => true,
        };
        if !keep {
            table.remove(&key);
            f.pruned.push(here);
        }
    }
}

fn found(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {s:?}"),
        Value::Integer(i) => format!("the integer {i}"),
        other => format!("a {}", other.type_str()),
    }
}

/// Checks one value; false when it must be removed.
fn check_value(v: &mut Value, kind: Kind, path: &str, f: &mut Findings) -> bool {
    match kind {
        Str => v.is_str() || reject(f, path, format!("expected a string, found {}", found(v))),
        Bool => {
            v.is_bool()
                || reject(
                    f,
                    path,
                    format!("expected true or false, found {}", found(v)),
                )
        }
        U32 => {
            integer_in(v, 0, i64::from(u32::MAX))
                || reject(
                    f,
                    path,
                    format!(
                        "expected an integer from 0 to {}, found {}",
                        u32::MAX,
                        found(v)
                    ),
                )
        }
        I32 => {
            integer_in(v, i64::from(i32::MIN), i64::from(i32::MAX))
                || reject(f, path, format!("expected an integer, found {}", found(v)))
        }
        U64 => {
            integer_in(v, 0, i64::MAX)
                || reject(
                    f,
                    path,
                    format!("expected a non-negative integer, found {}", found(v)),
                )
        }
        F64 => {
            if let Value::Integer(n) = v {
                // Written as `1`: the model wants a float.
                *v = Value::Float(*n as f64);
            }
            matches!(v, Value::Float(x) if x.is_finite())
                || reject(f, path, format!("expected a number, found {}", found(v)))
        }
        U32List => match v {
            Value::Array(items) => {
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    if !integer_in(item, 0, i64::from(u32::MAX)) {
                        f.problems.push(Problem::new(
                            format!("{path}[{i}]"),
                            format!("expected a non-negative integer, found {}", found(item)),
                        ));
                        ok = false;
                    }
                }
                ok
            }
            other => reject(
                f,
                path,
                format!("expected a list of integers, found {}", found(other)),
            ),
        },
        StrMap => match v {
            Value::Table(t) => {
                let mut ok = true;
                for (k, item) in t.iter() {
                    if !item.is_str() {
                        f.problems.push(Problem::new(
                            child(path, k),
                            format!("expected a string, found {}", found(item)),
                        ));
                        ok = false;
                    }
                }
                ok
            }
            other => reject(
                f,
                path,
                format!("expected a table of strings, found {}", found(other)),
            ),
        },
        Usize => {
            let max = i64::try_from(usize::MAX).unwrap_or(i64::MAX);
            integer_in(v, 0, max)
                || reject(
                    f,
                    path,
                    format!("expected a non-negative integer, found {}", found(v)),
                )
        }
        Duration => match v {
            Value::String(s) => match parse_duration(s) {
                Ok(_) => true,
                Err(e) => reject(f, path, e),
            },
            // Bare integers are seconds; the units type rejects what cannot
            // be held in milliseconds.
            Value::Integer(n) => match u64::try_from(*n) {
                Ok(n) if n.checked_mul(1000).is_some() => true,
                _ => reject(
                    f,
                    path,
                    format!("invalid duration {n}: expected e.g. \"30s\", \"250ms\", \"5m\""),
                ),
            },
            other => reject(
                f,
                path,
                format!(
                    "expected a duration such as \"30s\", found {}",
                    found(other)
                ),
            ),
        },
        ByteSize => match v {
            Value::String(s) => match parse_byte_size(s) {
                Ok(_) => true,
                Err(e) => reject(f, path, e),
            },
            Value::Integer(n) => {
                *n >= 0 || reject(f, path, format!("invalid size {n}: must not be negative"))
            }
            other => reject(
                f,
                path,
                format!("expected a size such as \"256MiB\", found {}", found(other)),
            ),
        },
        StrList => match v {
            Value::Array(items) => {
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    if !item.is_str() {
                        f.problems.push(Problem::new(
                            format!("{path}[{i}]"),
                            format!("expected a string, found {}", found(item)),
                        ));
                        ok = false;
                    }
                }
                ok
            }
            other => reject(
                f,
                path,
                format!("expected a list of strings, found {}", found(other)),
            ),
        },
        Enum(options) => match v.as_str() {
            Some(s) if options.contains(&s) => true,
            _ => reject(
                f,
                path,
                format!("expected one of {}, found {}", quoted(options), found(v)),
            ),
        },
        Table(fields) => match v {
            Value::Table(t) => {
                check_table(t, fields, path, f);
                true
            }
            other => reject(f, path, format!("expected a table, found {}", found(other))),
        },
        Tables(fields) => match v {
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let here = format!("{path}[{i}]");
                    if let Value::Table(t) = item {
                        check_table(t, fields, &here, f);
                    } else {
                        f.problems.push(Problem::new(
                            &here,
                            format!("expected a table, found {}", found(item)),
                        ));
                        // Keep the indices of the following entries stable.
                        *item = Value::Table(toml::Table::new());
                        f.pruned.push(here);
                    }
                }
                true
            }
            other => reject(
                f,
                path,
                format!("expected an array of tables, found {}", found(other)),
            ),
        },
    }
}

fn reject(f: &mut Findings, path: &str, reason: String) -> bool {
    f.problems.push(Problem::new(path, reason));
    false
}

fn integer_in(v: &Value, min: i64, max: i64) -> bool {
    v.as_integer().is_some_and(|n| (min..=max).contains(&n))
}

fn quoted(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("{o:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// Environment overrides.

fn apply_env<I, K, V>(table: &mut toml::Table, env: I, f: &mut Findings)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut vars: Vec<(String, Option<String>)> = env
        .into_iter()
        .filter_map(|(k, v)| {
            // A name that is not UTF-8 cannot be one of ours.
            let k = k.as_ref().to_str()?.to_string();
            let v = v.as_ref().to_str().map(str::to_string);
            Some((k, v))
        })
        .filter(|(k, _)| is_override(k))
        .collect();
    // Sorted so that problems come out in a stable order.
    vars.sort();
    for (var, value) in vars {
        let Some(value) = value else {
            f.problems.push(Problem {
                path: String::new(),
                reason: "the value is not valid UTF-8".into(),
                origin: Origin::Env { var },
            });
            continue;
        };
        if let Err((path, reason)) = apply_one(table, &var, &value, f) {
            f.problems.push(Problem {
                path,
                reason,
                origin: Origin::Env { var },
            });
        }
    }
}

fn is_override(var: &str) -> bool {
    let Some(rest) = var.strip_prefix(PREFIX) else {
        return false;
    };
    if CLI_VARS.contains(&var) || rest.is_empty() {
        return false;
    }
    if rest.contains("__") {
        return true;
    }
    let name = rest.to_ascii_lowercase();
    CONFIG
        .iter()
        .any(|fl| fl.name == name && !matches!(fl.kind, Table(_) | Tables(_)))
}

/// Sets the value of one override; on failure returns the path reached and
/// the reason.
fn apply_one(
    root: &mut toml::Table,
    var: &str,
    value: &str,
    f: &mut Findings,
) -> Result<(), (String, String)> {
    let rest = var.get(PREFIX.len()..).unwrap_or_default();
    let segs: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    let mut path = String::new();
    let mut fields = CONFIG;
    let mut table = root;
    let mut i = 0;
    loop {
        let seg = &segs[i];
        let Some(field) = fields.iter().find(|fl| fl.name == *seg) else {
            let reason = if seg.is_empty() {
                "no setting: empty segment in the variable name (`____` or a trailing `__`)"
                    .to_string()
            } else {
                format!("no such setting: {}", unknown_key(&path, seg, fields))
            };
            return Err((child(&path, seg), reason));
        };
        path = child(&path, seg);
        let last = i + 1 == segs.len();
        match field.kind {
            Table(sub) => {
                if last {
                    return Err((
                        path,
                        format!(
                            "a section, not a value: set its settings, e.g. {var}__{}",
                            sub.first().map_or("", |s| s.name).to_ascii_uppercase()
                        ),
                    ));
                }
                if !table.contains_key(seg) {
                    f.env_created
                        .entry(path.clone())
                        .or_insert_with(|| var.to_string());
                }
                let entry = table
                    .entry(seg.clone())
                    .or_insert_with(|| Value::Table(toml::Table::new()));
                // A non-table written in the file is reported by the walk.
                let Value::Table(t) = entry else {
                    return Ok(());
                };
                table = t;
                fields = sub;
                i += 1;
            }
            Tables(sub) => {
                let list_path = path.clone();
                let Some(index) = segs.get(i + 1) else {
                    return Err((
                        path,
                        format!(
                            "a list of sections: set one entry's setting, e.g. {var}__0__{}",
                            sub.get(1).map_or("", |s| s.name).to_ascii_uppercase()
                        ),
                    ));
                };
                let index: usize = match index.parse() {
                    Ok(n) if n < MAX_ROUTE_INDEX && index.bytes().all(|b| b.is_ascii_digit()) => n,
                    _ => {
                        return Err((
                            path,
                            format!(
                                "{index:?} is not an entry index: expected a number below {MAX_ROUTE_INDEX}"
                            ),
                        ));
                    }
                };
                path = format!("{path}[{index}]");
                if i + 2 == segs.len() {
                    return Err((
                        path,
                        "an entry, not a value: set one of its settings".into(),
                    ));
                }
                let entry = table
                    .entry(seg.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = entry else {
                    return Ok(());
                };
                // Entries between the file's last and this index are created
                // empty; validation reports them if nothing fills them.
                while items.len() <= index {
                    let created = format!("{list_path}[{}]", items.len());
                    f.env_created
                        .entry(created)
                        .or_insert_with(|| var.to_string());
                    items.push(Value::Table(toml::Table::new()));
                }
                let Some(Value::Table(t)) = items.get_mut(index) else {
                    return Ok(());
                };
                table = t;
                fields = sub;
                i += 2;
            }
            kind => {
                if !last {
                    return Err((
                        child(&path, &segs[i + 1]),
                        format!("no such setting: `{seg}` is a value, not a section"),
                    ));
                }
                let v = typed(kind, value).map_err(|e| (path.clone(), e))?;
                table.insert(seg.clone(), v);
                f.env_paths.insert(path, var.to_string());
                return Ok(());
            }
        }
    }
}

/// Converts an environment value to the TOML type of its setting.
fn typed(kind: Kind, value: &str) -> Result<Value, String> {
    let v = value.trim();
    let int = |min: i64, max: i64| match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Value::Integer(n)),
        _ => Err(format!(
            "expected an integer from {min} to {max}, found {value:?}"
        )),
    };
    match kind {
        Bool => match v.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, found {value:?}")),
        },
        U32 => int(0, i64::from(u32::MAX)),
        I32 => int(i64::from(i32::MIN), i64::from(i32::MAX)),
        Usize => int(0, i64::try_from(usize::MAX).unwrap_or(i64::MAX)),
        U64 => int(0, i64::MAX),
        F64 => match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::Float(x)),
            _ => Err(format!("expected a number, found {value:?}")),
        },
        U32List => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.parse::<u32>() {
                Ok(n) => Ok(Value::Integer(i64::from(n))),
                Err(_) => Err(format!(
                    "expected integers separated by commas, found {value:?}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        StrMap => Err("a table of names: set it in the configuration file".into()),
        StrList => Ok(Value::Array(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        // Strings (not trimmed: a value is taken as written), durations and
        // sizes (checked by the walk, with the same messages as the file).
        _ => Ok(Value::String(value.to_string())),
    }
}

#[cfg(test)]
pub(crate) mod schema_check {
    //! Lets the tests compare the schema with the model.
    use super::*;

    /// Every dotted path the schema knows, list entries as `[0]`.
    pub(crate) fn schema_paths() -> Vec<String> {
        let mut out = Vec::new();
        walk(CONFIG, "", &mut out);
        out.sort();
        out
    }

    fn walk(fields: &[Field], path: &str, out: &mut Vec<String>) {
        for fl in fields {
            let p = child(path, fl.name);
            match fl.kind {
                Table(sub) => walk(sub, &p, out),
                Tables(sub) => walk(sub, &format!("{p}[0]"), out),
                _ => out.push(p),
            }
        }
    }
}
