//! The userspace packet model on fuzzer-chosen policies and packets.
//!
//! The bytes choose either the example policy in `policies/` or a small
//! policy over a small address universe (so prefixes nest, overlap and tie,
//! and packets hit them), written as YAML and loaded and compiled as the
//! controller does; then a few packets. For each packet, the compiled model
//! (`model::verdict`, what the kernel does) and the naive evaluator
//! (`model::naive`, the language semantics) must agree on group, device,
//! verdict, reason, deciding rule and counter; `explain` must report exactly
//! that decision, list the candidates with the winner first, and render.
//! Nothing may panic.

#![no_main]

use std::{
    collections::HashSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::OnceLock,
};

use arbitrary::{Arbitrary, Unstructured};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use tollgate::{
    compile::compile,
    config::Limits,
    explain::explain,
    model::{self, naive},
    policy::{Environment, Policy, Source, from_sources},
    tables::{CompiledPolicy, CounterOwner, Decider, PacketFacts},
};
use tollgate_common::DecisionReason;

/// The example policy of the README, as `tollgate check policies/` reads it.
const EXAMPLES: [(&str, &str); 5] = [
    (
        "policies/cameras.yaml",
        include_str!("../../../policies/cameras.yaml"),
    ),
    (
        "policies/defaults.yaml",
        include_str!("../../../policies/defaults.yaml"),
    ),
    (
        "policies/lists/public-resolvers.yaml",
        include_str!("../../../policies/lists/public-resolvers.yaml"),
    ),
    (
        "policies/meters.yaml",
        include_str!("../../../policies/meters.yaml"),
    ),
    (
        "policies/quarantine.yaml",
        include_str!("../../../policies/quarantine.yaml"),
    ),
];

// The address universe: a few hosts of each family, and prefix lengths
// that cut between them.
const V4: [[u8; 4]; 8] = [
    [10, 64, 0, 5],
    [10, 64, 1, 9],
    [10, 65, 0, 1],
    [10, 64, 0, 1],
    [192, 0, 2, 200],
    [192, 0, 2, 20],
    [100, 127, 0, 123],
    [203, 0, 113, 10],
];
const V4_LENGTHS: [u8; 8] = [0, 8, 10, 16, 23, 24, 25, 32];
const V6: [[u16; 8]; 6] = [
    [0xfd00, 0x64, 0, 0, 0, 0, 0, 5],
    [0xfd00, 0x64, 0, 1, 0, 0, 0, 9],
    [0xfd00, 0x64, 0, 0, 0, 0, 0, 1],
    [0xfd00, 0, 0, 0, 0, 0, 0, 0x123],
    [0x2001, 0xdb8, 0x65, 0, 0, 0, 0, 0x10],
    [0x2001, 0xdb8, 0x65, 0x8000, 0, 0, 0, 0x10],
];
const V6_LENGTHS: [u8; 8] = [0, 16, 32, 48, 64, 120, 127, 128];
const PORTS: [u16; 8] = [0, 22, 53, 123, 443, 1000, 8883, 65535];
const PROTOS: [u8; 6] = [6, 17, 1, 58, 47, 0];

const NTP: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(100, 127, 0, 123)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x123)),
];
const GATEWAY: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 64, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x64, 0, 0, 0, 0, 0, 1)),
];

const MAX_LISTS: usize = 3;
const MAX_GROUPS: usize = 4;
const MAX_RULES: usize = 6;
const MAX_ITEMS: usize = 3;
const MAX_PACKETS: usize = 16;

#[derive(Arbitrary, Debug)]
struct Input {
    policy: PolicyChoice,
    packets: Vec<PacketSpec>,
}

#[derive(Arbitrary, Debug)]
enum PolicyChoice {
    Examples,
    Generated(PolicySpec),
}

#[derive(Arbitrary, Debug)]
struct PolicySpec {
    /// `None`: not set (deny).
    unknown_devices_allow: Option<bool>,
    /// Which of the two NTP addresses the `ntp` keyword stands for.
    ntp: (bool, bool),
    lists: Vec<Vec<NetSpec>>,
    groups: Vec<GroupSpec>,
    /// Lists in one file, groups in another.
    split: bool,
}

#[derive(Arbitrary, Debug)]
struct GroupSpec {
    devices: Vec<NetSpec>,
    default_allow: bool,
    audit: bool,
    rules: Vec<RuleSpec>,
}

