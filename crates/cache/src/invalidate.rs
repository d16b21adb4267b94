//! What to purge, and what a purge did: [`Targets`] (keys, prefixes, tags;
//! hard or soft), the admin API's [`InvalidateRequest`], the
//! [`InvalidateReport`], and the tags a response is stored under. The proxy
//! applies targets to L1 and L2 and fans them out to other instances.

use std::sync::Arc;

use http::HeaderMap;
use serde::Serialize;

use crate::key::key_target;
use crate::memory::Variants;

/// What to purge. Strings starting with `GET ` are primary keys (one host);
/// strings starting with `/` are normalized paths that match on every host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// Exact keys or exact paths (with their query).
    pub keys: Vec<String>,
    /// Key prefixes or path prefixes.
    pub prefixes: Vec<String>,
    /// Entries carrying any of these tags.
    pub tags: Vec<String>,
    /// Mark stale instead of removing (stale-while-revalidate can then
    /// refresh in the background instead of a stampede).
    pub soft: bool,
}

impl Targets {
    /// True when there is nothing to purge.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.prefixes.is_empty() && self.tags.is_empty()
    }

    /// Whether the entry stored under `key` is targeted.
    pub fn matches(&self, key: &str, variants: &Variants) -> bool {
        let target = || key_target(key).map_or("", |(_, t)| t);
        self.keys.iter().any(|t| {
            if t.starts_with('/') {
                target() == t
            } else {
                key == t
                    || (key.starts_with(t.as_str()) && key.as_bytes().get(t.len()) == Some(&b'\n'))
            }
        }) || self.prefixes.iter().any(|p| {
            if p.starts_with('/') {
                target().starts_with(p.as_str())
            } else {
                key.starts_with(p.as_str())
            }
        }) || (!self.tags.is_empty()
            && variants.entries.iter().any(|e| {
                e.tags
                    .iter()
                    .any(|t| self.tags.iter().any(|x| x.as_str() == &**t))
            }))
    }
}

/// An invalidation as the admin API receives it (already validated).
#[derive(Debug, Clone, Default)]
pub struct InvalidateRequest {
    /// Absolute URLs (one host) or paths (every host).
    pub urls: Vec<String>,
    /// An absolute URL prefix or a path prefix.
    pub prefix: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Soft purge.
    pub soft: bool,
}

/// What an invalidation did.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidateReport {
    /// Keys removed (or softened) from this instance's L1.
    pub l1_removed: u64,
    /// Keys removed (or softened) from L2.
    pub l2_removed: u64,
    /// Soft purge.
    pub soft: bool,
    /// `sent` when other instances were told, `local-only` without Redis
    /// (or while it is unreachable).
    pub fanout: &'static str,
}

/// Tags of a response: the route's, plus the upstream's `Surrogate-Key`
/// (space-separated) and `Cache-Tag` (comma-separated) headers.
pub fn response_tags(route_tags: &[Arc<str>], headers: &HeaderMap) -> Vec<Arc<str>> {
    let mut tags: Vec<Arc<str>> = route_tags.to_vec();
    for v in headers.get_all("surrogate-key") {
        if let Ok(s) = v.to_str() {
            tags.extend(s.split_ascii_whitespace().map(Arc::from));
        }
    }
    for v in headers.get_all("cache-tag") {
        if let Ok(s) = v.to_str() {
            tags.extend(
                s.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(Arc::from),
            );
        }
    }
    tags.sort();
    tags.dedup();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyNormalizer;

    fn no_variants() -> Variants {
        Variants::default()
    }

    #[test]
    fn keys_paths_and_prefixes_match_as_documented() {
        let n = KeyNormalizer::default();
        let k = n.primary_key("http", "a.example", "/events/7?x=1");
        let v = no_variants();
        let t = |keys: &[&str], prefixes: &[&str]| Targets {
            keys: keys.iter().map(|s| s.to_string()).collect(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            ..Targets::default()
        };
        assert!(t(&[&k], &[]).matches(&k, &v));
        assert!(t(&[&k], &[]).matches(&format!("{k}\nuser=1"), &v));
        assert!(!t(&[&k], &[]).matches(&format!("{k}2"), &v));
        assert!(t(&["/events/7?x=1"], &[]).matches(&k, &v));
        assert!(!t(&["/events/7"], &[]).matches(&k, &v));
        assert!(t(&[], &["/events"]).matches(&k, &v));
        assert!(t(&[], &["GET http://a.example/events"]).matches(&k, &v));
        assert!(!t(&[], &["GET http://b.example/events"]).matches(&k, &v));
    }

    #[test]
    fn tags_come_from_route_and_headers() {
        let mut h = HeaderMap::new();
        h.insert("surrogate-key", "events e42".parse().unwrap());
        h.insert("cache-tag", "a, b,,".parse().unwrap());
        let tags = response_tags(&[Arc::from("events")], &h);
        let tags: Vec<&str> = tags.iter().map(|t| &**t).collect();
        assert_eq!(tags, ["a", "b", "e42", "events"]);
    }
}
