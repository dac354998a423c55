//! The policy decision for one parsed packet.
//!
//! Steps 2-11 of the precedence written in `tollgate_common::precedence`,
//! each tagged `// step N:` where it is decided (`main.rs` has step 1 and
//! the order of the steps, `classify.rs` the lookups of steps 4-6). The
//! userspace model implements steps 4-11 over the same tables and is tested
//! against this code on random policies and packets.
//!
//! The number of map lookups is bounded whatever the rule count: group, one
//! or two buckets of the exact device table (`classify.rs`), else a walk of
//! the device-prefix trie;
//! destination, a walk of the group's trie (`classify.rs`: array lookups
//! only, at most 8 for IPv4 and 32 for IPv6), then one per record of the
//! list, at most four.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use tollgate_common::{
    Allowed, DecisionReason, DeviceKey, FragmentKey, FragmentQuota, FragmentVerdict,
    GROUP_DEFAULT_DENY, GROUP_DEFAULT_REJECT, GROUP_LEARNS, GroupInfo, MAX_CHAIN, MAX_GROUPS,
    NO_RECORD, RECORD_ENTRIES, RULE_ANY_PROTO, RULE_AUDIT, RULE_BUILTIN, RULE_DENY, RULE_PORTS,
    RULE_REJECT, RuleEntry, SourceKey, Stat, TRIE_NONE, UNKNOWN_GROUP, Verdict,
};

use crate::{
    account, classify, learned,
    maps::{
        TG_ACTIVE, TG_ETHERTYPES, TG_FRAG_SRC, TG_FRAGS, TG_GATEWAY, TG_GROUPS, TG_RULESETS,
        TG_SETTINGS,
    },
    parse::Packet,
};

pub struct Decision {
    pub verdict: Verdict,
    pub reason: DecisionReason,
    /// The counter of the deciding rule or default.
    pub counter: u32,
    /// The group's counter for `verdict`.
    pub verdict_counter: u32,
}

impl Decision {
    /// What an allowed packet charged, to charge the rest of its flow or
    /// datagram the same.
    #[inline(always)]
    pub fn allowed(&self) -> Allowed {
        Allowed {
            counter: self.counter,
            allow_counter: self.verdict_counter,
        }
    }
}

/// The policy generation in force; its low bit is the slot.
#[inline(always)]
pub fn generation() -> u32 {
    TG_ACTIVE.get(0).copied().unwrap_or(0)
}

#[inline(always)]
pub fn decide(generation: u32, p: &Packet) -> Decision {
    let slot = generation & 1;
    let classified = classify::classify(slot, p.family, p.src, p.dst);
    // step 5: an unknown device has no record, no rule applies
    match matching_rule(classified.record, p) {
        // step 11: the entry carries its verdict after audit mode, and its
        // group's total for it: no read of the group
        Some(e) => Decision {
            verdict: if e.flags & RULE_AUDIT != 0 {
                Verdict::AuditDeny
            } else if e.flags & RULE_DENY != 0 {
                Verdict::Deny
            } else if e.flags & RULE_REJECT != 0 {
                Verdict::Reject
            } else {
                Verdict::Allow
            },
            reason: if e.flags & RULE_BUILTIN != 0 {
                // step 8: the built-in NTP allow won
                DecisionReason::BuiltinNtp
            } else {
                DecisionReason::Rule
            },
            counter: e.counter,
            verdict_counter: e.verdict_counter,
        },
        None => by_group(slot, classified.group, p),
    }
}

/// The decision where no rule is a candidate: a learned address (step 12),
/// else the group's default (step 10), in audit mode (step 11).
#[inline(always)]
fn by_group(slot: u32, group_id: u32, p: &Packet) -> Decision {
    // A group id no trie holds (a broken trie) is group 0's.
    let group_id = if group_id < MAX_GROUPS {
        group_id
    } else {
        UNKNOWN_GROUP
    };
    // One read of the group's entry, for the flags, the default and the
    // totals alike.
    let group = group_info(slot, group_id);
    // step 5: never group 0's; only a group with FQDN rules learns
    if group_id != UNKNOWN_GROUP
        && group.flags & GROUP_LEARNS != 0
        && let Some(counter) = learned::learned_counter(slot, group_id, p)
    {
        // step 12: no candidate, but an address learned for an FQDN rule
        return Decision {
            verdict: Verdict::Allow,
            reason: DecisionReason::Learned,
            counter,
            verdict_counter: group.allow_counter,
        };
    }
    // step 10: no candidate, the group's default; step 11: in audit mode
    let verdict = group.audited(if group.flags & GROUP_DEFAULT_DENY != 0 {
        Verdict::Deny
    } else if group.flags & GROUP_DEFAULT_REJECT != 0 {
        Verdict::Reject
    } else {
        Verdict::Allow
    });
    Decision {
        verdict,
        reason: if group_id == UNKNOWN_GROUP {
            // step 5: group 0's default is `unknown-devices`
            DecisionReason::UnknownDevice
        } else {
            DecisionReason::GroupDefault
        },
        counter: group.default_counter,
        verdict_counter: group.total(verdict),
    }
}

/// The entry of `group_id`, below `MAX_GROUPS`.
#[inline(always)]
fn group_info(slot: u32, group_id: u32) -> GroupInfo {
    TG_GROUPS
        .get(slot * MAX_GROUPS + group_id)
        .copied()
        .unwrap_or_default()
}

