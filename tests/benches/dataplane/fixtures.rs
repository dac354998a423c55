//! What is measured on: the fleet's devices and policy, the probe frames
//! and the probe sources of each address family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use testkit::frames::{Frame, Transport};
use tollgate::fqdn::FqdnPattern;
use tollgate::policy::{Action, Device, Group, Origin, Policy, PortRange, Rule, RuleId, Target};

/// The built-in NTP allow's address.
pub const NTP_ADDRESS: Ipv4Addr = Ipv4Addr::new(100, 127, 0, 123);
/// The destination port of the TCP probes, one the fleet's first rule
/// allows.
pub const PORT: u16 = 443;
/// The destination port of the UDP probes (CoAP), the fleet's second rule.
pub const UDP_PORT: u16 = 5683;
/// The name of the FQDN rule of [`fleet_policy`]'s `fqdn` variant.
pub const FQDN: &str = "telemetry.fleet.example";

/// Bytes of an Ethernet header without a VLAN tag.
const ETHERNET_HEADER: usize = 14;

/// The transport of a probe: TCP to [`PORT`] (every cell), or UDP to
/// [`UDP_PORT`] (the target cell: an allowed UDP datagram is checked for
/// the NTP fast path, a TCP segment is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Proto::Tcp => PORT,
            Proto::Udp => UDP_PORT,
        }
    }

    /// A frame from `src` to `dst` on this transport and port.
    pub fn frame(self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let transport = match self {
            Proto::Tcp => Transport::Tcp { dport: PORT },
            Proto::Udp => Transport::Udp { dport: UDP_PORT },
        };
        Frame::new(src, dst, transport).build()
    }
}

/// A frame for programs that never read it.
pub fn frame_any() -> Vec<u8> {
    frame(
        Ipv4Addr::new(10, 0, 0, 1).into(),
        Ipv4Addr::new(192, 0, 2, 1).into(),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4 = 0,
    V6 = 1,
}

impl Family {
    pub fn of(net: &IpNet) -> Family {
        Family::of_addr(net.addr())
    }

    pub fn of_addr(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// `addr` with its last byte replaced: another device of the same fleet
/// (every probe source sits where its neighbours are devices too).
pub fn with_last_byte(addr: IpAddr, last: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mut o = a.octets();
            o[3] = last;
            IpAddr::V4(o.into())
        }
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[15] = last;
            IpAddr::V6(o.into())
        }
    }
}

/// The probe frames of one family.
pub struct Probes {
    pub family: Family,
    pub allow: Vec<u8>,
    pub allow_dst: IpAddr,
    pub deny_default: Vec<u8>,
    pub deny_default_dst: IpAddr,
    pub deny_rule: Vec<u8>,
    pub deny_rule_dst: IpAddr,
    /// From a source in no group ([`UNKNOWN_SOURCES`]) to the allow
    /// probe's destination: the policy's `unknown-devices: deny` decides.
    pub unknown: Vec<u8>,
}

/// Sources in no group of the bench's policy (devices are in 10.0.0.0/8
/// and fd00::/16), one per family.
pub const UNKNOWN_SOURCES: [&str; 2] = ["192.168.200.1", "fd99::1"];

impl Probes {
    /// TCP frames from the probe source of `family`; allow and deny(rule)
    /// are placeholders until a policy picks their destinations.
    pub fn frames_for(family: Family, sources: &[IpAddr; 2]) -> Probes {
        Probes::frames_over(family, sources, Proto::Tcp)
    }

    /// [`Probes::frames_for`] on `proto`.
    pub fn frames_over(family: Family, sources: &[IpAddr; 2], proto: Proto) -> Probes {
        let frame = |src, dst| proto.frame(src, dst);
        let src = sources[family as usize];
        let nowhere: IpAddr = match family {
            Family::V4 => Ipv4Addr::new(192, 0, 2, 1).into(),
            Family::V6 => "2001:db8::1".parse().expect("an address"),
        };
        Probes {
            family,
            allow: frame(src, nowhere),
            allow_dst: nowhere,
            deny_default: frame(src, nowhere),
            deny_default_dst: nowhere,
            deny_rule: frame(src, nowhere),
            deny_rule_dst: nowhere,
            unknown: frame(Probes::unknown_source(family), nowhere),
        }
    }

    /// The same probes as a raw-IP link carries them: from the IP header
    /// on (every probe frame is Ethernet without a VLAN tag).
    pub fn without_ethernet(&self) -> Probes {
        self.reframed(|frame| frame[ETHERNET_HEADER..].to_vec())
    }

    /// The same probes behind one 802.1Q VLAN tag (VLAN 100), as a trunk
    /// link carries them: the program's tagged-frame parse.
    pub fn with_vlan_tag(&self) -> Probes {
        self.reframed(|frame| {
            let mut tagged = frame[..12].to_vec();
            tagged.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
            tagged.extend_from_slice(&frame[12..]);
            tagged
        })
    }

    /// The same probes, each frame rewritten by `rewrite`.
    fn reframed(&self, rewrite: impl Fn(&[u8]) -> Vec<u8>) -> Probes {
        Probes {
            family: self.family,
            allow: rewrite(&self.allow),
            allow_dst: self.allow_dst,
            deny_default: rewrite(&self.deny_default),
            deny_default_dst: self.deny_default_dst,
            deny_rule: rewrite(&self.deny_rule),
            deny_rule_dst: self.deny_rule_dst,
            unknown: rewrite(&self.unknown),
        }
    }

