//! Random policies and packets for the property tests: the model agreement
//! test (compiled model vs naive semantics) and the kernel differential test
//! (kernel vs compiled model) draw from the same generator.
//!
//! Policies and packets come from a small address universe so that prefixes
//! nest, overlap and tie, and packets hit them. A policy is built as
//! `validate` would produce it, without going through YAML.

use std::sync::Arc;
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;
use proptest::{
    collection::vec,
    prelude::*,
    sample::{Index, select},
    test_runner::{Config, TestRunner},
};
use tollgate::{
    compile::compile,
    config::Limits,
    policy::{Action, Device, Group, Origin, Policy, PortRange, Rule, RuleId, Target},
    tables::{CompiledPolicy, PacketFacts},
};

pub const NTP_V4: Ipv4Addr = Ipv4Addr::new(100, 127, 0, 123);
pub const NTP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x123);

fn v4() -> impl Strategy<Value = IpAddr> {
    (
        select(vec![10u8, 100, 192]),
        select(vec![0u8, 1, 127]),
        select(vec![0u8, 1, 2]),
        select(vec![0u8, 1, 123, 128, 255]),
    )
        .prop_map(|(a, b, c, d)| IpAddr::from([a, b, c, d]))
}

fn v6() -> impl Strategy<Value = IpAddr> {
    (
        select(vec![0u16, 1]),
        select(vec![0u16, 1]),
        select(vec![0u16, 1, 0x123, 0x8000, 0xffff]),
    )
        .prop_map(|(a, b, c)| IpAddr::from(Ipv6Addr::new(0xfd00, a, 0, 0, 0, 0, b, c)))
}

fn prefix() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (v4(), select(vec![0u8, 8, 16, 23, 24, 25, 31, 32])),
        (v6(), select(vec![0u8, 16, 32, 64, 112, 127, 128])),
    ]
    .prop_map(|(addr, len)| IpNet::new(addr, len).unwrap().trunc())
}

const PORTS: [u16; 8] = [0, 50, 53, 100, 123, 443, 1000, 65535];

fn port_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        select(PORTS.to_vec()).prop_map(|p| PortRange::new(p, p)),
        (select(PORTS.to_vec()), select(PORTS.to_vec()))
            .prop_map(|(a, b)| PortRange::new(a.min(b), a.max(b))),
    ]
}

/// A protocol and, for TCP/UDP, maybe ports.
fn proto_ports() -> impl Strategy<Value = (Option<u8>, Option<Vec<PortRange>>)> {
    prop_oneof![
        Just((None, None)),
        select(vec![1u8, 58, 47]).prop_map(|p| (Some(p), None)),
        (
            select(vec![6u8, 17]),
            proptest::option::weighted(0.7, vec(port_range(), 1..4))
        )
            .prop_map(|(p, ports)| (Some(p), ports)),
    ]
}

/// A rule's or a default's action: each of the three, allow most often so
/// that both halves of every tie-break between them come up.
fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::Allow),
        2 => Just(Action::Deny),
        2 => Just(Action::Reject),
    ]
}

#[derive(Clone, Debug)]
struct RuleSpec {
    action: Action,
    to: Vec<IpNet>,
    any: bool,
    proto: Option<u8>,
    ports: Option<Vec<PortRange>>,
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    let general = (
        action(),
        vec(prefix(), 1..3),
        proptest::bool::weighted(0.15),
        proto_ports(),
    )
        .prop_map(|(action, to, any, (proto, ports))| RuleSpec {
            action,
            to,
            any,
            proto,
            ports,
        });
    // Rules that compete with the built-in NTP allow on its own ground.
    let ntp = (
        action(),
        select(vec![
            IpNet::from(IpAddr::from(NTP_V4)),
            IpNet::from(IpAddr::from(NTP_V6)),
        ]),
        select(vec![
            PortRange::new(123, 123),
            PortRange::new(100, 200),
            PortRange::new(0, 65535),
        ]),
    )
        .prop_map(|(action, to, ports)| RuleSpec {
            action,
            to: vec![to],
            any: false,
            proto: Some(17),
            ports: Some(vec![ports]),
        });
    prop_oneof![6 => general, 1 => ntp]
}

#[derive(Clone, Debug)]
struct GroupSpec {
    devices: Vec<IpNet>,
    default: Action,
    audit: bool,
    rules: Vec<RuleSpec>,
}

