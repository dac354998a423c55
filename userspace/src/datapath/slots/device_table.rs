//! The exact device table's writer (`TG_DEV_EXACT`, layout and hash in
//! `tollgate_common::device_table`): two-choice hashing in 64-byte buckets,
//! written with plain stores into the mapped array.
//!
//! A device goes into the first free entry of its two buckets. When both
//! are full, a breadth-first search over the entries' other buckets finds
//! the shortest chain of moves that frees one ("cuckoo" hashing); the
//! moves are made from the far end of the chain back, each entry written
//! at its new place before its old place is reused, so every device stays
//! findable throughout. Only the inactive slot is written, so a packet
//! never sees a move anyway. When no chain is found within
//! [`SEARCH_BUCKETS`] buckets, the insert fails and nothing has changed.

use anyhow::{Result, bail};
use tollgate_common::{
    DEVICE_FREE, DeviceKey, FAMILY_V4, NODE_WORDS, SLOTS, V4_PER_BUCKET, V6_ENTRY_WORDS,
    V6_PER_BUCKET, device_buckets, device_hash, device_table_buckets,
};

use super::mapped::MappedWords;
use crate::datapath::address_of;

/// Buckets a failed insert's search visits at most: far beyond the chains
/// a table loaded to 80 % needs (a few moves), and bounded in time.
const SEARCH_BUCKETS: usize = 4096;

/// Words that can be read and stored: the mapped map, or a vector in tests.
pub trait Words {
    fn get(&self, i: usize) -> u32;
    /// Stores `value` at `i`; true if it differed.
    fn store(&mut self, i: usize, value: u32) -> bool;
}

impl Words for MappedWords {
    fn get(&self, i: usize) -> u32 {
        MappedWords::get(self, i)
    }
    fn store(&mut self, i: usize, value: u32) -> bool {
        MappedWords::store(self, i, value)
    }
}

impl Words for Vec<u32> {
    fn get(&self, i: usize) -> u32 {
        self[i]
    }
    fn store(&mut self, i: usize, value: u32) -> bool {
        std::mem::replace(&mut self[i], value) != value
    }
}

/// How many buckets each table has (the program's constant
/// `tollgate_common::GLOBAL_DEVICE_BUCKETS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub v4: u32,
    pub v6: u32,
}

impl Geometry {
    /// Tables sized for `addresses` devices a slot.
    pub fn for_devices(addresses: u32) -> Geometry {
        let (v4, v6) = device_table_buckets(addresses);
        Geometry { v4, v6 }
    }

    /// Words of the map, both slots.
    pub fn words(&self) -> usize {
        (SLOTS * (self.v4 + self.v6) * NODE_WORDS) as usize
    }

    /// The two buckets (absolute: indices of `TG_DEV_EXACT`) where `addr`,
    /// as the table stores it, may be in (`slot`, `family`)'s table; the
    /// kernel reads the first, then the second.
    pub fn buckets(&self, slot: u8, family: u8, addr: &[u32; 4]) -> [usize; 2] {
        let (first, count) = self.table(slot, family);
        let hi = u64::from(addr[0]) << 32 | u64::from(addr[1]);
        let lo = u64::from(addr[2]) << 32 | u64::from(addr[3]);
        let (a, b) = device_buckets(device_hash(family != FAMILY_V4, hi, lo), count);
        [first + a as usize, first + b as usize]
    }

    /// The first bucket and the bucket count of (`slot`, `family`)'s table.
    fn table(&self, slot: u8, family: u8) -> (usize, u32) {
        let slot_base = usize::from(slot) * (self.v4 + self.v6) as usize;
        if family == FAMILY_V4 {
            (slot_base, self.v4)
        } else {
            (slot_base + self.v4 as usize, self.v6)
        }
    }
}

/// One entry's place: its bucket (absolute) and its index in the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Place {
    bucket: usize,
    entry: usize,
}

/// An address as the table stores it: four big-endian words (IPv4 in the
/// first, the others 0).
type Address = [u32; 4];

fn stored_words(key: &DeviceKey) -> Address {
    let a = key.addr;
    std::array::from_fn(|i| {
        u32::from_be_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
    })
}

/// The exact device table of both slots.
pub struct DeviceTable<W: Words> {
    words: W,
    geometry: Geometry,
}

impl<W: Words> DeviceTable<W> {
    pub fn new(words: W, geometry: Geometry) -> DeviceTable<W> {
        DeviceTable { words, geometry }
    }

    fn entries_per_bucket(family: u8) -> usize {
        if family == FAMILY_V4 {
            V4_PER_BUCKET
        } else {
            V6_PER_BUCKET
        }
    }

