//! Deny events: each carries what userspace logs (source, destination,
//! protocol, port, verdict, reason, the deciding counter), and the per-CPU
//! rate limit lets a burst through and counts every event it suppresses.

use std::net::IpAddr;

use testkit::frames::{Frame, Transport};
use testkit::tables::Tables;
use tollgate::{
    config::DenyEventsConfig,
    datapath::{Dataplane, Options, XDP_DROP, XDP_PASS, events},
    tables::{CounterOwner, Decider},
};
use tollgate_common::{DecisionReason, Stat, Verdict};

#[test]
fn deny_events_carry_the_decision_and_the_rate_limit_counts_the_rest() {
    testkit::require_root();
    let mut dataplane = Dataplane::open(&Options {
        deny_events: DenyEventsConfig {
            rate: 2,
            burst: Some(4),
        },
        ..Options::default()
    })
    .unwrap();
    let mut t = Tables::new(true);
    let meters = t.group("meters", true, &["10.64.0.0/16"]);
    t.rule(
        meters,
        "198.51.100.0/24",
        Some(6),
        Some((22, 22)),
        true,
        "no-ssh",
    );
    let audit = t.group("cameras", true, &["10.65.0.0/16"]);
    let policy = {
        let mut p = t.build();
        p.groups[audit as usize].audit = true;
        p
    };
    dataplane.install(&policy).unwrap();
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };

    // A deny by rule, an audit-deny by default, an unknown device.
    let cases = [
        (
            Frame::new(
                ip("10.64.0.7"),
                ip("198.51.100.9"),
                Transport::Tcp { dport: 22 },
            ),
            XDP_DROP,
        ),
        (
            Frame::new(
                ip("10.65.0.7"),
                ip("198.51.100.9"),
                Transport::Udp { dport: 5000 },
            ),
            XDP_PASS,
        ),
        (
            Frame::new(
                ip("10.99.0.7"),
                ip("198.51.100.9"),
                Transport::Icmp { kind: 8 },
            ),
            XDP_DROP,
        ),
    ];
    for (frame, action) in &cases {
        assert_eq!(
            dataplane.test_run_xdp(&frame.build(), 1).unwrap().0,
            *action
        );
    }
    // Then a flood: far more denies than the burst allows.
    let flood = cases[0].0.build();
    for _ in 0..50 {
        dataplane.test_run_xdp(&flood, 1).unwrap();
    }

    let mut ring = dataplane.take_events().unwrap();
    let mut got = Vec::new();
    while let Some(item) = ring.next() {
        got.push(events::decode(&item).unwrap());
    }
    let suppressed = dataplane.stat(Stat::EventsSuppressed).unwrap().packets;
    eprintln!("{} events delivered, {suppressed} suppressed", got.len());
    assert_eq!(
        got.len() as u64 + suppressed,
        53,
        "every deny is either reported or counted"
    );
    assert!(
        got.len() >= 4 && got.len() <= 6,
        "the burst (4), plus what 2/s refills meanwhile: {got:#?}"
    );
    assert_eq!(dataplane.stat(Stat::EventsLost).unwrap().packets, 0);

    let rule = |group: &str, decider| {
        let owner = CounterOwner::Decision {
            group: group.into(),
            decider,
        };
        let logical = policy.counters.iter().position(|o| *o == owner).unwrap() as u32;
        dataplane.counter_index(logical).unwrap()
    };
    let first = &got[0];
    assert_eq!(
        (first.src, first.dst),
        (ip("10.64.0.7"), ip("198.51.100.9"))
    );
    assert_eq!((first.proto, first.dport), (6, Some(22)));
    assert_eq!(
        (first.verdict, first.reason),
        (Verdict::Deny, DecisionReason::Rule)
    );
    assert_eq!(
        first.counter,
        rule("meters", Decider::Rule("no-ssh".into()))
    );
    let second = &got[1];
    assert_eq!(
        (second.verdict, second.reason),
        (Verdict::AuditDeny, DecisionReason::GroupDefault)
    );
    assert_eq!(second.counter, rule("cameras", Decider::GroupDefault));
    assert_eq!(second.dport, Some(5000));
    let third = &got[2];
    assert_eq!(
        (third.verdict, third.reason),
        (Verdict::Deny, DecisionReason::UnknownDevice)
    );
    assert_eq!((third.proto, third.dport), (1, None));
    assert_eq!(third.counter, rule("_unknown", Decider::GroupDefault));
}
