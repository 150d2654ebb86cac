//! The host's memory as `/proc/meminfo` tells it (parsed here, read by the runtime), so paused
//! sandboxes can be written to disk when it runs short.

use coppice_core::runtime::HostMemory;

/// Where the kernel tells it.
pub const MEMINFO: &str = "/proc/meminfo";

/// `MemTotal` and `MemAvailable` of a `/proc/meminfo` text; `None` without both.
pub fn parse(text: &str) -> Option<HostMemory> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            kib.checked_mul(1024)
        })
    };
    Some(HostMemory {
        total_bytes: field("MemTotal")?,
        available_bytes: field("MemAvailable")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_reads_total_and_available_in_bytes() {
        let text = "MemTotal:       24672624 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\nBuffers:           12 kB\n";
        assert_eq!(
            parse(text),
            Some(HostMemory {
                total_bytes: 24_672_624 * 1024,
                available_bytes: 20_000_000 * 1024,
            })
        );
    }

    #[test]
    fn test_parse_without_available_is_none() {
        assert_eq!(parse("MemTotal: 10 kB\nMemFree: 5 kB\n"), None);
        assert_eq!(parse("MemTotalish: 10 kB\nMemAvailable: 5 kB\n"), None);
    }

    #[test]
    fn test_parse_of_this_host() {
        let text = std::fs::read_to_string(MEMINFO).expect("meminfo");
        let memory = parse(&text).expect("parsed");
        assert!(memory.available_bytes <= memory.total_bytes);
    }
}
