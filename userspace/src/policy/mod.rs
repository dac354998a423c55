//! The policy language: loading a directory of YAML files, validating it and
//! the validated [`Policy`] that `compile` and the reference model read.
//!
//! - [`spec`]: one file as written, its serde model: strict in structure,
//!   lenient in leaves.
//! - [`positions`]: line and column of every value, for semantic errors.
//! - `tree`: the same walk's events kept as a document, deserialised into
//!   the spec as yaml_serde would, so each file is parsed once.
//! - `parse`: one file's text into its spec and positions.
//! - [`load`]: reads the directory, parses each file, hands all of them to
//!   `validate`, which merges them and resolves names and keywords.
//! - `stamp`: when a file's stat says it is unchanged, so it is not read.
//! - [`rule_id`]: stable rule ids.
//! - [`expect`]: the `expect:` cases, packets and the verdict they must get.
//!
//! The language reference, with the verdict semantics, is
//! `policies/README.md`.

mod device_counts;
pub mod expect;
#[cfg(test)]
mod incremental_tests;
pub mod load;
mod never_decides;
mod parse;
pub mod positions;
pub mod rule_id;
mod shadow;
pub mod spec;
mod stamp;
#[cfg(test)]
mod tests;
mod tree;
mod validate;
mod values;

use std::{fmt, net::IpAddr, sync::Arc};

use ipnet::IpNet;

pub use crate::fqdn::FqdnPattern;
pub use expect::{Expectation, MAX_EXPECTATIONS};
pub use load::{LoadWork, Loaded, ParseCache, ReadLimits, from_sources, load, load_cached};
pub use never_decides::{NeverDecides, never_deciding};
pub use parse::Source;
pub use rule_id::RuleId;
pub use values::{check_list_name, parse_prefix};

use crate::tables::{CounterOwner, Decider, UNKNOWN_GROUP_NAME};

/// A validated policy: every name resolved, every value checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Sorted by name. A group's id is its index + 1; id 0 is the
    /// unknown-device pseudo-group. Shared: a reload reuses the groups
    /// that no changed file touches (`load`'s cache) instead of copying
    /// them, and comparing two policies skips the groups they share.
    pub groups: Vec<Arc<Group>>,
    /// The verdict for sources in no group.
    pub unknown_devices: Action,
    /// Where `unknown-devices` is set; `None` when it defaults to deny.
    pub unknown_devices_origin: Option<Origin>,
    /// The addresses the keyword `ntp` stands for; each gets the built-in
    /// allow of UDP port 123 in every group.
    pub ntp: Vec<IpAddr>,
    /// The addresses the keyword `gateway` stands for. Besides rules, the
    /// dataplane lets neighbour discovery to them through (IPv6 needs it).
    pub gateway: Vec<IpAddr>,
}

impl Policy {
    /// The group with this id (1-based; 0 is not a policy group).
    pub fn group(&self, id: u32) -> Option<&Group> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.groups.get(i))
            .map(|g| &**g)
    }

    pub fn group_id(&self, name: &str) -> Option<u32> {
        self.groups
            .binary_search_by(|g| g.name.as_str().cmp(name))
            .ok()
            .map(|i| i as u32 + 1)
    }

    /// The rule behind a `rule` metrics label or deny-event counter.
    pub fn rule(&self, group: &str, id: &str) -> Option<&Rule> {
        let group = self.group(self.group_id(group)?)?;
        group.rules.iter().find(|r| r.id.as_str() == id)
    }

    /// Where what a compiled counter counts is written: the rule, the
    /// group's `default:` (for `_unknown`: `unknown-devices:`, if set), the
    /// group for its verdict totals; `None` for the built-in NTP allow.
    pub fn origin_of(&self, owner: &CounterOwner) -> Option<&Origin> {
        let (group, decider) = match owner {
            CounterOwner::Decision { group, decider } => (group, Some(decider)),
            CounterOwner::Verdict { group, .. } => (group, None),
        };
        if **group == *UNKNOWN_GROUP_NAME {
            return match decider {
                Some(Decider::GroupDefault) => self.unknown_devices_origin.as_ref(),
                _ => None,
            };
        }
        let group = self.group(self.group_id(group)?)?;
        match decider {
            None => Some(&group.origin),
            Some(Decider::Rule(id)) => group
                .rules
                .iter()
                .find(|r| r.id.as_str() == &**id)
                .map(|r| &r.origin),
            Some(Decider::GroupDefault) => Some(&group.default_origin),
            Some(Decider::BuiltinNtp) => None,
        }
    }

    /// The action of what decides for a decision counter: the rule's, the
    /// group's `default:` (for `_unknown`: `unknown-devices`), allow for
    /// the built-in NTP allow; `None` for verdict totals and for what the
    /// policy does not hold.
    pub fn action_of(&self, owner: &CounterOwner) -> Option<Action> {
        let CounterOwner::Decision { group, decider } = owner else {
            return None;
        };
        match decider {
            Decider::Rule(id) => self.rule(group, id).map(|r| r.action),
            Decider::GroupDefault if **group == *UNKNOWN_GROUP_NAME => Some(self.unknown_devices),
            Decider::GroupDefault => self.group(self.group_id(group)?).map(|g| g.default),
            Decider::BuiltinNtp => Some(Action::Allow),
        }
    }

    pub fn rule_count(&self) -> usize {
        self.groups.iter().map(|g| g.rules.len()).sum()
    }

    pub fn device_count(&self) -> usize {
        self.groups.iter().map(|g| g.devices.len()).sum()
    }
}

