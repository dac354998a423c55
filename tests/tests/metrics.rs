//! Real scrapes of the daemon's `/metrics` after a known mix of real
//! traffic: every counter has its exact expected value, the exposition
//! passes `promtool check metrics`, and counters carry on across a reload
//! and a restart.

use std::{net::UdpSocket, time::Duration};

use testkit::{
    contract, daemon_process::Daemon, exposition::sample, ntp_clients::ask, promtool_check_metrics,
};
use tollgate::netns::{RIG_DEVICE_IFACE, Rig};

const SERVICE: &str = "203.0.113.40";
const METER: &str = "10.64.0.10";
const STRANGER: &str = "10.66.0.5";
const NTP: &str = "100.127.0.123";

const POLICY: &str = "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
                      - allow: {to: 203.0.113.0/24, proto: udp, ports: [7000], id: broker}\n";

/// The metric families of a scrape, by their `# TYPE` lines.
fn families(text: &str) -> std::collections::BTreeSet<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect()
}

fn scrape(rig: &Rig) -> String {
    let (status, body) = rig.gateway.http_get("127.0.0.1:9187", "/metrics").unwrap();
    assert_eq!(status, 200);
    promtool_check_metrics(&body);
    body
}

/// Sends `n` UDP datagrams of `payload` bytes from `src` to SERVICE:port.
fn send(rig: &Rig, src: &str, port: u16, n: usize, payload: usize) {
    let s = rig
        .devices
        .enter(|| UdpSocket::bind((src, 0)).unwrap())
        .unwrap();
    for _ in 0..n {
        s.send_to(&vec![0u8; payload], (SERVICE, port)).unwrap();
    }
    // Let the datagrams cross before anyone scrapes.
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn exact_counts_for_known_traffic_across_reload_and_restart() {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-metrics-{}", std::process::id())).unwrap();
    // No IPv6 on the device side: its router and neighbour chatter would
    // add packets this test does not control.
    rig.devices
        .sysctl("net.ipv6.conf.all.disable_ipv6=1")
        .unwrap();
    rig.add_device(METER).unwrap();
    rig.add_device(STRANGER).unwrap();
    rig.add_service(SERVICE).unwrap();
    rig.gateway
        .ip(&["addr", "add", &format!("{NTP}/32"), "dev", "lo"])
        .unwrap();
    let _listeners: Vec<UdpSocket> = [7000, 7001]
        .iter()
        .map(|p| {
            rig.upstream
                .enter(|| UdpSocket::bind((SERVICE, *p)).unwrap())
                .unwrap()
        })
        .collect();
    let mut daemon = Daemon::start(
        &rig.gateway,
        "metrics",
        &[RIG_DEVICE_IFACE],
        &format!("ntp:\n  listen: [\"{NTP}:123\"]\n  reference: local\n  stratum: 10\n"),
        &[("meters.yaml", POLICY)],
    );
    // Both slots hold the policy once the inactive one is filled.
    daemon.wait_log(
        "inactive slot filled with the policy in force",
        Duration::from_secs(10),
    );

    send(&rig, METER, 7000, 10, 100); // allowed by `broker`
    send(&rig, METER, 7001, 7, 50); // meters' default: deny
    send(&rig, STRANGER, 7000, 3, 10); // in no group: deny
    // A zero transmit timestamp, as some clients send.
    assert!(ask(&rig.devices, METER, NTP, 0), "a meter gets the time");

    let m = scrape(&rig);
    let frame = |payload: u64| 14 + 20 + 8 + payload;
    let expect = |name: &str, labels: &[(&str, &str)], value: u64| {
        assert_eq!(
            sample(&m, name, labels),
            Some(value as f64),
            "{name}{labels:?} in\n{m}"
        );
    };
    expect(
        "tollgate_rule_packets_total",
        &[("group", "meters"), ("rule", "broker")],
        10,
    );
    expect(
        "tollgate_rule_bytes_total",
        &[("group", "meters"), ("rule", "broker")],
        10 * frame(100),
    );
    expect(
        "tollgate_rule_packets_total",
        &[("group", "meters"), ("rule", "default")],
        7,
    );
    expect(
        "tollgate_rule_bytes_total",
        &[("group", "meters"), ("rule", "default")],
        7 * frame(50),
    );
    expect(
        "tollgate_rule_packets_total",
        &[("group", "meters"), ("rule", "builtin-ntp")],
        1,
    );
    expect(
        "tollgate_rule_bytes_total",
        &[("group", "meters"), ("rule", "builtin-ntp")],
        frame(48),
    );
    expect(
        "tollgate_packets_total",
        &[("group", "meters"), ("verdict", "allow")],
        11,
    );
    expect(
        "tollgate_bytes_total",
        &[("group", "meters"), ("verdict", "allow")],
        10 * frame(100) + frame(48),
    );
    expect(
        "tollgate_packets_total",
        &[("group", "meters"), ("verdict", "deny")],
        7,
    );
    expect(
        "tollgate_packets_total",
        &[("group", "meters"), ("verdict", "audit_deny")],
        0,
    );
    expect(
        "tollgate_packets_total",
        &[("group", "_unknown"), ("verdict", "deny")],
        3,
    );
    expect(
        "tollgate_bytes_total",
        &[("group", "_unknown"), ("verdict", "deny")],
        3 * frame(10),
    );
    expect("tollgate_drops_total", &[("reason", "policy")], 7);
    expect("tollgate_drops_total", &[("reason", "unknown_device")], 3);
    expect("tollgate_drops_total", &[("reason", "malformed")], 0);
    expect(
        "tollgate_dataplane_attached",
        &[("interface", RIG_DEVICE_IFACE), ("mode", "xdp-native")],
        1,
    );
    expect("tollgate_policy_generation", &[], 1);
    expect("tollgate_policy_reloads_total", &[("result", "success")], 1);
    expect("tollgate_policy_reloads_total", &[("result", "failure")], 0);
    expect("tollgate_policy_last_reload_success", &[], 1);
    expect("tollgate_policy_rules", &[("group", "meters")], 1);
    expect(
        "tollgate_rule_info",
        &[
            ("group", "meters"),
            ("rule", "broker"),
            ("action", "allow"),
            ("line", "6"),
        ],
        1,
    );
    expect(
        "tollgate_ntp_requests_total",
        &[("group", "meters"), ("result", "served")],
        1,
    );
    expect("tollgate_ntp_stratum", &[], 10);
    // Time health: the meter was seen, but its request's transmit
    // timestamp is zero, which tells no offset.
    expect("tollgate_ntp_clients", &[("group", "meters")], 1);
    expect(
        "tollgate_ntp_client_offset_seconds_count",
        &[("group", "meters")],
        0,
    );
    expect("tollgate_ntp_clients_untracked_total", &[], 0);
    // `reference: local`: no upstream to be off from or to age.
    expect("tollgate_ntp_upstream_offset_seconds", &[], 0);
    expect("tollgate_ntp_last_sample_age_seconds", &[], 0);

    // The contract is exactly what a daemon with NTP exports.
    let contract: std::collections::BTreeSet<&str> = contract::METRICS.iter().copied().collect();
    assert_eq!(
        families(&m),
        contract,
        "tests/src/contract.rs and a real scrape disagree"
    );

    // Map pressure: capacities from the default limits (both slots for the
    // policy maps), entries of what was installed and what the program
    // cached.
    let limits = tollgate::config::Limits::default();
    expect(
        "tollgate_map_capacity",
        &[("map", "TG_DST")],
        2 * u64::from(limits.destinations),
    );
    expect(
        "tollgate_map_capacity",
        &[("map", "TG_FRAGS")],
        u64::from(limits.fragments),
    );
    // One device prefix, in each slot.
    expect("tollgate_map_entries", &[("map", "TG_DEV_PREFIX")], 2);
    expect("tollgate_map_entries", &[("map", "TG_FRAGS")], 0);
    assert!(
        sample(&m, "tollgate_map_entries", &[("map", "TG_FLOWS")]).is_none(),
        "there is no flow cache"
    );
    expect("tollgate_flow_cache_hits_total", &[], 0);
    let destinations = sample(&m, "tollgate_map_entries", &[("map", "TG_DST")]).unwrap();
    assert!(destinations >= 1.0, "{destinations}");
    assert!(sample(&m, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(sample(&m, "process_open_fds", &[]).unwrap() > 0.0);
    expect(
        "tollgate_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", tollgate::GIT_REVISION),
        ],
        1,
    );

    // A reload that adds a rule keeps every counter where it was.
    daemon.write_policy(
        "meters.yaml",
        &format!("{POLICY}      - deny: {{to: 198.51.100.0/24, id: docs}}\n"),
    );
    daemon.wait_status(Duration::from_secs(5), |s| s.policy.generation == 2);
    send(&rig, METER, 7000, 5, 100);
    let m = scrape(&rig);
    assert_eq!(
        sample(
            &m,
            "tollgate_rule_packets_total",
            &[("group", "meters"), ("rule", "broker")]
        ),
        Some(15.0)
    );
    assert_eq!(
        sample(
            &m,
            "tollgate_packets_total",
            &[("group", "meters"), ("verdict", "allow")]
        ),
        Some(16.0)
    );
    assert_eq!(
        sample(
            &m,
            "tollgate_rule_packets_total",
            &[("group", "meters"), ("rule", "docs")]
        ),
        Some(0.0)
    );
    assert_eq!(sample(&m, "tollgate_policy_generation", &[]), Some(2.0));

    let before_restart = sample(&m, "tollgate_map_entries", &[("map", "TG_DST")]);

    // And so does a restart: the counters live in pinned maps.
    assert!(daemon.stop().success());
    daemon.spawn();
    send(&rig, METER, 7000, 5, 100);
    let m = scrape(&rig);
    assert_eq!(
        sample(
            &m,
            "tollgate_rule_packets_total",
            &[("group", "meters"), ("rule", "broker")]
        ),
        Some(20.0)
    );
    // The start found the policy (generation 2's) in force in the adopted
    // active slot and wrote nothing: each slot holds what it held.
    assert!(
        daemon.logs().contains("already: nothing written"),
        "{}",
        daemon.logs()
    );
    assert_eq!(
        sample(&m, "tollgate_map_entries", &[("map", "TG_DST")]),
        before_restart
    );
    assert_eq!(
        sample(
            &m,
            "tollgate_packets_total",
            &[("group", "meters"), ("verdict", "deny")]
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(&m, "tollgate_drops_total", &[("reason", "unknown_device")]),
        Some(3.0)
    );
}
