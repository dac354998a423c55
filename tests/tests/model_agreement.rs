//! The compiled model (`model::verdict`, the kernel's steps over the tables)
//! and the naive evaluator (`model::naive`, the language semantics over the
//! parsed policy) agree on group, verdict, reason, deciding rule and counter,
//! over 1000 random policies × 100 random packets.
//!
//! Policies and packets are drawn from a small address universe so that
//! prefixes nest, overlap and tie, and packets hit them. A coverage check at
//! the end fails the test if the generator stopped exercising a feature
//! (every tie-break, audit, unknown devices, built-in NTP, fragments,
//! learned addresses, ...). Every group gets an FQDN rule, and some of the
//! packets' destinations are learned for it, live or expired, in the
//! packet's group or another (`random::learned_for`).

use std::{cell::RefCell, collections::BTreeMap, net::IpAddr, time::Instant};

use proptest::prelude::*;
use testkit::random;
use tollgate::{
    model::{
        self,
        naive::{self, RuleOrBuiltin},
    },
    tables::{CompiledPolicy, CounterOwner, Decider, LearnedDestination, PacketFacts},
};
use tollgate_common::{DecisionReason, LEARNED_RULES, Verdict};

const POLICIES: u32 = 1000;
const PACKETS_PER_POLICY: usize = 100;

/// How often each feature was exercised, to prove the generator covers them.
#[derive(Default, Debug)]
struct Coverage {
    seen: BTreeMap<&'static str, u64>,
}

impl Coverage {
    fn hit(&mut self, what: &'static str) {
        *self.seen.entry(what).or_default() += 1;
    }
}

#[test]
fn compiled_model_agrees_with_the_naive_semantics() {
    let coverage = RefCell::new(Coverage::default());
    let started = Instant::now();
    random::run_policies(POLICIES, PACKETS_PER_POLICY, |policy, tables, packets| {
        let (learned, live) = learned(tables, packets);
        let mut coverage = coverage.borrow_mut();
        for packet in packets {
            let compiled = model::verdict_learned(tables, &learned, NOW, packet);
            let naive = naive::evaluate_learned(policy, &live, packet);
            let context = || {
                let candidates: Vec<String> = naive
                    .candidates
                    .iter()
                    .map(|c| match c.rule {
                        RuleOrBuiltin::Rule(r) => format!(
                            "{} {} to {} proto {:?} ports {:?}",
                            r.id, c.action, c.prefix, c.proto, c.ports
                        ),
                        RuleOrBuiltin::BuiltinNtp(a) => format!("builtin ntp {a}"),
                    })
                    .collect();
                format!(
                    "packet {packet:?}\ncompiled {compiled:?}\nnaive: group {:?} {:?} {:?} \
                     candidates {candidates:#?}",
                    naive.group.map(|g| (&g.group.name, g.device.prefix)),
                    naive.verdict,
                    naive.reason,
                )
            };
            prop_assert_eq!(
                compiled.group,
                naive.group.map_or(0, |g| g.id),
                "{}",
                context()
            );
            prop_assert_eq!(
                compiled.device,
                naive.group.map(|g| g.device.prefix),
                "{}",
                context()
            );
            prop_assert_eq!(compiled.verdict, naive.verdict, "{}", context());
            prop_assert_eq!(compiled.reason, naive.reason, "{}", context());
            prop_assert_eq!(compiled.rule.as_ref(), naive.rule_id(), "{}", context());
            let decider = match naive.reason {
                DecisionReason::Rule | DecisionReason::Learned => {
                    Decider::Rule(naive.rule_id().unwrap().as_str().into())
                }
                DecisionReason::BuiltinNtp => Decider::BuiltinNtp,
                _ => Decider::GroupDefault,
            };
            let owner = CounterOwner::Decision {
                group: compiled.group_name.as_str().into(),
                decider,
            };
            prop_assert_eq!(
                &tables.counters[compiled.counter as usize],
                &owner,
                "{}",
                context()
            );
            record(&mut coverage, packet, &naive);
        }
        Ok(())
    });
    let elapsed = started.elapsed();
    let coverage = coverage.into_inner();
    let cases = u64::from(POLICIES) * PACKETS_PER_POLICY as u64;
    eprintln!(
        "{cases} (policy, packet) cases over {POLICIES} policies agreed in {elapsed:.2?}; coverage: {:#?}",
        coverage.seen
    );
    for feature in [
        "reason: rule",
        "reason: group default",
        "reason: unknown device",
        "reason: builtin ntp",
        "reason: learned",
        "verdict: audit-deny",
        "verdict: reject",
        "lost: longer-prefix",
        "lost: specific-protocol",
        "lost: narrower-ports",
        "lost: deny-over-allow",
        "lost: reject-over-allow",
        "lost: deny-over-reject",
        "lost: explicit-over-builtin",
        "lost: earlier-in-file",
        "device: exact",
        "device: prefix",
        "packet: ipv6",
        "packet: fragment",
        "winner: numeric proto",
        "winner: port range",
        "candidates: 3 or more",
    ] {
        assert!(
            coverage.seen.get(feature).copied().unwrap_or(0) >= 10,
            "the generator rarely exercises `{feature}`: {:#?}",
            coverage.seen
        );
    }
}

