//! The command lines of a VM: `bhyveload` (FreeBSD guests booted without firmware),
//! `bhyve` itself, and `bhyvectl --destroy`.
//!
//! Slot layout: 0 host bridge, 1 LPC (serial console, boot ROM), 2 the disk, 3 the NIC,
//! 4 the framebuffer, 5 the USB tablet that follows the VNC pointer, 6 the seed disk (the
//! sandbox's identity and network for the guest agent, see [`crate::seed`]), 7 and up
//! passed-through PCI devices. Guests are Windows or not: Windows has no virtio drivers out of the box, so
//! it gets an AHCI disk and an e1000 NIC.

use std::fmt;
use std::path::PathBuf;

/// What runs in the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// A Linux guest: virtio devices, UEFI.
    Linux,
    /// A FreeBSD guest: virtio devices, booted by `bhyveload` or UEFI.
    FreeBsd,
    /// A Windows guest: AHCI and e1000, UEFI, a framebuffer.
    Windows,
}

/// How the VM boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// UEFI firmware, with a per-VM copy of its variable store.
    Uefi {
        /// The firmware (`/usr/local/share/uefi-firmware/BHYVE_UEFI.fd`).
        firmware: PathBuf,
        /// The VM's own variables file.
        vars: PathBuf,
    },
    /// `bhyveload` loads a FreeBSD kernel from the disk first.
    BhyveLoad,
}

/// A graphical console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framebuffer {
    /// The VNC port on the host's loopback.
    pub vnc_port: u16,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Hold the guest until a VNC client connects.
    pub wait: bool,
}

/// Where a VM's network card is plugged in on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicBackend {
    /// A tap interface.
    Tap(String),
    /// A hook of a netgraph node: the VM's own `ng_bridge`, which the sandbox's link joins
    /// when it is attached (see [`crate::netgraph`]).
    Netgraph {
        /// The node's name.
        node: String,
        /// The hook bhyve connects to.
        hook: String,
    },
}

/// A VM's network card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Where it is plugged in.
    pub backend: NicBackend,
    /// Its MAC address.
    pub mac: String,
}

/// A PCI device of the host, `bus/slot/function`, passed through (e.g. a GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAddress {
    /// Bus.
    pub bus: u8,
    /// Slot.
    pub slot: u8,
    /// Function.
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.bus, self.slot, self.function)
    }
}

/// A VM's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The VM's name (also its `/dev/vmm` entry).
    pub name: String,
    /// The guest.
    pub guest: Guest,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// The disk: a zvol clone's device node.
    pub disk: PathBuf,
    /// The seed disk the guest agent reads its sandbox from, read-only.
    pub seed: Option<PathBuf>,
    /// Its network card; none for a VM without network.
    pub nic: Option<Nic>,
    /// The serial console's nmdm device (host side, `/dev/nmdm<N>A`); none without one
    /// (bhyve wants a terminal there).
    pub console: Option<PathBuf>,
    /// How it boots.
    pub boot: Boot,
    /// A framebuffer behind VNC, if any.
    pub framebuffer: Option<Framebuffer>,
    /// PCI devices passed through.
    pub passthru: Vec<PciAddress>,
}

/// A shape bhyve cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmSpecError {
    /// `bhyveload` loads only FreeBSD kernels.
    #[error("only FreeBSD guests boot with bhyveload; {0:?} guests need UEFI")]
    BhyveLoadNeedsFreeBsd(Guest),
    /// Windows has no serial console to install from.
    #[error("a Windows guest needs a framebuffer")]
    WindowsNeedsFramebuffer,
    /// Out of PCI slots (slots 7 to 31).
    #[error("at most 25 devices can be passed through, not {0}")]
    TooManyPassthru(usize),
    /// A VM needs at least one vCPU and some memory.
    #[error("a VM needs at least one vCPU and 32 MiB of memory")]
    TooSmall,
    /// bhyve names VMs in `/dev/vmm`: no `/`, and not empty.
    #[error("{0:?} cannot name a VM")]
    BadName(String),
}

const SEED_SLOT: usize = 6;
const FIRST_PASSTHRU_SLOT: usize = 7;
const LAST_SLOT: usize = 31;

fn check(spec: &VmSpec) -> Result<(), VmSpecError> {
    if spec.name.is_empty()
        || spec.name.len() > 229
        || !spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(VmSpecError::BadName(spec.name.clone()));
    }
    if spec.vcpus == 0 || spec.memory_mb < 32 {
        return Err(VmSpecError::TooSmall);
    }
    if spec.boot == Boot::BhyveLoad && spec.guest != Guest::FreeBsd {
        return Err(VmSpecError::BhyveLoadNeedsFreeBsd(spec.guest));
    }
    if spec.guest == Guest::Windows && spec.framebuffer.is_none() {
        return Err(VmSpecError::WindowsNeedsFramebuffer);
    }
    if spec.passthru.len() > LAST_SLOT + 1 - FIRST_PASSTHRU_SLOT {
        return Err(VmSpecError::TooManyPassthru(spec.passthru.len()));
    }
    Ok(())
}

