//! Policies of many rules written one by one: every rule has its own
//! counter, so every destination has its own rule list in the kernel.
//!
//! A policy of 20,000 such rules (far past what fixed-size rule sets once
//! allowed) goes through the real loader and compiler into the real
//! dataplane; packets to every 10th rule's prefix run through the XDP
//! program and must get the model's verdict and move its counter. Then an
//! edit that adds one rule must write a handful of map entries, not the
//! 20,000 lists again; and a config whose `limits.rule-records` is too
//! small must reject the policy by name.

use std::{fmt::Write as _, net::IpAddr};

use testkit::{
    bench::Pool,
    explicit_fleet::{self, Shape},
    frames::{Frame, Transport},
};
use tollgate::{
    compile::compile,
    config::Limits,
    datapath::{Dataplane, Options, XDP_DROP, XDP_PASS},
    model,
    policy::{self, Environment, Source},
    tables::{CompiledPolicy, PacketFacts},
};
use tollgate_common::{RECORD_ENTRIES, Verdict};

const RULES: usize = 20_000;
const DEVICE: &str = "10.9.8.7";

/// The `i`-th rule's destination: 100.64.0.0/24 onwards.
fn prefix(i: usize) -> String {
    format!("100.{}.{}.0/24", 64 + (i >> 8), i & 255)
}

/// `rules` explicit rules, allow and deny in turn, TCP 443 and 8883.
fn policy_text(rules: usize) -> String {
    let mut text = String::from(
        "groups:\n  fleet:\n    devices: [10.0.0.0/8]\n    default: deny\n    rules:\n",
    );
    for i in 0..rules {
        let action = if i % 2 == 0 { "allow" } else { "deny" };
        let _ = writeln!(
            text,
            "      - {action}: {{to: {}, proto: tcp, ports: [443, 8883]}}",
            prefix(i)
        );
    }
    text
}

