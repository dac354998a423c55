//! `TG_TRIE` and `TG_ROOTS` mapped into the controller (`BPF_F_MMAPABLE`
//! arrays): a slot's tries are written with plain stores, millions of words
//! in milliseconds, where one `bpf(BPF_MAP_UPDATE_ELEM)` per word would take
//! seconds. Only the inactive slot is ever written; the flip of
//! `TG_ACTIVE`, a system call, orders these stores before it.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::Arc,
};

use anyhow::{Result, bail};
use aya::maps::{Map, MapData};
use tollgate_common::{
    FAMILY_V4, FAMILY_V6, NO_TRIE, NODE_WORDS, ROOT_FLAGS, ROOTS_PER_SLOT, TREES_PER_FAMILY,
    TRIE_CHILD, TRIE_NODES_PER_SLOT, TRIE_WORDS_PER_SLOT, child_node,
};

use super::flat::{FlatImage, PlacedTrie, Shape};

/// One array map of `u32` words mapped shared, read and write.
pub struct MappedWords {
    ptr: *mut u32,
    /// Entries.
    len: usize,
    /// Words from one entry to the next: the kernel rounds an array's
    /// elements up to 8 bytes, so a `u32` array has 2, a node array 1
    /// (entries are then its words).
    stride: usize,
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
}

// SAFETY: the mapping is owned by this value and only touched through
// `&mut self` (stores) or `&self` (loads); the kernel side is the BPF
// program, which only reads the inactive slot's words after the flip.
unsafe impl Send for MappedWords {}
unsafe impl Sync for MappedWords {}

impl MappedWords {
    /// Maps the array `map` of `len` entries, each `stride` words apart.
    pub fn new(map: Map, len: usize, stride: usize) -> Result<MappedWords> {
        let Map::Array(data) = map else {
            bail!("not an array map");
        };
        let bytes = len * stride * 4;
        // SAFETY: a shared mapping of a BPF array's value area, as
        // BPF_F_MMAPABLE allows; the length is the array's size.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        Ok(MappedWords {
            ptr: ptr.cast(),
            len,
            stride,
            _map: data,
        })
    }

    pub(super) fn get(&self, i: usize) -> u32 {
        assert!(i < self.len);
        // SAFETY: in bounds of the mapping; volatile, as it is shared
        // memory.
        unsafe { self.ptr.add(i * self.stride).read_volatile() }
    }

    /// Stores `value` at `i` unless it is there already; true if stored.
    pub(super) fn store(&mut self, i: usize, value: u32) -> bool {
        if self.get(i) == value {
            return false;
        }
        // SAFETY: in bounds of the mapping (checked by `get`).
        unsafe { self.ptr.add(i * self.stride).write_volatile(value) };
        true
    }
}

impl Drop for MappedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len * self.stride * 4) };
    }
}

/// A trie's word as the slot holds it, the trie placed at word `base`: a
/// child names its node by byte offset from the slot's first word, so that
/// the program's walk adds nothing to it (children in [`PlacedTrie`] are
/// from the trie's own first word, so that a trie can move).
fn placed(word: u32, base: u32) -> u32 {
    if word & TRIE_CHILD == 0 {
        word
    } else {
        word + base * 4
    }
}

/// The flat classifier's two maps.
pub struct FlatMaps {
    pub trie: MappedWords,
    pub roots: MappedWords,
}

impl FlatMaps {
    /// Makes `slot`'s share of the maps hold `target` where they hold
    /// `current`; returns the words stored (those that differed). A trie
    /// `current` has at the same place with the same words (shared: an
    /// unchanged group's, `by_group.rs`) is not even compared.
    pub fn write_slot(&mut self, slot: u8, current: &FlatImage, target: &FlatImage) -> usize {
        let mut stored = 0;
        let slot_base = usize::from(slot) * TRIE_WORDS_PER_SLOT as usize;
        for t in &target.tries {
            let held = current
                .tries
                .binary_search_by_key(&(t.family, t.tree), |c| (c.family, c.tree))
                .ok()
                .map(|c| &current.tries[c]);
            if held.is_some_and(|c| c.base == t.base && Arc::ptr_eq(&c.words, &t.words)) {
                continue;
            }
            let base = slot_base + t.base as usize;
            for (i, &w) in t.words.iter().enumerate() {
                stored += usize::from(self.trie.store(base + i, placed(w, t.base)));
            }
        }
        // The roots last: a trie is whole before its root points at it
        // (the slot is not read yet either way).
        let roots_base = usize::from(slot) * ROOTS_PER_SLOT as usize;
        for (i, &r) in target.roots.iter().enumerate() {
            stored += usize::from(self.roots.store(roots_base + i, r));
        }
        stored
    }

    /// Reads back the tries `slot` holds, as its `TG_ROOTS` entries find
    /// them (after a restart: an install then keeps unchanged tries where
    /// they are, storing nothing). `None` when a root or a child points
    /// outside the slot or two tries overlap: the slot is then laid out
    /// anew, which is correct whatever it held.
    pub fn read_slot(&self, slot: u8) -> Option<FlatImage> {
        let slot_nodes = u32::from(slot) * TRIE_NODES_PER_SLOT;
        let slot_words = usize::from(slot) * TRIE_WORDS_PER_SLOT as usize;
        let roots_base = usize::from(slot) * ROOTS_PER_SLOT as usize;
        let roots: Vec<u32> = (0..ROOTS_PER_SLOT as usize)
            .map(|i| self.roots.get(roots_base + i))
            .collect();
        let mut tries = Vec::new();
        for (i, &root) in (0u32..).zip(&roots) {
            if root == NO_TRIE {
                continue;
            }
            let shape = Shape::of_root(root);
            let node_words = shape.node_words();
            let node = (root & !ROOT_FLAGS)
                .checked_sub(slot_nodes)
                .filter(|&n| n < TRIE_NODES_PER_SLOT)?;
            let base = node * NODE_WORDS;
            if !base.is_multiple_of(node_words) {
                return None;
            }
            // Nodes are appended as their parents point at them: the trie
            // ends after the last node a word before it names.
            let mut len = shape.root_words();
            let mut words = Vec::new();
            while (words.len() as u32) < len {
                let at = base.checked_add(words.len() as u32)?;
                if at >= TRIE_WORDS_PER_SLOT {
                    return None;
                }
                let mut word = self.trie.get(slot_words + at as usize);
                if word & TRIE_CHILD != 0 {
                    word = word.checked_sub(base * 4)?;
                    let end = (child_node(word) * NODE_WORDS).checked_add(node_words)?;
                    len = len.max(end);
                }
                words.push(word);
            }
            let family = if i < TREES_PER_FAMILY {
                FAMILY_V4
            } else {
                FAMILY_V6
            };
            tries.push(PlacedTrie {
                family,
                tree: i % TREES_PER_FAMILY,
                base,
                shape,
                words: words.into(),
            });
        }
        let mut spans: Vec<(u32, u32)> = tries
            .iter()
            .map(|t| (t.base, t.base + t.words.len() as u32))
            .collect();
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[0].1 > w[1].0) {
            return None;
        }
        Some(FlatImage { tries, roots })
    }
}
