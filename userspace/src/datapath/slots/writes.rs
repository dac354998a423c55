//! Writing one slot: the minimal set of map writes that turns what the
//! slot's maps hold into a new image, and reading a slot back.

use anyhow::{Context as _, Result};
use std::{
    cmp::Ordering,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::{Array, HashMap as BpfHashMap, IterableMap, LpmTrie, MapData, lpm_trie::Key};
use tollgate_common::{
    Destination, DeviceKey, DevicePrefix, GroupInfo, MAX_CHAIN, MAX_GROUPS, NO_RECORD, RuleRecord,
};

use super::{
    DeviceEntries, DeviceTable, FlatMaps, GroupParts, MappedWords, Shape, SlotImage, Sorted, batch,
};

/// Counts of map writes, for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub inserted: usize,
    pub removed: usize,
    /// Words of `TG_TRIE` and `TG_ROOTS` stored (plain stores into the
    /// mapped arrays, not map updates: counted apart).
    pub trie_words: usize,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, o: Self) {
        self.inserted += o.inserted;
        self.removed += o.removed;
        self.trie_words += o.trie_words;
    }
}

/// The policy maps, as typed handles.
pub struct PolicyMaps {
    pub groups: Array<MapData, GroupInfo>,
    /// `TG_DEV_EXACT`, mapped (`device_table.rs`).
    pub device_exact: DeviceTable<MappedWords>,
    pub gateway: BpfHashMap<MapData, DeviceKey, u8>,
    pub device_prefixes: LpmTrie<MapData, DevicePrefix, u32>,
    pub destinations: LpmTrie<MapData, Destination, u32>,
    pub rulesets: Array<MapData, RuleRecord>,
    /// `TG_TRIE` and `TG_ROOTS`, mapped.
    pub flat: FlatMaps,
    /// Each slot's share of `rulesets`.
    pub records_per_slot: u32,
    /// The largest shape a trie may have (`Options::narrow_tries`,
    /// `Options::small_roots`).
    pub largest_trie: Shape,
}

impl PolicyMaps {
    /// Reads back what `slot` holds (after a restart, the controller does
    /// not know what a previous run left in the inactive slot).
    pub fn read_slot(&self, slot: u8) -> Result<SlotImage> {
        let base = u32::from(slot);
        let mut image = SlotImage::default();
        for i in 0..MAX_GROUPS {
            image
                .groups
                .push(self.groups.get(&(base * MAX_GROUPS + i), 0)?);
        }
        image.device_exact = DeviceEntries::read_back(self.device_exact.entries(slot));
        image.gateway = batch::entries_of(&self.gateway, |m| m.iter().collect())?;
        image.gateway.retain(|(k, _)| k.slot == slot);
        for (k, v) in batch::entries_of(&self.device_prefixes, |m| m.iter().collect())? {
            if k.data().slot == slot {
                image.device_prefixes.push(((k.prefix_len(), k.data()), v));
            }
        }
        for (k, v) in batch::entries_of(&self.destinations, |m| m.iter().collect())? {
            if k.data().slot == slot {
                image.destinations.push(((k.prefix_len(), k.data()), v));
            }
        }
        // The records the slot's lists use, chain by chain.
        let heads: std::collections::BTreeSet<u32> =
            image.destinations.iter().map(|(_, head)| *head).collect();
        let region = base * self.records_per_slot..(base + 1) * self.records_per_slot;
        for head in heads {
            let mut next = head;
            for _ in 0..MAX_CHAIN {
                if !region.contains(&next) {
                    break;
                }
                let record = self.rulesets.get(&next, 0)?;
                image.records.push((next, record));
                if record.next == NO_RECORD {
                    break;
                }
                next = record.next;
            }
        }
        image.records.sort_by_key(|(i, _)| *i);
        image.records.dedup_by_key(|(i, _)| *i);
        image.sort();
        image.flat = self.flat.read_slot(slot).unwrap_or_default();
        Ok(image)
    }

