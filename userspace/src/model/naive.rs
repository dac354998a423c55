//! The verdict semantics of the language, evaluated literally over the
//! validated policy: no tables, no precomputed inheritance, no pruning. It
//! exists to be obviously right, so the compiled model can be checked
//! against it, and it keeps every candidate so `explain` can say why the
//! winner won.
//!
//! It implements steps 4-12 of [`tollgate_common::precedence`] as the
//! language reference words them, each tagged `// step N:`.

use std::{cmp::Reverse, fmt, net::IpAddr};

use ipnet::IpNet;
use tollgate_common::{DecisionReason, Verdict};

use crate::{
    policy::{
        ALL_PORTS_WIDTH, Action, Device, Group, NTP_PORT, PROTO_UDP, Policy, PortRange, Rule,
        RuleId,
    },
    tables::PacketFacts,
};

/// The outcome, with everything that competed for it.
#[derive(Clone, Debug)]
pub struct Evaluation<'p> {
    /// `None`: the source is in no group.
    pub group: Option<GroupMatch<'p>>,
    /// Every candidate, the winner first.
    pub candidates: Vec<Candidate<'p>>,
    pub verdict: Verdict,
    pub reason: DecisionReason,
    /// The FQDN rule whose learned address decided (step 12).
    pub learned: Option<&'p Rule>,
}

/// An address the gateway's DNS forwarder learned for an FQDN rule of a
/// group, and that has not expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub group: String,
    pub addr: IpAddr,
    pub rule: String,
}

impl Evaluation<'_> {
    /// The deciding rule's id, when a rule decided.
    pub fn rule_id(&self) -> Option<&RuleId> {
        if let Some(rule) = self.learned {
            return Some(&rule.id);
        }
        match self.candidates.first()?.rule {
            RuleOrBuiltin::Rule(rule) => Some(&rule.id),
            RuleOrBuiltin::BuiltinNtp(_) => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct GroupMatch<'p> {
    pub id: u32,
    pub group: &'p Group,
    /// The device prefix that chose the group.
    pub device: &'p Device,
}

/// A rule (or the built-in) that matches the packet.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'p> {
    pub rule: RuleOrBuiltin<'p>,
    pub action: Action,
    /// The longest of its destination prefixes that contains D.
    pub prefix: IpNet,
    /// The `to` item that prefix came from.
    pub target: &'p str,
    pub proto: Option<u8>,
    /// The narrowest of its port ranges that contains X; `None`: no `ports`.
    pub ports: Option<PortRange>,
    /// Position of the rule in its group (the built-in comes after all).
    pub order: usize,
}

/// What a candidate is: a rule of the group, or the built-in allow of
/// UDP/123 to one NTP address.
#[derive(Clone, Copy, Debug)]
pub enum RuleOrBuiltin<'p> {
    Rule(&'p Rule),
    BuiltinNtp(IpAddr),
}

/// Why a candidate lost to the winner: the first tie-break that separates
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Beaten {
    LongerPrefix,
    SpecificProtocol,
    NarrowerPorts,
    DenyOverAllow,
    RejectOverAllow,
    DenyOverReject,
    ExplicitOverBuiltin,
    EarlierInFile,
}

impl fmt::Display for Beaten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Beaten::LongerPrefix => "the winner's destination prefix is longer",
            Beaten::SpecificProtocol => "the winner names a protocol, this one is any",
            Beaten::NarrowerPorts => "the winner's port range is narrower",
            Beaten::DenyOverAllow => "equal specificity: deny wins over allow",
            Beaten::RejectOverAllow => "equal specificity: reject wins over allow",
            Beaten::DenyOverReject => "equal specificity: deny wins over reject",
            Beaten::ExplicitOverBuiltin => {
                "equal specificity: an explicit rule wins over the built-in"
            }
            Beaten::EarlierInFile => {
                "same verdict and specificity: the first rule in the file is counted"
            }
        })
    }
}

impl Candidate<'_> {
    pub fn port_width(&self) -> u32 {
        self.ports.map_or(ALL_PORTS_WIDTH, |p| p.width())
    }

    /// The ranking of step 9 and its remaining ties; the largest wins.
    fn rank(&self) -> (u8, bool, Reverse<u32>, u8, bool, Reverse<usize>) {
        // step 9: prefix, proto, ports, deny/reject/allow; then explicit, file order
        (
            self.prefix.prefix_len(),
            self.proto.is_some(),
            Reverse(self.port_width()),
            self.action.strictness(),
            matches!(self.rule, RuleOrBuiltin::Rule(_)),
            Reverse(self.order),
        )
    }

    /// Why `self` lost to `winner`.
    pub fn lost_to(&self, winner: &Candidate) -> Beaten {
        let (a, b) = (winner.rank(), self.rank());
        if a.0 != b.0 {
            Beaten::LongerPrefix
        } else if a.1 != b.1 {
            Beaten::SpecificProtocol
        } else if a.2 != b.2 {
            Beaten::NarrowerPorts
        } else if a.3 != b.3 {
            match (winner.action, self.action) {
                (Action::Reject, _) => Beaten::RejectOverAllow,
                (_, Action::Reject) => Beaten::DenyOverReject,
                _ => Beaten::DenyOverAllow,
            }
        } else if a.4 != b.4 {
            Beaten::ExplicitOverBuiltin
        } else {
            Beaten::EarlierInFile
        }
    }
}

/// Evaluates `packet` against `policy`, step by step as the language says,
/// with no learned address.
pub fn evaluate<'p>(policy: &'p Policy, packet: &PacketFacts) -> Evaluation<'p> {
    evaluate_learned(policy, &[], packet)
}

