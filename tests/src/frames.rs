//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN`: the fixture table, the
//! kernel-versus-model differential test and the benchmarks feed these to
//! the real program. Checksums are left zero: the dataplane never reads them.

use std::net::IpAddr;

/// The transport header to put after the IP header(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        dport: u16,
    },
    Udp {
        dport: u16,
    },
    Icmp {
        kind: u8,
    },
    Icmpv6 {
        kind: u8,
    },
    /// Any other protocol, with `len` bytes of payload.
    Other {
        proto: u8,
        len: usize,
    },
}

impl Transport {
    pub fn proto(self) -> u8 {
        match self {
            Transport::Tcp { .. } => 6,
            Transport::Udp { .. } => 17,
            Transport::Icmp { .. } => 1,
            Transport::Icmpv6 { .. } => 58,
            Transport::Other { proto, .. } => proto,
        }
    }

    fn header(self) -> Vec<u8> {
        match self {
            Transport::Tcp { dport } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&40000u16.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = 0x02; // SYN
                h
            }
            Transport::Udp { dport } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&40000u16.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&8u16.to_be_bytes());
                h
            }
            Transport::Icmp { kind } | Transport::Icmpv6 { kind } => {
                let mut h = vec![0u8; 8];
                h[0] = kind;
                h
            }
            Transport::Other { len, .. } => vec![0u8; len],
        }
    }
}

/// An IPv6 extension header to insert before the transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    HopByHop,
    DestinationOptions,
    /// Routing header (type 4, segment routing) with this many segments left.
    Routing {
        segments_left: u8,
    },
    Ah,
    Fragment {
        offset: u16,
        more: bool,
        id: u32,
    },
}

impl Extension {
    fn proto(self) -> u8 {
        match self {
            Extension::HopByHop => 0,
            Extension::DestinationOptions => 60,
            Extension::Routing { .. } => 43,
            Extension::Ah => 51,
            Extension::Fragment { .. } => 44,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Extension::HopByHop | Extension::DestinationOptions => {
                // 8 bytes: next, len 0, then PadN padding.
                vec![next, 0, 1, 4, 0, 0, 0, 0]
            }
            Extension::Routing { segments_left } => {
                // 24 bytes: one segment (hdr ext len 2).
                let mut h = vec![0u8; 24];
                h[0] = next;
                h[1] = 2;
                h[2] = 4;
                h[3] = segments_left;
                h
            }
            Extension::Ah => {
                // 16 bytes: payload len field 2 ((2 + 2) * 4).
                let mut h = vec![0u8; 16];
                h[0] = next;
                h[1] = 2;
                h
            }
            Extension::Fragment { offset, more, id } => {
                let mut h = vec![0u8; 8];
                h[0] = next;
                h[2..4].copy_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                h[4..8].copy_from_slice(&id.to_be_bytes());
                h
            }
        }
    }
}

/// IPv4 fragmentation fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Fragment {
    /// In 8-byte units.
    pub offset: u16,
    pub more: bool,
    pub id: u16,
}

/// A packet to craft. `Frame::new` gives a plain one; adjust fields for
/// the unusual cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    /// VLAN tags (TPIDs), outermost first.
    pub vlans: Vec<u16>,
    /// IPv4 options (padded to a multiple of 4 with end-of-list).
    pub ipv4_options: Vec<u8>,
    /// Overrides the IPv4 header length field (in 32-bit words).
    pub ipv4_ihl: Option<u8>,
    pub ipv4_fragment: Option<Ipv4Fragment>,
    pub ipv6_extensions: Vec<Extension>,
    pub hop_limit: u8,
    /// Bytes after the transport header.
    pub payload: usize,
    /// Cut the frame to this many bytes (after the IP lengths are set).
    pub truncate: Option<usize>,
    /// For non-first fragments: no transport header is written.
    pub omit_transport: bool,
}

impl Frame {
    pub fn new(src: IpAddr, dst: IpAddr, transport: Transport) -> Frame {
        Frame {
            src,
            dst,
            transport,
            vlans: Vec::new(),
            ipv4_options: Vec::new(),
            ipv4_ihl: None,
            ipv4_fragment: None,
            ipv6_extensions: Vec::new(),
            hop_limit: 64,
            payload: 0,
            truncate: None,
            omit_transport: false,
        }
    }

    /// The Ethernet frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        for tpid in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0, 1]);
        }
        let mut l4 = if self.omit_transport {
            Vec::new()
        } else {
            self.transport.header()
        };
        l4.resize(l4.len() + self.payload, 0xab);
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut options = self.ipv4_options.clone();
                while !options.len().is_multiple_of(4) {
                    options.push(0);
                }
                let header_len = 20 + options.len();
                let ihl = self.ipv4_ihl.unwrap_or((header_len / 4) as u8);
                let total = (header_len + l4.len()) as u16;
                f.push(0x40 | (ihl & 0x0f));
                f.push(0);
                f.extend_from_slice(&total.to_be_bytes());
                let (id, frag) = match self.ipv4_fragment {
                    Some(fr) => (fr.id, fr.offset | if fr.more { 0x2000 } else { 0 }),
                    None => (0x1234, 0x4000), // DF
                };
                f.extend_from_slice(&id.to_be_bytes());
                f.extend_from_slice(&frag.to_be_bytes());
                f.push(self.hop_limit);
                f.push(self.transport.proto());
                f.extend_from_slice(&[0, 0]);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                f.extend_from_slice(&options);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                f.extend_from_slice(&0x86ddu16.to_be_bytes());
                let mut chain = Vec::new();
                let protos: Vec<u8> = self
                    .ipv6_extensions
                    .iter()
                    .map(|e| e.proto())
                    .chain([self.transport.proto()])
                    .collect();
                for (i, ext) in self.ipv6_extensions.iter().enumerate() {
                    chain.extend_from_slice(&ext.bytes(protos[i + 1]));
                }
                let payload_len = (chain.len() + l4.len()) as u16;
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&payload_len.to_be_bytes());
                f.push(protos[0]);
                f.push(self.hop_limit);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                f.extend_from_slice(&chain);
            }
            _ => panic!("source and destination families differ"),
        }
        f.extend_from_slice(&l4);
        if let Some(n) = self.truncate {
            f.truncate(n);
        }
        f
    }
}
