//! `expect:` cases: packets written next to the policy with the verdict
//! (and optionally the deciding rule) they must get. `tollgate test`
//! evaluates them on the model; the daemon also runs them on the kernel
//! before it makes a policy live (see `crate::expectations`).
//!
//! Checked here like every other value: each error names the file, line and
//! column of the offending field.

use std::{collections::HashMap, fmt, net::IpAddr, path::Path};

use ipnet::IpNet;
use tollgate_common::Verdict;

use super::{
    Origin, Policy, has_ports, parse::ParsedFile, parse_proto, proto_name, spec::ExpectSpec,
};
use crate::{
    diagnostic::{Diagnostic, quote},
    tables::{Decider, PacketFacts, UNKNOWN_GROUP_NAME},
};

/// Cases a policy may carry, over all its files: each is a packet the daemon
/// runs through the kernel before every flip, so their number bounds how
/// long a reload takes.
pub const MAX_EXPECTATIONS: usize = 10_000;

/// One validated case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub packet: PacketFacts,
    pub verdict: Verdict,
    /// The deciding rule id (or `default`, `builtin-ntp`), when the case
    /// names one.
    pub rule: Option<String>,
    /// The case's first key in its file.
    pub origin: Origin,
    /// Its field path, `expect[i]`.
    pub field: String,
}

impl Expectation {
    /// What the case expects, as messages say it: `allow (rule aws-iot)`.
    pub fn expected(&self) -> String {
        match &self.rule {
            Some(rule) => format!("{} (rule {rule})", self.verdict.label()),
            None => self.verdict.label().to_string(),
        }
    }
}

/// How messages show a case's packet: `10.64.0.10 → 13.112.10.10 tcp/8883`.
pub struct ShownPacket<'a>(pub &'a PacketFacts);

impl fmt::Display for ShownPacket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        write!(f, "{} → {} {}", p.src, p.dst, proto_name(Some(p.proto)))?;
        match p.dport {
            Some(port) => write!(f, "/{port}"),
            None => Ok(()),
        }
    }
}

/// Checks and resolves the `expect:` cases of every file, appending what is
/// wrong to `out`. `rule` is checked against `policy` only when `policy` is
/// valid (`policy_valid`): a group that failed to validate would make every
/// case naming its rules look wrong too.
pub(super) fn resolve(
    files: &[&ParsedFile],
    policy: &Policy,
    policy_valid: bool,
    out: &mut Vec<Diagnostic>,
) -> Vec<Expectation> {
    // Indexing a fleet's 10^6 devices costs more than the rest of a
    // reload's checks: only when there are cases to place.
    let any_cases = files
        .iter()
        .any(|f| f.spec.as_ref().is_some_and(|s| !s.expect.is_empty()));
    let groups = (policy_valid && any_cases).then(|| DeviceIndex::new(policy));
    let mut cases = Vec::new();
    let mut over_limit = false;
    for f in files {
        let Some(spec) = &f.spec else { continue };
        for (i, case) in spec.expect.iter().enumerate() {
            let field = format!("expect[{i}]");
            let at = |path: &str| {
                let mark = f.positions.value(path);
                Origin {
                    file: f.file.clone(),
                    line: mark.line,
                    column: mark.column,
                }
            };
            if cases.len() == MAX_EXPECTATIONS {
                if !over_limit {
                    let message = format!(
                        "more than {MAX_EXPECTATIONS} expectations in the policy; \
                         each runs on the kernel before every reload"
                    );
                    push(out, &at(&field), &field, message);
                    over_limit = true;
                }
                continue;
            }
            let mut report = |path: &str, message: String| push(out, &at(path), path, message);
            if let Some(expectation) = case_of(case, &field, &mut report, groups.as_ref()) {
                cases.push(Expectation {
                    origin: at(&field),
                    field,
                    ..expectation
                });
            }
        }
    }
    cases
}

fn push(out: &mut Vec<Diagnostic>, origin: &Origin, field: &str, message: String) {
    out.push(Diagnostic::error(
        Path::new(&*origin.file),
        origin.line,
        origin.column,
        field,
        message,
    ));
}

