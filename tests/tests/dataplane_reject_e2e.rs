//! Rejected traffic fails fast, for real: from a device namespace, through
//! the gateway namespace where the program sits, a TCP connect to a rejected
//! destination is refused ("connection refused", not a timeout) and a
//! connected UDP socket learns of the ICMP unreachable, in IPv4 and IPv6, on
//! an Ethernet link (veth). On a raw-IP link (tun) the device side is the
//! test itself: its SYN gets a RST and its datagram an ICMP unreachable,
//! read back from the tun device. Each link is tried with both hooks.
//!
//! XDP attaches in generic mode: in native mode a veth delivers what its
//! program sends back (`XDP_TX`) only if its peer runs NAPI (GRO enabled or
//! an XDP program of its own), which the device side of the rig does not;
//! tun has no native XDP for raw-IP links. Physical NICs answer natively.

use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use testkit::tun::{self, Probe, Tun};
use tollgate::{
    compile::compile,
    config::{AttachPolicy, Limits},
    datapath::{Dataplane, Options},
    netns::{RIG_DEVICE_IFACE, Rig},
    policy::{self, Environment, Source},
    tables::CompiledPolicy,
};
use tollgate_common::Stat;

/// Meters may reach nothing but the gateway; the lab services are rejected,
/// everything else denied.
const POLICY: &str = "\
groups:
  meters:
    devices: [10.64.0.0/16, fd00:64::/48]
    default: deny
    rules:
      - reject: {to: [203.0.113.5, \"2001:db8:100::5\"]}
";

const DEVICES: [&str; 2] = ["10.64.0.10", "fd00:64::10"];
const SERVICES: [&str; 2] = ["203.0.113.5", "2001:db8:100::5"];

/// Long enough that a dropped packet could never pass for a refusal: the
/// tests tell the two apart by the error, never by the time it took.
const PATIENCE: Duration = Duration::from_secs(10);

fn tables() -> CompiledPolicy {
    let loaded = policy::from_sources(
        &[Source {
            path: "reject.yaml".into(),
            text: POLICY.into(),
        }],
        &Environment {
            gateway: Vec::new(),
            ntp: Vec::new(),
        },
    )
    .unwrap_or_else(|d| panic!("{d:#?}"));
    compile(&loaded.policy, &Limits::default()).unwrap()
}

fn dataplane() -> Dataplane {
    let mut dp = Dataplane::open(&Options::default()).unwrap();
    dp.install(&tables()).unwrap();
    dp
}

/// A TCP connect from `src` to `dst`: the error it ends with.
fn connect(rig: &Rig, src: IpAddr, dst: IpAddr) -> std::io::Error {
    rig.devices
        .enter(|| {
            let socket = Socket::new(
                Domain::for_address(SocketAddr::new(src, 0)),
                Type::STREAM,
                Some(Protocol::TCP),
            )
            .unwrap();
            socket.bind(&SocketAddr::new(src, 0).into()).unwrap();
            socket
                .connect_timeout(&SocketAddr::new(dst, 443).into(), PATIENCE)
                .expect_err("a rejected destination does not accept")
        })
        .unwrap()
}

/// A datagram from a connected UDP socket: the error its next receive
/// reports.
fn udp_send(rig: &Rig, src: IpAddr, dst: IpAddr) -> std::io::Error {
    rig.devices
        .enter(|| {
            let socket = UdpSocket::bind((src, 0)).unwrap();
            socket.connect((dst, 7000)).unwrap();
            socket.set_read_timeout(Some(PATIENCE)).unwrap();
            socket.send(b"reject me").unwrap();
            socket
                .recv(&mut [0u8; 64])
                .expect_err("nothing answers but the gateway's refusal")
        })
        .unwrap()
}

#[test]
fn ethernet_devices_are_refused_at_once_over_tcp_and_udp_in_both_families_xdp() {
    ethernet_devices_are_refused(AttachPolicy::XdpGeneric, "x");
}

#[test]
fn ethernet_devices_are_refused_at_once_over_tcp_and_udp_in_both_families_tc() {
    ethernet_devices_are_refused(AttachPolicy::Tc, "t");
}

#[test]
fn raw_ip_devices_get_a_reset_and_an_unreachable_in_both_families_xdp() {
    raw_ip_devices_are_refused(AttachPolicy::XdpGeneric, "rejtunx");
}

#[test]
fn raw_ip_devices_get_a_reset_and_an_unreachable_in_both_families_tc() {
    raw_ip_devices_are_refused(AttachPolicy::Tc, "rejtunt");
}

/// `tag` keeps the rig names of the two hooks' tests apart.
fn ethernet_devices_are_refused(attach: AttachPolicy, tag: &str) {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-rej{tag}-{}", std::process::id())).unwrap();
    for d in DEVICES {
        rig.add_device(d).unwrap();
    }
    for s in SERVICES {
        rig.add_service(s).unwrap();
    }
    let mut dp = dataplane();
    let attachment = rig
        .gateway
        .enter(|| dp.attach_by_name(RIG_DEVICE_IFACE, attach))
        .unwrap()
        .unwrap();
    eprintln!("attached: {}", attachment.mode);
    for (device, service) in DEVICES.iter().zip(SERVICES) {
        let (src, dst): (IpAddr, IpAddr) = (device.parse().unwrap(), service.parse().unwrap());
        let e = connect(&rig, src, dst);
        assert_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "tcp {src} -> {dst}: {e}"
        );
        let e = udp_send(&rig, src, dst);
        // ICMP code 13 is EHOSTUNREACH to Linux; ICMPv6 code 1 is EACCES.
        let expected = if dst.is_ipv4() {
            libc::EHOSTUNREACH
        } else {
            libc::EACCES
        };
        assert_eq!(e.raw_os_error(), Some(expected), "udp {src} -> {dst}: {e}");
    }
    assert!(dp.stat(Stat::RejectReplyTcpReset).unwrap().packets >= 2);
    assert!(dp.stat(Stat::RejectReplyIcmp).unwrap().packets >= 1);
    assert!(dp.stat(Stat::RejectReplyIcmp6).unwrap().packets >= 1);
}

fn raw_ip_devices_are_refused(attach: AttachPolicy, namespace: &str) {
    testkit::require_root();
    let ns = testkit::namespace(namespace);
    let tun = Tun::create(&ns, "tun0", None);
    let mut dp = dataplane();
    ns.enter(|| dp.attach_by_name("tun0", attach))
        .unwrap()
        .unwrap();
    ns.ip(&["link", "set", "tun0", "up"]).unwrap();
    let mut tag = 30000u16;
    let mut sent = Vec::new();
    for (device, service) in DEVICES.iter().zip(SERVICES) {
        let (src, dst): (IpAddr, IpAddr) = (device.parse().unwrap(), service.parse().unwrap());
        for probe in [Probe::Tcp(443), Probe::Udp(7000)] {
            tun.send(src, dst, probe, tag);
            sent.push((src, dst, probe, tag));
            tag += 1;
        }
    }
    let unanswered = || -> Vec<String> {
        sent.iter()
            .filter(|(_, dst, _, tag)| !tun.refused(*dst, *tag))
            .map(|(src, dst, probe, _)| format!("{src} -> {dst} {probe:?}"))
            .collect()
    };
    // Polled until every refusal is in or PATIENCE runs out.
    let waited_since = std::time::Instant::now();
    while !unanswered().is_empty() && waited_since.elapsed() < PATIENCE {
        std::thread::sleep(tun::REPLY_WAIT / 8);
    }
    assert!(unanswered().is_empty(), "not refused: {:#?}", unanswered());
}
