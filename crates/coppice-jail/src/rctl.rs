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

#[cfg(test)]
mod tests {
    use super::*;

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