/// A place in a policy file (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Origin {
    /// Shared by every origin in one file: a fleet's files name 10^6
    /// devices, each with its origin.
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    /// Drop, and tell the device at once (TCP RST, ICMP unreachable).
    Reject,
}

impl Action {
    /// How the language, metrics and `explain` spell it.
    pub const fn label(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Reject => "reject",
        }
    }

    /// Whether the packet is refused (dropped, or passed as audit-deny).
    pub const fn refuses(self) -> bool {
        !matches!(self, Action::Allow)
    }

    /// The tie-break of precedence step 9 between equally specific rules:
    /// the higher wins (deny over reject over allow, the quieter refusal
    /// first).
    pub const fn strictness(self) -> u8 {
        match self {
            Action::Allow => 0,
            Action::Reject => 1,
            Action::Deny => 2,
        }
    }

    /// The verdict a packet gets from this action in a group with or
    /// without audit mode.
    pub const fn verdict(self, audit: bool) -> tollgate_common::Verdict {
        use tollgate_common::Verdict;
        match (self, audit) {
            (Action::Allow, _) => Verdict::Allow,
            (Action::Deny | Action::Reject, true) => Verdict::AuditDeny,
            (Action::Deny, false) => Verdict::Deny,
            (Action::Reject, false) => Verdict::Reject,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    pub devices: Vec<Device>,
    /// The verdict when no rule matches.
    pub default: Action,
    /// Audit mode: a deny or reject verdict becomes audit-deny (counted,
    /// reported, passed).
    pub audit: bool,
    pub rules: Vec<Rule>,
    /// The group's name in its file.
    pub origin: Origin,
    /// The `default:` value.
    pub default_origin: Origin,
}

impl Group {
    /// Where `device`, one of this group's, is listed.
    pub fn device_origin(&self, device: &Device) -> Origin {
        Origin {
            file: Arc::clone(&self.origin.file),
            line: device.line as usize,
            column: device.column as usize,
        }
    }
}

/// One source prefix of a group (a bare address is a /32 or /128).
/// Fleets list 10^6 of them, so the place holds no file name: it is the
/// file of the group ([`Group::device_origin`]), 28 bytes a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub prefix: IpNet,
    pub line: u32,
    pub column: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: RuleId,
    pub action: Action,
    /// The `to` items, each with the prefixes it resolved to; none for an
    /// FQDN rule.
    pub targets: Vec<Target>,
    /// `to: {fqdn: [...]}`: the names whose addresses the gateway's DNS
    /// forwarder learns for the group (an allow rule only); sorted, no
    /// duplicates. Empty for a rule of addresses.
    pub fqdn: Vec<FqdnPattern>,
    /// IP protocol number; `None` is `any`.
    pub proto: Option<u8>,
    /// `None`: every port, known or not. Only with TCP or UDP.
    pub ports: Option<Vec<PortRange>>,
    pub comment: Option<String>,
    /// The rule's action key (`allow:` / `deny:` / `reject:`) in its file.
    pub origin: Origin,
}

impl Rule {
    /// Every destination prefix the rule names.
    pub fn prefixes(&self) -> impl Iterator<Item = &IpNet> {
        self.targets.iter().flat_map(|t| &t.prefixes)
    }
}

/// One `to` item and the prefixes it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// A normalised CIDR, or a list name or keyword as written.
    pub written: String,
    pub prefixes: Vec<IpNet>,
}

/// An inclusive destination port range (a single port is `lo == hi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn new(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    /// How many ports it holds: 1 for a single port.
    pub fn width(&self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

/// The width of "no `ports`": every port.
pub const ALL_PORTS_WIDTH: u32 = 65536;

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// What the keywords `gateway` and `ntp` stand for: supplied by the
/// controller's configuration (or `--gateway`/`--ntp` flags of the CLI).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// The gateway's own addresses on the device-facing interfaces.
    pub gateway: Vec<IpAddr>,
    /// The private NTP listen addresses.
    pub ntp: Vec<IpAddr>,
}

/// The port of the built-in NTP allow (udp/123 to each `ntp` address).
pub const NTP_PORT: u16 = 123;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Parses a protocol as the language writes it: `tcp`, `udp`, `icmp`,
/// `icmpv6`, `any` (`None`) or a number 0-255.
pub fn parse_proto(text: &str) -> Result<Option<u8>, String> {
    Ok(Some(match text {
        "any" => return Ok(None),
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "icmp" => PROTO_ICMP,
        "icmpv6" => PROTO_ICMPV6,
        // Decimal digits only: Rust's parser would take "+6".
        n => n
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| n.parse::<u8>().ok())
            .flatten()
            .ok_or_else(|| {
                format!(
                    "{} is not a protocol (tcp | udp | icmp | icmpv6 | any | 0-255)",
                    crate::diagnostic::quote(n)
                )
            })?,
    }))
}

/// The name `explain` shows for a protocol number.
pub fn proto_name(proto: Option<u8>) -> String {
    match proto {
        None => "any".into(),
        Some(PROTO_TCP) => "tcp".into(),
        Some(PROTO_UDP) => "udp".into(),
        Some(PROTO_ICMP) => "icmp".into(),
        Some(PROTO_ICMPV6) => "icmpv6".into(),
        Some(n) => n.to_string(),
    }
}

/// Whether packets of this protocol carry a destination port the dataplane
/// reads.
pub fn has_ports(proto: u8) -> bool {
    proto == PROTO_TCP || proto == PROTO_UDP
}
