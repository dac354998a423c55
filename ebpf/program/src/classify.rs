//! The flat classifier: a packet's group from its source (precedence steps
//! 4-5: the exact device table, `tollgate_common::device_table`, at most
//! two 64-byte buckets, else the longest prefix of the device trie), then
//! the head of its rule list from its destination (step 6: the longest
//! prefix of the group's trie), by array lookups only, in one call.
//!
//! # Structure
//! A multibit trie per (slot, family, tree) in `TG_TRIE`, as
//! `tollgate_common::classifier` lays it out: a 256-word root indexed by
//! the first address byte (or, a big root, 65,536 words indexed by the
//! first two), then nodes of 16 words indexed by the next 4 bits (a narrow
//! trie) or of 256 words indexed by the next 8 (a wide one); the shape is
//! flagged in its `TG_ROOTS` entry. A read is one word, one cache line. A
//! word is a child (bit 0, the node's byte offset in the slot) or a leaf
//! (the payload of the longest covering prefix, pushed down by the
//! controller, or `TRIE_NONE`, shifted left by one). `TG_ROOTS` holds each
//! trie's base.
//!
//! # Memory
//! A narrow trie 256 + 16·N words, N ≤ P·⌈(L − 8)/4⌉ inner nodes for P
//! prefixes of length ≤ L; a wide one 256 + 256·N, N ≤ P·⌈(L − 8)/8⌉;
//! under a big root 65,536 + 256·N, N ≤ P·⌈(L − 16)/8⌉. `TG_TRIE` holds
//! `TRIE_WORDS_PER_SLOT` words per slot.
//!
//! # Accesses
//! One `TG_ROOTS` read and one `TG_TRIE` lookup (the slot's words, one
//! value), then at most 7 (IPv4) or 31 (IPv6) dependent word reads narrow,
//! 4 or 16 wide, 3 or 15 under a big root (one read less on every walk
//! past the first two bytes: 8–10 ns on one packet on its own, 1–2 ns
//! looped, BENCHMARKS.md), each a load at the masked word plus the index:
//! no map lookup per level (a lookup per level cost about 4–5 ns a level,
//! BENCHMARKS.md), and two instructions between one level's load and the
//! next. The walk ends at the first leaf.

use tollgate_common::{
    BIG_ROOT_STRIDE, DEVICE_FREE, DEVICE_TREE, FAMILY_V4, FAMILY_V6, MAX_GROUPS, NO_TRIE,
    NODE_BYTES, ROOT_BIG, ROOT_STRIDE, ROOT_WIDE, ROOTS_PER_SLOT, STRIDE, TRIE_BYTES_PER_SLOT,
    TRIE_CHILD, TRIE_NODES_PER_SLOT, TRIE_NONE, UNKNOWN_GROUP, V4_PER_BUCKET, V6_ENTRY_WORDS,
    V6_PER_BUCKET, WIDE_STRIDE, device_buckets, device_hash, leaf_payload, root_index,
};

use crate::{
    maps::{TG_DEV_EXACT, TG_ROOTS, TG_TRIE},
    parse::Addr,
};

/// A packet's group (steps 4-5) and, for a known device, the head of its
/// destination's rule list in the group's trie (step 6).
pub struct Classified {
    /// `UNKNOWN_GROUP` for a device in no group.
    pub group: u32,
    /// `TRIE_NONE` when no destination prefix of the group covers the
    /// address, and for a device in no group.
    pub record: u32,
}

/// Classifies a packet of `family` from `src` to `dst` under `slot`.
#[inline(always)]
pub fn classify(slot: u32, family: u8, src: Addr, dst: Addr) -> Classified {
    let ([src_hi, src_lo], [dst_hi, dst_lo]) = (src.halves(), dst.halves());
    let table = slot << 1 | u32::from(family != FAMILY_V4);
    let packed = tollgate_classify(table, src_hi, src_lo, dst_hi, dst_lo);
    Classified {
        group: (packed >> 32) as u32,
        record: packed as u32,
    }
}

/// The lookups of [`classify`] in one global function: a BPF-to-BPF call
/// with scalar arguments, which the verifier checks once, on its own,
/// rather than at every call in every hook's paths (inlined into the
/// hooks, the walks' unrolled loops would pass both their 512-byte stack
/// and the verifier's budget). One call, not one per lookup: a call and its
/// return cost about 6 ns on the bench machine (the kernel's return thunk,
/// BENCHMARKS.md), as much as the rest of an exact device lookup. `table`
/// is the slot (bits 1..) and the family (bit 0: IPv6); the result is the
/// group (high half) and the record (low half).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tollgate_classify(
    table: u32,
    src_hi: u64,
    src_lo: u64,
    dst_hi: u64,
    dst_lo: u64,
) -> u64 {
    let slot = table >> 1;
    let family = if table & 1 == 0 { FAMILY_V4 } else { FAMILY_V6 };
    // step 4: the exact source address, else the longest device prefix,
    // else group 0
    let mut group = exact_device(table, src_hi, src_lo);
    if group == DEVICE_FREE {
        group = match longest_match(root_index(slot, family, DEVICE_TREE), src_hi, src_lo) {
            TRIE_NONE => UNKNOWN_GROUP,
            group => group,
        };
    }
    // step 5: a device in no group has no destination to look up
    let record = if group == UNKNOWN_GROUP || group >= MAX_GROUPS {
        TRIE_NONE
    } else {
        // step 6: the group's longest destination prefix containing D
        longest_match(root_index(slot, family, group), dst_hi, dst_lo)
    };
    u64::from(group) << 32 | u64::from(record)
}

