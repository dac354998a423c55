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
//! Only minimality depends on these ids, never correctness: the slot is
//! written by difference from what it holds, whatever the ids.

use std::collections::HashMap;

use tollgate_common::UNKNOWN_GROUP;

use crate::tables::GroupTable;

#[derive(Debug, Default)]
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
