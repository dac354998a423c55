//! The flat classifier's compiler: a slot's device prefixes and each
//! group's destination prefixes as multibit tries in `TG_TRIE`, which the
//! program walks with array lookups only (`ebpf/program/src/classify.rs`,
//! layout in `tollgate_common::classifier`).
//!
//! # Structure
//! One trie per (family, tree) of a slot, a tree being one group's
//! destinations or the device prefixes. A 256-word root indexed by the
//! address's first byte, then nodes indexed by the next 4 bits (narrow,
//! 16 words) or 8 bits (wide, 256 words). A prefix is expanded to the words
//! its length covers at the level where it ends (controlled prefix
//! expansion) and pushed down: prefixes are inserted shortest first, a
//! longer one overwrites, and a node created under a leaf starts as copies
//! of it. So every word holds the payload of the longest prefix covering
//! it, and a walk stops at the first leaf. Children are byte offsets from
//! the trie's first word: a trie is a block that can move as a whole (the
//! writer adds its place, `mapped.rs`).
//!
//! # Shapes
//! Every new trie is built in each [`Shape`]: narrow, wide (half the levels,
//! about 1.3 ns a level on the bench machine, BENCHMARKS.md) and wide under
//! a big root (16 bits: one level less again, 8–10 ns on one packet on its
//! own), each for more words. The slot's words are allocated whatever the
//! tries use, so each trie takes the largest shape if the slot has room,
//! and while the tries do not fit, the new trie whose shape takes the most
//! words more than its next smaller one takes that one. Big roots go
//! first, and only into the slot's gaps: laying the slot out anew (below)
//! is for wide and narrow tries only, so a group added to a full slot never
//! rewrites the others for a big root. A trie an install keeps keeps its
//! shape.
//!
//! # Memory
//! A narrow trie: 256 + 16·N words, N ≤ P·⌈(L − 8)/4⌉ inner nodes for P
//! prefixes of length ≤ L, at most 6 nodes (384 bytes) per IPv4 prefix and
//! 30 (1,920 bytes) per IPv6 prefix; a wide one 256 + 256·N, N ≤
//! P·⌈(L − 8)/8⌉, at most 3 KiB per IPv4 prefix and 15 KiB per IPv6
//! prefix; under a big root 65,536 + 256·N, N ≤ P·⌈(L − 16)/8⌉. Far less
//! where prefixes share paths (the 10⁵-prefix benchmark policy: see
//! BENCHMARKS.md). A slot holds `TRIE_WORDS_PER_SLOT` words, room for 64
//! big roots at most.
//!
//! # Accesses
//! A walk reads one `TG_ROOTS` word and at most 7 (IPv4) or 31 (IPv6)
//! `TG_TRIE` words narrow, 4 or 16 wide, 3 or 15 under a big root, one per
//! level, stopping at the first leaf.
//!
//! # Placement
//! An install keeps every trie whose words did not change where it is, and
//! rewrites a changed one in place if it did not grow; others go to the
//! first gap that fits (a wide trie at a multiple of its node size), and
//! only when none does is the slot laid out anew. The writer then stores
//! only the words that differ from what the slot holds, so a small policy
//! change writes the words of the tries it touched, not the slot.

use std::sync::Arc;

use anyhow::{Result, bail};
use tollgate_common::{
    BIG_ROOT_STRIDE, DESTINATION_HEADER_BITS, DEVICE_PREFIX_HEADER_BITS, DEVICE_TREE, FAMILY_V4,
    NO_TRIE, NODE_WORDS, ROOT_BIG, ROOT_STRIDE, ROOT_WIDE, ROOT_WORDS, ROOTS_PER_SLOT, STRIDE,
    TREES_PER_FAMILY, TRIE_CHILD, TRIE_NODES_PER_SLOT, TRIE_NONE, TRIE_WORDS_PER_SLOT, WIDE_STRIDE,
    child_node, child_word, leaf_payload, leaf_word,
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

/// A trie's form, from the fewest words to the fewest levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shape {
    /// A root of [`ROOT_STRIDE`] bits, nodes of [`STRIDE`].
    Narrow,
    /// A root of [`ROOT_STRIDE`] bits, nodes of [`WIDE_STRIDE`].
    Wide,
    /// A root of [`BIG_ROOT_STRIDE`] bits, nodes of [`WIDE_STRIDE`]: one
    /// level less than wide, for a root of 65,536 words.
    BigRoot,
}

impl Shape {
    /// Every shape, in order: `Shape::ALL[shape as usize] == shape`.
    pub const ALL: [Shape; 3] = [Shape::Narrow, Shape::Wide, Shape::BigRoot];