/// The payload of the longest prefix of the trie at `TG_ROOTS[root]` that
/// covers the address of big-endian halves `hi` and `lo`, or `TRIE_NONE`.
#[inline(always)]
fn longest_match(root: u32, hi: u64, lo: u64) -> u32 {
    let Some(&entry) = TG_ROOTS.get(root) else {
        return TRIE_NONE;
    };
    if entry == NO_TRIE {
        return TRIE_NONE;
    }
    // The slot's words, looked up once; every read below is an index into
    // them, masked into the slot (a word outside the trie only ever comes
    // from a broken trie, and then a wrong leaf is all it can give).
    let Some(words) = TG_TRIE.get_ptr(root / ROOTS_PER_SLOT) else {
        return TRIE_NONE;
    };
    let bytes = words as *const u8;
    let base = u64::from((entry & (TRIE_NODES_PER_SLOT - 1)) * NODE_BYTES);
    // The trie's strides are the same for all its levels: one branch here,
    // none per level.
    if entry & ROOT_WIDE == 0 {
        descend::<STRIDE, ROOT_STRIDE>(bytes, base, hi, lo)
    } else if entry & ROOT_BIG == 0 {
        descend::<WIDE_STRIDE, ROOT_STRIDE>(bytes, base, hi, lo)
    } else {
        descend::<WIDE_STRIDE, BIG_ROOT_STRIDE>(bytes, base, hi, lo)
    }
}

/// A walk from the root at `base` (a byte offset in the slot's words at
/// `bytes`), whose `R` first bits index consecutive words, through nodes
/// of `S` bits.
///
/// A level is one mask and one add on the chain of dependent loads: a
/// child word is its node's byte offset in the slot with the child bit,
/// which the mask (aligned to the node, inside the slot) clears; the index
/// within the node is computed beside the load. The bits after the root's
/// are at the top of `rest`; `lo` once `hi` is used up. An IPv4 trie has no
/// node past bit 32 (the controller builds none), so its walk ends at a
/// leaf before that.
#[inline(always)]
fn descend<const S: u32, const R: u32>(bytes: *const u8, base: u64, hi: u64, lo: u64) -> u32 {
    let at = (base + ((hi >> (64 - R)) << 2)) & (TRIE_BYTES_PER_SLOT - 4);
    // SAFETY: masked into the value, which is TRIE_BYTES_PER_SLOT bytes; a
    // multiple of 4.
    let mut word = unsafe { *(bytes.add(at as usize) as *const u32) };
    let node_mask = TRIE_BYTES_PER_SLOT - (4u64 << S);
    // SAFETY: a node masked into the slot, aligned to its size, plus an
    // index below its size: inside the value, a multiple of 4.
    let read_in = |index: u64, node: u64| -> u32 {
        unsafe { *(bytes.add(index as usize).add(node as usize) as *const u32) }
    };
    let mut rest = hi << R;
    for _ in 0..(64 - R) / S {
        if word & TRIE_CHILD == 0 {
            return leaf_payload(word);
        }
        word = read_in((rest >> (64 - S)) << 2, u64::from(word) & node_mask);
        rest <<= S;
    }
    let mut rest = lo;
    for _ in 0..64 / S {
        if word & TRIE_CHILD == 0 {
            return leaf_payload(word);
        }
        word = read_in((rest >> (64 - S)) << 2, u64::from(word) & node_mask);
        rest <<= S;
    }
    if word & TRIE_CHILD == 0 {
        leaf_payload(word)
    } else {
        TRIE_NONE
    }
}

/// Buckets of one slot's IPv4 and IPv6 exact device tables: a constant of
/// the program (`tollgate_common::GLOBAL_DEVICE_BUCKETS` names it), which
/// the controller sets as it loads it (`.rodata`, frozen), sized by
/// `limits.device-addresses` as the tables are. Read as one load from a
/// fixed address, where every packet looked them up in `TG_SETTINGS`.
#[unsafe(no_mangle)]
static TG_DEVICE_BUCKETS: [u32; 2] = [1, 1];

/// The group of the exact device address of big-endian halves `hi` and
/// `lo` in `table` (as [`tollgate_classify`] takes it), or `DEVICE_FREE`.
#[inline(always)]
fn exact_device(table: u32, hi: u64, lo: u64) -> u32 {
    // SAFETY: a static; volatile, so that the compiler reads the value the
    // controller loaded, not the default it was built with.
    let (v4, v6) = unsafe {
        (
            core::ptr::read_volatile(&TG_DEVICE_BUCKETS[0]),
            core::ptr::read_volatile(&TG_DEVICE_BUCKETS[1]),
        )
    };
    let ipv6 = table & 1 != 0;
    let (base, buckets) = if ipv6 {
        ((table >> 1) * (v4 + v6) + v4, v6)
    } else {
        ((table >> 1) * (v4 + v6), v4)
    };
    let (first, second) = device_buckets(device_hash(ipv6, hi, lo), buckets);
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
