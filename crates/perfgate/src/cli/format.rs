//! Plain-text rendering shared by the `cache` subcommands: sizes, rates and
//! aligned tables, read defensively from JSON (a field missing from an
//! older or newer perfgate shows as `-` instead of failing).

use serde_json::Value;

/// `1.5 MiB`-style size; `-` when absent.
pub fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return "-".into();
    };
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = n as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// An integer, or `-` when absent.
pub fn count(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => "-".into(),
    }
}

/// The hit rate of `o` as a percentage: its `hit_rate` (0..=1), else
/// computed from `hits` and `misses`; `-` when neither is known.
pub fn hit_rate(o: &Value) -> String {
    let rate = o["hit_rate"].as_f64().or_else(|| {
        let (h, m) = (o["hits"].as_f64()?, o["misses"].as_f64()?);
        (h + m > 0.0).then(|| h / (h + m))
    });
    match rate {
        Some(r) => format!("{:.1}%", r * 100.0),
        None => "-".into(),
    }
}

/// Renders rows under a header: the first `text_columns` columns
/// left-aligned (names), the others right-aligned (numbers).
pub fn table(header: &[&str], text_columns: usize, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::from("  ");
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i < text_columns {
                out.push_str(&format!("{cell:<w$}"));
            } else {
                out.push_str(&format!("{cell:>w$}"));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(&mut header.iter().copied());
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_rates_and_tables() {
        assert_eq!(bytes(&json!(512)), "512 B");
        assert_eq!(bytes(&json!(1536)), "1.5 KiB");
        assert_eq!(bytes(&json!(null)), "-");
        assert_eq!(hit_rate(&json!({"hit_rate": 0.875})), "87.5%");
        assert_eq!(hit_rate(&json!({"hits": 1, "misses": 3})), "25.0%");
        assert_eq!(hit_rate(&json!({"hits": 0, "misses": 0})), "-");
        let t = table(
            &["route", "hits"],
            1,
            &[
                vec!["events".into(), "12".into()],
                vec!["x".into(), "3".into()],
            ],
        );
        assert_eq!(t, "  route   hits\n  events    12\n  x          3\n");
    }
}
