//! One slot's kernel entries ([`SlotImage`]), built from a compiled policy,
//! and (in `writes.rs`) the minimal set of map writes that turns a slot's
//! current entries into new ones.
//!
//! Only the inactive slot is ever written, so the order of writes within a
//! slot does not matter; the flip of `TG_ACTIVE` publishes the whole slot.
//!
//! Map entries are kept as vectors sorted by key, in the order `compile`
//! already produces them, so building an image and diffing two are linear
//! passes: with 10^5 destinations, hashing every key twice per reload cost
//! more than the map writes of a small edit. The exact device entries, the
//! largest map (10^6 in a fleet), are kept by group instead
//! (`devices.rs`): an install rebuilds and diffs only the groups whose
//! device list is not the one the slot was written from.
//!
//! Group ids in the kernel come from `group_ids.rs`, not from the group's
//! position in the policy, so that adding or removing a group leaves every
//! other group's entries as they are; `contents.rs` reads a slot back in
//! placement-free terms, for the tests that compare incremental installs
//! with from-scratch ones.

pub(super) mod batch;
mod by_group;
mod contents;
mod device_table;
mod devices;
mod fault;
pub mod flat;
mod group_ids;
mod mapped;
mod writes;

use std::{net::IpAddr, sync::Arc};

use anyhow::{Context as _, Result, bail};
use tollgate_common::{
    DESTINATION_HEADER_BITS, DEVICE_PREFIX_HEADER_BITS, Destination, DeviceKey, DevicePrefix,
    FAMILY_V4, FAMILY_V6, GROUP_AUDIT, GROUP_DEFAULT_DENY, GROUP_DEFAULT_REJECT, GROUP_LEARNS,
    GroupInfo, MAX_GROUPS, RULE_ANY_PROTO, RULE_AUDIT, RULE_BUILTIN, RULE_DENY, RULE_PORTS,
    RULE_REJECT, RuleEntry as KernelEntry, RuleRecord, TRIE_WORDS_PER_SLOT, Verdict,
};

use self::by_group::{GroupInput, Layout};
pub use self::{
    by_group::GroupParts,
    contents::{GroupContents, RuleContents, SlotContents},
    device_table::{DeviceTable, Geometry},
    devices::DeviceEntries,
    flat::{FlatImage, Shape, TrieRoom},
    group_ids::GroupIds,
    mapped::{FlatMaps, MappedWords},
    writes::{PolicyMaps, WriteStats},
};
use super::records::List;
use crate::tables::{CompiledPolicy, DestinationEntry, RuleEntry};

/// The kernel entries of one slot. Keys include the slot number. The hash
/// and LPM entries are sorted by key ([`Sorted`]), each key once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotImage {
    pub groups: Vec<GroupInfo>,
    /// By group (`devices.rs`).
    pub device_exact: DeviceEntries,
    /// The gateway's addresses (value unused, always 1).
    pub gateway: Vec<(DeviceKey, u8)>,
    /// (LPM prefix length, data) → group.
    pub device_prefixes: Vec<((u32, DevicePrefix), u32)>,
    /// (LPM prefix length, data) → first record of its rule list.
    pub destinations: Vec<((u32, Destination), u32)>,
    /// The records of the rule lists, by absolute index, sorted.
    pub records: Vec<(u32, RuleRecord)>,
    /// The device prefixes and destinations above compiled into the tries
    /// packets walk (`flat.rs`).
    pub flat: FlatImage,
    /// What each group's destinations and records were made from
    /// (`by_group.rs`).
    pub by_group: GroupParts,
}

/// The order of a map's keys in an image: the order `compile` sorts its
/// tables in (group, then family, address, prefix length), so sorting a
/// freshly built image finds it sorted already.
pub trait Sorted: Copy {
    type Order: Ord;
    fn order(&self) -> Self::Order;
}

impl Sorted for DeviceKey {
    type Order = (u8, u8, [u8; 16]);
    fn order(&self) -> Self::Order {
        (self.slot, self.family, self.addr)
    }
}

impl Sorted for (u32, DevicePrefix) {
    type Order = (u8, u8, [u8; 16], u32);
    fn order(&self) -> Self::Order {
        (self.1.slot, self.1.family, self.1.addr, self.0)
    }
}

impl Sorted for (u32, Destination) {
    /// The group is big-endian, so its bytes sort as the number does.
    type Order = (u8, [u8; 2], u8, [u8; 16], u32);
    fn order(&self) -> Self::Order {
        let d = &self.1;
        (d.slot, d.group, d.family, d.addr, self.0)
    }
}

/// Sorts `entries` by key; of entries with one key, the last one added
/// stays (as a map insert would).
fn sort_entries<K: Sorted, V: Copy>(entries: &mut Vec<(K, V)>) {
    entries.sort_by_key(|(k, _)| k.order());
    entries.dedup_by(|later, earlier| {
        let same = later.0.order() == earlier.0.order();
        if same {
            earlier.1 = later.1;
        }
        same
    });
}