/// `bhyveload` for a FreeBSD guest booted without firmware; `None` for UEFI.
///
/// # Errors
/// A shape bhyve cannot run.
pub fn bhyveload(spec: &VmSpec) -> Result<Option<Vec<String>>, VmSpecError> {
    check(spec)?;
    if spec.boot != Boot::BhyveLoad {
        return Ok(None);
    }
    let mut args: Vec<String> = vec!["bhyveload".into()];
    if let Some(console) = &spec.console {
        args.extend(["-c".into(), console.display().to_string()]);
    }
    args.extend([
        "-m".into(),
        format!("{}M", spec.memory_mb),
        "-d".into(),
        spec.disk.display().to_string(),
        spec.name.clone(),
    ]);
    Ok(Some(args))
}

/// `bhyve` for `spec`.
///
/// `-H` yields the vCPU on `hlt` and `-w` ignores unknown MSR accesses (Windows reads
/// some); `-A` builds ACPI tables; `-D` frees the VM when its guest powers off, so no
/// `/dev/vmm` entry outlives its bhyve; `-S` wires guest memory, which passthrough requires.
///
/// # Errors
/// A shape bhyve cannot run.
pub fn bhyve(spec: &VmSpec) -> Result<Vec<String>, VmSpecError> {
    check(spec)?;
    let mut args: Vec<String> = vec![
        "bhyve".into(),
        "-c".into(),
        spec.vcpus.to_string(),
        "-m".into(),
        format!("{}M", spec.memory_mb),
        "-H".into(),
        "-w".into(),
        "-A".into(),
        "-D".into(),
    ];
    if !spec.passthru.is_empty() {
        args.push("-S".into());
    }
    let mut slot = |device: String| {
        args.push("-s".into());
        args.push(device);
    };
    slot("0,hostbridge".into());
    slot("1,lpc".into());
    let disk = spec.disk.display();
    let windows = spec.guest == Guest::Windows;
    slot(if windows {
        format!("2,ahci-hd,{disk}")
    } else {
        format!("2,virtio-blk,{disk}")
    });
    if let Some(nic) = &spec.nic {
        let model = if windows { "e1000" } else { "virtio-net" };
        let backend = match &nic.backend {
            NicBackend::Tap(tap) => tap.clone(),
            NicBackend::Netgraph { node, hook } => {
                format!("netgraph,path={node}:,peerhook={hook}")
            }
        };
        slot(format!("3,{model},{backend},mac={}", nic.mac));
    }
    if let Some(fb) = &spec.framebuffer {
        let wait = if fb.wait { ",wait" } else { "" };
        slot(format!(
            "4,fbuf,tcp=127.0.0.1:{},w={},h={}{wait}",
            fb.vnc_port, fb.width, fb.height
        ));
        slot("5,xhci,tablet".into());
    }
    if let Some(seed) = &spec.seed {
        slot(format!("{SEED_SLOT},virtio-blk,{},ro", seed.display()));
    }
    for (offset, device) in spec.passthru.iter().enumerate() {
        slot(format!(
            "{}:0,passthru,{device}",
            FIRST_PASSTHRU_SLOT + offset
        ));
    }
    if let Some(console) = &spec.console {
        args.push("-l".into());
        args.push(format!("com1,{}", console.display()));
    }
    if let Boot::Uefi { firmware, vars } = &spec.boot {
        args.push("-l".into());
        args.push(format!("bootrom,{},{}", firmware.display(), vars.display()));
    }
    args.push(spec.name.clone());
    Ok(args)
}

