//! The demo's before/after table: the same load straight to the backend
//! and through perfgate, side by side, with the change as a ratio.

use std::fmt::Write as _;
use std::time::Duration;

use super::load::LoadReport;

/// Everything the table shows, gathered by the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The run straight against the backend.
    pub direct: LoadReport,
    /// The same run through perfgate.
    pub proxied: LoadReport,
    /// Backend API calls during the direct run.
    pub direct_upstream_calls: u64,
    /// Backend API calls during the perfgate run.
    pub proxied_upstream_calls: u64,
    /// perfgate's cache and compression counters for the run, when known.
    pub cache: Option<CacheFigures>,
}

/// Cache and compression counters as perfgate reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheFigures {
    /// Requests answered from the cache (stale answers included).
    pub hits: u64,
    /// Cacheable requests that had to go upstream.
    pub misses: u64,
    /// Bytes not sent thanks to compression.
    pub compressed_bytes_saved: u64,
    /// Size, uncompressed, of the bodies served.
    pub identity_bytes_served: u64,
}

impl CacheFigures {
    /// Share of cache lookups answered from the cache, if there were any.
    pub fn hit_rate(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }

    /// Share of the uncompressed body bytes that compression saved.
    pub fn compression_saving(&self) -> Option<f64> {
        (self.identity_bytes_served > 0)
            .then(|| self.compressed_bytes_saved as f64 / self.identity_bytes_served as f64)
    }
}

