//! The process metrics every Prometheus client library exports, read from `/proc` at each
//! scrape: `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_cpu_seconds_total`, `process_start_time_seconds`, `process_open_fds` and
//! `process_max_fds`, with the names and meanings of the client libraries' process collectors,
//! so existing dashboards work. Where `/proc` is not there (not Linux), none are exported.
//! (A collector's HELP is written as is; the registry's metrics get their full stop added.)

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Clock ticks per second in `/proc/*/stat` (USER_HZ, 100 on every Linux architecture's ABI).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug)]
pub struct ProcessCollector {
    /// When the process started, in seconds since the epoch (fixed for its life).
    start_time: Option<f64>,
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        ProcessCollector {
            start_time: start_time(),
        }
    }
}

/// The fields of `/proc/self/stat` after the command name, which may hold spaces.
fn stat_fields() -> Option<Vec<String>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Seconds since the epoch the process started: boot time plus its start in ticks.
fn start_time() -> Option<f64> {
    // Field 22 of stat; fields after the name start at 3, so index 19 here.
    let ticks: f64 = stat_fields()?.get(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + ticks / TICKS_PER_SECOND)
}

/// A `/proc/self/status` size in bytes (`VmRSS:  1234 kB`).
fn status_bytes(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

fn cpu_seconds() -> Option<f64> {
    let fields = stat_fields()?;
    // utime and stime: fields 14 and 15, so 11 and 12 here.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

fn open_fds() -> Option<f64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                status_bytes("VmRSS:"),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                status_bytes("VmSize:"),
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                self.start_time,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                open_fds(),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                max_fds(),
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            let metric =
                encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        if let Some(seconds) = cpu_seconds() {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