#[derive(Arbitrary, Debug)]
struct RuleSpec {
    deny: bool,
    to: Vec<Target>,
    proto: ProtoSpec,
    /// Only written when the protocol is TCP or UDP.
    ports: Option<Vec<PortsSpec>>,
    /// An explicit id; otherwise the derived one (two rules that mean the
    /// same then collide, an error the loader reports).
    explicit_id: bool,
}

#[derive(Arbitrary, Debug)]
enum Target {
    Net(NetSpec),
    List(u8),
    Any,
    Gateway,
    Ntp,
}

#[derive(Arbitrary, Debug)]
enum ProtoSpec {
    Any,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Number(u8),
}

#[derive(Arbitrary, Debug)]
struct PortsSpec {
    lo: u8,
    hi: u8,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct NetSpec {
    v6: bool,
    /// A host of the family's universe (modulo its size).
    host: u8,
    /// A length of the family's list (modulo 8); from 128 on, a full-length
    /// prefix is written as a bare address.
    length: u8,
}

#[derive(Arbitrary, Debug)]
struct PacketSpec {
    src: AddrSpec,
    dst: AddrSpec,
    proto: u8,
    /// `None`: a non-first fragment (or a protocol without ports).
    dport: Option<u16>,
}

#[derive(Arbitrary, Debug)]
enum AddrSpec {
    /// A host of the universe, its last byte flipped by `tweak`.
    Universe {
        host: u8,
        tweak: u8,
    },
    /// Anywhere.
    V4(u32),
    V6(u128),
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else {
        return;
    };
    let generated;
    let (policy, tables) = match &input.policy {
        PolicyChoice::Examples => {
            let examples = examples();
            (&examples.0, &examples.1)
        }
        PolicyChoice::Generated(spec) => {
            let Some(built) = build(spec) else { return };
            generated = built;
            (&generated.0, &generated.1)
        }
    };
    for spec in input.packets.iter().take(MAX_PACKETS) {
        check(policy, tables, &packet(spec));
    }
});

/// The example policy, loaded once.
fn examples() -> &'static (Policy, CompiledPolicy) {
    static EXAMPLES_LOADED: OnceLock<(Policy, CompiledPolicy)> = OnceLock::new();
    EXAMPLES_LOADED.get_or_init(|| {
        let sources: Vec<Source> = EXAMPLES
            .iter()
            .map(|(path, text)| Source {
                path: PathBuf::from(path),
                text: (*text).into(),
            })
            .collect();
        let env = Environment {
            gateway: vec![GATEWAY[0]],
            ntp: vec![NTP[0]],
        };
        let policy = from_sources(&sources, &env)
            .expect("the example policy is valid")
            .policy;
        let tables = compile(&policy, &Limits::default()).expect("the example policy compiles");
        (policy, tables)
    })
}