    pub fn root_stride(self) -> u32 {
        if self == Shape::BigRoot {
            BIG_ROOT_STRIDE
        } else {
            ROOT_STRIDE
        }
    }

    pub fn stride(self) -> u32 {
        if self == Shape::Narrow {
            STRIDE
        } else {
            WIDE_STRIDE
        }
    }

    /// The flags of its `TG_ROOTS` entry.
    pub fn root_flags(self) -> u32 {
        match self {
            Shape::Narrow => 0,
            Shape::Wide => ROOT_WIDE,
            Shape::BigRoot => ROOT_WIDE | ROOT_BIG,
        }
    }

    /// The shape a `TG_ROOTS` entry's flags name.
    pub fn of_root(entry: u32) -> Shape {
        match (entry & ROOT_WIDE != 0, entry & ROOT_BIG != 0) {
            (false, _) => Shape::Narrow,
            (true, false) => Shape::Wide,
            (true, true) => Shape::BigRoot,
        }
    }

    /// Words of its root.
    pub fn root_words(self) -> u32 {
        1 << self.root_stride()
    }

    /// Words of its nodes below the root, which its base is a multiple of
    /// (the walk masks a child's offset to the node size, which keeps a
    /// read inside the slot).
    pub fn node_words(self) -> u32 {
        1 << self.stride()
    }

    /// The next form with fewer words.
    fn smaller(self) -> Option<Shape> {
        match self {
            Shape::Narrow => None,
            Shape::Wide => Some(Shape::Narrow),
            Shape::BigRoot => Some(Shape::Wide),
        }
    }
}

/// A trie in place: its tree, its words (children relative to `base`) and
/// its base, in words from the slot's first (a multiple of a node: every
/// trie is whole nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedTrie {
    pub family: u8,
    pub tree: u32,
    pub base: u32,
    /// Its form: the base is a multiple of its nodes' words.
    pub shape: Shape,
    /// Shared with the image of the slot it was built for, so that an
    /// unchanged group's trie is kept without copying.
    pub words: Arc<[u32]>,
}

/// What a slot's share of `TG_TRIE` and `TG_ROOTS` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlatImage {
    /// Sorted by (family, tree).
    pub tries: Vec<PlacedTrie>,
    /// The slot's `TG_ROOTS` entries (absolute indices of 16-word units,
    /// with the flags of the trie's [`Shape`]), [`ROOTS_PER_SLOT`] of them;
    /// empty for a slot not known yet (after a restart).
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
/// `shape`, its children byte offsets from its first word.
pub fn build(prefixes: &mut [Prefix], shape: Shape) -> Result<Vec<u32>> {
    let (root_stride, stride) = (shape.root_stride(), shape.stride());
    let node_words = 1usize << stride;
    prefixes.sort_by_key(|p| p.len);
    let mut words = vec![leaf_word(TRIE_NONE); shape.root_words() as usize];
    for p in prefixes.iter() {
        if p.payload >= TRIE_NONE {
            bail!("trie payload {} does not fit 31 bits", p.payload);
        }
        let len = u32::from(p.len);
        let (mut node, mut pos, mut width) = (0usize, 0u32, root_stride);
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
                if child + node_words > TRIE_WORDS_PER_SLOT as usize {
                    bail!("a trie of {child} words cannot grow");
                }
                words.extend(std::iter::repeat_n(word, node_words));
                words[node + index] = child_word(child as u32 / NODE_WORDS);
                child
            };
            pos += width;
            width = stride;
        }
    }
    Ok(words)
}

/// What a slot's tries may take: `words` of `TG_TRIE`, and the largest
/// [`Shape`] a trie may have.
#[derive(Clone, Copy, Debug)]
pub struct TrieRoom {
    pub words: u32,
    pub largest: Shape,
}

/// A new trie in each shape up to the largest allowed that fits a slot at
/// all (`forms[shape as usize]`; narrow always).
struct Built {
    family: u8,
    tree: u32,
    forms: Vec<Arc<[u32]>>,
}

impl Built {
    fn new(family: u8, tree: u32, prefixes: &mut [Prefix], largest: Shape) -> Result<Built> {
        let narrow: Arc<[u32]> = build(prefixes, Shape::Narrow)?.into();
        // A trie that is its root alone is the same in every shape.
        let root_only = narrow.len() == ROOT_WORDS as usize;
        let mut forms = vec![narrow];
        for shape in Shape::ALL.into_iter().skip(1) {
            if root_only || shape > largest {
                break;
            }
            match build(prefixes, shape) {
                Ok(words) => forms.push(words.into()),
                Err(_) => break,
            }
        }
        Ok(Built {
            family,
            tree,
            forms,
        })
    }

