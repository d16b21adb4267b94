//! JWT validation on the request path (to be written).

use perfgate_config::Config;

use crate::body::Body;
use crate::error::GatewayError;
use crate::gateway::{Conn, Gateway};
use crate::policy::Policy;
use crate::route::Route;

/// The compiled `[jwt]` settings.
pub(crate) struct Identity {}

impl Identity {
    /// `None` when no route validates tokens.
    pub(crate) fn build(_config: &Config) -> Result<Option<Self>, String> {
        Ok(None)
    }
}

impl Gateway {
    /// Validates the bearer token as the route's JWT mode asks; sets
    /// `conn.user` and the forwarded claim headers. 401 on a bad token.
    pub(crate) fn identify(
        &self,
        _policy: &Policy,
        _route: &Route,
        _req: &mut http::Request<Body>,
        _conn: &mut Conn,
    ) -> Result<(), GatewayError> {
        Ok(())
    }
}
