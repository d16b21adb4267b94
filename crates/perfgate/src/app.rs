//! Starting and stopping one perfgate instance: the proxy listener and the
//! admin listener, built from one validated configuration.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use perfgate_admin::{AdminState, ReloadError, ReloadReport};
use perfgate_config::Config;
use perfgate_observe::{EventSink, Metrics, PerfWindows};
use perfgate_proxy::{Gateway, ServerOptions};
use perfgate_runtime::clock::Clock;
use tokio::net::TcpListener;

/// A running instance.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// The gateway (stats, metrics).
    pub gateway: Arc<Gateway>,
    reloader: Arc<Reload>,
    drain_timeout: std::time::Duration,
    services: perfgate_runtime::Supervisor,
    /// The log pipeline (access log, store, OTLP), when any is on.
    pub logs: Option<perfgate_logs::Logs>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to the drain
    /// timeout), and returns when both listeners are closed.
    pub async fn shutdown(self) {
        // The servers drain within their own drain timeout; job workers
        // record the jobs they hold first; the other services stop at once.
        let late = self
            .services
            .shutdown(self.drain_timeout + std::time::Duration::from_secs(1))
            .await;
        if !late.is_empty() {
            tracing::warn!(services = ?late, "services aborted at shutdown");
        }
        // The event feed has handed over what it had: write, commit and
        // stop (joins the log threads, so off the async workers).
        if let Some(logs) = self.logs {
            let _ = tokio::task::spawn_blocking(move || {
                perfgate_logs::app::connect(None);
                logs.shutdown();
            })
            .await;
        }
    }

    /// Where [`reload`](Self::reload) reads the configuration from.
    pub fn set_config_source(&self, source: ConfigSource) {
        *self
            .reloader
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// Reloads the configuration from its source (`SIGHUP`,
    /// `POST /admin/config/reload`).
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload()
    }

    /// Applies a configuration built in code (tests), through the same path.
    pub fn apply(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        self.reloader.apply(config)
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
    let proxy_listener = bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let admin_listener = bind(&config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin.listen)", config.admin.listen))?;
    start_on(config, admin_token, proxy_listener, admin_listener).await
}

/// The accept queue's length (the kernel caps it at `net.core.somaxconn`).
/// `TcpListener::bind` uses 128, as the standard library does: when 1,000
/// clients connect at once the queue overflows, the kernel drops their
/// handshakes, and they retry a second later (`ListenOverflows` in
/// `nstat`). nginx's default is 511.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` (`host:port`; the first address that binds wins) with
/// [`LISTEN_BACKLOG`].
async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Like [`start`], on listeners the caller already bound (tests use port 0).
pub async fn start_on(
    config: Config,
    admin_token: Option<String>,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
) -> anyhow::Result<Running> {
    start_on_with_clock(
        config,
        admin_token,
        proxy_listener,
        admin_listener,
        Clock::system(),
    )
    .await
}

