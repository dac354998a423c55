//! The NTP fast path: a device's client request answered where it arrives,
//! without the socket path.
//!
//! A packet the policy allowed, from a device in a group, to an `ntp.listen`
//! address and port (`TG_NTP_PORTS`, then `TG_NTP_ADDRS`) is a candidate
//! ([`candidate`]). The hook answers it ([`respond`]) when it is a plain
//! client request, exactly what the userspace server would answer the same
//! way:
//! - IPv4 without options or IPv6 without extension headers, UDP with a
//!   48-byte payload (no extension fields, no MAC, so no NTS), from a
//!   unicast source and a port other than 0;
//! - NTP version 3 or 4, mode 3 (client), not the NTPv5 upgrade request
//!   (an NTPv4 request whose reference timestamp is `NTP5DRFT`);
//! - arriving on an interface where a reply sent back reaches the device
//!   (`TG_NTP_IFACES`, kept by the controller: TC and XDP attachments,
//!   until a native XDP one's driver fails a reply, as a veth does whose
//!   peer runs no XDP program);
//! - `TG_NTP_STATE` set and fresh (the controller refreshes it at every
//!   poll; a controller that stopped leaves the answering to nobody's
//!   claim, so the server decides);
//! - the source within its rate limit: chrony's `ratelimit` as the
//!   userspace server applies it (GCRA over `TG_NTP_RATE`, which is the
//!   same token bucket: a burst of `burst` replies, one per 2^`interval`
//!   seconds after, and one in 2^`leak` limited requests still answered).
//!
//! Everything else passes (`XDP_PASS`) unchanged to the userspace server,
//! which decides it as before and counts it (`NtpFastPassed`; a limited
//! source: `NtpFastLimited`, where the server's own limiter refuses or
//! leaks it). TC answers the same requests with the same reply
//! ([`Responder`] for `TcContext`), sent by redirecting the skb to the
//! egress of the interface it came in on, TC's `XDP_TX`.
//!
//! Each answered request leaves a sample (source, receive timestamp, the
//! client's transmit timestamp) in `TG_NTP_SAMPLES` for the controller's
//! per-group time health; requests passed on are sampled by the server.
//!
//! The reply is the request rewritten in place (the same length, so the
//! frame keeps its size): addresses, ports and MAC addresses swapped, TTL
//! or hop limit 64, the header fields from `TG_NTP_STATE`, the origin
//! timestamp from the request's transmit timestamp, the poll echoed, and
//! the checksums recomputed. ntp-proto's reply to the same request is the
//! oracle (`tests/tests/ntp_fast_differential.rs`).

use aya_ebpf::{
    EbpfContext,
    btf_maps::ProgramArray,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_ktime_get_tai_ns, bpf_skb_load_bytes},
    programs::{TcContext, XdpContext},
};
use tollgate_common::{
    Allowed, FAMILY_V4, MAX_GROUPS, NTP_STATE_SET, NtpAddrKey, NtpFastState, NtpSample, SourceKey,
    Stat, UNKNOWN_GROUP,
};

use crate::{
    account,
    checksum::{checksum, sum},
    maps::{
        TG_GROUPS, TG_NTP_ADDRS, TG_NTP_IFACES, TG_NTP_PORTS, TG_NTP_RATE, TG_NTP_SAMPLES,
        TG_NTP_SCRATCH, TG_NTP_STATE,
    },
    parse::{Fragment, IPPROTO_UDP, Packet},
    reject::Hook,
};

/// An NTPv3/v4 header, the whole payload of a plain request.
const NTP_LEN: usize = 48;
const UDP_LEN: usize = 8;
const HOP_LIMIT: u8 = 64;
/// At most two VLAN tags before the IP header.
const MAX_L3: usize = 0x1f;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
const NANOS: u64 = 1_000_000_000;
/// The NTPv5 draft's upgrade marker in an NTPv4 request's reference
/// timestamp: ntp-proto answers it specially, so the server does.
const NTPV5_UPGRADE: [u8; 8] = *b"NTP5DRFT";
/// Longest dispersion growth computed (2^40 ns, 18 minutes): the state is
/// refreshed far more often, and the bound keeps the product in 64 bits.
const MAX_ELAPSED_NS: u64 = 1 << 40;
/// Bound on the growth rate (about 0.9 s/s), for the same reason.
const MAX_DISPERSION_RATE: u64 = (1 << 24) - 1;

