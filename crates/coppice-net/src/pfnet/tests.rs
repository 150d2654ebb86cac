//! `PfNetwork` over the recording fake of the FreeBSD host.

use super::*;
use crate::sys::FakePfSys;

fn pf_conf() -> String {
    format!(
        "set skip on lo0\n{}pass out all\n",
        crate::pf::pf_conf_lines(&crate::pf::test_config(), "vtnet0")
    )
}

/// The test config with its records in `dir`, and no background refill (tests prepare
/// epairs themselves, so the fake's command log stays deterministic).
fn config(dir: &tempfile::TempDir) -> BridgeConfig {
    let mut config = crate::pf::test_config();
    config.state_dir = dir.path().join("net");
    config.pool_size = 0;
    config
}

fn start(dir: &tempfile::TempDir, fake: &Arc<FakePfSys>) -> Result<PfNetwork, PfStartError> {
    PfNetwork::start_with(config(dir), Arc::clone(fake) as Arc<dyn PfSys>, false)
}

fn network() -> (PfNetwork, Arc<FakePfSys>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakePfSys::default().with_pf_conf(&pf_conf()));
    let network = start(&dir, &fake).unwrap();
    (network, fake, dir)
}

fn id(name: &str) -> SandboxId {
    name.parse().unwrap()
}

fn spec(internet: bool, allow: &[&str]) -> NetworkSpec {
    NetworkSpec {
        allow_internet: internet,
        allow_out: allow.iter().map(|entry| (*entry).to_owned()).collect(),
        ..NetworkSpec::default()
    }
}

#[test]
fn test_start_refuses_a_pf_conf_without_the_anchor_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakePfSys::default().with_pf_conf("pass all\n"));
    let error = start(&dir, &fake).unwrap_err();
    assert!(matches!(error, PfStartError::PfConf(_)), "{error}");
    assert!(fake.commands().is_empty());
}

#[test]
fn test_start_makes_the_bridge_only_when_it_is_missing() {
    let (_, fake, dir) = network();
    assert_eq!(
        fake.commands(),
        [
            "sysctl net.inet.ip.forwarding=1 net.inet6.ip6.forwarding=1 net.link.bridge.pfil_local_phys=1",
            "ifconfig coppice0",
            "ifconfig bridge create",
            "ifconfig bridge1 name coppice0",
            "ifconfig coppice0 inet 10.213.0.1/16 alias",
            "ifconfig coppice0 inet6 fd00:c0:ffee::1 prefixlen 64 no_dad alias",
            "ifconfig coppice0 up",
            "ifconfig -l",
        ]
    );
    let fake = Arc::new(
        FakePfSys::default()
            .with_pf_conf(&pf_conf())
            .with_interface("coppice0"),
    );
    start(&dir, &fake).unwrap();
    assert!(!fake.commands().iter().any(|c| c.contains("bridge create")));
    // A restarted daemon finds the bridge's addresses in place.
    start(&dir, &fake).unwrap();
    fake.fail_next("ifconfig coppice0 up");
    assert!(matches!(start(&dir, &fake), Err(PfStartError::Host(_))));
}

#[test]
fn test_attach_prepares_an_epair_loads_the_anchor_and_hands_over_the_jail_end() {
    let (network, fake, _dir) = network();
    let attachment = network
        .attach(&id("a1"), &spec(false, &["192.0.2.0/24"]))
        .unwrap();
    assert_eq!(
        attachment,
        NetAttachment::Vnet {
            interface: "cpj1".into(),
            mac: "02:c0:ff:ee:00:01".into(),
            addresses: vec![
                ("10.213.0.2".parse().unwrap(), 16),
                ("fd00:c0:ffee::2".parse().unwrap(), 64)
            ],
            gateways: vec![
                "10.213.0.1".parse().unwrap(),
                "fd00:c0:ffee::1".parse().unwrap()
            ],
            dns: Vec::new(),
        }
    );
    let anchors = fake.anchors();
    let rules = &anchors["coppice/sbx_1"];
    assert_eq!(
        *rules,
        crate::pf::anchor_rules(
            &crate::pf::test_config(),
            1,
            &EgressPolicy::from_spec(&spec(false, &["192.0.2.0/24"])).unwrap()
        )
    );
    assert!(rules.ends_with(
        "block return in quick on \"coppice0\" from { 10.213.0.2 fd00:c0:ffee::2 } to any\n"
    ));
    assert!(fake.interfaces().contains(&"coppice0-1".to_owned()));
    assert!(fake.interfaces().contains(&"cpj1".to_owned()));
    assert_eq!(network.list().unwrap(), vec![id("a1")]);
}

