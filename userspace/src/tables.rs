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

use std::{
    net::IpAddr,
    ops::{Index, Range},
    sync::Arc,
};

use ipnet::IpNet;
use tollgate_common::Verdict;

use crate::fqdn::FqdnPattern;

/// Name of group 0, the sources no group contains (metrics label, logs).
pub const UNKNOWN_GROUP_NAME: &str = "_unknown";

/// A compiled policy, ready to be written into one slot of the maps.
#[derive(Clone, Debug, Default)]
pub struct CompiledPolicy {
    /// Indexed by group id; index 0 is the unknown-device pseudo-group.
    pub groups: Vec<GroupTable>,
    /// Exact device addresses (/32, /128) and their group id, sorted.
    /// Shared: learning keeps each slot's policy and the NTP server its
    /// own, and at fleet scale this is the largest table (24 bytes a
    /// device).
    pub device_exact: Arc<[(IpAddr, u32)]>,
    /// The same addresses by group id, as each group's compiled fragment
    /// has them: a group compiled once keeps its list (the same `Arc`)
    /// across reloads, so an install tells unchanged groups by pointer.
    /// Empty in policies built by hand; the install then reads
    /// `device_exact`.
    pub group_devices: Vec<Arc<[IpAddr]>>,
    /// Where each group's counters and destinations lie, by group id, as
    /// its compiled fragment has them (see [`GroupSpan`]). Empty in
    /// policies built by hand; the install then builds every group anew.
    pub group_spans: Vec<GroupSpan>,
    /// Device prefixes shorter than a host address and their group id, sorted.
    pub device_prefixes: Vec<(IpNet, u32)>,
    /// (group id, destination prefix) to rule set index, sorted.
    pub destinations: Vec<DestinationEntry>,
    /// Deduplicated rule sets; entries in precedence order (first match wins).
    pub rulesets: Rulesets,
    /// Logical counters: what each index counts.
    pub counters: Vec<CounterOwner>,
    /// The gateway's own addresses, sorted: IPv6 neighbour discovery to them
    /// passes without a policy decision (precedence step 2), and no address
    /// of theirs is learned (step 12).
    pub gateway: Vec<IpAddr>,
    /// The FQDN rules, by group id then rule order: the names the DNS
    /// forwarder resolves for a group, and what an address learned for
    /// one matches and charges (precedence step 12).
    pub fqdn_rules: Vec<FqdnRule>,
    /// (group id, prefix) of every deny and reject rule's `to`, sorted: no
    /// address inside one is learned for that group (step 12).
    pub learn_guards: Vec<(u32, IpNet)>,
}

/// Field by field, the smallest first and the exact devices last. A
/// reload compares the policy it compiled with the one in force to skip an
/// unchanged one, and any other reload differs somewhere: at fleet scale
/// (10^6 devices), comparing the devices and destinations before the rule
/// sets cost every one-line edit 5 ms (BENCHMARKS.md).
impl PartialEq for CompiledPolicy {
    fn eq(&self, other: &Self) -> bool {
        // Destructured, so that a new field cannot be left out.
        let CompiledPolicy {
            groups,
            device_exact,
            group_devices,
            group_spans,
            device_prefixes,
            destinations,
            rulesets,
            counters,
            gateway,
            fqdn_rules,
            learn_guards,
        } = self;
        *groups == other.groups
            && *gateway == other.gateway
            && *fqdn_rules == other.fqdn_rules
            && *learn_guards == other.learn_guards
            && *group_spans == other.group_spans
            && *rulesets == other.rulesets
            && *device_prefixes == other.device_prefixes
            && *destinations == other.destinations
            && *counters == other.counters
            && *group_devices == other.group_devices
            && *device_exact == other.device_exact
    }
}

impl Eq for CompiledPolicy {}

/// One group's share of a compiled policy. Its `owners` are shared with
/// the group's compiled fragment, so a group compiled once brings the same
/// `Arc` to every policy assembled from it: the dataplane keeps a group's
/// kernel counters, rule lists, destinations and tries while its owners
/// are the very ones a slot was written from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpan {
    /// The group's counter owners, logical counters `first_counter..` in
    /// order; the group's rule sets use only these.
    pub owners: Arc<[CounterOwner]>,
    pub first_counter: u32,
    /// The group's entries in [`CompiledPolicy::destinations`].
    pub destinations: Range<usize>,
}

/// The rule sets of a compiled policy, indexed from 0, laid end to end in
/// one vector: a reload renumbers every group's rule sets into the policy
/// it assembles, 10^5 of them at fleet scale, and one vector takes one
/// allocation where a vector per rule set took 10^5 (and as many frees
/// when the policy is dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rulesets {
    entries: Vec<RuleEntry>,
    /// Where each rule set ends in `entries`.
    ends: Vec<usize>,
}

impl Rulesets {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&[RuleEntry]> {
        let end = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        Some(&self.entries[start..end])
    }

    /// Appends a rule set; its index is the count before.
    pub fn push(&mut self, entries: &[RuleEntry]) {
        self.entries.extend_from_slice(entries);
        self.ends.push(self.entries.len());
    }

