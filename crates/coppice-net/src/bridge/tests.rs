//! `BridgeNetwork` over the fake host: endpoints, policies, release, restart adoption.

use std::time::{Duration, Instant};

use super::*;
use crate::sys::FakeBridgeSys;
use crate::sys::fake::Ran;

fn id(name: &str) -> SandboxId {
    name.parse().unwrap()
}

fn config(dir: &Path, pool_size: usize) -> BridgeConfig {
    let mut config = BridgeConfig::new("cpt0", dir.join("net"));
    config.pool_size = pool_size;
    config.dns_upstream = None;
    config
}

fn start(dir: &Path, sys: &Arc<FakeBridgeSys>, pool_size: usize) -> BridgeNetwork {
    BridgeNetwork::start(
        config(dir, pool_size),
        Arc::clone(sys) as Arc<dyn BridgeSys>,
    )
    .unwrap()
}

fn airgapped() -> NetworkSpec {
    NetworkSpec {
        allow_internet: false,
        allow_out: vec!["10.99.0.0/16".into()],
        deny_out: Vec::new(),
    }
}

/// The `nft` scripts run, without the port guards every endpoint gets.
fn policy_scripts(sys: &FakeBridgeSys) -> Vec<String> {
    sys.nft_scripts()
        .into_iter()
        .filter(|script| !script.starts_with("add element bridge"))
        .collect()
}

fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "{what} not reached");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn test_start_makes_the_bridge_turns_on_forwarding_and_installs_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let _network = start(dir.path(), &sys, 0);
    assert!(sys.forwarding());
    assert!(sys.links().contains("cpt0"));
    let scripts = sys.nft_scripts();
    assert_eq!(scripts.len(), 1);
    assert!(scripts[0].contains("delete table inet coppice_cpt0"));
}

#[test]
fn test_the_bridge_gets_a_fixed_mac_so_ports_never_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let _network = start(dir.path(), &sys, 0);
    let host_scripts = host_ip_scripts(&sys);
    let setup = host_scripts
        .iter()
        .find(|script| script.contains("link add cpt0 type bridge"))
        .unwrap();
    assert!(
        setup.contains("link set cpt0 address 02:c0:ff:ee:00:00\n"),
        "{setup}"
    );
}

#[test]
fn test_a_second_network_on_the_same_bridge_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let _first = start(dir.path(), &sys, 0);

    let second = BridgeNetwork::start(
        config(dir.path(), 0),
        Arc::clone(&sys) as Arc<dyn BridgeSys>,
    );

    let error = second.unwrap_err();
    assert!(
        error.to_string().contains("in use by another coppiced"),
        "{error}"
    );
}

#[test]
fn test_default_attach_gives_addresses_and_runs_no_nft() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 0);

    let attachment = network.attach(&id("a"), &NetworkSpec::default()).unwrap();

    let NetAttachment::Namespace { addresses, dns, .. } = attachment else {
        panic!("expected a namespace");
    };
    assert_eq!(
        addresses,
        vec![
            "10.213.0.2".parse::<IpAddr>().unwrap(),
            "fd00:c0:ffee::2".parse().unwrap()
        ]
    );
    assert_eq!(dns, vec!["10.213.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(policy_scripts(&sys).len(), 1, "only the table at start");
    assert!(
        sys.nft_scripts()
            .iter()
            .any(|script| script.contains("ports_v4 { \"cpt0-1\" . 10.213.0.2 }")),
        "the port is guarded"
    );
    assert!(sys.links().contains("cpt0-1"));
    assert_eq!(network.list().unwrap(), vec![id("a")]);
}

#[test]
fn test_policy_attach_update_and_detach_manage_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 0);
    // What the kernel would list once a generation "g1" and a rule without a tag exist.
    sys.set_listing(
        r#"{"nftables": [{"chain": {"name": "sbx_1"}},
            {"rule": {"chain": "sbx_1", "handle": 4, "comment": "g1"}},
            {"rule": {"chain": "sbx_1", "handle": 3}}]}"#,
    );

    network.attach(&id("a"), &airgapped()).unwrap();
    network.update(&id("a"), &NetworkSpec::default()).unwrap();
    network.update(&id("a"), &airgapped()).unwrap();
    wait_for("shadowed rules collected", || {
        sys.nft_scripts()
            .iter()
            .any(|script| script.contains("delete rule inet coppice_cpt0 sbx_1 handle 4"))
    });
    network.detach(&id("a")).unwrap();

    wait_for("release", || !sys.links().contains("cpt0-1"));
    wait_for("flows forgotten", || {
        sys.ran()
            .contains(&Ran::ForgetFlows("fd00:c0:ffee::2".parse().unwrap()))
    });
    let scripts = policy_scripts(&sys);
    assert!(
        scripts[1].contains("add element inet coppice_cpt0 egress_v4 { 10.213.0.2 : jump sbx_1 }")
    );
    // Changes are additions only: a new generation on top, ending in a return.
    assert!(scripts[2].contains("insert rule inet coppice_cpt0 sbx_1 return comment"));
    assert!(!scripts[2].contains("delete"));
    assert!(scripts[3].contains("sbx_1 reject"));
    assert!(!scripts[3].contains("add element") && !scripts[3].contains("delete"));
    wait_for("chain removal", || {
        sys.nft_scripts()
            .last()
            .is_some_and(|last| last.contains("delete chain inet coppice_cpt0 sbx_1"))
    });
    assert!(network.list().unwrap().is_empty());
}