#[test]
fn test_a_prefilled_epair_makes_attach_a_single_pfctl() {
    let (network, fake, _dir) = network();
    network.prefill(2).unwrap();
    let before = fake.commands().len();
    network.attach(&id("a1"), &NetworkSpec::default()).unwrap();
    let commands = fake.commands();
    assert_eq!(commands[before..], ["pfctl -a coppice/sbx_1 -f -"]);
    network.prefill(2).unwrap();
    assert_eq!(
        fake.interfaces()
            .iter()
            .filter(|name| name.starts_with("cpj"))
            .count(),
        3
    );
}

#[test]
fn test_a_failed_attach_leaves_nothing_and_frees_its_index() {
    for failing in [
        "ifconfig epair create",
        "ifconfig coppice0 addm",
        "pfctl -a coppice/sbx_1 -f",
    ] {
        let (network, fake, _dir) = network();
        let interfaces = fake.interfaces();
        fake.fail_next(failing);
        let error = network
            .attach(&id("a1"), &NetworkSpec::default())
            .unwrap_err();
        assert!(
            matches!(error, NetError::Backend { .. }),
            "{failing}: {error}"
        );
        assert_eq!(
            fake.interfaces(),
            interfaces,
            "{failing}: an interface stayed"
        );
        assert!(fake.anchors().is_empty(), "{failing}: an anchor stayed");
        assert!(network.list().unwrap().is_empty());
        // The index is free again.
        let NetAttachment::Vnet { interface, .. } =
            network.attach(&id("a1"), &NetworkSpec::default()).unwrap()
        else {
            panic!("not a VNET attachment");
        };
        assert_eq!(interface, "cpj1", "{failing}");
    }
}

#[test]
fn test_update_swaps_the_anchor_and_kills_the_sandboxs_states() {
    let (network, fake, _dir) = network();
    network.attach(&id("a1"), &NetworkSpec::default()).unwrap();
    let before = fake.commands().len();
    network.update(&id("a1"), &spec(false, &[])).unwrap();
    assert_eq!(
        fake.commands()[before..],
        [
            "pfctl -a coppice/sbx_1 -f -",
            "pfctl -k 10.213.0.2",
            "pfctl -k fd00:c0:ffee::2"
        ]
    );
    assert!(fake.anchors()["coppice/sbx_1"].ends_with("to any\n"));
    assert!(matches!(
        network.update(&id("nobody"), &NetworkSpec::default()),
        Err(NetError::NotFound { .. })
    ));
}

#[test]
fn test_detach_removes_the_anchor_the_states_and_the_epair() {
    let (network, fake, _dir) = network();
    let interfaces = fake.interfaces();
    network.attach(&id("a1"), &NetworkSpec::default()).unwrap();
    network.detach(&id("a1")).unwrap();
    assert_eq!(fake.interfaces(), interfaces);
    assert!(fake.anchors().is_empty());
    assert!(network.list().unwrap().is_empty());
    network.detach(&id("a1")).unwrap();
}

