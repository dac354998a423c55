//! `tollgate diff`: what a policy change does to verdicts, computed from
//! the two compiled policies (not from their text).
//!
//! Sources are partitioned first ([`sources`], [`regions`]): each piece of
//! source space belongs to one group in the old policy and one in the new
//! (`_unknown` when none), giving pairs of groups, most of them a group and
//! itself. A pair whose two groups are one compiled group (the compile
//! cache kept it) cannot change and is skipped.
//! For each pair, the destination space is cut at every destination prefix
//! of the two groups; a piece whose rule set and group defaults are the same
//! on both sides cannot change and is skipped, the others are cut by
//! protocol and port ([`cells`]) and one packet per cell is decided by the
//! model on both sides. Pieces with the same pair of rule sets change alike,
//! so each such pair is evaluated once: the cost is one sweep over the
//! prefixes plus a few model decisions per distinct change. Changed cells
//! with the same change are then joined, over all pieces, into the fewest
//! CIDR prefixes ([`Change`]). [`render`] prints the result.

pub mod cells;
pub mod regions;
pub mod render;
mod sources;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use ipnet::IpNet;
use tollgate_common::{UNKNOWN_GROUP, Verdict};

use cells::CellChange;
pub use cells::{Outcome, Ports, Protocols};
use regions::{Family, Span, cidrs, pieces, push_range};
use sources::source_pieces;

use crate::{
    policy::{NeverDecides, Policy, never_deciding},
    tables::{CompiledPolicy, CounterOwner, DestinationEntry, PacketFacts, RuleEntry},
};

/// One side of a diff: a validated policy and its compilation.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub policy: &'a Policy,
    pub tables: &'a CompiledPolicy,
}

impl<'a> Side<'a> {
    pub fn new(policy: &'a Policy, tables: &'a CompiledPolicy) -> Side<'a> {
        Side { policy, tables }
    }
}

/// What a policy change does to verdicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerdictDiff {
    /// Per group (by name, `_unknown` included) whose devices stay in it:
    /// the destinations whose verdict or deciding rule changes. Sorted by
    /// name; groups without changes are left out.
    pub groups: Vec<GroupChanges>,
    /// Device addresses whose group changes, and what that does to them.
    pub moved: Vec<MovedDevices>,
    pub groups_added: Vec<String>,
    pub groups_removed: Vec<String>,
    /// Rules that never decide in the new policy but did not in the old.
    pub newly_shadowed: Vec<NeverDecides>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupChanges {
    pub group: String,
    pub changes: Changes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedDevices {
    pub from: String,
    pub to: String,
    pub devices: Vec<IpNet>,
    /// For packets from these devices: old group's verdicts → new group's.
    pub changes: Changes,
}

/// The changed cells of one pair of groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The verdict changes.
    pub verdicts: Vec<Change>,
    /// The verdict stays, another rule decides it.
    pub reattributed: Vec<Change>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.verdicts.is_empty() && self.reattributed.is_empty()
    }
}

/// Destinations × protocols × ports whose outcome changes alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The fewest prefixes covering exactly the destinations.
    pub destinations: Vec<IpNet>,
    pub protocols: Protocols,
    pub ports: Ports,
    pub old: Outcome,
    pub new: Outcome,
}

impl Change {
    pub fn covers(&self, packet: &PacketFacts) -> bool {
        self.protocols.contains(packet.proto)
            && self.ports.contains(packet.dport)
            && self.destinations.iter().any(|d| d.contains(&packet.dst))
    }
}

impl VerdictDiff {
    /// Whether the change alters any verdict (of devices that stay in
    /// their group or move).
    pub fn changes_verdicts(&self) -> bool {
        self.groups.iter().any(|g| !g.changes.verdicts.is_empty())
            || self.moved.iter().any(|m| !m.changes.verdicts.is_empty())
    }