#[test]
fn test_released_index_is_reused_and_addresses_stay_unique() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 0);
    network.attach(&id("a"), &NetworkSpec::default()).unwrap();
    network.attach(&id("b"), &NetworkSpec::default()).unwrap();
    network.detach(&id("a")).unwrap();
    wait_for("release", || !sys.links().contains("cpt0-1"));

    network.attach(&id("c"), &NetworkSpec::default()).unwrap();

    assert_eq!(
        sys.links(),
        ["cpt0", "cpt0-1", "cpt0-2"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    );
}

#[test]
fn test_bad_policy_is_invalid_and_takes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 0);
    let bad = NetworkSpec {
        allow_internet: true,
        allow_out: vec!["not an address".into()],
        deny_out: Vec::new(),
    };
    assert!(matches!(
        network.attach(&id("a"), &bad),
        Err(NetError::Invalid { .. })
    ));
    assert_eq!(sys.links().len(), 1, "only the bridge");
}

#[test]
fn test_failed_nft_on_attach_releases_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 0);
    sys.fail_nft();
    assert!(matches!(
        network.attach(&id("a"), &airgapped()),
        Err(NetError::Backend { .. })
    ));
    wait_for("release", || sys.links().len() == 1);
    assert!(network.list().unwrap().is_empty());
}

#[test]
fn test_update_of_unknown_sandbox_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 0);
    assert!(matches!(
        network.update(&id("a"), &NetworkSpec::default()),
        Err(NetError::NotFound { .. })
    ));
    network.detach(&id("a")).unwrap();
}

#[test]
fn test_restart_adopts_recorded_sandboxes_and_removes_stale_links() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    {
        let network = start(dir.path(), &sys, 0);
        network.attach(&id("a"), &NetworkSpec::default()).unwrap();
        network.attach(&id("b"), &airgapped()).unwrap();
    }
    // A link an earlier run had pooled but not handed out.
    sys.add_link("cpt0-9");
    sys.unlock("cpt0");

    let network = start(dir.path(), &sys, 0);

    assert_eq!(network.list().unwrap(), vec![id("a"), id("b")]);
    assert!(!sys.links().contains("cpt0-9"));
    let table = sys.nft_scripts().last().cloned().unwrap();
    assert!(table.contains("delete table"));
    assert!(table.contains("10.213.0.3 : jump sbx_2"), "{table}");
    // New sandboxes get an index no survivor holds.
    network.attach(&id("c"), &NetworkSpec::default()).unwrap();
    assert!(sys.links().contains("cpt0-3"));
    network.detach(&id("b")).unwrap();
    wait_for("release of an adopted endpoint", || {
        !sys.links().contains("cpt0-2")
    });
}

#[test]
fn test_pool_prepares_endpoints_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 2);
    wait_for("pool filled", || sys.links().len() == 3);
    let inside_before = sys
        .ran()
        .iter()
        .filter(|ran| matches!(ran, Ran::Ip { netns: Some(_), .. }))
        .count();

    network.attach(&id("a"), &NetworkSpec::default()).unwrap();

    let inside_after = sys
        .ran()
        .iter()
        .filter(|ran| matches!(ran, Ran::Ip { netns: Some(_), .. }))
        .count();
    assert!(inside_after >= inside_before);
    assert_eq!(network.list().unwrap(), vec![id("a")]);
}

