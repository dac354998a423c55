//! A slot's rule-list records and destination entries, kept by group.
//!
//! With 10^5 rules in 100 group files, turning every rule list into kernel
//! entries, walking every chain the slot holds to find the unchanged ones
//! and rebuilding every group's trie cost far more than the few writes an
//! edit makes. A group's rule lists, destinations and trie depend only on
//! its compiled fragment (whose counter owners are shared with every
//! policy assembled from it: [`GroupSpan`]), the kernel indices of its
//! counters and its kernel id. So each slot keeps, by kernel group id,
//! what its group's records and destination entries were made from; an
//! install takes them as they are when the slot was written from that
//! fragment with those counters, marks their records used, and places only
//! the other groups' lists, each reusing the chains its group holds in the
//! slot that have the same content (`records.rs`).
//!
//! [`GroupSpan`]: crate::tables::GroupSpan

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    ops::Range,
    sync::Arc,
};

use anyhow::{Context as _, Result};
use tollgate_common::{Destination, RuleRecord};

use super::{SlotImage, sort_entries};
use crate::{
    datapath::records::{self, List},
    tables::{CounterOwner, DestinationEntry},
};

/// A destination entry of a slot: (LPM prefix length, data) → the first
/// record of its rule list.
pub type DestinationKv = ((u32, Destination), u32);

/// One group's share of a slot.
#[derive(Clone, Debug)]
struct GroupPart {
    /// The counter owners of the fragment it was made from; `None` for a
    /// policy built by hand, which no later one matches.
    source: Option<Arc<[CounterOwner]>>,
    /// The kernel indices of those counters.
    counters: Arc<[u32]>,
    /// Sorted by key.
    destinations: Arc<[DestinationKv]>,
    /// The records of its lists, sorted by index.
    records: Arc<[(u32, RuleRecord)]>,
}

/// The groups' shares of a slot, by kernel group id. Empty for a slot read
/// back from the kernel or left by a failed write: its groups are all
/// placed anew (reusing the chains that hold their lists).
#[derive(Clone, Debug, Default)]
pub struct GroupParts {
    by_group: BTreeMap<u32, GroupPart>,
}

impl PartialEq for GroupParts {
    /// Where entries came from, not what they are: the image's entries
    /// are compared on their own.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What one group of a policy brings to a slot.
pub struct GroupInput<'a> {
    /// Its kernel id.
    pub id: u32,
    pub source: Option<&'a Arc<[CounterOwner]>>,
    /// The kernel indices of its counters (those of its span).
    pub counters: &'a [u32],
    pub destinations: &'a [DestinationEntry],
}

/// How to make a group's destination entries and kernel lists.
pub struct Layout<'a> {
    pub rulesets: &'a crate::tables::Rulesets,
    /// A rule set of the group of a kernel id as kernel entries.
    pub list: &'a dyn Fn(u32, &[crate::tables::RuleEntry]) -> Result<List>,
    /// A destination entry's key.
    pub key: &'a dyn Fn(&DestinationEntry) -> Result<(u32, Destination)>,
    /// The slot's share of `TG_RULESETS`.
    pub region: Range<u32>,
}

