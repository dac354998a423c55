//! The flat classifier's compiler: a slot's device prefixes and each
//! group's destination prefixes as multibit tries in `TG_TRIE`, which the
//! program walks with array lookups only (`ebpf/program/src/classify.rs`,
//! layout in `tollgate_common::classifier`).
//!
//! # Structure
//! One trie per (family, tree) of a slot, a tree being one group's
//! destinations or the device prefixes. A 256-word root (16 nodes) indexed
//! by the address's first byte, then 16-word nodes indexed by the next 4
//! bits. A
//! prefix is expanded to the words its length covers at the level where it
//! ends (controlled prefix expansion) and pushed down: prefixes are
//! inserted shortest first, a longer one overwrites, and a node created
//! under a leaf starts as 16 copies of it. So every word holds the payload
//! of the longest prefix covering it, and a walk stops at the first leaf.
//! Children are node offsets from the trie's base: a trie is a block that
//! can move as a whole.
//!
//! # Memory
//! Per trie 16 + N nodes of 16 words (64 bytes), N inner nodes, N ≤
//! P·⌈(L − 8)/4⌉ for P prefixes of length ≤ L: at most 6 nodes (384 bytes)
//! per IPv4 prefix and 30 (1,920 bytes) per IPv6 prefix, far less where
//! prefixes share paths (the 10⁵-prefix benchmark policy: see
//! BENCHMARKS.md). A slot holds `TRIE_NODES_PER_SLOT` nodes.
//!
//! # Accesses
//! A walk reads one `TG_ROOTS` word and at most 7 (IPv4) or 31 (IPv6)
//! `TG_TRIE` words, one per level, stopping at the first leaf.
//!
//! # Placement
//! An install keeps every trie whose words did not change where it is, and
//! rewrites a changed one in place if it did not grow; others go to the
//! first gap that fits, and only when none does is the slot laid out anew.
//! The writer then stores only the words that differ from what the slot
//! holds, so a small policy change writes the words of the tries it
//! touched, not the slot.

use std::sync::Arc;

use anyhow::{Result, bail};
use tollgate_common::{
    DESTINATION_HEADER_BITS, DEVICE_PREFIX_HEADER_BITS, DEVICE_TREE, FAMILY_V4, NO_TRIE,
    NODE_WORDS, ROOT_STRIDE, ROOT_WORDS, ROOTS_PER_SLOT, STRIDE, TREES_PER_FAMILY, TRIE_CHILD,
    TRIE_NODES_PER_SLOT, TRIE_NONE, TRIE_WORDS_PER_SLOT, child_node, child_word, leaf_payload,
    leaf_word,
};

use super::SlotImage;

/// One prefix of a trie: `addr` left-aligned (an IPv4 address in the top
/// 32 bits), `len` bits of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: u128,
    pub len: u8,
    pub payload: u32,
}

/// A trie in place: its tree, its words (children relative to `base`) and
/// its base, in words from the slot's first (a multiple of a node: every
/// trie is whole nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedTrie {
    pub family: u8,
    pub tree: u32,
    pub base: u32,
    /// Shared with the image of the slot it was built for, so that an
    /// unchanged group's trie is kept without copying.
    pub words: Arc<[u32]>,
}

/// What a slot's share of `TG_TRIE` and `TG_ROOTS` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlatImage {
    /// Sorted by (family, tree).
    pub tries: Vec<PlacedTrie>,
    /// The slot's `TG_ROOTS` entries (absolute node indices), [`ROOTS_PER_SLOT`]
    /// of them; empty for a slot not known yet (after a restart).
    pub roots: Vec<u32>,
}

/// Left-aligns an address as keys store it (IPv4 in the first 4 bytes).
fn left_aligned(bytes: &[u8; 16]) -> u128 {
    u128::from_be_bytes(*bytes)
}

/// The `width` bits of `addr` from bit `pos` (0 = most significant).
fn bits(addr: u128, pos: u32, width: u32) -> u32 {
    ((addr >> (128 - pos - width)) & ((1u128 << width) - 1)) as u32
}

/// Compiles `prefixes` (each (length, address) once) into a trie of
/// 16-word nodes whose children are node offsets from its first node.
pub fn build(prefixes: &mut [Prefix]) -> Result<Vec<u32>> {
    prefixes.sort_by_key(|p| p.len);
    let mut words = vec![leaf_word(TRIE_NONE); ROOT_WORDS as usize];
    for p in prefixes.iter() {
        if p.payload >= TRIE_NONE {
            bail!("trie payload {} does not fit 31 bits", p.payload);
        }
        let len = u32::from(p.len);
        let (mut node, mut pos, mut width) = (0usize, 0u32, ROOT_STRIDE);
        loop {
            let index = bits(p.addr, pos, width) as usize;
            if len <= pos + width {
                // Expanded to every word whose index starts with the
                // prefix's remaining bits; shortest first, so no word here
                // is a child yet.
                let free = pos + width - len;
                let first = (index >> free) << free;
                for w in &mut words[node + first..node + first + (1 << free)] {
                    debug_assert_eq!(*w & TRIE_CHILD, 0);
                    *w = leaf_word(p.payload);
                }
                break;
            }
            let word = words[node + index];
            node = if word & TRIE_CHILD != 0 {
                (child_node(word) * NODE_WORDS) as usize
            } else {
                let child = words.len();
                if child + NODE_WORDS as usize > TRIE_WORDS_PER_SLOT as usize {
                    bail!("a trie of {child} words cannot grow");
                }
                words.extend(std::iter::repeat_n(word, NODE_WORDS as usize));
                words[node + index] = child_word(child as u32 / NODE_WORDS);
                child
            };
            pos += width;
            width = STRIDE;
        }
    }
    Ok(words)
}

