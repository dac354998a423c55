//! The NTP fast path against ntp-proto, the oracle: the same client
//! requests go through the real programs (`BPF_PROG_TEST_RUN`: XDP on
//! Ethernet and raw-IP, TC on Ethernet; IPv4 and IPv6) and through the
//! `Responder` the userspace
//! server uses, in the synchronised, holdover, unsynchronised and
//! leap-pending states, and every field of the two replies must agree.
//!
//! Tolerances, stated once: the header fields (leap, version, mode,
//! stratum, poll, precision, root delay, reference id, origin) are
//! identical; root dispersion within 2 units of 2^-16 s (both truncate,
//! from differently rounded bases); the reference timestamp identical
//! unless a 128 s boundary fell between the two answers; the receive and
//! transmit timestamps within the host clock readings taken just before and
//! just after the program ran (1 ms slack for the clocks' granularity), in
//! order. The packet around them is checked too: addresses, ports and MAC
//! addresses swapped, TTL 64, valid checksums.
//!
//! What the fast path must leave to the server (`XDP_PASS` or TC's
//! `TC_ACT_UNSPEC`, unchanged): other modes and versions, extension fields
//! or a MAC, the NTPv5 upgrade request, a stale state, sources in no
//! group, a source over its rate limit, an address the fast path does not
//! serve, an interface where a reply might not reach the device.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use testkit::{
    frames::{Frame, Transport},
    ntp::client_request as ntp_request,
    tables::Tables,
};
use tollgate::{
    config::NtpRateLimit,
    datapath::{Dataplane, NtpFastMaps, Options, TC_ACT_REDIRECT, TC_ACT_UNSPEC, XDP_PASS, XDP_TX},
    links::LinkKind,
    ntp::{Advertised, Clocks, Leap, Reference, Responder, fast_state},
};
use tollgate_common::{NtpFastState, Stat, Verdict};

