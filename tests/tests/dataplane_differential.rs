//! The kernel decides exactly what the reference model decides.
//!
//! Random policies (the generator of the model agreement test) are compiled
//! and installed into the real dataplane; random packets are crafted into
//! frames and run through the real XDP program with `BPF_PROG_TEST_RUN`.
//! For every packet, the XDP action must match the model's verdict and the
//! kernel counter the model names (the deciding rule, default or built-in)
//! must be the one that moved. A reject is answered (`XDP_TX`) unless it is
//! a later fragment, which has no transport header to answer: the reply
//! rate is set beyond reach here, so the limiter never turns one into a
//! deny (`dataplane_reject` tests that). Every other packet goes, without its
//! Ethernet header, through the raw-IP XDP variant (the program of tun,
//! WireGuard, PPP and IP-tunnel links). A sample also goes through the TC
//! program, which answers the same rejects (its redirect back out). ≥ 10⁵ cases; any disagreement prints the policy and the packet.
//! The tries of these small policies are all wide (8-bit nodes); a second
//! run of 2·10⁴ cases makes every trie narrow (`Options::narrow_tries`,
//! what a slot without room for wide tries gets), so that both walks of
//! the kernel are held to the model.
//!
//! Every group has an FQDN rule, and some of the packets' destinations are
//! learned for it (live or expired, in the packet's group or another)
//! before the packets run: the model reads what `TG_LEARNED` holds.
//!
//! Nothing a packet leaves behind may change the next one's verdict: the TC
//! sample repeats a packet the XDP program just judged, and each policy
//! first replays packets of the policy before it.

use std::{cell::RefCell, net::IpAddr, time::Instant};

use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use testkit::frames::{Extension, Frame, Ipv4Fragment, Transport};
use testkit::random;
use tollgate::{
    compile::compile,
    config::{Limits, RejectRepliesConfig},
    datapath::learned::monotonic_ns,
    datapath::{
        Dataplane, Options, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS, XDP_TX,
    },
    links::LinkKind,
    model,
    tables::{CompiledPolicy, PacketFacts},
};
use tollgate_common::{DecisionReason, RECORD_ENTRIES, Verdict};

const POLICIES: u32 = 500;
const PACKETS_PER_POLICY: usize = 200;
/// Every n-th packet also runs through the TC program.
const TC_SAMPLE: usize = 10;
/// Packets of the previous policy replayed under each new one.
const REPLAYED: usize = 20;

/// The frame the kernel sees for `p`. A packet without a port (TCP/UDP)
/// is a later fragment; each gets its own IP id, so no fragment of an
/// earlier case is ever taken for its first fragment.
fn frame(p: &PacketFacts, id: u32) -> Vec<u8> {
    let transport = match (p.proto, p.dport) {
        (6, Some(dport)) => Transport::Tcp { dport },
        (17, Some(dport)) => Transport::Udp { dport },
        (6 | 17, None) => Transport::Udp { dport: 0 },
        // Echo requests: never neighbour discovery, which bypasses the policy.
        (1, _) => Transport::Icmp { kind: 8 },
        (58, _) => Transport::Icmpv6 { kind: 128 },
        (proto, _) => Transport::Other { proto, len: 8 },
    };
    let mut f = Frame::new(p.src, p.dst, transport);
    if matches!(p.proto, 6 | 17) && p.dport.is_none() {
        f.transport = if p.proto == 6 {
            Transport::Tcp { dport: 0 }
        } else {
            Transport::Udp { dport: 0 }
        };
        f.omit_transport = true;
        f.payload = 16;
        if p.src.is_ipv4() {
            f.ipv4_fragment = Some(Ipv4Fragment {
                offset: 100,
                more: false,
                id: id as u16,
            });
        } else {
            f.ipv6_extensions = vec![Extension::Fragment {
                offset: 100,
                more: false,
                id,
            }];
        }
    }
    f.build()
}

