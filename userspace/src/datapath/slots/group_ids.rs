//! Kernel group ids: the id each group has in each slot's keys and in
//! `TG_GROUPS`.
//!
//! A compiled policy numbers its groups by position, so a group file added
//! before the others would renumber every later group, and every device and
//! destination entry of theirs (the id is part of the value or the key)
//! would be written again. Here a group keeps the id it has in the slot
//! being written for as long as the policy has a group of that name; a new
//! group takes the id it has in the other slot if that is free here (so
//! both slots agree wherever they can), else the lowest free one. A removed
//! group's id is free for the next new group.
//!
//! After a restart the controller learns the ids a slot holds from the slot
//! itself ([`GroupIds::adopt`]): a group's `TG_GROUPS` entry names its five
//! counters, and `TG_OWNERS` names their owners, which name the group.
//!
//! Only minimality depends on these ids, never correctness: the slot is
//! written by difference from what it holds, whatever the ids.

use std::collections::{BTreeSet, HashMap};

use tollgate_common::{GroupInfo, UNKNOWN_GROUP};

use super::SlotImage;
use crate::{
    datapath::counters::owner_hash,
    tables::{CounterOwner, GroupTable},
};

#[derive(Clone, Debug, Default)]
pub struct GroupIds {
    /// Each slot's group names and their ids; group 0 is never listed.
    in_slot: [HashMap<String, u32>; 2],
}

impl GroupIds {
    /// The kernel id of each of `groups` (by compiled id) in `slot`, from
    /// now on. Group 0, the unknown-device group, is always 0.
    pub fn assign(&mut self, slot: u8, groups: &[GroupTable]) -> Vec<u32> {
        let slot = usize::from(slot);
        let (held, other) = (&self.in_slot[slot], &self.in_slot[1 - slot]);
        let mut ids = vec![UNKNOWN_GROUP; groups.len()];
        let mut taken = vec![false; groups.len().max(1)];
        taken[0] = true;
        let take = |id: u32, taken: &mut Vec<bool>| {
            let i = id as usize;
            if i >= taken.len() {
                taken.resize(i + 1, false);
            }
            taken[i] = true;
        };
        let mut new = Vec::new();
        for (i, group) in groups.iter().enumerate().skip(1) {
            match held.get(&group.name) {
                Some(&id) => {
                    ids[i] = id;
                    take(id, &mut taken);
                }
                None => new.push(i),
            }
        }
        let is_taken = |id: u32, taken: &[bool]| taken.get(id as usize).copied().unwrap_or(false);
        let mut later = Vec::new();
        for i in new {
            match other.get(&groups[i].name) {
                Some(&id) if !is_taken(id, &taken) => {
                    ids[i] = id;
                    take(id, &mut taken);
                }
                _ => later.push(i),
            }
        }
        let mut lowest = 1u32;
        for i in later {
            while is_taken(lowest, &taken) {
                lowest += 1;
            }
            ids[i] = lowest;
            take(lowest, &mut taken);
        }
        self.in_slot[slot] = groups
            .iter()
            .zip(&ids)
            .skip(1)
            .map(|(g, &id)| (g.name.clone(), id))
            .collect();
        ids
    }

    /// Learns which of `groups` (a policy's, with its counter owners
    /// `counters`) each group id of `slot` holds, from `image` (the slot as
    /// read back) and `owner` (the owner hash of each kernel counter, from
    /// `TG_OWNERS`): an id holds a group when the owners of its five
    /// counters are that group's. An id that matches no group of the
    /// policy, and a group two ids match (a stale entry past the ids in
    /// use) unless exactly one of them is referenced by an entry, stay
    /// unknown: they cost writes, never correctness.
    pub fn adopt(
        &mut self,
        slot: u8,
        image: &SlotImage,
        (groups, counters): (&[GroupTable], &[CounterOwner]),
        owner: impl Fn(u32) -> u64,
    ) {
        let hash = |logical: u32| counters.get(logical as usize).map_or(0, owner_hash);
        let wanted: HashMap<[u64; 5], &str> = groups
            .iter()
            .skip(1)
            .map(|g| {
                let owners = [
                    g.default_counter,
                    g.allow_counter,
                    g.deny_counter,
                    g.audit_deny_counter,
                    g.reject_counter,
                ]
                .map(hash);
                (owners, g.name.as_str())
            })
            .collect();
        let held = |info: &GroupInfo| {
            [
                info.default_counter,
                info.allow_counter,
                info.deny_counter,
                info.audit_deny_counter,
                info.reject_counter,
            ]
            .map(&owner)
        };
        let mut claims: HashMap<&str, Vec<u32>> = HashMap::new();
        for (id, info) in (0u32..).zip(&image.groups).skip(1) {
            if let Some(name) = wanted.get(&held(info)) {
                claims.entry(name).or_default().push(id);
            }
        }
        let referenced: BTreeSet<u32> = image
            .device_exact
            .iter()
            .map(|(_, id)| *id)
            .chain(image.device_prefixes.iter().map(|(_, id)| *id))
            .chain(
                image
                    .destinations
                    .iter()
                    .map(|((_, d), _)| u32::from(u16::from_be_bytes(d.group))),
            )
            .collect();
        self.in_slot[usize::from(slot)] = claims
            .into_iter()
            .filter_map(|(name, ids)| {
                let id = match ids[..] {
                    [id] => id,
                    _ => {
                        let mut live = ids.into_iter().filter(|id| referenced.contains(id));
                        match (live.next(), live.next()) {
                            (Some(id), None) => id,
                            _ => return None,
                        }
                    }
                };
                Some((name.to_string(), id))
            })
            .collect();
    }