const NTP_V4: &str = "100.127.0.123";
const NTP_V6: &str = "fd7a::123";
const PRECISION: i8 = -23;
const LOOPBACK: u32 = 1;
/// A limit no test reaches unless it means to.
const GENEROUS: NtpRateLimit = NtpRateLimit {
    interval: -4,
    burst: 1_000_000,
    leak: 0,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Group `devices` (10.0.0.0/8, fd00::/8) allows everything; sources in
/// no group are allowed too, so that only the group decides who the fast
/// path answers.
fn dataplane() -> (Dataplane, NtpFastMaps) {
    testkit::require_root();
    let mut t = Tables::new(false);
    t.group("devices", Verdict::Allow, &["10.0.0.0/8", "fd00::/8"]);
    let mut dp = Dataplane::open(&Options::default()).unwrap();
    dp.install(&t.build()).unwrap();
    // BPF_PROG_TEST_RUN delivers on the loopback interface.
    dp.answer_ntp_on(LOOPBACK, true).unwrap();
    let mut maps = dp.take_ntp_fast().unwrap();
    let listen: Vec<SocketAddr> = vec![
        SocketAddr::new(ip(NTP_V4), 123),
        SocketAddr::new(ip(NTP_V6), 123),
    ];
    maps.set_addresses(&listen).unwrap();
    (dp, maps)
}

/// The states the server advertises, each as `refresh` would publish it.
fn states() -> Vec<(&'static str, Advertised)> {
    let now = SystemTime::now();
    let upstream = Reference::Upstream(ip("192.0.2.1"));
    let synchronised = Advertised {
        leap: Leap::NoWarning,
        stratum: 3,
        reference: upstream,
        root_delay: 0.0123,
        root_dispersion: 0.0456,
        since: now,
        dispersion_rate: 15e-6,
    };
    vec![
        ("synchronised", synchronised),
        (
            // Following the last good sample, 300 s ago: the dispersion
            // has grown since.
            "holdover",
            Advertised {
                since: now - Duration::from_secs(300),
                ..synchronised
            },
        ),
        (
            "unsynchronised",
            Advertised {
                leap: Leap::Alarm,
                stratum: 16,
                reference: Reference::None,
                root_delay: 0.0,
                root_dispersion: 16.0,
                since: now,
                dispersion_rate: 0.0,
            },
        ),
        (
            "leap second pending",
            Advertised {
                leap: Leap::InsertSecond,
                ..synchronised
            },
        ),
        (
            "an IPv6 upstream",
            Advertised {
                reference: Reference::Upstream(ip("2001:db8::1")),
                ..synchronised
            },
        ),
        ("local", Advertised::local(8, now)),
    ]
}

fn publish(maps: &mut NtpFastMaps, advertised: &Advertised, limit: NtpRateLimit) -> NtpFastState {
    publish_as_of(maps, advertised, limit, Duration::ZERO)
}

/// Publishes the state as the controller would have `ago`: the program
/// grows the root dispersion from then.
fn publish_as_of(
    maps: &mut NtpFastMaps,
    advertised: &Advertised,
    limit: NtpRateLimit,
    ago: Duration,
) -> NtpFastState {
    let now = Clocks::now();
    let then = Clocks {
        realtime: now.realtime - ago,
        monotonic_ns: now.monotonic_ns - ago.as_nanos() as u64,
        tai_offset_ns: now.tai_offset_ns,
    };
    let state = fast_state(advertised, PRECISION, limit, Duration::from_secs(16), then);
    maps.publish(&state).unwrap();
    state
}

/// The request from `src` to `dst`:123 as a frame of `kind`, with the UDP
/// length set (the crafted frames leave it at the header's 8).
fn frame(src: &str, dst: &str, payload: &[u8], kind: LinkKind) -> Vec<u8> {
    frame_to_port(src, dst, 123, payload, kind)
}

/// [`frame`] to `dst`:`port`.
fn frame_to_port(src: &str, dst: &str, port: u16, payload: &[u8], kind: LinkKind) -> Vec<u8> {
    let mut f = Frame::new(ip(src), ip(dst), Transport::Udp { dport: port });
    f.payload = payload.len();
    let mut bytes = f.build();
    let at = bytes.len() - payload.len();
    bytes[at..].copy_from_slice(payload);
    let udp = at - 8;
    bytes[udp + 4..udp + 6].copy_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    match kind {
        LinkKind::Ethernet => bytes,
        LinkKind::Ip => bytes[14..].to_vec(),
    }
}

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

fn ntp_time(t: SystemTime) -> f64 {
    let unix = t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    unix + 2_208_988_800.0
}

fn timestamp(bytes: &[u8]) -> f64 {
    let raw = u64::from_be_bytes(bytes.try_into().unwrap());
    (raw >> 32) as f64 + (raw & 0xffff_ffff) as f64 / 2f64.powi(32)
}

/// Checks the link, IP and UDP layers of `reply` against `request`;
/// returns the NTP payload.
fn check_envelope<'a>(request: &[u8], reply: &'a [u8], kind: LinkKind, v4: bool) -> &'a [u8] {
    assert_eq!(
        reply.len(),
        request.len(),
        "the reply has the request's size"
    );
    let l3 = match kind {
        LinkKind::Ethernet => {
            assert_eq!(&reply[0..6], &request[6..12], "destination MAC");
            assert_eq!(&reply[6..12], &request[0..6], "source MAC");
            14
        }
        LinkKind::Ip => 0,
    };
    let (ip_len, addrs, width) = if v4 { (20, 12, 4) } else { (40, 8, 16) };
    let (rq, rp) = (&request[l3..], &reply[l3..]);
    assert_eq!(
        &rp[addrs..addrs + width],
        &rq[addrs + width..addrs + 2 * width],
        "from the NTP address"
    );
    assert_eq!(
        &rp[addrs + width..addrs + 2 * width],
        &rq[addrs..addrs + width],
        "to the device"
    );
    if v4 {
        assert_eq!(rp[8], 64, "TTL");
        assert_eq!(ones_sum(&rp[..20]), 0xffff, "IPv4 header checksum");
    } else {
        assert_eq!(rp[7], 64, "hop limit");
    }
    let udp = &rp[ip_len..];
    assert_eq!(&udp[0..2], &rq[ip_len + 2..ip_len + 4], "from port 123");
    assert_eq!(&udp[2..4], &rq[ip_len..ip_len + 2], "to the client's port");
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), 56, "UDP length");
    assert_ne!(&udp[6..8], &[0, 0], "a UDP checksum is present");
    let mut pseudo = rp[addrs..addrs + 2 * width].to_vec();
    pseudo.extend_from_slice(&[0, 17, 0, 56]);
    pseudo.extend_from_slice(udp);
    assert_eq!(ones_sum(&pseudo), 0xffff, "UDP checksum");
    &udp[8..]
}

