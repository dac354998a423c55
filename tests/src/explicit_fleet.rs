//! Shape (b) of issue 14: a fleet written as many explicit rules across
//! many groups, the way a new user writes one. Each group has a file of its
//! own (`groups/gNNN.yaml`) with its devices (/32s) and its rules; each rule
//! names one cloud prefix (from [`crate::bench::Pool`]), one port, and a
//! protocol in turn TCP, UDP or any (any has no port). Every seventh rule
//! denies, the rest allow; groups default to deny.
//!
//! Used by the `reload` benchmark (100,000 rules in 100 groups and
//! 1,000,000 devices) and, scaled down, by the tests that check the default
//! limits and incremental installs.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
};

use ipnet::IpNet;
use tollgate::policy::{Action, Device, Group, Origin, Policy, PortRange, Rule, RuleId, Target};

/// How big the fleet is.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub groups: usize,
    pub rules_per_group: usize,
    /// Device /32s in all, spread evenly over the groups.
    pub devices: usize,
}

impl Shape {
    /// The issue's shape: 100,000 rules in 100 groups, 1,000,000 devices.
    pub const ISSUE: Shape = Shape {
        groups: 100,
        rules_per_group: 1_000,
        devices: 1_000_000,
    };

    pub fn rules(&self) -> usize {
        self.groups * self.rules_per_group
    }
}

/// Group `g`'s name.
pub fn group_name(g: usize) -> String {
    format!("g{g:03}")
}

/// Group `g`'s file, relative to the policy directory.
pub fn group_path(g: usize) -> String {
    format!("groups/{}.yaml", group_name(g))
}

/// Device `i` of the fleet: 10.0.0.1 onwards.
pub fn device(i: usize) -> Ipv4Addr {
    Ipv4Addr::from((10u32 << 24) + 1 + i as u32)
}

/// The devices of group `g`.
pub fn devices_of(shape: &Shape, g: usize) -> std::ops::Range<usize> {
    let per = shape.devices / shape.groups;
    let extra = if g + 1 == shape.groups {
        shape.devices % shape.groups
    } else {
        0
    };
    g * per..(g + 1) * per + extra
}

/// Rule `j` of a group, to `prefix`, with port `port` (unused for `any`).
pub fn rule_line(j: usize, prefix: &IpNet, port: u16) -> String {
    let action = if j % 7 == 6 { "deny" } else { "allow" };
    match j % 3 {
        0 => format!("      - {action}: {{to: \"{prefix}\", proto: tcp, ports: [{port}]}}\n"),
        1 => format!("      - {action}: {{to: \"{prefix}\", proto: udp, ports: [{port}]}}\n"),
        _ => format!("      - {action}: {{to: \"{prefix}\"}}\n"),
    }
}

/// The port of rule `j` (1024 onwards).
pub fn port(j: usize) -> u16 {
    1024 + (j % 60_000) as u16
}

/// Group `g`'s file: its devices and its rules, taking its prefixes from
/// `prefixes` (the whole fleet's, `shape.rules()` of them).
pub fn group_file(shape: &Shape, prefixes: &[IpNet], g: usize) -> String {
    let mut text = format!("groups:\n  {}:\n    devices:\n", group_name(g));
    for i in devices_of(shape, g) {
        let _ = writeln!(text, "      - {}", device(i));
    }
    text.push_str("    default: deny\n    rules:\n");
    let first = g * shape.rules_per_group;
    for j in 0..shape.rules_per_group {
        text.push_str(&rule_line(j, &prefixes[first + j], port(j)));
    }
    text
}

/// Every file of the fleet's policy, as `policy::from_sources` reads them.
pub fn sources(shape: &Shape, prefixes: &[IpNet]) -> Vec<tollgate::policy::Source> {
    files(shape, prefixes)
        .into_iter()
        .map(|(path, text)| tollgate::policy::Source {
            path: path.into(),
            text,
        })
        .collect()
}

/// Every file of the fleet's policy: (relative path, text).
pub fn files(shape: &Shape, prefixes: &[IpNet]) -> Vec<(String, String)> {
    assert!(prefixes.len() >= shape.rules(), "a prefix per rule");
    (0..shape.groups)
        .map(|g| (group_path(g), group_file(shape, prefixes, g)))
        .collect()
}

/// A small group file (four lines and a rule): one new device, one rule.
pub fn small_group_file(name: &str, device: Ipv4Addr, to: &str) -> String {
    format!(
        "groups:\n  {name}:\n    devices: [{device}]\n    default: deny\n    rules:\n      \
         - allow: {{to: \"{to}\", proto: tcp, ports: [443]}}\n"
    )
}

/// The policy [`files`] describes, built as `validate` would produce it but
/// without YAML: the tests that need the issue's full size cannot afford to
/// parse 1.1 million lines in a debug build. `the_fleet_builder_matches_its_files`
/// in `dataplane_scale` checks that both compile alike.
pub fn policy(shape: &Shape, prefixes: &[IpNet]) -> Policy {
    assert!(prefixes.len() >= shape.rules(), "a prefix per rule");
    let origin = |file: &str, line: usize| Origin {
        file: file.into(),
        line,
        column: 1,
    };
    let groups = (0..shape.groups)
        .map(|g| {
            let file = group_path(g);
            let devices: Vec<Device> = devices_of(shape, g)
                .map(|i| Device {
                    prefix: IpNet::from(IpAddr::V4(device(i))),
                    line: 4,
                    column: 1,
                })
                .collect();
            let first = g * shape.rules_per_group;
            let rules = (0..shape.rules_per_group)
                .map(|j| {
                    let prefix = prefixes[first + j];
                    let action = if j % 7 == 6 {
                        Action::Deny
                    } else {
                        Action::Allow
                    };
                    let (proto, ports) = match j % 3 {
                        0 => (Some(6), Some(vec![PortRange::new(port(j), port(j))])),
                        1 => (Some(17), Some(vec![PortRange::new(port(j), port(j))])),
                        _ => (None, None),
                    };
                    let written = prefix.to_string();
                    Rule {
                        id: RuleId::derived(
                            action,
                            std::slice::from_ref(&written),
                            proto,
                            ports.as_deref(),
                        ),
                        action,
                        targets: vec![Target {
                            written,
                            prefixes: vec![prefix],
                        }],
                        fqdn: Vec::new(),
                        proto,
                        ports,
                        comment: None,
                        origin: origin(&file, 6 + devices.len() + j),
                    }
                })
                .collect();
            Group {
                name: group_name(g),
                description: None,
                devices,
                default: Action::Deny,
                audit: false,
                rules,
                origin: origin(&file, 2),
                default_origin: origin(&file, 5),
            }
            .into()
        })
        .collect();
    Policy {
        groups,
        unknown_devices: Action::Deny,
        unknown_devices_origin: None,
        ntp: Vec::new(),
        gateway: Vec::new(),
    }
}
