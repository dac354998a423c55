//! The flat classifier: longest-prefix matches by array lookups only.
//!
//! Every per-packet prefix match of the policy (the device prefix of the
//! source, precedence step 4; a group's destination prefix, step 6) is a
//! walk of a multibit trie stored in `TG_TRIE`, a plain `Array<u32>` whose
//! lookups the verifier inlines (a bounds check and an address). The
//! controller builds the tries (`userspace/src/datapath/slots/flat.rs`);
//! the program walks them (`ebpf/program/src/classify.rs`).
//!
//! # Structure
//! One trie per (slot, family, tree), where a tree is a group's
//! destinations or the slot's device prefixes, in `TG_TRIE`: per slot one
//! array value of [`TRIE_WORDS_PER_SLOT`] words, allocated in 16-word
//! units (64 bytes, a cache line). A trie's root is 2^[`ROOT_STRIDE`] = 256
//! words, indexed by the first address byte. Below it, a *narrow* trie's
//! nodes are 16 words indexed by the next [`STRIDE`] = 4 bits, a *wide*
//! trie's 256 words indexed by the next [`WIDE_STRIDE`] = 8 bits: half the
//! levels, each still one word read (one cache line). A wide trie may
//! have a *big root* instead: 2^[`BIG_ROOT_STRIDE`] = 65,536 words indexed
//! by the first two address bytes, one level less on every walk past them.
//! `TG_ROOTS` gives each trie's base (the index of its root's first
//! 16-word unit, with [`ROOT_WIDE`] for a wide trie and also [`ROOT_BIG`]
//! for a big root) or [`NO_TRIE`]. A word is either a child
//! ([`TRIE_CHILD`], the lowest bit, set; the rest is the child node's byte
//! offset from the slot's first word) or a leaf: the payload, shifted left
//! by one, of the longest prefix covering every address that reaches the
//! word (prefixes are expanded and pushed down to the leaves, "controlled
//! prefix expansion"), or [`TRIE_NONE`]. A destination leaf is the absolute
//! index of its rule list's first record in `TG_RULESETS`, a device leaf
//! the group id. The controller builds a trie with children from its own
//! first word, so that it can place it anywhere (a wide trie at a multiple
//! of its node size), and adds the trie's place as it stores the words.
//! It gives every trie the largest shape the slot has room for: a big
//! root, else wide, else narrow.
//!
//! A level of the walk is two instructions on the chain of dependent loads:
//! a mask (which clears the child bit, aligns to the node and keeps the
//! read inside the slot, for the verifier) and an add (the index within the
//! node, computed beside the load).
//!
//! # Memory
//! A narrow trie of P prefixes of length at most L takes 256 + 16·N words,
//! N ≤ P·⌈(L − 8)/4⌉ inner nodes (shared paths are stored once): at most
//! 6 nodes (384 bytes) per IPv4 prefix and 30 (1,920 bytes) per IPv6
//! prefix. A wide trie takes 256 + 256·N words, N ≤ P·⌈(L − 8)/8⌉: at most
//! 3 nodes (3 KiB) per IPv4 prefix and 15 (15 KiB) per IPv6 prefix; dense
//! prefix sets take far less (the 10⁵-prefix benchmark policy: 8–9 times
//! its narrow tries, BENCHMARKS.md). A big root takes 65,536 words (256
//! KiB) in place of the root's 256 and the wide nodes of the next 8 bits,
//! at most 256 of them: about what a wide trie of prefixes under many first
//! bytes takes anyway, and 255 times the root for a small one, so a slot
//! has room for 64 at most. The map holds [`TRIE_WORDS_PER_SLOT`]
//! words per slot (16 MiB) whatever the tries use; `TG_ROOTS` 8 bytes (a
//! `u32` in an 8-byte array element) · [`ROOTS_PER_SLOT`] per slot.
//!
//! # Accesses
//! One `TG_ROOTS` read, one `TG_TRIE` lookup (the slot's words), then the
//! root's word and one word per level: at most 1 + ⌈(L − 8)/4⌉ reads
//! narrow ([`MAX_LEVELS_V4`] = 7 for IPv4, [`MAX_LEVELS_V6`] = 31 for
//! IPv6), 1 + ⌈(L − 8)/8⌉ wide (4 and 16), 1 + ⌈(L − 16)/8⌉ under a big
//! root (3 and 15), all dependent. A walk stops at the first leaf, so a
//! policy of /24s costs an IPv4 packet at most 1 + 1 word reads under a
//! big root, whatever the rule count.

/// `Array<TrieSlot>` of [`crate::SLOTS`] entries: each slot's trie nodes,
/// [`TRIE_NODES_PER_SLOT`] of 16 words, as one value, so that a walk looks
/// the slot up once and then reads words by index (masked, so that the
/// verifier knows each read is inside the value). Memory-mappable
/// ([`TRIE_MAP_FLAGS`]): the controller writes a slot with plain stores;
/// slot s owns words `s * TRIE_WORDS_PER_SLOT ..`.
pub const MAP_TRIE: &str = "TG_TRIE";
/// `Array<u32>`: each trie's base in `TG_TRIE`, indexed by
/// [`root_index`]; memory-mappable like `TG_TRIE`.
pub const MAP_TRIE_ROOTS: &str = "TG_ROOTS";

