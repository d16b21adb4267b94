//! `Vary` handling (RFC 9111 §4.1): which request fields select a stored
//! response, and whether a new request presents the same values.
//!
//! Values are compared after the normalization the RFC allows for list
//! fields: all lines combined with commas and whitespace around the commas
//! removed. Matching walks both sides element by element so a lookup never
//! allocates.

use http::header::VARY;
use http::{HeaderMap, HeaderName, HeaderValue};
use xxhash_rust::xxh3::Xxh3;

/// The response carries `Vary: *`, so no later request can be known to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("response varies on `*`")]
pub struct VaryStar;

/// Returns the field names listed in all `Vary` lines of a response,
/// lowercased and de-duplicated in first-seen order. Names that are not
/// valid field names are skipped: no request can carry them, so they would
/// always compare as absent on both sides.
pub fn vary_fields(rsp_headers: &HeaderMap) -> Result<Vec<HeaderName>, VaryStar> {
    let mut fields = Vec::new();
    for line in rsp_headers.get_all(VARY) {
        for item in elements(line.as_bytes()) {
            if item == b"*" {
                return Err(VaryStar);
            }
            // `HeaderName::from_bytes` lowercases, which makes names equal
            // regardless of how the origin spelled them.
            match HeaderName::from_bytes(item) {
                Ok(name) if !fields.contains(&name) => fields.push(name),
                _ => {}
            }
        }
    }
    Ok(fields)
}

/// The request values a stored response was selected by: one entry per
/// `Vary` field, `None` when the request did not carry the field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VaryKey(Vec<(HeaderName, Option<HeaderValue>)>);

impl VaryKey {
    /// Captures the normalized values of `fields` from a request, leaving out
    /// the names in `skip` (for example `accept-encoding` when the gateway
    /// negotiates encodings itself and stores every variant in one entry).
    pub fn capture(fields: &[HeaderName], req_headers: &HeaderMap, skip: &[HeaderName]) -> Self {
        let entries = fields
            .iter()
            .filter(|name| !skip.contains(name))
            .map(|name| {
                (
                    name.clone(),
                    normalized(req_headers, name).map(|v| owned(&v)),
                )
            })
            .collect();
        Self(entries)
    }

    /// Rebuilds a key from entries produced by [`VaryKey::entries`], for
    /// example after reading an entry back from a shared store. The values
    /// are expected to be normalized already.
    pub fn from_entries(entries: Vec<(HeaderName, Option<HeaderValue>)>) -> Self {
        Self(entries)
    }

    /// The captured fields and their normalized values.
    pub fn entries(&self) -> &[(HeaderName, Option<HeaderValue>)] {
        &self.0
    }

    /// Returns true when the request presents the same value (or the same
    /// absence) for every captured field.
    pub fn matches(&self, req_headers: &HeaderMap) -> bool {
        self.0.iter().all(|(name, stored)| {
            let mut lines = req_headers.get_all(name).iter().peekable();
            match (stored, lines.peek()) {
                (None, None) => true,
                (None, Some(_)) | (Some(_), None) => false,
                (Some(stored), Some(_)) => {
                    let request = lines.flat_map(|v| elements(v.as_bytes()));
                    request.eq(elements(stored.as_bytes()))
                }
            }
        })
    }

    /// Returns true when the response did not vary on any captured field.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A stable 64-bit digest of the captured values, for building secondary
    /// keys in a shared store. Equal digests do not prove a match; callers
    /// confirm with [`VaryKey::matches`] because xxh3 is not collision
    /// resistant against a client that chooses header values.
    pub fn digest(&self) -> u64 {
        let mut hasher = Xxh3::new();
        for (name, value) in &self.0 {
            hasher.update(name.as_str().as_bytes());
            match value {
                // Tags that cannot occur inside a header value keep
                // `a: ""` apart from `a` absent and fields apart from values.
                Some(v) => {
                    hasher.update(b"\n=");
                    hasher.update(v.as_bytes());
                }
                None => hasher.update(b"\n-"),
            }
            hasher.update(b"\n");
        }
        hasher.digest()
    }
}

/// The joined, normalized value of `name`, or `None` when it is absent.
fn normalized(headers: &HeaderMap, name: &HeaderName) -> Option<HeaderValue> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?;
    let mut joined = Vec::with_capacity(first.len());
    for line in std::iter::once(first).chain(lines) {
        for item in elements(line.as_bytes()) {
            if !joined.is_empty() {
                joined.push(b',');
            }
            joined.extend_from_slice(item);
        }
    }
    // The bytes come from valid header values, so this only fails if the
    // `http` crate tightens its rules; keeping the first raw line then still
    // matches the same request.
    Some(HeaderValue::from_bytes(&joined).unwrap_or_else(|_| first.clone()))
}

/// The non-empty list elements of one field line, without surrounding
/// whitespace.
fn elements(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b',')
        .map(|item| item.trim_ascii())
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests;

/// A copy of `v` in its own allocation. Values parsed by hyper are slices
/// of the connection's read buffer; keeping one in the cache would keep the
/// whole buffer (kilobytes) alive for as long as the entry lives.
pub fn owned(v: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone());
    copy.set_sensitive(v.is_sensitive());
    copy
}

/// Replaces every value of `h` by an owned copy (see [`owned`]).
pub fn own_values(h: &mut HeaderMap) {
    for (_, v) in h.iter_mut() {
        *v = owned(v);
    }
}
