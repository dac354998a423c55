//! One piece of destination space, cut by protocol and port: every protocol
//! a rule names (and TCP and UDP, which carry ports) is a cell of its own,
//! all the others one more; each port range a rule names cuts TCP and UDP
//! further, and the unknown port (non-first fragments) is a cell too. One
//! packet per cell, decided by the model on both sides, tells what the
//! change does to the whole cell.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use tollgate_common::Verdict;

use crate::{
    model,
    policy::{PortRange, has_ports},
    tables::{CompiledPolicy, CounterOwner, PacketFacts, RuleEntry},
};

/// What decides a packet, and how.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The deciding rule's id, `default` or `builtin-ntp`
    /// ([`crate::tables::Decider::rule_id`]).
    pub decider: String,
}

/// The protocols a change holds for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocols {
    Any,
    /// These protocols (sorted).
    Only(Vec<u8>),
    /// Every protocol but these (sorted).
    AllBut(Vec<u8>),
}

impl Protocols {
    pub fn contains(&self, proto: u8) -> bool {
        match self {
            Protocols::Any => true,
            Protocols::Only(these) => these.contains(&proto),
            Protocols::AllBut(except) => !except.contains(&proto),
        }
    }
}

/// The destination ports a change holds for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ports {
    /// Every port, known or not (and protocols without ports).
    All,
    /// Part of the TCP or UDP port space.
    Part {
        /// The unknown port of non-first fragments.
        unknown: bool,
        /// Sorted, disjoint, not touching.
        ranges: Vec<PortRange>,
    },
}

impl Ports {
    pub fn contains(&self, dport: Option<u16>) -> bool {
        match (self, dport) {
            (Ports::All, _) => true,
            (Ports::Part { unknown, .. }, None) => *unknown,
            (Ports::Part { ranges, .. }, Some(port)) => ranges.iter().any(|r| r.contains(port)),
        }
    }

    /// From sorted disjoint ranges of cell positions: 0 is the unknown
    /// port, p + 1 port p.
    fn from_positions(positions: &[(u32, u32)]) -> Ports {
        if positions == [(0, LAST_POSITION)] {
            return Ports::All;
        }
        let ranges = positions
            .iter()
            .filter(|&&(_, hi)| hi > 0)
            .map(|&(lo, hi)| PortRange::new((lo.max(1) - 1) as u16, (hi - 1) as u16))
            .collect();
        Ports::Part {
            unknown: positions.first().is_some_and(|p| p.0 == 0),
            ranges,
        }
    }
}

/// The last cell position: port 65535.
const LAST_POSITION: u32 = 65536;

/// The protocol classes of one pair of groups: each protocol a rule of
/// either names, TCP and UDP; the rest is one class (`None`), decided alike.
pub fn classes(named: impl IntoIterator<Item = u8>) -> Vec<Option<u8>> {
    let mut named: BTreeSet<u8> = named.into_iter().collect();
    named.extend([6, 17]);
    let mut classes: Vec<Option<u8>> = named.iter().copied().map(Some).collect();
    if named.len() < 256 {
        classes.push(None);
    }
    classes
}

/// A changed cell of one protocol class: which ports, which change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellChange {
    /// `None`: the protocols no rule names.
    pub class: Option<u8>,
    pub ports: Ports,
    pub old: Outcome,
    pub new: Outcome,
}

/// One side of a piece: its tables and the rule set its destinations get
/// (`None`: no destination entry, or the unknown group, which has none).
pub struct Side<'a> {
    pub tables: &'a CompiledPolicy,
    pub ruleset: Option<u32>,
}

impl Side<'_> {
    fn entries(&self) -> &[RuleEntry] {
        self.ruleset
            .map_or(&[], |r| &self.tables.rulesets[r as usize])
    }
}

/// What the change does to packets from `src` to `dst` (and to every
/// destination of its piece), per protocol class of `classes` and per
/// change, with the ports it holds for; unchanged cells are left out.
pub fn changes(
    old: &Side,
    new: &Side,
    classes: &[Option<u8>],
    src: IpAddr,
    dst: IpAddr,
) -> Vec<CellChange> {
    let entries: Vec<&RuleEntry> = old.entries().iter().chain(new.entries()).collect();
    let taken: BTreeSet<u8> = classes.iter().flatten().copied().collect();
    let mut found = Vec::new();
    for &class in classes {
        // The rest: a protocol no rule names (matched by `any` rules only).
        let Some(proto) = class.or_else(|| (0..=u8::MAX).find(|p| !taken.contains(p))) else {
            continue;
        };
        let mut by_change: BTreeMap<(Outcome, Outcome), Vec<(u32, u32)>> = BTreeMap::new();
        for (lo, hi) in port_cells(proto, &entries) {
            let packet = PacketFacts {
                src,
                dst,
                proto,
                dport: lo.checked_sub(1).map(|p| p as u16),
            };
            let (o, n) = (outcome(old.tables, &packet), outcome(new.tables, &packet));
            if o == n {
                continue;
            }
            let positions = by_change.entry((o, n)).or_default();
            match positions.last_mut() {
                Some(last) if last.1 + 1 == lo => last.1 = hi,
                _ => positions.push((lo, hi)),
            }
        }
        found.extend(
            by_change
                .into_iter()
                .map(|((old, new), positions)| CellChange {
                    class,
                    ports: Ports::from_positions(&positions),
                    old,
                    new,
                }),
        );
    }
    found
}

/// The port cells of `proto` as ranges of positions (0: unknown port, p + 1:
/// port p): one for a protocol without ports, else cut by every port range
/// of a rule that can match it.
fn port_cells(proto: u8, entries: &[&RuleEntry]) -> Vec<(u32, u32)> {
    if !has_ports(proto) {
        return vec![(0, LAST_POSITION)];
    }
    let mut cuts = vec![0, 1];
    for e in entries {
        if let (true, Some((lo, hi))) = (e.proto.is_none_or(|p| p == proto), e.ports) {
            cuts.push(u32::from(lo) + 1);
            cuts.push(u32::from(hi) + 2);
        }
    }
    cuts.retain(|&c| c <= LAST_POSITION);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.iter()
        .enumerate()
        .map(|(i, &lo)| (lo, cuts.get(i + 1).map_or(LAST_POSITION, |next| next - 1)))
        .collect()
}

/// The model's decision, as a verdict and what decided it.
pub fn outcome(tables: &CompiledPolicy, packet: &PacketFacts) -> Outcome {
    let decision = model::verdict(tables, packet);
    let decider = match &tables.counters[decision.counter as usize] {
        CounterOwner::Decision { decider, .. } => decider.rule_id().to_string(),
        CounterOwner::Verdict { .. } => unreachable!("a decision charges a decision counter"),
    };
    Outcome {
        verdict: decision.verdict,
        decider,
    }
}