    /// Makes the kernel's `slot` hold `target`, writing only differences.
    /// `current` is updated write by write, so after a failure it still
    /// describes the kernel exactly. `target` is consumed: its tries become
    /// `current`'s without a copy (tens of MiB at fleet scale), and its
    /// groups' shares (`by_group`) once the slot holds all of it.
    pub fn write_slot(
        &mut self,
        slot: u8,
        current: &mut SlotImage,
        target: SlotImage,
    ) -> Result<WriteStats> {
        let mut stats = WriteStats::default();
        let base = u32::from(slot);
        // Only the groups whose shares the slot does not hold can have
        // records to write; once writing starts, the old shares no longer
        // describe the slot (`current` is read back after a failure).
        let fresh = target.by_group.records_not_in(&current.by_group);
        current.by_group = GroupParts::default();
        write_array(
            &mut self.groups,
            base * MAX_GROUPS,
            &mut current.groups,
            &target.groups,
            &mut stats,
        )
        .context("write TG_GROUPS")?;
        write_records(
            &mut self.rulesets,
            &mut current.records,
            target.records,
            &fresh,
            &mut stats,
        )
        .context("write TG_RULESETS")?;
        write_devices(
            &mut self.device_exact,
            &mut current.device_exact,
            &target.device_exact,
            &mut stats,
        )
        .context("write TG_DEV_EXACT")?;
        sync_map(
            &mut self.gateway,
            &mut current.gateway,
            target.gateway,
            &mut stats,
        )
        .context("write TG_GATEWAY")?;
        sync_map(
            &mut LpmMap(&mut self.device_prefixes),
            &mut current.device_prefixes,
            target.device_prefixes,
            &mut stats,
        )
        .context("write TG_DEV_PREFIX")?;
        sync_map(
            &mut LpmMap(&mut self.destinations),
            &mut current.destinations,
            target.destinations,
            &mut stats,
        )
        .context("write TG_DST")?;
        // The tries last: their leaves name the records and groups above.
        stats.trie_words += self.flat.write_slot(slot, &current.flat, &target.flat);
        current.flat = target.flat;
        current.by_group = target.by_group;
        Ok(stats)
    }
}

impl SlotImage {
    /// True if writing `target` where the kernel holds `self` would write
    /// nothing: every entry `target` has, `self` has with the same value,
    /// and `self` has no other entry a packet can reach (groups past
    /// `target`'s and records no list of `target` reaches are unreferenced,
    /// as after a write).
    pub fn holds(&self, target: &SlotImage) -> bool {
        let groups = (0..)
            .zip(&target.groups)
            .all(|(i, g)| self.groups.get(i) == Some(g));
        let records = target.records.iter().all(|(i, r)| {
            self.records
                .binary_search_by_key(i, |(j, _)| *j)
                .is_ok_and(|k| self.records[k].1 == *r)
        });
        groups
            && records
            && self.device_exact == target.device_exact
            && self.gateway == target.gateway
            && self.device_prefixes == target.device_prefixes
            && self.destinations == target.destinations
            && self.flat == target.flat
    }
}

fn write_array<T: aya::Pod + PartialEq>(
    map: &mut Array<MapData, T>,
    base: u32,
    current: &mut Vec<T>,
    target: &[T],
    stats: &mut WriteStats,
) -> Result<()> {
    for (i, value) in target.iter().enumerate() {
        if current.get(i) != Some(value) {
            map.set(base + i as u32, *value, 0)?;
            if i < current.len() {
                current[i] = *value;
            } else {
                current.push(*value);
            }
            stats.inserted += 1;
        }
    }
    // Entries past the target's length are unreferenced; leave them.
    Ok(())
}

/// Writes the records of `target` that the kernel does not hold yet (both
/// sorted by index), in batches (`batch.rs`), looking only at `fresh`: the
/// records of `target` not known to be held already
/// (`GroupParts::records_not_in`; comparing all 10^5 of a fleet cost a
/// one-line edit about 2 ms). Records only `current` has are left as they
/// are: no list of the new policy reaches them. `fresh` and `current` are
/// walked in step: with 10^5 records, hashing every index of `current` took
/// longer than the rest of writing a slot.
fn write_records(
    map: &mut Array<MapData, RuleRecord>,
    current: &mut Vec<(u32, RuleRecord)>,
    target: Vec<(u32, RuleRecord)>,
    fresh: &[(u32, RuleRecord)],
    stats: &mut WriteStats,
) -> Result<()> {
    let mut writes = Vec::new();
    let mut c = 0;
    for &(index, record) in fresh {
        while c < current.len() && current[c].0 < index {
            c += 1;
        }
        let held = current.get(c).filter(|(i, _)| *i == index).map(|(_, r)| r);
        if held != Some(&record) {
            writes.push((index, record));
        }
    }
    let fd = map.map().fd().as_fd().as_raw_fd();
    let result = batch::write_all(fd, &writes, |&index, record| Ok(map.set(index, record, 0)?));
    match result {
        Ok(()) => {
            stats.inserted += writes.len();
            *current = target;
            Ok(())
        }
        Err((applied, e)) => {
            stats.inserted += applied;
            // What the kernel holds: the old records, but those written.
            let done: std::collections::HashMap<u32, RuleRecord> =
                writes[..applied].iter().copied().collect();
            for (i, r) in current.iter_mut() {
                if let Some(w) = done.get(i) {
                    *r = *w;
                }
            }
            Err(e)
        }
    }
}

