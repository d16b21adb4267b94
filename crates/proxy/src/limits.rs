//! Rate limiting on the request path (to be written).

use perfgate_config::Config;

use crate::error::GatewayError;
use crate::gateway::{Conn, Cx, Gateway};
use crate::policy::Policy;
use crate::route::Route;

/// The compiled `[[rate_limits]]` rules.
pub(crate) struct Limits {}

impl Limits {
    /// Compiles the rules; keeps the local counters of `previous` rules
    /// that did not change.
    pub(crate) fn build(_config: &Config, _previous: Option<&Limits>) -> Result<Self, String> {
        Ok(Self {})
    }
}

impl Gateway {
    /// Applies the rules that match this request, in order; the first that
    /// refuses answers 429. Puts the `RateLimit-Policy`/`RateLimit` headers
    /// of the most restrictive matching rule in `cx.limit_headers`.
    pub(crate) async fn limit(
        &self,
        _policy: &Policy,
        _route: &Route,
        _method: &http::Method,
        _uri: &http::Uri,
        _headers: &http::HeaderMap,
        _conn: &Conn,
        _cx: &mut Cx,
    ) -> Result<(), GatewayError> {
        Ok(())
    }
}
