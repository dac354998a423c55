//! The reference model of the dataplane's decision.
//!
//! Both evaluators implement steps 4-12 of the precedence written in
//! [`tollgate_common::precedence`], each tagged `// step N:` where it is
//! decided. [`verdict`] evaluates a packet over the compiled tables exactly
//! as the kernel does; the kernel's differential test compares its counters
//! with [`Decision::counter`]. [`naive`] is a second evaluator written
//! straight from the language semantics over the validated policy, sharing
//! no code with `compile`; property tests check that the two always agree,
//! and `explain` uses it to list the candidates.

pub mod naive;

use std::net::IpAddr;

use ipnet::IpNet;
use tollgate_common::{DecisionReason, UNKNOWN_GROUP, Verdict};

use crate::{
    policy::RuleId,
    tables::{CompiledPolicy, CounterOwner, Decider, LearnedDestination, PacketFacts, RuleEntry},
};

/// What the dataplane does with a packet, and what it charges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Group id; 0 for a source in no group.
    pub group: u32,
    pub group_name: String,
    /// The device entry that chose the group (`None` for group 0).
    pub device: Option<IpNet>,
    /// The destination entry whose rule set was scanned.
    pub destination: Option<IpNet>,
    pub verdict: Verdict,
    pub reason: DecisionReason,
    /// Logical counter charged: the deciding entry's or the group default's.
    pub counter: u32,
    /// The deciding rule, when a rule from a file decided.
    pub rule: Option<RuleId>,
}

/// Decides `packet` over `tables`, step by step as the kernel does, with no
/// learned destination.
pub fn verdict(tables: &CompiledPolicy, packet: &PacketFacts) -> Decision {
    verdict_learned(tables, &[], 0, packet)
}

/// Decides `packet` over `tables` and the learned destinations of the same
/// slot (`learned`, as `TG_LEARNED` holds them) at monotonic time `now_ns`.
pub fn verdict_learned(
    tables: &CompiledPolicy,
    learned: &[LearnedDestination],
    now_ns: u64,
    packet: &PacketFacts,
) -> Decision {
    let (group, device) = device_group(tables, packet.src);
    let table = &tables.groups[group as usize];

    // step 5: no rule applies to an unknown device
    let destination = (group != UNKNOWN_GROUP)
        .then(|| {
            // step 6: the group's longest destination prefix containing D
            longest_match(packet.dst, |net| {
                tables
                    .destinations
                    .binary_search_by(|d| (d.group, d.prefix).cmp(&(group, net)))
                    .ok()
                    .map(|i| tables.destinations[i].ruleset)
            })
        })
        .flatten();

    // step 9: entries are in precedence order, the first match wins
    let entry = destination.and_then(|(_, ruleset)| {
        tables.rulesets[ruleset as usize]
            .iter()
            .find(|e| matches(e, packet))
    });

    let (verdict, reason, counter) = match entry {
        // step 8: the built-in NTP allow won
        Some(e) if e.builtin => (e.verdict, DecisionReason::BuiltinNtp, e.counter),
        Some(e) => (e.verdict, DecisionReason::Rule, e.counter),
        // step 5: group 0's default is `unknown-devices`
        None if group == UNKNOWN_GROUP => (
            table.default,
            DecisionReason::UnknownDevice,
            table.default_counter,
        ),
        None => match learned_counter(learned, group, now_ns, packet) {
            // step 12: no candidate, but an address learned for an FQDN rule
            Some(counter) => (Verdict::Allow, DecisionReason::Learned, counter),
            // step 10: no candidate, the group's default
            None => (
                table.default,
                DecisionReason::GroupDefault,
                table.default_counter,
            ),
        },
    };

    // step 11: audit mode turns a deny or a reject into audit-deny
    let verdict = match verdict {
        Verdict::Deny | Verdict::Reject if table.audit => Verdict::AuditDeny,
        other => other,
    };
    let rule = match (reason, &tables.counters[counter as usize]) {
        (
            DecisionReason::Rule | DecisionReason::Learned,
            CounterOwner::Decision {
                decider: Decider::Rule(id),
                ..
            },
        ) => Some(RuleId::new(id)),
        _ => None,
    };
    Decision {
        group,
        group_name: table.name.clone(),
        device,
        destination: destination.map(|(net, _)| net),
        verdict,
        reason,
        counter,
        rule,
    }
}

/// The counter of the first live entry learned for the packet's
/// destination in its group that matches its protocol and port.
fn learned_counter(
    learned: &[LearnedDestination],
    group: u32,
    now_ns: u64,
    packet: &PacketFacts,
) -> Option<u32> {
    let destination = learned
        .iter()
        .find(|l| l.group == group && l.addr == packet.dst)?;
    destination
        .entries
        .iter()
        // step 12: an entry lives until its expiry, and matches as in step 7
        .find(|(e, expires)| *expires > now_ns && matches(e, packet))
        .map(|(e, _)| e.counter)
}

/// The group of source `src` (0: in no group), as the dataplane finds it.
pub fn group_of(tables: &CompiledPolicy, src: IpAddr) -> u32 {
    device_group(tables, src).0
}

/// The group of `src` and the device entry that chose it.
fn device_group(tables: &CompiledPolicy, src: IpAddr) -> (u32, Option<IpNet>) {
    match tables
        .device_exact
        .binary_search_by(|(addr, _)| addr.cmp(&src))
    {
        // step 4: the exact source address
        Ok(i) => (tables.device_exact[i].1, Some(IpNet::from(src))),
        // step 4: else the longest device prefix, else group 0
        Err(_) => longest_match(src, |net| {
            tables
                .device_prefixes
                .binary_search_by(|(p, _)| p.cmp(&net))
                .ok()
                .map(|i| tables.device_prefixes[i].1)
        })
        .map_or((UNKNOWN_GROUP, None), |(net, group)| (group, Some(net))),
    }
}

/// Whether a rule entry matches: its protocol is any or the packet's, and
/// its port range is absent or holds the packet's (known) port.
fn matches(entry: &RuleEntry, packet: &PacketFacts) -> bool {
    // step 7: protocol and port range; an unknown port never matches one
    let proto = entry.proto.is_none_or(|p| p == packet.proto);
    let ports = match (entry.ports, packet.dport) {
        (None, _) => true,
        (Some((lo, hi)), Some(port)) => (lo..=hi).contains(&port),
        (Some(_), None) => false,
    };
    proto && ports
}

/// Longest-prefix match by trying each prefix of `addr`, longest first,
/// against an exact lookup (what an LPM trie returns).
fn longest_match<T>(
    addr: IpAddr,
    mut lookup: impl FnMut(IpNet) -> Option<T>,
) -> Option<(IpNet, T)> {
    let max = IpNet::from(addr).prefix_len();
    (0..=max).rev().find_map(|len| {
        let net = IpNet::new(addr, len).expect("length within family").trunc();
        lookup(net).map(|found| (net, found))
    })
}

#[cfg(test)]
mod precedence_tags;
#[cfg(test)]
mod tests;