/// Compares the program's reply with ntp-proto's to the same request,
/// field by field (the tolerances are in the module's doc comment).
fn compare(
    case: &str,
    fast: &[u8],
    oracle: &[u8],
    request: &[u8],
    before: SystemTime,
    after: SystemTime,
) {
    assert_eq!(fast.len(), oracle.len(), "{case}: length");
    assert_eq!(fast[0], oracle[0], "{case}: leap, version, mode");
    assert_eq!(fast[1], oracle[1], "{case}: stratum");
    assert_eq!(fast[2], oracle[2], "{case}: poll");
    assert_eq!(fast[3], oracle[3], "{case}: precision");
    assert_eq!(&fast[4..8], &oracle[4..8], "{case}: root delay");
    let dispersion = |r: &[u8]| i64::from(u32::from_be_bytes(r[8..12].try_into().unwrap()));
    assert!(
        (dispersion(fast) - dispersion(oracle)).abs() <= 2,
        "{case}: root dispersion {} vs {}",
        dispersion(fast),
        dispersion(oracle)
    );
    assert_eq!(&fast[12..16], &oracle[12..16], "{case}: reference id");
    let reference = |r: &[u8]| timestamp(&r[16..24]);
    assert!(
        reference(fast) == reference(oracle)
            || (reference(fast) - reference(oracle)).abs() == 128.0,
        "{case}: reference timestamp"
    );
    assert_eq!(
        &fast[24..32],
        &request[40..48],
        "{case}: origin = client transmit"
    );
    assert_eq!(
        &oracle[24..32],
        &request[40..48],
        "{case}: the oracle's origin"
    );
    let (t2, t3) = (timestamp(&fast[32..40]), timestamp(&fast[40..48]));
    let (lo, hi) = (ntp_time(before) - 1e-3, ntp_time(after) + 1e-3);
    assert!(
        lo <= t2 && t2 <= t3 && t3 <= hi,
        "{case}: T2 {t2}, T3 {t3} outside [{lo}, {hi}]"
    );
}

/// Runs `payload` from `src` to `dst` through the XDP program of `kind`.
fn run(
    dp: &Dataplane,
    kind: LinkKind,
    src: &str,
    dst: &str,
    payload: &[u8],
) -> (u32, Vec<u8>, Vec<u8>) {
    run_on(dp, Hook::Xdp(kind), src, dst, payload)
}

/// The program a request goes through. `BPF_PROG_TEST_RUN` gives TC an
/// Ethernet frame only (it builds the skb from the link header), so TC on
/// raw-IP links is covered by the namespace tests.
#[derive(Clone, Copy, Debug)]
enum Hook {
    Xdp(LinkKind),
    TcEthernet,
}

impl Hook {
    const ALL: [Hook; 3] = [
        Hook::Xdp(LinkKind::Ethernet),
        Hook::Xdp(LinkKind::Ip),
        Hook::TcEthernet,
    ];

    fn kind(self) -> LinkKind {
        match self {
            Hook::Xdp(kind) => kind,
            Hook::TcEthernet => LinkKind::Ethernet,
        }
    }

    /// The action that sends the reply back out of the interface.
    fn sends(self) -> u32 {
        match self {
            Hook::Xdp(_) => XDP_TX,
            Hook::TcEthernet => TC_ACT_REDIRECT,
        }
    }

    /// The action that leaves the request to the server.
    fn passes(self) -> u32 {
        match self {
            Hook::Xdp(_) => XDP_PASS,
            Hook::TcEthernet => TC_ACT_UNSPEC,
        }
    }
}

fn run_on(
    dp: &Dataplane,
    hook: Hook,
    src: &str,
    dst: &str,
    payload: &[u8],
) -> (u32, Vec<u8>, Vec<u8>) {
    let request = frame(src, dst, payload, hook.kind());
    let (action, out) = match hook {
        Hook::Xdp(kind) => dp.test_run_xdp_output(kind, &request),
        Hook::TcEthernet => dp.test_run_tc_output(&request),
    }
    .unwrap();
    (action, request, out)
}