/// `bhyvectl --destroy --vm=<name>`: frees the VM's memory and its `/dev/vmm` entry.
pub fn destroy(name: &str) -> Vec<String> {
    vec![
        "bhyvectl".into(),
        "--destroy".into(),
        format!("--vm={name}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux() -> VmSpec {
        VmSpec {
            name: "sbx-a1".into(),
            guest: Guest::Linux,
            vcpus: 2,
            memory_mb: 1024,
            disk: "/dev/zvol/zroot/coppice/vms/a1".into(),
            seed: None,
            nic: Some(Nic {
                backend: NicBackend::Tap("tap7".into()),
                mac: "02:c0:ff:ee:00:07".into(),
            }),
            console: Some("/dev/nmdm7A".into()),
            boot: Boot::Uefi {
                firmware: "/usr/local/share/uefi-firmware/BHYVE_UEFI.fd".into(),
                vars: "/var/db/coppice/vms/a1/vars.fd".into(),
            },
            framebuffer: None,
            passthru: Vec::new(),
        }
    }

    fn windows() -> VmSpec {
        VmSpec {
            guest: Guest::Windows,
            framebuffer: Some(Framebuffer {
                vnc_port: 5907,
                width: 1280,
                height: 720,
                wait: false,
            }),
            ..linux()
        }
    }

    const HEAD: &str = "bhyve -c 2 -m 1024M -H -w -A -D";
    const TAIL: &str = "-l com1,/dev/nmdm7A -l bootrom,/usr/local/share/uefi-firmware/BHYVE_UEFI.fd,/var/db/coppice/vms/a1/vars.fd sbx-a1";

    #[test]
    fn test_bhyve_argv_for_each_shape() {
        let gpu = VmSpec {
            passthru: vec![
                PciAddress {
                    bus: 1,
                    slot: 0,
                    function: 0,
                },
                PciAddress {
                    bus: 1,
                    slot: 0,
                    function: 1,
                },
            ],
            ..linux()
        };
        let cases = [
            (
                "linux",
                linux(),
                format!(
                    "{HEAD} -s 0,hostbridge -s 1,lpc -s 2,virtio-blk,/dev/zvol/zroot/coppice/vms/a1 \
                     -s 3,virtio-net,tap7,mac=02:c0:ff:ee:00:07 {TAIL}"
                ),
            ),
            (
                "windows",
                windows(),
                format!(
                    "{HEAD} -s 0,hostbridge -s 1,lpc -s 2,ahci-hd,/dev/zvol/zroot/coppice/vms/a1 \
                     -s 3,e1000,tap7,mac=02:c0:ff:ee:00:07 \
                     -s 4,fbuf,tcp=127.0.0.1:5907,w=1280,h=720 -s 5,xhci,tablet {TAIL}"
                ),
            ),
            (
                "gpu",
                gpu,
                format!(
                    "{HEAD} -S -s 0,hostbridge -s 1,lpc -s 2,virtio-blk,/dev/zvol/zroot/coppice/vms/a1 \
                     -s 3,virtio-net,tap7,mac=02:c0:ff:ee:00:07 \
                     -s 7:0,passthru,1/0/0 -s 8:0,passthru,1/0/1 {TAIL}"
                ),
            ),
        ];
        for (name, spec, expected) in cases {
            assert_eq!(bhyve(&spec).unwrap().join(" "), expected, "{name}");
            assert_eq!(bhyveload(&spec).unwrap(), None, "{name}");
        }
    }

    #[test]
    fn test_a_sandbox_vm_has_its_netgraph_nic_and_seed_disk() {
        let spec = VmSpec {
            seed: Some("/var/db/coppice/run/a1/seed.img".into()),
            nic: Some(Nic {
                backend: NicBackend::Netgraph {
                    node: "cpvm_a1".into(),
                    hook: "link0".into(),
                },
                mac: "02:c0:ff:ee:00:07".into(),
            }),
            ..linux()
        };
        let argv = bhyve(&spec).unwrap().join(" ");
        assert!(
            argv.contains(
                "-s 3,virtio-net,netgraph,path=cpvm_a1:,peerhook=link0,mac=02:c0:ff:ee:00:07 \
                 -s 6,virtio-blk,/var/db/coppice/run/a1/seed.img,ro -l com1"
            ),
            "{argv}"
        );
        let offline = bhyve(&VmSpec {
            nic: None,
            ..linux()
        })
        .unwrap()
        .join(" ");
        assert!(!offline.contains("-s 3,"), "{offline}");
    }

    #[test]
    fn test_freebsd_guest_with_bhyveload() {
        let spec = VmSpec {
            guest: Guest::FreeBsd,
            boot: Boot::BhyveLoad,
            ..linux()
        };
        assert_eq!(
            bhyveload(&spec).unwrap().unwrap().join(" "),
            "bhyveload -c /dev/nmdm7A -m 1024M -d /dev/zvol/zroot/coppice/vms/a1 sbx-a1"
        );
        let argv = bhyve(&spec).unwrap().join(" ");
        assert!(argv.ends_with("-l com1,/dev/nmdm7A sbx-a1"), "{argv}");
        assert!(!argv.contains("bootrom"));
        assert_eq!(
            destroy("sbx-a1").join(" "),
            "bhyvectl --destroy --vm=sbx-a1"
        );
    }

    #[test]
    fn test_shapes_bhyve_cannot_run() {
        let cases = [
            (
                VmSpec {
                    boot: Boot::BhyveLoad,
                    ..linux()
                },
                VmSpecError::BhyveLoadNeedsFreeBsd(Guest::Linux),
            ),
            (
                VmSpec {
                    framebuffer: None,
                    ..windows()
                },
                VmSpecError::WindowsNeedsFramebuffer,
            ),
            (
                VmSpec {
                    passthru: vec![
                        PciAddress {
                            bus: 1,
                            slot: 0,
                            function: 0
                        };
                        26
                    ],
                    ..linux()
                },
                VmSpecError::TooManyPassthru(26),
            ),
            (
                VmSpec {
                    vcpus: 0,
                    ..linux()
                },
                VmSpecError::TooSmall,
            ),
            (
                VmSpec {
                    memory_mb: 16,
                    ..linux()
                },
                VmSpecError::TooSmall,
            ),
            (
                VmSpec {
                    name: "a/b".into(),
                    ..linux()
                },
                VmSpecError::BadName("a/b".into()),
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(bhyve(&spec).unwrap_err(), expected);
            assert_eq!(bhyveload(&spec).unwrap_err(), expected);
        }
    }
}
