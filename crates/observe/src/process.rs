//! The standard `process_*` metrics (as the Prometheus client libraries
//! export them), read from `/proc/self` at scrape time, and a sampler of the
//! process's CPU use for the monitoring API.
//!
//! Everything comes from files the kernel writes for this process; no
//! system call beyond reading them (the workspace forbids `unsafe`, so there
//! is no `sysconf`):
//!
//! - `/proc/self/stat`: CPU time (`utime` + `stime`, in clock ticks),
//!   threads, start time (ticks after boot), virtual size (bytes) and
//!   resident set (pages). The command name in it is in parentheses and may
//!   itself contain spaces and parentheses, so the fields are counted from
//!   the *last* `)`.
//! - `/proc/self/auxv`: the clock-tick rate (`AT_CLKTCK`) and the page size
//!   (`AT_PAGESZ`) the kernel handed this process at exec — the values
//!   `sysconf(_SC_CLK_TCK)` and `sysconf(_SC_PAGESIZE)` return. Only if it
//!   cannot be read do we assume 100 ticks/s (Linux's `USER_HZ` on every
//!   mainstream architecture) and 4096-byte pages.
//! - `/proc/stat` (`btime`, the boot time), `/proc/self/fd` (open
//!   descriptors), `/proc/self/limits` (`Max open files`, the soft limit).
//!
//! On other systems nothing is read and no `process_*` family is exported.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second when `/proc/self/auxv` cannot be read.
const FALLBACK_TICKS: u64 = 100;
/// Page size when `/proc/self/auxv` cannot be read.
const FALLBACK_PAGE: u64 = 4096;

