//! The last step of PID 1's set-up: capabilities, `no_new_privs` and a seccomp filter, in
//! that order, inherited by every process of the sandbox.
//!
//! The user namespace already denies sandbox root any power over host resources (the host's
//! own namespaces are out of reach, and the mounts the host made are locked, until a restore
//! makes them again from inside, after which this layer keeps them). This layer is defence in depth: it takes
//! away the capabilities a container never needs and refuses the system calls behind
//! namespace, mount, module, key-ring and BPF attacks, so a kernel bug reachable only through
//! them is not reachable from a sandbox.

use std::collections::BTreeMap;

use rustix::thread::{
    CapabilitySet, CapabilitySets, remove_capability_from_bounding_set, set_capabilities,
    set_no_new_privs,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, apply_filter,
};

/// Capabilities sandbox root keeps (the usual container default, without `MKNOD` and
/// `NET_RAW`).
fn kept_capabilities() -> CapabilitySet {
    CapabilitySet::CHOWN
        | CapabilitySet::DAC_OVERRIDE
        | CapabilitySet::FOWNER
        | CapabilitySet::FSETID
        | CapabilitySet::KILL
        | CapabilitySet::SETGID
        | CapabilitySet::SETUID
        | CapabilitySet::SETPCAP
        | CapabilitySet::NET_BIND_SERVICE
        | CapabilitySet::SYS_CHROOT
        | CapabilitySet::SETFCAP
        | CapabilitySet::AUDIT_WRITE
}

/// System calls refused with `EPERM`.
const DENIED_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_open_by_handle_at,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_syslog,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_vhangup,
];

/// `clone` flags that create namespaces; `clone` with any of them is refused.
const NAMESPACE_FLAGS: [libc::c_int; 8] = [
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
    0x80, // CLONE_NEWTIME
];

/// Drops capabilities, sets `no_new_privs` and installs the seccomp filters.
pub(super) fn lock_down() -> Result<(), String> {
    let kept = kept_capabilities();
    for capability in CapabilitySet::all().iter().filter(|c| !kept.contains(*c)) {
        match remove_capability_from_bounding_set(capability) {
            // Capabilities newer than the running kernel do not exist to be dropped.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(error) => {
                return Err(format!(
                    "drop capability {capability:?} from the bounding set: {error}"
                ));
            }
        }
    }
    set_capabilities(
        None,
        CapabilitySets {
            effective: kept,
            permitted: kept,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| format!("set capabilities: {e}"))?;
    set_no_new_privs(true).map_err(|e| format!("no_new_privs: {e}"))?;
    let (clone3, denylist) = filters()?;
    // clone3 cannot be filtered by flags (they sit behind a pointer): answer ENOSYS so libc
    // falls back to clone, whose flags the second filter checks.
    apply_filter(&clone3).map_err(|e| format!("install clone3 filter: {e}"))?;
    apply_filter(&denylist).map_err(|e| format!("install seccomp filter: {e}"))
}

fn arch() -> Result<TargetArch, String> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp does not support this architecture: {e:?}"))
}

fn filters() -> Result<(BpfProgram, BpfProgram), String> {
    let arch = arch()?;
    let mut clone3_rules = BTreeMap::new();
    clone3_rules.insert(libc::SYS_clone3, Vec::new());
    let clone3 = SeccompFilter::new(
        clone3_rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| format!("build clone3 filter: {e}"))?;

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED_SYSCALLS.iter().map(|nr| (*nr, Vec::new())).collect();
    let mut clone_rules = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let flag = u64::from(flag.unsigned_abs());
        let condition = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .map_err(|e| format!("build clone rule: {e}"))?;
        clone_rules
            .push(SeccompRule::new(vec![condition]).map_err(|e| format!("build clone rule: {e}"))?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let denylist = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| format!("build seccomp filter: {e}"))?;
    Ok((clone3, denylist))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_filters_compile_for_this_architecture() {
        let (clone3, denylist) = filters().unwrap();
        assert!(!clone3.is_empty());
        assert!(denylist.len() > DENIED_SYSCALLS.len());
    }

    #[test]
    fn test_kept_capabilities_exclude_admin_raw_and_module() {
        let kept = kept_capabilities();
        for dangerous in [
            CapabilitySet::SYS_ADMIN,
            CapabilitySet::NET_RAW,
            CapabilitySet::SYS_MODULE,
            CapabilitySet::NET_ADMIN,
            CapabilitySet::SYS_PTRACE,
        ] {
            assert!(!kept.contains(dangerous), "{dangerous:?}");
        }
    }
}
