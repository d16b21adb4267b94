//! What every reader of the cache shares: the request facts a fetch needs
//! ([`CacheReq`]), the key suffix of authenticated requests, and the one
//! check that a stored entry may answer a request ([`reusable`]), applied by
//! L1 lookups, coalesced waiters and L2 promotion alike.

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, Uri, Version};
use perfgate_cache::entry::Entry;
use perfgate_cache::policy::RoutePolicy;
use perfgate_config::{AuthorizedPolicy, CookiePolicy};

use crate::context::Conn;

/// Appended to the key of a request with `Authorization` on an
/// `authorized = "shared"` route: authenticated clients share their entries
/// with each other, never with anonymous ones (the tiers' invalidation
/// removes it with the bare key).
pub(crate) use perfgate_cache::tiers::AUTHENTICATED_SUFFIX;

/// Whether a stored entry may answer a request with these headers: its
/// `Vary` values match, and a request with credentials (`Authorization`
/// under `authorized = "rfc"`, `Cookie` under `cookies = "rfc"`) only takes
/// entries the origin marked as shareable whoever asks (RFC 9111 §3.5).
/// Every reader applies it: L1 lookups, coalesced waiters, L2 promotion.
pub(crate) fn reusable(policy: &RoutePolicy, req: &HeaderMap, e: &Entry) -> bool {
    e.vary.matches(req)
        && (policy.authorized != AuthorizedPolicy::Rfc
            || !req.contains_key(AUTHORIZATION)
            || e.auth_reusable)
        && (policy.cookies != CookiePolicy::Rfc || !req.contains_key(COOKIE) || e.explicitly_shared)
}

/// The request facts a fetch needs, owned so the fetch can outlive the
/// client that started it.
pub(crate) struct CacheReq {
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) version: Version,
    pub(crate) conn: Conn,
}