/// Like [`start_on`], with the cache and the job store reading time from
/// `clock` (tests pass a manual clock instead of sleeping).
pub async fn start_on_with_clock(
    config: Config,
    admin_token: Option<String>,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    clock: Clock,
) -> anyhow::Result<Running> {
    let mut config = config;
    // Warm-up requests use the proxy's address as their Host by default: the
    // real one, when the listener was bound to port 0.
    config.server.listen = proxy_listener.local_addr()?.to_string();
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::with_clock(&config, metrics, clock).map_err(anyhow::Error::new)?;
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
        max_connections: config.server.max_connections,
        http2_max_concurrent_streams: config.server.http2_max_concurrent_streams,
        http2_idle_timeout: config.server.http2_idle_timeout.get(),
        http2_keep_alive_interval: config.server.http2_keep_alive_interval.get(),
        http2_keep_alive_timeout: config.server.http2_keep_alive_timeout.get(),
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
            allow_unauthenticated = config.admin.allow_unauthenticated,
            "no admin token configured (PERFGATE_ADMIN_TOKEN or --admin-token-file): the admin API answers only loopback clients, read-only unless admin.allow_unauthenticated"
        );
    }
    let logs = start_logs(&config)?;
    // The performance windows behind `/admin/performance/*`. The slow
    // threshold is read once: a reload changes the slow-request log, not
    // which requests these windows list as slow.
    let perf = Arc::new(PerfWindows::new(config.server.slow_request_threshold.get()));
    event_sinks(&gateway, &perf, logs.as_ref());
    // The invalidation fan-out listener (when Redis is configured).
    gateway.run_background();
    // The async job workers (again after every reload).
    gateway.sync_job_workers();
    // Every long-running task is a service of the gateway's supervisor:
    // shutdown (and a reload retiring pools) stops them through one signal.
    let services = gateway.supervisor().clone();
    services.spawn("proxy server", {
        let gateway = gateway.clone();
        move |mut shutdown| async move {
            perfgate_proxy::serve(gateway, proxy_listener, opts, async move {
                shutdown.requested().await;
            })
            .await;
        }
    });
    let reloader = Arc::new(Reload {
        gateway: gateway.clone(),
        source: Mutex::new(None),
        current: Mutex::new(config.clone()),
        generation: AtomicU64::new(0),
    });
    let state = AdminState {
        gateway: gateway.clone(),
        token,
        allow_unauthenticated: config.admin.allow_unauthenticated,
        allowed_hosts: config.admin.allowed_hosts.clone().into(),
        metrics_public: config.admin.metrics_public,
        logs: logs.clone(),
        reloader: Some({
            let r = reloader.clone();
            Arc::new(move || r.reload())
        }),
        perf: Some(perf),
        process: Default::default(),
    };
    services.spawn("admin server", move |mut shutdown| async move {
        let stopping = async move { shutdown.requested().await };
        if let Err(e) = perfgate_admin::serve(admin_listener, state, stopping).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tracing::info!(proxy = %proxy_addr, admin = %admin_addr, "perfgate listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        gateway,
        reloader,
        drain_timeout: config.server.drain_timeout.get(),
        services,
        logs,
    })
}

/// Starts the log pipeline of `[logs]`, when anything in it is on. A store
/// that cannot be opened (a full disk, another instance holding it) is
/// logged and left out: the gateway serves without it. An access log file
/// that cannot be opened stops the start, as a configuration error.
fn start_logs(config: &Config) -> anyhow::Result<Option<perfgate_logs::Logs>> {
    let mut settings = perfgate_logs::Settings::from_config(&config.logs);
    if !settings.any() {
        return Ok(None);
    }
    let logs = match perfgate_logs::Logs::start(settings.clone()) {
        Ok(l) => l,
        Err(perfgate_logs::StartError::Store(e)) => {
            tracing::error!(error = %e, dir = %config.logs.data_dir, "the log store cannot be opened: serving without it (logs are not searchable)");
            settings.store = None;
            if !settings.any() {
                return Ok(None);
            }
            perfgate_logs::Logs::start(settings).context("logs")?
        }
        Err(e) => return Err(anyhow::Error::new(e).context("logs")),
    };
    if let Ok(level) = config.logs.app_level.parse::<tracing::Level>() {
        perfgate_logs::app::connect(Some((logs.clone(), level)));
    }
    Ok(Some(logs))
}

/// Subscribes every request-event sink, in one call: only the gateway's
/// first `subscribe_events` connects, so a new sink is one more element
/// of this list, never a second call.
fn event_sinks(gateway: &Gateway, perf: &Arc<PerfWindows>, logs: Option<&perfgate_logs::Logs>) {
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![perf.clone()];
    if let Some(l) = logs {
        sinks.push(l.sink());
    }
    if !gateway.subscribe_events(sinks) {
        tracing::warn!(
            "request events already had a subscriber: the performance windows and logs stay empty"
        );
    }
}

