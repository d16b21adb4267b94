//! Reading admin request bodies as JSON objects by hand, so that every
//! rejection names the exact field at fault (`urls[3]`, `soft`, …); axum's
//! `Json` rejection only says that deserialization failed somewhere.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde_json::{Map, Value};

use perfgate_proxy::ErrorKind;

use crate::envelope::ApiError;

/// Largest body accepted: ten thousand URLs fit comfortably, and nothing
/// legitimate is larger.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// A request body that is a JSON object, with the names of its fields that
/// were read, so that the unknown ones can be rejected afterwards.
pub struct Fields {
    map: Map<String, Value>,
    known: &'static [&'static str],
}

impl Fields {
    /// The value of `name`, `None` when absent. `name` must be one of the
    /// fields declared to [`read_object`].
    pub fn get(&self, name: &str) -> Option<&Value> {
        debug_assert!(self.known.contains(&name), "{name} is not declared");
        self.map.get(name)
    }
}

/// Reads `body` as a JSON object whose fields are all in `known`.
/// Errors name `body` (not JSON, not an object, wrong content type) or the
/// unknown field.
pub async fn read_object(
    headers: &HeaderMap,
    body: Body,
    known: &'static [&'static str],
) -> Result<Fields, ApiError> {
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let mime = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::bad_request(
                "body",
                format!(
                    "expected Content-Type: application/json, got {:?}",
                    ct.to_str().unwrap_or("(not text)")
                ),
            ));
        }
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("the body is larger than {MAX_BODY_BYTES} bytes (or could not be read)"),
            )
            .field("body")
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "body",
            "empty body: expected a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("body", format!("invalid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "body",
            format!("expected a JSON object, got {}", kind(&value)),
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            unknown.clone(),
            format!(
                "unknown field {unknown:?}: expected one of {}",
                known.join(", ")
            ),
        ));
    }
    Ok(Fields { map, known })
}

/// The JSON type of `v`, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `field` as an array (absent → empty); `None` of the items is checked.
pub fn array<'a>(fields: &'a Fields, field: &str) -> Result<&'a [Value], ApiError> {
    match fields.get(field) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(ApiError::bad_request(
            field,
            format!("expected an array of strings, got {}", kind(other)),
        )),
    }
}

/// `field` as an integer in `range` (absent → `None`).
pub fn integer(
    fields: &Fields,
    field: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ApiError> {
    let Some(v) = fields.get(field) else {
        return Ok(None);
    };
    match v.as_u64() {
        Some(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::bad_request(
            field,
            format!(
                "expected an integer from {} to {}, got {v}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// A request target given as a path: starts with `/`, parses as an
/// origin-form target, no whitespace, no fragment.
pub fn check_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} is not a path starting with `/`"));
    }
    check_uri_text(s)?;
    s.parse::<axum::http::uri::PathAndQuery>()
        .map(|_| ())
        .map_err(|e| format!("{s:?} is not a valid path: {e}"))
}

/// An absolute `http://` or `https://` URL with a host.
pub fn check_absolute(s: &str) -> Result<(), String> {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    if !lower.starts_with("http://") && !lower.starts_with("https://") {
        return Err(format!(
            "{s:?} is neither a path starting with `/` nor an http:// or https:// URL"
        ));
    }
    check_uri_text(s)?;
    let uri = s
        .parse::<axum::http::Uri>()
        .map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
    match uri.authority() {
        Some(a) if !a.host().is_empty() && !a.as_str().contains('@') => Ok(()),
        Some(a) if a.as_str().contains('@') => {
            Err(format!("{s:?}: credentials in the URL are not supported"))
        }
        _ => Err(format!("{s:?} has no host")),
    }
}

fn check_uri_text(s: &str) -> Result<(), String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} contains whitespace: percent-encode it (%20)"
        ));
    }
    if s.contains('#') {
        return Err(format!(
            "{s:?} has a fragment (`#…`), which is never part of a cache key"
        ));
    }
    Ok(())
}

/// A path or an absolute URL.
pub fn check_path_or_url(s: &str) -> Result<(), String> {
    if s.starts_with('/') {
        check_path(s)
    } else {
        check_absolute(s)
    }
}