/// One case, or `None` after reporting what is wrong with it. The origin
/// and field of the result are left for the caller to fill.
fn case_of(
    case: &ExpectSpec,
    field: &str,
    report: &mut impl FnMut(&str, String),
    groups: Option<&DeviceIndex>,
) -> Option<Expectation> {
    let mut required = |value: &Option<super::spec::Scalar>, key: &str, what: &str| {
        if value.is_none() {
            report(field, format!("missing `{key}` ({what})"));
        }
        value
            .as_ref()
            .map(|v| (format!("{field}.{key}"), v.0.clone()))
    };
    let from = required(&case.from, "from", "the source address");
    let to = required(&case.to, "to", "the destination address");
    let proto = required(&case.proto, "proto", "tcp | udp | icmp | icmpv6 | 0-255");
    let verdict = required(&case.verdict, "verdict", verdict_choices().as_str());

    let mut address = |found: Option<(String, String)>| {
        let (path, text) = found?;
        text.parse::<IpAddr>()
            .map_err(|_| report(&path, format!("{} is not an IP address", quote(&text))))
            .ok()
            .map(|addr| (path, addr))
    };
    let src = address(from);
    let dst = address(to);
    if let (Some((_, s)), Some((path, d))) = (&src, &dst)
        && s.is_ipv4() != d.is_ipv4()
    {
        report(
            path,
            format!("{d} and the source {s} are of different families"),
        );
    }
    let proto = proto.and_then(|(path, text)| match parse_proto(&text) {
        Ok(Some(proto)) => Some(proto),
        Ok(None) => {
            report(
                &path,
                "a packet has one protocol: tcp | udp | icmp | icmpv6 | 0-255".into(),
            );
            None
        }
        Err(message) => {
            report(&path, message);
            None
        }
    });
    let port_path = format!("{field}.port");
    let port = match (proto, &case.port) {
        (Some(p), None) if has_ports(p) => {
            let name = proto_name(Some(p));
            report(field, format!("missing `port`: {name} packets carry one"));
            None
        }
        (Some(p), Some(port)) if !has_ports(p) => {
            let name = proto_name(Some(p));
            report(
                &port_path,
                format!("{name} packets carry no port the policy reads; only tcp and udp do"),
            );
            None
        }
        (_, Some(port)) => match parse_port(&port.0) {
            Ok(port) => Some(port),
            Err(message) => {
                report(&port_path, message);
                None
            }
        },
        (_, None) => None,
    };
    let verdict = verdict.and_then(|(path, text)| {
        let found = Verdict::ALL.into_iter().find(|v| v.label() == text);
        if found.is_none() {
            let message = format!("{} is not a verdict ({})", quote(&text), verdict_choices());
            report(&path, message);
        }
        found
    });
    let rule = case.rule.as_ref().map(|r| r.0.clone());
    let (src, dst, proto, verdict) = (src?.1, dst?.1, proto?, verdict?);
    if has_ports(proto) && port.is_none() {
        return None;
    }
    if let (Some(rule), Some(groups)) = (&rule, groups)
        && let Err(message) = groups.check_rule(src, rule)
    {
        report(&format!("{field}.rule"), message);
        return None;
    }
    Some(Expectation {
        packet: PacketFacts {
            src,
            dst,
            proto,
            dport: port,
        },
        verdict,
        rule,
        origin: Origin {
            file: "".into(),
            line: 0,
            column: 0,
        },
        field: String::new(),
    })
}

/// `allow | deny | audit-deny | reject`: every verdict there is.
fn verdict_choices() -> String {
    Verdict::ALL.map(Verdict::label).join(" | ")
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u16>().ok())
        .flatten()
        .ok_or_else(|| format!("{} is not a port (0-65535)", quote(text)))
}

/// Which group each device prefix chooses, to find the group a case's
/// source falls in as the dataplane would (longest prefix).
struct DeviceIndex<'p> {
    policy: &'p Policy,
    prefixes: HashMap<IpNet, usize>,
}

impl<'p> DeviceIndex<'p> {
    fn new(policy: &'p Policy) -> Self {
        let prefixes = policy
            .groups
            .iter()
            .enumerate()
            .flat_map(|(i, g)| g.devices.iter().map(move |d| (d.prefix, i)))
            .collect();
        DeviceIndex { policy, prefixes }
    }

    /// Whether `rule` can decide for `src`: a rule of its group, that
    /// group's `default`, or the built-in NTP allow; for a source in no
    /// group only `default` (`unknown-devices`).
    fn check_rule(&self, src: IpAddr, rule: &str) -> Result<(), String> {
        let max = IpNet::from(src).prefix_len();
        let group = (0..=max).rev().find_map(|len| {
            let net = IpNet::new(src, len).expect("length within family").trunc();
            self.prefixes.get(&net).map(|&i| &self.policy.groups[i])
        });
        let default = Decider::GroupDefault.rule_id();
        match group {
            None if rule == default => Ok(()),
            None => Err(format!(
                "{src} is in no group ({UNKNOWN_GROUP_NAME}): only `{default}` \
                 (unknown-devices) decides for it, not {}",
                quote(rule)
            )),
            Some(_) if rule == default || rule == Decider::BuiltinNtp.rule_id() => Ok(()),
            Some(g) if g.rules.iter().any(|r| r.id.as_str() == rule) => Ok(()),
            Some(g) => Err(format!(
                "{} is not a rule of group \"{}\", the group of {src} \
                 (rule ids, `{default}` or `{}`)",
                quote(rule),
                g.name,
                Decider::BuiltinNtp.rule_id()
            )),
        }
    }
}
