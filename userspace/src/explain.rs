//! `tollgate explain`: why a packet is allowed or dropped.
//!
//! The verdict comes from the compiled model (what the kernel does); the
//! list of competing rules comes from the naive evaluator, which keeps every
//! candidate. The two are asserted to agree (the property tests prove they
//! always do).

pub mod fqdn;
mod live;

use std::fmt::{self, Write as _};

use serde::{Serialize, Serializer};
use tollgate_common::{DecisionReason, Verdict};

use crate::{
    control::Lease,
    model::{
        self,
        naive::{self, Beaten, Candidate, RuleOrBuiltin},
    },
    policy::{Action, Origin, Policy, proto_name},
    tables::{CompiledPolicy, Decider, PacketFacts},
};

/// Everything `explain` reports; serialised as its JSON output.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub packet: PacketView,
    pub group: String,
    pub group_id: u32,
    /// The device prefix that chose the group; `null` for unknown devices.
    pub device_prefix: Option<String>,
    /// Where that device prefix is written.
    pub device_at: Option<Place>,
    /// `allow`, `deny`, `reject` or `audit-deny` in JSON.
    #[serde(serialize_with = "verdict_label")]
    pub verdict: Verdict,
    /// `rule`, `group-default`, `unknown-device` or `builtin-ntp` in JSON.
    #[serde(serialize_with = "reason_label")]
    pub reason: DecisionReason,
    /// The deciding rule's place; `null` unless a rule decided.
    pub rule: Option<Place>,
    pub rule_id: Option<String>,
    /// Where the decider is written: the rule, the group's `default:` or
    /// `unknown-devices:` (`null` for the built-in and an unset default).
    pub decided_at: Option<Place>,
    /// The logical counter charged (an index into the compiled counters).
    pub counter: u32,
    /// Every rule that matched, the winner first.
    pub candidates: Vec<CandidateView>,
    /// The source's group's `default` as written (`None`: no group), which
    /// audit mode hides behind the verdict; for the text form only.
    #[serde(skip)]
    pub group_default: Option<Action>,
    /// With `--live`: what the gateway's DNS forwarder learned the
    /// destination for in the source's group, with expiries (absent
    /// without `--live`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<Vec<Lease>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Place {
    pub file: String,
    pub line: usize,
}

