//! `TG_LEARNED_BITS`: a bit for every address in `TG_LEARNED`
//! (`tollgate_common::learned_bit`), which the program reads before it
//! looks a destination up there. The rule that keeps the program from
//! missing a learned address: a bit is set before its address is written,
//! and cleared only when no entry with that bit is left.

use anyhow::Result;
use aya::maps::{Array, MapData};
use tollgate_common::{LearnedKey, MAP_LEARNED_BITS, learned_bit};

use super::bitmap::Bitmap;

pub(super) struct LearnedBits(Bitmap);

impl LearnedBits {
    /// The map as it is, which a previous run may have left (pinned).
    pub(super) fn new(map: Array<MapData, u64>) -> Result<LearnedBits> {
        Ok(LearnedBits(Bitmap::new(map, MAP_LEARNED_BITS)?))
    }

    /// Sets the bit of `key`'s address, before `key` is written.
    pub(super) fn cover(&mut self, key: &LearnedKey) -> Result<()> {
        self.0.set(bit_of(key))
    }

    /// Clears the bits that none of `keys`, everything `TG_LEARNED` holds
    /// now, needs.
    pub(super) fn keep_only(&mut self, keys: &[LearnedKey]) -> Result<()> {
        self.0.keep_only(keys.iter().map(bit_of))
    }
}

/// The bit of `TG_LEARNED_BITS` for `key`'s address.
fn bit_of(key: &LearnedKey) -> u32 {
    let (hi, lo) = key.addr.split_at(8);
    let half = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    learned_bit(half(hi), half(lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_common::{FAMILY_V4, FAMILY_V6, LEARNED_BIT_WORDS, LEARNED_BITS_LOG2};

    /// The word of `TG_LEARNED_BITS` for `key`'s address and its bit in it.
    fn place(key: &LearnedKey) -> (usize, u64) {
        Bitmap::place(bit_of(key))
    }

    fn key(slot: u8, group: u16, family: u8, addr: [u8; 16]) -> LearnedKey {
        LearnedKey {
            slot,
            family,
            group,
            addr,
        }
    }

    #[test]
    fn an_address_has_one_place_whatever_its_slot_and_group() {
        let mut v4 = [0; 16];
        v4[..4].copy_from_slice(&[52, 94, 76, 10]);
        let a = place(&key(0, 1, FAMILY_V4, v4));
        assert_eq!(a, place(&key(1, 7, FAMILY_V4, v4)));
        assert!(a.0 < LEARNED_BIT_WORDS as usize && a.1.count_ones() == 1);
    }

    /// An IPv4 key's address bytes.
    fn v4(addr: u32) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&addr.to_be_bytes());
        bytes
    }

    /// Needs CAP_BPF: the bits live in a real array map.
    #[test]
    fn a_bit_stays_set_while_any_address_of_it_is_in_the_map() {
        crate::require_root();
        // Two addresses that share a bit, and one that does not.
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0x0a00_0000u32..)
            .find_map(|addr| {
                let at = place(&key(0, 0, FAMILY_V4, v4(addr)));
                seen.insert(at, addr).map(|first| (first, addr))
            })
            .expect("a collision among 2^32 addresses");
        let (a, b) = (key(0, 1, FAMILY_V4, v4(a)), key(1, 2, FAMILY_V4, v4(b)));
        let c = key(
            0,
            1,
            FAMILY_V6,
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        );
        assert_ne!(place(&a), place(&c));
        let map = Array::<MapData, u64>::create(LEARNED_BIT_WORDS, 0).unwrap();
        let mut bits = LearnedBits::new(map).unwrap();
        let in_kernel = |bits: &LearnedBits, k: &LearnedKey| {
            let (word, mask) = place(k);
            bits.0.map.get(&(word as u32), 0).unwrap() & mask != 0
        };
        for k in [&a, &b, &c] {
            bits.cover(k).unwrap();
        }
        // `b` and `c` stay: `a`'s bit is `b`'s too.
        bits.keep_only(&[b, c]).unwrap();
        assert!(in_kernel(&bits, &a) && in_kernel(&bits, &b) && in_kernel(&bits, &c));
        // `c` goes: its bit clears, `b`'s stays.
        bits.keep_only(&[b]).unwrap();
        assert!(in_kernel(&bits, &b) && !in_kernel(&bits, &c));
        // A controller that starts again reads what the map holds.
        let again = LearnedBits::new(bits.0.map).unwrap();
        assert_eq!(again.0.words.iter().map(|w| w.count_ones()).sum::<u32>(), 1);
        let mut again = again;
        again.keep_only(&[]).unwrap();
        assert!(again.0.words.iter().all(|&w| w == 0));
        assert!(!in_kernel(&again, &b));
    }

    #[test]
    fn addresses_spread_over_the_bits() {
        // 4,096 neighbouring IPv4 and IPv6 addresses, as a CDN's answers
        // are: they should set nearly as many bits, not pile onto a few.
        let mut bits = std::collections::HashSet::new();
        for i in 0u32..4096 {
            let v4 = v4(0x3400_0000 + i);
            let mut v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            v6[12..].copy_from_slice(&i.to_be_bytes());
            for (family, addr) in [(FAMILY_V4, v4), (FAMILY_V6, v6)] {
                let (word, mask) = place(&key(0, 0, family, addr));
                bits.insert(word as u64 * 64 + u64::from(mask.trailing_zeros()));
            }
        }
        // Random placement of 8,192 addresses into 2^18 bits leaves about
        // 8,065 distinct: allow a little worse than random, not much.
        assert_eq!(LEARNED_BITS_LOG2, 18);
        assert!(bits.len() > 7_900, "{} distinct bits", bits.len());
    }
}