/// Where a candidate request's headers are, for [`respond`], packed
/// into one register (the hook's stack has no room to spare): the IP
/// header's offset, and flags.
#[derive(Clone, Copy)]
pub struct Request(u32);

const REQUEST_V4: u32 = 1 << 8;
const REQUEST_ETHERNET: u32 = 1 << 9;
/// Set in every request, so that 0 means none (IPv6 on a raw-IP link has
/// no other bit set).
const REQUEST_SOME: u32 = 1 << 10;

impl Request {
    fn l3(self) -> usize {
        (self.0 & 0xff) as usize
    }
    fn v4(self) -> bool {
        self.0 & REQUEST_V4 != 0
    }
    fn ethernet(self) -> bool {
        self.0 & REQUEST_ETHERNET != 0
    }
}

/// The request to answer, when the packet `p`, allowed and charged as
/// `allowed`, is a UDP datagram to a fast-path NTP address from a device in
/// a group (as the userspace server, which answers the members of policy
/// groups; `ntp.allow` sources and unknown devices are its own business).
///
/// Written for the hook's stack, which has no room to spare: the address
/// key is built in a per-CPU map, and the group is told by the verdict
/// counter `allowed` charged (each group has its own; sources in no group
/// charge group 0's) rather than by looking the source up again.
#[inline(always)]
pub fn candidate(
    generation: u32,
    p: &Packet,
    allowed: &Allowed,
    ethernet: bool,
) -> Option<Request> {
    if p.proto != IPPROTO_UDP || p.fragment != Fragment::Whole || !p.port_known {
        return None;
    }
    // A listen port? One array word, so that the datagrams to any other
    // port (nearly all) skip the hash lookup below.
    let ports = TG_NTP_PORTS.get(u32::from(p.dport >> 6))?;
    if ports & (1 << (p.dport & 63)) == 0 {
        return None;
    }
    let scratch = TG_NTP_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a per-CPU slot; programs do not preempt each other on a CPU.
    let key = unsafe { &mut (*scratch).key };
    key.family = p.family;
    key.port = p.dport.to_be_bytes();
    key.addr = p.dst.bytes();
    // The key by reference, where it lies: a copy would take the stack.
    let key: &NtpAddrKey = key;
    TG_NTP_ADDRS.get_ptr(key)?;
    let unknown = TG_GROUPS.get((generation & 1) * MAX_GROUPS + UNKNOWN_GROUP)?;
    if allowed.allow_counter == unknown.allow_counter {
        return None;
    }
    let v4 = p.family == FAMILY_V4;
    // Options or extension headers: not the plain request answered here.
    if p.l4 != p.l3 + if v4 { 20 } else { 40 } || p.l3 > MAX_L3 {
        account::stat(Stat::NtpFastPassed, 0);
        return None;
    }
    let mut packed = REQUEST_SOME | p.l3 as u32;
    if v4 {
        packed |= REQUEST_V4;
    }
    if ethernet {
        packed |= REQUEST_ETHERNET;
    }
    Some(Request(packed))
}

/// Hands the request to the responder in `table` ([`respond`]: the
/// `tollgate_ntp` program for XDP, `tollgate_ntp_tc` for TC) by a tail
/// call, which does not return when it succeeds. When it fails (no
/// responder in the table), the request passes to the server.
#[inline(always)]
pub fn hand_over<C: EbpfContext>(ctx: &C, table: &ProgramArray<1>, request: Request) {
    let Some(scratch) = TG_NTP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU slot; programs do not preempt each other on a CPU.
    unsafe { (*scratch).request = request.0 };
    // SAFETY: the table holds a responder of the hook's own program type.
    unsafe { table.tail_call(ctx, 0) };
    account::stat(Stat::NtpFastPassed, 0);
}

