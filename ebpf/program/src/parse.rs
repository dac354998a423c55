//! Header parsing: Ethernet, VLAN, IPv4 (with options), IPv6 (with extension
//! headers), TCP, UDP, ICMP and ICMPv6, on Ethernet links ([`ethernet`]) and
//! on raw-IP links ([`raw_ip`]: tun, WireGuard, PPP, IP tunnels, raw-IP
//! modems), where a packet starts at its IP header.
//!
//! Rules, in the order they apply. Each failure is a counted drop with its own
//! [`Stat`], never a pass:
//! 1. Ethernet links: up to two VLAN tags (802.1Q, 802.1ad, 0x9100); a
//!    third: `DropVlan`.
//! 2. Ethernet links: ARP is [`Parsed::Arp`] (`main` passes it, `PassArp`);
//!    every other non-IP EtherType is [`Parsed::NonIp`], which `main` drops
//!    (`DropNonIp`) unless the operator listed it in `pass-ethertypes`
//!    (`PassNonIp`). Raw-IP links: the IP version comes from the skb's
//!    protocol where the hook has one (TC), else from the version nibble
//!    (XDP, as the kernel's own tun driver decides it); neither IPv4 nor
//!    IPv6 is `DropNonIp`, and a header whose version disagrees with the
//!    skb's protocol is `DropMalformed`.
//! 3. IPv4: version 4, `ihl >= 5`, total length >= header length, every
//!    option well formed (`DropMalformed`); loose or strict source route
//!    options hide the real destination (`DropSourceRoute`).
//! 4. IPv6: version 6; a destination inside ::ffff:0:0/96 would alias an IPv4
//!    destination (`DropIpv4Mapped`). Extension headers (hop-by-hop first
//!    only, destination options, routing, fragment, AH) are walked up to
//!    [`MAX_EXT_HEADERS`] headers and [`MAX_EXT_BYTES`] bytes (`DropIpv6Ext`
//!    beyond); a routing header with segments left redirects the packet
//!    (`DropRoutingHeader`).
//! 5. Transport headers must be complete within the packet and the IP length:
//!    TCP 20 bytes (data offset >= 5), UDP 8, ICMP 8, ICMPv6 4
//!    (`DropMalformed`; in a first fragment `DropFragment`, RFC 7112).
//!    A TCP fragment at offset 8 would overwrite the TCP header
//!    (`DropFragment`, RFC 1858). Later fragments carry no transport header:
//!    their port is unknown.
//! 6. IPv6 router solicitation and neighbour solicitation/advertisement with
//!    hop limit 255 are marked [`Packet::neighbor_discovery`]; `main` passes
//!    them (`PassNeighborDiscovery`) when they stay on the link: to a
//!    link-local or link-scope multicast address, or to one of the gateway's
//!    own addresses. IPv6 cannot work without them; to anywhere else they are
//!    an ICMPv6 packet like any other, subject to the policy (so they cannot
//!    carry data off the link).

use tollgate_common::{FAMILY_V4, FAMILY_V6, Stat};

/// Bounds on the IPv6 extension header walk.
pub const MAX_EXT_HEADERS: usize = 8;
pub const MAX_EXT_BYTES: usize = 512;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_HLEN: usize = 14;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

const IPOPT_LSRR: u8 = 131;
const IPOPT_SSRR: u8 = 137;

const ND_ROUTER_SOLICIT: u8 = 133;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;

/// The packet bytes `[start, end)` as the context hands them over.
pub struct Frame {
    pub start: usize,
    pub end: usize,
}

impl Frame {
    /// Copies `N` bytes at `offset`, or `None` past the end. The comparison
    /// against `end` is what proves the access safe to the verifier.
    #[inline(always)]
    pub fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if self.start + offset + N > self.end {
            return None;
        }
        // SAFETY: bounds checked just above; packet memory may be unaligned.
        Some(unsafe { core::ptr::read_unaligned((self.start + offset) as *const [u8; N]) })
    }

    /// The `N` bytes at `offset`, checked once, whose fields [`Header`]
    /// then reads in place; `None` past the end.
    #[inline(always)]
    pub fn header<const N: usize>(&self, offset: usize) -> Option<Header<N>> {
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        Some(Header { at })
    }
}

