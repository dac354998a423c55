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
