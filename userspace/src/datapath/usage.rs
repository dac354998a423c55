//! How full the maps are, for `tollgate_map_entries` and
//! `tollgate_map_capacity`.

use anyhow::{Context as _, Result, anyhow, bail};
use aya::maps::{HashMap, MapData};
use tollgate_common::{
    MAP_COUNTERS, MAP_DESTINATIONS, MAP_DEVICE_EXACT, MAP_DEVICE_PREFIX, MAP_FRAGMENTS,
    MAP_GATEWAY, MAP_RULESETS,
};

use super::{Dataplane, slots::SlotImage};

/// How full one map is (`tollgate_map_entries` / `tollgate_map_capacity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// The maps whose fill is reported: the policy maps (both slots) and
/// counters, from what the controller installed, and the fragment cache
/// the program fills, by counting its keys.
pub const REPORTED_MAPS: [&str; 7] = [
    MAP_DEVICE_EXACT,
    MAP_GATEWAY,
    MAP_DEVICE_PREFIX,
    MAP_DESTINATIONS,
    MAP_RULESETS,
    MAP_COUNTERS,
    MAP_FRAGMENTS,
];

impl Dataplane {
    /// How full the [`REPORTED_MAPS`] are. The policy maps count the
    /// entries of both slots as installed (a slot not known since an
    /// adoption is read back once, as the next install would); the fragment
    /// cache is walked key by key (one syscall per entry: about
    /// `limits.fragments` syscalls when full).
    pub fn map_usage(&mut self) -> Result<Vec<MapUsage>> {
        for slot in 0..2u8 {
            if self.slots[usize::from(slot)].is_none() {
                let image = self
                    .policy
                    .read_slot(slot)
                    .with_context(|| format!("read back slot {slot}"))?;
                self.slots[usize::from(slot)] = Some(image);
            }
        }
        let images: Vec<&SlotImage> = self.slots.iter().flatten().collect();
        let sum = |f: fn(&SlotImage) -> usize| images.iter().map(|i| f(i) as u64).sum::<u64>();
        let mut usage = Vec::with_capacity(REPORTED_MAPS.len());
        for map in REPORTED_MAPS {
            let entries = match map {
                MAP_DEVICE_EXACT => sum(|i| i.device_exact.count()),
                MAP_GATEWAY => sum(|i| i.gateway.len()),
                MAP_DEVICE_PREFIX => sum(|i| i.device_prefixes.len()),
                MAP_DESTINATIONS => sum(|i| i.destinations.len()),
                MAP_RULESETS => sum(|i| i.records.len()),
                MAP_COUNTERS => self.counters.in_use() as u64,
                _ => self.count_keys(map)?,
            };
            let capacity = self
                .capacities
                .iter()
                .find(|(name, _)| *name == map)
                .map_or(0, |(_, c)| u64::from(*c));
            // A walk of a cache the program changes meanwhile may restart
            // (its current key evicted) and count some keys twice.
            let entries = entries.min(capacity);
            usage.push(MapUsage {
                map,
                entries,
                capacity,
            });
        }
        Ok(usage)
    }

    /// Entries of an LRU hash map the object still holds, counted key by
    /// key.
    fn count_keys(&self, name: &str) -> Result<u64> {
        fn count<K: aya::Pod, V: aya::Pod>(map: &aya::maps::Map) -> Result<u64> {
            count_entries(&HashMap::<&MapData, K, V>::try_from(map)?)
        }
        let object = self.object();
        let map = object
            .map(name)
            .ok_or_else(|| anyhow!("BPF object has no map {name}"))?;
        match name {
            MAP_FRAGMENTS => {
                count::<tollgate_common::FragmentKey, tollgate_common::FragmentVerdict>(map)
            }
            _ => bail!("map {name} is not counted key by key"),
        }
        .with_context(|| format!("count the entries of {name}"))
    }
}

/// Entries of a hash map, counted key by key: one `BPF_MAP_GET_NEXT_KEY`
/// syscall each (about 2 µs: about 30 ms for a full TG_FRAGS at its
/// default size, 16,384 entries, in a debug build).
fn count_entries<T: std::borrow::Borrow<MapData>, K: aya::Pod, V: aya::Pod>(
    map: &HashMap<T, K, V>,
) -> Result<u64> {
    let mut n = 0u64;
    for key in map.keys() {
        key?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// What counting the full fragment cache costs a scrape: TG_FRAGS at
    /// its default size (16,384). Needs CAP_BPF.
    #[test]
    fn counting_a_full_cache_key_by_key() {
        crate::require_root();
        let size = tollgate_common::DEFAULT_FRAGMENTS;
        // Keys of TG_FRAGS's size; the count does not read values.
        let mut map =
            HashMap::<MapData, [u8; size_of::<tollgate_common::FragmentKey>()], u64>::create(
                size, 0,
            )
            .unwrap();
        for i in 0..size {
            let mut key = [0u8; size_of::<tollgate_common::FragmentKey>()];
            key[..4].copy_from_slice(&i.to_le_bytes());
            map.insert(key, u64::from(i), 0).unwrap();
        }
        let started = Instant::now();
        let total = count_entries(&map).unwrap();
        let took = started.elapsed();
        assert_eq!(total, u64::from(size));
        eprintln!("counted {total} entries in {took:?}");
    }
}
