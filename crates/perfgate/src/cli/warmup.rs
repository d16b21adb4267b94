//! `perfgate cache warmup`: starts a warm-up job with
//! `POST /admin/cache/warmup`, polls its status every 200 ms (a progress bar
//! on stderr when it is a terminal) and exits 1 if any URL failed.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

use super::AdminClient;

/// Status poll interval.
const POLL: Duration = Duration::from_millis(200);
/// Width of the progress bar, in cells.
const BAR_WIDTH: usize = 30;

/// `perfgate cache warmup` options: at least one of `--url`, `--file`,
/// `--top`.
#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("what")
        .required(true)
        .multiple(true)
        .args(["url", "file", "top"])
))]
pub struct WarmupArgs {
    /// A path to fetch (`/events?page=1`); warm-up goes through the
    /// configured routes, so no absolute URLs. Repeatable.
    #[arg(long, value_name = "PATH")]
    url: Vec<String>,
    /// A file with one path per line (`#` starts a comment; `-` reads stdin).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Also fetch the N hottest keys seen recently (1 to 10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    top: Option<u64>,
    /// Requests in flight at once (1 to 64) [default: cache.warmup_concurrency].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    concurrency: Option<u64>,
    /// `Host` header of the warm-up requests (for host-specific cache keys).
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
}

pub async fn run(client: &AdminClient, args: WarmupArgs) -> anyhow::Result<ExitCode> {
    let mut urls = args.url.clone();
    if let Some(file) = &args.file {
        urls.extend(read_paths(file)?);
    }
    if urls.is_empty() && args.top.is_none() {
        bail!("nothing to warm up: the file lists no paths (give --url, --file or --top)");
    }
    let started = client
        .post("/admin/cache/warmup", &body(&args, urls))
        .await?;
    let Some(status_url) = started["status_url"].as_str() else {
        bail!("the admin API did not return a status_url: {started}");
    };
    let id = started["id"].as_str().unwrap_or("?");
    let tty = std::io::stderr().is_terminal();
    if !tty {
        eprintln!(
            "warm-up {id} started: {} URL(s)",
            started["total"].as_u64().unwrap_or(0)
        );
    }
    let status = loop {
        let status = client.get(status_url).await?;
        if tty {
            eprint!("\r{}\x1b[K", progress_line(&status));
            let _ = std::io::stderr().flush();
        }
        if status["state"] != "running" {
            break status;
        }
        tokio::time::sleep(POLL).await;
    };
    if tty {
        eprintln!();
    }
    Ok(report(&status))
}

/// Prints the outcome; failure when any URL failed.
fn report(status: &Value) -> ExitCode {
    let n = |k: &str| status[k].as_u64().unwrap_or(0);
    println!(
        "warmed {} of {} URL(s): {} ok, {} failed",
        n("done"),
        n("total"),
        n("succeeded"),
        n("failed")
    );
    if n("failed") == 0 {
        return ExitCode::SUCCESS;
    }
    let errors = status["errors"].as_array().map_or(&[][..], Vec::as_slice);
    for e in errors {
        eprintln!(
            "  failed: {}: {}",
            e["url"].as_str().unwrap_or("?"),
            e["error"].as_str().unwrap_or("?")
        );
    }
    let listed = errors.len() as u64;
    if n("failed") > listed {
        eprintln!("  … and {} more", n("failed") - listed);
    }
    ExitCode::FAILURE
}

/// The warm-up request for the flags given.
fn body(args: &WarmupArgs, urls: Vec<String>) -> Value {
    let mut b = Map::new();
    if !urls.is_empty() {
        b.insert("urls".into(), json!(urls));
    }
    if let Some(top) = args.top {
        b.insert("top".into(), json!(top));
    }
    if let Some(c) = args.concurrency {
        b.insert("concurrency".into(), json!(c));
    }
    if let Some(h) = &args.host {
        b.insert("host".into(), json!(h));
    }
    Value::Object(b)
}

/// `[#####.....] 12/40 ok 11 failed 1`.
fn progress_line(status: &Value) -> String {
    let n = |k: &str| status[k].as_u64().unwrap_or(0);
    let (done, total) = (n("done"), n("total"));
    // An empty job is complete; done > total must not overflow the bar.
    let filled = done
        .min(total)
        .saturating_mul(BAR_WIDTH as u64)
        .checked_div(total)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(BAR_WIDTH)
        .min(BAR_WIDTH);
    format!(
        "[{}{}] {done}/{total} ok {} failed {}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        n("succeeded"),
        n("failed")
    )
}

/// Paths from `file` (or stdin for `-`): one per line, blank lines and
/// `#` comments skipped (`#` never occurs in a path perfgate accepts).
fn read_paths(file: &Path) -> anyhow::Result<Vec<String>> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read paths from stdin")?
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the warm-up file {}", file.display()))?
    };
    Ok(parse_paths(&text))
}

fn parse_paths(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_format() {
        let text = "# hot pages\n/events\n\n  /events/42  # the big one\n/search?q=a\n#/skipped\n";
        assert_eq!(parse_paths(text), ["/events", "/events/42", "/search?q=a"]);
    }

    #[test]
    fn progress_bar() {
        let s = json!({"state": "running", "total": 40, "done": 12, "succeeded": 11, "failed": 1});
        assert_eq!(
            progress_line(&s),
            "[#########.....................] 12/40 ok 11 failed 1"
        );
        let s = json!({"total": 0, "done": 0});
        assert!(progress_line(&s).starts_with(&format!("[{}]", "#".repeat(BAR_WIDTH))));
    }
}
