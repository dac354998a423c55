//! The `reject` verdict's answers, byte by byte: crafted frames run through
//! the real XDP and TC programs with `BPF_PROG_TEST_RUN`, and the packet
//! the program leaves behind parsed back as the device would receive it.
//! Every Ethernet frame runs through both hooks, which must answer with the
//! same bytes (XDP_TX, and TC's redirect back out of the interface).
//!
//! Each reply is checked field by field (addresses and MACs swapped, TCP
//! flags, sequence and acknowledgement numbers, ICMP type and code, the
//! quoted header) and its checksums are recomputed here, independently of
//! the program. Packets that could be spoofed into a reflection (ICMP
//! errors, RSTs, multicast and broadcast, later fragments) must get no
//! answer; the reply limiter must turn rejects into denies past its rate.

use std::net::IpAddr;

use testkit::frames::{Extension, Frame, Ipv4Fragment, Transport};
use testkit::tables::Tables;
use tollgate::{
    config::RejectRepliesConfig,
    datapath::{
        Dataplane, Options, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS, XDP_TX,
    },
    links::LinkKind,
    tables::CompiledPolicy,
};
use tollgate_common::{Stat, Verdict};

/// Group `devices` (10.0.0.0/8, fd00::/8) rejects by default and allows
/// 192.0.2.0/24; group `audited` (10.9.0.0/16) rejects in audit mode.
fn policy() -> CompiledPolicy {
    let mut t = Tables::new(true);
    let devices = t.group("devices", Verdict::Reject, &["10.0.0.0/8", "fd00::/8"]);
    t.rule(devices, "192.0.2.0/24", None, None, false, "lab");
    let audited = t.group("audited", Verdict::Reject, &["10.9.0.0/16"]);
    t.audit(audited);
    t.build()
}

/// A dataplane with `policy()` and a reply rate no test reaches.
fn dataplane(replies: RejectRepliesConfig) -> Dataplane {
    testkit::require_root();
    let mut dp = Dataplane::open(&Options {
        reject_replies: replies,
        ..Options::default()
    })
    .unwrap();
    dp.install(&policy()).unwrap();
    dp
}

const UNLIMITED: RejectRepliesConfig = RejectRepliesConfig {
    rate: 1_000_000_000,
    burst: None,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(transport: Transport) -> Frame {
    Frame::new(ip("10.2.0.1"), ip("198.51.100.7"), transport)
}

fn v6(transport: Transport) -> Frame {
    Frame::new(ip("fd00::5"), ip("2001:db8::7"), transport)
}

const TCP: Transport = Transport::Tcp { dport: 443 };
const UDP: Transport = Transport::Udp { dport: 5000 };

/// The one's complement sum of `bytes`, folded; 0xffff over a region that
/// includes its own correct checksum.
fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether a transport checksum over `segment` with the pseudo-header of
/// (`src`, `dst`, `proto`) is right.
fn transport_checksum_ok(src: &[u8], dst: &[u8], proto: u8, segment: &[u8]) -> bool {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    pseudo.extend_from_slice(segment);
    ones_sum(&pseudo) == 0xffff
}

/// Each Ethernet frame runs through this many hooks (XDP and TC), and is
/// counted once by each.
const HOOKS: u64 = 2;

/// The reply to an Ethernet `frame` whose IP header starts at `l3`, from
/// both hooks, which must agree: the MACs are swapped and the link header
/// otherwise kept; returns the IP packet of the reply.
fn ethernet_reply(dp: &Dataplane, frame: &[u8], l3: usize) -> Vec<u8> {
    let (action, out) = dp.test_run_xdp_output(LinkKind::Ethernet, frame).unwrap();
    assert_eq!(action, XDP_TX, "the rejected frame is answered");
    let (tc_action, tc_out) = dp.test_run_tc_output(frame).unwrap();
    assert_eq!(tc_action, TC_ACT_REDIRECT, "TC answers it too");
    assert_eq!(tc_out, out, "TC's reply is XDP's, byte for byte");
    assert_eq!(&out[..6], &frame[6..12], "destination MAC: the device's");
    assert_eq!(&out[6..12], &frame[..6], "source MAC: the gateway's");
    assert_eq!(&out[12..l3], &frame[12..l3], "VLAN tags and EtherType kept");
    out[l3..].to_vec()
}

/// Checks an IPv4 reply header against the packet it answers and returns
/// its payload.
fn ipv4_reply<'r>(reply: &'r [u8], original: &[u8], proto: u8) -> &'r [u8] {
    assert_eq!(reply[0], 0x45, "IPv4, no options");
    let total = usize::from(u16::from_be_bytes([reply[2], reply[3]]));
    assert_eq!(total, reply.len(), "total length is the packet's");
    assert_eq!(reply[8], 64, "TTL");
    assert_eq!(reply[9], proto);
    assert_eq!(&reply[12..16], &original[16..20], "from the destination");
    assert_eq!(&reply[16..20], &original[12..16], "to the device");
    assert_eq!(ones_sum(&reply[..20]), 0xffff, "IPv4 header checksum");
    &reply[20..]
}

