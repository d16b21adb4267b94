//! Helpers for the traffic-control tests: pools of origins, routes that
//! target them and a port nobody listens on. The gateway whose `Running`
//! handle is reachable for reloads (`Instance`) is in the binary crate's
//! integration tests (`crates/perfgate/tests/it/support/pools.rs`).

use std::net::SocketAddr;

use perfgate_config::{PoolConfig, PoolServer, RouteCachePolicy, RouteConfig};
use tokio::net::TcpSocket;

use crate::origin::RunningOrigin;

/// A round-robin pool named `name` over `servers` (origin, weight), with
/// the default health, outlier, breaker and retry settings.
pub fn pool_of(name: &str, servers: &[(&RunningOrigin, u32)]) -> PoolConfig {
    pool_of_urls(
        name,
        &servers
            .iter()
            .map(|(o, w)| (o.url(), *w))
            .collect::<Vec<_>>(),
    )
}

/// Like [`pool_of`], with server URLs (e.g. [`closed_port_url`]).
pub fn pool_of_urls(name: &str, servers: &[(String, u32)]) -> PoolConfig {
    PoolConfig {
        name: name.to_string(),
        servers: servers
            .iter()
            .map(|(url, weight)| PoolServer {
                url: url.clone(),
                weight: *weight,
            })
            .collect(),
        ..PoolConfig::default()
    }
}

/// A route named after `path` sending every method under `path` to the
/// pool `pool`, never cached (every request reaches an upstream).
pub fn pool_route(path: &str, pool: &str) -> RouteConfig {
    RouteConfig {
        path: Some(path.to_string()),
        pool: Some(pool.to_string()),
        cache: RouteCachePolicy {
            bypass: true,
            ..RouteCachePolicy::default()
        },
        ..RouteConfig::default()
    }
}

/// A port on `127.0.0.1` that refuses connections for as long as this
/// value lives: bound (so no other test can take it) but not listening.
pub struct ClosedPort {
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Reserves a port that refuses connections.
    pub fn new() -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind a port to keep closed");
        let addr = socket.local_addr().expect("addr");
        Self {
            _socket: socket,
            addr,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}
