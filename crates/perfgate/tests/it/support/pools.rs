//! A gateway whose [`Running`] handle is reachable ([`Instance`]) for
//! configuration reloads (`set_config_source`, `reload`, `apply`), and the
//! listeners it starts on. The pools and routes of the traffic-control
//! tests (`pool_of`, `pool_route`, `ClosedPort`) are in
//! `perfgate_test_support`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::Method;
use perfgate::app::{ConfigSource, Running};
use perfgate_config::Config;
use perfgate_test_support::{Client, RequestBuilder, metric_value};
use tokio::net::TcpListener;

use super::gateway::GatewayBuilder;

/// A gateway started in-process, whose `Running` handle is reachable (for
/// reloads), with clients for its two listeners.
pub struct Instance {
    running: Option<Running>,
    config: Config,
    client: Client,
    admin_client: Client,
    token: Option<String>,
}

impl GatewayBuilder {
    /// Like [`spawn`](Self::spawn), returning an [`Instance`].
    pub async fn spawn_instance(self) -> Instance {
        let l = Listeners::bind().await;
        let (config, token) = self.build_config(l.proxy_addr(), l.admin_addr());
        Instance::start(config, token, l).await
    }
}

/// The two listeners of an instance, bound to `127.0.0.1:0` before its
/// configuration is written (so that a configuration file can name them).
pub struct Listeners {
    proxy: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    /// Binds both on `127.0.0.1:0`.
    pub async fn bind() -> Self {
        let proxy = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy listener");
        let admin = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind admin listener");
        Self { proxy, admin }
    }

    /// Address of the proxy listener.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy.local_addr().expect("proxy addr")
    }

    /// Address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("admin addr")
    }
}

impl Instance {
    /// Starts a gateway on `listeners` from the TOML file at `path` (no
    /// environment overrides; the file should name the listeners'
    /// addresses) and makes that file its configuration source, as
    /// `perfgate serve --config` does.
    pub async fn from_file(path: &Path, token: Option<&str>, listeners: Listeners) -> Instance {
        // No log store (tests that search logs turn it on themselves): an
        // override, so that a reload from the file keeps it off too.
        let env: Vec<(std::ffi::OsString, std::ffi::OsString)> =
            vec![("PERFGATE_LOGS__STORE".into(), "false".into())];
        let config = perfgate_config::load_file_with_env(path, env.clone())
            .unwrap_or_else(|e| panic!("invalid test configuration file: {e:?}"));
        let instance = Self::start(config, token.map(str::to_string), listeners).await;
        instance.running().set_config_source(ConfigSource {
            path: Some(PathBuf::from(path)),
            env,
        });
        instance
    }

    async fn start(config: Config, token: Option<String>, l: Listeners) -> Instance {
        let running = perfgate::app::start_on(config.clone(), token.clone(), l.proxy, l.admin)
            .await
            .expect("start gateway");
        let client = Client::new(running.proxy_url());
        let admin_client = Client::new(running.admin_url());
        Instance {
            running: Some(running),
            config,
            client,
            admin_client,
            token,
        }
    }

    /// The running instance (`set_config_source`, `reload`, `apply`).
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("gateway is running")
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Proxy address.
    pub fn addr(&self) -> SocketAddr {
        self.running().proxy_addr
    }

    /// GET `path` through the proxy (shared keep-alive client).
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(path)
    }

    /// A request through the proxy (shared keep-alive client).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, path)
    }

    /// A fresh client of the proxy listener (its own connections).
    pub fn new_client(&self) -> Client {
        Client::new(self.running().proxy_url())
    }

    /// A request on the admin listener carrying the token (if any).
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.admin_client.request(method, path);
        match &self.token {
            Some(t) => r.header("authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    /// A request on the admin listener without a token.
    pub fn admin_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.admin_client.request(method, path)
    }

    /// A sample of `/metrics` (see [`metric_value`]).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let r = self.admin(Method::GET, "/metrics").await;
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        metric_value(&r.text(), name, labels)
    }

    /// Stops accepting, drains, and waits until both listeners are closed.
    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}
