//! Invalidation: one description of what to purge ([`Targets`]) and one way
//! to apply it, shared by the admin API, automatic invalidation after unsafe
//! requests (RFC 9111 §4.4) and the fan-out from other instances.

use std::sync::Arc;

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Uri};
use perfgate_cache::key::key_target;
use perfgate_cache::memory::Variants;
use perfgate_observe::InvalidationSource;
use serde::Serialize;

use crate::context::Conn;
use crate::gateway::Gateway;
use crate::route::Route;
use crate::target::request_host;

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

/// A key without its per-credential suffix (`\nuser=…`, `\nauth`).
fn bare_key(mut key: String) -> String {
    if let Some(i) = key.find('\n') {
        key.truncate(i);
    }
    key
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

impl Gateway {
    /// Turns an admin request into targets: absolute URLs become keys of
    /// their host, paths match on every host.
    pub fn targets_for(&self, req: &InvalidateRequest) -> Targets {
        let to_key = |u: &str| -> String {
            if u.starts_with('/') {
                return self.keys.target(u);
            }
            match u.parse::<Uri>() {
                Ok(uri) => {
                    let scheme = uri.scheme_str().unwrap_or("http");
                    let host = uri.authority().map_or("", |a| a.as_str());
                    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
                    self.keys.primary_key(scheme, host, pq)
                }
                Err(_) => u.to_string(),
            }
        };
        let prefixes = req
            .prefix
            .iter()
            .map(|p| {
                if p.starts_with('/') {
                    p.clone()
                } else {
                    // A URL prefix: normalize scheme and host, keep the path as given.
                    let k = to_key(p);
                    if p.ends_with('/') || k.ends_with('/') && !p.ends_with('/') {
                        k.trim_end_matches('/').to_string()
                    } else {
                        k
                    }
                }
            })
            .collect();
        Targets {
            keys: req.urls.iter().map(|u| to_key(u)).collect(),
            prefixes,
            tags: req.tags.clone(),
            soft: req.soft,
        }
    }

    /// An admin invalidation.
    pub async fn invalidate(&self, req: &InvalidateRequest) -> InvalidateReport {
        let targets = self.targets_for(req);
        self.invalidate_targets(targets, InvalidationSource::admin)
            .await
    }

    /// Purges the key whose `url_hash` is `hash`; `None` when no tier knows it.
    pub async fn purge_hash(&self, hash: &str) -> Option<(String, InvalidateReport)> {
        let key = self.key_for_hash(hash).await?;
        let targets = Targets {
            keys: vec![key.clone()],
            ..Targets::default()
        };
        let report = self
            .invalidate_targets(targets, InvalidationSource::admin)
            .await;
        Some((key, report))
    }

    /// Applies targets to this instance's L1; returns the keys touched.
    pub(crate) fn apply_l1(&self, t: &Targets) -> u64 {
        let Some(cache) = &self.cache else { return 0 };
        if t.is_empty() {
            return 0;
        }
        // Exact keys are removed directly; a walk over every entry is only
        // needed for paths, prefixes, tags, or per-user keys (`key\nuser=…`).
        let exact_only = t.prefixes.is_empty()
            && t.tags.is_empty()
            && !self.per_user_routes
            && t.keys.iter().all(|k| !k.starts_with('/'));
        if exact_only && !t.soft {
            return t.keys.iter().filter(|k| cache.remove(k)).count() as u64;
        }
        let pred = |k: &str, v: &Variants| t.matches(k, v);
        if t.soft {
            cache.soften_matching(pred)
        } else {
            cache.remove_matching(pred)
        }
    }

    /// The targets of a successful unsafe request (RFC 9111 §4.4): its own
    /// URI, the same-host `Location`/`Content-Location` URIs, and the tags
    /// its route declares.
    pub(crate) fn unsafe_targets(
        &self,
        route: &Route,
        uri: &Uri,
        req_headers: &HeaderMap,
        rsp_headers: &HeaderMap,
        conn: &Conn,
    ) -> Targets {
        // Bare primary keys: they match every per-user and authenticated
        // copy of the URI (`key\n…`), not only the requester's.
        let mut keys = vec![bare_key(self.key_for(route, uri, req_headers, conn))];
        let own_authority = request_host(uri, req_headers);
        for name in [LOCATION, CONTENT_LOCATION] {
            for v in rsp_headers.get_all(&name) {
                let Some(target) = v.to_str().ok().and_then(|s| s.parse::<Uri>().ok()) else {
                    continue;
                };
                // Only URIs of the same host may be invalidated (RFC 9111 §4.4).
                if target
                    .authority()
                    .is_some_and(|a| !a.as_str().eq_ignore_ascii_case(own_authority))
                {
                    continue;
                }
                let pq = target.path_and_query().map_or("/", |p| p.as_str());
                let resolved = if pq.starts_with('/') {
                    pq.to_string()
                } else {
                    // A relative reference: resolve against the request's directory.
                    let base = uri.path();
                    let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
                    format!("{dir}{pq}")
                };
                if let Ok(u) = resolved.parse::<Uri>() {
                    keys.push(bare_key(self.key_for(route, &u, req_headers, conn)));
                }
            }
        }
        Targets {
            keys,
            prefixes: Vec::new(),
            tags: route
                .invalidate_tags
                .iter()
                .map(|t| t.to_string())
                .collect(),
            soft: false,
        }
    }
}

/// Tags of a response: the route's, plus the upstream's `Surrogate-Key`
/// (space-separated) and `Cache-Tag` (comma-separated) headers.
pub(crate) fn response_tags(route_tags: &[Arc<str>], headers: &HeaderMap) -> Vec<Arc<str>> {
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
    use perfgate_cache::key::KeyNormalizer;

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
