//! Proves the rig: the embedded program loads, attaches to a veth in a
//! namespace and counts real packets, and `BPF_PROG_TEST_RUN` works.

use std::{net::UdpSocket, time::Duration};

use tollgate::{
    config::AttachPolicy,
    datapath::{Dataplane, Options, XDP_PASS},
    netns::veth,
};
use tollgate_common::Stat;

#[test]
fn xdp_counts_real_udp_packets_between_namespaces() {
    testkit::require_root();
    let device = testkit::namespace("rig-dev");
    let gateway = testkit::namespace("rig-gw");
    veth((&device, "eth0"), (&gateway, "devices0")).unwrap();
    device
        .ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"])
        .unwrap();
    gateway
        .ip(&["addr", "add", "192.0.2.1/24", "dev", "devices0"])
        .unwrap();
    // Static neighbour entries: the only frames on the wire are our datagrams.
    let gw_mac = gateway.ip(&["-br", "link", "show", "devices0"]).unwrap();
    let gw_mac = gw_mac.split_whitespace().nth(2).unwrap().to_string();
    device
        .ip(&[
            "neigh",
            "add",
            "192.0.2.1",
            "lladdr",
            &gw_mac,
            "dev",
            "eth0",
        ])
        .unwrap();

    let mut dataplane = Dataplane::open(&Options::default()).unwrap();
    let attachment = gateway
        .enter(|| {
            dataplane
                .attach_by_name("devices0", AttachPolicy::XdpNative)
                .or_else(|e| {
                    eprintln!("native XDP unavailable ({e:#}); falling back to generic");
                    dataplane.attach_by_name("devices0", AttachPolicy::XdpGeneric)
                })
        })
        .unwrap()
        .unwrap();
    eprintln!("attached in {} mode", attachment.mode);

    let receiver = gateway
        .enter(|| UdpSocket::bind("192.0.2.1:9999").unwrap())
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let before = dataplane.stat(Stat::Seen).unwrap();
    const SENT: u64 = 25;
    device
        .enter(|| {
            let socket = UdpSocket::bind("192.0.2.10:0").unwrap();
            for i in 0..SENT {
                socket.send_to(&[i as u8; 100], "192.0.2.1:9999").unwrap();
            }
        })
        .unwrap();
    let mut buf = [0u8; 200];
    for _ in 0..SENT {
        let (n, _) = receiver
            .recv_from(&mut buf)
            .expect("datagram passed by XDP");
        assert_eq!(n, 100);
    }
    let seen = dataplane.stat(Stat::Seen).unwrap();
    assert_eq!(
        seen.packets - before.packets,
        SENT,
        "one count per datagram"
    );
    // 14 Ethernet + 20 IPv4 + 8 UDP + 100 payload.
    assert_eq!(seen.bytes - before.bytes, SENT * 142);
}

#[test]
fn test_run_returns_the_program_verdict() {
    testkit::require_root();
    let dataplane = Dataplane::open(&Options::default()).unwrap();
    // An ARP request: the pass-through program must pass it.
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    frame.extend_from_slice(&[0; 28]);
    let (action, _) = dataplane.test_run_xdp(&frame, 1).unwrap();
    assert_eq!(action, XDP_PASS);
    assert_eq!(dataplane.stat(Stat::Seen).unwrap().packets, 1);
}