/// The responder: answers the request [`hand_over`] left; returns whether
/// the hook sends the reply (`XDP_TX`, or TC's redirect to the same
/// interface) rather than pass the request on to the userspace server.
/// Every outcome is counted.
#[inline(always)]
pub fn respond<H: Responder>(ctx: &H) -> bool {
    // T2 first, before anything else costs time.
    // SAFETY: the helper has no preconditions.
    let received_tai = unsafe { bpf_ktime_get_tai_ns() };
    let Some(scratch) = TG_NTP_SCRATCH.get(0) else {
        return false;
    };
    let request = Request(scratch.request);
    let answered = match fresh_state(ctx.arrived_on()) {
        None => Answer::Passed,
        Some((state, now)) => {
            let time = Time {
                state,
                now,
                received_tai,
            };
            if request.v4() {
                ctx.answer::<{ 20 + UDP_LEN + NTP_LEN }>(request, &time)
            } else {
                ctx.answer::<{ 40 + UDP_LEN + NTP_LEN }>(request, &time)
            }
        }
    };
    match answered {
        Answer::Sent => {
            account::stat(Stat::NtpFastAnswered, 0);
            true
        }
        Answer::Limited => {
            account::stat(Stat::NtpFastLimited, 0);
            false
        }
        Answer::Passed => {
            account::stat(Stat::NtpFastPassed, 0);
            false
        }
    }
}

/// What an answer is made with: the state to answer with, the monotonic
/// time now, and the request's receive time (CLOCK_TAI).
pub struct Time {
    state: &'static NtpFastState,
    now: u64,
    received_tai: u64,
}

pub enum Answer {
    Sent,
    Limited,
    Passed,
}

/// The state to answer with and the monotonic time now, when the state is
/// set and fresh and a reply sent back on interface `ifindex` reaches the
/// device (`TG_NTP_IFACES`: not a veth whose peer runs no XDP program,
/// which drops what native XDP transmits); otherwise the server answers.
#[inline(always)]
fn fresh_state(ifindex: u32) -> Option<(&'static NtpFastState, u64)> {
    // By reference: a copy would cost the stack 72 bytes.
    let state = TG_NTP_STATE.get(0)?;
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if state.flags & NTP_STATE_SET == 0 || now > state.valid_until_ns {
        return None;
    }
    TG_NTP_IFACES.get_ptr(ifindex)?;
    Some((state, now))
}

/// How a hook reads a request and puts its answer on the wire: XDP
/// rewrites the packet where it lies; TC copies the datagram out through
/// the skb helpers, rewrites the copy and stores it back
/// (`reject::Hook::emit`, which keeps the skb's checksum state right).
pub trait Responder {
    /// The index of the interface the request arrived on, where the reply
    /// goes out.
    fn arrived_on(&self) -> u32;
    /// Answers the request when it is a plain client request of `N` bytes
    /// (the IP datagram, header included) and the only thing in the
    /// packet after the link header.
    fn answer<const N: usize>(&self, request: Request, time: &Time) -> Answer;
}