/// A rule to `any` with many port ranges: it lands in every rule list of
/// its group, so those lists outgrow one kernel record and chain.
fn wide_rule() -> impl Strategy<Value = RuleSpec> {
    (action(), select(vec![6u8, 17]), vec(port_range(), 9..12)).prop_map(
        |(action, proto, ports)| RuleSpec {
            action,
            to: vec![],
            any: true,
            proto: Some(proto),
            ports: Some(ports),
        },
    )
}

/// A group's rules: up to 7 (each at most 3 port ranges), or up to 5 and
/// one wide rule; either way a list stays within the dataplane's 32
/// entries (21 + the NTP allow, or 15 + 11 + 1; an entry a rule's more
/// specific prefix shadows is dropped, so a rule counts once).
fn rules() -> impl Strategy<Value = Vec<RuleSpec>> {
    prop_oneof![
        3 => vec(rule(), 0..8),
        1 => (vec(rule(), 0..6), wide_rule()).prop_map(|(mut rules, wide)| {
            rules.push(wide);
            rules
        }),
    ]
}

fn group() -> impl Strategy<Value = GroupSpec> {
    (
        vec(prefix(), 0..4),
        action(),
        proptest::bool::weighted(0.3),
        rules(),
    )
        .prop_map(|(devices, default, audit, rules)| GroupSpec {
            devices,
            default,
            audit,
            rules,
        })
}

/// A random valid policy over a small address universe.
pub fn policy() -> impl Strategy<Value = Policy> {
    (
        vec(group(), 1..5),
        any::<bool>(),
        select(vec![
            vec![],
            vec![IpAddr::from(NTP_V4)],
            vec![NTP_V4.into(), NTP_V6.into()],
        ]),
    )
        .prop_map(|(groups, unknown_deny, ntp)| build(groups, unknown_deny, ntp))
}

fn origin(line: usize) -> Origin {
    Origin {
        file: "random.yaml".into(),
        line,
        column: 1,
    }
}

/// A policy as `validate` would produce it: names sorted, each device prefix
/// in one group only, ids unique in their group.
fn build(groups: Vec<GroupSpec>, unknown_deny: bool, ntp: Vec<IpAddr>) -> Policy {
    let mut taken = HashSet::new();
    let groups = groups
        .into_iter()
        .enumerate()
        .map(|(g, spec)| Group {
            name: format!("g{g}"),
            description: None,
            devices: spec
                .devices
                .into_iter()
                .filter(|p| taken.insert(*p))
                .map(|prefix| Device {
                    prefix,
                    line: 1,
                    column: 1,
                })
                .collect(),
            default: spec.default,
            audit: spec.audit,
            rules: spec
                .rules
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut targets: Vec<Target> =
                        r.to.iter()
                            .map(|p| Target {
                                written: p.to_string(),
                                prefixes: vec![*p],
                            })
                            .collect();
                    if r.any {
                        targets.push(Target {
                            written: "any".into(),
                            prefixes: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
                        });
                    }
                    Rule {
                        id: RuleId::new(&format!("r{i}")),
                        action: r.action,
                        targets,
                        fqdn: Vec::new(),
                        proto: r.proto,
                        ports: r.ports,
                        comment: None,
                        origin: origin(i + 10),
                    }
                })
                .collect(),
            origin: origin(1),
            default_origin: origin(1),
        })
        .map(Arc::new)
        .collect();
    Policy {
        groups,
        unknown_devices: if unknown_deny {
            Action::Deny
        } else {
            Action::Allow
        },
        unknown_devices_origin: None,
        ntp,
        gateway: Vec::new(),
    }
}

