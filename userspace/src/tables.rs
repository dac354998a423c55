//! The compiled policy: the lookup tables the dataplane reads, as plain data.
//!
//! `compile` produces a [`CompiledPolicy`]; `datapath` writes it into the
//! maps of one slot; `model` evaluates it exactly as the kernel does. The
//! tables answer steps 4-11 of [`tollgate_common::precedence`]: the device
//! tables step 4, group 0 step 5, `destinations` step 6; each rule set holds
//! the rules of its destination prefix and of every less specific one, in
//! step 9's order, so the first entry that passes step 7 is the winner.
//!
//! Counters are *logical* here: indices into [`CompiledPolicy::counters`].
//! The datapath maps each [`CounterOwner`] to a stable kernel counter, so a
//! rule keeps its counter across reloads.

use std::net::IpAddr;

use ipnet::IpNet;
use tollgate_common::Verdict;

/// Name of group 0, the sources no group contains (metrics label, logs).
pub const UNKNOWN_GROUP_NAME: &str = "_unknown";

/// A compiled policy, ready to be written into one slot of the maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Indexed by group id; index 0 is the unknown-device pseudo-group.
    pub groups: Vec<GroupTable>,
    /// Exact device addresses (/32, /128) and their group id, sorted.
    pub device_exact: Vec<(IpAddr, u32)>,
    /// Device prefixes shorter than a host address and their group id, sorted.
    pub device_prefixes: Vec<(IpNet, u32)>,
    /// (group id, destination prefix) to rule set index, sorted.
    pub destinations: Vec<DestinationEntry>,
    /// Deduplicated rule sets; entries in precedence order (first match wins).
    pub rulesets: Vec<Vec<RuleEntry>>,
    /// Logical counters: what each index counts.
    pub counters: Vec<CounterOwner>,
    /// The gateway's own addresses, sorted: IPv6 neighbour discovery to them
    /// passes without a policy decision (precedence step 2).
    pub gateway: Vec<IpAddr>,
}

/// One group's verdict defaults and counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTable {
    pub name: String,
    /// The verdict when no rule matches, before audit mode: allow, deny or
    /// reject (never reject for group 0).
    pub default: Verdict,
    pub audit: bool,
    /// Charged when the default decides.
    pub default_counter: u32,
    /// Per-verdict totals: allow, deny, audit-deny, reject.
    pub allow_counter: u32,
    pub deny_counter: u32,
    pub audit_deny_counter: u32,
    pub reject_counter: u32,
}

impl GroupTable {
    /// A group named `name` that denies by default and counts nothing, for
    /// unit tests that need only names.
    #[cfg(test)]
    pub(crate) fn named(name: &str) -> GroupTable {
        GroupTable {
            name: name.into(),
            default: Verdict::Deny,
            audit: false,
            default_counter: 0,
            allow_counter: 0,
            deny_counter: 0,
            audit_deny_counter: 0,
            reject_counter: 0,
        }
    }

    pub fn verdict_counter(&self, verdict: Verdict) -> u32 {
        match verdict {
            Verdict::Allow => self.allow_counter,
            Verdict::Deny => self.deny_counter,
            Verdict::AuditDeny => self.audit_deny_counter,
            Verdict::Reject => self.reject_counter,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DestinationEntry {
    pub group: u32,
    pub prefix: IpNet,
    pub ruleset: u32,
}

/// One compiled rule: a match on protocol and port range, and an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleEntry {
    /// `None` matches every protocol.
    pub proto: Option<u8>,
    /// Inclusive destination port range; `None` matches every port, known or not.
    pub ports: Option<(u16, u16)>,
    /// Allow, deny or reject, before audit mode.
    pub verdict: Verdict,
    /// The implicit allow of UDP/123 to the NTP addresses.
    pub builtin: bool,
    /// Logical counter charged when this entry decides.
    pub counter: u32,
}

/// What a counter counts. Stable across reloads: the datapath keeps the same
/// kernel counter for the same owner, so counters never go backwards.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CounterOwner {
    /// Packets decided by a rule, a group default or the built-in NTP allow.
    Decision { group: String, decider: Decider },
    /// A group's per-verdict totals.
    Verdict { group: String, verdict: Verdict },
}

/// What decided a packet within a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decider {
    /// A rule from a policy file, by its stable id.
    Rule(String),
    /// The group's `default` (for group 0: `unknown-devices`).
    GroupDefault,
    /// The implicit allow of UDP/123 to the NTP addresses.
    BuiltinNtp,
}

impl Decider {
    /// The `rule` label of its metrics and events, and its id in `explain`:
    /// a rule's own id, else one of the ids reserved for the others.
    pub fn rule_id(&self) -> &str {
        match self {
            Decider::Rule(id) => id,
            Decider::GroupDefault => "default",
            Decider::BuiltinNtp => "builtin-ntp",
        }
    }
}

/// The facts of a packet that the decision reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketFacts {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Destination port; `None` for non-TCP/UDP and for non-first fragments.
    pub dport: Option<u16>,
}