/// Where the configuration comes from: the file (if any) and the
/// environment, with the command-line flags already turned into overrides.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The TOML file.
    pub path: Option<PathBuf>,
    /// The environment (`PERFGATE_…` overrides).
    pub env: Vec<(OsString, OsString)>,
}

impl ConfigSource {
    /// Loads and validates the configuration.
    pub fn load(&self) -> Result<Config, perfgate_config::ConfigErrors> {
        match &self.path {
            Some(path) => perfgate_config::load_file_with_env(path, self.env.clone()),
            None => perfgate_config::from_env_only(self.env.clone()),
        }
    }
}

/// Reloads: one at a time, through `Gateway::reload`.
struct Reload {
    gateway: Arc<Gateway>,
    source: Mutex<Option<ConfigSource>>,
    /// The configuration running now (to tell which changes need a restart).
    current: Mutex<Config>,
    generation: AtomicU64,
}

impl Reload {
    fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let source = self
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                ReloadError::Unavailable(
                    "this instance was not started from a configuration source".into(),
                )
            })?;
        let config = match source.load() {
            Ok(config) => config,
            Err(e) => {
                // Counted and logged like every other rejected reload.
                self.gateway.metrics().traffic.reload(false);
                let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
                tracing::error!(problems = ?problems, "configuration reload rejected; the running configuration is unchanged");
                return Err(ReloadError::Invalid(problems));
            }
        };
        self.apply(config)
    }

    fn apply(&self, mut config: Config) -> Result<ReloadReport, ReloadError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // The listener stays where it is; a new address needs a restart.
        let wanted_listen =
            std::mem::replace(&mut config.server.listen, current.server.listen.clone());
        let problems = perfgate_config::validate(&config);
        if !problems.is_empty() {
            self.gateway.metrics().traffic.reload(false);
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            tracing::error!(problems = ?problems, "configuration reload rejected; the running configuration is unchanged");
            return Err(ReloadError::Invalid(problems));
        }
        if let Err(e) = self.gateway.reload(&config) {
            self.gateway.metrics().traffic.reload(false);
            let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
            tracing::error!(problems = ?problems, "configuration reload rejected; the running configuration is unchanged");
            return Err(ReloadError::Invalid(problems));
        }
        let mut restart_required = restart_required(&current, &config);
        if wanted_listen != current.server.listen
            && !listen_matches(&current.server.listen, &wanted_listen)
        {
            restart_required.insert(0, "server.listen".into());
        }
        *current = config;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.gateway.metrics().traffic.reload(true);
        if restart_required.is_empty() {
            tracing::info!(generation, "configuration reloaded");
        } else {
            tracing::warn!(generation, restart_required = ?restart_required, "configuration reloaded; some changed settings only take effect after a restart");
        }
        Ok(ReloadReport {
            generation,
            restart_required,
        })
    }
}

/// True when `wanted` names the port-0 address the listener was bound from.
fn listen_matches(actual: &str, wanted: &str) -> bool {
    wanted.ends_with(":0")
        && actual.rsplit_once(':').map(|(h, _)| h) == wanted.rsplit_once(':').map(|(h, _)| h)
}

/// Sections that are built once at start-up and changed in `new`.
fn restart_required(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let server = |c: &Config| {
        let mut s = c.server.clone();
        // Reloadable.
        s.listen = String::new();
        s.max_body_bytes = Default::default();
        s.max_header_count = 0;
        s.max_uri_bytes = Default::default();
        s.max_concurrent_requests = 0;
        s.slow_request_threshold = Default::default();
        s
    };
    if server(old) != server(new) {
        out.push("server".into());
    }
    if old.admin != new.admin {
        out.push("admin".into());
    }
    if old.cache != new.cache {
        out.push("cache".into());
    }
    if old.redis != new.redis {
        out.push("redis".into());
    }
    if old.compression != new.compression {
        out.push("compression".into());
    }
    if old.jobs != new.jobs {
        out.push("jobs".into());
    }
    if old.logs != new.logs {
        out.push("logs".into());
    }
    out
}