/// The generated policy as YAML, loaded and compiled; `None` when the
/// loader or the compiler rejects it (a legitimate outcome: this target is
/// about the model, `policy_check` about rejection).
fn build(spec: &PolicySpec) -> Option<(Policy, CompiledPolicy)> {
    let lists = &spec.lists[..spec.lists.len().min(MAX_LISTS)];
    let mut lists_yaml = String::new();
    if !lists.is_empty() {
        lists_yaml.push_str("lists:\n");
        for (i, nets) in lists.iter().enumerate() {
            let _ = writeln!(lists_yaml, "  l{i}:");
            for net in nets.iter().take(MAX_ITEMS) {
                let _ = writeln!(lists_yaml, "    - \"{}\"", written(*net));
            }
            if nets.is_empty() {
                lists_yaml.push_str("    []\n");
            }
        }
    }
    let mut groups_yaml = String::new();
    if let Some(allow) = spec.unknown_devices_allow {
        let verdict = if allow { "allow" } else { "deny" };
        let _ = writeln!(groups_yaml, "unknown-devices: {verdict}");
    }
    // A prefix in two groups is an error: each goes to the first group
    // that names it.
    let mut taken = HashSet::new();
    groups_yaml.push_str("groups:\n");
    for (g, group) in spec.groups.iter().take(MAX_GROUPS).enumerate() {
        let _ = writeln!(groups_yaml, "  g{g}:");
        let devices: Vec<String> = group
            .devices
            .iter()
            .take(MAX_ITEMS)
            .filter(|d| taken.insert(net(**d)))
            .map(|d| format!("\"{}\"", written(*d)))
            .collect();
        let _ = writeln!(groups_yaml, "    devices: [{}]", devices.join(", "));
        let default = if group.default_allow { "allow" } else { "deny" };
        let _ = writeln!(groups_yaml, "    default: {default}");
        if group.audit {
            groups_yaml.push_str("    mode: audit\n");
        }
        let rules = &group.rules[..group.rules.len().min(MAX_RULES)];
        if rules.is_empty() {
            continue;
        }
        groups_yaml.push_str("    rules:\n");
        for (r, rule) in rules.iter().enumerate() {
            let action = if rule.deny { "deny" } else { "allow" };
            let mut to: Vec<String> = rule
                .to
                .iter()
                .take(MAX_ITEMS)
                .map(|t| match t {
                    Target::Net(n) => format!("\"{}\"", written(*n)),
                    Target::List(i) if !lists.is_empty() => {
                        format!("l{}", usize::from(*i) % lists.len())
                    }
                    Target::List(_) | Target::Any => "any".into(),
                    Target::Gateway => "gateway".into(),
                    Target::Ntp => "ntp".into(),
                })
                .collect();
            if to.is_empty() {
                to.push("any".into());
            }
            let (proto, has_ports) = match rule.proto {
                ProtoSpec::Any => ("any".to_string(), false),
                ProtoSpec::Tcp => ("tcp".into(), true),
                ProtoSpec::Udp => ("udp".into(), true),
                ProtoSpec::Icmp => ("icmp".into(), false),
                ProtoSpec::Icmpv6 => ("icmpv6".into(), false),
                ProtoSpec::Number(n) => (n.to_string(), n == 6 || n == 17),
            };
            let _ = write!(
                groups_yaml,
                "      - {action}: {{to: [{}], proto: {proto}",
                to.join(", ")
            );
            if let Some(ports) = rule.ports.as_ref().filter(|p| has_ports && !p.is_empty()) {
                let ports: Vec<String> = ports
                    .iter()
                    .take(MAX_ITEMS)
                    .map(|p| {
                        let (a, b) = (port(p.lo), port(p.hi));
                        let (lo, hi) = (a.min(b), a.max(b));
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("\"{lo}-{hi}\"")
                        }
                    })
                    .collect();
                let _ = write!(groups_yaml, ", ports: [{}]", ports.join(", "));
            }
            if rule.explicit_id {
                let _ = write!(groups_yaml, ", id: r{r}");
            }
            groups_yaml.push_str("}\n");
        }
    }
    let sources = if spec.split {
        vec![
            source("generated/groups.yaml", groups_yaml),
            source("generated/lists.yaml", lists_yaml),
        ]
    } else {
        vec![source("generated/policy.yaml", lists_yaml + &groups_yaml)]
    };
    let ntp = [spec.ntp.0, spec.ntp.1]
        .iter()
        .zip(NTP)
        .filter(|(on, _)| **on)
        .map(|(_, addr)| addr)
        .collect();
    let env = Environment {
        gateway: GATEWAY.to_vec(),
        ntp,
    };
    let loaded = from_sources(&sources, &env);
    if debug() {
        for s in &sources {
            eprintln!("--- {}\n{}", s.path.display(), s.text);
        }
        match &loaded {
            Ok(l) => l.warnings.iter().for_each(|w| eprintln!("{w}")),
            Err(errors) => errors.iter().for_each(|e| eprintln!("{e}")),
        }
    }
    let policy = loaded.ok()?.policy;
    let tables = compile(&policy, &Limits::default()).ok()?;
    Some((policy, tables))
}

/// `PACKET_MODEL_DEBUG=1`: print each generated policy, its diagnostics and
/// each packet's explanation (to see what an input stands for).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("PACKET_MODEL_DEBUG").is_some())
}

fn source(path: &str, text: String) -> Source {
    Source {
        path: PathBuf::from(path),
        text,
    }
}

fn net(spec: NetSpec) -> IpNet {
    let i = usize::from(spec.host);
    let l = usize::from(spec.length) % 8;
    let (addr, length) = if spec.v6 {
        (IpAddr::from(V6[i % V6.len()]), V6_LENGTHS[l])
    } else {
        (IpAddr::from(V4[i % V4.len()]), V4_LENGTHS[l])
    };
    IpNet::new(addr, length)
        .expect("lengths within the family")
        .trunc()
}