/// Makes `map` hold the device entries `target` where it holds `current`,
/// diffing only the groups whose entries are not shared (`devices.rs`).
fn write_devices(
    map: &mut DeviceTable<MappedWords>,
    current: &mut DeviceEntries,
    target: &DeviceEntries,
    stats: &mut WriteStats,
) -> Result<()> {
    let changed = current.changed(target);
    let mut held = current.of_groups(&changed);
    let result = sync_map(map, &mut held, target.of_groups(&changed), stats);
    match result {
        Ok(()) => current.take_groups(&changed, target),
        Err(_) => current.set_groups(&changed, held),
    }
    result
}

/// The operations `sync_map` needs from a kernel map.
trait KernelMap<K, V> {
    fn remove(&mut self, key: &K) -> Result<()>;
    fn insert(&mut self, key: &K, value: V) -> Result<()>;
    /// Inserts `entries` in order; on failure, those before the index
    /// returned are in the map, the others are not.
    fn insert_all(&mut self, entries: &[(K, V)]) -> Result<(), (usize, anyhow::Error)>
    where
        K: Copy,
        V: Copy,
    {
        for (i, &(key, value)) in entries.iter().enumerate() {
            self.insert(&key, value).map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

impl<K: aya::Pod, V: aya::Pod> KernelMap<K, V> for BpfHashMap<MapData, K, V> {
    fn remove(&mut self, key: &K) -> Result<()> {
        Ok(BpfHashMap::remove(self, key)?)
    }
    fn insert(&mut self, key: &K, value: V) -> Result<()> {
        Ok(BpfHashMap::insert(self, key, value, 0)?)
    }
    /// In batches (`batch.rs`).
    fn insert_all(&mut self, entries: &[(K, V)]) -> Result<(), (usize, anyhow::Error)> {
        let fd = self.map().fd().as_fd().as_raw_fd();
        batch::write_all(fd, entries, |key, value| {
            Ok(BpfHashMap::insert(self, key, value, 0)?)
        })
    }
}

/// Stores into the mapped table: counted as map writes, one per device, as
/// the hash map they replace was.
impl KernelMap<DeviceKey, u32> for DeviceTable<MappedWords> {
    fn remove(&mut self, key: &DeviceKey) -> Result<()> {
        DeviceTable::remove(self, key);
        Ok(())
    }
    fn insert(&mut self, key: &DeviceKey, value: u32) -> Result<()> {
        DeviceTable::insert(self, key, value)
    }
}

/// An LPM trie addressed by (prefix length, data) pairs.
struct LpmMap<'a, K, V>(&'a mut LpmTrie<MapData, K, V>);

impl<K: aya::Pod, V: aya::Pod> KernelMap<(u32, K), V> for LpmMap<'_, K, V> {
    fn remove(&mut self, &(len, data): &(u32, K)) -> Result<()> {
        Ok(self.0.remove(&Key::new(len, data))?)
    }
    fn insert(&mut self, &(len, data): &(u32, K), value: V) -> Result<()> {
        Ok(self.0.insert(&Key::new(len, data), value, 0)?)
    }
    /// In batches (`batch.rs`).
    fn insert_all(&mut self, entries: &[((u32, K), V)]) -> Result<(), (usize, anyhow::Error)> {
        let fd = self.0.map().fd().as_fd().as_raw_fd();
        let keyed: Vec<(Key<K>, V)> = entries
            .iter()
            .map(|&((len, data), value)| (Key::new(len, data), value))
            .collect();
        batch::write_all(fd, &keyed, |key, value| Ok(self.0.insert(key, value, 0)?))
    }
}

/// Makes `map` hold `target` where it holds `current` (both sorted by key),
/// writing only the differences: stale entries are removed first, so the
/// map never holds more than the larger of the two. `current` follows every
/// write, so after a failure it still describes the map exactly.
fn sync_map<K: Sorted, V: Copy + PartialEq>(
    map: &mut impl KernelMap<K, V>,
    current: &mut Vec<(K, V)>,
    target: Vec<(K, V)>,
    stats: &mut WriteStats,
) -> Result<()> {
    // One walk over both, in key order: what goes, and what is written.
    let (mut removals, mut writes) = (Vec::new(), Vec::new());
    let (mut c, mut t) = (0, 0);
    loop {
        let step = match (current.get(c), target.get(t)) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((held, _)), Some((wanted, _))) => held.order().cmp(&wanted.order()),
        };
        match step {
            Ordering::Less => removals.push(current[c].0),
            Ordering::Greater => writes.push(target[t]),
            Ordering::Equal if current[c].1 != target[t].1 => writes.push(target[t]),
            Ordering::Equal => {}
        }
        c += usize::from(step != Ordering::Greater);
        t += usize::from(step != Ordering::Less);
    }
    for (i, key) in removals.iter().enumerate() {
        if let Err(e) = map.remove(key) {
            stats.removed += i;
            apply(current, &removals[..i], &[]);
            return Err(e);
        }
    }
    stats.removed += removals.len();
    match map.insert_all(&writes) {
        // Moved, not copied: at 10^5 destinations a copy and its fresh
        // pages were a visible part of a small edit's install.
        Ok(()) => {
            stats.inserted += writes.len();
            *current = target;
            Ok(())
        }
        Err((applied, e)) => {
            stats.inserted += applied;
            apply(current, &removals, &writes[..applied]);
            Err(e)
        }
    }
}

