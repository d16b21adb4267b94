use std::time::{Duration, Instant, SystemTime};

use super::*;

/// A stat line whose command name is hostile: spaces and parentheses, with
/// what looks like fields inside it.
const HOSTILE: &str = "4242 ((a) b (c) 1 2 3) S 1 4242 4242 0 -1 4194560 2800 0 0 0 \
                       250 130 0 0 20 0 7 0 12000 123456789 2048 18446744073709551615 \
                       1 1 0 0 0 0 0 4096 17926 0 0 0 17 1 0 0 0 0 0\n";

#[test]
fn stat_fields_are_counted_from_the_last_parenthesis() {
    let f = StatFields::parse(HOSTILE).unwrap();
    assert_eq!(
        f,
        StatFields {
            utime: 250,
            stime: 130,
            threads: 7,
            start_ticks: 12000,
            vsize: 123_456_789,
            rss_pages: 2048,
        }
    );
    let s = f.stats(100, 4096, Some(1_700_000_000), 12, Some(1024));
    assert_eq!(s.cpu_seconds, 3.8);
    assert_eq!(s.resident_bytes, 2048 * 4096);
    assert_eq!(s.virtual_bytes, 123_456_789);
    assert_eq!(s.threads, 7);
    assert_eq!(s.start_time_seconds, 1_700_000_120.0);
    assert_eq!((s.open_fds, s.max_fds), (12, Some(1024)));
}

#[test]
fn the_simplest_name_and_broken_lines() {
    let plain = HOSTILE.replacen("((a) b (c) 1 2 3)", "(perfgate)", 1);
    assert_eq!(StatFields::parse(&plain), StatFields::parse(HOSTILE));
    assert_eq!(StatFields::parse("4242 (perfgate"), None);
    assert_eq!(StatFields::parse("4242 (x) S 1 2"), None, "too short");
    assert_eq!(StatFields::parse(""), None);
    let garbled = HOSTILE.replacen(" 250 ", " x ", 1);
    assert_eq!(StatFields::parse(&garbled), None);
}

#[test]
fn auxv_pairs_end_at_at_null() {
    let mut aux = Vec::new();
    for (k, v) in [
        (33u64, 7u64),
        (AT_PAGESZ, 16384),
        (AT_CLKTCK, 250),
        (0, 0),
        (AT_CLKTCK, 1),
    ] {
        aux.extend_from_slice(&(k as usize).to_ne_bytes());
        aux.extend_from_slice(&(v as usize).to_ne_bytes());
    }
    assert_eq!(auxv_value(&aux, AT_PAGESZ), Some(16384));
    assert_eq!(auxv_value(&aux, AT_CLKTCK), Some(250));
    assert_eq!(auxv_value(&aux, 99), None);
    assert_eq!(auxv_value(&aux[..5], AT_PAGESZ), None, "truncated");
    assert_eq!(auxv_value(&[], AT_PAGESZ), None);
}

#[test]
fn boot_time_and_open_file_limit() {
    let stat = "cpu  1 2 3\nintr 5\nbtime 1733440000\nprocesses 9\n";
    assert_eq!(boot_time(stat), Some(1_733_440_000));
    assert_eq!(boot_time("cpu 1\n"), None);
    let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                  Max cpu time              unlimited            unlimited            seconds   \n\
                  Max open files            1024                 524288               files     \n";
    assert_eq!(max_open_files(limits), Some(1024));
    let unlimited = limits.replace(
        "1024                 524288",
        "unlimited            unlimited",
    );
    assert_eq!(max_open_files(&unlimited), None);
}

#[cfg(target_os = "linux")]
#[test]
fn this_process_can_be_read() {
    let s = ProcessStats::read().unwrap();
    assert!(
        s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes,
        "{s:?}"
    );
    assert!(s.threads >= 1 && s.open_fds >= 3, "{s:?}");
    let up = s.uptime(SystemTime::now());
    assert!((0.0..3600.0).contains(&up), "uptime {up}");
}

fn stats(cpu: f64) -> ProcessStats {
    ProcessStats {
        cpu_seconds: cpu,
        resident_bytes: 1,
        virtual_bytes: 2,
        open_fds: 3,
        max_fds: None,
        threads: 4,
        start_time_seconds: 1000.0,
    }
}

#[test]
fn cpu_percent_is_measured_over_at_least_a_second() {
    let sampler = ProcessSampler::default();
    let t0 = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1100);
    // First sample: the average since start (10 s of CPU in 100 s).
    let s = sampler.sample_from(stats(10.0), t0, wall);
    assert_eq!((s.cpu_percent, s.cpu_interval_seconds), (10.0, 100.0));
    assert_eq!(s.uptime_seconds, 100.0);
    // Too soon for a new interval: the previous figure again.
    let s = sampler.sample_from(stats(10.4), t0 + Duration::from_millis(500), wall);
    assert_eq!(s.cpu_percent, 10.0);
    // Two seconds after the base, 1.5 s of CPU: 75 %.
    let s = sampler.sample_from(stats(11.5), t0 + Duration::from_secs(2), wall);
    assert_eq!((s.cpu_percent, s.cpu_interval_seconds), (75.0, 2.0));
    assert_eq!(s.cpu_seconds_total, 11.5);
    // Two busy cores over the next 4 s.
    let s = sampler.sample_from(stats(19.5), t0 + Duration::from_secs(6), wall);
    assert_eq!(s.cpu_percent, 200.0);
}
