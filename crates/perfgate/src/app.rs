//! Starting and stopping one perfgate instance: the proxy listener and the
//! admin listener, built from one validated configuration.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use perfgate_admin::AdminState;
use perfgate_config::Config;
use perfgate_observe::Metrics;
use perfgate_proxy::{Gateway, ServerOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running instance.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// The gateway (stats, metrics).
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to the drain
    /// timeout), and returns when both listeners are closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Base URL of the proxy.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    /// Base URL of the admin API.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }
}

/// Binds both listeners and starts serving. `config` must be validated.
pub async fn start(config: Config, admin_token: Option<String>) -> anyhow::Result<Running> {
    let proxy_listener = TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let admin_listener = TcpListener::bind(&config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin.listen)", config.admin.listen))?;
    start_on(config, admin_token, proxy_listener, admin_listener).await
}

/// Like [`start`], on listeners the caller already bound (tests use port 0).
pub async fn start_on(
    config: Config,
    admin_token: Option<String>,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
) -> anyhow::Result<Running> {
    let mut config = config;
    // Warm-up requests use the proxy's address as their Host by default: the
    // real one, when the listener was bound to port 0.
    config.server.listen = proxy_listener.local_addr()?.to_string();
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::new(&config, metrics).map_err(anyhow::Error::msg)?;
    let tls = match &config.server.tls {
        Some(t) => Some(
            perfgate_proxy::load_tls(&t.cert_file, &t.key_file, config.server.http2)
                .map_err(anyhow::Error::msg)
                .context("server.tls")?,
        ),
        None => None,
    };
    let opts = ServerOptions {
        http2: config.server.http2,
        max_header_bytes: usize::try_from(config.server.max_header_bytes.get())
            .unwrap_or(usize::MAX),
        header_read_timeout: config.server.header_read_timeout.get(),
        drain_timeout: config.server.drain_timeout.get(),
        tls,
    };
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let token: Option<Arc<str>> = admin_token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .map(Arc::from);
    if token.is_none() {
        tracing::warn!(
            admin = %admin_addr,
            "no admin token configured (PERFGATE_ADMIN_TOKEN or --admin-token-file): the admin API answers only loopback clients"
        );
    }
    let (stop, stopped) = watch::channel(false);
    // The invalidation fan-out listener (when Redis is configured).
    gateway.run_background(stopped.clone());
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let proxy_task = tokio::spawn(perfgate_proxy::serve(
        gateway.clone(),
        proxy_listener,
        opts,
        wait(stopped.clone()),
    ));
    let state = AdminState {
        gateway: gateway.clone(),
        token,
        metrics_public: config.admin.metrics_public,
    };
    let admin_task = tokio::spawn({
        let shutdown = wait(stopped);
        async move {
            if let Err(e) = perfgate_admin::serve(admin_listener, state, shutdown).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        }
    });
    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, "perfgate listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway,
        stop,
        tasks: vec![proxy_task, admin_task],
    })
}
