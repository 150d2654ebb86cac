//! A VM's network card on the host: bhyve's netgraph backend plugged into an `ng_bridge`
//! node of the VM's own. The node lives from before the VM boots until it is destroyed; the
//! sandbox's link (the jail end of its epair, whose `ng_ether` node has a `lower` hook) is
//! connected to it when the sandbox gets its network, which for a pooled VM is long after
//! its boot. Frames then flow VM ⇄ bridge node ⇄ epair ⇄ the host bridge, where the sandbox's
//! pf anchor and member guard apply exactly as for a jail. Needs `ng_ether` and `ng_bridge`
//! loaded. Scripts for `ngctl -f -`; nothing here runs them.

/// The netgraph node of VM `vm`. Netgraph names hold at most 31 bytes, so the node is
/// named by a hash of the VM's name.
pub fn node_name(vm: &str) -> String {
    let hash = vm.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("cpvm{:012x}", hash & 0xffff_ffff_ffff)
}

/// The hook bhyve connects to.
pub const VM_HOOK: &str = "link0";
/// The hook the sandbox's link is connected to.
const LINK_HOOK: &str = "link1";
/// The hook `ngctl` holds while it names the new node (then let go).
const BOOT_HOOK: &str = "link2";

/// Makes VM `vm`'s bridge node, persistent (it would go with its last hook otherwise),
/// named, and free of the `ngctl` socket that made it.
pub fn create(vm: &str) -> String {
    let node = node_name(vm);
    format!(
        "mkpeer . bridge {node}b {BOOT_HOOK}\n\
         name .:{node}b {node}\n\
         msg {node}: setpersistent\n\
         rmhook . {node}b\n"
    )
}

/// Connects interface `interface` (the sandbox's epair end, which must be up) to VM `vm`'s
/// bridge node. The interface passes every frame (promiscuous: the VM's MAC is not its own)
/// and leaves their source addresses alone (no `autosrc`), so the host bridge learns the
/// VM's MAC and sends its frames to this member only.
pub fn attach(vm: &str, interface: &str) -> String {
    format!(
        "msg {interface}: setpromisc 1\n\
         msg {interface}: setautosrc 0\n\
         connect {}: {interface}: {LINK_HOOK} lower\n",
        node_name(vm)
    )
}

/// Removes VM `vm`'s bridge node and every connection it has.
pub fn shutdown(vm: &str) -> String {
    format!("shutdown {}:\n", node_name(vm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_scripts_for_a_vms_bridge_node() {
        let node = node_name("coppice-a1b2c3d4e5f6g7h8i9j0");
        assert_eq!(node.len(), 16, "{node}");
        assert_ne!(node, node_name("coppice-a1b2c3d4e5f6g7h8i9j1"));
        assert_eq!(
            create("coppice-a1b2c3d4e5f6g7h8i9j0"),
            format!(
                "mkpeer . bridge {node}b link2\n\
                 name .:{node}b {node}\n\
                 msg {node}: setpersistent\n\
                 rmhook . {node}b\n"
            )
        );
        assert_eq!(
            attach("coppice-a1b2c3d4e5f6g7h8i9j0", "cpj7"),
            format!(
                "msg cpj7: setpromisc 1\nmsg cpj7: setautosrc 0\nconnect {node}: cpj7: link1 lower\n"
            )
        );
        assert_eq!(
            shutdown("coppice-a1b2c3d4e5f6g7h8i9j0"),
            format!("shutdown {node}:\n")
        );
    }
}
