//! The two-group fleet the end-to-end suites send real traffic through, on
//! Ethernet (`dataplane_e2e`) and on raw-IP links (`dataplane_links`):
//! meters are default deny with a few allows, cameras default allow with a
//! few denies, and a third prefix belongs to no group.

use std::net::IpAddr;

use tollgate::{
    explain::explain,
    policy::Policy,
    tables::{CompiledPolicy, PacketFacts},
};
use tollgate_common::Verdict;

/// Every probe a fleet test sends: one allowed and one denied port of each
/// transport for meters, and a ping.
pub const PROBES: [Probe; 5] = [
    Probe::Tcp(TCP_PORTS[0]),
    Probe::Tcp(TCP_PORTS[1]),
    Probe::Udp(UDP_PORTS[0]),
    Probe::Udp(UDP_PORTS[1]),
    Probe::Ping,
];

/// Every (device, service, probe) of one family, with explain's verdict.
pub fn cases(policy: &Policy, tables: &CompiledPolicy) -> Vec<(IpAddr, IpAddr, Probe, bool)> {
    let mut out = Vec::new();
    for d in DEVICES {
        let src: IpAddr = d.parse().unwrap();
        for s in SERVICES {
            let dst: IpAddr = s.parse().unwrap();
            if src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            for probe in PROBES {
                out.push((src, dst, probe, predicted(policy, tables, src, dst, probe)));
            }
        }
    }
    out
}

/// What a probe sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    Tcp(u16),
    Udp(u16),
    Ping,
}

/// Whether `explain` lets the probe's first packet through.
pub fn predicted(
    policy: &Policy,
    tables: &CompiledPolicy,
    src: IpAddr,
    dst: IpAddr,
    probe: Probe,
) -> bool {
    let (proto, dport) = match probe {
        Probe::Tcp(p) => (6, Some(p)),
        Probe::Udp(p) => (17, Some(p)),
        Probe::Ping if src.is_ipv4() => (1, None),
        Probe::Ping => (58, None),
    };
    let facts = PacketFacts {
        src,
        dst,
        proto,
        dport,
    };
    explain(policy, tables, &facts).verdict != Verdict::Deny
}

pub const POLICY: &str = "\
lists:
  cloud: [203.0.113.0/24, 2001:db8:100::/48]
groups:
  meters:
    devices: [10.64.0.0/16, fd00:64::/48]
    default: deny
    rules:
      - allow: {to: cloud, proto: tcp, ports: [443]}
      - allow: {to: cloud, proto: udp, ports: [\"7000-7010\"]}
      - allow: {to: 203.0.113.5, proto: icmp}
      - allow: {to: \"2001:db8:100::5\", proto: icmpv6}
      - deny: {to: [203.0.113.6, \"2001:db8:100::6\"], proto: tcp, ports: [443]}
  cameras:
    devices: [10.65.0.0/16, fd00:65::/48]
    default: allow
    rules:
      - deny: {to: cloud, proto: udp}
      - deny: {to: 203.0.113.6, proto: icmp}
";

/// A meter, a camera and an unknown device, in both families.
pub const DEVICES: [&str; 6] = [
    "10.64.0.10",
    "fd00:64::10",
    "10.65.0.10",
    "fd00:65::10",
    "10.66.0.10",
    "fd00:66::10",
];
pub const SERVICES: [&str; 4] = [
    "203.0.113.5",
    "203.0.113.6",
    "2001:db8:100::5",
    "2001:db8:100::6",
];
/// One allowed and one denied port of each transport for meters.
pub const TCP_PORTS: [u16; 2] = [443, 8443];
pub const UDP_PORTS: [u16; 2] = [7000, 7020];