/// One reading of the process's resources.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None`: unlimited or unknown).
    pub max_fds: Option<u64>,
    /// OS threads.
    pub threads: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc`; `None` on systems without it (or if it is unreadable).
    pub fn read() -> Option<Self> {
        if !cfg!(target_os = "linux") {
            return None;
        }
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields = StatFields::parse(&stat)?;
        let (ticks, page) = aux_values();
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s));
        Some(fields.stats(ticks, page, boot, open_fds, max_fds))
    }

    /// Seconds since the process started (0 if the clock is before it).
    pub fn uptime(&self, now: SystemTime) -> f64 {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        (now - self.start_time_seconds).max(0.0)
    }
}

/// The fields of `/proc/self/stat` perfgate reads, in their raw units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatFields {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

impl StatFields {
    /// Parses one `/proc/<pid>/stat` line (proc(5)). The second field is the
    /// command name in parentheses; it may contain anything, including
    /// `)` and spaces, so the remaining fields start after the last `)`.
    pub(crate) fn parse(stat: &str) -> Option<Self> {
        let rest = &stat[stat.rfind(')')? + 1..];
        // `rest` starts at field 3 (state); field n is at index n - 3.
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        let at = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: at(14)?,
            stime: at(15)?,
            threads: at(20)?,
            start_ticks: at(22)?,
            vsize: at(23)?,
            // Signed in the kernel's format; never negative in practice.
            rss_pages: at(24).unwrap_or(0),
        })
    }

    fn stats(
        self,
        ticks: u64,
        page: u64,
        boot: Option<u64>,
        open_fds: u64,
        max_fds: Option<u64>,
    ) -> ProcessStats {
        let ticks = ticks.max(1) as f64;
        ProcessStats {
            cpu_seconds: (self.utime + self.stime) as f64 / ticks,
            resident_bytes: self.rss_pages.saturating_mul(page),
            virtual_bytes: self.vsize,
            open_fds,
            max_fds,
            threads: self.threads,
            start_time_seconds: boot.map_or(0.0, |b| b as f64 + self.start_ticks as f64 / ticks),
        }
    }
}

/// The clock-tick rate and page size from `/proc/self/auxv`, read once.
fn aux_values() -> (u64, u64) {
    static AUX: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    *AUX.get_or_init(|| {
        let aux = std::fs::read("/proc/self/auxv").unwrap_or_default();
        (
            auxv_value(&aux, AT_CLKTCK).unwrap_or(FALLBACK_TICKS),
            auxv_value(&aux, AT_PAGESZ).unwrap_or(FALLBACK_PAGE),
        )
    })
}

const AT_PAGESZ: u64 = 6;
const AT_CLKTCK: u64 = 17;

/// The value of entry `key` of an auxiliary vector: pairs of native-endian
/// words (type, value), ended by type 0 (`AT_NULL`). Zero is no answer.
pub(crate) fn auxv_value(aux: &[u8], key: u64) -> Option<u64> {
    const W: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> Option<u64> {
        let mut buf = [0u8; W];
        buf.copy_from_slice(b.get(..W)?);
        Some(usize::from_ne_bytes(buf) as u64)
    };
    for pair in aux.chunks_exact(2 * W) {
        let (k, v) = (word(pair)?, word(&pair[W..])?);
        if k == 0 {
            break;
        }
        if k == key {
            return (v > 0).then_some(v);
        }
    }
    None
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
pub(crate) fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of `Max open files` from `/proc/self/limits`; `None` when
/// it is `unlimited` or missing.
pub(crate) fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Exports the `process_*` families at every scrape (registered by
/// [`Metrics::new`](crate::Metrics::new) in the unprefixed root registry).
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = ProcessStats::read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(s.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                s.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                // Unlimited is RLIM_INFINITY, as the Go client reports it
                // (the encoder would write infinity as `inf`, which the
                // exposition formats do not accept).
                s.max_fds.map_or(u64::MAX as f64, |n| n as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                s.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                s.threads as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The process's CPU use over the last interval of at least
/// [`ProcessSampler::MIN_INTERVAL`], for the monitoring API: it keeps the
/// previous reading, so a caller polling every few seconds sees the CPU of
/// the last few seconds.
#[derive(Debug, Default)]
pub struct ProcessSampler {
    state: Mutex<SamplerState>,
}

#[derive(Debug, Default)]
struct SamplerState {
    /// The start of the interval being measured: when, and CPU seconds then.
    base: Option<(Instant, f64)>,
    /// The last complete measurement: percent and its interval in seconds.
    last: Option<(f64, f64)>,
}

/// One reading of the process, with its CPU use.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessSample {
    /// CPU use in percent of one core (200 = two cores busy), over
    /// `cpu_interval_seconds`.
    pub cpu_percent: f64,
    /// The interval `cpu_percent` covers: since the previous sample, or
    /// since the process started for the first one.
    pub cpu_interval_seconds: f64,
    /// Total user and system CPU time, in seconds.
    pub cpu_seconds_total: f64,
    /// Cores this process may use.
    pub cpus: usize,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// OS threads.
    pub threads: u64,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
}

impl ProcessSampler {
    /// Shortest interval a CPU percentage is computed over; a sample taken
    /// sooner reports the previous interval's figure again.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

    /// Reads the process now; `None` where `/proc` is not available.
    pub fn sample(&self) -> Option<ProcessSample> {
        let stats = ProcessStats::read()?;
        Some(self.sample_from(stats, Instant::now(), SystemTime::now()))
    }

    /// [`sample`](Self::sample) with the reading and the clocks given.
    pub(crate) fn sample_from(
        &self,
        s: ProcessStats,
        now: Instant,
        wall: SystemTime,
    ) -> ProcessSample {
        let uptime = s.uptime(wall);
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (percent, interval) = match st.base {
            Some((at, cpu)) if now.duration_since(at) >= Self::MIN_INTERVAL => {
                let secs = now.duration_since(at).as_secs_f64();
                let m = (100.0 * (s.cpu_seconds - cpu).max(0.0) / secs, secs);
                st.base = Some((now, s.cpu_seconds));
                st.last = Some(m);
                m
            }
            Some(_) => st.last.unwrap_or((0.0, 0.0)),
            None => {
                // The first sample: the average since the process started.
                let m = if uptime > 0.0 {
                    (100.0 * s.cpu_seconds / uptime, uptime)
                } else {
                    (0.0, 0.0)
                };
                st.base = Some((now, s.cpu_seconds));
                st.last = Some(m);
                m
            }
        };
        ProcessSample {
            cpu_percent: percent,
            cpu_interval_seconds: interval,
            cpu_seconds_total: s.cpu_seconds,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            resident_memory_bytes: s.resident_bytes,
            virtual_memory_bytes: s.virtual_bytes,
            open_fds: s.open_fds,
            max_fds: s.max_fds,
            threads: s.threads,
            uptime_seconds: uptime,
        }
    }
}

#[cfg(test)]
mod tests;
