//! Helpers shared by this crate's unit tests.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A header map from name/value pairs (invalid pairs are skipped).
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    map
}
