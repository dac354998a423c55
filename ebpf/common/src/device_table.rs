//! The exact device table: each device address's group by at most two
//! array lookups (precedence step 4), in place of a kernel hash map.
//!
//! # Structure
//! `TG_DEV_EXACT` is an `Array` of 64-byte buckets (one cache line, one
//! array element each; memory-mappable like `TG_TRIE`, so the controller
//! writes it with plain stores). Per slot, an IPv4 table, then an IPv6
//! table, of as many buckets as the program's constant
//! [`GLOBAL_DEVICE_BUCKETS`] says (the controller sets it at load, from
//! `limits.device-addresses`). An address lives in one of its two buckets
//! ([`device_buckets`] of [`device_hash`]: two-choice, "cuckoo" hashing; the
//! controller moves entries between their two buckets to make room).
//! - An IPv4 bucket holds [`V4_PER_BUCKET`] = 8 entries: words 0–7 the
//!   addresses (the address as a big-endian `u32`), words 8–15 their
//!   groups.
//! - An IPv6 bucket holds [`V6_PER_BUCKET`] = 3 entries of 5 words: the
//!   address as four big-endian `u32`s, then the group; word 15 is unused.
//!
//! A free entry has the group [`DEVICE_FREE`], 0: the unknown group, which
//! no device is in, so a zeroed table is empty.
//!
//! # Memory
//! Tables are sized for `limits.device-addresses` = L per slot at a load of
//! at most 80 % ([`device_table_buckets`]): ⌈L / 6.4⌉ IPv4 and ⌈L / 2.4⌉
//! IPv6 buckets of 64 bytes, 36.7 bytes per device a slot (both families
//! sized for all L), 35 MiB a slot at L = 2^20, against about 100 bytes per
//! device a slot for the kernel hash map it replaces.
//!
//! # Accesses
//! One multiplication for an IPv4 address's hash, two side by side for an
//! IPv6 address's, then one or two `TG_DEV_EXACT` reads
//! (the second only on a miss in the first), each inlined by the verifier
//! into a bounds check and an address computation: at most 2 memory
//! accesses, whatever the number of devices.

/// The program's constant holding the buckets of one slot's IPv4 and IPv6
/// tables (`[u32; 2]`), which the controller sets as it loads the program.
pub const GLOBAL_DEVICE_BUCKETS: &str = "TG_DEVICE_BUCKETS";

/// Entries of an IPv4 bucket.
pub const V4_PER_BUCKET: usize = 8;
/// Entries of an IPv6 bucket.
pub const V6_PER_BUCKET: usize = 3;
/// Words of an IPv6 entry: the address, then the group.
pub const V6_ENTRY_WORDS: usize = 5;
/// The group of a free entry (and what a lookup returns for an address
/// the table does not have): [`crate::UNKNOWN_GROUP`].
pub const DEVICE_FREE: u32 = crate::UNKNOWN_GROUP;

/// The highest load a table is sized for, in tenths.
const LOAD_TENTHS: u64 = 8;

/// Buckets of the IPv4 and IPv6 tables of one slot sized for `addresses`
/// devices of either family; at least one each.
pub const fn device_table_buckets(addresses: u32) -> (u32, u32) {
    (
        buckets_for(addresses, V4_PER_BUCKET),
        buckets_for(addresses, V6_PER_BUCKET),
    )
}

const fn buckets_for(addresses: u32, per_bucket: usize) -> u32 {
    let n = (addresses as u64 * 10).div_ceil(per_bucket as u64 * LOAD_TENTHS);
    if n == 0 { 1 } else { n as u32 }
}

/// Entries of `TG_DEV_EXACT` (buckets, both slots) for `addresses`
/// devices a slot.
pub const fn device_table_entries(addresses: u32) -> u32 {
    let (v4, v6) = device_table_buckets(addresses);
    crate::SLOTS * (v4 + v6)
}

/// The hash of an address given as its big-endian halves (an IPv4 address
/// in the top 32 bits of `hi`, `lo` 0). Devices are the operator's, not an
/// attacker's, so a keyed hash buys nothing; a lookup costs at most two
/// buckets whatever the address.
///
/// An IPv4 address is one multiplication: the 32-bit address times a
/// 64-bit odd constant, whose product's halves are two multiplicative
/// hashes of it, one per bucket ([`device_buckets`]). An IPv6 address is
/// one multiplication of each half, side by side, their xor folded so
/// that each half of the hash depends on every bit of the address. Each
/// multiplication in a row is a few cycles on the chain from the address to
/// the bucket's load.
#[inline(always)]
pub fn device_hash(ipv6: bool, hi: u64, lo: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    if !ipv6 {
        return (hi >> 32).wrapping_mul(K);
    }
    let h = (hi ^ 0x2545_f491_4f6c_dd1d).wrapping_mul(K) ^ lo.wrapping_mul(K2);
    h ^ (h >> 32)
}

/// The two buckets, of a table of `buckets`, where the address of `hash`
/// may be: each half of the hash scaled to the table (multiply and shift,
/// no division).
#[inline(always)]
pub fn device_buckets(hash: u64, buckets: u32) -> (u32, u32) {
    let n = buckets as u64;
    (
        (((hash & 0xffff_ffff) * n) >> 32) as u32,
        (((hash >> 32) * n) >> 32) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_their_limit_at_the_sized_load() {
        let (v4, v6) = device_table_buckets(1 << 20);
        assert!(v4 as usize * V4_PER_BUCKET * 8 >= (1 << 20) * 10);
        assert!(v6 as usize * V6_PER_BUCKET * 8 >= (1 << 20) * 10);
        assert_eq!(device_table_buckets(0), (1, 1));
    }

    #[test]
    fn buckets_are_in_the_table() {
        for i in 0..10_000u64 {
            let (a, b) = device_buckets(device_hash(i % 2 == 0, i << 32, i), 7);
            assert!(a < 7 && b < 7);
        }
    }
}
