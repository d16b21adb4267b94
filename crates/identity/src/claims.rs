//! The payload of a validated token.

use std::sync::Arc;

use serde_json::{Map, Value};

/// The claims (payload JSON object) of a validated token.
///
/// Cloning is cheap (one reference count): the validator hands out clones of
/// cached claims on every request.
#[derive(Clone, Debug)]
pub struct Claims(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    map: Map<String, Value>,
    user: Option<Box<str>>,
}

impl Claims {
    /// Wraps a payload object; `user_claim` names the claim that
    /// [`Claims::user`] returns (`"sub"` usually).
    ///
    /// The validator builds `Claims` itself; this is public so that other
    /// crates can build claims in their tests.
    pub fn new(map: Map<String, Value>, user_claim: &str) -> Self {
        let user: Option<Box<str>> = match map.get(user_claim) {
            Some(Value::String(s)) => Some(s.as_str().into()),
            Some(Value::Number(n)) => Some(n.to_string().into()),
            _ => None,
        };
        let user = user.filter(|user| header_safe(user));
        Claims(Arc::new(Inner { map, user }))
    }

    /// The user id: the value of the configured user claim when it is a
    /// string, or a number (rendered as JSON text, e.g. `"42"`).
    ///
    /// `None` when the claim is absent, of another type, or contains control
    /// characters (which could not be logged or forwarded in a header
    /// safely).
    pub fn user(&self) -> Option<&str> {
        self.0.user.as_deref()
    }

    /// The raw value of a claim, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.map.get(name)
    }

    /// The whole payload object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0.map
    }

    /// A claim rendered for an HTTP header value: strings as they are,
    /// numbers and booleans as JSON text, arrays whose items are all strings
    /// joined with `","` (no spaces), any other array and objects as compact
    /// JSON.
    ///
    /// `None` when the claim is absent or `null`, or when the rendering
    /// contains a control character other than tab (a header cannot carry
    /// it, and forwarding it would allow header injection).
    pub fn header_value(&self, name: &str) -> Option<String> {
        let rendered = match self.get(name)? {
            Value::Null => return None,
            Value::String(s) => s.clone(),
            Value::Array(items) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        header_safe(&rendered).then_some(rendered)
    }
}

/// Whether `s` can be an HTTP header value: no control characters except
/// horizontal tab (non-ASCII UTF-8 is allowed, as `obs-text`).
fn header_safe(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
