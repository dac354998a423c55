//! One slot's kernel entries, built from a compiled policy, and the minimal
//! set of map writes that turns a slot's current entries into new ones.
//!
//! Only the inactive slot is ever written, so the order of writes within a
//! slot does not matter; the flip of `TG_ACTIVE` publishes the whole slot.

use std::{collections::HashMap, hash::Hash, net::IpAddr};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, lpm_trie::Key};
use tollgate_common::{
    DESTINATION_HEADER_BITS, DEVICE_PREFIX_HEADER_BITS, Destination, DeviceKey, DevicePrefix,
    FAMILY_V4, FAMILY_V6, GROUP_AUDIT, GROUP_DEFAULT_DENY, GroupInfo, MAX_GROUPS, MAX_RULESETS,
    RULE_ANY_PROTO, RULE_BUILTIN, RULE_DENY, RULE_PORTS, RULESET_ENTRIES, RuleEntry as KernelEntry,
    RuleSet,
};

use crate::tables::CompiledPolicy;

/// The kernel entries of one slot. Keys include the slot number.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotImage {
    pub groups: Vec<GroupInfo>,
    pub device_exact: HashMap<DeviceKey, u32>,
    /// The gateway's addresses (value unused, always 1).
    pub gateway: HashMap<DeviceKey, u8>,
    /// (LPM prefix length, data) → group.
    pub device_prefixes: HashMap<(u32, DevicePrefix), u32>,
    /// (LPM prefix length, data) → rule set.
    pub destinations: HashMap<(u32, Destination), u32>,
    pub rulesets: Vec<RuleSet>,
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
    /// kernel indices.
    pub fn build(slot: u8, policy: &CompiledPolicy, counters: &[u32]) -> Result<SlotImage> {
        if policy.groups.len() > MAX_GROUPS as usize {
            bail!(
                "{} groups exceed the dataplane's {MAX_GROUPS}",
                policy.groups.len()
            );
        }
        if policy.rulesets.len() > MAX_RULESETS as usize {
            bail!(
                "{} rule sets exceed the dataplane's {MAX_RULESETS}",
                policy.rulesets.len()
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
            image.device_exact.insert(
                DeviceKey {
                    slot,
                    family,
                    _pad: [0; 2],
                    addr,
                },
                group,
            );
        }
        for &addr in &policy.gateway {
            let (family, addr) = family_and_bytes(addr);
            image.gateway.insert(
                DeviceKey {
                    slot,
                    family,
                    _pad: [0; 2],
                    addr,
                },
                1,
            );
        }
        for &(prefix, group) in &policy.device_prefixes {
            let (family, addr) = family_and_bytes(prefix.network());
            image.device_prefixes.insert(
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
            );
        }
        for d in &policy.destinations {
            let (family, addr) = family_and_bytes(d.prefix.network());
            image.destinations.insert(
                (
                    DESTINATION_HEADER_BITS + u32::from(d.prefix.prefix_len()),
                    Destination {
                        slot,
                        family,
                        group: u16::try_from(d.group)?.to_be_bytes(),
                        addr,
                    },
                ),
                d.ruleset,
            );
        }
        for rules in &policy.rulesets {
            if rules.len() > RULESET_ENTRIES {
                bail!(
                    "a rule set has {} entries, the dataplane holds {RULESET_ENTRIES}",
                    rules.len()
                );
            }
            let mut set = RuleSet {
                len: rules.len() as u32,
                ..RuleSet::default()
            };
            for (slot_entry, rule) in set.entries.iter_mut().zip(rules) {
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
                *slot_entry = KernelEntry {
                    counter: counter(rule.counter)?,
                    port_lo,
                    port_hi,
                    proto: rule.proto.unwrap_or(0),
                    flags,
                    _pad: [0; 2],
                };
            }
            image.rulesets.push(set);
        }
        Ok(image)
    }
}

/// The policy maps, as typed handles.
pub struct PolicyMaps {
    pub groups: Array<MapData, GroupInfo>,
    pub device_exact: BpfHashMap<MapData, DeviceKey, u32>,
    pub gateway: BpfHashMap<MapData, DeviceKey, u8>,
    pub device_prefixes: LpmTrie<MapData, DevicePrefix, u32>,
    pub destinations: LpmTrie<MapData, Destination, u32>,
    pub rulesets: Array<MapData, RuleSet>,
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
        for i in 0..MAX_RULESETS {
            image
                .rulesets
                .push(self.rulesets.get(&(base * MAX_RULESETS + i), 0)?);
        }
        for entry in self.device_exact.iter() {
            let (k, v) = entry?;
            if k.slot == slot {
                image.device_exact.insert(k, v);
            }
        }
        for entry in self.gateway.iter() {
            let (k, v) = entry?;
            if k.slot == slot {
                image.gateway.insert(k, v);
            }
        }
        for entry in self.device_prefixes.iter() {
            let (k, v) = entry?;
            if k.data().slot == slot {
                image.device_prefixes.insert((k.prefix_len(), k.data()), v);
            }
        }
        for entry in self.destinations.iter() {
            let (k, v) = entry?;
            if k.data().slot == slot {
                image.destinations.insert((k.prefix_len(), k.data()), v);
            }
        }
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
        write_array(
            &mut self.rulesets,
            base * MAX_RULESETS,
            &mut current.rulesets,
            &target.rulesets,
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

fn sync_map<K: Clone + Eq + Hash, V: Copy + PartialEq>(
    map: &mut impl KernelMap<K, V>,
    current: &mut HashMap<K, V>,
    target: &HashMap<K, V>,
    stats: &mut WriteStats,
) -> Result<()> {
    let stale: Vec<K> = current
        .keys()
        .filter(|k| !target.contains_key(*k))
        .cloned()
        .collect();
    for k in stale {
        map.remove(&k)?;
        current.remove(&k);
        stats.removed += 1;
    }
    for (k, v) in target {
        if current.get(k) != Some(v) {
            map.insert(k, *v)?;
            current.insert(k.clone(), *v);
            stats.inserted += 1;
        }
    }
    Ok(())
}