    /// The changes that apply to packets from a source that is in group
    /// `old_group` before and `new_group` after.
    pub fn changes_for(
        &self,
        old_group: &str,
        new_group: &str,
        src: std::net::IpAddr,
    ) -> Option<&Changes> {
        if old_group == new_group {
            self.groups
                .iter()
                .find(|g| g.group == old_group)
                .map(|g| &g.changes)
        } else {
            self.moved
                .iter()
                .find(|m| {
                    m.from == old_group
                        && m.to == new_group
                        && m.devices.iter().any(|d| d.contains(&src))
                })
                .map(|m| &m.changes)
        }
    }
}

/// Computes what changing `old` into `new` does to verdicts, and the rules
/// it newly shadows.
pub fn diff(old: Side, new: Side) -> VerdictDiff {
    let mut result = verdict_changes(old, new);
    let before: BTreeSet<(String, String)> = never_deciding(old.policy)
        .into_iter()
        .map(|n| (n.group, n.rule))
        .collect();
    result.newly_shadowed = never_deciding(new.policy)
        .into_iter()
        .filter(|n| !before.contains(&(n.group.clone(), n.rule.clone())))
        .collect();
    result
}

/// [`diff`] without the shadowed rules (what the daemon logs: it warns
/// about those at every load anyway).
pub fn verdict_changes(old: Side, new: Side) -> VerdictDiff {
    let mut interner = Interner::default();
    let mut pairs: BTreeMap<(String, String), Pair> = BTreeMap::new();
    for family in Family::BOTH {
        for (groups, sources) in source_pieces(family, old.tables, new.tables) {
            let (old_name, new_name) = (
                group_name(old.tables, groups.0),
                group_name(new.tables, groups.1),
            );
            // Only moved devices are listed.
            let moved = old_name != new_name;
            let pair = pairs.entry((old_name, new_name)).or_default();
            if moved {
                pair.sources.extend(
                    sources
                        .ranges
                        .iter()
                        .flat_map(|&(s, e)| cidrs(family, s, e)),
                );
            }
            let (classes, cells) = destination_changes(
                family,
                groups,
                sources.representative,
                old.tables,
                new.tables,
                &mut interner,
            );
            pair.classes.extend(classes);
            for (cell, ranges) in cells {
                pair.cells.push((cell, family, ranges));
            }
        }
    }

    let mut result = VerdictDiff::default();
    for ((from, to), pair) in pairs {
        let changes = collect(&pair.classes, pair.cells);
        if from == to {
            if !changes.is_empty() {
                result.groups.push(GroupChanges {
                    group: from,
                    changes,
                });
            }
        } else {
            result.moved.push(MovedDevices {
                from,
                to,
                devices: pair.sources,
                changes,
            });
        }
    }
    let names = |t: &CompiledPolicy| -> BTreeSet<String> {
        t.groups.iter().skip(1).map(|g| g.name.clone()).collect()
    };
    let (old_names, new_names) = (names(old.tables), names(new.tables));
    result.groups_added = new_names.difference(&old_names).cloned().collect();
    result.groups_removed = old_names.difference(&new_names).cloned().collect();
    result
}

/// Sorted, disjoint address ranges of one family.
type Ranges = Vec<(u128, u128)>;

/// A changed cell and the destinations it holds for.
type PlacedCell = (CellChange, Family, Ranges);

#[derive(Default)]
struct Pair {
    /// The sources, when they move between groups.
    sources: Vec<IpNet>,
    /// The protocol classes its cells were cut into (the same for both
    /// families, whose cells are joined).
    classes: BTreeSet<Option<u8>>,
    cells: Vec<PlacedCell>,
}

fn group_name(tables: &CompiledPolicy, id: u32) -> String {
    tables.groups[id as usize].name.clone()
}

