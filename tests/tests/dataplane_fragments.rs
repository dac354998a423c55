//! Remembered first-fragment verdicts follow the policy in force: they are
//! keyed by policy generation, expire after `limits.fragment-lifetime`, find
//! IPv6 datagrams whose first fragment carries more extension headers after
//! the Fragment header, and one source cannot take more than its quota.
//! Real frames through the real XDP program (`BPF_PROG_TEST_RUN`).

use std::time::Duration;

use testkit::frames::{Extension, Frame, Ipv4Fragment, Transport};
use testkit::tables::Tables;
use tollgate::{
    config::Limits,
    datapath::{Dataplane, Options, XDP_DROP, XDP_PASS},
    tables::CompiledPolicy,
};
use tollgate_common::Stat;

const DEVICE: &str = "10.64.0.10";
const DEVICE_V6: &str = "fd00:64::10";
const SERVICE: &str = "203.0.113.10";
const SERVICE_V6: &str = "2001:db8:100::10";
const PORT: u16 = 7000;

/// `fleet` allows udp/7000 to the service (A) or nothing at all (B). A
/// later fragment carries no port, so under A it passes only by following
/// its allowed first fragment.
fn policy(allow: bool) -> CompiledPolicy {
    let mut t = Tables::new(true);
    let fleet = t.group("fleet", true, &[DEVICE, DEVICE_V6]);
    if allow {
        for service in ["203.0.113.0/24", "2001:db8:100::/48"] {
            t.rule(fleet, service, Some(17), Some((PORT, PORT)), false, "a");
        }
    }
    t.build()
}

/// A fragment of datagram `id` to the service's udp/7000: the first
/// (offset 0, more to come, with the UDP header) or a later one (no header).
fn fragment(id: u16, first: bool) -> Vec<u8> {
    let mut f = Frame::new(
        DEVICE.parse().unwrap(),
        SERVICE.parse().unwrap(),
        Transport::Udp { dport: PORT },
    );
    f.ipv4_fragment = Some(Ipv4Fragment {
        offset: if first { 0 } else { 3 },
        more: first,
        id,
    });
    f.omit_transport = !first;
    f.payload = 16;
    f.build()
}

fn first(id: u16) -> Vec<u8> {
    fragment(id, true)
}

fn later(id: u16) -> Vec<u8> {
    fragment(id, false)
}

fn open(limits: Limits) -> Dataplane {
    testkit::require_root();
    Dataplane::open(&Options {
        limits,
        ..Options::default()
    })
    .unwrap()
}

fn stat(dp: &Dataplane, s: Stat) -> u64 {
    dp.stat(s).unwrap().packets
}

#[test]
fn a_first_fragment_verdict_ends_with_its_policy() {
    let mut dp = open(Limits::default());
    dp.install(&policy(true)).unwrap();
    assert_eq!(dp.test_run_xdp(&first(1), 1).unwrap().0, XDP_PASS);
    assert_eq!(
        dp.test_run_xdp(&later(1), 1).unwrap().0,
        XDP_PASS,
        "under A the later fragment follows its first"
    );
    assert_eq!(dp.test_run_xdp(&first(2), 1).unwrap().0, XDP_PASS);

    dp.install(&policy(false)).unwrap();
    assert_eq!(
        dp.test_run_xdp(&later(2), 1).unwrap().0,
        XDP_DROP,
        "B denies the destination: the verdict A gave the first fragment is gone"
    );

    // Back to A in the same slot: a new generation, still no old verdict.
    dp.install(&policy(true)).unwrap();
    assert_eq!(
        dp.test_run_xdp(&later(2), 1).unwrap().0,
        XDP_DROP,
        "the port is unknown and nothing remembered under this generation"
    );
}

#[test]
fn a_remembered_first_fragment_expires_after_its_lifetime() {
    let mut dp = open(Limits {
        fragment_lifetime: Duration::from_secs(1),
        ..Limits::default()
    });
    dp.install(&policy(true)).unwrap();
    assert_eq!(dp.test_run_xdp(&first(7), 1).unwrap().0, XDP_PASS);
    assert_eq!(dp.test_run_xdp(&later(7), 1).unwrap().0, XDP_PASS);
    let expired = stat(&dp, Stat::FragmentExpired);
    // The coarse clock ticks every few ms: wait the lifetime and a margin.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        dp.test_run_xdp(&later(7), 1).unwrap().0,
        XDP_DROP,
        "after the lifetime the fragment is judged with the port unknown"
    );
    assert_eq!(stat(&dp, Stat::FragmentExpired), expired + 1);
}

/// An IPv6 first fragment whose Fragment header is followed by a
/// destination-options header: its later fragments carry the Fragment
/// header's next header (60), not UDP, and must still find it.
#[test]
fn ipv6_later_fragments_find_a_first_fragment_with_more_extension_headers() {
    let mut dp = open(Limits::default());
    dp.install(&policy(true)).unwrap();
    let v6 = |exts: Vec<Extension>, omit: bool| {
        let mut f = Frame::new(
            DEVICE_V6.parse().unwrap(),
            SERVICE_V6.parse().unwrap(),
            Transport::Udp { dport: PORT },
        );
        f.ipv6_extensions = exts;
        f.omit_transport = omit;
        f.payload = 16;
        f.build()
    };
    let first = v6(
        vec![
            Extension::Fragment {
                offset: 0,
                more: true,
                id: 0xfeed,
            },
            Extension::DestinationOptions,
        ],
        false,
    );
    let mut later = v6(
        vec![Extension::Fragment {
            offset: 8,
            more: false,
            id: 0xfeed,
        }],
        true,
    );
    // The Fragment header's next header is what the first fragment's said.
    let fragment_header = 14 + 40;
    later[fragment_header] = 60;
    let hits = stat(&dp, Stat::FragmentCacheHit);
    assert_eq!(dp.test_run_xdp(&first, 1).unwrap().0, XDP_PASS);
    assert_eq!(dp.test_run_xdp(&later, 1).unwrap().0, XDP_PASS);
    assert_eq!(stat(&dp, Stat::FragmentCacheHit), hits + 1);
}

#[test]
fn one_source_cannot_remember_more_than_its_quota() {
    let mut dp = open(Limits {
        fragments_per_source: 4,
        ..Limits::default()
    });
    dp.install(&policy(true)).unwrap();
    for id in 100..110 {
        assert_eq!(dp.test_run_xdp(&first(id), 1).unwrap().0, XDP_PASS);
    }
    assert_eq!(
        stat(&dp, Stat::FragmentOverQuota),
        6,
        "the first fragments past the quota of 4 pass but are not remembered"
    );
    let passed: Vec<u16> = (100..110)
        .filter(|&id| dp.test_run_xdp(&later(id), 1).unwrap().0 == XDP_PASS)
        .collect();
    assert_eq!(passed, [100, 101, 102, 103]);
}