/// Checks an IPv6 reply header against the packet it answers and returns
/// its payload.
fn ipv6_reply<'r>(reply: &'r [u8], original: &[u8], next: u8) -> &'r [u8] {
    assert_eq!(reply[0] >> 4, 6);
    let payload = usize::from(u16::from_be_bytes([reply[4], reply[5]]));
    assert_eq!(payload + 40, reply.len(), "payload length is the packet's");
    assert_eq!(reply[6], next);
    assert_eq!(reply[7], 64, "hop limit");
    assert_eq!(&reply[8..24], &original[24..40], "from the destination");
    assert_eq!(&reply[24..40], &original[8..24], "to the device");
    &reply[40..]
}

/// A TCP reset answering a segment: ports swapped, the given sequence and
/// acknowledgement numbers and flags, a valid checksum.
fn check_reset(tcp: &[u8], original_tcp: &[u8], seq: u32, ack: u32, flags: u8) {
    assert_eq!(tcp.len(), 20, "a bare TCP header");
    assert_eq!(&tcp[0..2], &original_tcp[2..4], "from the port it tried");
    assert_eq!(&tcp[2..4], &original_tcp[0..2], "to the device's port");
    assert_eq!(u32::from_be_bytes(tcp[4..8].try_into().unwrap()), seq);
    assert_eq!(u32::from_be_bytes(tcp[8..12].try_into().unwrap()), ack);
    assert_eq!(tcp[12] >> 4, 5);
    assert_eq!(tcp[13], flags);
}

const RST: u8 = 0x04;
const RST_ACK: u8 = 0x14;

fn stat(dp: &Dataplane, s: Stat) -> u64 {
    dp.stat(s).unwrap().packets
}

#[test]
fn tcp_syn_gets_a_reset_acknowledging_it_ipv4() {
    let dp = dataplane(UNLIMITED);
    let mut f = v4(TCP).build();
    f[14 + 20 + 4..14 + 20 + 8].copy_from_slice(&1000u32.to_be_bytes()); // seq
    let before = stat(&dp, Stat::RejectReplyTcpReset);
    let original = f[14..].to_vec();
    let reply = ethernet_reply(&dp, &f, 14);
    let tcp = ipv4_reply(&reply, &original, 6);
    check_reset(tcp, &original[20..], 0, 1001, RST_ACK);
    assert!(transport_checksum_ok(
        &reply[12..16],
        &reply[16..20],
        6,
        tcp
    ));
    assert_eq!(stat(&dp, Stat::RejectReplyTcpReset), before + HOOKS);
}

#[test]
fn tcp_segment_with_ack_gets_a_reset_at_its_acknowledgement_ipv6() {
    let dp = dataplane(UNLIMITED);
    let mut f = v6(TCP);
    f.payload = 10;
    let mut f = f.build();
    let tcp = 14 + 40;
    f[tcp + 4..tcp + 8].copy_from_slice(&7u32.to_be_bytes());
    f[tcp + 8..tcp + 12].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    f[tcp + 13] = 0x18; // PSH, ACK
    let original = f[14..].to_vec();
    let reply = ethernet_reply(&dp, &f, 14);
    let segment = ipv6_reply(&reply, &original, 6);
    check_reset(segment, &original[40..], 0xdead_beef, 0, RST);
    assert!(transport_checksum_ok(
        &reply[8..24],
        &reply[24..40],
        6,
        segment
    ));
}

