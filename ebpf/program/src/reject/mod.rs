//! The answer to a rejected packet, so that the device fails fast instead of
//! retrying into silence: a TCP RST for TCP, ICMP destination unreachable
//! (code 13, administratively prohibited) for other IPv4, ICMPv6
//! destination unreachable (code 1, administratively prohibited) for other
//! IPv6.
//!
//! The reply is built in place (`reply`) and sent back out of the interface
//! it came in on (`hook`: `XDP_TX`, or on TC a redirect to that interface's
//! egress): the link header stays (its VLAN tags too), with the MAC
//! addresses swapped on Ethernet links. It comes from the address the device
//! tried to reach, as if that host had refused, with TTL / hop limit 64.
//!
//! Only what cannot be turned against a third party is answered (`plan`):
//! never an ICMP error (of the packet's own family only echo requests get an
//! unreachable), never a RST, never a later fragment (no transport header to
//! answer), never a packet to or from a multicast or broadcast address at L2
//! or L3, never a source that cannot be a host. Reject is a group's
//! verdict, so a source in no group is never answered either. The answer quotes a fixed span (IPv4
//! header + 8 bytes, IPv6 header + 8 bytes), so ICMP answers only packets
//! without IPv4 options or IPv6 extension headers, whose quote holds the
//! ports the device's stack needs. Everything else is dropped silently and
//! counted as `RejectUnanswered`. Replies are limited per CPU (GCRA, as the
//! deny events); past the limit a reject degrades to a deny
//! (`RejectLimited`).

mod hook;
mod reply;

use aya_ebpf::{EbpfContext, btf_maps::ProgramArray};
use tollgate_common::{FAMILY_V4, REJECT_ETHERNET, REJECT_LATER_FRAGMENT, RejectFacts, Stat};

pub use self::hook::Hook;
use crate::{
    account,
    maps::{TG_REJECT_BKT, TG_REJECT_PKT, TG_REJECT_REPLY, TG_SETTINGS},
    parse::{Fragment, Frame, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, Packet},
    rate,
};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// At most two VLAN tags before the IP header.
const MAX_L3: usize = 0x1f;
/// The IPv6 extension header walk's bound, with the link header.
const MAX_L4: usize = 0x3ff;

/// What the answer is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    TcpReset,
    Icmp,
    Icmp6,
}

/// What the answer needs from the packet, read while it is as it arrived.
struct Plan {
    kind: Kind,
    v4: bool,
    /// The link header's length: it stays in place.
    l3: usize,
    /// The transport header's offset.
    l4: usize,
    ethernet: bool,
    /// TCP: the RST's sequence and acknowledgement numbers and flags.
    seq: u32,
    ack: u32,
    flags: u8,
}

/// Stores what [`answer`] needs to find the rejected packet's headers.
#[inline(always)]
pub fn remember(p: &Packet, ethernet: bool) {
    let Some(facts) = TG_REJECT_PKT.get_ptr_mut(0) else {
        return;
    };
    let mut flags = 0;
    if ethernet {
        flags |= REJECT_ETHERNET;
    }
    if let Fragment::Later { .. } = p.fragment {
        flags |= REJECT_LATER_FRAGMENT;
    }
    // SAFETY: a per-CPU slot; programs do not preempt each other on a CPU.
    unsafe {
        *facts = RejectFacts {
            l3: p.l3 as u16,
            l4: p.l4 as u16,
            proto: p.proto,
            family: p.family,
            flags,
            _pad: 0,
        };
    }
}

/// How the reply must be built, or `None` when the packet must not or
/// cannot be answered.
#[inline(always)]
fn plan(f: &Frame, facts: &RejectFacts) -> Option<Plan> {
    if facts.flags & REJECT_LATER_FRAGMENT != 0 {
        return None;
    }
    let ethernet = facts.flags & REJECT_ETHERNET != 0;
    if ethernet {
        // Group bit of either MAC: multicast or broadcast.
        let macs: [u8; 8] = f.bytes(0)?;
        if macs[0] & 1 != 0 || macs[6] & 1 != 0 {
            return None;
        }
    }
    let v4 = facts.family == FAMILY_V4;
    let l3 = usize::from(facts.l3) & MAX_L3;
    let l4 = usize::from(facts.l4) & MAX_L4;
    let answerable_addresses = if v4 {
        let ip: [u8; 20] = f.bytes(l3)?;
        is_host_v4(&ip[12..16]) && is_host_v4(&ip[16..20])
    } else {
        let ip: [u8; 40] = f.bytes(l3)?;
        is_host_v6(&ip[8..24]) && is_host_v6(&ip[24..40])
    };
    if !answerable_addresses {
        return None;
    }
    let mut plan = Plan {
        kind: if v4 { Kind::Icmp } else { Kind::Icmp6 },
        v4,
        l3,
        l4,
        ethernet,
        seq: 0,
        ack: 0,
        flags: 0,
    };
    match facts.proto {
        IPPROTO_TCP => {
            let tcp: [u8; 20] = f.bytes(l4)?;
            let flags = tcp[13];
            if flags & TCP_RST != 0 {
                return None;
            }
            plan.kind = Kind::TcpReset;
            if flags & TCP_ACK != 0 {
                // RFC 9293 3.10.7.1: the reset takes its sequence number from
                // the segment's acknowledgement.
                plan.seq = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
                plan.flags = TCP_RST;
            } else {
                // Else it acknowledges everything the segment occupied.
                let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
                let data = tcp_payload(f, &plan, usize::from(tcp[12] >> 4) * 4)?;
                let occupied =
                    data + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
                plan.ack = seq.wrapping_add(occupied);
                plan.flags = TCP_RST | TCP_ACK;
            }
            return Some(plan);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            // Of the packet's own family's ICMP, only an echo request is a
            // query worth an error; every other message may be an error
            // itself (RFC 1122 3.2.2, RFC 4443 2.4).
            let (own, echo) = if v4 {
                (IPPROTO_ICMP, ICMP_ECHO_REQUEST)
            } else {
                (IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST)
            };
            // ICMP of the other family is just another protocol.
            let icmp: [u8; 2] = f.bytes(l4)?;
            if facts.proto == own && icmp[0] != echo {
                return None;
            }
        }
        _ => {}
    }
    // The quote is a fixed span: it must be the IP header and 8 bytes of
    // the transport header.
    let fixed_header = if v4 { 20 } else { 40 };
    if l4 != l3 + fixed_header {
        return None;
    }
    Some(plan)
}