/// The model's clock in this test: entries expiring after it are live.
const NOW: u64 = 1_000;

/// The learned destinations of the cases, as the model reads them (live
/// and expired), and the live ones as the naive evaluator takes them.
fn learned(
    tables: &CompiledPolicy,
    packets: &[PacketFacts],
) -> (Vec<LearnedDestination>, Vec<naive::Learned>) {
    let groups = tables.groups.len() as u32 - 1;
    let mut expiries: BTreeMap<(u32, IpAddr), u64> = BTreeMap::new();
    for (group, addr, live) in random::learned_for(packets, groups, |a| model::group_of(tables, a))
    {
        let expiry = expiries.entry((group, addr)).or_default();
        *expiry = (*expiry).max(if live { NOW + 1 } else { NOW });
    }
    let model = expiries
        .iter()
        .filter_map(|(&(group, addr), &expiry)| {
            tables.learned_destination(
                group,
                addr,
                |rule| (rule == random::LEARNED_RULE).then_some(expiry),
                LEARNED_RULES,
            )
        })
        .collect();
    let naive = expiries
        .iter()
        .filter(|(_, expiry)| **expiry > NOW)
        .map(|(&(group, addr), _)| naive::Learned {
            group: tables.groups[group as usize].name.clone(),
            addr,
            rule: random::LEARNED_RULE.into(),
        })
        .collect();
    (model, naive)
}

fn record(coverage: &mut Coverage, packet: &PacketFacts, naive: &naive::Evaluation) {
    coverage.hit(match naive.reason {
        DecisionReason::Rule => "reason: rule",
        DecisionReason::GroupDefault => "reason: group default",
        DecisionReason::UnknownDevice => "reason: unknown device",
        DecisionReason::BuiltinNtp => "reason: builtin ntp",
        DecisionReason::Learned => "reason: learned",
    });
    match naive.verdict {
        Verdict::AuditDeny => coverage.hit("verdict: audit-deny"),
        Verdict::Reject => coverage.hit("verdict: reject"),
        _ => {}
    }
    if let [winner, second, ..] = naive.candidates.as_slice() {
        coverage.hit(match second.lost_to(winner) {
            naive::Beaten::LongerPrefix => "lost: longer-prefix",
            naive::Beaten::SpecificProtocol => "lost: specific-protocol",
            naive::Beaten::NarrowerPorts => "lost: narrower-ports",
            naive::Beaten::DenyOverAllow => "lost: deny-over-allow",
            naive::Beaten::RejectOverAllow => "lost: reject-over-allow",
            naive::Beaten::DenyOverReject => "lost: deny-over-reject",
            naive::Beaten::ExplicitOverBuiltin => "lost: explicit-over-builtin",
            naive::Beaten::EarlierInFile => "lost: earlier-in-file",
        });
    }
    if let Some(winner) = naive.candidates.first()
        && let RuleOrBuiltin::Rule(_) = winner.rule
        && winner.ports.is_some_and(|p| p.width() > 1)
    {
        coverage.hit("winner: port range");
    }
    if let Some(g) = naive.group {
        let exact = g.device.prefix.prefix_len() == g.device.prefix.max_prefix_len();
        coverage.hit(if exact {
            "device: exact"
        } else {
            "device: prefix"
        });
    }
    if packet.dst.is_ipv6() {
        coverage.hit("packet: ipv6");
    }
    if matches!(packet.proto, 6 | 17) && packet.dport.is_none() {
        coverage.hit("packet: fragment");
    }
    if naive
        .candidates
        .first()
        .is_some_and(|w| w.proto == Some(47))
    {
        coverage.hit("winner: numeric proto");
    }
    if naive.candidates.len() >= 3 {
        coverage.hit("candidates: 3 or more");
    }
}