/// Evaluates `packet` against `policy` and the live learned addresses.
pub fn evaluate_learned<'p>(
    policy: &'p Policy,
    learned: &[Learned],
    packet: &PacketFacts,
) -> Evaluation<'p> {
    // step 4: the group whose devices contain S most specifically
    let group = policy
        .groups
        .iter()
        .enumerate()
        .flat_map(|(i, group)| {
            group.devices.iter().map(move |device| GroupMatch {
                id: i as u32 + 1,
                group,
                device,
            })
        })
        .filter(|m| m.device.prefix.contains(&packet.src))
        .max_by_key(|m| m.device.prefix.prefix_len());
    let Some(group) = group else {
        // step 5: no group, `unknown-devices` decides and nothing else applies
        let verdict = policy.unknown_devices.verdict(false);
        return Evaluation {
            group: None,
            candidates: Vec::new(),
            verdict,
            reason: DecisionReason::UnknownDevice,
            learned: None,
        };
    };

    let mut candidates: Vec<Candidate> = group
        .group
        .rules
        .iter()
        .enumerate()
        .filter_map(|(order, rule)| candidate(rule, order, packet))
        .collect();
    // step 8: the built-in NTP allow, a candidate at full length
    for addr in &policy.ntp {
        if *addr == packet.dst && packet.proto == PROTO_UDP && packet.dport == Some(NTP_PORT) {
            candidates.push(Candidate {
                rule: RuleOrBuiltin::BuiltinNtp(*addr),
                action: Action::Allow,
                prefix: IpNet::from(*addr),
                target: "ntp",
                proto: Some(PROTO_UDP),
                ports: Some(PortRange::new(NTP_PORT, NTP_PORT)),
                order: usize::MAX,
            });
        }
    }
    // step 9: the winner first
    candidates.sort_by_key(|c| Reverse(c.rank()));

    let learned = candidates
        .is_empty()
        .then(|| learned_rule(policy, group.group, learned, packet))
        .flatten();
    let (action, reason) = match candidates.first() {
        Some(Candidate {
            rule: RuleOrBuiltin::BuiltinNtp(_),
            action,
            ..
        }) => (*action, DecisionReason::BuiltinNtp),
        Some(winner) => (winner.action, DecisionReason::Rule),
        // step 12: no candidate, but an address learned for an FQDN rule
        None if learned.is_some() => (Action::Allow, DecisionReason::Learned),
        // step 10: no candidate, the group's default
        None => (group.group.default, DecisionReason::GroupDefault),
    };
    // step 11: audit mode turns a deny or a reject into audit-deny
    let verdict = match (action, group.group.audit) {
        (Action::Allow, _) => Verdict::Allow,
        (Action::Deny | Action::Reject, true) => Verdict::AuditDeny,
        (Action::Deny, false) => Verdict::Deny,
        (Action::Reject, false) => Verdict::Reject,
    };
    Evaluation {
        group: Some(group),
        candidates,
        verdict,
        reason,
        learned,
    }
}

/// The first FQDN rule of the group, in file order, for which the packet's
/// destination was learned and whose proto and ports match, if the
/// destination may be learned at all.
fn learned_rule<'p>(
    policy: &'p Policy,
    group: &'p Group,
    learned: &[Learned],
    packet: &PacketFacts,
) -> Option<&'p Rule> {
    let dst = packet.dst;
    // step 12: never a gateway address, a device's, or one a deny or reject rule contains
    let forbidden = policy.gateway.contains(&dst)
        || policy
            .groups
            .iter()
            .flat_map(|g| &g.devices)
            .any(|d| d.prefix.contains(&dst))
        || group
            .rules
            .iter()
            .filter(|r| r.action.refuses())
            .flat_map(|r| r.prefixes())
            .any(|net| net.contains(&dst));
    if forbidden {
        return None;
    }
    group.rules.iter().find(|rule| {
        !rule.fqdn.is_empty()
            && learned
                .iter()
                .any(|l| l.group == group.name && l.addr == dst && l.rule == rule.id.as_str())
            && proto_and_ports(rule, packet).is_some()
    })
}

/// The rule as a candidate for this packet, if it matches.
fn candidate<'p>(rule: &'p Rule, order: usize, packet: &PacketFacts) -> Option<Candidate<'p>> {
    let ports = proto_and_ports(rule, packet)?;
    // step 6: `to` contains D, at its longest prefix
    let (target, prefix) = rule
        .targets
        .iter()
        .flat_map(|t| t.prefixes.iter().map(move |p| (t.written.as_str(), *p)))
        .filter(|(_, p)| p.contains(&packet.dst))
        .max_by_key(|(_, p)| p.prefix_len())?;
    Some(Candidate {
        rule: RuleOrBuiltin::Rule(rule),
        action: rule.action,
        prefix,
        target,
        proto: rule.proto,
        ports,
        order,
    })
}

/// `Some` when the rule's proto and ports match the packet: its narrowest
/// port range containing X, `None` inside for a rule without `ports`.
fn proto_and_ports(rule: &Rule, packet: &PacketFacts) -> Option<Option<PortRange>> {
    // step 7: protocol
    if rule.proto.is_some_and(|p| p != packet.proto) {
        return None;
    }
    // step 7: ports, at the narrowest item; an unknown port never matches
    match (&rule.ports, packet.dport) {
        (None, _) => Some(None),
        (Some(_), None) => None,
        (Some(list), Some(port)) => Some(Some(
            *list
                .iter()
                .filter(|r| r.contains(port))
                .min_by_key(|r| r.width())?,
        )),
    }
}
