//! Learned destinations ([`tollgate_common::precedence`] step 12): what the
//! gateway's DNS forwarder installed for a group's FQDN rules, consulted
//! only where no rule of the group is a candidate, so a rule, and above all
//! a deny or reject rule, always wins over a learned address.

use aya_ebpf::{btf_maps::HashMap, helpers::bpf_ktime_get_coarse_ns, macros::btf_map};
use tollgate_common::{
    LEARNED_ENTRIES, LEARNED_RULES, LearnedKey, LearnedValue, RULE_ANY_PROTO, RULE_PORTS,
};

use crate::parse::Packet;

#[btf_map]
pub static TG_LEARNED: HashMap<LearnedKey, LearnedValue, { LEARNED_ENTRIES as usize }> =
    HashMap::new();

/// The counter of the first unexpired learned entry of `group` for the
/// packet's destination whose protocol and ports match, if any.
#[inline(always)]
pub fn learned_counter(slot: u32, group: u32, p: &Packet) -> Option<u32> {
    let key = LearnedKey {
        slot: slot as u8,
        family: p.family,
        group: group as u16,
        addr: p.dst,
    };
    let value = TG_LEARNED.get_ptr(key)?;
    // SAFETY: a map value, read in place (a copy would not fit the BPF
    // stack); the controller may rewrite it concurrently, and a torn read
    // can only match or miss one entry.
    let value: &LearnedValue = unsafe { &*value };
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions. Coarse: a few
    // ms against TTLs of seconds, on the clock the controller writes with.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    for i in 0..LEARNED_RULES {
        let e = &value.rules[i];
        let (expires_ns, flags, proto) = (e.expires_ns, e.flags, e.proto);
        // step 12: an entry lives until its expiry (TTL plus grace)
        if expires_ns <= now {
            continue;
        }
        // step 12: the FQDN rule's protocol and ports, as in step 7
        if flags & RULE_ANY_PROTO == 0 && proto != p.proto {
            continue;
        }
        if flags & RULE_PORTS != 0
            && !(p.port_known && e.port_lo <= p.dport && p.dport <= e.port_hi)
        {
            continue;
        }
        return Some(e.counter);
    }
    None
}
