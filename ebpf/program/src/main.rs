//! Tollgate dataplane: XDP on the device-facing interface, with a TC
//! (clsact/tcx ingress) twin for interfaces where XDP is unavailable. Each
//! hook comes in two variants, one per kind of link: Ethernet links parse
//! from the EtherType, raw-IP links (tun, WireGuard, PPP, IP tunnels,
//! raw-IP modems) from the IP header. The controller reads each interface's
//! link type and attaches the matching variant; all four run the same
//! [`filter`]: parse, decide, account. The other programs are never
//! attached. [`probe`] runs `expect:` cases for the controller before each
//! flip. The hooks tail-call [`tollgate_reject`] and [`tollgate_reject_tc`]
//! to answer a rejected packet (`reject/`: XDP with `XDP_TX`, TC by
//! redirecting the reply to the interface's egress), and [`tollgate_ntp`]
//! and [`tollgate_ntp_tc`] to answer NTP requests (`ntp.rs`, the same
//! way): programs of their own, so the verifier checks each once, not once
//! per path through the decision.
#![no_std]
#![no_main]

mod account;
mod checksum;
mod classify;
mod decide;
mod learned;
mod maps;
mod ntp;
mod parse;
mod probe;
mod rate;
mod reject;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use tollgate_common::{Allowed, Stat, Verdict};

use crate::maps::{TG_NTP_PROG, TG_NTP_TC, TG_REJECT_TC, TG_REJECT_XDP};
use crate::parse::{Fragment, Frame, Packet, Parsed};

/// What becomes of a packet.
enum Outcome {
    Pass,
    Drop,
    /// Dropped, and answered where the hook can (`reject::remember` kept
    /// what the answer needs).
    Reject,
    /// Allowed, and an NTP request the hook may answer itself (`ntp.rs`);
    /// passed on where it does not.
    Ntp(ntp::Request),
}

/// Bytes TC makes linear before parsing: enough for two VLAN tags, IPv6 with
/// the largest extension chain we walk, and a TCP header.
const TC_HEADER_BYTES: u32 = 22 + 40 + parse::MAX_EXT_BYTES as u32 + 8 + 20;

/// Where a link's packets start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Ethernet,
    /// At the IP header; `Some` carries the skb's protocol (TC).
    Ip(Option<u16>),
}

#[xdp]
pub fn tollgate_xdp(ctx: XdpContext) -> u32 {
    xdp(&ctx, Link::Ethernet)
}

#[xdp]
pub fn tollgate_xdp_ip(ctx: XdpContext) -> u32 {
    // XDP has no skb protocol: the version nibble tells, as in the tun
    // driver.
    xdp(&ctx, Link::Ip(None))
}

/// The NTP responder (`ntp.rs`), tail-called by the XDP hooks with a
/// client request to answer; never attached.
#[xdp]
pub fn tollgate_ntp(ctx: XdpContext) -> u32 {
    if ntp::respond(&ctx) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_PASS
    }
}

/// [`tollgate_ntp`]'s TC twin, tail-called by the TC hooks.
#[classifier]
pub fn tollgate_ntp_tc(ctx: TcContext) -> i32 {
    if ntp::respond(&ctx) {
        // TC's XDP_TX: out of the interface the request came in on.
        // SAFETY: the context is the kernel's skb; bpf_redirect only records
        // the target and returns TC_ACT_REDIRECT.
        unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) as i32 }
    } else {
        TC_ACT_UNSPEC
    }
}

/// The answer to a rejected packet (`reject/`), tail-called by the XDP
/// hooks; never attached. A program of its own so that the verifier checks
/// the reply once, not once for every path through the decision.
#[xdp]
pub fn tollgate_reject(ctx: XdpContext) -> u32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    if reject::answer(&ctx, &frame) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_DROP
    }
}

/// [`tollgate_reject`]'s TC twin, tail-called by the TC hooks.
#[classifier]
pub fn tollgate_reject_tc(ctx: TcContext) -> i32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    if reject::answer(&ctx, &frame) {
        // TC's XDP_TX: out of the interface the packet came in on.
        // SAFETY: the context is the kernel's skb; bpf_redirect only records
        // the target and returns TC_ACT_REDIRECT.
        unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) as i32 }
    } else {
        TC_ACT_SHOT
    }
}

#[classifier]
pub fn tollgate_tc(ctx: TcContext) -> i32 {
    tc(&ctx, Link::Ethernet)
}

#[classifier]
pub fn tollgate_tc_ip(ctx: TcContext) -> i32 {
    // On an L3 device the skb's protocol is what the stack will hand the
    // packet to: parse it as that, never as a guessed header.
    let protocol = u16::from_be(ctx.skb.protocol() as u16);
    tc(&ctx, Link::Ip(Some(protocol)))
}

