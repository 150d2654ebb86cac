//! A sandbox's resource limits as rctl(8) rules on its jail: memory, CPU and processes, each
//! denied beyond its limit. Added with `rctl -a <rule>`, removed together with
//! `rctl -r jail:<name>` (what [`removal_filter`] gives), so nothing stays behind the jail.

use crate::params::JailName;

/// The limits a sandbox's jail runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JailLimits {
    /// Resident memory, in MiB.
    pub memory_mb: u32,
    /// CPUs' worth of time, as a count of whole vCPUs.
    pub vcpus: u32,
    /// Processes.
    pub max_procs: u32,
}

/// The rctl rules for `jail` under `limits`, in the order they are added.
pub fn rules(jail: &JailName, limits: JailLimits) -> Vec<String> {
    let subject = format!("jail:{}", jail.as_str());
    let memory_bytes = u64::from(limits.memory_mb) << 20;
    // pcpu is a percentage of one CPU.
    let pcpu = u64::from(limits.vcpus.max(1)) * 100;
    vec![
        format!("{subject}:memoryuse:deny={memory_bytes}"),
        format!("{subject}:pcpu:deny={pcpu}"),
        format!("{subject}:maxproc:deny={}", limits.max_procs.max(1)),
    ]
}

/// The filter that removes every rule of `jail`.
pub fn removal_filter(jail: &JailName) -> String {
    format!("jail:{}", jail.as_str())
}

/// `rctl -u jail:<name>`: the jail's resource use.
pub fn usage_command(jail: &JailName) -> Vec<String> {
    vec!["rctl".into(), "-u".into(), removal_filter(jail)]
}

/// What a jail uses now, from [`usage_command`]'s output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JailUsage {
    /// Resident memory, in bytes.
    pub memory_bytes: u64,
    /// Processes.
    pub processes: u64,
}

/// Reads `resource=amount` lines; resources it does not use and malformed lines are skipped
/// (rctl prints every resource it accounts, and adds new ones between releases).
pub fn parse_usage(output: &str) -> JailUsage {
    let mut usage = JailUsage::default();
    for (resource, amount) in output
        .lines()
        .filter_map(|line| line.trim().split_once('='))
    {
        let Ok(amount) = amount.parse::<u64>() else {
            continue;
        };
        match resource {
            "memoryuse" => usage.memory_bytes = amount,
            "maxproc" => usage.processes = amount,
            _ => {}
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_usage_reads_memory_and_processes() {
        let jail = JailName::parse("sbx-a1").unwrap();
        assert_eq!(usage_command(&jail), ["rctl", "-u", "jail:sbx-a1"]);
        let output = "cputime=3\ndatasize=12288\nmemoryuse=52428800\nmaxproc=4\nopenfiles=37\n";
        assert_eq!(
            parse_usage(output),
            JailUsage {
                memory_bytes: 52_428_800,
                processes: 4
            }
        );
        assert_eq!(parse_usage(""), JailUsage::default());
        assert_eq!(
            parse_usage("memoryuse=lots\nmaxproc\nfuture=1\nmaxproc=2"),
            JailUsage {
                memory_bytes: 0,
                processes: 2
            }
        );
    }

    #[test]
    fn test_rules_for_limits() {
        let jail = JailName::parse("sbx-a1").unwrap();
        let cases = [
            (
                JailLimits {
                    memory_mb: 512,
                    vcpus: 2,
                    max_procs: 1024,
                },
                [
                    "jail:sbx-a1:memoryuse:deny=536870912",
                    "jail:sbx-a1:pcpu:deny=200",
                    "jail:sbx-a1:maxproc:deny=1024",
                ],
            ),
            (
                // A zero is never a limit that lets nothing run.
                JailLimits {
                    memory_mb: 128,
                    vcpus: 0,
                    max_procs: 0,
                },
                [
                    "jail:sbx-a1:memoryuse:deny=134217728",
                    "jail:sbx-a1:pcpu:deny=100",
                    "jail:sbx-a1:maxproc:deny=1",
                ],
            ),
        ];
        for (limits, expected) in cases {
            assert_eq!(rules(&jail, limits), expected);
        }
        assert_eq!(removal_filter(&jail), "jail:sbx-a1");
    }
}