/// The first entry of the rule list from `head` (step 6's record, found by
/// `classify`) that matches the packet.
#[inline(always)]
fn matching_rule(head: u32, p: &Packet) -> Option<RuleEntry> {
    if head == TRIE_NONE {
        return None;
    }
    let mut record = head;
    for _ in 0..MAX_CHAIN {
        let rules = TG_RULESETS.get(record)?;
        let len = rules.len as usize;
        for i in 0..RECORD_ENTRIES {
            if i >= len {
                break;
            }
            let e = &rules.entries[i];
            // step 7: protocol
            if e.flags & RULE_ANY_PROTO == 0 && e.proto != p.proto {
                continue;
            }
            // step 7: port range; an unknown port never matches one
            if e.flags & RULE_PORTS != 0
                && !(p.port_known && e.port_lo <= p.dport && p.dport <= e.port_hi)
            {
                continue;
            }
            // step 9: entries are in precedence order, the first match wins
            return Some(*e);
        }
        if rules.next == NO_RECORD {
            return None;
        }
        record = rules.next;
    }
    None
}

/// Whether the packet is addressed to one of the gateway's own addresses.
#[inline(always)]
pub fn to_gateway(p: &Packet) -> bool {
    // step 2: neighbour discovery to a gateway address passes
    let slot = generation() & 1;
    let key = DeviceKey {
        slot: slot as u8,
        family: p.family,
        _pad: [0; 2],
        addr: p.dst.bytes(),
    };
    TG_GATEWAY.get_ptr(key).is_some()
}

/// Whether the operator passes non-IP frames of `ethertype` on purpose.
#[inline(always)]
pub fn pass_ethertype(ethertype: u16) -> bool {
    // step 2: a listed EtherType passes
    TG_ETHERTYPES.get_ptr(ethertype).is_some()
}

#[inline(always)]
fn fragment_key(generation: u32, p: &Packet, id: u32) -> FragmentKey {
    FragmentKey {
        generation,
        id,
        src: p.src.bytes(),
        dst: p.dst.bytes(),
        proto: p.fragment_proto,
        family: p.family,
        _pad: [0; 2],
    }
}

/// (now, fragment lifetime, per-source quota) from the coarse clock (a few
/// ms of resolution, against a lifetime of seconds) and `TG_SETTINGS`.
#[inline(always)]
fn fragment_clock() -> Option<(u64, u64, u32)> {
    let settings = TG_SETTINGS.get(0)?;
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    Some((
        now,
        settings.fragment_lifetime_ns,
        settings.fragments_per_source,
    ))
}

/// The verdict remembered for the datagram of a later fragment, if its first
/// fragment was allowed under `generation` within the fragment lifetime.
/// An expired entry is a miss: the fragment is judged with its port unknown.
#[inline(always)]
pub fn remembered_fragment(generation: u32, p: &Packet, id: u32) -> Option<Allowed> {
    // step 3: the allowed first fragment of this datagram, if recent
    let v = TG_FRAGS.get_ptr(fragment_key(generation, p, id))?;
    // SAFETY: read at once, before any other map call.
    let v: FragmentVerdict = unsafe { *v };
    let (now, lifetime, _) = fragment_clock()?;
    if now.wrapping_sub(v.seen_ns) > lifetime {
        account::stat(Stat::FragmentExpired, 0);
        return None;
    }
    Some(v.allowed)
}

/// Remembers an allowed first fragment for the rest of its datagram, unless
/// its source already had `fragments_per_source` remembered in the current
/// window (one lifetime long): then one device cannot push every other
/// device's datagrams out of the LRU. The per-source count is per window,
/// not per live entry (the LRU does not report evictions), and concurrent
/// CPUs may each admit one more: a bound, not an exact quota.
#[inline(always)]
pub fn remember_fragment(generation: u32, p: &Packet, id: u32, allowed: Allowed) {
    let Some((now, lifetime, per_source)) = fragment_clock() else {
        return;
    };
    let source = SourceKey {
        family: p.family,
        _pad: [0; 3],
        addr: p.src.bytes(),
    };
    match TG_FRAG_SRC.get_ptr_mut(source) {
        Some(quota) => {
            // SAFETY: a map value; a racing CPU can at worst lose one count.
            let q = unsafe { &mut *quota };
            if now.wrapping_sub(q.window_ns) > lifetime {
                q.window_ns = now;
                q.count = 0;
            }
            if q.count >= per_source {
                account::stat(Stat::FragmentOverQuota, 0);
                return;
            }
            q.count += 1;
        }
        None => {
            if per_source == 0 {
                account::stat(Stat::FragmentOverQuota, 0);
                return;
            }
            let fresh = FragmentQuota {
                window_ns: now,
                count: 1,
                _pad: 0,
            };
            let _ = TG_FRAG_SRC.insert(source, fresh, 0);
        }
    }
    // A full LRU evicts the oldest entry; an insert failure only means the
    // later fragments are judged on their own (port unknown).
    let _ = TG_FRAGS.insert(
        fragment_key(generation, p, id),
        FragmentVerdict {
            allowed,
            seen_ns: now,
        },
        0,
    );
}