/// The XDP action the model's verdict stands for.
fn xdp_action(verdict: Verdict, p: &PacketFacts) -> u32 {
    match verdict {
        Verdict::Allow | Verdict::AuditDeny => XDP_PASS,
        Verdict::Deny => XDP_DROP,
        Verdict::Reject if answerable(p) => XDP_TX,
        Verdict::Reject => XDP_DROP,
    }
}

/// The TC action the model's verdict stands for: an answer is redirected
/// back out of the interface.
fn tc_action(verdict: Verdict, p: &PacketFacts) -> u32 {
    match verdict {
        Verdict::Allow | Verdict::AuditDeny => TC_ACT_UNSPEC,
        Verdict::Deny => TC_ACT_SHOT,
        Verdict::Reject if answerable(p) => TC_ACT_REDIRECT,
        Verdict::Reject => TC_ACT_SHOT,
    }
}

/// Whether a reject of `p` is answered, of the packets `frame` crafts (TCP
/// SYNs, UDP, echo requests, other protocols without options or extension
/// headers): not a later fragment (no transport header to answer), and
/// between two addresses that can each be one host.
fn answerable(p: &PacketFacts) -> bool {
    let later_fragment = matches!(p.proto, 6 | 17) && p.dport.is_none();
    !later_fragment && is_host(p.src) && is_host(p.dst)
}

fn is_host(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !matches!(a.octets()[0], 0 | 127 | 224..),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified() || a.is_loopback()),
    }
}

/// Learns some of the packets' destinations (`random::learned_for`) for
/// the FQDN rule every group has: live ones for good, expired ones already
/// expired, so that no clock reading can fall between kernel and model.
fn learn(dp: &mut Dataplane, tables: &CompiledPolicy, packets: &[PacketFacts]) {
    let groups = tables.groups.len() as u32 - 1;
    for (group, addr, live) in random::learned_for(packets, groups, |a| model::group_of(tables, a))
    {
        let expires = if live { u64::MAX / 2 } else { 1 };
        let name = &tables.groups[group as usize].name;
        // A refusal (the gateway's, a device's, a denied address) is part
        // of what is tested: neither side then has the address.
        let _ = dp
            .learn(
                (name, random::LEARNED_RULE),
                addr,
                "differential.test",
                expires,
            )
            .unwrap();
    }
}

/// Whether the verdict drops the packet.
fn drops(verdict: Verdict) -> bool {
    matches!(verdict, Verdict::Deny | Verdict::Reject)
}

#[test]
fn kernel_agrees_with_the_model_on_random_policies_and_packets() {
    agree(POLICIES, false);
}

/// The same with every trie narrow, the form the controller falls back to
/// when a slot has no room for wide ones (the random policies' tries are
/// small, so they are all wide in the test above).
#[test]
fn kernel_agrees_with_the_model_with_narrow_tries() {
    agree(POLICIES / 5, true);
}