#[test]
fn tcp_fin_with_data_is_acknowledged_whole_behind_two_vlan_tags() {
    let dp = dataplane(UNLIMITED);
    let mut f = v4(TCP);
    f.vlans = vec![0x88a8, 0x8100];
    f.payload = 5;
    let mut f = f.build();
    let l3 = 14 + 8;
    f[l3 + 20 + 13] = 0x01; // FIN, no ACK
    let original = f[l3..].to_vec();
    let reply = ethernet_reply(&dp, &f, l3);
    let tcp = ipv4_reply(&reply, &original, 6);
    // Five data bytes and the FIN.
    check_reset(tcp, &original[20..], 0, 6, RST_ACK);
    assert!(transport_checksum_ok(
        &reply[12..16],
        &reply[16..20],
        6,
        tcp
    ));
}

#[test]
fn udp_gets_icmp_administratively_prohibited_quoting_its_header_ipv4() {
    let dp = dataplane(UNLIMITED);
    let mut f = v4(UDP);
    f.payload = 100;
    let f = f.build();
    let before = stat(&dp, Stat::RejectReplyIcmp);
    let original = f[14..].to_vec();
    let reply = ethernet_reply(&dp, &f, 14);
    let icmp = ipv4_reply(&reply, &original, 1);
    assert_eq!((icmp[0], icmp[1]), (3, 13), "unreachable, prohibited");
    assert_eq!(&icmp[4..8], &[0; 4]);
    assert_eq!(&icmp[8..], &original[..28], "IP header + 8 bytes");
    assert_eq!(ones_sum(icmp), 0xffff, "ICMP checksum");
    assert_eq!(stat(&dp, Stat::RejectReplyIcmp), before + HOOKS);
}

#[test]
fn udp_gets_icmpv6_administratively_prohibited_quoting_its_header() {
    let dp = dataplane(UNLIMITED);
    let mut f = v6(UDP);
    f.payload = 3;
    let f = f.build();
    let before = stat(&dp, Stat::RejectReplyIcmp6);
    let original = f[14..].to_vec();
    let reply = ethernet_reply(&dp, &f, 14);
    let icmp = ipv6_reply(&reply, &original, 58);
    assert_eq!((icmp[0], icmp[1]), (1, 1), "unreachable, prohibited");
    assert_eq!(&icmp[8..], &original[..48], "IPv6 header + 8 bytes");
    assert!(transport_checksum_ok(
        &reply[8..24],
        &reply[24..40],
        58,
        icmp
    ));
    assert_eq!(stat(&dp, Stat::RejectReplyIcmp6), before + HOOKS);
}

#[test]
fn echo_requests_and_other_protocols_get_icmp() {
    let dp = dataplane(UNLIMITED);
    for (name, frame, next) in [
        ("ipv4 echo request", v4(Transport::Icmp { kind: 8 }), 1),
        ("ipv6 echo request", v6(Transport::Icmpv6 { kind: 128 }), 58),
        ("ipv4 GRE", v4(Transport::Other { proto: 47, len: 8 }), 1),
        ("ipv6 GRE", v6(Transport::Other { proto: 47, len: 8 }), 58),
    ] {
        let f = frame.build();
        let out = ethernet_reply(&dp, &f, 14);
        let proto = if next == 1 { out[9] } else { out[6] };
        assert_eq!(proto, next, "{name}: an ICMP error");
    }
}

