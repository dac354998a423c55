//! What the metrics and the deny log call each decision counter of a
//! policy: its group, rule id, action and where it is written. The policy
//! answers the last two ([`Policy::action_of`], [`Policy::origin_of`]).

use std::collections::HashMap;

use anyhow::{Result, anyhow};

use crate::{
    deny_log::CounterLabel,
    metrics::RuleLabels,
    policy::{Policy, Rule},
    tables::{CompiledPolicy, CounterOwner, Decider},
};

/// The labels of one compiled policy's decision counters.
pub struct PolicyLabels {
    /// For the scrape view, one per decision counter.
    pub rules: Vec<RuleLabels>,
    /// Kernel counter → labels, for deny events.
    pub events: HashMap<u32, CounterLabel>,
}

/// Labels every decision counter of `tables`, compiled from `policy`.
/// `kernel_counter` maps a logical counter to the kernel's, where the
/// dataplane has one.
pub fn of(
    policy: &Policy,
    tables: &CompiledPolicy,
    kernel_counter: impl Fn(u32) -> Option<u32>,
) -> Result<PolicyLabels> {
    let mut labels = PolicyLabels {
        rules: Vec::new(),
        events: HashMap::new(),
    };
    // Every rule by (group, id), once: asking the policy rule by rule
    // scans its group's rules each time, 10^5 rules of 10^3 per group took
    // a third of a second per reload.
    let by_id: HashMap<(&str, &str), &Rule> = policy
        .groups
        .iter()
        .flat_map(|g| {
            g.rules
                .iter()
                .map(move |r| ((g.name.as_str(), r.id.as_str()), r))
        })
        .collect();
    for (logical, owner) in tables.counters.iter().enumerate() {
        let CounterOwner::Decision { group, decider } = owner else {
            continue;
        };
        let rule = decider.rule_id().to_string();
        let (action, origin) = match decider {
            Decider::Rule(id) => match by_id.get(&(group.as_str(), id.as_str())) {
                Some(r) => (Some(r.action), Some(&r.origin)),
                None => (None, None),
            },
            _ => (policy.action_of(owner), policy.origin_of(owner)),
        };
        let action =
            action.ok_or_else(|| anyhow!("rule {group}/{rule} missing from the policy"))?;
        // The built-in NTP allow is written nowhere.
        let (file, line) = origin.map_or((String::new(), 0), |o| (o.file.to_string(), o.line));
        if let Some(index) = kernel_counter(logical as u32) {
            labels.events.insert(
                index,
                CounterLabel {
                    group: group.clone(),
                    rule: rule.clone(),
                    file: file.clone(),
                    line,
                },
            );
        }
        labels.rules.push(RuleLabels {
            group: group.clone(),
            rule,
            owner: owner.clone(),
            action: action.label(),
            file,
            line,
        });
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::compile,
        config::Limits,
        policy::{Environment, Source, from_sources},
    };

    #[test]
    fn every_decision_counter_is_labelled_where_it_is_written() {
        let text = "unknown-devices: allow\ngroups:\n  meters:\n    devices: [10.0.0.0/8]\n    \
                    default: deny\n    rules:\n      \
                    - allow: {to: 192.0.2.0/24, proto: tcp, ports: [443], id: web}\n";
        let env = Environment {
            ntp: vec!["10.0.0.1".parse().unwrap()],
            ..Environment::default()
        };
        let policy = from_sources(
            &[Source {
                path: "p.yaml".into(),
                text: text.into(),
            }],
            &env,
        )
        .unwrap()
        .policy;
        let tables = compile(&policy, &Limits::default()).unwrap();
        let labels = of(&policy, &tables, |logical| Some(logical + 100)).unwrap();
        let seen: Vec<_> = labels
            .rules
            .iter()
            .map(|r| {
                (
                    r.group.as_str(),
                    r.rule.as_str(),
                    r.action,
                    r.file.as_str(),
                    r.line,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("_unknown", "default", "allow", "p.yaml", 1),
                ("meters", "default", "deny", "p.yaml", 5),
                ("meters", "builtin-ntp", "allow", "", 0),
                ("meters", "web", "allow", "p.yaml", 7),
            ]
        );
        assert_eq!(labels.events.len(), labels.rules.len());
        let web = tables
            .counters
            .iter()
            .position(|o| {
                labels
                    .rules
                    .iter()
                    .any(|r| r.rule == "web" && &r.owner == o)
            })
            .unwrap() as u32;
        assert_eq!(labels.events[&(web + 100)].rule, "web");
    }
}
