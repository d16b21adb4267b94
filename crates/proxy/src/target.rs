//! The one normalized request target. `Gateway::proxy` rewrites every
//! request's path with [`normalize`] right after the guard, before job
//! status lookup and route selection, so the route, the rate limits and
//! clamps, the cache key and the upstream all see the same path (SPEC §10:
//! one normalized path decides the route, the cache key and the upstream
//! target). The rules are `KeyNormalizer::normalize_path`'s: the cache key
//! uses the same function.

use http::Uri;
use http::uri::PathAndQuery;
use perfgate_cache::key::KeyNormalizer;

use perfgate_http::error::{Error, ErrorKind};

/// Rewrites `uri` into its normalized form; 400 for a path that servers
/// read differently (see `KeyNormalizer::normalize_path`). The query is
/// left as the client sent it. No allocation when the path is already
/// normalized.
pub(crate) fn normalize(keys: &KeyNormalizer, uri: &mut Uri) -> Result<(), Error> {
    let path = uri.path();
    let normalized = keys
        .normalize_path(path)
        .map_err(|e| Error::new(ErrorKind::BadRequest, e.to_string()))?;
    if *normalized == *path {
        return Ok(());
    }
    let pq = match uri.query() {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized.into_owned(),
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(pq)
            .map_err(|_| Error::new(ErrorKind::BadRequest, "invalid request target"))?,
    );
    *uri = Uri::from_parts(parts)
        .map_err(|_| Error::new(ErrorKind::BadRequest, "invalid request target"))?;
    Ok(())
}

/// The host a client asked for: `Host` (HTTP/1), else the URI's authority
/// (HTTP/2 `:authority`), else empty.
pub(crate) fn request_host<'a>(uri: &'a Uri, headers: &'a http::HeaderMap) -> &'a str {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use perfgate_cache::key::PathRules;

    use super::*;

    fn norm(rules: PathRules, target: &str) -> Result<String, Error> {
        let keys = KeyNormalizer::new(&[]).with_path_rules(rules);
        let mut uri: Uri = target.parse().unwrap_or_else(|e| panic!("{target}: {e}"));
        normalize(&keys, &mut uri).map(|()| uri.to_string())
    }

    #[test]
    fn path_is_rewritten_query_kept() {
        let d = PathRules::default();
        let n = |t| norm(d, t).map_err(|e| e.kind);
        assert_eq!(
            n("/api/v1/%61ccount?b=%61&a"),
            Ok("/api/v1/account?b=%61&a".into())
        );
        assert_eq!(n("/x/../api//v1/./a"), Ok("/api/v1/a".into()));
        assert_eq!(
            n("http://h.example/a/./b?q=1"),
            Ok("http://h.example/a/b?q=1".into())
        );
        assert_eq!(n("/a;x"), Err(ErrorKind::BadRequest));
        assert_eq!(n("/a%2Fb"), Err(ErrorKind::BadRequest));
        assert_eq!(n("/a%00"), Err(ErrorKind::BadRequest));
        assert_eq!(n("/plain?x=1"), Ok("/plain?x=1".into()));
    }
}
