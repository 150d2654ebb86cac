//! `GET /metrics`: CPU, memory and disk use as the sandbox sees them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One sample, in E2B's field names.
#[derive(Debug, Serialize)]
pub struct Sample {
    ts: u64,
    cpu_count: usize,
    cpu_used_pct: f64,
    mem_total: u64,
    mem_used: u64,
    mem_cache: u64,
    mem_total_mib: u64,
    mem_used_mib: u64,
    disk_used: u64,
    disk_total: u64,
}

/// Takes a sample (blocks ~100 ms to measure CPU use).
#[must_use]
pub fn sample() -> Sample {
    let before = cpu_times();
    std::thread::sleep(Duration::from_millis(100));
    let after = cpu_times();
    let cpu_used_pct = match (before, after) {
        (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
            #[allow(clippy::cast_precision_loss)]
            let pct = (busy1.saturating_sub(busy0)) as f64 / (total1 - total0) as f64 * 100.0;
            (pct * 100.0).round() / 100.0
        }
        _ => 0.0,
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let mem_total = field("MemTotal");
    let mem_available = field("MemAvailable");
    let mem_cache = field("Cached");
    let mem_used = mem_total.saturating_sub(mem_available);
    let (disk_used, disk_total) = rustix::fs::statvfs("/").map_or((0, 0), |stats| {
        let total = stats.f_blocks * stats.f_frsize;
        let free = stats.f_bfree * stats.f_frsize;
        (total.saturating_sub(free), total)
    });
    Sample {
        ts: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        cpu_count: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        cpu_used_pct,
        mem_total,
        mem_used,
        mem_cache,
        mem_total_mib: mem_total >> 20,
        mem_used_mib: mem_used >> 20,
        disk_used,
        disk_total,
    }
}

/// (busy, total) jiffies from the first line of `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}