    /// The largest shape built.
    fn largest(&self) -> Shape {
        Shape::ALL[self.forms.len() - 1]
    }

    /// The trie unplaced, in `shape` (built).
    fn placed(&self, shape: Shape) -> PlacedTrie {
        PlacedTrie {
            family: self.family,
            tree: self.tree,
            base: 0,
            shape,
            words: self.forms[shape as usize].clone(),
        }
    }

    /// Words `shape` takes beyond the next smaller one.
    fn extra_words(&self, shape: Shape) -> usize {
        shape.smaller().map_or(0, |smaller| {
            self.forms[shape as usize]
                .len()
                .saturating_sub(self.forms[smaller as usize].len())
        })
    }
}

/// Places `tries` (sorted by key) within `capacity` words: where `current`
/// has them if they can stay, else first fit; else (fragmented) the slot
/// laid out anew, one trie after the other. False if they do not fit.
fn fit(tries: &mut [PlacedTrie], current: &FlatImage, capacity: u32) -> bool {
    if place(tries, current, capacity) {
        return true;
    }
    let mut next = 0u64;
    for t in tries.iter_mut() {
        next = next.next_multiple_of(u64::from(alignment(t)));
        t.base = next as u32;
        next += t.words.len() as u64;
    }
    next <= u64::from(capacity)
}

/// Words a trie's base is a multiple of: its nodes'.
fn alignment(t: &PlacedTrie) -> u32 {
    t.shape.node_words()
}