#[inline(always)]
fn xdp(ctx: &XdpContext, link: Link) -> u32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    match filter(&frame, bytes, link) {
        Outcome::Pass => xdp_action::XDP_PASS,
        Outcome::Drop => xdp_action::XDP_DROP,
        Outcome::Reject => {
            // Returns only when there is no answerer to take over.
            reject::hand_over(ctx, &TG_REJECT_XDP);
            xdp_action::XDP_DROP
        }
        Outcome::Ntp(request) => {
            // Returns only when there is no responder to take over.
            ntp::hand_over(ctx, &TG_NTP_PROG, request);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn tc(ctx: &TcContext, link: Link) -> i32 {
    let len = ctx.len();
    if ((ctx.data_end() - ctx.data()) as u32) < len.min(TC_HEADER_BYTES) {
        // A failed pull leaves the headers short: parse then drops the packet
        // as malformed, which is counted.
        let _ = ctx.pull_data(len.min(TC_HEADER_BYTES));
    }
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    match filter(&frame, u64::from(len), link) {
        Outcome::Pass => TC_ACT_UNSPEC,
        Outcome::Ntp(request) => {
            // Returns only when there is no responder to take over.
            ntp::hand_over(ctx, &TG_NTP_TC, request);
            TC_ACT_UNSPEC
        }
        Outcome::Drop => TC_ACT_SHOT,
        Outcome::Reject => {
            // Returns only when there is no answerer to take over.
            reject::hand_over(ctx, &TG_REJECT_TC);
            TC_ACT_SHOT
        }
    }
}

/// What becomes of the packet: the precedence of
/// `tollgate_common::precedence`, in its order.
#[inline(always)]
fn filter(frame: &Frame, bytes: u64, link: Link) -> Outcome {
    account::stat(Stat::Seen, bytes);
    let parsed = match link {
        Link::Ethernet => parse::ethernet(frame),
        Link::Ip(protocol) => parse::raw_ip(frame, protocol),
    };
    match parsed {
        // step 1: fail closed
        Err(drop) => {
            account::stat(drop, bytes);
            Outcome::Drop
        }
        // step 2: ARP passes
        Ok(Parsed::Arp) => {
            account::stat(Stat::PassArp, bytes);
            Outcome::Pass
        }
        // step 1: a non-IP frame is dropped unless step 2 passes it
        Ok(Parsed::NonIp { ethertype }) => {
            let pass = decide::pass_ethertype(ethertype);
            account::stat(
                if pass {
                    Stat::PassNonIp
                } else {
                    Stat::DropNonIp
                },
                bytes,
            );
            if pass { Outcome::Pass } else { Outcome::Drop }
        }
        Ok(Parsed::Ip(packet)) => {
            // step 2: neighbour discovery that stays on the link passes
            if packet.neighbor_discovery
                && (parse::is_link_scope(packet.dst) || decide::to_gateway(&packet))
            {
                account::stat(Stat::PassNeighborDiscovery, bytes);
                return Outcome::Pass;
            }
            judge(&packet, bytes, link)
        }
    }
}

#[inline(always)]
fn judge(p: &Packet, bytes: u64, link: Link) -> Outcome {
    let generation = decide::generation();
    // step 3: a later fragment of a datagram whose first was allowed
    if let Fragment::Later { id } = p.fragment
        && let Some(allowed) = decide::remembered_fragment(generation, p, id)
    {
        account::counter(allowed.counter, bytes);
        account::counter(allowed.allow_counter, bytes);
        account::stat(Stat::FragmentCacheHit, bytes);
        return allowed_outcome(generation, p, &allowed, link);
    }
    let d = decide::decide(generation, p);
    account::counter(d.counter, bytes);
    account::counter(d.verdict_counter, bytes);
    match d.verdict {
        Verdict::Allow => {
            // step 3: remembered for the rest of the datagram
            let allowed = d.allowed();
            match p.fragment {
                Fragment::First { id } => decide::remember_fragment(generation, p, id, allowed),
                // Its port is unknown: never answered as NTP.
                Fragment::Later { .. } => return Outcome::Pass,
                Fragment::Whole => {}
            }
            allowed_outcome(generation, p, &allowed, link)
        }
        Verdict::Deny => {
            account::stat(
                if d.reason == tollgate_common::DecisionReason::UnknownDevice {
                    Stat::DropUnknownDevice
                } else {
                    Stat::DropPolicy
                },
                bytes,
            );
            account::report(p, &d);
            Outcome::Drop
        }
        // Dropped as a deny is, and answered where that is safe.
        Verdict::Reject => {
            account::stat(Stat::DropPolicy, bytes);
            account::report(p, &d);
            reject::remember(p, link == Link::Ethernet);
            Outcome::Reject
        }
        // step 11: audit-deny is reported and passes
        Verdict::AuditDeny => {
            account::report(p, &d);
            Outcome::Pass
        }
    }
}

/// An allowed packet passes, unless it is an NTP request the hook may
/// answer (after the policy, like a reject's answer: it changes no verdict).
#[inline(always)]
fn allowed_outcome(generation: u32, p: &Packet, allowed: &Allowed, link: Link) -> Outcome {
    match ntp::candidate(generation, p, allowed, link == Link::Ethernet) {
        Some(request) => Outcome::Ntp(request),
        None => Outcome::Pass,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
