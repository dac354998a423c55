//! The parse rules of the dataplane, one crafted frame each, run through the
//! real XDP and TC programs with `BPF_PROG_TEST_RUN`. Each row names the
//! input, the expected action and the statistic that must count it.
//!
//! The same IP rows, without their Ethernet header, also run through the
//! raw-IP XDP variant (tun, WireGuard, PPP, IP tunnels): a packet is judged
//! the same whichever link it arrives on. (The skb test-run always parses
//! an Ethernet header, so the raw-IP TC variant is proven with real packets
//! on a tun device in `dataplane_links`.)

use std::net::IpAddr;

use testkit::frames::{Extension, Frame, Ipv4Fragment, Transport};
use testkit::tables::Tables;
use tollgate::{
    datapath::{Dataplane, Options, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS},
    links::LinkKind,
    tables::CompiledPolicy,
};
use tollgate_common::Stat;

/// Group 1 `devices` (10.0.0.0/8, fd00::/8) allows everything by default.
/// Group 2 `strict` (10.1.0.0/16) allows only UDP/53 and denies the rest.
/// Everything else is an unknown device, denied. The gateway is fd00::1.
fn policy() -> CompiledPolicy {
    let mut t = Tables::new(true);
    t.group("devices", false, &["10.0.0.0/8", "fd00::/8"]);
    let strict = t.group("strict", true, &["10.1.0.0/16"]);
    t.rule(
        strict,
        "0.0.0.0/0",
        Some(17),
        Some((53, 53)),
        false,
        "allow-dns",
    );
    t.gateway("fd00::1");
    t.build()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(transport: Transport) -> Frame {
    Frame::new(ip("10.2.0.1"), ip("198.51.100.7"), transport)
}

fn v6(transport: Transport) -> Frame {
    Frame::new(ip("fd00::1"), ip("2001:db8::7"), transport)
}

const UDP: Transport = Transport::Udp { dport: 5000 };
const TCP: Transport = Transport::Tcp { dport: 443 };

/// What must happen to a frame: passed or dropped, and the statistic that
/// explains it (`None`: a plain policy allow, charged to a rule counter).
struct Expect {
    pass: bool,
    stat: Option<Stat>,
}

const ALLOWED: Expect = Expect {
    pass: true,
    stat: None,
};

const fn dropped(stat: Stat) -> Expect {
    Expect {
        pass: false,
        stat: Some(stat),
    }
}

const fn passed(stat: Stat) -> Expect {
    Expect {
        pass: true,
        stat: Some(stat),
    }
}

fn fixtures() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let mut rows: Vec<(&'static str, Vec<u8>, Expect)> = Vec::new();
    let mut row = |name, frame: Frame, expect| rows.push((name, frame.build(), expect));

    // Ethernet and VLAN.
    row("ipv4 udp, untagged", v4(UDP), ALLOWED);
    let mut f = v4(UDP);
    f.vlans = vec![0x8100];
    row("one 802.1Q tag", f, ALLOWED);
    let mut f = v6(UDP);
    f.vlans = vec![0x88a8, 0x8100];
    row("802.1ad + 802.1Q tags", f, ALLOWED);
    let mut f = v4(UDP);
    f.vlans = vec![0x88a8, 0x8100, 0x8100];
    row("three VLAN tags", f, dropped(Stat::DropVlan));
    let mut f = v4(UDP);
    f.vlans = vec![0x9100, 0x9100, 0x9100];
    row("three legacy 0x9100 tags", f, dropped(Stat::DropVlan));
    // (Frames shorter than an Ethernet header never reach the program.)
    let mut f = v4(UDP);
    f.vlans = vec![0x8100];
    f.truncate = Some(16);
    row("VLAN tag cut short", f, dropped(Stat::DropMalformed));

    // IPv4 header and options.
    let mut f = v4(UDP);
    f.ipv4_ihl = Some(4);
    row("ipv4 ihl 4", f, dropped(Stat::DropMalformed));
    let mut f = v4(UDP);
    f.truncate = Some(14 + 12);
    row(SKB_REFUSES_TRUNCATED_IPV4, f, dropped(Stat::DropMalformed));
    let mut f = v4(UDP);
    f.ipv4_options = vec![1, 7, 7, 4, 0, 0, 0];
    row("ipv4 options: NOP + record route", f, ALLOWED);
    let mut f = v4(TCP);
    f.ipv4_options = vec![148, 4, 0, 0];
    row("ipv4 option: router alert", f, ALLOWED);
    let mut f = v4(UDP);
    f.ipv4_options = (0..40).map(|i| if i == 39 { 0 } else { 1 }).collect();
    row("ipv4 options: 39 NOPs and end", f, ALLOWED);
    let mut f = v4(UDP);
    f.ipv4_options = vec![1, 131, 7, 4, 192, 0, 2, 1];
    row("ipv4 loose source route", f, dropped(Stat::DropSourceRoute));
    let mut f = v4(UDP);
    f.ipv4_options = vec![137, 7, 4, 192, 0, 2, 1];
    row(
        "ipv4 strict source route",
        f,
        dropped(Stat::DropSourceRoute),
    );
    let mut f = v4(UDP);
    f.ipv4_options = vec![1, 1, 1, 1, 1, 1, 1, 137, 3, 4, 0, 0];
    row(
        "ipv4 source route after NOPs",
        f,
        dropped(Stat::DropSourceRoute),
    );
    let mut f = v4(UDP);
    f.ipv4_options = vec![7, 1, 0, 0];
    row("ipv4 option length 1", f, dropped(Stat::DropMalformed));
    let mut f = v4(UDP);
    f.ipv4_options = vec![7, 9, 4, 0];
    row(
        "ipv4 option overruns the header",
        f,
        dropped(Stat::DropMalformed),
    );
    let mut f = v4(UDP);
    f.ipv4_options = vec![1, 1, 1, 68];
    row(
        "ipv4 option without length byte",
        f,
        dropped(Stat::DropMalformed),
    );

    // Transport headers.
    let mut f = v4(TCP);
    f.truncate = Some(14 + 20 + 12);
    row("tcp header truncated", f, dropped(Stat::DropMalformed));
    let mut f = v4(UDP);
    f.truncate = Some(14 + 20 + 6);
    row("udp header truncated", f, dropped(Stat::DropMalformed));
    row("icmp echo", v4(Transport::Icmp { kind: 8 }), ALLOWED);
    let mut f = v4(Transport::Icmp { kind: 8 });
    f.truncate = Some(14 + 20 + 4);
    row("icmp header truncated", f, dropped(Stat::DropMalformed));
    row(
        "gre (no ports)",
        v4(Transport::Other { proto: 47, len: 4 }),
        ALLOWED,
    );

    // IPv4 fragments.
    let mut f = v4(TCP);
    f.ipv4_fragment = Some(Ipv4Fragment {
        offset: 0,
        more: true,
        id: 7,
    });
    f.payload = 16;
    row("ipv4 first fragment", f, ALLOWED);
    let mut f = v4(TCP);
    f.ipv4_fragment = Some(Ipv4Fragment {
        offset: 5,
        more: false,
        id: 7,
    });
    f.omit_transport = true;
    f.payload = 16;
    row(
        "ipv4 later fragment of an allowed datagram",
        f,
        passed(Stat::FragmentCacheHit),
    );
    let mut f = v4(TCP);
    f.ipv4_fragment = Some(Ipv4Fragment {
        offset: 0,
        more: true,
        id: 8,
    });
    f.truncate = Some(14 + 20 + 8);
    row("ipv4 tiny first fragment", f, dropped(Stat::DropFragment));
    let mut f = v4(TCP);
    f.ipv4_fragment = Some(Ipv4Fragment {
        offset: 1,
        more: false,
        id: 9,
    });
    f.omit_transport = true;
    f.payload = 16;
    row("tcp fragment at offset 8", f, dropped(Stat::DropFragment));

    // Port-unknown semantics in `strict` (allow udp/53 only).
    let strict = |t| Frame::new(ip("10.1.0.5"), ip("198.51.100.53"), t);
    row(
        "strict: udp/53 allowed",
        strict(Transport::Udp { dport: 53 }),
        ALLOWED,
    );
    row(
        "strict: udp/54 denied",
        strict(Transport::Udp { dport: 54 }),
        dropped(Stat::DropPolicy),
    );
    let mut f = strict(Transport::Udp { dport: 53 });
    f.ipv4_fragment = Some(Ipv4Fragment {
        offset: 30,
        more: false,
        id: 77,
    });
    f.omit_transport = true;
    f.payload = 8;
    row(
        "strict: later fragment, first unseen: port unknown, denied",
        f,
        dropped(Stat::DropPolicy),
    );
    let mut f = strict(Transport::Udp { dport: 53 });
    f.ipv4_fragment = Some(Ipv4Fragment {
        offset: 0,
        more: true,
        id: 78,
    });
    f.payload = 16;
    row("strict: first fragment udp/53 allowed", f, ALLOWED);
    let mut f = strict(Transport::Udp { dport: 53 });
    f.ipv4_fragment = Some(Ipv4Fragment {
        offset: 3,
        more: false,
        id: 78,
    });
    f.omit_transport = true;
    f.payload = 8;
    row(
        "strict: its later fragment follows it",
        f,
        passed(Stat::FragmentCacheHit),
    );

    // IPv6 extension headers.
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::HopByHop, Extension::DestinationOptions];
    row("ipv6 hop-by-hop + destination options", f, ALLOWED);
    let mut f = v6(TCP);
    f.ipv6_extensions = vec![Extension::Ah];
    row("ipv6 AH then TCP", f, ALLOWED);
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::DestinationOptions; 8];
    row("ipv6 eight extension headers (the bound)", f, ALLOWED);
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::DestinationOptions; 9];
    row("ipv6 nine extension headers", f, dropped(Stat::DropIpv6Ext));
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::DestinationOptions, Extension::HopByHop];
    row("ipv6 hop-by-hop not first", f, dropped(Stat::DropIpv6Ext));
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::Routing { segments_left: 1 }];
    row(
        "ipv6 routing header, segments left",
        f,
        dropped(Stat::DropRoutingHeader),
    );
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::Routing { segments_left: 0 }];
    row("ipv6 routing header, no segments left", f, ALLOWED);
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::DestinationOptions];
    f.truncate = Some(14 + 40 + 4);
    row(
        "ipv6 extension header truncated",
        f,
        dropped(Stat::DropMalformed),
    );
    let mut f = v6(UDP);
    f.dst = ip("::ffff:198.51.100.7");
    row(
        "ipv6 to an IPv4-mapped address",
        f,
        dropped(Stat::DropIpv4Mapped),
    );

    // IPv6 fragments.
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::Fragment {
        offset: 0,
        more: true,
        id: 0xdead,
    }];
    f.payload = 16;
    row("ipv6 first fragment", f, ALLOWED);
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::Fragment {
        offset: 4,
        more: false,
        id: 0xdead,
    }];
    f.omit_transport = true;
    f.payload = 16;
    row(
        "ipv6 later fragment of an allowed datagram",
        f,
        passed(Stat::FragmentCacheHit),
    );
    let mut f = v6(TCP);
    f.ipv6_extensions = vec![Extension::Fragment {
        offset: 0,
        more: true,
        id: 0xbeef,
    }];
    f.truncate = Some(14 + 40 + 8 + 10);
    row(
        "ipv6 first fragment without a full TCP header",
        f,
        dropped(Stat::DropFragment),
    );
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::Fragment {
        offset: 0,
        more: false,
        id: 1,
    }];
    row("ipv6 atomic fragment", f, ALLOWED);

    // Neighbour discovery and ICMPv6.
    let nd = |kind, dst: &str, hop_limit| {
        let mut f = Frame::new(ip("fe80::1"), ip(dst), Transport::Icmpv6 { kind });
        f.hop_limit = hop_limit;
        f
    };
    row(
        "neighbour solicitation to solicited-node multicast",
        nd(135, "ff02::1:ff00:1", 255),
        passed(Stat::PassNeighborDiscovery),
    );
    row(
        "neighbour advertisement to link-local",
        nd(136, "fe80::2", 255),
        passed(Stat::PassNeighborDiscovery),
    );
    row(
        "router solicitation",
        nd(133, "ff02::2", 255),
        passed(Stat::PassNeighborDiscovery),
    );
    row(
        "neighbour solicitation with hop limit 64",
        nd(135, "ff02::1:ff00:1", 64),
        dropped(Stat::DropUnknownDevice),
    );
    row(
        "router advertisement from a device",
        nd(134, "ff02::1", 255),
        dropped(Stat::DropUnknownDevice),
    );
    row(
        "neighbour advertisement to the gateway's global address",
        nd(136, "fd00::1", 255),
        passed(Stat::PassNeighborDiscovery),
    );
    row(
        "neighbour solicitation to another global address",
        nd(135, "2001:db8::1", 255),
        dropped(Stat::DropUnknownDevice),
    );
    row(
        "icmpv6 echo from a device",
        v6(Transport::Icmpv6 { kind: 128 }),
        ALLOWED,
    );

    // Sources.
    row(
        "unknown device",
        Frame::new(ip("192.0.2.1"), ip("198.51.100.7"), UDP),
        dropped(Stat::DropUnknownDevice),
    );
    // Non-IP frames: ARP passes, every other EtherType is dropped.
    rows.push(("ARP request", non_ip(&[0x0806]), passed(Stat::PassArp)));
    for (name, ethertypes) in NON_IP {
        rows.push((name, non_ip(ethertypes), dropped(Stat::DropNonIp)));
    }
    rows
}

