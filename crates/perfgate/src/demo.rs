//! `perfgate demo`: a bundled sample backend with slow endpoints, perfgate
//! in front of it, the same short load run against each, and a before/after
//! report. Everything listens on `127.0.0.1:0`, so the demo never collides
//! with a running service.

pub mod backend;
pub mod load;
pub mod report;

use std::time::Duration;

use anyhow::Context;
use perfgate_config::{
    AdminConfig, Config, RouteCachePolicy, RouteConfig, ServerConfig, UpstreamConfig,
};
use tokio::net::TcpListener;

use self::backend::Backend;
use self::load::{LoadOptions, LoadReport};
use self::report::{CacheFigures, Comparison};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Length of each load phase (direct, then through perfgate).
    pub duration: Duration,
    /// Concurrent connections of the load generator.
    pub concurrency: usize,
    /// Print the report and exit instead of leaving both servers up until
    /// Ctrl-C.
    pub once: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(5),
            concurrency: 64,
            once: false,
        }
    }
}

/// Runs the demo: backend, perfgate, two load phases, the report, and then
/// (unless `once`) both servers stay up for exploring until Ctrl-C.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the sample backend")?;
    let backend = Backend::spawn(listener).context("starting the sample backend")?;
    let stats = backend.stats();

    let started = crate::app::start(demo_config(&backend), None)
        .await
        .context("starting perfgate");
    let running = match started {
        Ok(running) => running,
        Err(e) => {
            backend.shutdown().await;
            return Err(e);
        }
    };

    eprintln!(
        "perfgate demo: sample backend on http://{}, perfgate on http://{}",
        backend.addr(),
        running.proxy_addr
    );
    eprintln!(
        "running the same load for {:.0} s at {} connections: first direct, then through perfgate",
        opts.duration.as_secs_f64(),
        opts.concurrency
    );

    let phases = async {
        let before = stats.api_calls();
        let direct = phase(&opts, backend.addr(), "direct   ").await?;
        let direct_calls = stats.api_calls().saturating_sub(before);

        let before = stats.api_calls();
        let proxied = phase(&opts, running.proxy_addr, "perfgate ").await?;
        let proxied_calls = stats.api_calls().saturating_sub(before);
        anyhow::Ok((direct, direct_calls, proxied, proxied_calls))
    };
    let (direct, direct_calls, proxied, proxied_calls) = match phases.await {
        Ok(result) => result,
        Err(e) => {
            running.shutdown().await;
            backend.shutdown().await;
            return Err(e);
        }
    };

    // Counters are read once both runs are over; the gateway only saw the
    // second run, so its totals are that run's.
    let cache = running.gateway.cache_stats();
    let comparison = Comparison {
        direct,
        proxied,
        direct_upstream_calls: direct_calls,
        proxied_upstream_calls: proxied_calls,
        cache: Some(CacheFigures {
            hits: cache.hits,
            misses: cache.misses,
            compressed_bytes_saved: cache.compressed_bytes_saved,
            identity_bytes_served: cache.identity_bytes_served,
        }),
    };
    println!();
    report::print(&comparison);

    if !opts.once {
        println!();
        println!("Both servers stay up; try them (Ctrl-C to stop):");
        println!(
            "  through perfgate   curl -si http://{}/api/v1/events | head",
            running.proxy_addr
        );
        println!(
            "  sample backend     curl -si http://{}/api/v1/events | head",
            backend.addr()
        );
        println!("  metrics            http://{}/metrics", running.admin_addr);
        println!(
            "  cache statistics   http://{}/admin/cache/stats",
            running.admin_addr
        );
        if let Err(e) = tokio::signal::ctrl_c().await {
            // Without a signal handler there is nothing to wait for; shut
            // down rather than hang.
            eprintln!("cannot wait for Ctrl-C ({e}); shutting down");
        }
        eprintln!("shutting down");
    }

    running.shutdown().await;
    backend.shutdown().await;
    Ok(())
}

async fn phase(
    opts: &DemoOptions,
    target: std::net::SocketAddr,
    label: &str,
) -> anyhow::Result<LoadReport> {
    load::run(&LoadOptions {
        target,
        concurrency: opts.concurrency,
        duration: opts.duration,
        label: label.to_owned(),
    })
    .await
    .with_context(|| format!("load run against {target}"))
}

/// The gateway configuration of the demo, as a user would write it for
/// this backend: cache the event list briefly (the backend sends no caching
/// headers), keep link analyses for minutes, never cache the chat.
pub fn demo_config(backend: &Backend) -> Config {
    use perfgate_config::Duration as D;

    let route = |name: &str, path: &str, cache: RouteCachePolicy| RouteConfig {
        name: Some(name.into()),
        path: Some(path.into()),
        cache,
        ..RouteConfig::default()
    };
    Config {
        server: ServerConfig {
            listen: "127.0.0.1:0".into(),
            // The demo stops on Ctrl-C; waiting long for slow requests
            // would only make that feel stuck.
            drain_timeout: D::from_secs(3),
            ..ServerConfig::default()
        },
        admin: AdminConfig {
            listen: "127.0.0.1:0".into(),
            ..AdminConfig::default()
        },
        upstream: UpstreamConfig {
            url: format!("http://{}", backend.addr()),
            ..UpstreamConfig::default()
        },
        // The demo's log store lives in the temporary directory, not in
        // the user's working directory.
        logs: perfgate_config::LogsConfig {
            data_dir: std::env::temp_dir()
                .join(format!("perfgate-demo-{}", std::process::id()))
                .to_string_lossy()
                .into_owned(),
            ..perfgate_config::LogsConfig::default()
        },
        routes: vec![
            route(
                "events",
                "/api/v1/events",
                RouteCachePolicy {
                    default_ttl: Some(D::from_secs(30)),
                    stale_while_revalidate: Some(D::from_secs(30)),
                    ..RouteCachePolicy::default()
                },
            ),
            route(
                "analyze",
                "/api/v1/analyze",
                RouteCachePolicy {
                    default_ttl: Some(D::from_secs(300)),
                    ..RouteCachePolicy::default()
                },
            ),
            route(
                "chat",
                "/api/v1/chat",
                RouteCachePolicy {
                    bypass: true,
                    ..RouteCachePolicy::default()
                },
            ),
        ],
        ..Config::default()
    }
}