#[test]
fn test_an_answer_that_arrives_after_a_policy_change_pins_nothing() {
    use super::resolver::Directory;
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 0);
    let allowed = NetworkSpec {
        allow_internet: false,
        allow_out: vec!["pypi.org".into(), "files.test".into()],
        deny_out: Vec::new(),
    };
    network.attach(&id("a"), &allowed).unwrap();
    let client: IpAddr = "10.213.0.2".parse().unwrap();
    let answer = [("192.0.2.10".parse().unwrap(), 300)];

    let (verdict, ticket) = network.inner.verdict(client, "pypi.org.");
    assert_eq!(verdict, NameVerdict::Pin);
    // pypi.org is revoked while its answer is on the way.
    let revoked = NetworkSpec {
        allow_out: vec!["files.test".into()],
        ..allowed.clone()
    };
    network.update(&id("a"), &revoked).unwrap();
    let before = sys.nft_scripts().len();
    network
        .inner
        .pin(client, "pypi.org.", ticket, &answer)
        .unwrap();
    assert_eq!(
        sys.nft_scripts().len(),
        before,
        "a stale answer must open nothing"
    );

    let (verdict, ticket) = network.inner.verdict(client, "files.test.");
    assert_eq!(verdict, NameVerdict::Pin);
    network
        .inner
        .pin(client, "files.test.", ticket, &answer)
        .unwrap();
    assert!(
        sys.nft_scripts()
            .last()
            .unwrap()
            .contains("192.0.2.10 timeout 300s")
    );
    // Nobody at an address: refused, and nothing pinned for it.
    let stranger: IpAddr = "10.213.0.99".parse().unwrap();
    assert_eq!(
        network.inner.verdict(stranger, "files.test.").0,
        NameVerdict::Refuse
    );
}

/// The endpoints of `names`, taken out as a detach takes them, for a release run here.
fn detached(network: &BridgeNetwork, names: &[&str]) -> Vec<Endpoint> {
    names
        .iter()
        .map(|name| {
            lock(&network.inner.attached)
                .remove(&id(name))
                .unwrap()
                .endpoint
        })
        .collect()
}

fn host_ip_scripts(sys: &FakeBridgeSys) -> Vec<String> {
    sys.ran()
        .into_iter()
        .filter_map(|ran| match ran {
            Ran::Ip {
                netns: None,
                script,
            } => Some(script),
            _ => None,
        })
        .collect()
}

#[test]
fn test_sandboxes_released_together_go_in_one_link_pass_and_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 0);
    for name in ["a", "b", "c"] {
        network.attach(&id(name), &airgapped()).unwrap();
    }
    sys.set_listing(
        r#"{"nftables": [{"chain": {"name": "sbx_1"}}, {"chain": {"name": "sbx_2"}},
            {"chain": {"name": "sbx_3"}}, {"set": {"name": "pins4_2_7"}}]}"#,
    );
    let (ip_before, nft_before) = (host_ip_scripts(&sys).len(), sys.nft_scripts().len());

    network
        .inner
        .release_all(detached(&network, &["a", "b", "c"]));

    let group = network.inner.config.release_group();
    let ip = host_ip_scripts(&sys);
    assert_eq!(
        ip[ip_before..],
        [format!(
            "link set cpt0-1 group {group}\nlink set cpt0-2 group {group}\n\
             link set cpt0-3 group {group}\nlink del group {group}\n"
        )]
    );
    assert!(
        ["cpt0-1", "cpt0-2", "cpt0-3"]
            .iter()
            .all(|link| !sys.links().contains(*link))
    );
    let nft = sys.nft_scripts();
    assert_eq!(nft.len(), nft_before + 1, "one transaction: {nft:?}");
    let removal = nft.last().unwrap();
    for wanted in [
        "delete chain inet coppice_cpt0 sbx_1",
        "delete chain inet coppice_cpt0 sbx_2",
        "delete chain inet coppice_cpt0 sbx_3",
        "delete set inet coppice_cpt0 pins4_2_7",
    ] {
        assert!(removal.contains(wanted), "{wanted} missing from {removal}");
    }
    for address in ["10.213.0.2", "10.213.0.3", "10.213.0.4"] {
        assert!(
            sys.ran()
                .contains(&Ran::ForgetFlows(address.parse().unwrap()))
        );
    }
    // Every index is free again.
    network.attach(&id("d"), &NetworkSpec::default()).unwrap();
    assert!(sys.links().contains("cpt0-1"));
}

#[test]
fn test_a_release_group_holding_another_link_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = start(dir.path(), &sys, 0);
    network.attach(&id("a"), &NetworkSpec::default()).unwrap();
    network.attach(&id("b"), &NetworkSpec::default()).unwrap();
    sys.add_link("uplink7");
    sys.set_link_group("uplink7", network.inner.config.release_group());
    let before = host_ip_scripts(&sys).len();

    network.inner.release_all(detached(&network, &["a", "b"]));

    assert_eq!(
        host_ip_scripts(&sys)[before..],
        ["link del cpt0-1\n", "link del cpt0-2\n"]
    );
    assert!(sys.links().contains("uplink7"));
    assert!(!sys.links().contains("cpt0-1") && !sys.links().contains("cpt0-2"));
}