#[test]
fn raw_ip_links_get_the_reply_without_a_link_header() {
    let dp = dataplane(UNLIMITED);
    for frame in [v4(TCP), v4(UDP), v6(TCP), v6(UDP)] {
        let original = frame.build()[14..].to_vec();
        let (action, reply) = dp.test_run_xdp_output(LinkKind::Ip, &original).unwrap();
        assert_eq!(action, XDP_TX, "{frame:?}");
        match (frame.src.is_ipv4(), frame.transport) {
            (true, TCP) => {
                let tcp = ipv4_reply(&reply, &original, 6);
                check_reset(tcp, &original[20..], 0, 1, RST_ACK);
                assert!(transport_checksum_ok(
                    &reply[12..16],
                    &reply[16..20],
                    6,
                    tcp
                ));
            }
            (true, _) => {
                let icmp = ipv4_reply(&reply, &original, 1);
                assert_eq!(&icmp[8..], &original[..28]);
                assert_eq!(ones_sum(icmp), 0xffff);
            }
            (false, TCP) => {
                let tcp = ipv6_reply(&reply, &original, 6);
                check_reset(tcp, &original[40..], 0, 1, RST_ACK);
                assert!(transport_checksum_ok(&reply[8..24], &reply[24..40], 6, tcp));
            }
            (false, _) => {
                let icmp = ipv6_reply(&reply, &original, 58);
                assert_eq!(&icmp[8..], &original[..48]);
                assert!(transport_checksum_ok(
                    &reply[8..24],
                    &reply[24..40],
                    58,
                    icmp
                ));
            }
        }
    }
}

#[test]
fn what_could_reflect_or_has_nothing_to_answer_is_dropped_silently() {
    let dp = dataplane(UNLIMITED);
    let mut rows: Vec<(&str, Vec<u8>)> = vec![
        ("ipv4 ICMP error", v4(Transport::Icmp { kind: 3 }).build()),
        (
            "ipv4 ICMP echo reply",
            v4(Transport::Icmp { kind: 0 }).build(),
        ),
        (
            "ipv6 ICMPv6 error",
            v6(Transport::Icmpv6 { kind: 1 }).build(),
        ),
        (
            "ipv6 packet too big",
            v6(Transport::Icmpv6 { kind: 2 }).build(),
        ),
    ];
    let mut f = v4(TCP).build();
    f[14 + 20 + 13] = RST;
    rows.push(("a TCP RST", f));
    rows.push((
        "ipv4 multicast",
        Frame::new(ip("10.2.0.1"), ip("224.0.0.251"), UDP).build(),
    ));
    rows.push((
        "ipv4 limited broadcast",
        Frame::new(ip("10.2.0.1"), ip("255.255.255.255"), UDP).build(),
    ));
    rows.push((
        "ipv6 multicast",
        Frame::new(ip("fd00::5"), ip("ff05::fb"), UDP).build(),
    ));
    let mut f = v4(UDP).build();
    f[..6].copy_from_slice(&[0xff; 6]);
    rows.push(("ethernet broadcast", f));
    let mut f = v4(UDP).build();
    f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 0xfb]);
    rows.push(("ethernet multicast", f));
    let mut f = v4(UDP);
    f.omit_transport = true;
    f.payload = 16;
    f.ipv4_fragment = Some(Ipv4Fragment {
        offset: 100,
        more: false,
        id: 7,
    });
    rows.push(("ipv4 later fragment", f.build()));
    let mut f = v4(UDP);
    f.ipv4_options = vec![1, 1, 1, 1];
    rows.push((
        "ipv4 options: the fixed quote would miss the ports",
        f.build(),
    ));
    let mut f = v6(UDP);
    f.ipv6_extensions = vec![Extension::DestinationOptions];
    rows.push(("ipv6 extension header before UDP", f.build()));
    for (name, frame) in rows {
        let unanswered = stat(&dp, Stat::RejectUnanswered);
        let policy_drops = stat(&dp, Stat::DropPolicy);
        let (action, _) = dp.test_run_xdp_output(LinkKind::Ethernet, &frame).unwrap();
        assert_eq!(action, XDP_DROP, "{name}: dropped, not answered");
        let (action, _) = dp.test_run_tc_output(&frame).unwrap();
        assert_eq!(action, TC_ACT_SHOT, "{name}: dropped on TC too");
        assert_eq!(
            stat(&dp, Stat::RejectUnanswered),
            unanswered + HOOKS,
            "{name}"
        );
        assert_eq!(stat(&dp, Stat::DropPolicy), policy_drops + HOOKS, "{name}");
    }
}