    /// The word index of a place's group and of its address's words.
    fn layout(family: u8, p: Place) -> (usize, [usize; 4]) {
        let base = p.bucket * NODE_WORDS as usize;
        if family == FAMILY_V4 {
            let a = base + p.entry;
            (base + V4_PER_BUCKET + p.entry, [a, a, a, a])
        } else {
            let a = base + p.entry * V6_ENTRY_WORDS;
            (a + 4, [a, a + 1, a + 2, a + 3])
        }
    }

    fn read(&self, family: u8, p: Place) -> (Address, u32) {
        let (group, addr) = Self::layout(family, p);
        let mut a = [0; 4];
        let words = if family == FAMILY_V4 { 1 } else { 4 };
        for (w, &i) in a.iter_mut().zip(&addr).take(words) {
            *w = self.words.get(i);
        }
        (a, self.words.get(group))
    }

    /// Writes an entry: the address first, then the group that makes it
    /// live (the slot is not read yet either way).
    fn write(&mut self, family: u8, p: Place, addr: Address, group: u32) {
        let (g, a) = Self::layout(family, p);
        let words = if family == FAMILY_V4 { 1 } else { 4 };
        for (&i, &w) in a.iter().zip(&addr).take(words) {
            self.words.store(i, w);
        }
        self.words.store(g, group);
    }

    fn places(family: u8, bucket: usize) -> impl Iterator<Item = Place> {
        (0..Self::entries_per_bucket(family)).map(move |entry| Place { bucket, entry })
    }

    /// Where `addr` is in its buckets, if it is.
    fn find(&self, slot: u8, family: u8, addr: &Address) -> Option<Place> {
        self.geometry
            .buckets(slot, family, addr)
            .into_iter()
            .flat_map(|b| Self::places(family, b))
            .find(|&p| {
                let (a, group) = self.read(family, p);
                group != DEVICE_FREE && a == *addr
            })
    }

    fn free_in(&self, family: u8, bucket: usize) -> Option<Place> {
        Self::places(family, bucket).find(|&p| self.read(family, p).1 == DEVICE_FREE)
    }

    /// The group of `key`'s device, if the table has it.
    pub fn get(&self, key: &DeviceKey) -> Option<u32> {
        let addr = stored_words(key);
        self.find(key.slot, key.family, &addr)
            .map(|p| self.read(key.family, p).1)
    }

    /// Puts `key`'s device in `group` (a group id, never `DEVICE_FREE`,
    /// the unknown group).
    pub fn insert(&mut self, key: &DeviceKey, group: u32) -> Result<()> {
        if group == DEVICE_FREE {
            bail!(
                "device {} in group id {group}, which marks a free entry",
                address_of(key.family, key.addr)
            );
        }
        let (slot, family) = (key.slot, key.family);
        let addr = stored_words(key);
        if let Some(p) = self.find(slot, family, &addr) {
            self.write(family, p, addr, group);
            return Ok(());
        }
        let [first, second] = self.geometry.buckets(slot, family, &addr);
        if let Some(p) = self
            .free_in(family, first)
            .or_else(|| self.free_in(family, second))
        {
            self.write(family, p, addr, group);
            return Ok(());
        }
        let Some(chain) = self.search(slot, family, [first, second]) else {
            let (_, buckets) = self.geometry.table(slot, family);
            bail!(
                "the exact device table of slot {slot} (IPv{family}, {buckets} buckets) has \
                 no room left near {}: raise limits.device-addresses",
                address_of(key.family, key.addr)
            );
        };
        // chain[0] is in one of the new address's buckets; each next place
        // is in the other bucket of the entry before it; the last is free.
        for pair in chain.windows(2).rev() {
            let (moved, group) = self.read(family, pair[0]);
            self.write(family, pair[1], moved, group);
        }
        self.write(family, chain[0], addr, group);
        Ok(())
    }

    /// The shortest chain of places from one of `start`'s entries to a free
    /// entry, each next place in the other bucket of the entry before it.
    fn search(&self, slot: u8, family: u8, start: [usize; 2]) -> Option<Vec<Place>> {
        // (place, index of the node it was reached from)
        let mut nodes: Vec<(Place, usize)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for b in start {
            if seen.insert(b) {
                nodes.extend(Self::places(family, b).map(|p| (p, usize::MAX)));
            }
        }
        let mut next = 0;
        while next < nodes.len() && seen.len() <= SEARCH_BUCKETS {
            let (place, _) = nodes[next];
            let (addr, _) = self.read(family, place);
            let other = self
                .geometry
                .buckets(slot, family, &addr)
                .into_iter()
                .find(|&b| b != place.bucket);
            if let Some(other) = other.filter(|&b| seen.insert(b)) {
                if let Some(free) = self.free_in(family, other) {
                    let mut chain = vec![free, place];
                    let mut from = nodes[next].1;
                    while from != usize::MAX {
                        chain.push(nodes[from].0);
                        from = nodes[from].1;
                    }
                    chain.reverse();
                    return Some(chain);
                }
                nodes.extend(Self::places(family, other).map(|p| (p, next)));
            }
            next += 1;
        }
        None
    }

