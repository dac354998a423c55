//! The smallest Ethernet frame that carries a packet's decision facts:
//! what the controller hands the probe for each `expect:` case. Headers are
//! only as complete as the dataplane's parser requires (no checksums).

use std::net::IpAddr;

use crate::{
    policy::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    tables::PacketFacts,
};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// An Ethernet frame from `packet.src` to `packet.dst` with its protocol
/// and destination port (the source port is an ephemeral one).
pub fn frame(packet: &PacketFacts) -> Vec<u8> {
    let transport = transport(packet.proto, packet.dport.unwrap_or(0));
    let mut frame = Vec::with_capacity(14 + 40 + transport.len());
    // Destination and source MAC: locally administered, never on a wire.
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02]);
    match (packet.src, packet.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let total = (20 + transport.len()) as u16;
            frame.extend_from_slice(&[0x45, 0]);
            frame.extend_from_slice(&total.to_be_bytes());
            // Identification, flags and fragment offset: a whole datagram.
            frame.extend_from_slice(&[0, 0, 0, 0]);
            frame.extend_from_slice(&[64, packet.proto, 0, 0]);
            frame.extend_from_slice(&src.octets());
            frame.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&(transport.len() as u16).to_be_bytes());
            frame.extend_from_slice(&[packet.proto, 64]);
            frame.extend_from_slice(&v6(src));
            frame.extend_from_slice(&v6(dst));
        }
    }
    frame.extend_from_slice(&transport);
    frame
}

fn v6(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The transport header: TCP (20 bytes, a SYN), UDP (8), an echo request
/// for ICMP and ICMPv6 (8); 8 bytes of zeros for any other protocol.
fn transport(proto: u8, dport: u16) -> Vec<u8> {
    const SOURCE_PORT: u16 = 40000;
    let mut h = match proto {
        PROTO_TCP => vec![0; 20],
        _ => vec![0; 8],
    };
    match proto {
        PROTO_TCP | PROTO_UDP => {
            h[..2].copy_from_slice(&SOURCE_PORT.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            if proto == PROTO_TCP {
                h[12] = 5 << 4;
                h[13] = 0x02;
            } else {
                h[4..6].copy_from_slice(&8u16.to_be_bytes());
            }
        }
        PROTO_ICMP => h[0] = 8,
        PROTO_ICMPV6 => h[0] = 128,
        _ => {}
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_tcp_frame_has_its_addresses_and_port_where_parsers_look() {
        let f = frame(&PacketFacts {
            src: "10.64.0.10".parse().unwrap(),
            dst: "13.112.10.10".parse().unwrap(),
            proto: PROTO_TCP,
            dport: Some(8883),
        });
        assert_eq!(f.len(), 14 + 20 + 20);
        assert_eq!(f[12..14], ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(f[14], 0x45, "version 4, 20-byte header");
        assert_eq!(f[16..18], 40u16.to_be_bytes(), "total length");
        assert_eq!(f[23], PROTO_TCP);
        assert_eq!(f[26..30], [10, 64, 0, 10]);
        assert_eq!(f[30..34], [13, 112, 10, 10]);
        assert_eq!(f[36..38], 8883u16.to_be_bytes(), "destination port");
        assert_eq!(f[46] >> 4, 5, "TCP data offset");
    }

    #[test]
    fn an_ipv6_udp_frame_has_its_addresses_and_port_where_parsers_look() {
        let src: std::net::Ipv6Addr = "fd00:64::10".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let f = frame(&PacketFacts {
            src: src.into(),
            dst: dst.into(),
            proto: PROTO_UDP,
            dport: Some(53),
        });
        assert_eq!(f.len(), 14 + 40 + 8);
        assert_eq!(f[12..14], ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(f[14] >> 4, 6);
        assert_eq!(f[18..20], 8u16.to_be_bytes(), "payload length");
        assert_eq!(f[20], PROTO_UDP, "next header");
        assert_eq!(f[22..38], src.octets());
        assert_eq!(f[38..54], dst.octets());
        assert_eq!(f[56..58], 53u16.to_be_bytes(), "destination port");
    }
}
