//! The kernel decides exactly what the reference model decides: the
//! harness of the differential test (`tests/tests/dataplane_differential.rs`,
//! ≥ 10⁵ cases) and of its ≥ 10⁶-case run in the dataplane bench.
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
//! WireGuard, PPP and IP-tunnel links), and every other Ethernet frame
//! carries one or two VLAN tags (the program parses tagged and untagged
//! frames with separate code), and every third IPv6 packet that is not a
//! later fragment carries a Destination Options header before its
//! transport header (the program parses packets with and without extension
//! headers with separate code). A sample also goes through the TC
//! program, which answers the same rejects (its redirect back out). Any
//! disagreement prints the policy and the packet.
//! The tries of these small policies all get the largest shape, a big
//! (16-bit) root and 8-bit nodes; a run with [`Tries::SmallRoots`] gives
//! them 8-bit roots (`Options::small_roots`), and one with
//! [`Tries::Narrow`] 4-bit nodes (`Options::narrow_tries`), what a slot
//! without room for the larger shapes gets, so that every walk of the
//! kernel is held to the model.
//!
//! Every group has an FQDN rule, and some of the packets' destinations are
//! learned for it (live or expired, in the packet's group or another)
//! before the packets run: the model reads what `TG_LEARNED` holds.
//!
//! Nothing a packet leaves behind may change the next one's verdict: the TC
//! sample repeats a packet the XDP program just judged, and each policy
//! first replays packets of the policy before it.

use std::{
    cell::RefCell,
    fmt,
    net::IpAddr,
    time::{Duration, Instant},
};

use proptest::prelude::*;
use tollgate::{
    config::RejectRepliesConfig,
    datapath::learned::monotonic_ns,
    datapath::{
        Dataplane, Options, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS, XDP_TX,
    },
    links::LinkKind,
    model,
    tables::{CompiledPolicy, PacketFacts},
};
use tollgate_common::{DecisionReason, RECORD_ENTRIES, Verdict};

use crate::frames::{Extension, Frame, Ipv4Fragment, Transport};
use crate::random;

/// Random packets per policy, besides the replayed ones.
pub const PACKETS_PER_POLICY: usize = 200;
/// Every n-th packet also runs through the TC program.
const TC_SAMPLE: usize = 10;
/// The VLAN tags of the tagged Ethernet frames, in turn: one 802.1Q tag,
/// then an 802.1ad tag outside an 802.1Q one.
const VLAN_TAGS: [&[u16]; 2] = [&[0x8100], &[0x88a8, 0x8100]];
/// Packets of the previous policy replayed under each new one.
const REPLAYED: usize = 20;

/// What one run of [`agree`] judged: every case agreed, or it panicked.
#[derive(Debug, Default)]
pub struct Agreement {
    /// (policy, packet) cases judged by kernel and model alike.
    pub cases: u64,
    /// Random policies installed.
    pub policies: u32,
    /// Cases the model denies or rejects.
    pub denied: u64,
    /// Cases the kernel answered (`XDP_TX`): rejects of answerable packets.
    pub answered: u64,
    /// Cases also run through the TC program.
    pub tc: u64,
    /// Cases run through the raw-IP XDP variant instead of the Ethernet one.
    pub raw_ip: u64,
    /// Ethernet cases whose frame carried VLAN tags.
    pub vlan_tagged: u64,
    /// IPv6 cases with an extension header before the transport header.
    pub ipv6_extended: u64,
    /// Policies with a rule list longer than one record (chained records).
    pub chained: u32,
    /// Learned destinations written before the packets ran.
    pub learned_written: u64,
    /// Cases decided by a learned destination.
    pub learned_decided: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// The shape the tries were given.
    pub tries: Tries,
}

