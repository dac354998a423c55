//! The flat classifier's walker: the longest prefix of a trie that covers
//! an address, by array lookups only (precedence steps 4 and 6), and the
//! exact device table's lookup (step 4, `tollgate_common::device_table`:
//! at most two 64-byte buckets).
//!
//! # Structure
//! A multibit trie per (slot, family, tree) in `TG_TRIE`, as
//! `tollgate_common::classifier` lays it out: 16-word nodes (64 bytes, one
//! cache line per read); a trie's root is 16 consecutive
//! nodes indexed by the first address byte, every other node is indexed by
//! the next 4 bits. A word is a child (bit 31, node offset from the trie's
//! base) or a leaf (the payload of the longest covering prefix, pushed down
//! by the controller, or `TRIE_NONE`). `TG_ROOTS` holds each trie's base.
//!
//! # Memory
//! 16 + N nodes of 64 bytes per trie, N ≤ P·⌈(L − 8)/4⌉ inner nodes for P
//! prefixes of length ≤ L: at most 6 nodes (384 bytes) per IPv4 prefix and
//! 30 per IPv6 prefix; `TG_TRIE` holds `TRIE_NODES_PER_SLOT` nodes per slot.
//!
//! # Accesses
//! One `TG_ROOTS` read and one `TG_TRIE` lookup (the slot's words, one
//! value), then at most 7 (IPv4) or 31 (IPv6) dependent word reads, each a
//! load at a masked index: no map lookup per level (a lookup per level
//! cost about 4–5 ns a level, BENCHMARKS.md). The walk ends at the first
//! leaf.

use tollgate_common::{
    DEVICE_FREE, FAMILY_V4, NO_TRIE, NODE_WORDS, ROOT_STRIDE, ROOTS_PER_SLOT, STRIDE, TRIE_CHILD,
    TRIE_NODES_PER_SLOT, TRIE_NONE, TRIE_WORDS_PER_SLOT, V4_PER_BUCKET, V6_ENTRY_WORDS,
    V6_PER_BUCKET, device_buckets, device_hash, root_index,
};

use crate::maps::{TG_DEV_EXACT, TG_ROOTS, TG_SETTINGS, TG_TRIE};

/// The payload of the longest prefix of trie (`slot`, `family`, `tree`)
/// that covers `addr`, or `TRIE_NONE`.
#[inline(always)]
pub fn longest_match(slot: u32, family: u8, tree: u32, addr: &[u8; 16]) -> u32 {
    let [hi, lo] = halves(addr);
    tollgate_trie_walk(root_index(slot, family, tree), hi, lo)
}

/// An address as big-endian halves, the scalars the global functions take:
/// bit 0 of the address is the top bit of the first.
#[inline(always)]
pub fn halves(addr: &[u8; 16]) -> [u64; 2] {
    [
        u64::from_be_bytes([
            addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
        ]),
        u64::from_be_bytes([
            addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
        ]),
    ]
}

/// The walk itself, a global function (a BPF-to-BPF call with scalar
/// arguments, which the verifier checks once, on its own, rather than at
/// every call in every hook's paths): inlined into each hook twice, its
/// unrolled loop would pass both the hooks' 512-byte stack and the
/// verifier's budget.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tollgate_trie_walk(root: u32, hi: u64, lo: u64) -> u32 {
    let Some(&base) = TG_ROOTS.get(root) else {
        return TRIE_NONE;
    };
    if base == NO_TRIE {
        return TRIE_NONE;
    }
    // The slot's words, looked up once; every read below is an index into
    // them, masked into the slot (a word outside the trie only ever comes
    // from a broken trie, and then a wrong leaf is all it can give).
    let Some(words) = TG_TRIE.get_ptr(root / ROOTS_PER_SLOT) else {
        return TRIE_NONE;
    };
    let words = words as *const u32;
    let word_at = |node: u32, index: u64| -> u32 {
        let at = (node.wrapping_mul(NODE_WORDS) as u64).wrapping_add(index);
        // SAFETY: masked into the value, which is TRIE_WORDS_PER_SLOT words.
        unsafe { *words.add((at & u64::from(TRIE_WORDS_PER_SLOT - 1)) as usize) }
    };
    // A root is 16 consecutive nodes: the first byte indexes its words.
    let base = base & (TRIE_NODES_PER_SLOT - 1);
    let mut word = word_at(base, hi >> (64 - ROOT_STRIDE));
    // The bits after the root's, at the top; `lo` once `hi` is used up.
    // An IPv4 trie has no node past bit 32 (the controller builds none),
    // so its walk ends at a leaf before that.
    let mut rest = hi << ROOT_STRIDE;
    for _ in 0..(64 - ROOT_STRIDE) / STRIDE {
        if word & TRIE_CHILD == 0 {
            return word;
        }
        word = word_at(base.wrapping_add(word & !TRIE_CHILD), rest >> (64 - STRIDE));
        rest <<= STRIDE;
    }
    let mut rest = lo;
    for _ in 0..64 / STRIDE {
        if word & TRIE_CHILD == 0 {
            return word;
        }
        word = word_at(base.wrapping_add(word & !TRIE_CHILD), rest >> (64 - STRIDE));
        rest <<= STRIDE;
    }
    if word & TRIE_CHILD == 0 {
        word
    } else {
        TRIE_NONE
    }
}

/// The group of the exact device address `addr` of `family` in `slot`, or
/// `DEVICE_FREE`.
#[inline(always)]
pub fn exact_device(slot: u32, family: u8, addr: &[u8; 16]) -> u32 {
    let [hi, lo] = halves(addr);
    tollgate_exact_device(slot << 1 | u32::from(family != FAMILY_V4), hi, lo)
}

/// The lookup itself, a global function with scalar arguments like the trie
/// walk. `table` is the slot (bits 1..) and the family (bit 0: IPv6).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tollgate_exact_device(table: u32, hi: u64, lo: u64) -> u32 {
    let Some(settings) = TG_SETTINGS.get(0) else {
        return DEVICE_FREE;
    };
    let (v4, v6) = (settings.device_buckets_v4, settings.device_buckets_v6);
    let ipv6 = table & 1 != 0;
    let (base, buckets) = if ipv6 {
        ((table >> 1) * (v4 + v6) + v4, v6)
    } else {
        ((table >> 1) * (v4 + v6), v4)
    };
    let (first, second) = device_buckets(device_hash(hi, lo), buckets);
    let words = [(hi >> 32) as u32, hi as u32, (lo >> 32) as u32, lo as u32];
    for bucket in [first, second] {
        let Some(b) = TG_DEV_EXACT.get(base.wrapping_add(bucket)) else {
            return DEVICE_FREE;
        };
        if ipv6 {
            for e in 0..V6_PER_BUCKET {
                let at = e * V6_ENTRY_WORDS;
                if b[at] == words[0]
                    && b[at + 1] == words[1]
                    && b[at + 2] == words[2]
                    && b[at + 3] == words[3]
                    && b[at + 4] != DEVICE_FREE
                {
                    return b[at + 4];
                }
            }
        } else {
            for e in 0..V4_PER_BUCKET {
                if b[e] == words[0] && b[V4_PER_BUCKET + e] != DEVICE_FREE {
                    return b[V4_PER_BUCKET + e];
                }
            }
        }
    }
    DEVICE_FREE
}