fn family_and_bytes(addr: IpAddr) -> (u8, [u8; 16]) {
    let mut bytes = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            bytes[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, bytes)
        }
        IpAddr::V6(a) => (FAMILY_V6, a.octets()),
    }
}

/// Each group's exact device addresses, from `device_exact`: for a policy
/// built by hand, without `group_devices`.
fn device_lists(policy: &CompiledPolicy) -> Result<Vec<Arc<[IpAddr]>>> {
    let mut lists = vec![Vec::new(); policy.groups.len()];
    for &(addr, logical) in policy.device_exact.iter() {
        lists
            .get_mut(logical as usize)
            .with_context(|| format!("group {logical} has no kernel id"))?
            .push(addr);
    }
    Ok(lists.into_iter().map(Arc::from).collect())
}

/// Where each group's counters and destinations are found.
#[derive(Clone, Copy)]
enum GroupInputs<'a> {
    /// In the policy's `group_spans`.
    Spans,
    /// A policy built by hand: its destinations by group, and no counters
    /// (the group is built anew on every install).
    ByHand(&'a [Vec<DestinationEntry>]),
}

/// The destinations of each group of a policy built by hand.
fn destinations_by_group(policy: &CompiledPolicy) -> Result<Vec<Vec<DestinationEntry>>> {
    let mut by_group = vec![Vec::new(); policy.groups.len()];
    for d in &policy.destinations {
        by_group
            .get_mut(d.group as usize)
            .with_context(|| format!("group {} has no kernel id", d.group))?
            .push(d.clone());
    }
    Ok(by_group)
}