/// What the program's walk finds for `addr` in `words`, a trie of
/// `shape`: the same steps as `classify.rs`, for tests.
pub fn walk(words: &[u32], shape: Shape, family_bits: u32, addr: u128) -> u32 {
    let stride = shape.stride();
    let (mut node, mut pos, mut width) = (0usize, 0u32, shape.root_stride());
    loop {
        let word = words[node + bits(addr, pos, width) as usize];
        if word & TRIE_CHILD == 0 {
            return leaf_payload(word);
        }
        pos += width;
        width = stride;
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
    // Asked once per group, not once per destination: with 10^5
    // destinations, asking each cost a one-line edit's install 1-2 ms.
    let mut kept_tree: Vec<Option<bool>> = vec![None; 1 << 16];
    for ((len, key), head) in &image.destinations {
        let group = u16::from_be_bytes(key.group);
        let tree = u32::from(group);
        if *kept_tree[usize::from(group)].get_or_insert_with(|| kept(tree)) {
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
    /// holds moves as little as possible within the `room`. The groups'
    /// trees `kept` says have the destinations they had in `current` keep
    /// their tries from there, unbuilt.
    pub fn build(
        slot: u8,
        image: &SlotImage,
        current: &FlatImage,
        kept: &dyn Fn(u32) -> bool,
        room: TrieRoom,
    ) -> Result<Self> {
        let capacity = room.words;
        let kept_tries: Vec<PlacedTrie> = current
            .tries
            .iter()
            .filter(|t| t.tree != DEVICE_TREE && kept(t.tree))
            .cloned()
            .collect();
        let mut built = Vec::new();
        for ((family, tree), mut prefixes) in trees(image, kept) {
            built.push(Built::new(family, tree, &mut prefixes, room.largest)?);
        }
        // The largest shape wherever the slot has room (its words are
        // allocated either way): while the tries do not fit, the new trie
        // whose shape takes the most words more than the next smaller one
        // takes that one. A big root is not worth moving the other tries:
        // while a new trie has one, the tries must fit in the slot's gaps
        // (`place`); only wide and narrow ones may lay the slot out anew
        // (`fit`), which rewrites it whole.
        let mut shapes: Vec<Shape> = built.iter().map(Built::largest).collect();
        let tries = loop {
            let mut tries = kept_tries.clone();
            tries.extend(built.iter().zip(&shapes).map(|(b, &s)| b.placed(s)));
            tries.sort_by_key(|t| (t.family, t.tree));
            let big_roots = shapes.contains(&Shape::BigRoot);
            let fits = if big_roots {
                place(&mut tries, current, capacity)
            } else {
                fit(&mut tries, current, capacity)
            };
            if fits {
                break tries;
            }
            let costliest = (0..built.len())
                .filter(|&i| shapes[i] != Shape::Narrow)
                .filter(|&i| !big_roots || shapes[i] == Shape::BigRoot)
                .max_by_key(|&i| built[i].extra_words(shapes[i]));
            match costliest {
                Some(i) => shapes[i] = shapes[i].smaller().unwrap_or(Shape::Narrow),
                None => {
                    let need: usize = tries.iter().map(|t| t.words.len()).sum();
                    bail!(
                        "the policy's tries need {need} words of TG_TRIE, a slot holds {capacity}"
                    );
                }
            }
        };
        let mut roots = vec![NO_TRIE; ROOTS_PER_SLOT as usize];
        let slot_base = u32::from(slot) * TRIE_NODES_PER_SLOT;
        for t in &tries {
            let family = if t.family == FAMILY_V4 { 0 } else { 1 };
            roots[(family * TREES_PER_FAMILY + t.tree) as usize] =
                (slot_base + t.base / NODE_WORDS) | t.shape.root_flags();
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
            Some(c) if t.words.len() <= c.words.len() && c.base.is_multiple_of(alignment(t)) => {
                t.base = c.base;
                taken.push((c.base, c.base + t.words.len() as u32));
            }
            _ => homeless.push(i),
        }
    }
    taken.sort_unstable();
    for i in homeless {
        let len = tries[i].words.len() as u64;
        let align = u64::from(alignment(&tries[i]));
        let mut start = 0u64;
        let mut at = taken.len();
        for (j, &(lo, hi)) in taken.iter().enumerate() {
            if u64::from(lo) >= start + len {
                at = j;
                break;
            }
            start = start.max(u64::from(hi)).next_multiple_of(align);
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
    use tollgate_common::Destination;

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
            shape in 0usize..3,
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
            let shape = Shape::ALL[shape];
            let words = build(&mut prefixes.clone(), shape).unwrap();
            for (raw, near, flip) in probes {
                // Probe near a prefix: its address with a few low bits changed.
                let addr = match prefixes.get(near) {
                    Some(p) => p.addr ^ (u128::from(flip) << (128 - family_bits)),
                    None => raw,
                } & mask;
                prop_assert_eq!(walk(&words, shape, family_bits, addr), naive(&prefixes, addr));
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
        assert_eq!(build(&mut v4, Shape::Narrow).unwrap().len(), 256 + 6 * 16);
        let mut v6 = vec![Prefix {
            addr: 1,
            len: 128,
            payload: 1,
        }];
        assert_eq!(build(&mut v6, Shape::Narrow).unwrap().len(), 256 + 30 * 16);
        // Wide: three 256-word nodes for the /32, fifteen for the /128.
        assert_eq!(build(&mut v4, Shape::Wide).unwrap().len(), 256 + 3 * 256);
        assert_eq!(build(&mut v6, Shape::Wide).unwrap().len(), 256 + 15 * 256);
        // A big root: one node less each.
        let big = 1 << 16;
        assert_eq!(build(&mut v4, Shape::BigRoot).unwrap().len(), big + 2 * 256);
        assert_eq!(
            build(&mut v6, Shape::BigRoot).unwrap().len(),
            big + 14 * 256
        );
    }

    #[test]
    fn tries_take_the_largest_shape_the_slot_has_room_for() {
        // Group 1: 200 IPv4 /32s, each under its own second byte.
        let mut image = SlotImage::default();
        for i in 0..200u32 {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&[10, i as u8, 7, 1]);
            let key = Destination {
                slot: 0,
                family: FAMILY_V4,
                group: 1u16.to_be_bytes(),
                addr,
            };
            image
                .destinations
                .push(((DESTINATION_HEADER_BITS + 32, key), i));
        }
        let none = FlatImage::default();
        let build_in = |words, largest| {
            let room = TrieRoom { words, largest };
            FlatImage::build(0, &image, &none, &|_| false, room)
        };
        let fresh = |words| build_in(words, Shape::BigRoot);
        // A big root, then a node for bits 16-23 and one for bits 24-31
        // per /32.
        let big_words = (1 << 16) + 200 * 2 * 256;
        let roomy = fresh(TRIE_WORDS_PER_SLOT).unwrap();
        assert_eq!(roomy.tries[0].shape, Shape::BigRoot);
        assert_eq!(roomy.words(), big_words);
        assert_eq!(
            roomy.roots[1],
            ROOT_WIDE | ROOT_BIG,
            "the root's node, flagged"
        );
        // Wide: the root, a node for bits 8-15, then two nodes per /32.
        let wide_words = 256 + 256 + 200 * 2 * 256;
        let snug = fresh(big_words as u32 - 1).unwrap();
        assert_eq!(snug.tries[0].shape, Shape::Wide);
        assert_eq!(snug.words(), wide_words);
        assert_eq!(snug.roots[1], ROOT_WIDE);
        // Narrow: the root, a node for bits 8-11 and one for bits 12-15 of
        // each of the 13 high nibbles of the second byte, then four nodes
        // per /32.
        let narrow_words = 256 + 16 + 13 * 16 + 200 * 4 * 16;
        let tight = fresh(narrow_words as u32).unwrap();
        assert_eq!(tight.tries[0].shape, Shape::Narrow);
        assert_eq!(tight.words(), narrow_words);
        assert_eq!(tight.roots[1], 0);
        let err = fresh(narrow_words as u32 - 16).unwrap_err().to_string();
        assert!(err.contains(&format!("need {narrow_words} words")), "{err}");
        // Smaller by choice, with all the room there is.
        let wide = build_in(TRIE_WORDS_PER_SLOT, Shape::Wide).unwrap();
        assert_eq!(wide.tries[0].shape, Shape::Wide);
        assert_eq!(wide.words(), wide_words);
        let narrow = build_in(TRIE_WORDS_PER_SLOT, Shape::Narrow).unwrap();
        assert_eq!(narrow.tries[0].shape, Shape::Narrow);
        assert_eq!(narrow.words(), narrow_words);
    }

    #[test]
    fn a_new_trie_gives_up_its_big_root_rather_than_move_the_others() {
        let destination = |group: u16, a: [u8; 4], i| {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&a);
            let key = Destination {
                slot: 0,
                family: FAMILY_V4,
                group: group.to_be_bytes(),
                addr,
            };
            ((DESTINATION_HEADER_BITS + 32, key), i)
        };
        let mut image = SlotImage::default();
        for i in 0..200u32 {
            image
                .destinations
                .push(destination(1, [10, i as u8, 7, 1], i));
        }
        let first = FlatImage::build(0, &image, &FlatImage::default(), &|_| false, {
            TrieRoom {
                words: TRIE_WORDS_PER_SLOT,
                largest: Shape::BigRoot,
            }
        })
        .unwrap();
        assert_eq!(first.tries[0].shape, Shape::BigRoot);
        // Group 2 joins with a /32 (wide: a root and three nodes), in a
        // slot with room for it wide after group 1 but not for a big root:
        // it goes wide, and group 1 stays where it is.
        image.destinations.push(destination(2, [10, 9, 9, 9], 7));
        let room = TrieRoom {
            words: (first.words() + 4 * 256) as u32,
            largest: Shape::BigRoot,
        };
        let next = FlatImage::build(0, &image, &first, &|tree| tree == 1, room).unwrap();
        assert_eq!(next.tries[0], first.tries[0], "group 1 kept in place");
        assert_eq!(next.tries[1].shape, Shape::Wide);
        assert_eq!(next.tries[1].base as usize, first.words());
    }

    #[test]
    fn unchanged_tries_stay_and_new_ones_take_the_first_gap() {
        let trie = |tree, len| PlacedTrie {
            family: FAMILY_V4,
            tree,
            base: 0,
            shape: Shape::Narrow,
            words: vec![0; len].into(),
        };
        let mut first = vec![trie(1, 304), trie(2, 304), trie(3, 304)];
        assert!(place(&mut first, &FlatImage::default(), 1000));
        let current = FlatImage {
            tries: first,
            roots: Vec::new(),
        };
        // Tree 1 stays; tree 2 goes; tree 3 grows and moves to the first
        // gap that fits, tree 4 (new) after it.
        let mut next = vec![trie(1, 304), trie(3, 320), trie(4, 256)];
        assert!(place(&mut next, &current, 2000));
        let bases: Vec<u32> = next.iter().map(|t| t.base).collect();
        assert_eq!(bases, vec![0, 304, 624]);
        // A wide trie starts at a multiple of its nodes' 256 words: in the
        // gap 304..912, at 512, not 304.
        let mut current = FlatImage {
            tries: vec![trie(1, 304), trie(3, 304)],
            roots: Vec::new(),
        };
        current.tries[1].base = 912;
        let mut wide = vec![trie(1, 304), trie(3, 304), trie(5, 256)];
        wide[2].shape = Shape::Wide;
        assert!(place(&mut wide, &current, 2000));
        let bases: Vec<u32> = wide.iter().map(|t| t.base).collect();
        assert_eq!(bases, vec![0, 912, 512]);
        assert!(!place(&mut next, &current, 700));
    }
}
