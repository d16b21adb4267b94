//! `perfgate cache …`: the cache admin API from the command line
//! (`stats`, `purge`, `warmup`). Each subcommand is one admin call (warm-up
//! then polls its job); `client.rs` turns transport and auth failures into
//! messages that say what to fix.

mod client;
mod format;
mod purge;
mod stats;
mod warmup;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

pub use client::AdminClient;

/// `perfgate cache`: the common flags and the subcommand.
#[derive(Args)]
pub struct CacheArgs {
    /// Base URL of the perfgate admin API.
    #[arg(
        long = "admin",
        env = "PERFGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:9090",
        global = true,
        value_name = "URL"
    )]
    admin_url: String,
    /// File holding the admin bearer token (else `PERFGATE_ADMIN_TOKEN`).
    #[arg(
        long,
        env = "PERFGATE_ADMIN_TOKEN_FILE",
        global = true,
        value_name = "FILE"
    )]
    admin_token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Show hit rates, entries and bytes per layer (L1, L2) and per route.
    Stats(stats::StatsArgs),
    /// Invalidate cached responses by URL, prefix, tag or url_hash, on every
    /// instance sharing the Redis.
    ///
    /// Examples: `perfgate cache purge --url /events/42`,
    /// `perfgate cache purge --tag events --soft`,
    /// `perfgate cache purge --prefix https://api.example.com/v1/`.
    Purge(purge::PurgeArgs),
    /// Fetch paths (or the hottest keys) through the gateway so they are
    /// cached before clients ask; shows progress and exits 1 if any failed.
    ///
    /// Examples: `perfgate cache warmup --url /events --url /events/42`,
    /// `perfgate cache warmup --file urls.txt --concurrency 16`,
    /// `perfgate cache warmup --top 500`.
    Warmup(warmup::WarmupArgs),
}

/// Runs `perfgate cache …`.
pub async fn run(args: CacheArgs) -> anyhow::Result<ExitCode> {
    let token = admin_token(args.admin_token_file.as_deref(), None)?;
    let client = AdminClient::new(&args.admin_url, token)?;
    match args.command {
        CacheCommand::Stats(a) => stats::run(&client, a).await,
        CacheCommand::Purge(a) => purge::run(&client, a).await,
        CacheCommand::Warmup(a) => warmup::run(&client, a).await,
    }
}

/// The admin token: from `cli_file`, else `cfg_file`, else
/// `PERFGATE_ADMIN_TOKEN`; `None` when none is set.
pub fn admin_token(
    cli_file: Option<&Path>,
    cfg_file: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let file = cli_file
        .map(Path::to_path_buf)
        .or_else(|| cfg_file.map(PathBuf::from));
    if let Some(f) = file {
        let t = std::fs::read_to_string(&f)
            .with_context(|| format!("cannot read the admin token file {}", f.display()))?;
        let t = t.trim().to_string();
        anyhow::ensure!(
            !t.is_empty(),
            "the admin token file {} is empty",
            f.display()
        );
        return Ok(Some(t));
    }
    Ok(std::env::var("PERFGATE_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}
