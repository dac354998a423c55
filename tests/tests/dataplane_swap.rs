//! Policy swaps are atomic: while real traffic flows through the XDP program,
//! the policy flips 100 times between two versions that both allow the flow
//! through different rules. A packet that saw half of each version would hit
//! a group default (deny) instead; none may, and the counters add up. Every
//! datagram of the test is one flow, so this also shows that each datagram
//! takes the rule of the version in force when it arrives. And a policy
//! staged but not yet flipped is seen by the probe (the daemon's check of
//! `expect:` cases) and by no packet.

use std::{
    net::UdpSocket,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use testkit::frames::{Frame, Transport};
use testkit::tables::Tables;
use tollgate::{
    config::AttachPolicy,
    datapath::{Dataplane, Options, XDP_DROP, XDP_PASS, probe_frame},
    netns::{RIG_DEVICE_IFACE, Rig},
    tables::{CompiledPolicy, CounterOwner, Decider},
};
use tollgate_common::{DecisionReason, Stat, Verdict};

const SERVICE: &str = "203.0.113.10";
const PORT: u16 = 7000;

/// Version A puts the device in `alpha`, version B in `beta`; each version's
/// other group has no devices and no rules. Mixing A's group lookup with
/// B's rule lookup (or the reverse) lands on a default: deny.
fn versions() -> (CompiledPolicy, CompiledPolicy) {
    let mut a = Tables::new(true);
    let alpha = a.group("alpha", true, &["10.64.0.0/16"]);
    a.group("beta", true, &[]);
    a.rule(
        alpha,
        "203.0.113.0/24",
        Some(17),
        Some((PORT, PORT)),
        false,
        "a",
    );
    let mut b = Tables::new(true);
    b.group("alpha", true, &[]);
    let beta = b.group("beta", true, &["10.64.0.0/16"]);
    b.rule(
        beta,
        "203.0.113.0/24",
        Some(17),
        Some((PORT, PORT)),
        false,
        "b",
    );
    (a.build(), b.build())
}

#[test]
fn hundred_swaps_under_traffic_never_mix_versions() {
    testkit::require_root();
    let rig = Rig::create(&format!("tg-swap-{}", std::process::id())).unwrap();
    rig.add_device("10.64.0.10").unwrap();
    rig.add_service(SERVICE).unwrap();
    let (a, b) = versions();

    let mut dataplane = Dataplane::open(&Options::default()).unwrap();
    dataplane.install(&a).unwrap();
    rig.gateway
        .enter(|| dataplane.attach_by_name(RIG_DEVICE_IFACE, AttachPolicy::XdpNative))
        .unwrap()
        .unwrap();

    let receiver = rig
        .upstream
        .enter(|| UdpSocket::bind((SERVICE, PORT)).unwrap())
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    testkit::large_receive_buffer(&receiver);
    let sender = rig
        .devices
        .enter(|| UdpSocket::bind("10.64.0.10:0").unwrap())
        .unwrap();

    let done = AtomicBool::new(false);
    let (sent, received, swaps) = std::thread::scope(|s| {
        let sending = s.spawn(|| {
            let mut sent = 0u64;
            while !done.load(Ordering::Relaxed) {
                sender
                    .send_to(&sent.to_be_bytes(), (SERVICE, PORT))
                    .unwrap();
                sent += 1;
                if sent.is_multiple_of(32) {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            sent
        });
        let receiving = s.spawn(|| {
            let mut received = 0u64;
            let mut buf = [0u8; 64];
            while receiver.recv(&mut buf).is_ok() {
                received += 1;
            }
            received
        });
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        for i in 0..100 {
            dataplane.install(if i % 2 == 0 { &b } else { &a }).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let swaps = started.elapsed();
        std::thread::sleep(Duration::from_millis(50));
        done.store(true, Ordering::Relaxed);
        (sending.join().unwrap(), receiving.join().unwrap(), swaps)
    });

    let count = |group: &str, decider: Decider| -> u64 {
        let owner = CounterOwner::Decision {
            group: group.into(),
            decider,
        };
        dataplane.counter_of(&owner).unwrap().unwrap().packets
    };
    let rule_a = count("alpha", Decider::Rule("a".into()));
    let rule_b = count("beta", Decider::Rule("b".into()));
    let alpha_default = count("alpha", Decider::GroupDefault);
    let beta_default = count("beta", Decider::GroupDefault);
    eprintln!(
        "{sent} datagrams sent, {received} received, 100 swaps in {swaps:?}; \
         rule a {rule_a}, rule b {rule_b}, defaults {alpha_default}/{beta_default}"
    );
    assert_eq!(
        alpha_default + beta_default,
        0,
        "a packet mixed two versions"
    );
    assert_eq!(dataplane.stat(Stat::DropPolicy).unwrap().packets, 0);
    assert_eq!(
        rule_a + rule_b,
        sent,
        "every datagram counted by exactly one rule"
    );
    assert!(rule_a > 0 && rule_b > 0, "traffic saw both versions");
    assert_eq!(received, sent, "no datagram lost");
}

/// A flow's packets take the verdict of the policy in force, packet by
/// packet: allowed under A (charged to A's rule), denied under B at once,
/// allowed again under A re-installed into the slot it had before.
#[test]
fn a_flow_takes_the_policy_in_force_packet_by_packet() {
    testkit::require_root();
    let mut a = Tables::new(true);
    let fleet = a.group("fleet", true, &["10.64.0.10"]);
    a.rule(
        fleet,
        "203.0.113.0/24",
        Some(17),
        Some((PORT, PORT)),
        false,
        "a",
    );
    let a = a.build();
    let mut b = Tables::new(true);
    b.group("fleet", true, &["10.64.0.10"]);
    let b = b.build();
    let frame = Frame::new(
        "10.64.0.10".parse().unwrap(),
        SERVICE.parse().unwrap(),
        Transport::Udp { dport: PORT },
    )
    .build();

    let mut dataplane = Dataplane::open(&Options::default()).unwrap();
    let rule_a = CounterOwner::Decision {
        group: "fleet".into(),
        decider: Decider::Rule("a".into()),
    };
    let default = CounterOwner::Decision {
        group: "fleet".into(),
        decider: Decider::GroupDefault,
    };
    let count =
        |dp: &Dataplane, owner: &CounterOwner| dp.counter_of(owner).unwrap().unwrap().packets;

    dataplane.install(&a).unwrap();
    let slot_of_a = dataplane.active_slot();
    assert_eq!(dataplane.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);
    assert_eq!(dataplane.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);
    assert_eq!(count(&dataplane, &rule_a), 2, "both charged to rule a");

    dataplane.install(&b).unwrap();
    assert_eq!(
        dataplane.test_run_xdp(&frame, 1).unwrap().0,
        XDP_DROP,
        "B denies the flow A allowed"
    );
    assert_eq!(count(&dataplane, &default), 1);

    dataplane.install(&a).unwrap();
    assert_eq!(dataplane.active_slot(), slot_of_a, "A is back in its slot");
    assert_eq!(dataplane.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);
    assert_eq!(dataplane.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);
    assert_eq!(count(&dataplane, &rule_a), 4);
}

/// The probe decides on the staged slot while packets still see the slot in
/// force; it charges no counter; a stage that is never flipped changes
/// nothing packets see, and the next stage writes over it.
#[test]
fn the_probe_sees_the_staged_slot_and_packets_do_not() {
    testkit::require_root();
    let mut allowing = Tables::new(true);
    let fleet = allowing.group("fleet", true, &["10.64.0.10"]);
    allowing.rule(
        fleet,
        "203.0.113.0/24",
        Some(17),
        Some((PORT, PORT)),
        false,
        "a",
    );
    let allowing = allowing.build();
    let mut denying = Tables::new(true);
    denying.group("fleet", true, &["10.64.0.10"]);
    let denying = denying.build();
    let packet = tollgate::tables::PacketFacts {
        src: "10.64.0.10".parse().unwrap(),
        dst: SERVICE.parse().unwrap(),
        proto: 17,
        dport: Some(PORT),
    };
    let frame = probe_frame::frame(&packet);

    let mut dataplane = Dataplane::open(&Options::default()).unwrap();
    dataplane.install(&allowing).unwrap();
    let generation = dataplane.generation();
    let rule_a = CounterOwner::Decision {
        group: "fleet".into(),
        decider: Decider::Rule("a".into()),
    };
    let before = dataplane.counter_of(&rule_a).unwrap().unwrap().packets;

    let staged = dataplane.stage(&denying).unwrap();
    let probed = dataplane.probe(&staged, &frame).unwrap().expect("decided");
    assert_eq!(probed.verdict, Verdict::Deny);
    assert_eq!(probed.reason, DecisionReason::GroupDefault);
    let owner = &denying.counters[probed.counter.expect("a counter of the staged policy") as usize];
    assert_eq!(
        owner,
        &CounterOwner::Decision {
            group: "fleet".into(),
            decider: Decider::GroupDefault
        }
    );
    assert_eq!(
        dataplane.counter_of(&rule_a).unwrap().unwrap().packets,
        before,
        "the probe charges nothing"
    );
    assert_eq!(
        dataplane.test_run_xdp(&frame, 1).unwrap().0,
        XDP_PASS,
        "packets still see the policy in force"
    );
    drop(staged);
    assert_eq!(dataplane.generation(), generation, "no flip");
    assert_eq!(dataplane.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);

    // The slot left unused is written again by the next stage.
    let staged = dataplane.stage(&denying).unwrap();
    dataplane.flip(staged).unwrap();
    assert_eq!(dataplane.test_run_xdp(&frame, 1).unwrap().0, XDP_DROP);
    let staged = dataplane.stage(&allowing).unwrap();
    let probed = dataplane.probe(&staged, &frame).unwrap().expect("decided");
    assert_eq!(
        (probed.verdict, probed.reason),
        (Verdict::Allow, DecisionReason::Rule)
    );
    dataplane.flip(staged).unwrap();
    assert_eq!(dataplane.test_run_xdp(&frame, 1).unwrap().0, XDP_PASS);
}