/// What the program's walk finds for `addr` in `words`: the same steps as
/// `classify.rs`, for tests.
pub fn walk(words: &[u32], family_bits: u32, addr: u128) -> u32 {
    let (mut node, mut pos, mut width) = (0usize, 0u32, ROOT_STRIDE);
    loop {
        let word = words[node + bits(addr, pos, width) as usize];
        if word & TRIE_CHILD == 0 {
            return leaf_payload(word);
        }
        pos += width;
        width = STRIDE;
        if pos >= family_bits {
            return TRIE_NONE;
        }
        node = (child_node(word) * NODE_WORDS) as usize;
    }
}

/// The prefixes of each (family, tree) of `image`, sorted by key, but for
/// the groups' trees `kept` says are unchanged.
fn trees(image: &SlotImage, kept: &dyn Fn(u32) -> bool) -> Vec<((u8, u32), Vec<Prefix>)> {
    let mut all: Vec<((u8, u32), Prefix)> = Vec::new();
    for ((len, key), group) in &image.device_prefixes {
        all.push((
            (key.family, DEVICE_TREE),
            Prefix {
                addr: left_aligned(&key.addr),
                len: (len - DEVICE_PREFIX_HEADER_BITS) as u8,
                payload: *group,
            },
        ));
    }
    for ((len, key), head) in &image.destinations {
        let tree = u32::from(u16::from_be_bytes(key.group));
        if kept(tree) {
            continue;
        }
        all.push((
            (key.family, tree),
            Prefix {
                addr: left_aligned(&key.addr),
                len: (len - DESTINATION_HEADER_BITS) as u8,
                payload: *head,
            },
        ));
    }
    all.sort_by_key(|(k, _)| *k);
    let mut out: Vec<((u8, u32), Vec<Prefix>)> = Vec::new();
    for (key, p) in all {
        match out.last_mut() {
            Some((k, v)) if *k == key => v.push(p),
            _ => out.push((key, vec![p])),
        }
    }
    out
}

impl FlatImage {
    /// The tries of `image` (slot `slot`), placed so that what `current`
    /// holds moves as little as possible within `capacity` words. The
    /// groups' trees `kept` says have the destinations they had in
    /// `current` keep their tries from there, unbuilt.
    pub fn build(
        slot: u8,
        image: &SlotImage,
        current: &FlatImage,
        kept: &dyn Fn(u32) -> bool,
        capacity: u32,
    ) -> Result<Self> {
        let mut tries: Vec<PlacedTrie> = current
            .tries
            .iter()
            .filter(|t| t.tree != DEVICE_TREE && kept(t.tree))
            .cloned()
            .collect();
        for ((family, tree), mut prefixes) in trees(image, kept) {
            tries.push(PlacedTrie {
                family,
                tree,
                base: 0,
                words: build(&mut prefixes)?.into(),
            });
        }
        tries.sort_by_key(|t| (t.family, t.tree));
        if !place(&mut tries, current, capacity) {
            // Fragmented: lay the slot out anew, one trie after the other.
            let mut next = 0u64;
            for t in &mut tries {
                t.base = next as u32;
                next += t.words.len() as u64;
            }
            if next > u64::from(capacity) {
                bail!("the policy's tries need {next} words of TG_TRIE, a slot holds {capacity}");
            }
        }
        let mut roots = vec![NO_TRIE; ROOTS_PER_SLOT as usize];
        let slot_base = u32::from(slot) * TRIE_NODES_PER_SLOT;
        for t in &tries {
            let family = if t.family == FAMILY_V4 { 0 } else { 1 };
            roots[(family * TREES_PER_FAMILY + t.tree) as usize] = slot_base + t.base / NODE_WORDS;
        }
        Ok(FlatImage { tries, roots })
    }

    /// Words of `TG_TRIE` the slot uses.
    pub fn words(&self) -> usize {
        self.tries.iter().map(|t| t.words.len()).sum()
    }
}

