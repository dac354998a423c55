//! A slot's exact device entries (`TG_DEV_EXACT`), kept by group.
//!
//! With 10^6 devices in 100 group files, rebuilding, sorting and diffing
//! every entry on each install cost two orders of magnitude more than the
//! few writes an edit makes. Here a group's entries are made once from its
//! compiled device list (an `Arc` shared with the group's compiled
//! fragment, so an unchanged group file yields the very same list) and
//! kept while the slot holds that list under the same group id; an
//! install diffs only the groups whose entries are not the ones the slot
//! holds (`writes.rs`).
//!
//! A device is in one group only (validation rejects a device in two), so
//! the entries of the groups that did not change are the same before and
//! after, and the difference of the other groups' entries is the
//! difference of the whole map: the writes are those of a full diff.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use tollgate_common::DeviceKey;

use super::{family_and_bytes, sort_entries};

/// The entries of one group.
#[derive(Clone, Debug)]
struct GroupDevices {
    /// The list the entries were made from; `None` for entries read back
    /// from the kernel or left by a failed write, which no list matches.
    source: Option<Arc<[IpAddr]>>,
    /// Sorted by key; shared with the image they were built for, so that
    /// the writer can tell an unchanged group by pointer.
    entries: Arc<[(DeviceKey, u32)]>,
}

/// The exact device entries of a slot, by kernel group id.
#[derive(Clone, Debug, Default)]
pub struct DeviceEntries {
    by_group: BTreeMap<u32, GroupDevices>,
}

impl PartialEq for DeviceEntries {
    /// Equal entries, wherever they came from.
    fn eq(&self, other: &Self) -> bool {
        self.count() == other.count() && self.iter().eq(other.iter())
    }
}

impl DeviceEntries {
    /// Entries as read back from the kernel, in any order: grouped by
    /// their value, the group id.
    pub fn read_back(entries: Vec<(DeviceKey, u32)>) -> DeviceEntries {
        let mut by_id: BTreeMap<u32, Vec<(DeviceKey, u32)>> = BTreeMap::new();
        for entry in entries {
            by_id.entry(entry.1).or_default().push(entry);
        }
        let by_group = by_id
            .into_iter()
            .map(|(id, mut entries)| {
                sort_entries(&mut entries);
                let group = GroupDevices {
                    source: None,
                    entries: entries.into(),
                };
                (id, group)
            })
            .collect();
        DeviceEntries { by_group }
    }

    /// The entries of `lists` (kernel group id, its device list) in
    /// `slot`, reusing those `current` made from the same list for the
    /// same id.
    pub fn build<'a>(
        slot: u8,
        lists: impl IntoIterator<Item = (u32, &'a Arc<[IpAddr]>)>,
        current: &DeviceEntries,
    ) -> DeviceEntries {
        let mut by_group = BTreeMap::new();
        for (id, list) in lists {
            let held = current.by_group.get(&id).filter(|g| {
                g.source
                    .as_ref()
                    .is_some_and(|source| Arc::ptr_eq(source, list))
            });
            let group = match held {
                Some(g) => g.clone(),
                None => GroupDevices {
                    source: Some(Arc::clone(list)),
                    entries: entries(slot, id, list).into(),
                },
            };
            by_group.insert(id, group);
        }
        DeviceEntries { by_group }
    }

    /// How many entries the slot has.
    pub fn count(&self) -> usize {
        self.by_group.values().map(|g| g.entries.len()).sum()
    }

    /// Every entry, group by group.
    pub fn iter(&self) -> impl Iterator<Item = &(DeviceKey, u32)> {
        self.by_group.values().flat_map(|g| g.entries.iter())
    }

    /// The ids of the groups whose entries differ between `self` and
    /// `target`, or may: those not shared by pointer.
    pub fn changed(&self, target: &DeviceEntries) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .by_group
            .keys()
            .chain(target.by_group.keys())
            .copied()
            .filter(
                |id| match (self.by_group.get(id), target.by_group.get(id)) {
                    (Some(a), Some(b)) => !Arc::ptr_eq(&a.entries, &b.entries),
                    _ => true,
                },
            )
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The entries of groups `ids`, sorted by key.
    pub fn of_groups(&self, ids: &[u32]) -> Vec<(DeviceKey, u32)> {
        let mut all: Vec<(DeviceKey, u32)> = ids
            .iter()
            .filter_map(|id| self.by_group.get(id))
            .flat_map(|g| g.entries.iter().copied())
            .collect();
        sort_entries(&mut all);
        all
    }

    /// Groups `ids` now hold what `target` has for them.
    pub fn take_groups(&mut self, ids: &[u32], target: &DeviceEntries) {
        for id in ids {
            match target.by_group.get(id) {
                Some(g) => self.by_group.insert(*id, g.clone()),
                None => self.by_group.remove(id),
            };
        }
    }

    /// Groups `ids` now hold `held` (after a failed write: what the kernel
    /// has), which no list matches.
    pub fn set_groups(&mut self, ids: &[u32], held: Vec<(DeviceKey, u32)>) {
        for id in ids {
            self.by_group.remove(id);
        }
        self.by_group
            .extend(DeviceEntries::read_back(held).by_group);
    }
}

/// The entries of group `id`'s devices `list` in `slot`, sorted.
fn entries(slot: u8, id: u32, list: &[IpAddr]) -> Vec<(DeviceKey, u32)> {
    let mut entries: Vec<(DeviceKey, u32)> = list
        .iter()
        .map(|&addr| {
            let (family, addr) = family_and_bytes(addr);
            let key = DeviceKey {
                slot,
                family,
                _pad: [0; 2],
                addr,
            };
            (key, id)
        })
        .collect();
    sort_entries(&mut entries);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(addrs: &[&str]) -> Arc<[IpAddr]> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn only_groups_with_another_list_or_id_are_rebuilt() {
        let (a, b) = (list(&["10.0.0.2", "10.0.0.1"]), list(&["fd00::1"]));
        let first = DeviceEntries::build(1, [(1, &a), (2, &b)], &DeviceEntries::default());
        assert_eq!(first.count(), 3);
        assert!(first.iter().all(|(k, _)| k.slot == 1));
        // Sorted within the group whatever the list's order.
        let keys: Vec<_> = first.iter().map(|(k, id)| (k.addr[3], *id)).collect();
        assert_eq!(keys[..2], [(1, 1), (2, 1)]);

        // The same list under the same id is reused; a new list with the
        // same content, or the same list under another id, is not.
        let same_content = list(&["fd00::1"]);
        let next = DeviceEntries::build(1, [(1, &a), (2, &same_content)], &first);
        assert_eq!(first.changed(&next), vec![2]);
        assert_eq!(next, first, "equal entries compare equal");
        let moved = DeviceEntries::build(1, [(3, &a), (2, &b)], &first);
        assert_eq!(first.changed(&moved), vec![1, 3]);
        assert_eq!(first.of_groups(&[1]).len(), 2);
        assert!(first.of_groups(&[3]).is_empty());

        // After a failed write, what the kernel holds has no list: rebuilt.
        let mut held = first.clone();
        held.set_groups(&[1], first.of_groups(&[1]));
        let again = DeviceEntries::build(1, [(1, &a), (2, &b)], &held);
        assert_eq!(held.changed(&again), vec![1]);
        held.take_groups(&[1], &again);
        assert!(held.changed(&again).is_empty());
    }
}