/// `N` bytes of the frame that one bounds check has proved present.
///
/// Each field is one load of its width. `Frame::bytes` reads unaligned,
/// which the BPF backend turns into a load, a shift and an or per byte (an
/// IPv6 header's 32 address bytes were about 100 instructions on every
/// packet, before the copies into the stack). These loads are typed as
/// aligned so that LLVM emits one load each. The packet may not be aligned
/// for them, and that is fine where Tollgate runs: the verifier checks
/// packet alignment only for programs loaded with `BPF_F_STRICT_ALIGNMENT`
/// or on architectures without efficient unaligned access, and the JITs of
/// x86-64 and arm64 emit plain loads, which take any address.
#[derive(Clone, Copy)]
pub struct Header<const N: usize> {
    at: usize,
}

impl<const N: usize> Header<N> {
    #[inline(always)]
    fn load<T: Copy, const AT: usize>(self) -> T {
        const { assert!(AT + size_of::<T>() <= N) };
        // SAFETY: within the N bytes `Frame::header` checked (asserted
        // above at compile time); alignment: see the type's comment.
        unsafe { core::ptr::read((self.at + AT) as *const T) }
    }

    #[inline(always)]
    pub fn u8<const AT: usize>(self) -> u8 {
        self.load::<u8, AT>()
    }

    /// A big-endian 16-bit field.
    #[inline(always)]
    pub fn be16<const AT: usize>(self) -> u16 {
        u16::from_be(self.load::<u16, AT>())
    }

    /// 4 bytes in memory order.
    #[inline(always)]
    fn word<const AT: usize>(self) -> u32 {
        self.load::<u32, AT>()
    }

    /// 8 bytes in memory order.
    #[inline(always)]
    fn dword<const AT: usize>(self) -> u64 {
        self.load::<u64, AT>()
    }
}

/// An address's 16 bytes (an IPv4 address in the first 4, the rest zero)
/// in memory order, as two words: two loads to read, two stores to copy,
/// and one byte swap a half for the classifier.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Addr([u64; 2]);

impl Addr {
    #[inline(always)]
    fn v4(word: u32) -> Self {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&word.to_ne_bytes());
        Addr([u64::from_ne_bytes(bytes), 0])
    }

    /// The 16 bytes, as map keys and events carry them.
    #[inline(always)]
    pub fn bytes(self) -> [u8; 16] {
        let [a, b] = self.0;
        let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
        [
            a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5],
            b[6], b[7],
        ]
    }

    /// The address as big-endian halves, the scalars the classifier's
    /// global functions take: bit 0 of the address is the top bit of the
    /// first.
    #[inline(always)]
    pub fn halves(self) -> [u64; 2] {
        [u64::from_be(self.0[0]), u64::from_be(self.0[1])]
    }
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    Whole,
    /// Offset 0 with more fragments: carries the transport header.
    First {
        id: u32,
    },
    /// Offset > 0: no transport header, port unknown.
    Later {
        id: u32,
    },
}

/// The facts the decision needs.
pub struct Packet {
    pub family: u8,
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    pub dport: u16,
    pub port_known: bool,
    pub fragment: Fragment,
    /// The protocol every fragment of the datagram carries, which keys the
    /// remembered first-fragment verdict: the IPv4 protocol, or the IPv6
    /// Fragment header's next header (`proto` of an IPv6 first fragment is
    /// the upper layer after any further extension headers).
    pub fragment_proto: u8,
    /// An IPv6 RS, NS or NA with hop limit 255 (see rule 6).
    pub neighbor_discovery: bool,
    /// Offset of the IP header: the link header's length.
    pub l3: usize,
    /// Offset of the transport header (after IPv4 options or IPv6
    /// extension headers); meaningless in a later fragment.
    pub l4: usize,
}

pub enum Parsed {
    Arp,
    NonIp { ethertype: u16 },
    Ip(Packet),
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    matches!(ethertype, 0x8100 | 0x88a8 | 0x9100)
}