impl Responder for XdpContext {
    #[inline(always)]
    fn arrived_on(&self) -> u32 {
        // SAFETY: the context the kernel passed; its fields are readable.
        unsafe { (*self.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn answer<const N: usize>(&self, request: Request, time: &Time) -> Answer {
        let l3 = request.l3() & MAX_L3;
        let (start, end) = (self.data(), self.data_end());
        // The MAC swap's bounds first, then the datagram's: the verifier
        // follows two separate checks of the same pointer.
        if request.ethernet() {
            if start + 12 > end {
                return Answer::Passed;
            }
            // SAFETY: bounds checked above; packet memory may be unaligned.
            let macs = unsafe { core::ptr::read_unaligned(start as *const [u8; 12]) };
            if group_address(&macs) {
                return Answer::Passed;
            }
        }
        // Shorter, or trailing bytes (a payload other than 48 bytes, or
        // link padding): the server decides. The length is opaque to LLVM,
        // so the bounds check below stays a comparison with `data_end`, the
        // only kind the verifier learns from.
        let len = core::hint::black_box(end - start);
        if len != l3 + N {
            return Answer::Passed;
        }
        if start + l3 + N > end {
            return Answer::Passed;
        }
        // Rewritten where it lies: a copy would not fit the program's
        // stack beside the rest of the hook.
        // SAFETY: bounds checked above; [u8; N] has alignment 1, and
        // nothing else reads or writes the packet while this reference
        // lives.
        let d = unsafe { &mut *((start + l3) as *mut [u8; N]) };
        let answered = rewrite(d, request.v4(), time);
        if matches!(answered, Answer::Sent) && request.ethernet() {
            // SAFETY: bounds checked above.
            unsafe {
                let macs = core::ptr::read_unaligned(start as *const [u8; 12]);
                let mut swapped = [0u8; 12];
                swapped[..6].copy_from_slice(&macs[6..]);
                swapped[6..].copy_from_slice(&macs[..6]);
                core::ptr::write_unaligned(start as *mut [u8; 12], swapped);
            }
        }
        answered
    }
}

impl Responder for TcContext {
    #[inline(always)]
    fn arrived_on(&self) -> u32 {
        // SAFETY: the kernel's skb; its fields are readable.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn answer<const N: usize>(&self, request: Request, time: &Time) -> Answer {
        let l3 = request.l3() & MAX_L3;
        // As XDP: the datagram and nothing after it.
        if self.len() as usize != l3 + N {
            return Answer::Passed;
        }
        if request.ethernet() {
            match self.load::<[u8; 12]>(0) {
                Ok(macs) if !group_address(&macs) => {}
                _ => return Answer::Passed,
            }
        }
        let Some(scratch) = TG_NTP_SCRATCH.get_ptr_mut(0) else {
            return Answer::Passed;
        };
        // SAFETY: a per-CPU slot; programs do not preempt each other on a
        // CPU.
        let Some(d) = (unsafe { (*scratch).datagram.first_chunk_mut::<N>() }) else {
            return Answer::Passed;
        };
        // The helper itself, with the constant length the verifier needs
        // (aya's `load_bytes` clamps it to what the skb holds, which may be
        // zero as far as the verifier knows).
        // SAFETY: `d` is N bytes of map memory; the helper checks the skb.
        let loaded = unsafe {
            bpf_skb_load_bytes(
                self.skb.skb.cast(),
                l3 as u32,
                d.as_mut_ptr().cast(),
                N as u32,
            )
        };
        if loaded != 0 {
            return Answer::Passed;
        }
        match rewrite(d, request.v4(), time) {
            // The store fails only on an skb the kernel could not make
            // writable; the request then goes to the server (charged and
            // sampled once more there, an error towards answering).
            Answer::Sent if !self.emit(l3, request.ethernet(), d) => Answer::Passed,
            answered => answered,
        }
    }
}

/// A group (multicast or broadcast) MAC address at either end: never
/// answered.
#[inline(always)]
fn group_address(macs: &[u8; 12]) -> bool {
    macs[0] & 1 != 0 || macs[6] & 1 != 0
}

/// Rewrites datagram `d` into the reply when it is a plain client request
/// from a source within its rate limit, and reports it to the time health.
#[inline(always)]
fn rewrite<const N: usize>(d: &mut [u8; N], v4: bool, time: &Time) -> Answer {
    let Some(source) = plain_request(d, v4) else {
        return Answer::Passed;
    };
    if !within_rate(&source, time.state, time.now) {
        return Answer::Limited;
    }
    reply(d, v4, time.state, time.now, time.received_tai);
    report(&source, d, v4);
    Answer::Sent
}

/// The source, when datagram `d` is a plain NTPv3/v4 client request from
/// a unicast source that can be answered.
#[inline(always)]
fn plain_request(d: &[u8], v4: bool) -> Option<SourceKey> {
    let ip = if v4 { 20 } else { 40 };
    let mut source = SourceKey::default();
    if v4 {
        let total = u16::from_be_bytes([d[2], d[3]]);
        let fragmented = u16::from_be_bytes([d[6], d[7]]) & 0x3fff != 0;
        if usize::from(total) != d.len() || fragmented {
            return None;
        }
        // Not 0/8, loopback, multicast, reserved or broadcast.
        if d[12] == 0 || d[12] == 127 || d[12] >= 224 {
            return None;
        }
        source.family = FAMILY_V4;
        source.addr[..4].copy_from_slice(&d[12..16]);
    } else {
        let payload = u16::from_be_bytes([d[4], d[5]]);
        if usize::from(payload) != UDP_LEN + NTP_LEN || d[8] == 0xff {
            return None;
        }
        source.family = tollgate_common::FAMILY_V6;
        source.addr.copy_from_slice(&d[8..24]);
    }
    let udp = &d[ip..ip + UDP_LEN];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    if sport == 0 || usize::from(u16::from_be_bytes([udp[4], udp[5]])) != UDP_LEN + NTP_LEN {
        return None;
    }
    let ntp = &d[ip + UDP_LEN..];
    let version = (ntp[0] >> 3) & 0b111;
    let mode = ntp[0] & 0b111;
    if mode != 3 || !(version == 3 || version == 4) {
        return None;
    }
    if version == 4 && ntp[16..24] == NTPV5_UPGRADE {
        return None;
    }
    Some(source)
}

/// Whether `source` may have a reply now, charging it if so: GCRA, the
/// token bucket of chrony's `ratelimit`; when it is empty, one request in
/// 2^leak is answered anyway (without a charge, as the userspace limiter
/// does) so a spoofed flood cannot lock the real device out.
#[inline(always)]
fn within_rate(source: &SourceKey, state: &NtpFastState, now: u64) -> bool {
    let slot = TG_NTP_RATE.get_ptr_mut(*source);
    // SAFETY: read at once; a racing CPU can at worst lose one charge.
    let next = slot.map_or(now, |t| unsafe { *t }).max(now);
    if next - now > state.rate_tolerance_ns {
        let leak = u32::from(state.rate_leak & 0x1f);
        // SAFETY: the helper has no preconditions.
        return leak != 0 && unsafe { bpf_get_prandom_u32() } & ((1u32 << leak) - 1) == 0;
    }
    let charged = next + state.rate_interval_ns;
    match slot {
        // In place: updating an LRU entry allocates a new node and frees
        // the old one, several times the cost of the rest of the answer.
        // SAFETY: a value of the map, valid while the program runs; a
        // racing CPU can at worst lose one charge, as above.
        Some(t) => unsafe { *t = charged },
        // A full LRU evicts its oldest source, which then starts over with
        // a full burst: errs towards answering, never against a device.
        None => {
            let _ = TG_NTP_RATE.insert(*source, charged, 0);
        }
    }
    true
}

/// Rewrites request `d` into the reply.
#[inline(always)]
fn reply(d: &mut [u8], v4: bool, state: &NtpFastState, now: u64, received_tai: u64) {
    let ip = if v4 { 20 } else { 40 };
    // Addresses swapped, a fresh hop count.
    let (source, width) = if v4 { (12, 4) } else { (8, 16) };
    for i in 0..width {
        d.swap(source + i, source + width + i);
    }
    d[if v4 { 8 } else { 7 }] = HOP_LIMIT;
    // Ports swapped.
    let sport = [d[ip], d[ip + 1]];
    d[ip] = d[ip + 2];
    d[ip + 1] = d[ip + 3];
    d[ip + 2] = sport[0];
    d[ip + 3] = sport[1];

    let n = ip + UDP_LEN;
    let version = (d[n] >> 3) & 0b111;
    let received = ntp_timestamp(received_tai, state.tai_offset_ns);
    let elapsed = now.saturating_sub(state.since_ns).min(MAX_ELAPSED_NS);
    let grown = (elapsed * state.dispersion_rate.min(MAX_DISPERSION_RATE)) >> 48;
    let dispersion = u64::from(state.root_dispersion).saturating_add(grown);
    let dispersion = dispersion.min(u64::from(u32::MAX)) as u32;
    // The origin timestamp is the request's transmit timestamp.
    for i in 0..8 {
        d[n + 24 + i] = d[n + 40 + i];
    }
    d[n] = ((state.leap & 3) << 6) | (version << 3) | 4;
    d[n + 1] = state.stratum;
    // d[n + 2], the poll, is echoed.
    d[n + 3] = state.precision as u8;
    d[n + 4..n + 8].copy_from_slice(&state.root_delay);
    d[n + 8..n + 12].copy_from_slice(&dispersion.to_be_bytes());
    d[n + 12..n + 16].copy_from_slice(&state.reference_id);
    // The reference timestamp: the receive time to 128 s, as ntp-proto
    // gives it (it says when the clock was last set without telling much).
    let reference = received & !((1u64 << 39) - 1);
    d[n + 16..n + 24].copy_from_slice(&reference.to_be_bytes());
    d[n + 32..n + 40].copy_from_slice(&received.to_be_bytes());
    // T3 last, as close to the send as the program gets.
    // SAFETY: the helper has no preconditions.
    let transmit = ntp_timestamp(unsafe { bpf_ktime_get_tai_ns() }, state.tai_offset_ns);
    d[n + 40..n + 48].copy_from_slice(&transmit.to_be_bytes());

    // Checksums: UDP over the pseudo-header, then the IPv4 header's.
    d[ip + 6] = 0;
    d[ip + 7] = 0;
    let addresses = if v4 { &d[12..20] } else { &d[8..40] };
    let acc = sum(
        addresses,
        u32::from(IPPROTO_UDP) + (UDP_LEN + NTP_LEN) as u32,
    );
    let mut udp_sum = checksum(sum(&d[ip..], acc));
    if udp_sum == [0, 0] {
        // RFC 768: a computed zero is sent as all ones (zero means none).
        udp_sum = [0xff, 0xff];
    }
    d[ip + 6..ip + 8].copy_from_slice(&udp_sum);
    if v4 {
        d[10] = 0;
        d[11] = 0;
        let ip_sum = checksum(sum(&d[..20], 0));
        d[10..12].copy_from_slice(&ip_sum);
    }
}

/// Reports an answered request to the controller's time health
/// (`TG_NTP_SAMPLES`): its source, and from reply `d` the receive
/// timestamp and the origin timestamp, which is the request's transmit
/// timestamp copied. The controller derives offsets and polling intervals;
/// a full ring loses the sample, never the reply.
#[inline(always)]
fn report(source: &SourceKey, d: &[u8], v4: bool) {
    let n = if v4 { 20 } else { 40 } + UDP_LEN;
    let Some(mut entry) = TG_NTP_SAMPLES.reserve(0) else {
        account::stat(Stat::NtpSamplesLost, 0);
        return;
    };
    let timestamp = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&d[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    entry.write(NtpSample {
        addr: source.addr,
        family: source.family,
        _pad: [0; 7],
        received: timestamp(n + 32),
        transmit: timestamp(n + 24),
    });
    // The default wake-up: only when the controller had caught up, so a
    // busy fast path wakes it once per batch it drains, not per answer.
    entry.submit(0);
}

/// An NTP timestamp (32.32 seconds since 1900, era wrapped as on the wire)
/// of `tai_ns`, CLOCK_TAI in nanoseconds.
///
/// Why CLOCK_TAI: the program's only clock that tells the time of day.
/// `bpf_ktime_get_ns` (monotonic) and `bpf_ktime_get_boot_ns` count from
/// boot; CLOCK_TAI is CLOCK_REALTIME plus the kernel's TAI offset, read
/// from the same timekeeper with the same resolution, stepped and slewed
/// with it. The controller writes that offset (`adjtimex`'s `tai`, 0 when
/// nothing set it) with the state; UTC is CLOCK_TAI minus it, the time
/// the userspace server serves from CLOCK_REALTIME.
#[inline(always)]
fn ntp_timestamp(tai_ns: u64, tai_offset_ns: u64) -> u64 {
    let utc = tai_ns.wrapping_sub(tai_offset_ns);
    let seconds = (utc / NANOS + NTP_UNIX_OFFSET) & 0xffff_ffff;
    let fraction = ((utc % NANOS) << 32) / NANOS;
    (seconds << 32) | fraction
}
