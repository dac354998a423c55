//! Hand-checked decisions over a small policy; the property test in
//! `tests/tests/model_agreement.rs` covers the rest against the naive evaluator.

use std::path::PathBuf;

use super::*;
use crate::{
    compile::compile,
    config::Limits,
    policy::{Environment, Source, from_sources},
};

const POLICY: &str = "\
unknown-devices: deny
groups:
  cameras:
    devices: [10.65.0.0/16, 10.64.0.9]
    default: deny
    mode: audit
    rules:
      - allow: {to: 203.0.113.0/24, proto: tcp, ports: [443], id: ingest}
  meters:
    devices: [10.64.0.0/16]
    default: deny
    rules:
      - allow: {to: 192.0.2.0/24, proto: udp, ports: [\"5000-5999\"], id: telemetry}
      - deny: {to: 192.0.2.0/24, proto: udp, id: no-udp}
";

fn tables() -> CompiledPolicy {
    let env = Environment {
        gateway: vec![],
        ntp: vec!["100.127.0.123".parse().unwrap()],
    };
    let source = Source {
        path: PathBuf::from("p.yaml"),
        text: POLICY.into(),
    };
    compile(
        &from_sources(&[source], &env).unwrap().policy,
        &Limits::default(),
    )
    .unwrap()
}

fn decide(src: &str, dst: &str, proto: u8, dport: Option<u16>) -> Decision {
    verdict(
        &tables(),
        &PacketFacts {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            dport,
        },
    )
}

#[test]
fn an_exact_device_address_wins_over_a_prefix() {
    let d = decide("10.64.0.9", "203.0.113.5", 6, Some(443));
    assert_eq!((d.group, d.group_name.as_str()), (1, "cameras"));
    assert_eq!(d.device, Some("10.64.0.9/32".parse().unwrap()));
    assert_eq!(d.rule, Some(RuleId::new("ingest")));
    assert_eq!(d.reason, DecisionReason::Rule);
    let d = decide("10.64.0.10", "203.0.113.5", 6, Some(443));
    assert_eq!(d.group_name, "meters");
    assert_eq!(d.device, Some("10.64.0.0/16".parse().unwrap()));
}

#[test]
fn audit_turns_deny_into_audit_deny_and_charges_the_default() {
    let t = tables();
    let d = decide("10.65.1.1", "198.51.100.1", 6, Some(443));
    assert_eq!(d.verdict, Verdict::AuditDeny);
    assert_eq!(d.reason, DecisionReason::GroupDefault);
    assert_eq!(d.counter, t.groups[1].default_counter);
    assert_eq!(d.destination, None);
}

#[test]
fn an_unknown_port_never_matches_a_port_range() {
    // A non-first UDP fragment: the telemetry range cannot match, the
    // port-less deny does.
    let d = decide("10.64.1.1", "192.0.2.7", 17, None);
    assert_eq!(
        (d.verdict, d.rule),
        (Verdict::Deny, Some(RuleId::new("no-udp")))
    );
    let d = decide("10.64.1.1", "192.0.2.7", 17, Some(5353));
    assert_eq!(
        (d.verdict, d.rule),
        (Verdict::Allow, Some(RuleId::new("telemetry")))
    );
    assert_eq!(d.destination, Some("192.0.2.0/24".parse().unwrap()));
}

#[test]
fn unknown_devices_and_the_builtin_ntp_allow() {
    let t = tables();
    let d = decide("192.168.1.1", "100.127.0.123", 17, Some(123));
    assert_eq!(
        (d.group, d.verdict, d.reason),
        (0, Verdict::Deny, DecisionReason::UnknownDevice)
    );
    assert_eq!(d.counter, t.groups[0].default_counter);
    let d = decide("10.64.1.1", "100.127.0.123", 17, Some(123));
    assert_eq!(
        (d.verdict, d.reason, d.rule),
        (Verdict::Allow, DecisionReason::BuiltinNtp, None)
    );
    assert_eq!(
        t.counters[d.counter as usize],
        CounterOwner::Decision {
            group: "meters".into(),
            decider: Decider::BuiltinNtp
        }
    );
    // Other ports to the NTP address: the group default.
    let d = decide("10.64.1.1", "100.127.0.123", 17, Some(124));
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Deny, DecisionReason::GroupDefault)
    );
}