/// Non-IP EtherTypes that must be dropped (the tags before the type).
const NON_IP: [(&str, &[u16]); 7] = [
    ("PPPoE discovery", &[0x8863]),
    ("PPPoE session", &[0x8864]),
    ("MPLS unicast", &[0x8847]),
    ("MPLS multicast", &[0x8848]),
    ("LLDP", &[0x88cc]),
    ("unknown EtherType 0x1234", &[0x1234]),
    ("LLDP inside a VLAN tag", &[0x8100, 0x88cc]),
];

/// A broadcast frame with these EtherTypes (VLAN tags first) and 46 bytes
/// of payload.
fn non_ip(ethertypes: &[u16]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    for (i, t) in ethertypes.iter().enumerate() {
        f.extend_from_slice(&t.to_be_bytes());
        if i + 1 < ethertypes.len() {
            f.extend_from_slice(&[0, 1]);
        }
    }
    f.extend_from_slice(&[0; 46]);
    f
}

/// The rows of an untagged IP frame, without the Ethernet header: what a
/// raw-IP link carries. Rows the XDP test-run would refuse (under 14 bytes)
/// are left out, and rows only a raw-IP link can see are added.
fn raw_ip_fixtures() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let mut rows: Vec<(&'static str, Vec<u8>, Expect)> = fixtures()
        .into_iter()
        .filter(|(_, f, _)| matches!(f[12..14], [0x08, 0x00] | [0x86, 0xdd]))
        .map(|(name, f, expect)| (name, f[14..].to_vec(), expect))
        .filter(|(_, f, _)| f.len() >= 14)
        .collect();
    let ip = v4(UDP).build()[14..].to_vec();
    for (name, version) in [
        ("raw IP: version 5", 5u8),
        ("raw IP: version 0", 0),
        ("raw IP: version 15", 15),
    ] {
        let mut f = ip.clone();
        f[0] = (version << 4) | (f[0] & 0x0f);
        rows.push((name, f, dropped(Stat::DropNonIp)));
    }
    rows
}