impl SlotImage {
    /// Lays out `policy` for `slot`; `counters` maps its logical counters to
    /// kernel indices, `group_ids` its group ids ([`GroupIds`]). Rule lists
    /// keep the records they have in `current` (what the slot holds now)
    /// when unchanged; `records_per_slot` is the slot's share of
    /// `TG_RULESETS`.
    pub fn build(
        slot: u8,
        policy: &CompiledPolicy,
        counters: &[u32],
        group_ids: &[u32],
        current: &SlotImage,
        records_per_slot: u32,
        largest_trie: Shape,
    ) -> Result<SlotImage> {
        if policy.groups.len() > MAX_GROUPS as usize {
            bail!(
                "{} groups exceed the dataplane's {MAX_GROUPS}",
                policy.groups.len()
            );
        }
        let counter = |logical: u32| -> Result<u32> {
            counters
                .get(logical as usize)
                .copied()
                .with_context(|| format!("logical counter {logical} has no kernel counter"))
        };

        let group = |logical: u32| -> Result<u32> {
            group_ids
                .get(logical as usize)
                .copied()
                .filter(|&id| id < MAX_GROUPS)
                .with_context(|| format!("group {logical} has no kernel id"))
        };

        let mut image = SlotImage::default();
        // Ids no group has hold the default (no counters, allow): nothing
        // refers to them.
        let groups_len = group_ids.iter().max().map_or(0, |&id| id as usize + 1);
        image.groups = vec![GroupInfo::default(); groups_len];
        let mut learns: Vec<u32> = policy.fqdn_rules.iter().map(|r| r.group).collect();
        learns.sort_unstable();
        for (logical, g) in policy.groups.iter().enumerate() {
            let mut flags = match g.default {
                Verdict::Deny => GROUP_DEFAULT_DENY,
                Verdict::Reject => GROUP_DEFAULT_REJECT,
                Verdict::Allow | Verdict::AuditDeny => 0,
            };
            if g.audit {
                flags |= GROUP_AUDIT;
            }
            if learns.binary_search(&(logical as u32)).is_ok() {
                flags |= GROUP_LEARNS;
            }
            image.groups[group(logical as u32)? as usize] = GroupInfo {
                default_counter: counter(g.default_counter)?,
                allow_counter: counter(g.allow_counter)?,
                deny_counter: counter(g.deny_counter)?,
                audit_deny_counter: counter(g.audit_deny_counter)?,
                reject_counter: counter(g.reject_counter)?,
                flags,
            };
        }
        let derived;
        let lists = if policy.group_devices.is_empty() {
            derived = device_lists(policy)?;
            &derived
        } else {
            &policy.group_devices
        };
        let ids = (0..lists.len() as u32)
            .map(group)
            .collect::<Result<Vec<u32>>>()?;
        image.device_exact =
            DeviceEntries::build(slot, ids.into_iter().zip(lists), &current.device_exact);
        for &addr in &policy.gateway {
            let (family, addr) = family_and_bytes(addr);
            image.gateway.push((
                DeviceKey {
                    slot,
                    family,
                    _pad: [0; 2],
                    addr,
                },
                1,
            ));
        }
        for &(prefix, logical) in &policy.device_prefixes {
            let (family, addr) = family_and_bytes(prefix.network());
            image.device_prefixes.push((
                (
                    DEVICE_PREFIX_HEADER_BITS + u32::from(prefix.prefix_len()),
                    DevicePrefix {
                        slot,
                        family,
                        addr,
                        _pad: [0; 2],
                    },
                ),
                group(logical)?,
            ));
        }
        // A group's lists carry its audit mode and verdict totals
        // (`tollgate_common::RuleEntry`).
        let group_infos = image.groups.clone();
        let list = |id: u32, rules: &[RuleEntry]| -> Result<List> {
            let info = group_infos
                .get(id as usize)
                .with_context(|| format!("kernel group {id} has no entry"))?;
            rules
                .iter()
                .map(|rule| {
                    let mut flags = 0;
                    if rule.proto.is_none() {
                        flags |= RULE_ANY_PROTO;
                    }
                    if rule.ports.is_some() {
                        flags |= RULE_PORTS;
                    }
                    match rule.verdict {
                        Verdict::Deny => flags |= RULE_DENY,
                        Verdict::Reject => flags |= RULE_REJECT,
                        Verdict::Allow | Verdict::AuditDeny => {}
                    }
                    // step 11, written into the entry as the kernel's
                    // default applies it
                    let verdict = info.audited(rule.verdict);
                    if verdict == Verdict::AuditDeny {
                        flags |= RULE_AUDIT;
                    }
                    if rule.builtin {
                        flags |= RULE_BUILTIN;
                    }
                    let (lo, hi) = rule.ports.unwrap_or((0, 0));
                    let (port_lo, port_hi) = fault::ports(lo, hi);
                    Ok(KernelEntry {
                        counter: counter(rule.counter)?,
                        verdict_counter: info.total(verdict),
                        port_lo,
                        port_hi,
                        proto: rule.proto.unwrap_or(0),
                        flags,
                        _pad: [0; 2],
                    })
                })
                .collect()
        };
        let key = |d: &DestinationEntry| -> Result<(u32, Destination)> {
            let (family, addr) = family_and_bytes(d.prefix.network());
            Ok((
                DESTINATION_HEADER_BITS + u32::from(d.prefix.prefix_len()),
                Destination {
                    slot,
                    family,
                    group: u16::try_from(group(d.group)?)?.to_be_bytes(),
                    addr,
                },
            ))
        };
        let base = u32::from(slot) * records_per_slot;
        let layout = Layout {
            rulesets: &policy.rulesets,
            list: &list,
            key: &key,
            region: base..base + records_per_slot,
        };
        let by_hand;
        let spans = if policy.group_spans.len() == policy.groups.len() {
            GroupInputs::Spans
        } else {
            by_hand = destinations_by_group(policy)?;
            GroupInputs::ByHand(&by_hand)
        };
        let inputs = (0..policy.groups.len())
            .map(|logical| {
                let (source, counters, destinations) = match spans {
                    GroupInputs::Spans => {
                        let span = &policy.group_spans[logical];
                        let first = span.first_counter as usize;
                        let counters = counters
                            .get(first..first + span.owners.len())
                            .with_context(|| format!("group {logical} has no kernel counters"))?;
                        let destinations = policy
                            .destinations
                            .get(span.destinations.clone())
                            .with_context(|| format!("group {logical} has no destinations"))?;
                        (Some(&span.owners), counters, destinations)
                    }
                    GroupInputs::ByHand(by_hand) => (None, &[][..], &by_hand[logical][..]),
                };
                Ok(GroupInput {
                    id: group(logical as u32)?,
                    source,
                    counters,
                    destinations,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        image.by_group = GroupParts::build(&inputs, &layout, current)?;
        image.destinations = image.by_group.destinations();
        image.records = image.by_group.records();
        image.sort();
        let kept = |tree: u32| image.by_group.kept_from(tree, &current.by_group);
        let room = TrieRoom {
            words: TRIE_WORDS_PER_SLOT,
            largest: largest_trie,
        };
        image.flat = FlatImage::build(slot, &image, &current.flat, &kept, room)?;
        Ok(image)
    }

    /// Sorts the entries built in policy order (destinations come sorted
    /// from `by_group.rs`, or from reading a slot back).
    fn sort(&mut self) {
        sort_entries(&mut self.gateway);
        sort_entries(&mut self.device_prefixes);
        sort_entries(&mut self.destinations);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain numbers as keys, for the tests here and in `writes.rs`.
    impl Sorted for u32 {
        type Order = u32;
        fn order(&self) -> u32 {
            *self
        }
    }

    #[test]
    fn images_are_sorted_and_keep_the_last_of_a_key() {
        let mut v = vec![(3u32, 1u32), (1, 1), (3, 2), (2, 1)];
        sort_entries(&mut v);
        assert_eq!(v, vec![(1, 1), (2, 1), (3, 2)]);
    }
}