fn compiled(rules: usize, limits: &Limits) -> Result<CompiledPolicy, String> {
    let source = Source {
        path: "rules.yaml".into(),
        text: policy_text(rules),
    };
    let loaded =
        policy::from_sources(&[source], &Environment::default()).map_err(|d| format!("{d:#?}"))?;
    compile(&loaded.policy, limits).map_err(|d| {
        d.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[test]
fn twenty_thousand_rules_install_decide_and_edit_cheaply() {
    testkit::require_root();
    let tables = compiled(RULES, &Limits::default()).unwrap();
    let records: usize = tables
        .rulesets
        .iter()
        .map(|list| list.len().div_ceil(RECORD_ENTRIES).max(1))
        .sum();
    assert!(
        tables.rulesets.len() >= RULES,
        "each rule's own counter makes its list distinct"
    );

    let mut dp = Dataplane::open(&Options::default()).unwrap();
    let first = dp.install(&tables).unwrap();
    eprintln!(
        "{RULES} rules: {} rule lists in {records} records; install wrote {:?} in {:.2?}",
        tables.rulesets.len(),
        first.writes,
        first.total
    );

    let src: IpAddr = DEVICE.parse().unwrap();
    let (mut allowed, mut denied) = (0, 0);
    for i in (0..RULES).step_by(10) {
        for dport in [443, 8883, 80] {
            let dst: IpAddr = prefix(i).replace(".0/24", ".77").parse().unwrap();
            let packet = PacketFacts {
                src,
                dst,
                proto: 6,
                dport: Some(dport),
            };
            let expected = model::verdict(&tables, &packet);
            let counter = dp.counter_index(expected.counter).unwrap();
            let before = dp.counter(counter).unwrap().packets;
            let frame = Frame::new(src, dst, Transport::Tcp { dport }).build();
            let (action, _) = dp.test_run_xdp(&frame, 1).unwrap();
            let want = match expected.verdict {
                Verdict::Deny => {
                    denied += 1;
                    XDP_DROP
                }
                _ => {
                    allowed += 1;
                    XDP_PASS
                }
            };
            assert_eq!(action, want, "{packet:?}: model {expected:?}");
            assert_eq!(
                dp.counter(counter).unwrap().packets,
                before + 1,
                "{packet:?}: the model's counter moved"
            );
        }
    }
    eprintln!("{allowed} allowed and {denied} denied packets as the model decides");
    assert!(allowed > 0 && denied > 0);

    // Both slots hold the policy; then one rule more. Every other list
    // keeps its records, so the edit writes the new rule's destination,
    // its list and little else.
    dp.install(&tables).unwrap();
    let edited = compiled(RULES + 1, &Limits::default()).unwrap();
    let edit = dp.install(&edited).unwrap();
    eprintln!(
        "adding one rule wrote {:?} in {:.2?}",
        edit.writes, edit.total
    );
    assert!(
        edit.writes.inserted <= 4 && edit.writes.removed == 0,
        "an edit of one rule wrote {:?}",
        edit.writes
    );
    let dst: IpAddr = prefix(RULES).replace(".0/24", ".1").parse().unwrap();
    let frame = Frame::new(src, dst, Transport::Tcp { dport: 443 }).build();
    assert_eq!(dp.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);
}

#[test]
fn too_few_rule_records_is_a_named_error() {
    let limits = Limits {
        rule_records: 1_000,
        ..Limits::default()
    };
    let error = compiled(2_000, &limits).unwrap_err();
    assert!(
        error.contains("rules.yaml") && error.contains("limits.rule-records is 1000"),
        "{error}"
    );
    assert_eq!(
        error.lines().count(),
        1,
        "said once, at the group that crossed the limit: {error}"
    );
}

#[test]
fn the_fleet_builder_matches_its_files() {
    let shape = Shape {
        groups: 5,
        rules_per_group: 40,
        devices: 50,
    };
    let prefixes = Pool::load().unwrap().take(shape.rules());
    let sources = explicit_fleet::sources(&shape, &prefixes);
    let loaded = policy::from_sources(&sources, &Environment::default()).unwrap();
    let built = explicit_fleet::policy(&shape, &prefixes);
    assert_eq!(
        compile(&loaded.policy, &Limits::default()).unwrap(),
        compile(&built, &Limits::default()).unwrap()
    );
}

#[test]
fn a_fleet_of_100k_rules_and_1m_devices_fits_the_default_limits() {
    testkit::require_root();
    let shape = Shape::ISSUE;
    let prefixes = Pool::load().unwrap().take(shape.rules());
    let policy = explicit_fleet::policy(&shape, &prefixes);
    let limits = Limits::default();
    let tables = compile(&policy, &limits).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert_eq!(tables.device_exact.len(), shape.devices);
    assert!(
        2 * tables.counters.len() <= limits.counters as usize,
        "{} counters: a reload replacing every rule needs twice that, limits.counters is {}",
        tables.counters.len(),
        limits.counters
    );
    let mut dp = Dataplane::open(&Options::default()).unwrap();
    let report = dp.install(&tables).unwrap();
    eprintln!("installed with {:?} in {:.2?}", report.writes, report.total);
    // A device of the last group, to some of its rules' destinations, on
    // each rule's port: the program decides as the model does.
    let src = explicit_fleet::device(shape.devices - 1).into();
    let last = (shape.groups - 1) * shape.rules_per_group;
    let mut checked = 0;
    for j in (0..shape.rules_per_group).step_by(17) {
        let ipnet::IpNet::V4(net) = prefixes[last + j] else {
            continue;
        };
        let (proto, transport) = match j % 3 {
            1 => (
                17,
                Transport::Udp {
                    dport: explicit_fleet::port(j),
                },
            ),
            _ => (
                6,
                Transport::Tcp {
                    dport: explicit_fleet::port(j),
                },
            ),
        };
        let packet = PacketFacts {
            src,
            dst: IpAddr::V4(net.broadcast()),
            proto,
            dport: Some(explicit_fleet::port(j)),
        };
        let want = match model::verdict(&tables, &packet).verdict {
            Verdict::Deny | Verdict::Reject => XDP_DROP,
            _ => XDP_PASS,
        };
        let frame = Frame::new(packet.src, packet.dst, transport).build();
        assert_eq!(dp.test_run_xdp(&frame, 1).unwrap().0, want, "{packet:?}");
        checked += 1;
    }
    assert!(checked > 10, "{checked} packets checked");
}
