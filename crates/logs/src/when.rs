//! Instants as the admin API takes them (`from`, `to`): RFC 3339
//! (`2026-12-06T10:00:00Z`, `…+02:00`, fractions of a second), Unix time
//! in seconds, milliseconds or microseconds (told apart by size), `now`,
//! and `now-15m` (`s`, `m`, `h`, `d`). All become microseconds since the
//! Unix epoch, the unit of log ids.

/// Microseconds since the Unix epoch of `text`, relative to `now` (µs).
pub fn parse_instant(text: &str, now: u64) -> Result<u64, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Some(rest) = t.strip_prefix("now-") {
        return relative(rest).map(|d| now.saturating_sub(d));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = t.parse().map_err(|_| format!("{t:?} is too large"))?;
        // Seconds until the year 5138, then milliseconds, then microseconds.
        return Ok(if n < 100_000_000_000 {
            n.saturating_mul(1_000_000)
        } else if n < 100_000_000_000_000 {
            n.saturating_mul(1000)
        } else {
            n
        });
    }
    rfc3339(t).ok_or_else(|| {
        format!(
            "{t:?} is not a time: use RFC 3339 (2026-12-06T10:00:00Z), Unix seconds, `now` or `now-15m`"
        )
    })
}

/// A duration such as `15m` (the configuration's syntax, with the unit
/// written out), in microseconds.
fn relative(s: &str) -> Result<u64, String> {
    if s.is_empty() || s.ends_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "now-{s}: expected a number and a unit such as now-15m"
        ));
    }
    let d: std::time::Duration = perfgate_config::parse_duration(s)
        .map_err(|e| format!("now-{s}: {e}"))?
        .into();
    Ok(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SS[.f…](Z|±HH:MM)`, years 1970 to 9999.
fn rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || d == 0 || d > days_in(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0u64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 6 {
                micros = micros * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..6 {
            micros *= 10;
        }
    }
    let offset: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::try_from(oh * 3600 + om * 60).ok()?;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = i64::try_from(days * 86_400 + h * 3600 + mi * 60 + sec).ok()? - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(secs * 1_000_000 + micros)
}

fn leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in(y: u64, m: u64) -> u64 {
    match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date (no earlier than 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let mut days = 0;
    for year in 1970..y {
        days += if leap(year) { 366 } else { 365 };
    }
    for month in 1..m {
        days += days_in(y, month);
    }
    days + d - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_765_000_000_000_000;

    #[test]
    fn every_accepted_form() {
        assert_eq!(parse_instant("1970-01-01T00:00:00Z", NOW), Ok(0));
        assert_eq!(
            parse_instant("2026-12-06T10:00:00Z", NOW),
            Ok(1_796_551_200_000_000)
        );
        assert_eq!(
            parse_instant("2026-12-06T12:00:00.25+02:00", NOW),
            Ok(1_796_551_200_250_000)
        );
        assert_eq!(
            parse_instant("2024-02-29T00:00:00.123456789z", NOW),
            Ok(1_709_164_800_123_456)
        );
        assert_eq!(parse_instant("1765015200", NOW), Ok(1_765_015_200_000_000));
        assert_eq!(
            parse_instant("1765015200123", NOW),
            Ok(1_765_015_200_123_000)
        );
        assert_eq!(
            parse_instant("1765015200123456", NOW),
            Ok(1_765_015_200_123_456)
        );
        assert_eq!(parse_instant("now", NOW), Ok(NOW));
        assert_eq!(parse_instant("now-15m", NOW), Ok(NOW - 900_000_000));
        assert_eq!(parse_instant("now-2d", NOW), Ok(NOW - 172_800_000_000));
    }

    #[test]
    fn hostile_or_wrong_forms_are_refused_with_a_reason() {
        for bad in [
            "",
            "yesterday",
            "2026-02-30T00:00:00Z",
            "2026-12-06T24:00:00Z",
            "2026-12-06T10:00:00",
            "2026-12-06T10:00:00+2:00",
            "2026-12-06T10:00:00.Z",
            "1969-12-31T23:59:59Z",
            "now-15",
            "now-15y",
            "now-m",
            "99999999999999999999999",
            "２０２６-12-06T10:00:00Z",
        ] {
            assert!(parse_instant(bad, NOW).is_err(), "{bad:?} was accepted");
        }
        // Far past saturates at 0 rather than wrapping.
        assert_eq!(parse_instant("now-999999999d", NOW), Ok(0));
    }
}
