use super::*;

#[test]
fn status_classes() {
    let class = |s| STATUS_CLASSES[status_class(s)];
    assert_eq!(class(100), "1xx");
    assert_eq!(class(200), "2xx");
    assert_eq!(class(304), "3xx");
    assert_eq!(class(499), "4xx");
    assert_eq!(class(504), "5xx");
    assert_eq!(class(599), "5xx");
    assert_eq!(class(600), "other");
    assert_eq!(class(999), "other");
    assert_eq!(class(0), "other");
}

#[test]
fn latency_is_labelled_by_route_and_status_class() {
    let m = Metrics::new();
    let r = m.route("api");
    r.record(200, 0.002);
    r.record(204, 0.002);
    r.record(503, 0.3);
    r.record(777, 0.1);
    let text = m.encode();
    let count = |class: &str| {
        let series = format!(
            "perfgate_request_duration_seconds_count{{route=\"api\",status_class=\"{class}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.parse::<u64>().unwrap())
    };
    assert_eq!(count("2xx"), Some(2), "{text}");
    assert_eq!(count("5xx"), Some(1));
    assert_eq!(count("other"), Some(1));
    assert_eq!(
        count("4xx"),
        None,
        "a class that did not occur has no series"
    );
    assert!(text.contains(
        "perfgate_request_duration_seconds_bucket{le=\"0.5\",route=\"api\",status_class=\"5xx\"} 1"
    ) || text.contains(
        "perfgate_request_duration_seconds_bucket{route=\"api\",status_class=\"5xx\",le=\"0.5\"} 1"
    ), "{text}");
    assert!(text.contains("perfgate_requests_total{route=\"api\",status=\"503\"} 1"));
}

#[test]
fn open_connections_are_counted_until_their_guard_drops() {
    let m = Metrics::new();
    let a = m.connection_opened();
    let b = m.connection_opened();
    assert_eq!(m.client_connections(), 2);
    assert!(m.encode().contains("perfgate_client_connections 2\n"));
    drop(a);
    assert_eq!(m.client_connections(), 1);
    drop(b);
    assert_eq!(m.client_connections(), 0);
}

#[cfg(target_os = "linux")]
#[test]
fn process_families_are_unprefixed() {
    let text = Metrics::new().encode();
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "process_threads ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
    assert!(!text.contains("perfgate_process_"));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn the_text_format_names_counters_by_their_samples() {
    let om = "# HELP process_cpu_seconds Total CPU.\n\
              # TYPE process_cpu_seconds counter\n\
              # UNIT process_cpu_seconds seconds\n\
              process_cpu_seconds_total 1.5\n\
              # HELP perfgate_cache_entries Objects in the L1 cache.\n\
              # TYPE perfgate_cache_entries gauge\n\
              perfgate_cache_entries 3\n\
              # HELP perfgate_thing Something.\n\
              # TYPE perfgate_thing unknown\n\
              perfgate_thing 1\n\
              # EOF\n";
    assert_eq!(
        openmetrics_to_text(om),
        "# HELP process_cpu_seconds_total Total CPU.\n\
         # TYPE process_cpu_seconds_total counter\n\
         process_cpu_seconds_total 1.5\n\
         # HELP perfgate_cache_entries Objects in the L1 cache.\n\
         # TYPE perfgate_cache_entries gauge\n\
         perfgate_cache_entries 3\n\
         # HELP perfgate_thing Something.\n\
         # TYPE perfgate_thing untyped\n\
         perfgate_thing 1\n"
    );
}

/// Help texts are written unescaped by the encoder: they must not need
/// escaping in either format.
#[test]
fn help_texts_need_no_escaping() {
    let m = Metrics::new();
    m.route("r").record(200, 0.1);
    for line in m.encode().lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(!line.contains('\\'), "{line}");
    }
}
