//! Learned destinations ([`tollgate_common::precedence`] step 12): what the
//! gateway's DNS forwarder installed for a group's FQDN rules, consulted
//! only where no rule of the group is a candidate, so a rule, and above all
//! a deny or reject rule, always wins over a learned address.

use aya_ebpf::{
    btf_maps::{Array, HashMap},
    helpers::bpf_ktime_get_coarse_ns,
    macros::btf_map,
};
use tollgate_common::{
    LEARNED_BIT_WORDS, LEARNED_ENTRIES, LEARNED_RULES, LearnedKey, LearnedValue, RULE_ANY_PROTO,
    RULE_PORTS, learned_bit,
};

use crate::parse::Packet;

#[btf_map]
pub static TG_LEARNED: HashMap<LearnedKey, LearnedValue, { LEARNED_ENTRIES as usize }> =
    HashMap::new();

/// The bits of the learned addresses (`tollgate_common::MAP_LEARNED_BITS`).
#[btf_map]
pub static TG_LEARNED_BITS: Array<u64, { LEARNED_BIT_WORDS as usize }> = Array::new();

/// What [`tollgate_learned_counter`] returns when nothing matches: no
/// counter has this index.
const NO_MATCH: u32 = u32::MAX;

/// The counter of the first unexpired learned entry of `group` for the
/// packet's destination whose protocol and ports match, if any.
///
/// Called only for a group with FQDN rules ([`tollgate_common::GROUP_LEARNS`]):
/// only such a group can have learned addresses, and for any other neither
/// the call nor the hash lookup is made (a call and its return alone cost
/// about 6 ns on the bench machine, and every packet a group's default
/// denies would pay them). Nor for a destination whose bit in
/// `TG_LEARNED_BITS` is clear.
#[inline(always)]
pub fn learned_counter(slot: u32, group: u32, p: &Packet) -> Option<u32> {
    let [hi, lo] = p.dst.halves();
    // Never learned (bit clear): no call, no hash lookup.
    let bit = learned_bit(hi, lo);
    let word = TG_LEARNED_BITS.get(bit >> 6)?;
    if word & (1 << (bit & 63)) == 0 {
        return None;
    }
    let flow = u32::from(p.proto)
        | u32::from(p.dport) << 8
        | u32::from(p.port_known) << 24
        | u32::from(p.family) << 25;
    match tollgate_learned_counter(slot << 16 | group, hi, lo, flow) {
        NO_MATCH => None,
        counter => Some(counter),
    }
}

/// The lookup itself, a global function with scalar arguments (like the
/// trie walk): its key and loop sit on a stack of their own, not on the
/// hooks', which the decision has filled, and the verifier checks it once.
/// `slot_group` is the slot (bits 16..) and the kernel group id (bits
/// 0..16); `hi` and `lo` the destination's big-endian halves; `flow` the
/// protocol (bits 0..8), destination port (8..24), whether the port is
/// known (bit 24) and the family (25..). [`learned_counter`] calls it
/// only for a group with FQDN rules.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tollgate_learned_counter(slot_group: u32, hi: u64, lo: u64, flow: u32) -> u32 {
    let (slot, group) = (slot_group >> 16, slot_group & 0xffff);
    let (proto, dport, port_known) = (flow as u8, (flow >> 8) as u16, flow & 1 << 24 != 0);
    let mut addr = [0u8; 16];
    addr[..8].copy_from_slice(&hi.to_be_bytes());
    addr[8..].copy_from_slice(&lo.to_be_bytes());
    let key = LearnedKey {
        slot: slot as u8,
        family: (flow >> 25) as u8,
        group: group as u16,
        addr,
    };
    let Some(value) = TG_LEARNED.get_ptr(key) else {
        return NO_MATCH;
    };
    // SAFETY: a map value, read in place (a copy would not fit the BPF
    // stack); the controller may rewrite it concurrently, and a torn read
    // can only match or miss one entry.
    let value: &LearnedValue = unsafe { &*value };
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions. Coarse: a few
    // ms against TTLs of seconds, on the clock the controller writes with.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    for i in 0..LEARNED_RULES {
        let e = &value.rules[i];
        let (expires_ns, flags, rule_proto) = (e.expires_ns, e.flags, e.proto);
        // step 12: an entry lives until its expiry (TTL plus grace)
        if expires_ns <= now {
            continue;
        }
        // step 12: the FQDN rule's protocol and ports, as in step 7
        if flags & RULE_ANY_PROTO == 0 && rule_proto != proto {
            continue;
        }
        if flags & RULE_PORTS != 0 && !(port_known && e.port_lo <= dport && dport <= e.port_hi) {
            continue;
        }
        return e.counter;
    }
    NO_MATCH
}