#[test]
fn a_tcp_segment_with_ip_options_still_gets_its_reset() {
    let dp = dataplane(UNLIMITED);
    let mut f = v4(TCP);
    f.ipv4_options = vec![1, 1, 1, 1];
    let f = f.build();
    let original = f[14..].to_vec();
    let reply = ethernet_reply(&dp, &f, 14);
    let tcp = ipv4_reply(&reply, &original, 6);
    check_reset(tcp, &original[24..], 0, 1, RST_ACK);
}

#[test]
fn allowed_and_audited_packets_are_not_answered() {
    let dp = dataplane(UNLIMITED);
    let allowed = Frame::new(ip("10.2.0.1"), ip("192.0.2.9"), TCP).build();
    assert_eq!(dp.test_run_xdp(&allowed, 1).unwrap().0, XDP_PASS);
    assert_eq!(dp.test_run_tc(&allowed, 1).unwrap().0, TC_ACT_UNSPEC);
    let audited = Frame::new(ip("10.9.0.1"), ip("198.51.100.7"), TCP).build();
    assert_eq!(
        dp.test_run_xdp(&audited, 1).unwrap().0,
        XDP_PASS,
        "audit-deny passes"
    );
    assert_eq!(dp.test_run_tc(&audited, 1).unwrap().0, TC_ACT_UNSPEC);
}

#[test]
fn rejects_are_counted_as_reject_and_audit_turns_them_into_audit_deny() {
    let dp = dataplane(UNLIMITED);
    let tables = policy();
    let total = |group: usize, verdict: Verdict| {
        let logical = tables.groups[group].verdict_counter(verdict);
        dp.counter(dp.counter_index(logical).unwrap())
            .unwrap()
            .packets
    };
    let (rejects, denies) = (total(1, Verdict::Reject), total(1, Verdict::Deny));
    dp.test_run_xdp_output(LinkKind::Ethernet, &v4(UDP).build())
        .unwrap();
    assert_eq!(total(1, Verdict::Reject), rejects + 1);
    assert_eq!(total(1, Verdict::Deny), denies);
    let audit_denies = total(2, Verdict::AuditDeny);
    let audited = Frame::new(ip("10.9.0.1"), ip("198.51.100.7"), UDP).build();
    dp.test_run_xdp(&audited, 1).unwrap();
    assert_eq!(total(2, Verdict::AuditDeny), audit_denies + 1);
}

#[test]
fn with_replies_off_every_reject_is_a_deny() {
    let dp = dataplane(RejectRepliesConfig {
        rate: 0,
        burst: None,
    });
    for frame in [v4(TCP), v4(UDP), v6(TCP), v6(UDP)] {
        let limited = stat(&dp, Stat::RejectLimited);
        let (action, _) = dp
            .test_run_xdp_output(LinkKind::Ethernet, &frame.build())
            .unwrap();
        assert_eq!(action, XDP_DROP, "{frame:?}");
        let (action, _) = dp.test_run_tc_output(&frame.build()).unwrap();
        assert_eq!(action, TC_ACT_SHOT, "{frame:?}");
        assert_eq!(stat(&dp, Stat::RejectLimited), limited + HOOKS);
    }
}

#[test]
fn past_the_rate_a_reject_degrades_to_a_deny() {
    // One reply per second and no burst: of ten rejects sent at once, the
    // first is answered and the rest are dropped as denies.
    let dp = dataplane(RejectRepliesConfig {
        rate: 1,
        burst: Some(1),
    });
    let frame = v4(TCP).build();
    let mut actions = Vec::new();
    let limited = stat(&dp, Stat::RejectLimited);
    for _ in 0..10 {
        actions.push(
            dp.test_run_xdp_output(LinkKind::Ethernet, &frame)
                .unwrap()
                .0,
        );
    }
    let answered = actions.iter().filter(|&&a| a == XDP_TX).count();
    assert!(answered >= 1, "the first reject is answered: {actions:?}");
    assert!(
        answered < actions.len(),
        "the rejects past the rate are not: {actions:?}"
    );
    assert!(actions.iter().all(|&a| a == XDP_TX || a == XDP_DROP));
    assert_eq!(
        stat(&dp, Stat::RejectLimited) - limited,
        (actions.len() - answered) as u64,
        "every unanswered reject is counted as limited"
    );
}