/// Places `tries` (sorted by key) where `current` has them if they did not
/// grow, else first fit; false if some trie finds no room.
fn place(tries: &mut [PlacedTrie], current: &FlatImage, capacity: u32) -> bool {
    let mut taken: Vec<(u32, u32)> = Vec::new();
    let mut homeless = Vec::new();
    for (i, t) in tries.iter_mut().enumerate() {
        let held = current
            .tries
            .binary_search_by_key(&(t.family, t.tree), |c| (c.family, c.tree))
            .ok()
            .map(|c| &current.tries[c]);
        match held {
            Some(c) if t.words.len() <= c.words.len() => {
                t.base = c.base;
                taken.push((c.base, c.base + t.words.len() as u32));
            }
            _ => homeless.push(i),
        }
    }
    taken.sort_unstable();
    for i in homeless {
        let len = tries[i].words.len() as u64;
        let mut start = 0u64;
        let mut at = taken.len();
        for (j, &(lo, hi)) in taken.iter().enumerate() {
            if u64::from(lo) - start >= len {
                at = j;
                break;
            }
            start = start.max(u64::from(hi));
        }
        if start + len > u64::from(capacity) {
            return false;
        }
        tries[i].base = start as u32;
        taken.insert(at, (start as u32, (start + len) as u32));
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The longest of `prefixes` covering `addr`, the slow way.
    fn naive(prefixes: &[Prefix], addr: u128) -> u32 {
        prefixes
            .iter()
            .filter(|p| p.len == 0 || (p.addr ^ addr) >> (128 - u32::from(p.len)) == 0)
            .max_by_key(|p| p.len)
            .map_or(TRIE_NONE, |p| p.payload)
    }

    fn prefix(family_bits: u32) -> impl Strategy<Value = Prefix> {
        // Few distinct top bits, so that prefixes nest and share paths.
        (0u128..4, any::<u128>(), 0..=family_bits, 0u32..1000).prop_map(
            move |(top, rest, len, payload)| {
                let raw = (top << 126) | (rest >> 2);
                let keep = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                let family_mask = u128::MAX << (128 - family_bits);
                Prefix {
                    addr: raw & keep & family_mask,
                    len: len as u8,
                    payload,
                }
            },
        )
    }

    fn dedup(mut prefixes: Vec<Prefix>) -> Vec<Prefix> {
        prefixes.sort_by_key(|p| (p.addr, p.len));
        prefixes.dedup_by_key(|p| (p.addr, p.len));
        prefixes
    }

    proptest! {
        #[test]
        fn a_walk_finds_the_longest_covering_prefix(
            v6 in any::<bool>(),
            raw in prop::collection::vec(prefix(128), 0..60),
            probes in prop::collection::vec((any::<u128>(), 0usize..60, any::<u8>()), 1..40),
        ) {
            let family_bits = if v6 { 128 } else { 32 };
            let mask = u128::MAX << (128 - family_bits);
            let prefixes = dedup(raw.into_iter().map(|mut p| {
                p.len = p.len.min(family_bits as u8);
                let keep = if p.len == 0 { 0 } else { u128::MAX << (128 - u32::from(p.len)) };
                p.addr &= keep & mask;
                p
            }).collect());
            let words = build(&mut prefixes.clone()).unwrap();
            for (raw, near, flip) in probes {
                // Probe near a prefix: its address with a few low bits changed.
                let addr = match prefixes.get(near) {
                    Some(p) => p.addr ^ (u128::from(flip) << (128 - family_bits)),
                    None => raw,
                } & mask;
                prop_assert_eq!(walk(&words, family_bits, addr), naive(&prefixes, addr));
            }
        }
    }

    #[test]
    fn memory_stays_within_the_formula() {
        // A /32 takes the root and six 16-word nodes; a /24 under it none
        // more (its path exists); a /128 the root and thirty nodes.
        let mut v4 = vec![
            Prefix {
                addr: 0x0a00_0001u128 << 96,
                len: 32,
                payload: 1,
            },
            Prefix {
                addr: 0x0a00_0000u128 << 96,
                len: 24,
                payload: 2,
            },
        ];
        assert_eq!(build(&mut v4).unwrap().len(), 256 + 6 * 16);
        let mut v6 = vec![Prefix {
            addr: 1,
            len: 128,
            payload: 1,
        }];
        assert_eq!(build(&mut v6).unwrap().len(), 256 + 30 * 16);
    }

    #[test]
    fn unchanged_tries_stay_and_new_ones_take_the_first_gap() {
        let trie = |tree, len| PlacedTrie {
            family: FAMILY_V4,
            tree,
            base: 0,
            words: vec![0; len].into(),
        };
        let mut first = vec![trie(1, 300), trie(2, 300), trie(3, 300)];
        assert!(place(&mut first, &FlatImage::default(), 1000));
        let current = FlatImage {
            tries: first,
            roots: Vec::new(),
        };
        // Tree 1 stays; tree 2 goes; tree 3 grows and moves to the first
        // gap that fits, tree 4 (new) after it.
        let mut next = vec![trie(1, 300), trie(3, 320), trie(4, 250)];
        assert!(place(&mut next, &current, 2000));
        let bases: Vec<u32> = next.iter().map(|t| t.base).collect();
        assert_eq!(bases, vec![0, 300, 620]);
        assert!(!place(&mut next, &current, 700));
    }
}