    /// The name of each group id in `slot`.
    pub fn names(&self, slot: u8) -> HashMap<u32, String> {
        self.in_slot[usize::from(slot)]
            .iter()
            .map(|(name, &id)| (id, name.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(names: &[&str]) -> Vec<GroupTable> {
        std::iter::once("_unknown")
            .chain(names.iter().copied())
            .map(GroupTable::named)
            .collect()
    }

    /// A policy of groups `names` (after group 0) whose five counters are
    /// logical counters 5·i .. 5·i + 4, with their owners.
    fn counted(names: &[&str]) -> (Vec<GroupTable>, Vec<CounterOwner>) {
        let mut counters = Vec::new();
        let groups = groups(names)
            .into_iter()
            .enumerate()
            .map(|(i, mut g)| {
                let first = 5 * i as u32;
                [
                    &mut g.default_counter,
                    &mut g.allow_counter,
                    &mut g.deny_counter,
                    &mut g.audit_deny_counter,
                    &mut g.reject_counter,
                ]
                .into_iter()
                .zip(first..)
                .for_each(|(c, logical)| *c = logical);
                for verdict in 0..5 {
                    counters.push(CounterOwner::Decision {
                        group: g.name.as_str().into(),
                        decider: crate::tables::Decider::Rule(verdict.to_string().into()),
                    });
                }
                g
            })
            .collect();
        (groups, counters)
    }

    #[test]
    fn a_read_back_slot_tells_its_ids_by_counter_owners() {
        let (groups, counters) = counted(&["a", "b", "c"]);
        // Kernel counter k holds logical counter k; slot ids: c at 1, a at
        // 2 and (stale, unreferenced) at 4, b nowhere.
        let info = |group: u32| GroupInfo {
            default_counter: 5 * group,
            allow_counter: 5 * group + 1,
            deny_counter: 5 * group + 2,
            audit_deny_counter: 5 * group + 3,
            reject_counter: 5 * group + 4,
            flags: 0,
        };
        let image = SlotImage {
            groups: vec![info(0), info(3), info(1), GroupInfo::default(), info(1)],
            ..SlotImage::default()
        };
        let owner = |k: u32| owner_hash(&counters[k as usize]);
        let mut ids = GroupIds::default();
        ids.adopt(0, &image, (&groups, &counters), owner);
        // `a` is claimed twice and neither is referenced: unknown.
        assert_eq!(ids.names(0), HashMap::from([(1, "c".to_string())]));
        // A device of `a` under id 2 settles it; b takes the lowest free id.
        let mut image = image;
        image.device_exact = super::super::DeviceEntries::read_back(vec![(
            tollgate_common::DeviceKey {
                slot: 0,
                family: tollgate_common::FAMILY_V4,
                _pad: [0; 2],
                addr: [0; 16],
            },
            2,
        )]);
        ids.adopt(0, &image, (&groups, &counters), owner);
        assert_eq!(ids.assign(0, &groups), vec![0, 2, 3, 1]);
    }

    #[test]
    fn groups_keep_their_ids_and_new_ones_take_free_ids() {
        let mut ids = GroupIds::default();
        assert_eq!(ids.assign(0, &groups(&["b", "c"])), vec![0, 1, 2]);
        // The other slot agrees with slot 0 where it can.
        assert_eq!(ids.assign(1, &groups(&["a", "b", "c"])), vec![0, 3, 1, 2]);
        // A group sorted first moves no other group.
        assert_eq!(ids.assign(0, &groups(&["a", "b", "c"])), vec![0, 3, 1, 2]);
        // Removing `b` frees 1 in slot 1, which the next new group takes
        // (after preferring the other slot's id, taken here).
        assert_eq!(ids.assign(1, &groups(&["a", "c"])), vec![0, 3, 2]);
        assert_eq!(ids.assign(1, &groups(&["a", "c", "d"])), vec![0, 3, 2, 1]);
        // Slot 0 holds b at 1: d cannot have it there, takes the lowest free.
        assert_eq!(
            ids.assign(0, &groups(&["a", "b", "c", "d"])),
            vec![0, 3, 1, 2, 4]
        );
    }
}
