//! `perfgate cache purge`: `POST /admin/cache/invalidate`, or
//! `DELETE /api/v1/cache/{url_hash}` with `--hash`.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use super::AdminClient;
use super::client::ApiFailure;

/// `perfgate cache purge` options: at least one of `--url`, `--prefix`,
/// `--tag`, `--hash`.
#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("what")
        .required(true)
        .multiple(true)
        .args(["url", "prefix", "tag", "hash"])
))]
pub struct PurgeArgs {
    /// A URL to purge: a path (`/events/42?page=2`, on every host) or an
    /// absolute URL (`https://api.example.com/events/42`, that host only).
    /// Repeatable.
    #[arg(long, value_name = "URL")]
    url: Vec<String>,
    /// Purge every URL under this path or absolute URL prefix.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// Purge every response carrying this tag (from `Surrogate-Key`,
    /// `Cache-Tag` or the route's `tags`). Repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    tag: Vec<String>,
    /// Mark the entries stale instead of removing them, so that
    /// stale-while-revalidate refreshes them in the background.
    #[arg(long, conflicts_with = "hash")]
    soft: bool,
    /// Purge the URL whose `url_hash` (32 hex characters) is given.
    #[arg(long, value_name = "HASH", conflicts_with_all = ["url", "prefix", "tag"])]
    hash: Option<String>,
}

pub async fn run(client: &AdminClient, args: PurgeArgs) -> anyhow::Result<ExitCode> {
    if let Some(hash) = &args.hash {
        let hash = hash.trim().to_ascii_lowercase();
        let data = match client.delete(&format!("/api/v1/cache/{hash}")).await {
            Ok(d) => d,
            Err(e) => match e.downcast_ref::<ApiFailure>() {
                Some(f) if f.status == http::StatusCode::NOT_FOUND => {
                    eprintln!("nothing purged: no cached URL has the hash {hash}");
                    return Ok(ExitCode::FAILURE);
                }
                _ => return Err(e),
            },
        };
        println!(
            "purged {} (url_hash {hash})",
            data["key"].as_str().unwrap_or("?").replace('\n', " ")
        );
        println!("{}", report_line(&data));
        return Ok(ExitCode::SUCCESS);
    }
    let data = client.post("/admin/cache/invalidate", &body(&args)).await?;
    println!("{}", report_line(&data));
    Ok(ExitCode::SUCCESS)
}

/// The invalidation request for the flags given.
fn body(args: &PurgeArgs) -> Value {
    let mut b = Map::new();
    if !args.url.is_empty() {
        b.insert("urls".into(), json!(args.url));
    }
    if let Some(p) = &args.prefix {
        b.insert("prefix".into(), json!(p));
    }
    if !args.tag.is_empty() {
        b.insert("tags".into(), json!(args.tag));
    }
    if args.soft {
        b.insert("soft".into(), json!(true));
    }
    Value::Object(b)
}

/// `removed 3 from L1, 2 from L2; other instances: sent`.
fn report_line(d: &Value) -> String {
    let verb = if d["soft"] == true {
        "marked stale"
    } else {
        "removed"
    };
    let mut line = format!(
        "{verb} {} from L1, {} from L2",
        d["l1_removed"].as_u64().unwrap_or(0),
        d["l2_removed"].as_u64().unwrap_or(0)
    );
    if let Some(f) = d["fanout"].as_str() {
        line.push_str(&format!("; other instances: {f}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PurgeArgs,
    }

    fn parse(argv: &[&str]) -> Result<PurgeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("purge").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn flags_become_the_invalidation_body() {
        let a = parse(&[
            "--url",
            "/a",
            "--url",
            "https://x/b",
            "--tag",
            "t",
            "--soft",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            body(&a),
            json!({"urls": ["/a", "https://x/b"], "tags": ["t"], "soft": true})
        );
        let a = parse(&["--prefix", "/events/"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body(&a), json!({"prefix": "/events/"}));
        assert!(parse(&[]).is_err(), "nothing to purge must be refused");
        assert!(parse(&["--soft"]).is_err());
        assert!(parse(&["--hash", "ab", "--url", "/a"]).is_err());
        assert!(parse(&["--hash", "ab"]).is_ok());
    }

    #[test]
    fn report() {
        assert_eq!(
            report_line(
                &json!({"l1_removed": 3, "l2_removed": 2, "soft": false, "fanout": "sent"})
            ),
            "removed 3 from L1, 2 from L2; other instances: sent"
        );
        assert_eq!(
            report_line(&json!({"l1_removed": 1, "l2_removed": 0, "soft": true})),
            "marked stale 1 from L1, 0 from L2"
        );
    }
}