/// Runs `policies` random policies with their packets through the kernel
/// and the model.
fn agree(policies: u32, narrow_tries: bool) {
    testkit::require_root();
    let options = Options {
        reject_replies: RejectRepliesConfig {
            rate: 1_000_000_000,
            burst: None,
        },
        narrow_tries,
        ..Options::default()
    };
    let dataplane = RefCell::new(Dataplane::open(&options).unwrap());
    let mut runner = TestRunner::new(Config {
        cases: policies,
        failure_persistence: None,
        ..Config::default()
    });
    let next_id = RefCell::new(0u32);
    // (learned destinations written, packets decided by one)
    let learned_cases = RefCell::new((0u64, 0u64));
    let counts = RefCell::new((0u64, 0u64, 0u64, 0u32, 0u64, 0u64));
    let previous = RefCell::new(Vec::<PacketFacts>::new());
    let started = Instant::now();
    runner
        .run(
            &random::policy()
                .prop_flat_map(|p| (Just(p.clone()), random::packets(&p, PACKETS_PER_POLICY))),
            |(policy, packets)| {
                let policy = random::with_fqdn_rules(&policy);
                let tables = compile(&policy, &Limits::default())
                    .map_err(|e| TestCaseError::fail(format!("compile failed: {e:#?}")))?;
                if tables.rulesets.iter().any(|r| r.len() > RECORD_ENTRIES) {
                    counts.borrow_mut().3 += 1;
                }
                let mut dp = dataplane.borrow_mut();
                dp.forget_learned().unwrap();
                dp.install(&tables)
                    .map_err(|e| TestCaseError::fail(format!("install failed: {e:#}")))?;
                learn(&mut dp, &tables, &packets);
                let learned = dp.learned_destinations();
                learned_cases.borrow_mut().0 += learned.len() as u64;
                let replayed = std::mem::replace(&mut *previous.borrow_mut(), packets.clone());
                for (i, packet) in replayed.iter().take(REPLAYED).chain(&packets).enumerate() {
                    let expected = model::verdict_learned(&tables, &learned, monotonic_ns(), packet);
                    if expected.reason == DecisionReason::Learned {
                        learned_cases.borrow_mut().1 += 1;
                    }
                    let counter = dp.counter_index(expected.counter).expect("installed counter");
                    let mut id = next_id.borrow_mut();
                    *id += 1;
                    let bytes = frame(packet, *id);
                    let context = || {
                        format!(
                            "packet {packet:?}\nmodel {expected:?}\npolicy {policy:#?}\ntables {tables:#?}"
                        )
                    };
                    let before = dp.counter(counter).unwrap().packets;
                    let (action, _) = if i % 2 == 0 {
                        dp.test_run_xdp(&bytes, 1).unwrap()
                    } else {
                        counts.borrow_mut().4 += 1;
                        dp.test_run_xdp_on(LinkKind::Ip, &bytes[14..], 1).unwrap()
                    };
                    let want = xdp_action(expected.verdict, packet);
                    prop_assert_eq!(action, want, "XDP action\n{}", context());
                    prop_assert_eq!(
                        dp.counter(counter).unwrap().packets,
                        before + 1,
                        "the model's deciding counter did not move\n{}",
                        context()
                    );
                    if i % TC_SAMPLE == 0 {
                        *id += 1;
                        let (action, _) = dp.test_run_tc(&frame(packet, *id), 1).unwrap();
                        let want = tc_action(expected.verdict, packet);
                        prop_assert_eq!(action, want, "TC action\n{}", context());
                        counts.borrow_mut().2 += 1;
                    }
                    let mut c = counts.borrow_mut();
                    c.0 += 1;
                    if drops(expected.verdict) {
                        c.1 += 1;
                    }
                    if action == XDP_TX {
                        c.5 += 1;
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    let (cases, denied, tc, chained, raw_ip, answered) = counts.into_inner();
    let (learned_written, learned_decided) = learned_cases.into_inner();
    eprintln!(
        "{cases} (policy, packet) cases over {policies} policies{}: kernel = model ({denied} denied \
         or rejected, {answered} rejects answered, {learned_decided} decided by one of \
         {learned_written} learned destinations, \
         {raw_ip} through the raw-IP variant, {tc} also through TC; {chained} policies with \
         chained rule records) in {:.2?}",
        if narrow_tries { ", narrow tries" } else { "" },
        started.elapsed()
    );
    assert!(
        learned_decided > cases / 50,
        "learned destinations exercised"
    );
    assert!(
        chained >= policies / 10,
        "rule lists longer than one record exercised"
    );
    assert!(cases >= u64::from(policies) * PACKETS_PER_POLICY as u64);
    assert!(raw_ip >= cases / 3, "the raw-IP variant judged its share");
    assert!(
        denied > cases / 10 && denied < cases * 9 / 10,
        "both verdicts exercised"
    );
    assert!(answered > cases / 20, "rejects answered");
}
