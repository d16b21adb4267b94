//! A finished request's access line: what a [`RequestEvent`] becomes in
//! the access log, the store and OTLP.
//!
//! The query string is not logged (it often carries tokens and personal
//! data); the path is, as received, cut at [`MAX_PATH`] characters.

use std::fmt::Write as _;
use std::time::Duration;

use perfgate_observe::{CacheEvent, CacheLayer, RequestEvent};

use crate::line::{Level, LogLine, Phases};

/// Longest path kept in a line, in bytes (cut on a character boundary).
pub const MAX_PATH: usize = 2048;

/// The access line of `ev`.
pub fn line_of(ev: &RequestEvent) -> LogLine {
    let path = cut(ev.target.path(), MAX_PATH);
    let level = match ev.status {
        500.. => Level::Error,
        400..=499 => Level::Warn,
        _ => Level::Info,
    };
    let mut message = String::with_capacity(path.len() + 16);
    let _ = write!(message, "{} {} {}", ev.method, path, ev.status);
    LogLine {
        id: ev.id,
        level,
        kind: "access".into(),
        message,
        target: None,
        method: Some(ev.method.as_str().to_owned()),
        path: Some(path.to_owned()),
        route: ev.template.as_deref().map(str::to_owned),
        route_name: ev.route.as_deref().map(str::to_owned),
        status: Some(ev.status),
        latency_ms: Some(ms(ev.phases.total)),
        bytes_in: Some(ev.bytes_in),
        bytes_out: Some(ev.bytes_out),
        cache: cache_words(ev),
        layer: ev.layer.map(|l| {
            match l {
                CacheLayer::L1 => "l1",
                CacheLayer::L2 => "l2",
            }
            .to_owned()
        }),
        detail: ev.detail.map(str::to_owned),
        upstream: ev.upstream.as_deref().map(str::to_owned),
        attempts: (ev.attempts > 0).then_some(ev.attempts),
        user: ev.user.as_deref().map(str::to_owned),
        ip: Some(ev.client.to_string()),
        error: ev.error.map(str::to_owned),
        trace_id: ev.trace_id.map(|t| format!("{t:032x}")),
        request_kind: Some(ev.kind.as_str().to_owned()),
        phases: Some(Phases {
            guard: ms(ev.phases.guard),
            limit: ms(ev.phases.limit),
            l1: ms(ev.phases.l1),
            l2: ms(ev.phases.l2),
            coalesce_wait: ms(ev.phases.coalesce_wait),
            connect: ms(ev.phases.connect),
            ttfb: ms(ev.phases.ttfb),
            upstream_body: ms(ev.phases.upstream_body),
            encode: ms(ev.phases.encode),
        }),
        fields: None,
    }
}

/// The cache outcomes as words (`hit`, `miss revalidated`), none when the
/// request never touched the cache.
fn cache_words(ev: &RequestEvent) -> Option<String> {
    if ev.cache.is_empty() {
        return None;
    }
    let mut s = String::new();
    for e in ev.cache.iter() {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(match e {
            CacheEvent::hit => "hit",
            CacheEvent::miss => "miss",
            CacheEvent::stale => "stale",
            CacheEvent::revalidated => "revalidated",
            CacheEvent::coalesced => "coalesced",
            CacheEvent::bypass => "bypass",
        });
    }
    Some(s)
}

/// Milliseconds with microsecond precision.
fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::SystemTime;

    use perfgate_observe::{CacheOutcomes, PhaseTimes, RequestKind};

    use super::*;

    fn event(status: u16, target: &str) -> RequestEvent {
        let mut cache = CacheOutcomes::default();
        cache.insert(CacheEvent::miss);
        cache.insert(CacheEvent::revalidated);
        RequestEvent {
            id: 1_765_000_000_000_001,
            at: SystemTime::now(),
            kind: RequestKind::Client,
            route: Some(Arc::from("events")),
            template: Some(Arc::from("/events/{id}")),
            method: http::Method::GET,
            target: target.parse().unwrap(),
            status,
            bytes_in: 0,
            bytes_out: 42,
            phases: PhaseTimes {
                total: Duration::from_micros(1500),
                ttfb: Duration::from_millis(1),
                ..PhaseTimes::default()
            },
            cache,
            layer: None,
            detail: Some("no-cache"),
            upstream_bytes_saved: 0,
            upstream: Some(Arc::from("127.0.0.1:8000")),
            attempts: 1,
            user: Some(Arc::from("42")),
            client: IpAddr::from([10, 0, 0, 1]),
            trace_id: None,
            error: None,
        }
    }

    /// Every field a search needs is there; the query string is not.
    #[test]
    fn an_event_becomes_its_access_line() {
        let l = line_of(&event(503, "/events/7?token=secret"));
        assert_eq!(l.kind, "access");
        assert_eq!(l.level, Level::Error);
        assert_eq!(l.message, "GET /events/7 503");
        assert_eq!(l.path.as_deref(), Some("/events/7"));
        assert_eq!(l.route.as_deref(), Some("/events/{id}"));
        assert_eq!(l.route_name.as_deref(), Some("events"));
        assert_eq!(l.cache.as_deref(), Some("miss revalidated"));
        assert_eq!(l.detail.as_deref(), Some("no-cache"));
        assert_eq!(l.user.as_deref(), Some("42"));
        assert_eq!(l.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(l.latency_ms, Some(1.5));
        let mut json = Vec::new();
        l.to_json(&mut json);
        let json = String::from_utf8(json).unwrap();
        assert!(!json.contains("secret"), "{json}");
        assert_eq!(line_of(&event(404, "/x")).level, Level::Warn);
        assert_eq!(line_of(&event(200, "/x")).level, Level::Info);
    }

    /// A hostile path is cut, and never mid-character.
    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let long = format!("/{}", "a".repeat(3000));
        let l = line_of(&event(200, &long));
        assert_eq!(l.path.unwrap().len(), MAX_PATH);
        let s = "é".repeat(10);
        assert_eq!(cut(&s, 5), "éé");
        assert_eq!(cut(&s, 100), s);
    }
}
