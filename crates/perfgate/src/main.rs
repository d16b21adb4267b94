//! The `perfgate` command: parse the command line, load the configuration,
//! run, drain. Everything else lives in the library crates.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// perfgate: a caching, compressing performance gateway in front of an HTTP API.
#[derive(Parser)]
#[command(name = "perfgate", version, about, long_about = None)]
struct Cli {
    /// Log filter (e.g. `info`, `perfgate_proxy=debug`) [default: info; error for `demo`].
    #[arg(long, env = "PERFGATE_LOG", global = true)]
    log: Option<String>,
    /// Log format.
    #[arg(long, env = "PERFGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in front of an upstream.
    ///
    /// Works with no config file: `perfgate serve --upstream http://127.0.0.1:8000`.
    /// Every config value can also be set with `PERFGATE_<SECTION>__<FIELD>`
    /// environment variables (e.g. `PERFGATE_CACHE__MAX_BYTES=1GiB`).
    Serve(ServeArgs),
    /// Check a config file and print every problem with its location.
    ///
    /// Exits 0 when the file is valid, 1 otherwise. Environment overrides
    /// (`PERFGATE_…`) are applied as `serve` would apply them.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Start a sample backend with slow endpoints, put perfgate in front,
    /// load both and print a before/after report.
    Demo {
        /// Print the report and exit instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Seconds of load for each phase (direct, then through perfgate).
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Concurrent connections of the load generator.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Administer the cache of a running perfgate through its admin API:
    /// `stats`, `purge`, `warmup`.
    ///
    /// The admin URL comes from `--admin` or `PERFGATE_ADMIN_URL`, the token
    /// from `--admin-token-file` or `PERFGATE_ADMIN_TOKEN`.
    Cache(cli::CacheArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Upstream base URL (`http://host:port`), the default for every route.
    #[arg(long, env = "PERFGATE_UPSTREAM")]
    upstream: Option<String>,
    /// Proxy listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "PERFGATE_LISTEN")]
    listen: Option<String>,
    /// Admin API listen address [default: 127.0.0.1:9090].
    #[arg(long, env = "PERFGATE_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// TOML config file (optional).
    #[arg(long, short, env = "PERFGATE_CONFIG")]
    config: Option<PathBuf>,
    /// File holding the admin bearer token (else `PERFGATE_ADMIN_TOKEN`;
    /// with neither, the admin API answers only loopback clients).
    #[arg(long, env = "PERFGATE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Standalone Redis for the shared L2 cache and invalidation fan-out,
    /// `redis://[:password@]host:port[/db]` (sets `redis.url`).
    #[arg(
        long,
        env = "PERFGATE_REDIS_URL",
        value_name = "URL",
        conflicts_with = "redis_cluster"
    )]
    redis: Option<String>,
    /// Redis Cluster seed nodes instead of `--redis`, `host:port,host:port,…`
    /// (sets `redis.cluster`).
    #[arg(long, env = "PERFGATE_REDIS_CLUSTER", value_name = "HOST:PORT,…")]
    redis_cluster: Option<String>,
}

/// Scheduler ticks between two polls of the I/O driver while tasks are
/// runnable (tokio's default is 61). At 1,000 keep-alive connections the
/// default gave a p99 of 58–66 ms for a p50 of 7–10 ms: some connections
/// were served over and over while others waited. Our reading, not traced:
/// a worker's local queue (256 tasks) overflows into the shared queue,
/// which the worker serves only now and then, while polling for events
/// every 61 ticks keeps refilling the local queue. Polling after 1,024
/// ticks serves ready connections in rounds: p99 25–29 ms at the same
/// throughput (docs/benchmarks.md, "Optimization log").
const EVENT_INTERVAL: u32 = 1024;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints a report on the terminal: keep routine logs out of it.
    let default_log = match cli.command {
        Command::Demo { .. } => "error",
        // The cache commands print their own output; logs would only mix in.
        Command::Cache(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log.as_deref().unwrap_or(default_log), cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(EVENT_INTERVAL)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::CheckConfig { file } => return check_config(&file),
            Command::Cache(args) => return cli::run(args).await,
            Command::Demo {
                once,
                duration,
                concurrency,
            } => {
                perfgate::demo::run(perfgate::demo::DemoOptions {
                    duration: Duration::from_secs(duration.max(1)),
                    concurrency: concurrency.max(1),
                    once,
                })
                .await
            }
        }
        .map(|()| ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // perfgate's own events also go to the log store (`logs.app_level`),
    // once the pipeline is running.
    let app = perfgate_logs::app::AppLayer;
    match format {
        LogFormat::Text => builder.finish().with(app).init(),
        LogFormat::Json => builder.json().finish().with(app).init(),
    }
}

/// Environment variables plus the command-line values, expressed as the
/// same overrides so there is one configuration build path.
fn config_env(args: &ServeArgs) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env: Vec<_> = std::env::vars_os().collect();
    let mut set = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            env.push((k.into(), v.into()));
        }
    };
    set("PERFGATE_UPSTREAM__URL", &args.upstream);
    set("PERFGATE_SERVER__LISTEN", &args.listen);
    set("PERFGATE_ADMIN__LISTEN", &args.admin_listen);
    set("PERFGATE_REDIS__URL", &args.redis);
    set("PERFGATE_REDIS__CLUSTER", &args.redis_cluster);
    env
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let source = perfgate::app::ConfigSource {
        path: args.config.clone(),
        env: config_env(&args),
    };
    let config = source
        .load()
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    let token = cli::admin_token(
        args.admin_token_file.as_deref(),
        config.admin.token_file.as_deref(),
    )?;
    let running = perfgate::app::start(config, token).await?;
    running.set_config_source(source);
    eprintln!(
        "perfgate: proxy on {}  admin on {}  (Ctrl-C to stop, SIGHUP to reload the configuration)",
        running.proxy_url(),
        running.admin_url()
    );
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = hangup() => {
                // Reading files and compiling keys blocks: not on a runtime thread.
                let r = tokio::task::block_in_place(|| running.reload());
                if let Err(e) = r {
                    match e {
                        perfgate_admin::ReloadError::Invalid(problems) => {
                            for p in &problems {
                                tracing::error!(problem = %p, "configuration reload rejected");
                            }
                            tracing::error!(problems = problems.len(), "the running configuration is unchanged");
                        }
                        perfgate_admin::ReloadError::Unavailable(why) => tracing::error!(%why, "configuration reload unavailable"),
                    }
                }
            }
        }
    }
    tracing::info!("shutdown requested: draining");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves at each `SIGHUP` (never on other platforms).
async fn hangup() {
    #[cfg(unix)]
    {
        use std::sync::OnceLock;
        use tokio::sync::Mutex;
        static HUP: OnceLock<Option<Mutex<tokio::signal::unix::Signal>>> = OnceLock::new();
        let sig = HUP.get_or_init(|| {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .ok()
                .map(Mutex::new)
        });
        match sig {
            Some(s) => {
                s.lock().await.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn check_config(file: &Path) -> anyhow::Result<ExitCode> {
    match perfgate_config::load_file(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}: {} problem(s)", file.display(), e.problems.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