/// Renders the table as text, one row per line, ending with a newline.
pub fn render(c: &Comparison) -> String {
    let (d, p) = (&c.direct, &c.proxied);
    let mut rows: Vec<[String; 4]> = vec![[
        String::new(),
        "direct to backend".into(),
        "through perfgate".into(),
        "change".into(),
    ]];
    let mut row = |name: &str, direct: String, proxied: String, change: String| {
        rows.push([name.into(), direct, proxied, change]);
    };
    row(
        "requests",
        d.requests.to_string(),
        p.requests.to_string(),
        String::new(),
    );
    for (name, dl, pl) in [
        ("latency p50", d.p50, p.p50),
        ("latency p95", d.p95, p.p95),
        ("latency p99", d.p99, p.p99),
    ] {
        row(name, ms(dl), ms(pl), speedup(dl, pl));
    }
    row(
        "throughput",
        format!("{:.0} req/s", d.rps),
        format!("{:.0} req/s", p.rps),
        ratio(p.rps, d.rps, "more", "less"),
    );
    row(
        "errors",
        d.errors.to_string(),
        p.errors.to_string(),
        String::new(),
    );
    row(
        "upstream calls",
        c.direct_upstream_calls.to_string(),
        c.proxied_upstream_calls.to_string(),
        ratio(
            c.direct_upstream_calls as f64,
            c.proxied_upstream_calls as f64,
            "fewer",
            "more",
        ),
    );
    let hit_rate = c.cache.and_then(|f| f.hit_rate());
    row(
        "cache hit rate",
        "—".into(),
        hit_rate.map_or_else(|| "—".into(), percent),
        String::new(),
    );
    let (d_per, p_per) = (per_response(d), per_response(p));
    row(
        "bytes received",
        format!("{} ({}/resp)", bytes(d.body_bytes as f64), bytes(d_per)),
        format!("{} ({}/resp)", bytes(p.body_bytes as f64), bytes(p_per)),
        ratio(d_per, p_per, "smaller/resp", "larger/resp"),
    );
    let saving = c.cache.and_then(|f| f.compression_saving());
    row(
        "compression saving",
        "—".into(),
        saving.map_or_else(|| "—".into(), percent),
        String::new(),
    );

    let widths: [usize; 4] =
        std::array::from_fn(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0));
    let mut out = String::new();
    for r in &rows {
        // The name column reads left to right; numbers line up on the right.
        let line = format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// Prints the table to stdout.
pub fn print(c: &Comparison) {
    print!("{}", render(c));
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn percent(f: f64) -> String {
    format!("{:.1} %", f * 100.0)
}

fn per_response(r: &LoadReport) -> f64 {
    if r.requests == 0 {
        0.0
    } else {
        r.body_bytes as f64 / r.requests as f64
    }
}

fn bytes(n: f64) -> String {
    const UNITS: [(&str, f64); 3] = [
        ("GiB", 1024.0 * 1024.0 * 1024.0),
        ("MiB", 1024.0 * 1024.0),
        ("KiB", 1024.0),
    ];
    UNITS.iter().find(|(_, size)| n >= *size).map_or_else(
        || format!("{n:.0} B"),
        |(unit, size)| format!("{:.1} {unit}", n / size),
    )
}

fn speedup(before: Duration, after: Duration) -> String {
    ratio(
        before.as_secs_f64(),
        after.as_secs_f64(),
        "faster",
        "slower",
    )
}

/// Ratios closer to one than this read as "about the same".
const SAME_WITHIN: f64 = 1.05;

/// `before / after` as `12.3× better_word`, or the inverse with
/// `worse_word` when the ratio is below one. Zeros have no ratio.
fn ratio(before: f64, after: f64, better_word: &str, worse_word: &str) -> String {
    if !(before > 0.0 && after > 0.0) {
        return match (before > 0.0, after > 0.0) {
            // Nothing left at all (no upstream calls, say).
            (true, false) => format!("∞× {better_word}"),
            _ => "—".into(),
        };
    }
    let r = before / after;
    // Run-to-run noise is a few percent; calling it a change would mislead.
    if (1.0 / SAME_WITHIN..=SAME_WITHIN).contains(&r) {
        return "about the same".into();
    }
    let (r, word) = if r >= 1.0 {
        (r, better_word)
    } else {
        (1.0 / r, worse_word)
    };
    if r >= 100.0 {
        format!("{r:.0}× {word}")
    } else {
        format!("{r:.1}× {word}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(requests: u64, p50_ms: u64, p99_ms: u64, rps: f64, bytes: u64) -> LoadReport {
        LoadReport {
            requests,
            errors: 0,
            elapsed: Duration::from_secs(5),
            p50: Duration::from_millis(p50_ms),
            p95: Duration::from_millis(p99_ms / 2),
            p99: Duration::from_millis(p99_ms),
            rps,
            body_bytes: bytes,
        }
    }

    #[test]
    fn renders_the_table() {
        let c = Comparison {
            direct: load(1000, 50, 1500, 200.0, 8_000_000),
            proxied: load(5000, 1, 1000, 1000.0, 8_000_000),
            direct_upstream_calls: 1000,
            proxied_upstream_calls: 250,
            cache: Some(CacheFigures {
                hits: 900,
                misses: 100,
                compressed_bytes_saved: 800,
                identity_bytes_served: 1000,
            }),
        };
        let text = render(&c);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        // Columns are separated by at least two spaces.
        let cols = |name: &str| -> Vec<String> {
            let line = lines
                .iter()
                .find(|l| l.starts_with(name))
                .copied()
                .unwrap_or("");
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            cols("")[..3],
            ["direct to backend", "through perfgate", "change"]
        );
        assert_eq!(
            cols("latency p50"),
            ["latency p50", "50.0 ms", "1.0 ms", "50.0× faster"]
        );
        assert_eq!(cols("latency p99")[3], "1.5× faster");
        assert_eq!(
            cols("throughput")[1..],
            ["200 req/s", "1000 req/s", "5.0× more"]
        );
        assert_eq!(cols("upstream calls")[1..], ["1000", "250", "4.0× fewer"]);
        assert_eq!(cols("cache hit rate")[1..], ["—", "90.0 %"]);
        assert_eq!(
            cols("bytes received")[1..],
            [
                "7.6 MiB (7.8 KiB/resp)",
                "7.6 MiB (1.6 KiB/resp)",
                "5.0× smaller/resp"
            ]
        );
        assert_eq!(cols("compression saving")[2], "80.0 %");
        // The change column starts at the same character on every row.
        let at = |l: &str| l.chars().count() - l.split("  ").last().unwrap_or("").chars().count();
        let header_at = at(lines[0]);
        for l in lines.iter().filter(|l| l.contains('×')) {
            assert_eq!(at(l), header_at, "{l:?}");
        }
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(10.0, 2.0, "faster", "slower"), "5.0× faster");
        assert_eq!(ratio(2.0, 10.0, "faster", "slower"), "5.0× slower");
        assert_eq!(ratio(1000.0, 2.0, "faster", "slower"), "500× faster");
        assert_eq!(ratio(10.0, 0.0, "fewer", "more"), "∞× fewer");
        assert_eq!(ratio(0.0, 0.0, "fewer", "more"), "—");
        assert_eq!(ratio(100.0, 98.0, "faster", "slower"), "about the same");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
    }

    #[test]
    fn missing_cache_figures_show_dashes() {
        let c = Comparison {
            direct: load(0, 0, 0, 0.0, 0),
            proxied: load(0, 0, 0, 0.0, 0),
            direct_upstream_calls: 0,
            proxied_upstream_calls: 0,
            cache: None,
        };
        let text = render(&c);
        assert!(
            text.lines()
                .any(|l| l.starts_with("cache hit rate") && l.ends_with('—'))
        );
        assert_eq!(CacheFigures::default().hit_rate(), None);
    }
}
