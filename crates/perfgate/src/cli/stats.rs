//! `perfgate cache stats`: a readable summary of `GET /admin/cache/stats`.

use std::process::ExitCode;

use serde_json::Value;

use super::AdminClient;
use super::format::{bytes, count, hit_rate, table};

/// `perfgate cache stats` options.
#[derive(clap::Args)]
pub struct StatsArgs {
    /// Print the raw JSON statistics instead of the summary.
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &AdminClient, args: StatsArgs) -> anyhow::Result<ExitCode> {
    let data = client.get("/admin/cache/stats").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        print!("{}", render(&data));
    }
    Ok(ExitCode::SUCCESS)
}

/// The summary: totals, one line per layer, one line per route.
fn render(d: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "hit rate {}  (hits {}, misses {}, stale {}, coalesced {}, bypassed {})\n",
        hit_rate(d),
        count(&d["hits"]),
        count(&d["misses"]),
        count(&d["stale"]),
        count(&d["coalesced"]),
        count(&d["bypass"]),
    ));
    out.push_str(&format!(
        "upstream: {} requests, {} calls saved, {} saved\n",
        count(&d["upstream_requests"]),
        count(&d["upstream_calls_saved"]),
        bytes(&d["upstream_bytes_saved"]),
    ));
    out.push_str(&format!(
        "L1: {} entries, {}\n",
        count(&d["entries"]),
        bytes(&d["bytes"]),
    ));

    let layers = named(&d["layers"], "layer");
    if !layers.is_empty() {
        let rows: Vec<Vec<String>> = layers
            .iter()
            .map(|(name, l)| {
                vec![
                    name.clone(),
                    l["state"].as_str().unwrap_or("-").to_string(),
                    count(&l["hits"]),
                    count(&l["misses"]),
                    hit_rate(l),
                    count(&l["entries"]),
                    bytes(&l["bytes"]),
                    count(&l["writes"]),
                    count(&l["errors"]),
                ]
            })
            .collect();
        out.push_str("\nlayers\n");
        out.push_str(&table(
            &[
                "layer", "state", "hits", "misses", "hit rate", "entries", "bytes", "writes",
                "errors",
            ],
            2,
            &rows,
        ));
    }

    let routes = named(&d["routes"], "route");
    if !routes.is_empty() {
        let rows: Vec<Vec<String>> = routes
            .iter()
            .map(|(name, r)| {
                vec![
                    name.clone(),
                    count(&r["hits"]),
                    count(&r["misses"]),
                    hit_rate(r),
                    count(&r["entries"]),
                    bytes(&r["bytes"]),
                    count(&r["upstream_requests"]),
                    bytes(&r["upstream_bytes_saved"]),
                ]
            })
            .collect();
        out.push_str("\nroutes\n");
        out.push_str(&table(
            &[
                "route",
                "hits",
                "misses",
                "hit rate",
                "entries",
                "bytes",
                "upstream",
                "bytes saved",
            ],
            1,
            &rows,
        ));
    }
    out
}

/// `{"l1": {…}, "l2": {…}}` or `[{"layer": "l1", …}, …]` as (name, object)
/// pairs, in order.
fn named<'a>(v: &'a Value, name_key: &str) -> Vec<(String, &'a Value)> {
    match v {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let name = item[name_key]
                    .as_str()
                    .or_else(|| item["name"].as_str())
                    .unwrap_or("?");
                (name.to_string(), item)
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summary_has_layers_and_routes() {
        let d = json!({
            "hits": 30, "misses": 10, "hit_rate": 0.75, "entries": 4, "bytes": 2048,
            "upstream_requests": 10, "upstream_calls_saved": 30, "upstream_bytes_saved": 1048576,
            "layers": {
                "l1": {"hits": 25, "misses": 15, "entries": 4, "bytes": 2048},
                "l2": {"state": "up", "hits": 5, "misses": 10, "writes": 10, "errors": 0}
            },
            "routes": [{"route": "events", "hits": 30, "misses": 10, "hit_rate": 0.75}]
        });
        let text = render(&d);
        assert!(
            text.starts_with("hit rate 75.0%  (hits 30, misses 10"),
            "{text}"
        );
        assert!(text.contains("1.0 MiB saved"), "{text}");
        assert!(
            text.contains("\n  l1     -        25      15     62.5%"),
            "{text}"
        );
        assert!(
            text.contains("\n  l2     up        5      10     33.3%"),
            "{text}"
        );
        assert!(
            text.contains("\n  events    30      10     75.0%"),
            "{text}"
        );
        // An older perfgate without layers and routes still renders.
        let text = render(&json!({"hits": 0, "misses": 0}));
        assert!(text.starts_with("hit rate -"), "{text}");
        assert!(!text.contains("layers"), "{text}");
    }
}
