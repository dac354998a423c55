//! Learned destinations: the addresses the gateway's DNS forwarder installed
//! for a group's FQDN rules ([`crate::precedence`] step 12).
//!
//! They live outside the compiled policy tables, so they come and go by TTL
//! without a policy reload. Each key carries the slot all the same: group
//! ids and counters belong to one compiled policy, so the controller writes
//! every learned address into both slots, each with that slot's ids.

/// `HashMap<LearnedKey, LearnedValue>`: learned destinations, per slot and
/// group. A plain hash map, not an LRU: a full map refuses a new address
/// (the controller counts it) rather than silently dropping a live one.
pub const MAP_LEARNED: &str = "TG_LEARNED";
/// Entries of `TG_LEARNED`, both slots together.
pub const LEARNED_ENTRIES: u32 = 1 << 14;
/// `Array<u64>` of [`LEARNED_BIT_WORDS`]: a bit per [`learned_bit`] of the
/// addresses in `TG_LEARNED`, any slot and group. A packet a group's
/// default would decide looks its destination's bit up first and skips the
/// call and the hash lookup when the bit is clear, as it is for nearly
/// every address that was never learned: that lookup cost every such
/// packet of a group with FQDN rules (every deny of a flood) about 13 ns
/// (BENCHMARKS.md). The controller sets an address's bit before it writes
/// the address and clears bits only for addresses no longer in the map, so
/// every entry's bit is set whenever the program reads it.
pub const MAP_LEARNED_BITS: &str = "TG_LEARNED_BITS";
/// log2 of the bits of `TG_LEARNED_BITS`: 2^18 bits (32 KiB), so that
/// the [`LEARNED_ENTRIES`] addresses at most set 6.25% of them, and an
/// address never learned finds its bit set (and pays the lookup) at most
/// that often; a few hundred learned addresses, a fraction of a percent.
/// The controller reads the words once when it starts (4,096 reads).
pub const LEARNED_BITS_LOG2: u32 = 18;
/// Words of `TG_LEARNED_BITS`.
pub const LEARNED_BIT_WORDS: u32 = 1 << (LEARNED_BITS_LOG2 - 6);

/// The bit of `TG_LEARNED_BITS` for an address given as the big-endian
/// halves of its 16 key bytes (`LearnedKey::addr`; an IPv4 address is the
/// first four): a multiplicative hash, its top [`LEARNED_BITS_LOG2`] bits.
#[inline(always)]
pub const fn learned_bit(hi: u64, lo: u64) -> u32 {
    ((hi ^ lo.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - LEARNED_BITS_LOG2))
        as u32
}
/// FQDN rule entries one learned address can carry (several rules, or one
/// rule's `ports` items, may name the same address).
pub const LEARNED_RULES: usize = 4;

/// Key of `TG_LEARNED`: one destination address of one group in one slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearnedKey {
    pub slot: u8,
    pub family: u8,
    pub group: u16,
    pub addr: [u8; 16],
}

/// One FQDN rule entry that allows a learned address until `expires_ns`
/// (`CLOCK_MONOTONIC`, as `bpf_ktime_get_coarse_ns` reads it). An unused
/// entry has `expires_ns` 0 and never matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearnedRule {
    pub expires_ns: u64,
    /// Counter charged when this entry decides (the FQDN rule's).
    pub counter: u32,
    /// Inclusive destination port range; only read with [`crate::RULE_PORTS`].
    pub port_lo: u16,
    pub port_hi: u16,
    /// IP protocol number; ignored with [`crate::RULE_ANY_PROTO`].
    pub proto: u8,
    /// `RULE_ANY_PROTO` and `RULE_PORTS` bits, as in a [`crate::RuleEntry`].
    pub flags: u8,
    pub _pad: [u8; 6],
}

/// Value of `TG_LEARNED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearnedValue {
    pub rules: [LearnedRule; LEARNED_RULES],
}

crate::pod!(LearnedKey, LearnedRule, LearnedValue);

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<LearnedKey>() == 20);
    assert!(size_of::<LearnedRule>() == 24);
    assert!(size_of::<LearnedValue>() == 24 * LEARNED_RULES);
};
