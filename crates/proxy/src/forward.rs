//! Sending a request to a route's pool: the route chooses the pool (its
//! read pool for safe methods), the breaker, the client and the deadlines;
//! the head gets its forwarding fields here; [`perfgate_upstream::dispatch`]
//! does admission, server choice and retries (its module documentation
//! says which requests are retried).

use http::Response;
use perfgate_http::body::Body;
use perfgate_http::headers::{append_via, client_ip, set_forwarded, strip_hop_by_hop};
use perfgate_upstream::{Attempts, Dispatch, UpstreamBody, UpstreamError, dispatch};

use crate::context::{Conn, Outgoing, Waits};
use crate::gateway::Gateway;
use crate::route::Route;

impl Gateway {
    /// Sends a request to the route's pool and returns the response head.
    pub(crate) async fn forward(
        &self,
        route: &Route,
        out: Outgoing<'_>,
        conn: &Conn,
        body: Body,
        timing: &mut Waits,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let Outgoing {
            method,
            uri,
            mut headers,
            version,
        } = out;
        let (pool, breaker) = match &route.read_pool {
            Some(read) if method.is_safe() => (read, route.read_breaker.as_deref()),
            _ => (&route.pool, route.breaker.as_deref()),
        };
        strip_hop_by_hop(&mut headers);
        let proto = if conn.tls { "https" } else { "http" };
        let trusted = route.trusted.iter().any(|n| n.contains(conn.peer.ip()));
        let ip = client_ip(&headers, conn.peer.ip(), &route.trusted);
        set_forwarded(
            &mut headers,
            &conn.peer_ip,
            trusted,
            &route.trusted_headers,
            proto,
        );
        append_via(&mut headers, self.via_for(version));
        let d = Dispatch {
            route: &route.name,
            pool,
            breaker,
            client: route.client.as_ref(),
            preserve_host: route.preserve_host,
            total_timeout: route.total_timeout,
            response_timeout: route.response_timeout,
            body_timeout: self.body_timeout,
            client_ip: ip,
            user: conn.user.as_deref(),
            metrics: &self.metrics,
        };
        let mut attempts = Attempts::default();
        let result = dispatch(d, method, uri, headers, body, &mut attempts).await;
        timing.queue += attempts.queue;
        timing.upstream += attempts.upstream;
        timing.attempts += attempts.count;
        if attempts.server.is_some() {
            timing.server = attempts.server;
        }
        result
    }
}