#[test]
fn the_fast_path_agrees_with_ntp_proto_in_every_state() {
    let (dp, mut maps) = dataplane();
    let client = [
        (Hook::Xdp(LinkKind::Ethernet), "10.1.2.3", NTP_V4, true),
        (Hook::Xdp(LinkKind::Ip), "10.1.2.4", NTP_V4, true),
        (Hook::TcEthernet, "10.1.2.5", NTP_V4, true),
        (Hook::Xdp(LinkKind::Ethernet), "fd00::7", NTP_V6, false),
        (Hook::Xdp(LinkKind::Ip), "fd00::8", NTP_V6, false),
        (Hook::TcEthernet, "fd00::9", NTP_V6, false),
    ];
    let mut cases: Vec<(String, Advertised, Duration)> = states()
        .into_iter()
        .map(|(name, a)| (name.to_string(), a, Duration::ZERO))
        .collect();
    // The program grows the dispersion between two refreshes itself.
    let (_, holdover) = states().remove(1);
    cases.push((
        "holdover, published 40 s ago".into(),
        holdover,
        Duration::from_secs(40),
    ));
    for (name, advertised, ago) in cases {
        publish_as_of(&mut maps, &advertised, GENEROUS, ago);
        let mut oracle = Responder::new(&advertised, PRECISION);
        for &(hook, src, dst, v4) in &client {
            for version in [3u8, 4] {
                let case = format!("{name}, {hook:?}, {src}, NTPv{version}");
                let payload = ntp_request(version, 3, 0x0123_4567_89ab_cdef, 0);
                let before = SystemTime::now();
                let (action, request, reply) = run_on(&dp, hook, src, dst, &payload);
                let after = SystemTime::now();
                assert_eq!(action, hook.sends(), "{case}: answered by the program");
                let fast = check_envelope(&request, &reply, hook.kind(), v4);
                oracle.check(&payload).unwrap();
                let mut expected = [0u8; 48];
                let expected = oracle
                    .respond(ip(src), before, &payload, &mut expected)
                    .unwrap();
                compare(&case, fast, expected, &payload, before, after);
            }
        }
    }
    assert!(dp.stat(Stat::NtpFastAnswered).unwrap().packets >= 84);
}

#[test]
fn what_is_not_a_plain_client_request_goes_to_the_server_unchanged() {
    let (dp, mut maps) = dataplane();
    let (_, advertised) = states().remove(0);
    publish(&mut maps, &advertised, GENEROUS);
    let mut upgrade = ntp_request(4, 3, 1, 0);
    upgrade[16..24].copy_from_slice(b"NTP5DRFT");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("mode 4 (a server reply)", ntp_request(4, 4, 1, 0)),
        ("mode 1 (symmetric)", ntp_request(4, 1, 1, 0)),
        ("mode 6 (control)", ntp_request(2, 6, 1, 0)),
        ("mode 7 (private)", ntp_request(2, 7, 1, 0)),
        ("version 2", ntp_request(2, 3, 1, 0)),
        ("version 5", ntp_request(5, 3, 1, 0)),
        (
            "an extension field (NTS would be one)",
            ntp_request(4, 3, 1, 28),
        ),
        ("an NTPv3 MAC", ntp_request(3, 3, 1, 20)),
        ("the NTPv5 upgrade request", upgrade),
        ("a short header", vec![0x23; 40]),
    ];
    for (case, payload) in &cases {
        for hook in Hook::ALL {
            for (src, dst) in [("10.1.2.3", NTP_V4), ("fd00::7", NTP_V6)] {
                let (action, request, out) = run_on(&dp, hook, src, dst, payload);
                assert_eq!(action, hook.passes(), "{case} from {src}, {hook:?}");
                assert_eq!(out, request, "{case} from {src}, {hook:?}: unchanged");
            }
        }
    }
    let plain = ntp_request(4, 3, 1, 0);
    // A source in no group: the server's business (`ntp.allow`), not ours.
    let (action, request, out) = run(&dp, LinkKind::Ethernet, "192.0.2.50", NTP_V4, &plain);
    assert_eq!((action, &out), (XDP_PASS, &request), "a source in no group");
    // An address the fast path does not serve.
    let (action, _, _) = run(&dp, LinkKind::Ethernet, "10.1.2.3", "100.127.0.124", &plain);
    assert_eq!(action, XDP_PASS, "another address");
    // An interface where a reply might not reach the device.
    let mut dp = dp;
    dp.answer_ntp_on(LOOPBACK, false).unwrap();
    for hook in Hook::ALL {
        let (action, _, _) = run_on(&dp, hook, "10.1.2.3", NTP_V4, &plain);
        assert_eq!(
            action,
            hook.passes(),
            "an interface not cleared for replies, {hook:?}"
        );
    }
    dp.answer_ntp_on(LOOPBACK, true).unwrap();
    // Fast path off: no addresses.
    maps.set_addresses(&[]).unwrap();
    let (action, _, _) = run(&dp, LinkKind::Ethernet, "10.1.2.3", NTP_V4, &plain);
    assert_eq!(action, XDP_PASS, "fast path off");
    assert!(dp.stat(Stat::NtpFastPassed).unwrap().packets >= cases.len() as u64 * 6);
}