#[inline(always)]
fn ethertype_at(f: &Frame, offset: usize) -> Result<u16, Stat> {
    Ok(f.header::<2>(offset)
        .ok_or(Stat::DropMalformed)?
        .be16::<0>())
}

/// Parses a frame of an Ethernet link.
#[inline(always)]
pub fn ethernet(f: &Frame) -> Result<Parsed, Stat> {
    let ethertype = ethertype_at(f, 12)?;
    // An untagged frame, nearly every frame a device sends, is parsed with
    // its IP header at a constant offset: the offsets, bounds checks and
    // the packet's `l3` and `l4` then fold into constants, as on a raw-IP
    // link, which was 3 ns a packet cheaper than the one parse with the
    // offset a variable (BENCHMARKS.md, eleventh round). Tagged frames take
    // a second copy of the IP parse, with the offset a variable.
    if !is_vlan(ethertype) {
        return by_ethertype(f, ethertype, ETH_HLEN);
    }
    let mut ethertype = ethertype_at(f, 16)?;
    let mut l3 = ETH_HLEN + 4;
    if is_vlan(ethertype) {
        ethertype = ethertype_at(f, 20)?;
        l3 += 4;
        if is_vlan(ethertype) {
            return Err(Stat::DropVlan);
        }
    }
    by_ethertype(f, ethertype, l3)
}

/// The frame by its (innermost) EtherType, the IP header at `l3`.
#[inline(always)]
fn by_ethertype(f: &Frame, ethertype: u16, l3: usize) -> Result<Parsed, Stat> {
    match ethertype {
        ETH_P_IP => ipv4(f, l3).map(Parsed::Ip),
        ETH_P_IPV6 => ipv6(f, l3),
        ETH_P_ARP => Ok(Parsed::Arp),
        _ => Ok(Parsed::NonIp { ethertype }),
    }
}

/// Parses a packet of a raw-IP link, which starts at its IP header.
/// `protocol` is the skb's protocol (host order) where the hook has one.
#[inline(always)]
pub fn raw_ip(f: &Frame, protocol: Option<u16>) -> Result<Parsed, Stat> {
    // Two bytes: the verifier learns nothing from a one-byte bounds check
    // (see `check_ipv4_options`); every IP header is longer anyway.
    let version = f.header::<2>(0).ok_or(Stat::DropMalformed)?.u8::<0>() >> 4;
    let ethertype = match protocol {
        Some(p) => p,
        None if version == 4 => ETH_P_IP,
        None if version == 6 => ETH_P_IPV6,
        None => return Err(Stat::DropNonIp),
    };
    // ipv4 and ipv6 check the version nibble against the protocol.
    match ethertype {
        ETH_P_IP => ipv4(f, 0).map(Parsed::Ip),
        ETH_P_IPV6 => ipv6(f, 0),
        _ => Err(Stat::DropNonIp),
    }
}

#[inline(always)]
fn ipv4(f: &Frame, l3: usize) -> Result<Packet, Stat> {
    let h = f.header::<20>(l3).ok_or(Stat::DropMalformed)?;
    let version_ihl = h.u8::<0>();
    let ihl = usize::from(version_ihl & 0x0f);
    if version_ihl >> 4 != 4 || ihl < 5 {
        return Err(Stat::DropMalformed);
    }
    let header_len = ihl * 4;
    let total_len = usize::from(h.be16::<2>());
    if total_len < header_len {
        return Err(Stat::DropMalformed);
    }
    if header_len > 20 {
        check_ipv4_options(f, l3 + 20, header_len - 20)?;
    }
    let frag = h.be16::<6>();
    let offset = frag & 0x1fff;
    let id = u32::from(h.be16::<4>());
    let fragment = if offset != 0 {
        Fragment::Later { id }
    } else if frag & 0x2000 != 0 {
        Fragment::First { id }
    } else {
        Fragment::Whole
    };
    let proto = h.u8::<9>();
    if proto == IPPROTO_TCP && offset == 1 {
        return Err(Stat::DropFragment);
    }
    let mut p = Packet {
        family: FAMILY_V4,
        src: Addr::v4(h.word::<12>()),
        dst: Addr::v4(h.word::<16>()),
        proto,
        dport: 0,
        port_known: false,
        fragment,
        fragment_proto: proto,
        neighbor_discovery: false,
        l3,
        l4: l3 + header_len,
    };
    transport(f, &mut p, l3 + header_len, l3 + total_len)?;
    Ok(p)
}