impl Agreement {
    /// Panics unless the random cases took the paths they are there for.
    pub fn check_exercised(&self) {
        let cases = self.cases;
        // At least 1 case in 200. The share swings with the random
        // policies: 3.0-3.7% over 500 of them, 1.5-4.6% over the narrow
        // run's 100 (whose 1.5% failed a bound of 1 in 50).
        assert!(
            self.learned_decided > cases / 200,
            "learned destinations exercised: {} of {cases} cases",
            self.learned_decided
        );
        assert!(
            self.chained >= self.policies / 10,
            "rule lists longer than one record exercised"
        );
        assert!(cases >= u64::from(self.policies) * PACKETS_PER_POLICY as u64);
        assert!(
            self.raw_ip >= cases / 3,
            "the raw-IP variant judged its share"
        );
        assert!(
            self.vlan_tagged >= cases / 6,
            "VLAN-tagged frames judged their share"
        );
        assert!(
            self.ipv6_extended >= cases / 20,
            "IPv6 extension headers judged their share"
        );
        assert!(
            self.denied > cases / 10 && self.denied < cases * 9 / 10,
            "both verdicts exercised"
        );
        // At least 1 case in 50: the share swings with the random
        // policies, 4.9-16.8% over the runs of one day (the 8-bit-root
        // run's 100 policies once answered 4.9%, under a bound of 1 in 20).
        assert!(self.answered > cases / 50, "rejects answered");
    }
}

impl fmt::Display for Agreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (policy, packet) cases over {} policies{}: kernel = model ({} denied or \
             rejected, {} rejects answered, {} decided by one of {} learned destinations, {} \
             through the raw-IP variant, {} VLAN-tagged, {} IPv6 with an extension header, {} \
             also through TC; {} policies with chained rule records) in {:.2?}",
            self.cases,
            self.policies,
            match self.tries {
                Tries::Largest => "",
                Tries::SmallRoots => ", 8-bit roots",
                Tries::Narrow => ", narrow tries",
            },
            self.denied,
            self.answered,
            self.learned_decided,
            self.learned_written,
            self.raw_ip,
            self.vlan_tagged,
            self.ipv6_extended,
            self.tc,
            self.chained,
            self.elapsed
        )
    }
}

/// Whether `p` is a later fragment: a TCP or UDP packet without a port.
fn later_fragment(p: &PacketFacts) -> bool {
    matches!(p.proto, 6 | 17) && p.dport.is_none()
}