/// TCP payload bytes: the IP datagram's length less the headers.
#[inline(always)]
fn tcp_payload(f: &Frame, plan: &Plan, tcp_header: usize) -> Option<u32> {
    let ip: [u8; 6] = f.bytes(plan.l3)?;
    let headers = plan.l4 - plan.l3 + tcp_header;
    let datagram = if plan.v4 {
        usize::from(u16::from_be_bytes([ip[2], ip[3]]))
    } else {
        40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))
    };
    Some(datagram.saturating_sub(headers) as u32)
}

/// Whether an IPv4 address can be one host: not 0/8, loopback, multicast,
/// reserved or the limited broadcast (a subnet's broadcast address is not
/// known here; the L2 broadcast check catches what a link delivers so).
#[inline(always)]
fn is_host_v4(addr: &[u8]) -> bool {
    matches!(addr.first(), Some(&first) if first != 0 && first != 127 && first < 224)
}

/// Whether an IPv6 address can be one host: not multicast, unspecified or
/// loopback.
#[inline(always)]
fn is_host_v6(addr: &[u8]) -> bool {
    let unspecified_or_loopback = addr.len() == 16 && addr[..15] == [0; 15] && addr[15] <= 1;
    addr.first() != Some(&0xff) && !unspecified_or_loopback
}

/// Whether this CPU may send one more reply now: GCRA on `TG_REJECT_BKT`
/// (`rate.rs`), as [`account::report`] limits events.
#[inline(always)]
fn within_rate() -> bool {
    rate::admit(&TG_REJECT_BKT, || {
        TG_SETTINGS
            .get(0)
            .map(|s| (s.reject_interval_ns, s.reject_burst_ns))
    })
}

/// Hands the rejected packet [`remember`]ed to the hook's answerer (the
/// `tollgate_reject` or `tollgate_reject_tc` program in `table`, which runs
/// [`answer`]) by a tail call, which does not return when it succeeds. When
/// it fails, the packet is dropped unanswered.
#[inline(always)]
pub fn hand_over<C: EbpfContext>(ctx: &C, table: &ProgramArray<1>) {
    // SAFETY: the table holds a program of the hook's own type.
    unsafe { table.tail_call(ctx, 0) };
    account::stat(Stat::RejectUnanswered, 0);
}

/// Turns the rejected packet [`remember`]ed, as the hook holds it (`f`),
/// into its answer; returns whether it is to be sent (`XDP_TX`, or TC's
/// redirect to the interface it came in on) rather than dropped. Every
/// outcome is counted.
#[inline(always)]
pub fn answer<H: Hook>(hook: &H, f: &Frame) -> bool {
    let Some(facts) = TG_REJECT_PKT.get(0).copied() else {
        return false;
    };
    let Some(plan) = plan(f, &facts) else {
        account::stat(Stat::RejectUnanswered, 0);
        return false;
    };
    // A refusal is the `RejectLimited` statistic, counted in the bucket.
    if !within_rate() {
        return false;
    }
    let Some(scratch) = TG_REJECT_REPLY.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot; programs do not preempt each other on a CPU.
    let scratch = unsafe { &mut *scratch };
    // Builds the reply into the scratch buffer's first bytes and has the
    // hook send it. A macro, not a closure: closures become BPF
    // subprograms whose stack adds to the caller's.
    macro_rules! send {
        ($build:path) => {
            match scratch.first_chunk_mut() {
                Some(r) => $build(f, &plan, r).is_some() && hook.emit(plan.l3, plan.ethernet, r),
                None => false,
            }
        };
    }
    let sent = match (plan.kind, plan.v4) {
        (Kind::TcpReset, true) => send!(reply::tcp_reset_v4),
        (Kind::TcpReset, false) => send!(reply::tcp_reset_v6),
        (Kind::Icmp, _) => send!(reply::icmp),
        (Kind::Icmp6, _) => send!(reply::icmp6),
    };
    account::stat(
        match (sent, plan.kind) {
            (false, _) => Stat::RejectUnanswered,
            (true, Kind::TcpReset) => Stat::RejectReplyTcpReset,
            (true, Kind::Icmp) => Stat::RejectReplyIcmp,
            (true, Kind::Icmp6) => Stat::RejectReplyIcmp6,
        },
        0,
    );
    sent
}