/// Walks the IPv4 options (`len` bytes at `at`, at most 40).
///
/// The loop visits every byte position `i` and acts only where an option
/// starts (`i == next`). Written the obvious way — jumping from option to
/// option — the jump target feeds the packet address, so the verifier must
/// track it exactly and explores every combination of option lengths. Here
/// only `i` (one value per iteration) is an address; `next` only steers
/// branches, and states that differ in it merge.
///
/// Reads are two bytes wide: the verifier learns a packet range from a bounds
/// check at a variable offset only if it covers at least two bytes (LLVM turns
/// a one-byte `p + 1 > end` into `p >= end`, which proves nothing). The last
/// option byte is read together with the byte before it.
#[inline(always)]
fn check_ipv4_options(f: &Frame, at: usize, len: usize) -> Result<(), Stat> {
    let mut next = 0usize;
    for i in 0..40usize {
        if i >= len {
            break;
        }
        if i != next {
            continue;
        }
        let (kind, opt_len) = if i + 2 <= len {
            let b: [u8; 2] = f.bytes(at + i).ok_or(Stat::DropMalformed)?;
            (b[0], usize::from(b[1]))
        } else {
            // The last byte (`len` is a multiple of 4, so i >= 3 here): only
            // end-of-list or no-op fit, and they have no length byte.
            let b: [u8; 2] = f.bytes(at + i - 1).ok_or(Stat::DropMalformed)?;
            (b[1], 0)
        };
        match kind {
            0 => break,
            1 => next = i + 1,
            _ => {
                if opt_len < 2 || i + opt_len > len {
                    return Err(Stat::DropMalformed);
                }
                if kind == IPOPT_LSRR || kind == IPOPT_SSRR {
                    return Err(Stat::DropSourceRoute);
                }
                next = i + opt_len;
            }
        }
    }
    Ok(())
}

#[inline(always)]
fn ipv6(f: &Frame, l3: usize) -> Result<Parsed, Stat> {
    let h = f.header::<40>(l3).ok_or(Stat::DropMalformed)?;
    if h.u8::<0>() >> 4 != 6 {
        return Err(Stat::DropMalformed);
    }
    let payload_len = usize::from(h.be16::<4>());
    let hop_limit = h.u8::<7>();
    let mut p = Packet {
        family: FAMILY_V6,
        src: Addr([h.dword::<8>(), h.dword::<16>()]),
        dst: Addr([h.dword::<24>(), h.dword::<32>()]),
        proto: h.u8::<6>(),
        dport: 0,
        port_known: false,
        fragment: Fragment::Whole,
        fragment_proto: 0,
        neighbor_discovery: false,
        l3,
        l4: l3 + 40,
    };
    let [dst_hi, dst_lo] = p.dst.halves();
    if dst_hi == 0 && dst_lo >> 32 == 0xffff {
        return Err(Stat::DropIpv4Mapped);
    }

    let end = if payload_len == 0 {
        usize::MAX
    } else {
        l3 + 40 + payload_len
    };
    // Nearly every packet has no extension header: its transport header at
    // l3 + 40, an offset the compiler can fold (as `ethernet` does l3).
    if !is_ipv6_extension(p.proto) {
        return ipv6_transport(f, p, l3 + 40, end, hop_limit);
    }

    let first_ext = l3 + 40;
    let mut at = first_ext;
    let mut walked = 0;
    while walked < MAX_EXT_HEADERS {
        let header_len = match p.proto {
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING | IPPROTO_AH => {
                if p.proto == IPPROTO_HOPOPTS && walked != 0 {
                    return Err(Stat::DropIpv6Ext);
                }
                let e = f.header::<4>(at).ok_or(Stat::DropMalformed)?;
                if p.proto == IPPROTO_ROUTING && e.u8::<3>() != 0 {
                    return Err(Stat::DropRoutingHeader);
                }
                let len = usize::from(e.u8::<1>());
                let header_len = if p.proto == IPPROTO_AH {
                    (len + 2) * 4
                } else {
                    (len + 1) * 8
                };
                p.proto = e.u8::<0>();
                header_len
            }
            IPPROTO_FRAGMENT => {
                let e = f.header::<8>(at).ok_or(Stat::DropMalformed)?;
                p.proto = e.u8::<0>();
                p.fragment_proto = p.proto;
                let offset_flags = e.be16::<2>();
                let offset = offset_flags >> 3;
                let id = u32::from_be(e.word::<4>());
                if offset != 0 {
                    // Nothing after this header is the start of anything.
                    p.fragment = Fragment::Later { id };
                    if p.proto == IPPROTO_TCP && offset == 1 {
                        return Err(Stat::DropFragment);
                    }
                    return Ok(Parsed::Ip(p));
                }
                // Offset 0 without M is an atomic fragment (RFC 6946):
                // processed as a whole packet.
                if offset_flags & 1 != 0 {
                    p.fragment = Fragment::First { id };
                }
                8
            }
            _ => break,
        };
        at += header_len;
        if at - first_ext > MAX_EXT_BYTES {
            return Err(Stat::DropIpv6Ext);
        }
        walked += 1;
    }
    if is_ipv6_extension(p.proto) {
        return Err(Stat::DropIpv6Ext);
    }

    ipv6_transport(f, p, at, end, hop_limit)
}