    pub fn unknown_source(family: Family) -> IpAddr {
        UNKNOWN_SOURCES[family as usize]
            .parse()
            .expect("an address")
    }
}

/// A TCP probe's frame.
pub fn frame(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    Proto::Tcp.frame(src, dst)
}

pub fn origin() -> Origin {
    Origin {
        file: "bench".into(),
        line: 1,
        column: 1,
    }
}

/// The devices of the fleet and the probe source of each family.
pub fn devices_for(n: usize) -> (Vec<IpNet>, [IpAddr; 2]) {
    let v4 = |i: usize| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i as u32);
    let v6 = |i: usize| {
        Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0)) + i as u128)
    };
    if n >= 100_000 {
        // All exact: half IPv4 /32, half IPv6 /128 (TG_DEV_EXACT).
        let half = n / 2;
        let mut list: Vec<IpNet> = (0..half).map(|i| IpNet::from(IpAddr::V4(v4(i)))).collect();
        list.extend((0..n - half).map(|i| IpNet::from(IpAddr::V6(v6(i)))));
        (list, probe_sources(n))
    } else {
        // A quarter each: /32, /24, /128, /64.
        let q = n / 4;
        let mut list = Vec::with_capacity(n);
        list.extend(
            (1..=q).map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)))),
        );
        list.extend((0..q).map(|i| {
            IpNet::new(Ipv4Addr::new(10, 1 + (i >> 8) as u8, i as u8, 0).into(), 24).expect("a /24")
        }));
        list.extend((1..=q).map(|i| IpNet::from(IpAddr::V6(v6(i)))));
        list.extend((0..n - 3 * q).map(|i| {
            let net = Ipv6Addr::new(0xfd00, 1, 0, i as u16, 0, 0, 0, 0);
            IpNet::new(net.into(), 64).expect("a /64")
        }));
        (list, probe_sources(n))
    }
}

/// The probe source of each family for a fleet of `n` devices: an exact
/// device in the middle for 10⁶; inside the last /24 and /64 for 10³.
pub fn probe_sources(n: usize) -> [IpAddr; 2] {
    if n >= 100_000 {
        let half = n / 2;
        [
            IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (half / 2) as u32,
            )),
            IpAddr::V6(Ipv6Addr::from(
                u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0)) + (half / 2) as u128,
            )),
        ]
    } else {
        let q = n / 4;
        let last = n - 3 * q - 1;
        [
            IpAddr::V4(Ipv4Addr::new(
                10,
                1 + ((q - 1) >> 8) as u8,
                (q - 1) as u8,
                77,
            )),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, last as u16, 0, 0, 0, 0x77)),
        ]
    }
}

/// One group, `fleet`: default deny, `allow tcp [443, 8883]` and `allow udp
/// [5683]` to `allowed`, `deny any` to `blocked` (per family, the first
/// destination and every 100th after it), the built-in NTP allow; with
/// `fqdn`, also `allow tcp [443]` to the name [`FQDN`], which nothing
/// answers, so the group learns no address.
pub fn fleet_policy(destinations: &[IpNet], devices: Vec<IpNet>, fqdn: bool) -> Policy {
    let mut allowed = Vec::new();
    let mut blocked = Vec::new();
    let mut seen = [0usize; 2];
    for net in destinations {
        let n = &mut seen[Family::of(net) as usize];
        if (*n).is_multiple_of(100) {
            blocked.push(*net);
        } else {
            allowed.push(*net);
        }
        *n += 1;
    }
    let ports = vec![PortRange::new(443, 443), PortRange::new(8883, 8883)];
    let rule = |action, list: &str, prefixes, proto, ports: Option<Vec<PortRange>>| Rule {
        id: RuleId::derived(action, &[list.to_string()], proto, ports.as_deref()),
        action,
        targets: vec![Target {
            written: list.into(),
            prefixes,
        }],
        fqdn: Vec::new(),
        proto,
        ports,
        comment: None,
        origin: origin(),
    };
    let mut rules = vec![
        rule(
            Action::Allow,
            "allowed",
            allowed.clone(),
            Some(6),
            Some(ports),
        ),
        rule(
            Action::Allow,
            "allowed",
            allowed,
            Some(17),
            Some(vec![PortRange::new(UDP_PORT, UDP_PORT)]),
        ),
        rule(Action::Deny, "blocked", blocked, None, None),
    ];
    if fqdn {
        let https = vec![PortRange::new(PORT, PORT)];
        rules.push(Rule {
            id: RuleId::derived(Action::Allow, &[FQDN.to_string()], Some(6), Some(&https)),
            action: Action::Allow,
            targets: Vec::new(),
            fqdn: vec![FqdnPattern::parse(FQDN).expect("a name")],
            proto: Some(6),
            ports: Some(https),
            comment: None,
            origin: origin(),
        });
    }
    let group = Group {
        name: "fleet".into(),
        description: None,
        devices: devices
            .into_iter()
            .map(|prefix| Device {
                prefix,
                line: 1,
                column: 1,
            })
            .collect(),
        default: Action::Deny,
        audit: false,
        rules,
        origin: origin(),
        default_origin: origin(),
    };
    Policy {
        groups: vec![group.into()],
        unknown_devices: Action::Deny,
        unknown_devices_origin: None,
        ntp: vec![IpAddr::V4(NTP_ADDRESS)],
        gateway: Vec::new(),
    }
}
