//! Invalidation: one description of what to purge ([`Targets`], in
//! `perfgate_cache::invalidate`) and one way
//! to apply it, shared by the admin API, automatic invalidation after unsafe
//! requests (RFC 9111 §4.4) and the fan-out from other instances.

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, Uri};
use perfgate_observe::InvalidationSource;

pub use perfgate_cache::invalidate::{InvalidateReport, InvalidateRequest, Targets};

use crate::context::Conn;
use crate::gateway::Gateway;
use crate::route::Route;
use crate::target::request_host;

/// A key without its per-credential suffix (`\nuser=…`, `\nauth`).
fn bare_key(mut key: String) -> String {
    if let Some(i) = key.find('\n') {
        key.truncate(i);
    }
    key
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
        let key = self.tiers.key_for_hash(hash).await?;
        let targets = Targets {
            keys: vec![key.clone()],
            ..Targets::default()
        };
        let report = self
            .invalidate_targets(targets, InvalidationSource::admin)
            .await;
        Some((key, report))
    }

    /// Applies an invalidation everywhere: this instance's L1, the L2, and
    /// (through Redis) every other instance's L1.
    pub(crate) async fn invalidate_targets(
        &self,
        targets: Targets,
        source: InvalidationSource,
    ) -> InvalidateReport {
        let l1_removed = self.tiers.apply_l1(&targets);
        let mut report = self.tiers.invalidate_shared(targets, source).await;
        report.l1_removed = l1_removed;
        report
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