#[test]
fn test_the_resolver_pins_allowed_names_under_the_current_policy_only() {
    let (network, fake, _dir) = network();
    let directory: &dyn Directory = &*network.inner;
    network
        .attach(&id("a1"), &spec(false, &["example.com", "10.9.0.0/16"]))
        .unwrap();
    let client: IpAddr = "10.213.0.2".parse().unwrap();
    let (verdict, ticket) = directory.verdict(client, "example.com.");
    assert_eq!(verdict, NameVerdict::Pin);
    assert_eq!(
        directory.verdict(client, "other.org").0,
        NameVerdict::Refuse
    );
    let stranger: IpAddr = "10.213.0.77".parse().unwrap();
    assert_eq!(
        directory.verdict(stranger, "example.com").0,
        NameVerdict::Refuse
    );

    let answer = [("93.184.215.14".parse().unwrap(), 300)];
    directory
        .pin(client, "example.com", ticket, &answer)
        .unwrap();
    let pins = "pfctl -a coppice/sbx_1 -t coppice_pins -T add 93.184.215.14";
    assert_eq!(fake.commands().last().map(String::as_str), Some(pins));
    assert_eq!(fake.pins("coppice/sbx_1"), ["93.184.215.14"]);

    // The policy changed after the question was asked: the answer opens nothing.
    network
        .update(&id("a1"), &spec(true, &["example.com"]))
        .unwrap();
    let before = fake.commands().len();
    directory
        .pin(client, "example.com", ticket, &answer)
        .unwrap();
    assert_eq!(fake.commands().len(), before, "a stale ticket pinned");
    assert!(
        fake.pins("coppice/sbx_1").is_empty(),
        "the reload emptied the table"
    );
    assert_eq!(
        directory.verdict(client, "other.org").0,
        NameVerdict::Forward
    );
}

#[test]
fn test_the_refill_thread_keeps_epairs_prepared() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakePfSys::default().with_pf_conf(&pf_conf()));
    let mut config = config(&dir);
    config.pool_size = 2;
    let network =
        PfNetwork::start_with(config, Arc::clone(&fake) as Arc<dyn PfSys>, false).unwrap();
    let prepared = || {
        fake.interfaces()
            .iter()
            .filter(|name| name.starts_with("cpj"))
            .count()
    };
    let wait_for = |count: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while prepared() != count {
            assert!(
                std::time::Instant::now() < deadline,
                "{} prepared, {count} wanted",
                prepared()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    wait_for(2);
    network.attach(&id("a1"), &NetworkSpec::default()).unwrap();
    // The attached one, and two ready again.
    wait_for(3);
}

#[test]
fn test_a_restarted_daemon_adopts_live_sandboxes_and_clears_the_rest() {
    let (network, fake, dir) = network();
    network
        .attach(&id("kept"), &spec(false, &["192.0.2.0/24"]))
        .unwrap();
    network
        .attach(&id("gone"), &NetworkSpec::default())
        .unwrap();
    network.prefill(2).unwrap();
    // The epair of "gone" disappears while the daemon is down; pf forgets every anchor.
    fake.run("ifconfig", &["coppice0-2".into(), "destroy".into()], None)
        .unwrap();
    fake.run(
        "pfctl",
        &[
            "-a".into(),
            "coppice/sbx_1".into(),
            "-F".into(),
            "all".into(),
        ],
        None,
    )
    .unwrap();
    drop(network);

    let restarted = start(&dir, &fake).unwrap();
    assert_eq!(restarted.list().unwrap(), vec![id("kept")]);
    // Its anchor is back, from the record.
    assert!(fake.anchors()["coppice/sbx_1"].contains(
        "pass in quick on \"coppice0\" from { 10.213.0.2 fd00:c0:ffee::2 } to { 192.0.2.0/24 }"
    ));
    // Prepared epairs nobody owns are gone; only the kept sandbox's pair and the bridge stay.
    assert_eq!(fake.interfaces(), ["coppice0", "coppice0-1", "cpj1"]);
    // The kept index stays taken, the others are free again.
    let NetAttachment::Vnet { interface, .. } = restarted
        .attach(&id("new"), &NetworkSpec::default())
        .unwrap()
    else {
        panic!("not a VNET attachment");
    };
    assert_eq!(interface, "cpj2");
    restarted.update(&id("kept"), &spec(true, &[])).unwrap();
    restarted.detach(&id("kept")).unwrap();
    drop(restarted);
    let again = start(&dir, &fake).unwrap();
    assert_eq!(again.list().unwrap(), vec![id("new")]);
}