/// A prefix as written: a full-length one sometimes as a bare address.
fn written(spec: NetSpec) -> String {
    let n = net(spec);
    if n.prefix_len() == n.max_prefix_len() && spec.length >= 128 {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn port(index: u8) -> u16 {
    PORTS[usize::from(index) % PORTS.len()]
}

fn packet(spec: &PacketSpec) -> PacketFacts {
    let addr = |a: &AddrSpec| match *a {
        AddrSpec::Universe { host, tweak } => {
            let i = usize::from(host) % (V4.len() + V6.len());
            let flip = [0, 1, 0x80, 0xff][usize::from(tweak) % 4];
            if i < V4.len() {
                let mut v4 = V4[i];
                v4[3] ^= flip;
                IpAddr::from(v4)
            } else {
                let mut v6 = V6[i - V4.len()];
                v6[7] ^= u16::from(flip);
                IpAddr::from(v6)
            }
        }
        AddrSpec::V4(a) => IpAddr::from(Ipv4Addr::from(a)),
        AddrSpec::V6(a) => IpAddr::from(Ipv6Addr::from(a)),
    };
    // Mostly protocols the policies name, and ports they use.
    let proto = match spec.proto {
        p if p < 192 => PROTOS[usize::from(p) % PROTOS.len()],
        p => p,
    };
    let dport = spec.dport.map(|p| match p {
        p if p < 0xc000 => PORTS[usize::from(p) % PORTS.len()],
        p => p,
    });
    PacketFacts {
        src: addr(&spec.src),
        dst: addr(&spec.dst),
        proto,
        dport,
    }
}

/// The invariants between the compiled model, the naive semantics and
/// `explain` (see `model.rs`, `model/naive.rs`, `explain.rs`).
fn check(policy: &Policy, tables: &CompiledPolicy, packet: &PacketFacts) {
    let decision = model::verdict(tables, packet);
    let evaluation = naive::evaluate(policy, packet);
    let context = || format!("{packet:?}\ncompiled {decision:?}\nnaive {evaluation:?}");
    assert_eq!(
        decision.group,
        evaluation.group.map_or(0, |g| g.id),
        "group: {}",
        context()
    );
    assert_eq!(
        decision.device,
        evaluation.group.map(|g| g.device.prefix),
        "device: {}",
        context()
    );
    assert_eq!(
        decision.verdict,
        evaluation.verdict,
        "verdict: {}",
        context()
    );
    assert_eq!(decision.reason, evaluation.reason, "reason: {}", context());
    assert_eq!(
        decision.rule.as_ref(),
        evaluation.rule_id(),
        "rule: {}",
        context()
    );
    let decider = match evaluation.reason {
        DecisionReason::Rule => Decider::Rule(
            evaluation
                .rule_id()
                .expect("a rule decided")
                .as_str()
                .into(),
        ),
        DecisionReason::BuiltinNtp => Decider::BuiltinNtp,
        _ => Decider::GroupDefault,
    };
    assert_eq!(
        tables.counters[decision.counter as usize],
        CounterOwner::Decision {
            group: decision.group_name.as_str().into(),
            decider,
        },
        "counter: {}",
        context()
    );
    if decision.reason == DecisionReason::BuiltinNtp {
        assert!(
            policy.ntp.contains(&packet.dst) && packet.proto == 17 && packet.dport == Some(123),
            "built-in NTP allow for {packet:?}"
        );
    }

    let explanation = explain(policy, tables, packet);
    assert_eq!(explanation.group, decision.group_name);
    assert_eq!(explanation.group_id, decision.group);
    assert_eq!(
        explanation.device_prefix,
        decision.device.map(|d| d.to_string())
    );
    // explain reports the model's own decision.
    let (verdict, reason) = (decision.verdict.label(), decision.reason.label());
    assert_eq!(explanation.verdict, decision.verdict, "{}", context());
    assert_eq!(explanation.reason, decision.reason, "{}", context());
    assert_eq!(explanation.counter, decision.counter);
    assert_eq!(
        explanation.rule_id.as_deref(),
        decision.rule.as_ref().map(|r| r.as_str())
    );
    assert_eq!(explanation.candidates.len(), evaluation.candidates.len());
    match explanation.candidates.split_first() {
        Some((winner, losers)) => {
            assert!(winner.won && winner.lost_on.is_none() && winner.why.is_none());
            assert!(losers.iter().all(|c| !c.won && c.why.is_some()));
            if let Some(id) = &explanation.rule_id {
                assert_eq!(&winner.rule_id, id, "{}", context());
                assert!(explanation.rule.is_some(), "a rule decided, but where?");
            }
        }
        None => assert!(
            matches!(
                decision.reason,
                DecisionReason::GroupDefault | DecisionReason::UnknownDevice
            ),
            "no candidate, yet {reason}"
        ),
    }
    let text = explanation.render();
    if debug() {
        eprintln!("{text}");
    }
    assert!(text.contains(verdict), "{text}");
    serde_json::to_string(&explanation).expect("an explanation serialises");
}
