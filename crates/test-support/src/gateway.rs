//! A perfgate instance started in-process with `perfgate::app::start_on`
//! on listeners bound to `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Method;
use perfgate_config::{Config, RouteConfig};
use tokio::net::TcpListener;

use crate::client::{Client, RequestBuilder};

type Tweak = Box<dyn FnOnce(&mut Config)>;

/// Builds a gateway.
#[must_use = "call spawn() to start it"]
pub struct GatewayBuilder {
    upstream: Option<String>,
    tweaks: Vec<Tweak>,
    routes: Vec<RouteConfig>,
    token: Option<String>,
}

/// Namespace of [`Gateway::builder`].
pub struct Gateway;

impl Gateway {
    /// A gateway with the default configuration.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder {
            upstream: None,
            tweaks: Vec::new(),
            routes: Vec::new(),
            token: None,
        }
    }
}

impl GatewayBuilder {
    /// The default upstream.
    pub fn upstream(mut self, addr: SocketAddr) -> Self {
        self.upstream = Some(format!("http://{addr}"));
        self
    }

    /// The default upstream as a URL.
    pub fn upstream_url(mut self, url: impl Into<String>) -> Self {
        self.upstream = Some(url.into());
        self
    }

    /// Changes the configuration (applied in order, after the upstream and
    /// listen addresses are set).
    pub fn config(mut self, f: impl FnOnce(&mut Config) + 'static) -> Self {
        self.tweaks.push(Box::new(f));
        self
    }

    /// Adds a route.
    pub fn route(mut self, route: RouteConfig) -> Self {
        self.routes.push(route);
        self
    }

    /// Sets the admin bearer token.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// The configuration this builder starts with for these listen
    /// addresses (validated).
    pub fn build_config(
        self,
        listen: SocketAddr,
        admin_listen: SocketAddr,
    ) -> (Config, Option<String>) {
        let mut config = Config::default();
        config.server.listen = listen.to_string();
        config.admin.listen = admin_listen.to_string();
        if let Some(u) = self.upstream {
            config.upstream.url = u;
        }
        config.routes.extend(self.routes);
        for t in self.tweaks {
            t(&mut config);
        }
        let problems = perfgate_config::validate(&config);
        assert!(
            problems.is_empty(),
            "invalid test configuration: {problems:#?}"
        );
        (config, self.token)
    }

    /// Starts the gateway on `127.0.0.1:0`.
    pub async fn spawn(self) -> RunningGateway {
        let proxy = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy listener");
        let admin = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin listener");
        let (config, token) = self.build_config(
            proxy.local_addr().expect("proxy addr"),
            admin.local_addr().expect("admin addr"),
        );
        let running = perfgate::app::start_on(config, token, proxy, admin)
            .await
            .expect("start gateway");
        let client = Client::new(running.proxy_url());
        let admin_client = Client::new(running.admin_url());
        RunningGateway {
            running: Some(running),
            client,
            admin_client,
        }
    }
}

/// A running gateway and clients for its two listeners.
pub struct RunningGateway {
    running: Option<perfgate::app::Running>,
    client: Client,
    admin_client: Client,
}

impl RunningGateway {
    fn running(&self) -> &perfgate::app::Running {
        self.running.as_ref().expect("gateway is running")
    }

    /// Proxy address.
    pub fn addr(&self) -> SocketAddr {
        self.running().proxy_addr
    }

    /// Admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.running().admin_addr
    }

    /// `http://<proxy addr>`.
    pub fn url(&self) -> String {
        self.running().proxy_url()
    }

    /// The gateway (cache statistics, metrics).
    pub fn gateway(&self) -> Arc<perfgate_proxy::Gateway> {
        self.running().gateway.clone()
    }

    /// The shared keep-alive client of the proxy listener.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A fresh client (its own connection pool) of the proxy listener.
    pub fn new_client(&self) -> Client {
        Client::new(self.url())
    }

    /// GET `path` through the proxy.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(path)
    }

    /// A request through the proxy.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, path)
    }

    /// GET `path` on the admin listener.
    pub fn admin_get(&self, path: &str) -> RequestBuilder {
        self.admin_client.get(path)
    }

    /// Stops accepting, drains, and waits until both listeners are closed.
    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}