/// The rest of an IPv6 packet from its transport header at `l4`.
#[inline(always)]
fn ipv6_transport(
    f: &Frame,
    mut p: Packet,
    l4: usize,
    end: usize,
    hop_limit: u8,
) -> Result<Parsed, Stat> {
    p.l4 = l4;
    let icmp_type = transport(f, &mut p, l4, end)?;
    p.neighbor_discovery = p.proto == IPPROTO_ICMPV6
        && matches!(
            icmp_type,
            ND_ROUTER_SOLICIT | ND_NEIGHBOR_SOLICIT | ND_NEIGHBOR_ADVERT
        )
        && hop_limit == 255;
    Ok(Parsed::Ip(p))
}

#[inline(always)]
fn is_ipv6_extension(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

/// fe80::/10 or ff02::/16: never forwarded off the link.
#[inline(always)]
pub fn is_link_scope(addr: Addr) -> bool {
    let top = addr.halves()[0] >> 48;
    top & 0xffc0 == 0xfe80 || top == 0xff02
}

/// Reads the transport header at `at`, which must end by `end` (the IP
/// datagram's declared end) and within the frame. Returns the ICMP type.
#[inline(always)]
fn transport(f: &Frame, p: &mut Packet, at: usize, end: usize) -> Result<u8, Stat> {
    let truncated = if let Fragment::First { .. } = p.fragment {
        Stat::DropFragment
    } else {
        Stat::DropMalformed
    };
    if let Fragment::Later { .. } = p.fragment {
        return Ok(0);
    }
    match p.proto {
        IPPROTO_TCP => {
            let h = f.header::<20>(at).ok_or(truncated)?;
            if at + 20 > end {
                return Err(truncated);
            }
            if h.u8::<12>() >> 4 < 5 {
                return Err(Stat::DropMalformed);
            }
            p.dport = h.be16::<2>();
            p.port_known = true;
            Ok(0)
        }
        IPPROTO_UDP => {
            let h = f.header::<8>(at).ok_or(truncated)?;
            if at + 8 > end {
                return Err(truncated);
            }
            p.dport = h.be16::<2>();
            p.port_known = true;
            Ok(0)
        }
        IPPROTO_ICMP => {
            let h = f.header::<8>(at).ok_or(truncated)?;
            if at + 8 > end {
                return Err(truncated);
            }
            Ok(h.u8::<0>())
        }
        IPPROTO_ICMPV6 => {
            let h = f.header::<4>(at).ok_or(truncated)?;
            if at + 4 > end {
                return Err(truncated);
            }
            Ok(h.u8::<0>())
        }
        _ => Ok(0),
    }
}