/// The listen ports gate the lookup of the listen addresses
/// (`TG_NTP_PORTS`): a listen address moved to another port is answered
/// there, and no longer on the port it left.
#[test]
fn a_request_is_answered_on_the_listen_port_and_only_there() {
    let (dp, mut maps) = dataplane();
    let (_, advertised) = states().remove(0);
    publish(&mut maps, &advertised, GENEROUS);
    let plain = ntp_request(4, 3, 1, 0);
    let answer = |port: u16| {
        let request = frame_to_port("10.1.2.3", NTP_V4, port, &plain, LinkKind::Ethernet);
        dp.test_run_xdp_output(LinkKind::Ethernet, &request)
            .unwrap()
            .0
    };
    for (listen, answered, when) in [
        (123, (XDP_TX, XDP_PASS), "at 123"),
        (1123, (XDP_PASS, XDP_TX), "moved to 1123"),
        (123, (XDP_TX, XDP_PASS), "back at 123"),
    ] {
        maps.set_addresses(&[SocketAddr::new(ip(NTP_V4), listen)])
            .unwrap();
        assert_eq!((answer(123), answer(1123)), answered, "{when}");
    }
}

#[test]
fn a_stale_or_withdrawn_state_leaves_the_answer_to_the_server() {
    let (dp, mut maps) = dataplane();
    let (_, advertised) = states().remove(0);
    let plain = ntp_request(4, 3, 1, 0);
    // Never published.
    let (action, _, _) = run(&dp, LinkKind::Ethernet, "10.1.2.3", NTP_V4, &plain);
    assert_eq!(action, XDP_PASS, "no state yet");
    let mut state = publish(&mut maps, &advertised, GENEROUS);
    for hook in Hook::ALL {
        let (action, _, _) = run_on(&dp, hook, "10.1.2.3", NTP_V4, &plain);
        assert_eq!(action, hook.sends(), "fresh, {hook:?}");
    }
    // Past its validity, as when the controller stopped refreshing it.
    state.valid_until_ns = 1;
    maps.publish(&state).unwrap();
    for hook in Hook::ALL {
        let (action, _, _) = run_on(&dp, hook, "10.1.2.3", NTP_V4, &plain);
        assert_eq!(action, hook.passes(), "stale, {hook:?}");
    }
    publish(&mut maps, &advertised, GENEROUS);
    maps.withdraw().unwrap();
    let (action, _, _) = run(&dp, LinkKind::Ethernet, "10.1.2.3", NTP_V4, &plain);
    assert_eq!(action, XDP_PASS, "withdrawn");
}

#[test]
fn the_rate_limit_has_chronys_burst_and_leak() {
    let (dp, mut maps) = dataplane();
    let (_, advertised) = states().remove(0);
    // A burst of 4, then one reply per 4096 s: none within the test.
    let strict = NtpRateLimit {
        interval: 12,
        burst: 4,
        leak: 0,
    };
    publish(&mut maps, &advertised, strict);
    let plain = ntp_request(4, 3, 1, 0);
    let answered = |src: &str, n: usize| {
        (0..n)
            .filter(|_| run(&dp, LinkKind::Ethernet, src, NTP_V4, &plain).0 == XDP_TX)
            .count()
    };
    assert_eq!(
        answered("10.1.2.3", 10),
        4,
        "the burst, then the server decides"
    );
    assert_eq!(answered("10.1.2.4", 10), 4, "another source has its own");
    assert_eq!(dp.stat(Stat::NtpFastLimited).unwrap().packets, 12);
    // Leak 2: about one limited request in four is still answered.
    let leaky = NtpRateLimit { leak: 2, ..strict };
    publish(&mut maps, &advertised, leaky);
    let n = 4000;
    let leaked = answered("10.1.2.3", n) as f64 / n as f64;
    assert!((0.2..0.3).contains(&leaked), "leak ratio {leaked}");
}