impl GroupParts {
    /// The shares of `groups` in a slot holding `current`, reusing those
    /// `current` made from the same fragment and counters under the same
    /// id.
    pub fn build(
        groups: &[GroupInput],
        layout: &Layout,
        current: &SlotImage,
    ) -> Result<GroupParts> {
        let held = |g: &GroupInput| -> Option<&GroupPart> {
            let part = current.by_group.by_group.get(&g.id)?;
            let same = part
                .source
                .as_ref()
                .zip(g.source)
                .is_some_and(|(a, b)| Arc::ptr_eq(a, b))
                && *part.counters == *g.counters;
            same.then_some(part)
        };
        let mut region = records::Region::new(layout.region.clone());
        let mut by_group = BTreeMap::new();
        let mut rebuilt = Vec::new();
        for g in groups {
            match held(g) {
                Some(part) => {
                    for (r, _) in part.records.iter() {
                        region.take(*r);
                    }
                    by_group.insert(g.id, part.clone());
                }
                None => rebuilt.push(g),
            }
        }
        // The chains each group to rebuild holds in the slot now: from its
        // share where the slot has one (a scan of the slot's 10^5
        // destinations cost a one-line edit 1-2 ms), else from that scan.
        let mut heads: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut scanned: HashMap<u32, Vec<u32>> = HashMap::new();
        for g in &rebuilt {
            match current.by_group.by_group.get(&g.id) {
                Some(part) => {
                    heads.insert(g.id, part.destinations.iter().map(|(_, h)| *h).collect());
                }
                None => {
                    scanned.insert(g.id, Vec::new());
                }
            }
        }
        if !scanned.is_empty() {
            for ((_, key), head) in &current.destinations {
                if let Some(h) = scanned.get_mut(&u32::from(u16::from_be_bytes(key.group))) {
                    h.push(*head);
                }
            }
            heads.extend(scanned);
        }
        // Every group's unchanged chains first, then the new ones: a list
        // laid out before another group's reuse would take its records.
        let mut placed = Vec::with_capacity(rebuilt.len());
        for g in rebuilt {
            // The group's rule sets, each once, in the order first used.
            let mut local: HashMap<u32, usize> = HashMap::new();
            let mut lists = Vec::new();
            for d in g.destinations {
                if let Entry::Vacant(e) = local.entry(d.ruleset) {
                    let rules = layout
                        .rulesets
                        .get(d.ruleset as usize)
                        .with_context(|| format!("destination {} has no rule set", d.prefix))?;
                    e.insert(lists.len());
                    lists.push((layout.list)(g.id, rules)?);
                }
            }
            let held = heads.remove(&g.id).unwrap_or_default();
            let placement = records::reuse(&lists, held, &current.records, &mut region);
            placed.push((g, local, lists, placement));
        }
        for (g, local, lists, mut placement) in placed {
            records::lay_out(&lists, &mut placement, &mut region)?;
            let mut destinations = g
                .destinations
                .iter()
                .map(|d| Ok(((layout.key)(d)?, placement.heads[local[&d.ruleset]])))
                .collect::<Result<Vec<_>>>()?;
            sort_entries(&mut destinations);
            let part = GroupPart {
                source: g.source.cloned(),
                counters: g.counters.into(),
                destinations: destinations.into(),
                records: placement.records.into(),
            };
            by_group.insert(g.id, part);
        }
        Ok(GroupParts { by_group })
    }

    /// Whether group `id`'s share is the one `current` has (shared by
    /// pointer), so its trie is too.
    pub fn kept_from(&self, id: u32, current: &GroupParts) -> bool {
        match (self.by_group.get(&id), current.by_group.get(&id)) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.destinations, &b.destinations),
            _ => false,
        }
    }

    /// Every destination entry, sorted by key (the group id comes first
    /// after the slot).
    pub fn destinations(&self) -> Vec<DestinationKv> {
        let mut all =
            Vec::with_capacity(self.by_group.values().map(|p| p.destinations.len()).sum());
        for part in self.by_group.values() {
            all.extend_from_slice(&part.destinations);
        }
        all
    }

    /// The records of the groups whose share `held` (the shares of what
    /// the slot holds) does not have, sorted by index: the only ones an
    /// install may have to write. A share kept from `held` has its records
    /// in the slot already, at indices no other list was given.
    pub fn records_not_in(&self, held: &GroupParts) -> Vec<(u32, RuleRecord)> {
        merged_records(self.by_group.iter().filter_map(|(id, part)| {
            let kept = held
                .by_group
                .get(id)
                .is_some_and(|h| Arc::ptr_eq(&h.records, &part.records));
            (!kept).then_some(part)
        }))
    }

    /// Every record, sorted by index.
    pub fn records(&self) -> Vec<(u32, RuleRecord)> {
        merged_records(self.by_group.values())
    }
}

/// The records of `parts`, sorted by index: sorted runs, one per group,
/// which a stable sort merges.
fn merged_records<'a>(
    parts: impl Iterator<Item = &'a GroupPart> + Clone,
) -> Vec<(u32, RuleRecord)> {
    let mut all = Vec::with_capacity(parts.clone().map(|p| p.records.len()).sum());
    for part in parts {
        all.extend_from_slice(&part.records);
    }
    all.sort_by_key(|(i, _)| *i);
    all
}