/// The frame the kernel sees for `p`, behind `vlans` (outermost first),
/// with a Destination Options header before the transport header if
/// `extended` (IPv6 only, not a later fragment). A packet without a port
/// (TCP/UDP) is a later fragment; each gets its own IP id, so no fragment
/// of an earlier case is ever taken for its first fragment.
fn frame(p: &PacketFacts, id: u32, vlans: &[u16], extended: bool) -> Vec<u8> {
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
    f.vlans = vlans.to_vec();
    if extended {
        f.ipv6_extensions = vec![Extension::DestinationOptions];
    }
    if later_fragment(p) {
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

/// A program's actions that pass, drop and answer a packet.
struct Actions {
    pass: u32,
    drop: u32,
    answer: u32,
}

const XDP: Actions = Actions {
    pass: XDP_PASS,
    drop: XDP_DROP,
    answer: XDP_TX,
};

/// TC answers by redirecting the reply back out of the interface.
const TC: Actions = Actions {
    pass: TC_ACT_UNSPEC,
    drop: TC_ACT_SHOT,
    answer: TC_ACT_REDIRECT,
};

/// The action of `program` the model's verdict stands for.
/// `extended`: the packet carries an IPv6 extension header. A TCP reset
/// answers it all the same; an ICMPv6 error quotes only a packet without
/// one, so every other such reject is dropped unanswered.
fn action_for(program: &Actions, verdict: Verdict, p: &PacketFacts, extended: bool) -> u32 {
    match verdict {
        Verdict::Allow | Verdict::AuditDeny => program.pass,
        Verdict::Deny => program.drop,
        Verdict::Reject if answerable(p) && (!extended || p.proto == 6) => program.answer,
        Verdict::Reject => program.drop,
    }
}

/// Whether a reject of `p` is answered, of the packets `frame` crafts
/// without an extension header (TCP SYNs, UDP, echo requests, other
/// protocols, no options): not a later fragment (no transport header to
/// answer), and between two addresses that can each be one host.
fn answerable(p: &PacketFacts) -> bool {
    !later_fragment(p) && is_host(p.src) && is_host(p.dst)
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

/// The shape a run gives every trie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tries {
    /// The largest there is room for: a big root and wide nodes.
    #[default]
    Largest,
    /// Wide nodes under an 8-bit root (`Options::small_roots`).
    SmallRoots,
    /// Narrow nodes (`Options::narrow_tries`).
    Narrow,
}

impl Tries {
    /// Its name in a table.
    pub fn name(self) -> &'static str {
        match self {
            Tries::Largest => "big root",
            Tries::SmallRoots => "wide",
            Tries::Narrow => "narrow",
        }
    }
}

/// Runs `policies` random policies with their packets through the kernel
/// and the model, every trie in the shape `tries` says. Needs root;
/// panics on the first disagreement, with the policy and the packet.
pub fn agree(policies: u32, tries: Tries) -> Agreement {
    crate::require_root();
    let options = Options {
        reject_replies: RejectRepliesConfig {
            rate: 1_000_000_000,
            burst: None,
        },
        narrow_tries: tries == Tries::Narrow,
        small_roots: tries == Tries::SmallRoots,
        ..Options::default()
    };
    let dataplane = RefCell::new(Dataplane::open(&options).unwrap());
    let next_id = RefCell::new(0u32);
    let tally = RefCell::new(Agreement {
        policies,
        tries,
        ..Agreement::default()
    });
    let previous = RefCell::new(Vec::<PacketFacts>::new());
    let started = Instant::now();
    random::run_policies(policies, PACKETS_PER_POLICY, |policy, tables, packets| {
        if tables.rulesets.iter().any(|r| r.len() > RECORD_ENTRIES) {
            tally.borrow_mut().chained += 1;
        }
        let mut dp = dataplane.borrow_mut();
        dp.forget_learned().unwrap();
        dp.install(tables)
            .map_err(|e| TestCaseError::fail(format!("install failed: {e:#}")))?;
        learn(&mut dp, tables, packets);
        let learned = dp.learned_destinations();
        tally.borrow_mut().learned_written += learned.len() as u64;
        let replayed = std::mem::replace(&mut *previous.borrow_mut(), packets.to_vec());
        for (i, packet) in replayed.iter().take(REPLAYED).chain(packets).enumerate() {
            let expected = model::verdict_learned(tables, &learned, monotonic_ns(), packet);
            if expected.reason == DecisionReason::Learned {
                tally.borrow_mut().learned_decided += 1;
            }
            let counter = dp
                .counter_index(expected.counter)
                .expect("installed counter");
            let mut id = next_id.borrow_mut();
            *id += 1;
            // Even cases: Ethernet, every other one tagged; odd: raw IP.
            let vlans = if i % 4 == 2 {
                VLAN_TAGS[i / 4 % 2]
            } else {
                &[]
            };
            let extended = packet.src.is_ipv6() && !later_fragment(packet) && i % 3 == 1;
            let bytes = frame(packet, *id, vlans, extended);
            let context = || {
                format!(
                    "packet {packet:?}\nmodel {expected:?}\npolicy {policy:#?}\ntables {tables:#?}"
                )
            };
            let before = dp.counter(counter).unwrap().packets;
            let (action, _) = if i % 2 == 0 {
                if !vlans.is_empty() {
                    tally.borrow_mut().vlan_tagged += 1;
                }
                dp.test_run_xdp(&bytes, 1).unwrap()
            } else {
                tally.borrow_mut().raw_ip += 1;
                dp.test_run_xdp_on(LinkKind::Ip, &bytes[14..], 1).unwrap()
            };
            let want = action_for(&XDP, expected.verdict, packet, extended);
            prop_assert_eq!(action, want, "XDP action\n{}", context());
            prop_assert_eq!(
                dp.counter(counter).unwrap().packets,
                before + 1,
                "the model's deciding counter did not move\n{}",
                context()
            );
            if i % TC_SAMPLE == 0 {
                *id += 1;
                let bytes = frame(packet, *id, vlans, extended);
                let (action, _) = dp.test_run_tc(&bytes, 1).unwrap();
                let want = action_for(&TC, expected.verdict, packet, extended);
                prop_assert_eq!(action, want, "TC action\n{}", context());
                tally.borrow_mut().tc += 1;
            }
            let mut t = tally.borrow_mut();
            t.cases += 1;
            if drops(expected.verdict) {
                t.denied += 1;
            }
            if extended {
                t.ipv6_extended += 1;
            }
            if action == XDP_TX {
                t.answered += 1;
            }
        }
        Ok(())
    });
    Agreement {
        elapsed: started.elapsed(),
        ..tally.into_inner()
    }
}
