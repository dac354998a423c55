//! One slot's kernel entries, built from a compiled policy, and the minimal
//! set of map writes that turns a slot's current entries into new ones.
//!
//! Only the inactive slot is ever written, so the order of writes within a
//! slot does not matter; the flip of `TG_ACTIVE` publishes the whole slot.
//!
//! Map entries are kept as vectors sorted by key, in the order `compile`
//! already produces them, so building an image and diffing two are linear
//! passes: with 10^5 destinations, hashing every key twice per reload cost
//! more than the map writes of a small edit.

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, lpm_trie::Key};
use tollgate_common::{
    DESTINATION_HEADER_BITS, DEVICE_PREFIX_HEADER_BITS, Destination, DeviceKey, DevicePrefix,
    FAMILY_V4, FAMILY_V6, GROUP_AUDIT, GROUP_DEFAULT_DENY, GroupInfo, MAX_CHAIN, MAX_GROUPS,
    NO_RECORD, RULE_ANY_PROTO, RULE_BUILTIN, RULE_DENY, RULE_PORTS, RuleEntry as KernelEntry,
    RuleRecord,
};

use super::records;
use crate::tables::CompiledPolicy;

/// The kernel entries of one slot. Keys include the slot number. The hash
/// and LPM entries are sorted by key ([`Sorted`]), each key once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotImage {
    pub groups: Vec<GroupInfo>,
    pub device_exact: Vec<(DeviceKey, u32)>,
    /// The gateway's addresses (value unused, always 1).
    pub gateway: Vec<(DeviceKey, u8)>,
    /// (LPM prefix length, data) → group.
    pub device_prefixes: Vec<((u32, DevicePrefix), u32)>,
    /// (LPM prefix length, data) → first record of its rule list.
    pub destinations: Vec<((u32, Destination), u32)>,
    /// The records of the rule lists, by absolute index, sorted.
    pub records: Vec<(u32, RuleRecord)>,
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

/// Counts of map writes, for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub inserted: usize,
    pub removed: usize,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, o: Self) {
        self.inserted += o.inserted;
        self.removed += o.removed;
    }
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