/// The changed cells for sources in group `groups.0` before and `groups.1`
/// after, each with the destination ranges it holds for.
fn destination_changes(
    family: Family,
    (old_group, new_group): (u32, u32),
    src: std::net::IpAddr,
    old: &CompiledPolicy,
    new: &CompiledPolicy,
    interner: &mut Interner,
) -> (Vec<Option<u8>>, BTreeMap<CellChange, Ranges>) {
    if one_compilation(old, old_group, new, new_group) {
        return Default::default();
    }
    let spans = |t: &CompiledPolicy, group: u32| -> Vec<Span<u32>> {
        group_destinations(t, group)
            .iter()
            .map(|d| Span::of(&d.prefix, d.ruleset))
            .filter(|(f, _)| *f == family)
            .map(|(_, span)| span)
            .collect()
    };
    let defaults = |t: &CompiledPolicy, group: u32| {
        let g = &t.groups[group as usize];
        (g.default, g.audit)
    };
    let same_defaults = defaults(old, old_group) == defaults(new, new_group);
    let (old_spans, new_spans) = (spans(old, old_group), spans(new, new_group));
    // The classes come from both families: the changes of the two are
    // joined, so their classes must be the same.
    let named = |t: &CompiledPolicy, group: u32| -> BTreeSet<u8> {
        let rulesets: BTreeSet<u32> = group_destinations(t, group)
            .iter()
            .map(|d| d.ruleset)
            .collect();
        rulesets
            .iter()
            .flat_map(|&r| &t.rulesets[r as usize])
            .filter_map(|e| e.proto)
            .collect()
    };
    let classes = cells::classes(
        named(old, old_group)
            .into_iter()
            .chain(named(new, new_group)),
    );
    let mut evaluated: HashMap<(u32, u32), Vec<CellChange>> = HashMap::new();
    let mut found: BTreeMap<CellChange, Ranges> = BTreeMap::new();
    for piece in pieces(family.max(), old_spans, new_spans) {
        let key = (
            interner.key(old, 0, piece.old),
            interner.key(new, 1, piece.new),
        );
        if key.0 == key.1 && same_defaults {
            continue;
        }
        let cells = evaluated.entry(key).or_insert_with(|| {
            cells::changes(
                &cells::Side {
                    tables: old,
                    ruleset: piece.old,
                },
                &cells::Side {
                    tables: new,
                    ruleset: piece.new,
                },
                &classes,
                src,
                family.addr(piece.start),
            )
        });
        for cell in cells.iter() {
            push_range(
                found.entry(cell.clone()).or_default(),
                piece.start,
                piece.end,
            );
        }
    }
    (classes, found)
}

/// Whether group `old_group` of `old` and `new_group` of `new` are one
/// compiled group: the same fragment (its counter owners are one `Arc`,
/// kept by the compile cache while the group's text is unchanged) with the
/// same default. Every destination then has rule sets of one meaning and
/// the same default on both sides, which the sweep would skip one by one:
/// at fleet scale, a reload that edits one group of 100 saves 99 sweeps of
/// 1,000 destinations.
fn one_compilation(
    old: &CompiledPolicy,
    old_group: u32,
    new: &CompiledPolicy,
    new_group: u32,
) -> bool {
    let (Some(a), Some(b)) = (
        old.group_spans.get(old_group as usize),
        new.group_spans.get(new_group as usize),
    ) else {
        return false;
    };
    let (g, h) = (
        &old.groups[old_group as usize],
        &new.groups[new_group as usize],
    );
    Arc::ptr_eq(&a.owners, &b.owners) && (g.default, g.audit) == (h.default, h.audit)
}

/// The destination entries of `group`; none for the unknown group, whose
/// sources no rule applies to (step 5).
fn group_destinations(tables: &CompiledPolicy, group: u32) -> &[DestinationEntry] {
    if group == UNKNOWN_GROUP {
        return &[];
    }
    let from = tables.destinations.partition_point(|d| d.group < group);
    let to = tables.destinations.partition_point(|d| d.group <= group);
    &tables.destinations[from..to]
}