    /// Appends every rule set of `other`, each entry as `f` makes it.
    pub fn extend_mapped(&mut self, other: &Rulesets, f: impl Fn(&RuleEntry) -> RuleEntry) {
        let base = self.entries.len();
        self.entries.extend(other.entries.iter().map(f));
        self.ends.extend(other.ends.iter().map(|end| base + end));
    }

    /// The rule sets in index order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[RuleEntry]> {
        (0..self.len()).map(|i| &self[i])
    }

    /// Entries in all rule sets.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }
}

impl Index<usize> for Rulesets {
    type Output = [RuleEntry];

    fn index(&self, index: usize) -> &[RuleEntry] {
        self.get(index).expect("rule set index within the policy")
    }
}

/// One FQDN rule of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FqdnRule {
    pub group: u32,
    /// The rule's id.
    pub rule: String,
    pub patterns: Vec<FqdnPattern>,
    /// What a learned address matches: one allow entry per `ports` item,
    /// each charging [`FqdnRule::counter`].
    pub entries: Vec<RuleEntry>,
    /// Logical counter of the rule.
    pub counter: u32,
}

impl FqdnRule {
    /// Whether the normalised name matches one of the rule's patterns.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }
}

/// What `TG_LEARNED` holds for one address of one group: the entries of
/// the FQDN rules it was learned for, in rule order, each with its expiry
/// (`CLOCK_MONOTONIC` nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedDestination {
    pub group: u32,
    pub addr: IpAddr,
    pub entries: Vec<(RuleEntry, u64)>,
}

impl CompiledPolicy {
    /// What learning addresses and the DNS forwarder read of a policy: its
    /// groups, devices, gateway addresses, FQDN rules and learn guards,
    /// without the (much larger) destination tables.
    pub fn learning_view(&self) -> CompiledPolicy {
        CompiledPolicy {
            groups: self.groups.clone(),
            device_exact: self.device_exact.clone(),
            device_prefixes: self.device_prefixes.clone(),
            gateway: self.gateway.clone(),
            fqdn_rules: self.fqdn_rules.clone(),
            learn_guards: self.learn_guards.clone(),
            ..CompiledPolicy::default()
        }
    }

    /// The learned destination of `addr` for `group`, learned for the rules
    /// `expiries` names (rule id, expiry): the entries of those of the
    /// group's FQDN rules that still exist, in rule order, at most
    /// `capacity` of them. `None` when none is left or the address may not
    /// be learned ([`CompiledPolicy::learnable`]).
    pub fn learned_destination(
        &self,
        group: u32,
        addr: IpAddr,
        expiries: impl Fn(&str) -> Option<u64>,
        capacity: usize,
    ) -> Option<LearnedDestination> {
        self.learnable(group, addr).ok()?;
        let entries: Vec<(RuleEntry, u64)> = self
            .fqdn_rules
            .iter()
            .filter(|r| r.group == group)
            .filter_map(|r| expiries(&r.rule).map(|expiry| (r, expiry)))
            .flat_map(|(r, expiry)| r.entries.iter().map(move |e| (*e, expiry)))
            .take(capacity)
            .collect();
        (!entries.is_empty()).then_some(LearnedDestination {
            group,
            addr,
            entries,
        })
    }

    /// The group's FQDN rules that match the normalised `name`.
    pub fn fqdn_rules_for<'t>(
        &'t self,
        group: u32,
        name: &'t str,
    ) -> impl Iterator<Item = &'t FqdnRule> + 't {
        self.fqdn_rules
            .iter()
            .filter(move |r| r.group == group && r.matches(name))
    }

    /// Whether an address may be learned for `group` (step 12): not inside
    /// a deny or reject rule of the group, not the gateway's, not a device's
    /// of any group. `Err` says why not.
    pub fn learnable(&self, group: u32, addr: IpAddr) -> Result<(), &'static str> {
        if self.gateway.binary_search(&addr).is_ok() {
            return Err("a gateway address");
        }
        let host = IpNet::from(addr);
        let in_devices = self
            .device_exact
            .binary_search_by(|(a, _)| a.cmp(&addr))
            .is_ok()
            || (0..host.prefix_len()).any(|len| {
                let net = IpNet::new(addr, len).expect("length within family").trunc();
                self.device_prefixes
                    .binary_search_by(|(p, _)| p.cmp(&net))
                    .is_ok()
            });
        if in_devices {
            return Err("a device address");
        }
        let start = self.learn_guards.partition_point(|(g, _)| *g < group);
        let denied = self.learn_guards[start..]
            .iter()
            .take_while(|(g, _)| *g == group)
            .any(|(_, net)| net.contains(&addr));
        if denied {
            return Err("inside a deny or reject rule of the group");
        }
        Ok(())
    }
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
///
/// Names are shared (`Arc<str>`, one per group and rule in a compiled
/// fragment): every reload copies the owners of all groups into the
/// policy it assembles, 10^5 of them at fleet scale, and a copy then
/// costs two reference counts instead of two allocations (and as many
/// frees when the policy is dropped).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CounterOwner {
    /// Packets decided by a rule, a group default or the built-in NTP allow.
    Decision { group: Arc<str>, decider: Decider },
    /// A group's per-verdict totals.
    Verdict { group: Arc<str>, verdict: Verdict },
}

/// What decided a packet within a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decider {
    /// A rule from a policy file, by its stable id.
    Rule(Arc<str>),
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
