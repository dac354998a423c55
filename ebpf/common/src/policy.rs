//! Policy tables: how a compiled policy is laid out in the maps.
//!
//! Lookup path ([`crate::precedence`] steps 4-11): source address -> group
//! (`TG_DEV_EXACT`, then the device prefixes), then (group, destination) ->
//! rule set (longest prefix), then the first matching entry of that rule
//! set, else the group's default. The prefixes are written as entries of
//! `TG_DEV_PREFIX` and `TG_DST`, which the controller reads back, and
//! compiled into the tries packets walk ([`crate::classifier`]).

use crate::pod;

/// Group 0 stands for "no group contains the source"; its default verdict is
/// the policy's `unknown-devices`.
pub const UNKNOWN_GROUP: u32 = 0;

/// Key of `TG_DEV_EXACT` (a device address) and `TG_GATEWAY` (a gateway
/// address): one address in one slot.
///
/// IPv4 addresses occupy `addr[..4]`, the rest is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    pub slot: u8,
    pub family: u8,
    pub _pad: [u8; 2],
    pub addr: [u8; 16],
}

/// LPM data of `TG_DEV_PREFIX`. The prefix length of the LPM key is
/// [`DEVICE_PREFIX_HEADER_BITS`] plus the device prefix length, so slot and
/// family always match exactly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DevicePrefix {
    pub slot: u8,
    pub family: u8,
    pub addr: [u8; 16],
    pub _pad: [u8; 2],
}
pub const DEVICE_PREFIX_HEADER_BITS: u32 = 16;

/// LPM data of `TG_DST`. The prefix length of the LPM key is
/// [`DESTINATION_HEADER_BITS`] plus the destination prefix length, so slot,
/// family and group always match exactly. `group` is big-endian so that the
/// bits are in trie order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Destination {
    pub slot: u8,
    pub family: u8,
    pub group: [u8; 2],
    pub addr: [u8; 16],
}
pub const DESTINATION_HEADER_BITS: u32 = 32;

/// Value of `TG_GROUPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// Counter charged when the group default decides.
    pub default_counter: u32,
    /// Per-group verdict totals, one counter per [`crate::Verdict`].
    pub allow_counter: u32,
    pub deny_counter: u32,
    pub audit_deny_counter: u32,
    pub reject_counter: u32,
    /// `GROUP_*` bits.
    pub flags: u32,
}
impl GroupInfo {
    /// `verdict` in this group: a deny or a reject is audit-deny in audit
    /// mode (precedence step 11).
    #[inline(always)]
    pub fn audited(&self, verdict: crate::Verdict) -> crate::Verdict {
        use crate::Verdict;
        match verdict {
            Verdict::Deny | Verdict::Reject if self.flags & GROUP_AUDIT != 0 => Verdict::AuditDeny,
            other => other,
        }
    }

    /// The group's total for `verdict`.
    #[inline(always)]
    pub fn total(&self, verdict: crate::Verdict) -> u32 {
        use crate::Verdict;
        match verdict {
            Verdict::Allow => self.allow_counter,
            Verdict::Deny => self.deny_counter,
            Verdict::AuditDeny => self.audit_deny_counter,
            Verdict::Reject => self.reject_counter,
        }
    }
}

/// The group default is deny (else allow, or reject with
/// [`GROUP_DEFAULT_REJECT`]).
pub const GROUP_DEFAULT_DENY: u32 = 1;
/// Audit mode: denies and rejects are counted and reported as audit-deny,
/// never dropped.
pub const GROUP_AUDIT: u32 = 2;
/// The group default is reject.
pub const GROUP_DEFAULT_REJECT: u32 = 4;
/// The group has FQDN rules, so `TG_LEARNED` may hold addresses for it.
/// Without it the program skips that hash lookup (precedence step 12),
/// which would find nothing: a learn is refused for a group without a
/// matching FQDN rule, and the flip drops what the new policy no longer
/// covers.
pub const GROUP_LEARNS: u32 = 8;

/// One compiled rule in a rule set. Entries are sorted by precedence, so the
/// first entry that matches a packet decides.
///
/// An entry carries its whole outcome: the verdict after its group's audit
/// mode ([`RULE_AUDIT`]) and the group's total for that verdict, so that a
/// packet a rule decides never reads its group's `TG_GROUPS` entry (that
/// read, its copy and the verdict's mapping were about 40 of the 490
/// machine instructions of an allow, BENCHMARKS.md, fourteenth round). The
/// controller writes a group's lists again when its audit mode or totals
/// change, as it does when its rules do.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RuleEntry {
    /// Counter charged when this entry decides.
    pub counter: u32,
    /// The group's counter for this entry's verdict (after audit mode).
    pub verdict_counter: u32,
    /// Inclusive destination port range; only read with [`RULE_PORTS`].
    pub port_lo: u16,
    pub port_hi: u16,
    /// IP protocol number; ignored with [`RULE_ANY_PROTO`].
    pub proto: u8,
    /// `RULE_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
}
/// Matches every protocol.
pub const RULE_ANY_PROTO: u8 = 1;
/// Matches only packets whose destination port is known and in range.
pub const RULE_PORTS: u8 = 2;
/// The entry denies (else allows).
pub const RULE_DENY: u8 = 4;
/// The entry is the implicit NTP allow, not a rule from a file.
pub const RULE_BUILTIN: u8 = 8;
/// The entry rejects: drops and answers the device.
pub const RULE_REJECT: u8 = 16;
/// The entry denies or rejects in a group in audit mode (precedence step
/// 11): its verdict is audit-deny, whatever [`RULE_DENY`] or
/// [`RULE_REJECT`] say.
pub const RULE_AUDIT: u8 = 32;

