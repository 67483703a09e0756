//! The standard `process_*` metrics of Prometheus client libraries, read from `/proc/self` at
//! each scrape: CPU time, memory, file descriptors, threads and start time.

use procfs::process::{LimitValue, Process};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Registers the `process_*` metrics (unprefixed, as every Prometheus client names them).
pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

#[derive(Debug)]
struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    open_fds: i64,
    max_fds: i64,
    threads: i64,
    start_time_seconds: f64,
}

fn read() -> procfs::ProcResult<Reading> {
    let me = Process::myself()?;
    let stat = me.stat()?;
    let ticks = procfs::ticks_per_second() as f64;
    let max_fds = match me.limits()?.max_open_files.soft_limit {
        LimitValue::Value(n) => i64::try_from(n).unwrap_or(i64::MAX),
        LimitValue::Unlimited => i64::MAX,
    };
    let start = procfs::boot_time_secs()? as f64 + stat.starttime as f64 / ticks;
    Ok(Reading {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: i64::try_from(stat.rss.saturating_mul(procfs::page_size()))
            .unwrap_or(i64::MAX),
        virtual_bytes: i64::try_from(stat.vsize).unwrap_or(i64::MAX),
        open_fds: i64::try_from(me.fd_count()?).unwrap_or(i64::MAX),
        max_fds,
        threads: stat.num_threads,
        start_time_seconds: start,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // A scrape must not fail because /proc could not be read: the metrics are left out.
        let Ok(r) = read() else {
            return Ok(());
        };
        let seconds = Some(&Unit::Seconds);
        let bytes = Some(&Unit::Bytes);
        counter(
            &mut encoder,
            "process_cpu",
            "Total user and system CPU time",
            seconds,
            r.cpu_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            bytes,
            r.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory",
            "Virtual memory size",
            bytes,
            r.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            None,
            r.open_fds,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Limit of open file descriptors",
            None,
            r.max_fds,
        )?;
        gauge(
            &mut encoder,
            "process_threads",
            "OS threads",
            None,
            r.threads,
        )?;
        let start = ConstGauge::new(r.start_time_seconds);
        let metric = encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            seconds,
            start.metric_type(),
        )?;
        start.encode(metric)
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, counter.metric_type())?;
    counter.encode(metric)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
    gauge.encode(metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_itself() {
        let r = read().unwrap();
        assert!(r.resident_bytes > 1 << 20, "{r:?}");
        assert!(r.open_fds >= 3 && r.open_fds <= r.max_fds, "{r:?}");
        assert!(r.threads >= 1, "{r:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started within the last day, not in the future (to the clock tick).
        assert!(
            r.start_time_seconds <= now + 1.0 && r.start_time_seconds > now - 86_400.0,
            "{r:?}"
        );
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