    /// Removes `key`'s device; false if the table did not have it.
    pub fn remove(&mut self, key: &DeviceKey) -> bool {
        let addr = stored_words(key);
        match self.find(key.slot, key.family, &addr) {
            Some(p) => {
                self.write(key.family, p, [0; 4], DEVICE_FREE);
                true
            }
            None => false,
        }
    }

    /// Every device of `slot`'s tables.
    pub fn entries(&self, slot: u8) -> Vec<(DeviceKey, u32)> {
        let mut out = Vec::new();
        for family in [FAMILY_V4, tollgate_common::FAMILY_V6] {
            let (first, count) = self.geometry.table(slot, family);
            for bucket in first..first + count as usize {
                for p in Self::places(family, bucket) {
                    let (a, group) = self.read(family, p);
                    if group == DEVICE_FREE {
                        continue;
                    }
                    let mut addr = [0u8; 16];
                    for (chunk, w) in addr.chunks_mut(4).zip(a) {
                        chunk.copy_from_slice(&w.to_be_bytes());
                    }
                    let key = DeviceKey {
                        slot,
                        family,
                        _pad: [0; 2],
                        addr,
                    };
                    out.push((key, group));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_common::FAMILY_V6;

    fn key(slot: u8, family: u8, n: u32) -> DeviceKey {
        let mut addr = [0u8; 16];
        if family == FAMILY_V4 {
            addr[..4].copy_from_slice(&(0x0a00_0000 | n).to_be_bytes());
        } else {
            addr[0] = 0xfd;
            addr[12..].copy_from_slice(&n.to_be_bytes());
        }
        DeviceKey {
            slot,
            family,
            _pad: [0; 2],
            addr,
        }
    }

    fn table(devices: u32) -> DeviceTable<Vec<u32>> {
        let geometry = Geometry::for_devices(devices);
        DeviceTable::new(vec![DEVICE_FREE; geometry.words()], geometry)
    }

    #[test]
    fn a_full_load_of_devices_fits_and_is_found_in_its_slot_only() {
        // Sized for 2,000 devices a slot: 2,000 of each family in slot 1.
        let mut t = table(2000);
        for n in 0..2000 {
            for family in [FAMILY_V4, FAMILY_V6] {
                t.insert(&key(1, family, n), n % 7 + 1).unwrap();
            }
        }
        for n in 0..2000 {
            for family in [FAMILY_V4, FAMILY_V6] {
                assert_eq!(t.get(&key(1, family, n)), Some(n % 7 + 1));
                assert_eq!(t.get(&key(0, family, n)), None);
            }
        }
        assert_eq!(t.get(&key(1, FAMILY_V4, 5000)), None);
        assert_eq!(t.entries(1).len(), 4000);
        assert!(t.entries(0).is_empty());
    }

    #[test]
    fn an_insert_moves_a_group_and_a_remove_frees_the_entry() {
        let mut t = table(100);
        let k = key(0, FAMILY_V6, 9);
        t.insert(&k, 3).unwrap();
        t.insert(&k, 4).unwrap();
        assert_eq!(t.entries(0), vec![(k, 4)]);
        assert!(t.remove(&k));
        assert!(!t.remove(&k));
        assert_eq!(t.get(&k), None);
        assert!(t.entries(0).is_empty());
    }

    #[test]
    fn a_table_past_its_room_refuses_an_insert_and_loses_nothing() {
        // One IPv6 bucket a slot: three devices fit, the fourth does not.
        let geometry = Geometry { v4: 1, v6: 1 };
        let mut t = DeviceTable::new(vec![DEVICE_FREE; geometry.words()], geometry);
        for n in 0..3 {
            t.insert(&key(0, FAMILY_V6, n), 2).unwrap();
        }
        let err = t.insert(&key(0, FAMILY_V6, 3), 2).unwrap_err();
        assert!(
            format!("{err}").contains("limits.device-addresses"),
            "{err}"
        );
        let mut held: Vec<_> = t.entries(0).into_iter().map(|(k, _)| k).collect();
        held.sort_by_key(|k| k.addr);
        assert_eq!(
            held,
            (0..3).map(|n| key(0, FAMILY_V6, n)).collect::<Vec<_>>()
        );
    }
}