/// Value of `TG_RULESETS`: up to [`crate::RECORD_ENTRIES`] rules of the
/// list that applies to one destination prefix of one group (its own rules
/// and those inherited from less specific prefixes), continued in `next`.
/// Most lists fit one record; chaining keeps memory proportional to the
/// rules written rather than to the longest possible list.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleRecord {
    /// Entries used in this record.
    pub len: u32,
    /// Absolute index of the next record of the list, or [`NO_RECORD`].
    pub next: u32,
    pub entries: [RuleEntry; crate::RECORD_ENTRIES],
}
pub const NO_RECORD: u32 = u32::MAX;

impl Default for RuleRecord {
    fn default() -> Self {
        Self {
            len: 0,
            next: NO_RECORD,
            entries: [RuleEntry::default(); crate::RECORD_ENTRIES],
        }
    }
}

/// Key of `TG_FRAGS`: identifies one fragmented datagram under one policy
/// generation, so a remembered verdict never outlives the policy that made
/// it. `proto` is what every fragment of the datagram carries: the IPv4
/// protocol, or the next-header value of the IPv6 Fragment header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub generation: u32,
    pub id: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Value of `TG_FRAGS`: what the first fragment charged, and when it was
/// seen (coarse monotonic clock); later fragments follow it for
/// [`Settings::fragment_lifetime_ns`] at most.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentVerdict {
    pub allowed: Allowed,
    pub seen_ns: u64,
}

/// Key of `TG_FRAG_SRC`: one source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

/// Value of `TG_FRAG_SRC`: first fragments remembered for one source since
/// `window_ns`; a window lasts one fragment lifetime.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentQuota {
    pub window_ns: u64,
    pub count: u32,
    pub _pad: u32,
}

/// In `TG_FRAGS`: the counters an allowed first fragment charged (its
/// deciding rule or default, and its group's allow total), so the rest of
/// its datagram is charged to the same ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    pub counter: u32,
    pub allow_counter: u32,
}

/// Value of `TG_SETTINGS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Nanoseconds between deny events per CPU (1e9 / rate); 0 disables events.
    pub event_interval_ns: u64,
    /// How far ahead of schedule a burst may run, in nanoseconds.
    pub event_burst_ns: u64,
    /// How long later fragments follow their first fragment's verdict.
    pub fragment_lifetime_ns: u64,
    /// First fragments one source may have remembered per lifetime window.
    pub fragments_per_source: u32,
    /// The [`TABLE_ENCODING`] of the build that opened the maps: pins of
    /// another encoding are another layout, even where every map has the
    /// same shape.
    pub encoding: u32,
    /// Nanoseconds between reject replies per CPU (1e9 / rate); 0 sends
    /// none (every reject is dropped as a deny would be).
    pub reject_interval_ns: u64,
    /// How far ahead of schedule a burst of replies may run, in nanoseconds.
    pub reject_burst_ns: u64,
}

/// How this build encodes what its maps hold, where a change keeps every
/// map's shape (and so would not show in their sizes): 0 before it was
/// recorded; 1 when the trie words came to carry the child bit lowest and
/// a child's byte offset (`crate::classifier`); 2 when an IPv4 device's
/// hash became one multiplication (`crate::device_table`); 3 when a
/// `TG_ROOTS` entry came to flag a wide trie; 4 when an IPv6 device's hash
/// became two multiplications side by side; 5 since a rule entry carries
/// its verdict after audit mode and its group's verdict total.
pub const TABLE_ENCODING: u32 = 5;

pod!(
    DeviceKey,
    DevicePrefix,
    Destination,
    GroupInfo,
    RuleEntry,
    RuleRecord,
    FragmentKey,
    FragmentVerdict,
    SourceKey,
    FragmentQuota,
    Allowed,
    Settings
);

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<DeviceKey>() == 20);
    assert!(size_of::<DevicePrefix>() == 20);
    assert!(size_of::<Destination>() == 20);
    assert!(size_of::<GroupInfo>() == 24);
    assert!(size_of::<RuleEntry>() == 16);
    assert!(size_of::<RuleRecord>() == 8 + 16 * crate::RECORD_ENTRIES);
    assert!(size_of::<FragmentKey>() == 44);
    assert!(size_of::<FragmentVerdict>() == 16);
    assert!(size_of::<SourceKey>() == 20);
    assert!(size_of::<FragmentQuota>() == 16);
    assert!(size_of::<Allowed>() == 8);
    assert!(size_of::<Settings>() == 48);
};