/// What a rule set decides, independent of counter numbering: equal keys
/// decide every packet alike.
type EntryMeaning = (Option<u8>, Option<(u16, u16)>, Verdict, bool, String);

/// Numbers rule sets by meaning, across both policies.
#[derive(Default)]
struct Interner {
    ids: HashMap<Vec<EntryMeaning>, u32>,
    /// Per side, per rule set index: its id once known.
    known: [HashMap<u32, u32>; 2],
}

impl Interner {
    /// The id of rule set `ruleset` of `tables` (side 0 old, 1 new);
    /// `u32::MAX` for no rule set.
    fn key(&mut self, tables: &CompiledPolicy, side: usize, ruleset: Option<u32>) -> u32 {
        let Some(ruleset) = ruleset else {
            return u32::MAX;
        };
        if let Some(&id) = self.known[side].get(&ruleset) {
            return id;
        }
        let meaning: Vec<EntryMeaning> = tables.rulesets[ruleset as usize]
            .iter()
            .map(|e: &RuleEntry| {
                (
                    e.proto,
                    e.ports,
                    e.verdict,
                    e.builtin,
                    decider(tables, e.counter),
                )
            })
            .collect();
        let next = self.ids.len() as u32;
        let id = *self.ids.entry(meaning).or_insert(next);
        self.known[side].insert(ruleset, id);
        id
    }
}

fn decider(tables: &CompiledPolicy, counter: u32) -> String {
    match &tables.counters[counter as usize] {
        CounterOwner::Decision { decider, .. } => decider.rule_id().to_string(),
        CounterOwner::Verdict { verdict, .. } => verdict.label().to_string(),
    }
}

/// Joins the cells of one pair of groups (over both families) into changes:
/// first the destinations of each (class, ports, change), then the classes
/// with the same ports, change and destinations. Ordered by first
/// destination.
fn collect(classes: &BTreeSet<Option<u8>>, cells: Vec<PlacedCell>) -> Changes {
    let mut by_cell: BTreeMap<CellChange, Vec<(Family, u128, u128)>> = BTreeMap::new();
    for (cell, family, ranges) in cells {
        by_cell
            .entry(cell)
            .or_default()
            .extend(ranges.into_iter().map(|(s, e)| (family, s, e)));
    }
    type Joined = (Vec<(Family, u128, u128)>, Ports, Outcome, Outcome);
    let mut by_rest: BTreeMap<Joined, BTreeSet<Option<u8>>> = BTreeMap::new();
    for (cell, ranges) in by_cell {
        by_rest
            .entry((ranges, cell.ports, cell.old, cell.new))
            .or_default()
            .insert(cell.class);
    }
    let named: Vec<u8> = classes.iter().flatten().copied().collect();
    let mut all: Vec<Change> = by_rest
        .into_iter()
        .map(|((ranges, ports, old, new), these)| {
            let protocols = if these.contains(&None) {
                let except: Vec<u8> = named
                    .iter()
                    .copied()
                    .filter(|p| !these.contains(&Some(*p)))
                    .collect();
                if except.is_empty() {
                    Protocols::Any
                } else {
                    Protocols::AllBut(except)
                }
            } else {
                Protocols::Only(these.into_iter().flatten().collect())
            };
            Change {
                destinations: ranges
                    .iter()
                    .flat_map(|&(family, s, e)| cidrs(family, s, e))
                    .collect(),
                protocols,
                ports,
                old,
                new,
            }
        })
        .collect();
    all.sort_by(|a, b| {
        (a.destinations.first(), &a.protocols, &a.ports).cmp(&(
            b.destinations.first(),
            &b.protocols,
            &b.ports,
        ))
    });
    let (verdicts, reattributed) = all
        .into_iter()
        .partition(|c: &Change| c.old.verdict != c.new.verdict);
    Changes {
        verdicts,
        reattributed,
    }
}
