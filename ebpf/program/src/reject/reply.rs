//! The replies, built from the rejected packet's headers into a per-CPU
//! scratch buffer (the BPF stack is too small for them next to the
//! decision): addresses (and ports) swapped, checksums computed here.

use super::Plan;
use crate::checksum::{checksum, sum};
use crate::parse::{Frame, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP};

const HOP_LIMIT: u8 = 64;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ADMIN_PROHIBITED: u8 = 13;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_ADMIN_PROHIBITED: u8 = 1;

/// An IPv4 header of `total` bytes carrying `proto`, from `from` to `to`,
/// with its checksum.
#[inline(always)]
fn ipv4_header(r: &mut [u8], total: u16, proto: u8, from: &[u8], to: &[u8]) {
    r[0] = 0x45;
    r[2..4].copy_from_slice(&total.to_be_bytes());
    r[6] = 0x40; // don't fragment
    r[8] = HOP_LIMIT;
    r[9] = proto;
    r[12..16].copy_from_slice(from);
    r[16..20].copy_from_slice(to);
    let csum = checksum(sum(&r[..20], 0));
    r[10..12].copy_from_slice(&csum);
}

/// An IPv6 header for `payload` bytes of `next`, from `from` to `to`.
#[inline(always)]
fn ipv6_header(r: &mut [u8], payload: u16, next: u8, from: &[u8], to: &[u8]) {
    r[0] = 0x60;
    r[4..6].copy_from_slice(&payload.to_be_bytes());
    r[6] = next;
    r[7] = HOP_LIMIT;
    r[8..24].copy_from_slice(from);
    r[24..40].copy_from_slice(to);
}

/// The TCP header of the reset, ports swapped, checksum left zero.
#[inline(always)]
fn tcp_header(r: &mut [u8], ports: &[u8; 4], plan: &Plan) {
    r[0..2].copy_from_slice(&ports[2..4]);
    r[2..4].copy_from_slice(&ports[0..2]);
    r[4..8].copy_from_slice(&plan.seq.to_be_bytes());
    r[8..12].copy_from_slice(&plan.ack.to_be_bytes());
    r[12] = 5 << 4;
    r[13] = plan.flags;
}

/// A TCP reset over IPv4, from the address the device tried to reach.
#[inline(always)]
pub(super) fn tcp_reset_v4(f: &Frame, plan: &Plan, r: &mut [u8; 40]) -> Option<()> {
    // Source and destination addresses.
    let addresses: [u8; 8] = f.bytes(plan.l3 + 12)?;
    let ports: [u8; 4] = f.bytes(plan.l4)?;
    *r = [0; 40];
    ipv4_header(
        &mut r[..20],
        40,
        IPPROTO_TCP,
        &addresses[4..],
        &addresses[..4],
    );
    tcp_header(&mut r[20..], &ports, plan);
    // Pseudo-header: addresses, protocol, TCP length.
    let acc = sum(&r[12..20], u32::from(IPPROTO_TCP) + 20);
    let csum = checksum(sum(&r[20..], acc));
    r[36..38].copy_from_slice(&csum);
    Some(())
}

/// A TCP reset over IPv6, from the address the device tried to reach.
#[inline(always)]
pub(super) fn tcp_reset_v6(f: &Frame, plan: &Plan, r: &mut [u8; 60]) -> Option<()> {
    let addresses: [u8; 32] = f.bytes(plan.l3 + 8)?;
    let ports: [u8; 4] = f.bytes(plan.l4)?;
    *r = [0; 60];
    ipv6_header(
        &mut r[..40],
        20,
        IPPROTO_TCP,
        &addresses[16..],
        &addresses[..16],
    );
    tcp_header(&mut r[40..], &ports, plan);
    let acc = sum(&r[8..40], u32::from(IPPROTO_TCP) + 20);
    let csum = checksum(sum(&r[40..], acc));
    r[56..58].copy_from_slice(&csum);
    Some(())
}

/// ICMP destination unreachable, administratively prohibited, quoting the
/// IPv4 header and the first 8 bytes after it (RFC 792).
#[inline(always)]
pub(super) fn icmp(f: &Frame, plan: &Plan, r: &mut [u8; 56]) -> Option<()> {
    let quote: [u8; 28] = f.bytes(plan.l3)?;
    *r = [0; 56];
    r[28..].copy_from_slice(&quote);
    let (head, quote) = r.split_at_mut(28);
    ipv4_header(head, 56, IPPROTO_ICMP, &quote[16..20], &quote[12..16]);
    head[20] = ICMP_DEST_UNREACH;
    head[21] = ICMP_ADMIN_PROHIBITED;
    let csum = checksum(sum(&r[20..], 0));
    r[22..24].copy_from_slice(&csum);
    Some(())
}

/// ICMPv6 destination unreachable, administratively prohibited, quoting the
/// IPv6 header and the first 8 bytes after it.
#[inline(always)]
pub(super) fn icmp6(f: &Frame, plan: &Plan, r: &mut [u8; 96]) -> Option<()> {
    let quote: [u8; 48] = f.bytes(plan.l3)?;
    *r = [0; 96];
    r[48..].copy_from_slice(&quote);
    let (head, quote) = r.split_at_mut(48);
    ipv6_header(head, 56, IPPROTO_ICMPV6, &quote[24..40], &quote[8..24]);
    head[40] = ICMPV6_DEST_UNREACH;
    head[41] = ICMPV6_ADMIN_PROHIBITED;
    let acc = sum(&r[8..40], u32::from(IPPROTO_ICMPV6) + 56);
    let csum = checksum(sum(&r[40..], acc));
    r[42..44].copy_from_slice(&csum);
    Some(())
}
