//! Global per-CPU statistics: drop reasons and other non-policy outcomes.

use crate::pod;

/// A packet and byte count, one per CPU in per-CPU maps; userspace sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

pod!(Counter);

const _: () = assert!(core::mem::size_of::<Counter>() == 16);

/// Index into `TG_STATS`. Every packet the program sees is charged to
/// [`Stat::Seen`] and to at most one other entry that explains a non-policy
/// outcome; policy outcomes are charged to `TG_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stat {
    /// Every packet the program ran on.
    Seen = 0,
    /// Truncated or inconsistent headers (IPv4 ihl < 5, short TCP, bad option
    /// lengths, ...).
    DropMalformed,
    /// More than two VLAN tags.
    DropVlan,
    /// IPv4 loose or strict source route option.
    DropSourceRoute,
    /// IPv6 extension header chain longer than the walk bound, or a
    /// hop-by-hop header anywhere but first.
    DropIpv6Ext,
    /// IPv6 routing header with segments left.
    DropRoutingHeader,
    /// IPv6 packet to an IPv4-mapped address (::ffff:0:0/96).
    DropIpv4Mapped,
    /// First fragment too small to hold its transport header, or a TCP
    /// fragment at offset 8 overlapping that header (RFC 1858).
    DropFragment,
    /// Source in no group and `unknown-devices: deny`.
    DropUnknownDevice,
    /// Denied by a rule or a group default.
    DropPolicy,
    /// Non-IP frames of an EtherType listed in `pass-ethertypes`, passed
    /// untouched.
    PassNonIp,
    /// IPv6 router solicitation and neighbour discovery on the link.
    PassNeighborDiscovery,
    /// Non-first fragments passed because their first fragment was allowed.
    FragmentCacheHit,
    /// Deny events not sent because of the per-CPU rate limit. Counted in
    /// the limiter's bucket (`TG_EVENT_BKT`, `RateBucket::refused`), not in
    /// `TG_STATS`.
    EventsSuppressed,
    /// Deny events not sent because the ring buffer was full.
    EventsLost,
    /// ARP on Ethernet links, passed untouched (devices need it to reach
    /// the gateway).
    PassArp,
    /// Every other non-IP frame: an EtherType neither IP, ARP nor listed in
    /// `pass-ethertypes` (PPPoE, MPLS, LLDP, ...), or on a raw-IP link a
    /// packet that is neither IPv4 nor IPv6.
    DropNonIp,
    /// Later fragments whose first fragment's verdict had expired: judged
    /// with the port unknown.
    FragmentExpired,
    /// Allowed first fragments not remembered because their source was at
    /// its quota: their later fragments are judged with the port unknown.
    FragmentOverQuota,
    /// Rejected TCP segments answered with a RST.
    RejectReplyTcpReset,
    /// Rejected IPv4 packets answered with ICMP destination unreachable,
    /// administratively prohibited.
    RejectReplyIcmp,
    /// Rejected IPv6 packets answered with ICMPv6 destination unreachable,
    /// administratively prohibited.
    RejectReplyIcmp6,
    /// Rejected packets not answered because this CPU was over the reply
    /// rate: dropped as a deny would be. Counted in the limiter's bucket
    /// (`TG_REJECT_BKT`, `RateBucket::refused`), not in `TG_STATS`.
    RejectLimited,
    /// Rejected packets that must not be answered (an ICMP error, multicast
    /// or broadcast, a later fragment, a RST; see `reject/` in the
    /// program) or that could not be reshaped into the answer: dropped
    /// silently.
    RejectUnanswered,
    /// NTP client requests answered by the program itself (the fast path,
    /// `ebpf/program/src/ntp.rs`).
    NtpFastAnswered,
    /// NTP requests to a fast-path address left to the userspace server:
    /// not a plain NTPv3/v4 client request, or no fresh state.
    NtpFastPassed,
    /// NTP requests left to the userspace server because their source was
    /// over its rate limit (its limiter decides and counts them).
    NtpFastLimited,
    /// Time-health samples of answered NTP requests that did not fit the
    /// full `TG_NTP_SAMPLES` ring (the replies were sent all the same).
    NtpSamplesLost,
}

impl Stat {
    pub const COUNT: u32 = Stat::NtpSamplesLost as u32 + 1;

    pub const ALL: [Stat; Stat::COUNT as usize] = [
        Stat::Seen,
        Stat::DropMalformed,
        Stat::DropVlan,
        Stat::DropSourceRoute,
        Stat::DropIpv6Ext,
        Stat::DropRoutingHeader,
        Stat::DropIpv4Mapped,
        Stat::DropFragment,
        Stat::DropUnknownDevice,
        Stat::DropPolicy,
        Stat::PassNonIp,
        Stat::PassNeighborDiscovery,
        Stat::FragmentCacheHit,
        Stat::EventsSuppressed,
        Stat::EventsLost,
        Stat::PassArp,
        Stat::DropNonIp,
        Stat::FragmentExpired,
        Stat::FragmentOverQuota,
        Stat::RejectReplyTcpReset,
        Stat::RejectReplyIcmp,
        Stat::RejectReplyIcmp6,
        Stat::RejectLimited,
        Stat::RejectUnanswered,
        Stat::NtpFastAnswered,
        Stat::NtpFastPassed,
        Stat::NtpFastLimited,
        Stat::NtpSamplesLost,
    ];

    /// The `reason` label of `tollgate_drops_total`, for drop stats.
    pub const fn drop_reason(self) -> Option<&'static str> {
        Some(match self {
            Stat::DropMalformed => "malformed",
            Stat::DropVlan => "vlan",
            Stat::DropSourceRoute => "source_route",
            Stat::DropIpv6Ext => "ipv6_ext",
            Stat::DropRoutingHeader => "routing_header",
            Stat::DropIpv4Mapped => "ipv4_mapped",
            Stat::DropFragment => "fragment",
            Stat::DropUnknownDevice => "unknown_device",
            Stat::DropPolicy => "policy",
            Stat::DropNonIp => "non_ip",
            _ => return None,
        })
    }
}
