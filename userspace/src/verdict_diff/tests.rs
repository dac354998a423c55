//! Hand-checked diffs of small policy pairs; `tests/verdict_diff.rs` checks
//! random pairs against the model.

use std::path::PathBuf;

use super::*;
use crate::{
    compile::compile,
    config::Limits,
    policy::{Environment, Source, from_sources},
};

fn build(yaml: &str) -> (Policy, CompiledPolicy) {
    let env = Environment {
        gateway: vec![],
        ntp: vec!["100.127.0.123".parse().unwrap()],
    };
    let source = Source {
        path: PathBuf::from("p.yaml"),
        text: yaml.into(),
    };
    let policy = from_sources(&[source], &env).unwrap().policy;
    let tables = compile(&policy, &Limits::default()).unwrap();
    (policy, tables)
}

fn lines_of(old: &str, new: &str) -> Vec<String> {
    let (old_policy, old_tables) = build(old);
    let (new_policy, new_tables) = build(new);
    let d = diff(
        Side {
            policy: &old_policy,
            tables: &old_tables,
        },
        Side {
            policy: &new_policy,
            tables: &new_tables,
        },
    );
    render::lines(&d, &new_policy)
        .into_iter()
        .map(|l| l.text)
        .collect()
}

const BASE: &str = "\
unknown-devices: deny
groups:
  meters:
    devices: [10.64.0.0/16]
    default: deny
    rules:
      - allow: {to: 192.0.2.0/24, proto: udp, ports: [\"5000-5999\"], id: telemetry}
";

#[test]
fn the_same_policy_changes_nothing() {
    assert!(lines_of(BASE, BASE).is_empty());
}

#[test]
fn a_new_rule_opens_one_port_of_one_prefix() {
    let new = format!(
        "{BASE}      - allow: {{to: 203.0.113.0/24, proto: tcp, ports: [443], id: new-backend}}\n"
    );
    assert_eq!(
        lines_of(BASE, &new),
        ["meters: 203.0.113.0/24 tcp/443 deny → allow (rule new-backend)"]
    );
}

#[test]
fn a_narrower_port_range_closes_the_rest() {
    let new = BASE.replace("5000-5999", "5000-5499");
    assert_eq!(
        lines_of(BASE, &new),
        ["meters: 192.0.2.0/24 udp/5500-5999 allow → deny (default, was rule telemetry)"]
    );
}

#[test]
fn a_new_default_changes_every_destination_no_rule_decides() {
    let new = BASE.replace("default: deny", "default: allow");
    let lines = lines_of(BASE, &new);
    // Everything but UDP alike; UDP around the telemetry ports and the
    // built-in NTP allow (UDP/123 to 100.127.0.123).
    assert_eq!(
        lines[0],
        "meters: 0.0.0.0/0 any except udp deny → allow (default)"
    );
    assert!(lines[1].starts_with("meters: 0.0.0.0/2, 64.0.0.0/3, "));
    assert!(lines[1].ends_with(" (+46 more) udp deny → allow (default)"));
    assert_eq!(
        lines[2..],
        [
            "meters: 100.127.0.123/32 udp/0-122,124-65535,unknown deny → allow (default)",
            "meters: 192.0.2.0/24 udp/0-4999,6000-65535,unknown deny → allow (default)",
        ]
    );
}

#[test]
fn moved_devices_are_listed_with_what_changes_for_them() {
    let new = format!("{BASE}  cameras:\n    devices: [10.64.5.0/24]\n    default: allow\n");
    let lines = lines_of(BASE, &new);
    assert_eq!(lines[0], "devices 10.64.5.0/24: meters → cameras");
    assert_eq!(
        lines[1],
        "meters → cameras: 0.0.0.0/0 any except udp deny → allow (default)"
    );
    assert_eq!(
        lines[lines.len() - 2..],
        [
            "meters → cameras: 192.0.2.0/24 udp/5000-5999 allow (same verdict) \
             (default, was rule telemetry)",
            "group cameras added",
        ]
    );
}

#[test]
fn newly_shadowed_rules_are_reported() {
    let new = format!(
        "{BASE}      - deny: {{to: 192.0.2.0/24, proto: udp, ports: [\"5000-5999\"], id: no-telemetry}}\n"
    );
    let lines = lines_of(BASE, &new);
    assert_eq!(
        lines.last().unwrap(),
        "meters: rule telemetry never decides now: rule(s) no-telemetry take every destination it matches"
    );
}