/// Packets for `policy`: sources mostly from its device prefixes, and
/// destinations often at the edges of its rule prefixes and at the NTP
/// addresses, so that most packets meet groups and rules.
pub fn packets(policy: &Policy, count: usize) -> impl Strategy<Value = Vec<PacketFacts>> + use<> {
    let sources: Vec<IpAddr> = policy
        .groups
        .iter()
        .flat_map(|g| &g.devices)
        .flat_map(|d| [d.prefix.network(), d.prefix.broadcast()])
        .collect();
    let destinations: Vec<IpAddr> = policy
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .flat_map(|r| r.prefixes())
        .flat_map(|p| [p.network(), p.broadcast()])
        .chain(policy.ntp.iter().copied())
        .collect();
    let ports = vec![0u16, 52, 53, 54, 100, 122, 123, 124, 443, 444, 1000, 65535];
    let transport = prop_oneof![
        select(vec![1u8, 58, 47]).prop_map(|p| (p, None)),
        (
            select(vec![6u8, 17]),
            // None: a non-first fragment.
            proptest::option::weighted(0.85, select(ports))
        ),
    ];
    let ntp = policy.ntp.clone();
    let packet = (
        any::<bool>(),
        (0..4u8, any::<Index>(), v4(), v6()),
        (0..2u8, any::<Index>(), v4(), v6()),
        transport,
        proptest::bool::weighted(0.15),
    )
        .prop_map(move |(v6, src, dst, (proto, dport), ntp_query)| {
            let src = pick(v6, src, &sources);
            match ntp.iter().find(|a| a.is_ipv6() == v6) {
                Some(server) if ntp_query => PacketFacts {
                    src,
                    dst: *server,
                    proto: 17,
                    dport: Some(123),
                },
                _ => PacketFacts {
                    src,
                    dst: pick(v6, dst, &destinations),
                    proto,
                    dport,
                },
            }
        });
    vec(packet, count)
}

/// An address of the wanted family: from `hot` unless `choice` is 0 or
/// `hot` has none of that family, else from the universe.
fn pick(
    v6: bool,
    (choice, index, v4, v6_addr): (u8, Index, IpAddr, IpAddr),
    hot: &[IpAddr],
) -> IpAddr {
    let family: Vec<IpAddr> = hot.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
    match (choice, family.is_empty(), v6) {
        (1.., false, _) => *index.get(&family),
        (_, _, false) => v4,
        (_, _, true) => v6_addr,
    }
}

/// The id of the FQDN rule [`with_fqdn_rules`] gives every group.
pub const LEARNED_RULE: &str = "learned";

/// `policy` with one FQDN rule more in each group, matching the protocol
/// and ports of the group's first rule (every protocol and port when it
/// has none), so that learned addresses compete with the random rules.
pub fn with_fqdn_rules(policy: &Policy) -> Policy {
    let mut policy = policy.clone();
    for group in &mut policy.groups {
        let group = Arc::make_mut(group);
        let (proto, ports) = group
            .rules
            .first()
            .map_or((None, None), |r| (r.proto, r.ports.clone()));
        let ports = ports.map(|mut p| {
            p.truncate(tollgate_common::LEARNED_RULES);
            p
        });
        group.rules.push(Rule {
            id: RuleId::new(LEARNED_RULE),
            action: Action::Allow,
            targets: Vec::new(),
            fqdn: vec![tollgate::policy::FqdnPattern::parse("learned.test").unwrap()],
            proto,
            ports,
            comment: None,
            origin: origin(90),
        });
    }
    policy
}

/// A proptest runner of `cases` cases that writes no regression files.
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `test` on `policies` random policies, each given its FQDN rules
/// ([`with_fqdn_rules`]) and compiled, with `packets_per_policy` random
/// packets drawn for it: the cases of the model agreement and kernel
/// differential tests. Panics with the smallest failing case proptest
/// finds, or when a policy does not compile.
pub fn run_policies(
    policies: u32,
    packets_per_policy: usize,
    test: impl Fn(&Policy, &CompiledPolicy, &[PacketFacts]) -> Result<(), TestCaseError>,
) {
    runner(policies)
        .run(
            &policy().prop_flat_map(move |p| (Just(p.clone()), packets(&p, packets_per_policy))),
            |(policy, packets)| {
                let policy = with_fqdn_rules(&policy);
                let tables = compile(&policy, &Limits::default())
                    .map_err(|e| TestCaseError::fail(format!("compile failed: {e:#?}")))?;
                test(&policy, &tables, &packets)
            },
        )
        .unwrap();
}

/// What the DNS forwarder learns for the cases of `packets`: (group id,
/// destination, live) for some of them, by index: for the packet's own
/// group, live or expired, or live for another group (so that groups stay
/// apart). `group_of` gives a source's group id (0: none).
pub fn learned_for(
    packets: &[PacketFacts],
    groups: u32,
    group_of: impl Fn(IpAddr) -> u32,
) -> Vec<(u32, IpAddr, bool)> {
    packets
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let own = group_of(p.src);
            if own == 0 || groups == 0 {
                return None;
            }
            match i % 6 {
                0 | 1 => Some((own, p.dst, true)),
                2 => Some((own, p.dst, false)),
                3 => Some((own % groups + 1, p.dst, true)),
                _ => None,
            }
        })
        .collect()
}