/// `BPF_F_MMAPABLE`: `TG_TRIE` and `TG_ROOTS` are written through shared
/// mappings.
pub const TRIE_MAP_FLAGS: u32 = 1 << 10;
/// Nodes of `TG_TRIE` per slot (16 MiB).
pub const TRIE_NODES_PER_SLOT: u32 = 1 << 18;
/// Words of one node, the value of `TG_TRIE`.
pub const NODE_WORDS: u32 = 1 << STRIDE;
/// 64 bytes: a trie node, or a bucket of the exact device table.
pub type TrieNode = [u32; NODE_WORDS as usize];
/// Words of `TG_TRIE` per slot: a power of two, so that a word's index is
/// kept inside a slot by a mask.
pub const TRIE_WORDS_PER_SLOT: u32 = TRIE_NODES_PER_SLOT * NODE_WORDS;
const _: () = assert!(TRIE_WORDS_PER_SLOT.is_power_of_two());
/// The value of `TG_TRIE`: one slot's words.
pub type TrieSlot = [u32; TRIE_WORDS_PER_SLOT as usize];
/// Bits the root node consumes.
pub const ROOT_STRIDE: u32 = 8;
/// Bits every other node of a narrow trie consumes.
pub const STRIDE: u32 = 4;
/// Bits every other node of a wide trie consumes: a node of 256 words
/// (1 KiB; a read still touches one cache line), half the levels of a
/// narrow trie.
pub const WIDE_STRIDE: u32 = 8;
/// Words of a wide trie's node; a wide trie's nodes, and its base, are
/// aligned to it.
pub const WIDE_NODE_WORDS: u32 = 1 << WIDE_STRIDE;
/// Flag of a `TG_ROOTS` entry whose trie is wide. The controller makes
/// every trie wide that the slot has room for (its words are allocated
/// either way), and the new tries that take the most words more when wide
/// narrow while they do not fit.
pub const ROOT_WIDE: u32 = 1 << 30;
/// Words of a root (16 nodes).
pub const ROOT_WORDS: u32 = 1 << ROOT_STRIDE;
/// Bits a big root consumes: a wide trie with one level less, for 65,536
/// words (256 KiB) of root, which a slot has room for only for some tries.
pub const BIG_ROOT_STRIDE: u32 = 16;
/// Words of a big root.
pub const BIG_ROOT_WORDS: u32 = 1 << BIG_ROOT_STRIDE;
/// Flag of a `TG_ROOTS` entry, beside [`ROOT_WIDE`], whose wide trie has a
/// big root ([`BIG_ROOT_STRIDE`]). The controller gives the tries big roots
/// where the slot has room, as it makes them wide, and takes them back
/// first from the tries they cost the most words.
pub const ROOT_BIG: u32 = 1 << 29;
/// The flags of a `TG_ROOTS` entry; the rest is the trie's first node.
pub const ROOT_FLAGS: u32 = ROOT_WIDE | ROOT_BIG;
/// `TG_TRIE` reads of one walk of a narrow trie, at most.
pub const MAX_LEVELS_V4: u32 = 1 + (32 - ROOT_STRIDE) / STRIDE;
pub const MAX_LEVELS_V6: u32 = 1 + (128 - ROOT_STRIDE) / STRIDE;

/// A word with this bit (the lowest) is a child: the rest of the word is
/// the child's byte offset, a multiple of [`NODE_BYTES`] ([`child_word`]);
/// a word without it is a leaf, its payload shifted left by one
/// ([`leaf_word`]). So a walk's next node is the word masked (which clears
/// the bit): no shift or sign extension on the chain of dependent loads.
pub const TRIE_CHILD: u32 = 1;
/// The payload of addresses no prefix of the trie covers; payloads are
/// below it (31 bits).
pub const TRIE_NONE: u32 = u32::MAX >> 1;
/// Bytes of one node.
pub const NODE_BYTES: u32 = NODE_WORDS * 4;
/// Bytes of one slot's words in `TG_TRIE`.
pub const TRIE_BYTES_PER_SLOT: u64 = TRIE_WORDS_PER_SLOT as u64 * 4;

/// The word of a leaf with `payload` (below [`TRIE_NONE`], or it).
#[inline(always)]
pub const fn leaf_word(payload: u32) -> u32 {
    payload << 1
}

/// The payload of a leaf word.
#[inline(always)]
pub const fn leaf_payload(word: u32) -> u32 {
    word >> 1
}

/// The word of a child `node` nodes after the first word of its trie (as
/// the controller builds it) or of its slot (as the map holds it).
#[inline(always)]
pub const fn child_word(node: u32) -> u32 {
    (node * NODE_BYTES) | TRIE_CHILD
}

/// The node offset a child word names.
#[inline(always)]
pub const fn child_node(word: u32) -> u32 {
    word / NODE_BYTES
}

/// `TG_ROOTS` value of a tree with no prefix.
pub const NO_TRIE: u32 = u32::MAX;

/// Trees per family: one per group id, then the device prefixes.
pub const TREES_PER_FAMILY: u32 = crate::MAX_GROUPS + 1;
/// The tree of the device prefixes.
pub const DEVICE_TREE: u32 = crate::MAX_GROUPS;
/// Entries of `TG_ROOTS` per slot: two families.
pub const ROOTS_PER_SLOT: u32 = 2 * TREES_PER_FAMILY;

/// The `TG_ROOTS` index of a trie.
#[inline(always)]
pub fn root_index(slot: u32, family: u8, tree: u32) -> u32 {
    let family = if family == crate::FAMILY_V4 { 0 } else { 1 };
    slot * ROOTS_PER_SLOT + family * TREES_PER_FAMILY + tree
}