impl SlotImage {
    /// Lays out `policy` for `slot`; `counters` maps its logical counters to
    /// kernel indices. Rule lists keep the records they have in `current`
    /// (what the slot holds now) when unchanged; `records_per_slot` is the
    /// slot's share of `TG_RULESETS`.
    pub fn build(
        slot: u8,
        policy: &CompiledPolicy,
        counters: &[u32],
        current: &SlotImage,
        records_per_slot: u32,
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

        let mut image = SlotImage::default();
        for g in &policy.groups {
            let mut flags = 0;
            if g.default_deny {
                flags |= GROUP_DEFAULT_DENY;
            }
            if g.audit {
                flags |= GROUP_AUDIT;
            }
            image.groups.push(GroupInfo {
                default_counter: counter(g.default_counter)?,
                allow_counter: counter(g.allow_counter)?,
                deny_counter: counter(g.deny_counter)?,
                audit_deny_counter: counter(g.audit_deny_counter)?,
                flags,
            });
        }
        for &(addr, group) in &policy.device_exact {
            let (family, addr) = family_and_bytes(addr);
            image.device_exact.push((
                DeviceKey {
                    slot,
                    family,
                    _pad: [0; 2],
                    addr,
                },
                group,
            ));
        }
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
        for &(prefix, group) in &policy.device_prefixes {
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
                group,
            ));
        }
        let mut lists = Vec::with_capacity(policy.rulesets.len());
        for rules in &policy.rulesets {
            let list = rules
                .iter()
                .map(|rule| {
                    let mut flags = 0;
                    if rule.proto.is_none() {
                        flags |= RULE_ANY_PROTO;
                    }
                    if rule.ports.is_some() {
                        flags |= RULE_PORTS;
                    }
                    if rule.deny {
                        flags |= RULE_DENY;
                    }
                    if rule.builtin {
                        flags |= RULE_BUILTIN;
                    }
                    let (port_lo, port_hi) = rule.ports.unwrap_or((0, 0));
                    Ok(KernelEntry {
                        counter: counter(rule.counter)?,
                        port_lo,
                        port_hi,
                        proto: rule.proto.unwrap_or(0),
                        flags,
                        _pad: [0; 2],
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            lists.push(list);
        }
        let base = u32::from(slot) * records_per_slot;
        let placement = records::place(
            &lists,
            current.destinations.iter().map(|(_, head)| *head),
            &current.records,
            base..base + records_per_slot,
        )?;
        for d in &policy.destinations {
            let (family, addr) = family_and_bytes(d.prefix.network());
            image.destinations.push((
                (
                    DESTINATION_HEADER_BITS + u32::from(d.prefix.prefix_len()),
                    Destination {
                        slot,
                        family,
                        group: u16::try_from(d.group)?.to_be_bytes(),
                        addr,
                    },
                ),
                placement.heads[d.ruleset as usize],
            ));
        }
        image.records = placement.records;
        image.sort();
        Ok(image)
    }

    fn sort(&mut self) {
        sort_entries(&mut self.device_exact);
        sort_entries(&mut self.gateway);
        sort_entries(&mut self.device_prefixes);
        sort_entries(&mut self.destinations);
    }
}

/// The policy maps, as typed handles.
pub struct PolicyMaps {
    pub groups: Array<MapData, GroupInfo>,
    pub device_exact: BpfHashMap<MapData, DeviceKey, u32>,
    pub gateway: BpfHashMap<MapData, DeviceKey, u8>,
    pub device_prefixes: LpmTrie<MapData, DevicePrefix, u32>,
    pub destinations: LpmTrie<MapData, Destination, u32>,
    pub rulesets: Array<MapData, RuleRecord>,
    /// Each slot's share of `rulesets`.
    pub records_per_slot: u32,
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
        for entry in self.device_exact.iter() {
            let (k, v) = entry?;
            if k.slot == slot {
                image.device_exact.push((k, v));
            }
        }
        for entry in self.gateway.iter() {
            let (k, v) = entry?;
            if k.slot == slot {
                image.gateway.push((k, v));
            }
        }
        for entry in self.device_prefixes.iter() {
            let (k, v) = entry?;
            if k.data().slot == slot {
                image.device_prefixes.push(((k.prefix_len(), k.data()), v));
            }
        }
        for entry in self.destinations.iter() {
            let (k, v) = entry?;
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
        Ok(image)
    }

    /// Makes the kernel's `slot` hold `target`, writing only differences.
    /// `current` is updated write by write, so after a failure it still
    /// describes the kernel exactly.
    pub fn write_slot(
        &mut self,
        slot: u8,
        current: &mut SlotImage,
        target: &SlotImage,
    ) -> Result<WriteStats> {
        let mut stats = WriteStats::default();
        let base = u32::from(slot);
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
            &target.records,
            &mut stats,
        )
        .context("write TG_RULESETS")?;
        sync_map(
            &mut self.device_exact,
            &mut current.device_exact,
            &target.device_exact,
            &mut stats,
        )
        .context("write TG_DEV_EXACT")?;
        sync_map(
            &mut self.gateway,
            &mut current.gateway,
            &target.gateway,
            &mut stats,
        )
        .context("write TG_GATEWAY")?;
        sync_map(
            &mut LpmMap(&mut self.device_prefixes),
            &mut current.device_prefixes,
            &target.device_prefixes,
            &mut stats,
        )
        .context("write TG_DEV_PREFIX")?;
        sync_map(
            &mut LpmMap(&mut self.destinations),
            &mut current.destinations,
            &target.destinations,
            &mut stats,
        )
        .context("write TG_DST")?;
        Ok(stats)
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
/// sorted by index). Records only `current` has are left as they are: no
/// list of the new policy reaches them.
fn write_records(
    map: &mut Array<MapData, RuleRecord>,
    current: &mut Vec<(u32, RuleRecord)>,
    target: &[(u32, RuleRecord)],
    stats: &mut WriteStats,
) -> Result<()> {
    let held: std::collections::HashMap<u32, RuleRecord> = current.iter().copied().collect();
    let mut written = Vec::with_capacity(target.len());
    for &(index, record) in target {
        if held.get(&index) != Some(&record) {
            if let Err(e) = map.set(index, record, 0) {
                // What the kernel holds: the old records, but those written.
                let done: std::collections::HashMap<u32, RuleRecord> =
                    written.into_iter().collect();
                for (i, r) in current.iter_mut() {
                    if let Some(w) = done.get(i) {
                        *r = *w;
                    }
                }
                return Err(e.into());
            }
            stats.inserted += 1;
        }
        written.push((index, record));
    }
    *current = written;
    Ok(())
}

/// The two operations `sync_map` needs from a kernel map.
trait KernelMap<K, V> {
    fn remove(&mut self, key: &K) -> Result<()>;
    fn insert(&mut self, key: &K, value: V) -> Result<()>;
}

impl<K: aya::Pod, V: aya::Pod> KernelMap<K, V> for BpfHashMap<MapData, K, V> {
    fn remove(&mut self, key: &K) -> Result<()> {
        Ok(BpfHashMap::remove(self, key)?)
    }
    fn insert(&mut self, key: &K, value: V) -> Result<()> {
        Ok(BpfHashMap::insert(self, key, value, 0)?)
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
}

/// Makes `map` hold `target` where it holds `current` (both sorted by key),
/// writing only the differences: stale entries are removed first, so the
/// map never holds more than the larger of the two. `current` follows every
/// write, so after a failure it still describes the map exactly.
fn sync_map<K: Sorted, V: Copy + PartialEq>(
    map: &mut impl KernelMap<K, V>,
    current: &mut Vec<(K, V)>,
    target: &[(K, V)],
    stats: &mut WriteStats,
) -> Result<()> {
    let old = std::mem::take(current);
    let mut t = 0;
    for (i, &(key, value)) in old.iter().enumerate() {
        let order = key.order();
        while t < target.len() && target[t].0.order() < order {
            t += 1;
        }
        if t < target.len() && target[t].0.order() == order {
            current.push((key, value));
            continue;
        }
        if let Err(e) = map.remove(&key) {
            current.extend_from_slice(&old[i..]);
            return Err(e);
        }
        stats.removed += 1;
    }
    // Every entry left is in `target`: walk both in step.
    let kept = std::mem::take(current);
    let mut k = 0;
    for &(key, value) in target {
        let present = k < kept.len() && kept[k].0.order() == key.order();
        if present && kept[k].1 == value {
            current.push(kept[k]);
            k += 1;
            continue;
        }
        if let Err(e) = map.insert(&key, value) {
            // A failed update leaves the old value in place.
            current.extend_from_slice(&kept[k..]);
            return Err(e);
        }
        if present {
            k += 1;
        }
        current.push((key, value));
        stats.inserted += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    impl Sorted for u32 {
        type Order = u32;
        fn order(&self) -> u32 {
            *self
        }
    }

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
        sync_map(&mut map, &mut current, &new, &mut stats).unwrap();
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
            let result = sync_map(&mut map, &mut current, &new, &mut WriteStats::default());
            assert!(result.is_err(), "write {fail_at} fails");
            assert_eq!(current, entries(&map), "after failing write {fail_at}");
            // A retry from there completes the job.
            map.fail_at = None;
            sync_map(&mut map, &mut current, &new, &mut WriteStats::default()).unwrap();
            assert_eq!(entries(&map), new);
        }
    }

    #[test]
    fn images_are_sorted_and_keep_the_last_of_a_key() {
        let mut v = vec![(3u32, 1u32), (1, 1), (3, 2), (2, 1)];
        sort_entries(&mut v);
        assert_eq!(v, vec![(1, 1), (2, 1), (3, 2)]);
    }
}
