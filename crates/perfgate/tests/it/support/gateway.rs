//! A perfgate instance started in-process with
//! `perfgate::app::start_on_with_clock` on listeners bound to `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Method;
use perfgate_config::{Config, RouteConfig};
use perfgate_runtime::clock::{Clock, ManualClock};
use tokio::net::TcpListener;

use perfgate_test_support::{Client, RequestBuilder};

type Tweak = Box<dyn FnOnce(&mut Config)>;

/// Builds a gateway.
#[must_use = "call spawn() to start it"]
pub struct GatewayBuilder {
    upstream: Option<String>,
    tweaks: Vec<Tweak>,
    routes: Vec<RouteConfig>,
    token: Option<String>,
    client_host: Option<String>,
    time: Option<ManualClock>,
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
            client_host: None,
            time: None,
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

    /// Uses the standalone Redis at `url` (`redis://127.0.0.1:PORT`) as L2
    /// and for the invalidation fan-out, with keys under `key_prefix` (give
    /// each test its own, see [`unique_name`](perfgate_test_support::unique_name)). Test
    /// defaults: a 250 ms call deadline (generous: a loaded machine must not
    /// turn L2 hits into misses) and a 200 ms `retry_after`; change them
    /// with [`config`](Self::config).
    pub fn redis(self, url: &str, key_prefix: &str) -> Self {
        let url = url.to_string();
        let key_prefix = key_prefix.to_string();
        self.config(move |c| {
            c.redis.url = url;
            c.redis.key_prefix = key_prefix;
            c.redis.timeout = perfgate_config::Duration::from_millis(250);
            c.redis.retry_after = perfgate_config::Duration::from_millis(200);
        })
    }

    /// Like [`redis`](Self::redis), with a Redis Cluster given by its seed
    /// nodes (`127.0.0.1:PORT` each).
    pub fn redis_cluster(self, nodes: Vec<String>, key_prefix: &str) -> Self {
        let key_prefix = key_prefix.to_string();
        self.config(move |c| {
            c.redis.cluster = nodes;
            c.redis.key_prefix = key_prefix;
            c.redis.timeout = perfgate_config::Duration::from_millis(250);
            c.redis.retry_after = perfgate_config::Duration::from_millis(200);
        })
    }

    /// Requests through [`RunningGateway::get`]/[`request`](RunningGateway::request)
    /// and [`new_client`](RunningGateway::new_client) send `Host: host`:
    /// gateways that share an L2 share cache keys only when clients name the
    /// same host, as they do behind a load balancer.
    pub fn client_host(mut self, host: &str) -> Self {
        self.client_host = Some(host.to_string());
        self
    }

    /// The cache and the job store read a manual clock that stands still
    /// until the test moves it with [`RunningGateway::advance`] (sockets and
    /// deadlines keep real time). Not for tests that read entries back from
    /// a shared L2: Redis expires keys on its own, real, clock.
    pub fn manual_clock(mut self) -> Self {
        self.time = Some(ManualClock::new());
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
        // A job store of its own (only created when a route is async); the
        // files are small and live in the system's temporary directory.
        config.jobs.data_dir = std::env::temp_dir()
            .join(perfgate_test_support::unique_name("perfgate-jobs"))
            .to_string_lossy()
            .into_owned();
        // No log store unless a test turns it on; then in a directory of
        // its own.
        config.logs.store = false;
        config.logs.data_dir = std::env::temp_dir()
            .join(perfgate_test_support::unique_name("perfgate-logs"))
            .to_string_lossy()
            .into_owned();
        if let Some(u) = self.upstream {
            config.upstream.url = u;
        }
        // Tests drive the admin API from loopback; without a token it is
        // read-only unless this is explicit (a test may turn it off again).
        config.admin.allow_unauthenticated = self.token.is_none();
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
        let client_host = self.client_host.clone();
        let time = self.time.clone();
        let clock = time.as_ref().map_or_else(Clock::system, ManualClock::clock);
        let (config, token) = self.build_config(
            proxy.local_addr().expect("proxy addr"),
            admin.local_addr().expect("admin addr"),
        );
        let jobs_dir = std::path::PathBuf::from(&config.jobs.data_dir);
        let running =
            perfgate::app::start_on_with_clock(config, token.clone(), proxy, admin, clock)
                .await
                .expect("start gateway");
        let mut client = Client::new(running.proxy_url());
        if let Some(h) = &client_host {
            client = client.with_host(h);
        }
        let admin_client = Client::new(running.admin_url());
        RunningGateway {
            running: Some(running),
            client,
            admin_client,
            token,
            jobs_dir,
            time,
        }
    }
}

/// A running gateway and clients for its two listeners.
pub struct RunningGateway {
    running: Option<perfgate::app::Running>,
    client: Client,
    admin_client: Client,
    token: Option<String>,
    /// The job store directory `build_config` chose (removed on drop).
    jobs_dir: std::path::PathBuf,
    /// Set by [`GatewayBuilder::manual_clock`].
    time: Option<ManualClock>,
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        // Only the directory made for this gateway, never one a test named.
        if self.jobs_dir.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_dir_all(&self.jobs_dir);
        }
    }
}

impl RunningGateway {
    /// The running instance (reload, config source).
    pub fn running(&self) -> &perfgate::app::Running {
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

    /// A fresh client (its own connection pool) of the proxy listener
    /// (sending the builder's [`client_host`](GatewayBuilder::client_host)).
    pub fn new_client(&self) -> Client {
        let c = Client::new(self.url());
        match self.client.host_str() {
            Some(h) => c.with_host(&h),
            None => c,
        }
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

    /// A request of `method` on the admin listener, without a token.
    pub fn admin_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.admin_client.request(method, path)
    }

    /// A request on the admin listener carrying the builder's bearer token
    /// (none when no token was set).
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.admin_client.request(method, path);
        match &self.token {
            Some(t) => r.header("authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    /// `POST path` on the admin listener with a JSON body and the token.
    pub fn admin_post(&self, path: &str, body: &serde_json::Value) -> RequestBuilder {
        self.admin(Method::POST, path).json(body)
    }

    /// The admin token this gateway was started with.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Moves the gateway's manual clock forward by `d`: cached entries age
    /// and job deadlines come due without the test sleeping.
    ///
    /// # Panics
    /// When the gateway was not built with [`GatewayBuilder::manual_clock`].
    pub fn advance(&self, d: std::time::Duration) {
        self.time
            .as_ref()
            .expect("advance needs Gateway::builder().manual_clock()")
            .advance(d);
    }

    /// Stops accepting, drains, and waits until both listeners are closed.
    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}