/// What the kernel holds after a failed sync: `current` without the keys
/// `removed`, with the entries `written` (all three sorted by key).
fn apply<K: Sorted, V: Copy>(current: &mut Vec<(K, V)>, removed: &[K], written: &[(K, V)]) {
    let old = std::mem::take(current);
    let mut removed = removed.iter().peekable();
    let mut written = written.iter().peekable();
    for (key, value) in old {
        let order = key.order();
        while let Some(&&w) = written.peek().filter(|(k, _)| k.order() < order) {
            current.push(w);
            written.next();
        }
        if removed.next_if(|k| k.order() == order).is_some() {
            continue;
        }
        match written.next_if(|(k, _)| k.order() == order) {
            Some(&w) => current.push(w),
            None => current.push((key, value)),
        }
    }
    current.extend(written.copied());
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use anyhow::bail;

    use super::*;

    /// A map that fails its `fail_at`-th write.
    #[derive(Default)]
    struct FakeMap {
        entries: BTreeMap<u32, u32>,
        writes: usize,
        fail_at: Option<usize>,
    }

    impl FakeMap {
        fn write(&mut self) -> Result<()> {
            self.writes += 1;
            if Some(self.writes) == self.fail_at {
                bail!("injected failure");
            }
            Ok(())
        }
    }

    impl KernelMap<u32, u32> for FakeMap {
        fn remove(&mut self, key: &u32) -> Result<()> {
            self.write()?;
            self.entries.remove(key);
            Ok(())
        }
        fn insert(&mut self, key: &u32, value: u32) -> Result<()> {
            self.write()?;
            self.entries.insert(*key, value);
            Ok(())
        }
    }

    fn entries(map: &FakeMap) -> Vec<(u32, u32)> {
        map.entries.iter().map(|(k, v)| (*k, *v)).collect()
    }

    #[test]
    fn writes_only_differences_and_tracks_failures() {
        let old: Vec<(u32, u32)> = vec![(1, 10), (2, 20), (3, 30), (5, 50)];
        let new: Vec<(u32, u32)> = vec![(0, 0), (2, 20), (3, 31), (4, 40), (6, 60)];
        let mut map = FakeMap {
            entries: old.iter().copied().collect(),
            ..FakeMap::default()
        };
        let mut current = old.clone();
        let mut stats = WriteStats::default();
        sync_map(&mut map, &mut current, new.clone(), &mut stats).unwrap();
        assert_eq!(current, new);
        assert_eq!(entries(&map), new);
        // Removed 1 and 5; wrote 0, 3 (changed), 4 and 6; left 2 alone.
        assert_eq!((stats.removed, stats.inserted), (2, 4));

        for fail_at in 1..=6 {
            let mut map = FakeMap {
                entries: old.iter().copied().collect(),
                fail_at: Some(fail_at),
                ..FakeMap::default()
            };
            let mut current = old.clone();
            let result = sync_map(
                &mut map,
                &mut current,
                new.clone(),
                &mut WriteStats::default(),
            );
            assert!(result.is_err(), "write {fail_at} fails");
            assert_eq!(current, entries(&map), "after failing write {fail_at}");
            // A retry from there completes the job.
            map.fail_at = None;
            sync_map(
                &mut map,
                &mut current,
                new.clone(),
                &mut WriteStats::default(),
            )
            .unwrap();
            assert_eq!(entries(&map), new);
        }
    }
}