impl From<&Origin> for Place {
    fn from(o: &Origin) -> Self {
        Place {
            file: o.file.to_string(),
            line: o.line,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PacketView {
    pub src: String,
    pub dst: String,
    pub proto: String,
    /// `null` when unknown (non-TCP/UDP, non-first fragment).
    pub dport: Option<u16>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CandidateView {
    /// The rule id, or `builtin-ntp`.
    pub rule_id: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub action: Action,
    /// The `to` item that matched and the prefix it contributed.
    pub to: String,
    pub prefix: String,
    pub proto: String,
    /// The port item that matched; `null` when the rule has no ports.
    pub ports: Option<String>,
    pub won: bool,
    /// The tie-break it lost on (`null` for the winner).
    pub lost_on: Option<Beaten>,
    /// The same, in words, with the values compared.
    pub why: Option<String>,
}

/// Explains how `tables` (compiled from `policy`) decide `packet`, with no
/// learned address.
pub fn explain(policy: &Policy, tables: &CompiledPolicy, packet: &PacketFacts) -> Explanation {
    explain_with(policy, tables, None, packet)
}

/// Explains how the gateway decides `packet` now: `tables` (compiled from
/// `policy`) and `leases`, the addresses its DNS forwarder has learned
/// (precedence step 12).
pub fn explain_live(
    policy: &Policy,
    tables: &CompiledPolicy,
    leases: &[Lease],
    packet: &PacketFacts,
) -> Explanation {
    explain_with(policy, tables, Some(leases), packet)
}

fn explain_with(
    policy: &Policy,
    tables: &CompiledPolicy,
    leases: Option<&[Lease]>,
    packet: &PacketFacts,
) -> Explanation {
    let leases = leases.map(|all| live::of_destination(all, packet.dst));
    let (decision, evaluation) = match &leases {
        // Live leases stand until their expiry: judge at time 0 with
        // expiries beyond it.
        Some(leases) => (
            model::verdict_learned(tables, &live::destinations(tables, leases), 0, packet),
            naive::evaluate_learned(policy, &live::naive(leases), packet),
        ),
        None => (
            model::verdict(tables, packet),
            naive::evaluate(policy, packet),
        ),
    };
    debug_assert_eq!(
        (
            decision.group,
            decision.verdict,
            decision.reason,
            decision.rule.as_ref()
        ),
        (
            evaluation.group.map_or(0, |g| g.id),
            evaluation.verdict,
            evaluation.reason,
            evaluation.rule_id()
        ),
        "the compiled model and the naive semantics disagree on {packet:?}"
    );

    let group = evaluation.group;
    let winner = evaluation.candidates.first();
    let decided_at = match decision.reason {
        DecisionReason::Rule => winner.and_then(|w| rule_origin(w)).map(Place::from),
        DecisionReason::GroupDefault => group.map(|g| Place::from(&g.group.default_origin)),
        DecisionReason::UnknownDevice => policy.unknown_devices_origin.as_ref().map(Place::from),
        DecisionReason::Learned => evaluation.learned.map(|r| Place::from(&r.origin)),
        _ => None,
    };
    let candidates = evaluation
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| candidate_view(c, (i > 0).then_some(winner).flatten()))
        .collect();
    let learned = leases.map(|l| {
        l.into_iter()
            .filter(|l| l.group == decision.group_name)
            .collect()
    });
    Explanation {
        packet: PacketView {
            src: packet.src.to_string(),
            dst: packet.dst.to_string(),
            proto: proto_name(Some(packet.proto)),
            dport: packet.dport,
        },
        group: decision.group_name,
        group_id: decision.group,
        device_prefix: decision.device.map(|d| d.to_string()),
        device_at: group.map(|g| Place::from(&g.group.device_origin(g.device))),
        verdict: decision.verdict,
        reason: decision.reason,
        rule: (decision.reason == DecisionReason::Rule)
            .then(|| decided_at.clone())
            .flatten(),
        rule_id: decision.rule.map(|r| r.to_string()),
        group_default: group.map(|g| g.group.default),
        learned,
        decided_at,
        counter: decision.counter,
        candidates,
    }
}

fn rule_origin<'p>(c: &Candidate<'p>) -> Option<&'p Origin> {
    match c.rule {
        RuleOrBuiltin::Rule(rule) => Some(&rule.origin),
        RuleOrBuiltin::BuiltinNtp(_) => None,
    }
}

fn candidate_view(c: &Candidate, winner: Option<&Candidate>) -> CandidateView {
    let origin = rule_origin(c);
    let lost_on = winner.map(|w| c.lost_to(w));
    CandidateView {
        rule_id: match c.rule {
            RuleOrBuiltin::Rule(rule) => rule.id.to_string(),
            RuleOrBuiltin::BuiltinNtp(_) => Decider::BuiltinNtp.rule_id().into(),
        },
        file: origin.map(|o| o.file.to_string()),
        line: origin.map(|o| o.line),
        action: c.action,
        to: c.target.to_string(),
        prefix: c.prefix.to_string(),
        proto: proto_name(c.proto),
        ports: c.ports.map(|p| p.to_string()),
        won: winner.is_none(),
        lost_on,
        why: winner.zip(lost_on).map(|(w, beaten)| why(beaten, w, c)),
    }
}

/// The tie-break in words, with the two values it compared.
fn why(beaten: Beaten, winner: &Candidate, loser: &Candidate) -> String {
    let detail = match beaten {
        Beaten::LongerPrefix => format!(
            "/{} over /{}",
            winner.prefix.prefix_len(),
            loser.prefix.prefix_len()
        ),
        Beaten::SpecificProtocol => format!("{} over any", proto_name(winner.proto)),
        Beaten::NarrowerPorts => format!(
            "{} over {}",
            ports_words(winner.port_width(), winner),
            ports_words(loser.port_width(), loser)
        ),
        Beaten::DenyOverAllow
        | Beaten::RejectOverAllow
        | Beaten::DenyOverReject
        | Beaten::ExplicitOverBuiltin
        | Beaten::EarlierInFile => {
            return beaten.to_string();
        }
    };
    format!("{beaten} ({detail})")
}

fn ports_words(width: u32, c: &Candidate) -> String {
    match c.ports {
        None => "all ports".into(),
        Some(p) if width == 1 => format!("port {p}"),
        Some(p) => format!("{width} ports {p}"),
    }
}

impl Explanation {
    /// The operator-facing text form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, text: &str| {
            let _ = writeln!(out, "{label:<10}{text}");
        };
        let p = &self.packet;
        let port = match p.dport {
            Some(d) => format!(" port {d}"),
            None if p.proto == "tcp" || p.proto == "udp" => ", port unknown".to_string(),
            None => String::new(),
        };
        line(
            "packet",
            &format!("{} -> {} {}{port}", p.src, p.dst, p.proto),
        );
        match (&self.device_prefix, &self.device_at) {
            (Some(prefix), Some(at)) => line(
                "group",
                &format!("{} (device prefix {prefix}, {at})", self.group),
            ),
            _ => line(
                "group",
                &format!("{} ({} is in no group's devices)", self.group, p.src),
            ),
        }
        let audit = match self.verdict {
            Verdict::AuditDeny => " (audit mode: counted and reported, the packet passes)",
            Verdict::Reject => " (dropped, and the device told: TCP reset or ICMP unreachable)",
            _ => "",
        };
        line("verdict", &format!("{}{audit}", self.verdict.label()));
        let at = |place: &Option<Place>| place.as_ref().map_or(String::new(), |p| format!(", {p}"));
        match self.reason {
            DecisionReason::Rule => {
                let w = &self.candidates[0];
                line(
                    "decided",
                    &format!("rule {}{}", w.rule_id, at(&self.decided_at)),
                );
                line("", &describe(w));
            }
            DecisionReason::BuiltinNtp => line(
                "decided",
                &format!(
                    "built-in ntp: every group may query the NTP address {} on udp port 123",
                    p.dst
                ),
            ),
            DecisionReason::UnknownDevice => line(
                "decided",
                &match &self.decided_at {
                    Some(place) => format!(
                        "unknown device: unknown-devices is {} ({place})",
                        self.verdict.label()
                    ),
                    None => "unknown device: unknown-devices is not set, so deny".to_string(),
                },
            ),
            DecisionReason::Learned => line(
                "decided",
                &format!(
                    "rule {}{}: {} was learned from the gateway's DNS forwarder for it",
                    self.rule_id.as_deref().unwrap_or("?"),
                    at(&self.decided_at),
                    p.dst
                ),
            ),
            DecisionReason::GroupDefault => {
                // As written: in audit mode the verdict is audit-deny.
                let default = self.group_default.unwrap_or(Action::Deny);
                line(
                    "decided",
                    &format!(
                        "group default ({default}{}): no rule of {} matches",
                        at(&self.decided_at),
                        self.group
                    ),
                );
            }
        }
        for c in self.candidates.iter().skip(1) {
            let place = match (&c.file, c.line) {
                (Some(file), Some(line)) => format!(", {file}:{line}"),
                _ => String::new(),
            };
            line("beat", &format!("{}{place}", c.rule_id));
            line("", &describe(c));
            line(
                "",
                &format!("lost: {}", c.why.as_deref().unwrap_or_default()),
            );
        }
        match self.learned.as_deref() {
            None => {}
            Some([]) => line(
                "learned",
                &format!(
                    "nothing: the gateway's DNS forwarder has not learned {} for {}",
                    p.dst, self.group
                ),
            ),
            Some(leases) => {
                for l in leases {
                    line("learned", &lease_line(l));
                }
            }
        }
        out
    }
}

/// `for rule aws-iot, from a1-ats.iot.example.com, expires in 42 s (…)`.
fn lease_line(l: &Lease) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(l.expires_at_unix);
    format!(
        "for rule {}, from the answer for {}, expires in {} s ({})",
        l.rule_id,
        l.name,
        l.expires_in_s,
        humantime::format_rfc3339_seconds(at)
    )
}

fn verdict_label<S: Serializer>(verdict: &Verdict, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(verdict.label())
}

fn reason_label<S: Serializer>(reason: &DecisionReason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(reason.label())
}

/// `allow tcp to aws-tokyo (13.112.0.0/14) port 443`: the rule as it
/// matched this packet.
fn describe(c: &CandidateView) -> String {
    let proto = if c.proto == "any" {
        "any protocol"
    } else {
        &c.proto
    };
    let to = if c.to == c.prefix {
        c.prefix.clone()
    } else {
        format!("{} ({})", c.to, c.prefix)
    };
    let ports = match &c.ports {
        None => String::new(),
        Some(p) if p.contains('-') => format!(" ports {p}"),
        Some(p) => format!(" port {p}"),
    };
    format!("{} {proto} to {to}{ports}", c.action)
}
