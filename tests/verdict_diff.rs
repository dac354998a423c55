//! `verdict_diff` against the model: for random pairs of policies and
//! random packets, the model's outcome (verdict and deciding rule) changes
//! exactly where the diff says, from and to what it says. Pairs are either
//! two unrelated policies or one policy and a small edit of it (a rule
//! dropped or flipped, a default or mode changed, a device moved), the
//! common case in review.

mod common;

use std::{cell::RefCell, collections::BTreeMap};

use common::random;
use proptest::{
    prelude::*,
    sample::Index,
    test_runner::{Config, TestRunner},
};
use tollgate::{
    compile::compile,
    config::Limits,
    model,
    policy::{Action, Policy},
    verdict_diff::{self, Side, cells::outcome},
};

const PAIRS: u32 = 400;
const PACKETS_PER_SIDE: usize = 60;

/// A small edit of `policy`, chosen by `what` and `at`.
fn edit(mut policy: Policy, what: u8, at: Index) -> Policy {
    let flip = |a: Action| match a {
        Action::Allow => Action::Deny,
        Action::Deny => Action::Allow,
    };
    let g = at.index(policy.groups.len());
    let others = policy.groups.len();
    let group = &mut policy.groups[g];
    match what {
        0 if !group.rules.is_empty() => {
            group.rules.remove(at.index(group.rules.len()));
        }
        1 if !group.rules.is_empty() => {
            let r = at.index(group.rules.len());
            group.rules[r].action = flip(group.rules[r].action);
        }
        2 => group.default = flip(group.default),
        3 => group.audit = !group.audit,
        4 if !group.devices.is_empty() && others > 1 => {
            let device = group.devices.remove(0);
            policy.groups[(g + 1) % others].devices.push(device);
        }
        _ => policy.unknown_devices = flip(policy.unknown_devices),
    }
    policy
}

fn pair() -> impl Strategy<Value = (Policy, Policy)> {
    prop_oneof![
        (random::policy(), random::policy()),
        (random::policy(), 0..6u8, any::<Index>())
            .prop_map(|(p, what, at)| (p.clone(), edit(p, what, at))),
    ]
}

#[test]
fn the_model_changes_exactly_where_the_diff_says() {
    let seen: RefCell<BTreeMap<&'static str, u64>> = RefCell::default();
    let mut runner = TestRunner::new(Config {
        cases: PAIRS,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &pair().prop_flat_map(|(old, new)| {
                let packets = (
                    random::packets(&old, PACKETS_PER_SIDE),
                    random::packets(&new, PACKETS_PER_SIDE),
                );
                (Just(old), Just(new), packets)
            }),
            |(old, new, (mut packets, more))| {
                packets.extend(more);
                let old_tables = compile(&old, &Limits::default()).expect("old compiles");
                let new_tables = compile(&new, &Limits::default()).expect("new compiles");
                let diff = verdict_diff::diff(
                    Side {
                        policy: &old,
                        tables: &old_tables,
                    },
                    Side {
                        policy: &new,
                        tables: &new_tables,
                    },
                );
                let mut seen = seen.borrow_mut();
                for packet in &packets {
                    let (before, after) =
                        (outcome(&old_tables, packet), outcome(&new_tables, packet));
                    let groups = (
                        model::verdict(&old_tables, packet).group_name,
                        model::verdict(&new_tables, packet).group_name,
                    );
                    let changes = diff.changes_for(&groups.0, &groups.1, packet.src);
                    let context =
                        || format!("{packet:?}: {before:?} → {after:?} in {groups:?}\n{diff:#?}");
                    if groups.0 != groups.1 {
                        prop_assert!(changes.is_some(), "moved source not listed: {}", context());
                        *seen.entry("moved").or_default() += 1;
                    }
                    let holding: Vec<_> = changes
                        .iter()
                        .flat_map(|c| c.verdicts.iter().chain(&c.reattributed))
                        .filter(|c| c.covers(packet))
                        .collect();
                    if before == after {
                        prop_assert!(holding.is_empty(), "unchanged, yet reported: {}", context());
                        continue;
                    }
                    prop_assert_eq!(holding.len(), 1, "{}", context());
                    let change = holding[0];
                    prop_assert_eq!(
                        (&change.old, &change.new),
                        (&before, &after),
                        "{}",
                        context()
                    );
                    let in_verdicts = changes.is_some_and(|c| c.verdicts.contains(change));
                    prop_assert_eq!(in_verdicts, before.verdict != after.verdict);
                    *seen
                        .entry(if in_verdicts {
                            "verdict"
                        } else {
                            "reattributed"
                        })
                        .or_default() += 1;
                }
                Ok(())
            },
        )
        .unwrap();
    let seen = seen.into_inner();
    for what in ["moved", "verdict", "reattributed"] {
        assert!(
            seen.get(what).copied().unwrap_or(0) > 0,
            "never exercised: {what} ({seen:?})"
        );
    }
}
