//! A VM's network card on the host: bhyve's netgraph backend plugged into an `ng_bridge`
//! node of the VM's own. The node lives from before the VM boots until it is destroyed; the
//! sandbox's link (the jail end of its epair, whose `ng_ether` node has a `lower` hook) is
//! connected to it when the sandbox gets its network, which for a pooled VM is long after
//! its boot. Frames then flow VM ⇄ bridge node ⇄ epair ⇄ the host bridge, where the sandbox's
//! pf anchor and member guard apply exactly as for a jail. Needs `ng_ether` and `ng_bridge`
//! loaded. Scripts for `ngctl -f -`; nothing here runs them.

/// The netgraph node of VM `vm`.
pub fn node_name(vm: &str) -> String {
    format!("cpvm_{}", vm.replace(['.', ':', '[', ']'], "_"))
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
        "mkpeer . bridge {node}_boot {BOOT_HOOK}\n\
         name .:{node}_boot {node}\n\
         msg {node}: setpersistent\n\
         rmhook . {node}_boot\n"
    )
}

/// Connects interface `interface` (the sandbox's epair end) to VM `vm`'s bridge node.
pub fn attach(vm: &str, interface: &str) -> String {
    format!(
        "connect {}: {interface}: {LINK_HOOK} lower\n",
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
        assert_eq!(node_name("coppice-a1"), "cpvm_coppice-a1");
        assert_eq!(
            create("coppice-a1"),
            "mkpeer . bridge cpvm_coppice-a1_boot link2\n\
             name .:cpvm_coppice-a1_boot cpvm_coppice-a1\n\
             msg cpvm_coppice-a1: setpersistent\n\
             rmhook . cpvm_coppice-a1_boot\n"
        );
        assert_eq!(
            attach("coppice-a1", "cpj7"),
            "connect cpvm_coppice-a1: cpj7: link1 lower\n"
        );
        assert_eq!(shutdown("coppice-a1"), "shutdown cpvm_coppice-a1:\n");
    }
}