/// The skb test-run refuses (EINVAL) an IPv4 frame whose header is cut
/// short before the program runs; in XDP the program itself drops it.
const SKB_REFUSES_TRUNCATED_IPV4: &str = "ipv4 header truncated";

/// Runs the table; `run` returns `None` when the kernel refuses the frame.
fn run_table(
    program: &str,
    rows: Vec<(&'static str, Vec<u8>, Expect)>,
    run: impl Fn(&Dataplane, &[u8]) -> Option<u32>,
    pass: u32,
    drop: u32,
) {
    testkit::require_root();
    let mut dataplane = Dataplane::open(&Options::default()).unwrap();
    let policy = policy();
    dataplane.install(&policy).unwrap();
    let allowed_total = |dp: &Dataplane| -> u64 {
        policy
            .groups
            .iter()
            .map(|g| {
                dp.counter(dp.counter_index(g.allow_counter).unwrap())
                    .unwrap()
                    .packets
            })
            .sum()
    };
    let mut failures = Vec::new();
    let count = rows.len();
    for (name, frame, expect) in rows {
        let stats_before: Vec<u64> = Stat::ALL
            .iter()
            .map(|s| dataplane.stat(*s).unwrap().packets)
            .collect();
        let allowed_before = allowed_total(&dataplane);
        let Some(action) = run(&dataplane, &frame) else {
            if !(program == "tc" && name == SKB_REFUSES_TRUNCATED_IPV4) {
                failures.push(format!("{program}: {name}: test-run refused the frame"));
            }
            continue;
        };
        if program == "tc" && name == SKB_REFUSES_TRUNCATED_IPV4 {
            failures.push(format!(
                "{program}: {name}: expected the skb test-run to refuse it"
            ));
        }
        let charged: Vec<Stat> = Stat::ALL
            .iter()
            .zip(&stats_before)
            .filter(|(s, before)| {
                // Seen counts every packet, not an outcome.
                !matches!(**s, Stat::Seen) && dataplane.stat(**s).unwrap().packets != **before
            })
            .map(|(s, _)| *s)
            .collect();
        let allowed = allowed_total(&dataplane) - allowed_before;
        let want_action = if expect.pass { pass } else { drop };
        let want_charged: Vec<Stat> = expect.stat.into_iter().collect();
        // A policy allow is charged to a group's allow counter (a cached
        // fragment too), nothing else; no other row touches them.
        let want_allowed =
            u64::from(expect.pass && expect.stat.is_none_or(|s| s == Stat::FragmentCacheHit));
        if action != want_action || charged != want_charged || allowed != want_allowed {
            failures.push(format!(
                "{program}: {name}: action {action} (want {want_action}), stats {charged:?} \
                 (want {want_charged:?}), allow counters +{allowed} (want +{want_allowed})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "fixture failures:\n{}",
        failures.join("\n")
    );
    eprintln!("{program}: {count} rows as expected");
}

#[test]
fn xdp_fixture_table() {
    run_table(
        "xdp",
        fixtures(),
        |dp, f| Some(dp.test_run_xdp(f, 1).unwrap().0),
        XDP_PASS,
        XDP_DROP,
    );
}

#[test]
fn raw_ip_xdp_fixture_table() {
    run_table(
        "xdp (raw IP)",
        raw_ip_fixtures(),
        |dp, f| Some(dp.test_run_xdp_on(LinkKind::Ip, f, 1).unwrap().0),
        XDP_PASS,
        XDP_DROP,
    );
}

/// `pass-ethertypes` lets the listed EtherTypes through, counted apart,
/// and nothing else.
#[test]
fn pass_ethertypes_let_the_listed_ones_through() {
    testkit::require_root();
    let dataplane = Dataplane::open(&Options {
        pass_ethertypes: vec![0x88cc, 0x8863],
        ..Options::default()
    })
    .unwrap();
    let mut dataplane = dataplane;
    dataplane.install(&policy()).unwrap();
    let count = |dp: &Dataplane, s| dp.stat(s).unwrap().packets;
    for (name, ethertypes) in NON_IP {
        let listed = matches!(ethertypes.last(), Some(0x88cc | 0x8863));
        let (passed, dropped) = (
            count(&dataplane, Stat::PassNonIp),
            count(&dataplane, Stat::DropNonIp),
        );
        let (action, _) = dataplane.test_run_xdp(&non_ip(ethertypes), 1).unwrap();
        assert_eq!(action, if listed { XDP_PASS } else { XDP_DROP }, "{name}");
        assert_eq!(
            (
                count(&dataplane, Stat::PassNonIp) - passed,
                count(&dataplane, Stat::DropNonIp) - dropped
            ),
            if listed { (1, 0) } else { (0, 1) },
            "{name}"
        );
    }
    let (action, _) = dataplane.test_run_xdp(&non_ip(&[0x0806]), 1).unwrap();
    assert_eq!(action, XDP_PASS, "ARP");
}

#[test]
fn tc_fixture_table() {
    run_table(
        "tc",
        fixtures(),
        |dp, f| match dp.test_run_tc(f, 1) {
            Ok((action, _)) => Some(action),
            Err(e) if format!("{e:#}").contains("Invalid argument") => None,
            Err(e) => panic!("{e:#}"),
        },
        TC_ACT_UNSPEC,
        TC_ACT_SHOT,
    );
}
