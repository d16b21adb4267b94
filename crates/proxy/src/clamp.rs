//! Query-parameter clamps (`page_size` at most 100, 20 when absent): applied
//! to the request target after routing, before the cache key is made, so
//! `?page_size=1000` and `?page_size=100` share one cache entry and the
//! upstream never sees an out-of-range value.

use http::uri::PathAndQuery;
use http::{Request, Uri};
use perfgate_cache::key::percent_decode;
use perfgate_config::QueryClamp;

use perfgate_http::error::{Error, ErrorKind};

/// The clamp phase: the request with its query clamped.
pub(crate) fn clamp<B>(clamps: &[QueryClamp], req: &mut Request<B>) -> Result<(), Error> {
    if let Some(uri) = apply(clamps, req.uri())? {
        *req.uri_mut() = uri;
    }
    Ok(())
}

/// The target with its clamped parameters, or `None` when nothing changed.
pub(crate) fn apply(clamps: &[QueryClamp], uri: &Uri) -> Result<Option<Uri>, Error> {
    if clamps.is_empty() {
        return Ok(None);
    }
    let query = uri.query().unwrap_or("");
    let mut changed = false;
    let mut out: Vec<String> = Vec::new();
    let mut seen = vec![false; clamps.len()];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        // Compared as the upstream's query parser will read them:
        // `page%5Fsize=1%30` is `page_size=10` (RFC 3986 §2.3).
        let name = percent_decode(raw_name);
        let Some(i) = clamps.iter().position(|c| c.param.as_bytes() == &*name) else {
            out.push(pair.to_string());
            continue;
        };
        let c = &clamps[i];
        if seen[i] {
            // A repeated parameter: the first one counts, the others go.
            changed = true;
            continue;
        }
        seen[i] = true;
        let value = percent_decode(raw_value);
        let n: u64 = std::str::from_utf8(&value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::BadRequest,
                    format!(
                        "query parameter {}: {:?} is not a non-negative integer",
                        c.param,
                        String::from_utf8_lossy(&value)
                    ),
                )
            })?;
        let clamped = n.max(c.min.unwrap_or(0)).min(c.max.unwrap_or(u64::MAX));
        let written = clamped.to_string();
        changed |= raw_name != c.param || raw_value != written;
        out.push(format!("{}={written}", c.param));
    }
    for (i, c) in clamps.iter().enumerate() {
        if !seen[i]
            && let Some(d) = c.default
        {
            out.push(format!("{}={d}", c.param));
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    let pq = if out.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), out.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(pq)
            .map_err(|_| Error::new(ErrorKind::BadRequest, "invalid request target"))?,
    );
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| Error::new(ErrorKind::BadRequest, "invalid request target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_size() -> Vec<QueryClamp> {
        vec![QueryClamp {
            param: "page_size".into(),
            min: Some(1),
            max: Some(100),
            default: Some(20),
        }]
    }

    fn run(target: &str) -> Result<Option<String>, Error> {
        let uri: Uri = target.parse().unwrap();
        apply(&page_size(), &uri).map(|u| u.map(|u| u.to_string()))
    }

    #[test]
    fn clamps_adds_defaults_and_refuses_garbage() {
        assert_eq!(
            run("/events?page_size=1000&q=a").unwrap().as_deref(),
            Some("/events?page_size=100&q=a")
        );
        assert_eq!(run("/events?page_size=50").unwrap(), None);
        assert_eq!(
            run("/events?page_size=0").unwrap().as_deref(),
            Some("/events?page_size=1")
        );
        assert_eq!(
            run("/events").unwrap().as_deref(),
            Some("/events?page_size=20")
        );
        assert_eq!(
            run("/events?page_size=007").unwrap().as_deref(),
            Some("/events?page_size=7")
        );
        assert_eq!(
            run("/events?page_size=5&page_size=900").unwrap().as_deref(),
            Some("/events?page_size=5")
        );
        assert_eq!(
            run("/events?page%5Fsize=1000").unwrap().as_deref(),
            Some("/events?page_size=100")
        );
        assert_eq!(
            run("/events?page_size=1%30").unwrap().as_deref(),
            Some("/events?page_size=10")
        );
        let e = run("/events?page_size=lots").unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message.contains("page_size"));
    }
}