#[test]
fn test_release_groups_differ_between_bridges() {
    let groups: BTreeSet<u32> = ["coppice0", "cpgwt0", "cpt0", "cpn0"]
        .iter()
        .map(|bridge| BridgeConfig::new(*bridge, "/state").release_group())
        .collect();
    assert_eq!(groups.len(), 4);
    assert!(groups.iter().all(|group| *group >> 16 == 0x6370));
}

fn checkpointable(dir: &Path, sys: &Arc<FakeBridgeSys>) -> BridgeNetwork {
    let mut config = config(dir, 0);
    config.sandbox_ids = Some(coppice_core::volume::IdMap {
        uid_base: 200_000,
        gid_base: 200_000,
        count: 65_536,
    });
    BridgeNetwork::start(config, Arc::clone(sys) as Arc<dyn BridgeSys>).unwrap()
}

#[test]
fn test_with_sandbox_ids_an_endpoint_namespace_has_its_own_user_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = checkpointable(dir.path(), &sys);

    let attachment = network.attach(&id("a"), &NetworkSpec::default()).unwrap();

    let NetAttachment::Namespace {
        path,
        user: Some(user),
        restore_device,
        ..
    } = attachment
    else {
        panic!("expected a namespace with a user namespace: {attachment:?}");
    };
    assert_ne!(path, user);
    assert_eq!(restore_device.as_deref(), Some("cpt0r1"));

    // Without a map the namespace is the host's (and cannot be checkpointed).
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = start(plain_dir.path(), &Arc::new(FakeBridgeSys::default()), 0);
    let attachment = plain.attach(&id("b"), &NetworkSpec::default()).unwrap();
    assert!(matches!(
        attachment,
        NetAttachment::Namespace { user: None, .. }
    ));
}

#[test]
fn test_a_restore_gets_a_new_pair_on_the_same_port_isolated_and_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = checkpointable(dir.path(), &sys);
    network.attach(&id("a"), &airgapped()).unwrap();
    let before = sys.ran().len();

    network.prepare_restore(&id("a")).unwrap();

    let ran = sys.ran()[before..].to_vec();
    let deleted = ran.iter().position(
        |ran| matches!(ran, Ran::Ip { netns: None, script } if script == "link del cpt0-1\n"),
    );
    let guard = ran.iter().position(|ran| {
        matches!(ran, Ran::Nft(script) if script.contains("ports_mac { \"cpt0-1\" . 02:c0:ff:ee:00:01 }"))
    });
    let made = ran.iter().position(|ran| {
        matches!(ran, Ran::Ip { netns: None, script }
            if script.starts_with("link add cpt0-1 type veth peer name cpt0r1 address 02:c0:ff:ee:00:01\n")
                && script.contains("isolated on"))
    });
    assert!(
        deleted.is_some() && guard.is_some() && made.is_some(),
        "{ran:?}"
    );
    assert!(deleted < guard && guard < made, "{ran:?}");
    assert!(sys.links().contains("cpt0-1"));

    // The sandbox keeps its index, its policy and its record.
    assert_eq!(network.list().unwrap(), vec![id("a")]);
    let other = network.attach(&id("b"), &NetworkSpec::default()).unwrap();
    assert!(matches!(
        other,
        NetAttachment::Namespace { restore_device: Some(ref device), .. } if device == "cpt0r2"
    ));
    network.update(&id("a"), &NetworkSpec::default()).unwrap();

    // A restore that failed is prepared again: the pair it left is replaced.
    network.prepare_restore(&id("a")).unwrap();
    assert!(sys.links().contains("cpt0-1"));

    network.detach(&id("a")).unwrap();
    wait_for("the restored pair released", || {
        !sys.links().contains("cpt0-1")
    });
}

#[test]
fn test_restore_without_a_network_record_fails_saying_so_not_as_an_unknown_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(FakeBridgeSys::default());
    let network = checkpointable(dir.path(), &sys);
    let error = network.prepare_restore(&id("x")).unwrap_err();
    assert!(matches!(error, NetError::Backend { .. }), "{error:?}");
    let chain = format!("{error}: {}", std::error::Error::source(&error).unwrap());
    assert!(chain.contains("no network record"), "{chain}");
}
