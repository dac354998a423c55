//! What a reload changed, group by group and rule by rule.

use std::{collections::BTreeMap, fmt, sync::Arc};

use crate::policy::{Group, Policy, Rule};

/// What a reload changed, for the one-line log of every reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    pub groups_added: usize,
    pub groups_removed: usize,
    pub groups_changed: usize,
    pub rules_added: usize,
    pub rules_removed: usize,
    pub rules_changed: usize,
}

impl ChangeSummary {
    pub fn between(old: Option<&Policy>, new: &Policy) -> ChangeSummary {
        let (old, new) = (groups_by_name(old), groups_by_name(Some(new)));
        let mut s = ChangeSummary::default();
        for (name, g) in &new {
            match old.get(name) {
                None => {
                    s.groups_added += 1;
                    s.rules_added += g.rules.len();
                }
                // A group the reload reused from its cache is unchanged.
                Some(before) if Arc::ptr_eq(before, g) => {}
                Some(before) => {
                    let (rb, ra) = (rules_by_id(before), rules_by_id(g));
                    let mut changed_rules = false;
                    for (id, r) in &ra {
                        match rb.get(id) {
                            None => s.rules_added += 1,
                            Some(o) if !same_rule(o, r) => s.rules_changed += 1,
                            Some(_) => continue,
                        }
                        changed_rules = true;
                    }
                    let removed = rb.keys().filter(|id| !ra.contains_key(*id)).count();
                    s.rules_removed += removed;
                    let settings_changed = before
                        .devices
                        .iter()
                        .map(|d| d.prefix)
                        .ne(g.devices.iter().map(|d| d.prefix))
                        || before.default != g.default
                        || before.audit != g.audit;
                    if settings_changed || changed_rules || removed > 0 {
                        s.groups_changed += 1;
                    }
                }
            }
        }
        for (name, g) in &old {
            if !new.contains_key(name) {
                s.groups_removed += 1;
                s.rules_removed += g.rules.len();
            }
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        *self == ChangeSummary::default()
    }
}

/// Rules compare by meaning: moving one to another line is not a change.
/// By reference: a fleet's groups hold 10^6 devices, and cloning them took
/// longer than the rest of a reload's bookkeeping.
fn groups_by_name(policy: Option<&Policy>) -> BTreeMap<&str, &Arc<Group>> {
    policy
        .map(|p| p.groups.iter().map(|g| (g.name.as_str(), g)).collect())
        .unwrap_or_default()
}

fn rules_by_id(group: &Group) -> BTreeMap<&str, &Rule> {
    group.rules.iter().map(|r| (r.id.as_str(), r)).collect()
}

fn same_rule(a: &Rule, b: &Rule) -> bool {
    a.action == b.action && a.targets == b.targets && a.proto == b.proto && a.ports == b.ports
}

impl fmt::Display for ChangeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "groups +{} -{} ~{}, rules +{} -{} ~{}",
            self.groups_added,
            self.groups_removed,
            self.groups_changed,
            self.rules_added,
            self.rules_removed,
            self.rules_changed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Environment, Source, from_sources};

    fn policy(text: &str) -> Policy {
        from_sources(
            &[Source {
                path: "p.yaml".into(),
                text: text.into(),
            }],
            &Environment::default(),
        )
        .unwrap()
        .policy
    }

    #[test]
    fn summarises_added_removed_and_changed() {
        let old = policy(
            "groups:\n  a:\n    devices: [10.0.0.0/8]\n    default: deny\n    rules:\n      \
             - allow: {to: 192.0.2.0/24, proto: tcp, ports: [443]}\n      \
             - deny: {to: 10.0.0.0/8, id: lateral}\n  gone:\n    devices: [10.9.0.0/16]\n    default: deny\n",
        );
        let new = policy(
            "groups:\n  a:\n    devices: [10.0.0.0/8]\n    default: deny\n    rules:\n      \
             - deny: {to: 10.0.0.0/9, id: lateral}\n      \
             - allow: {to: 192.0.2.0/24, proto: tcp, ports: [443]}\n      \
             - allow: {to: 198.51.100.1, proto: udp, ports: [53]}\n  new:\n    devices: [10.8.0.0/16]\n    default: allow\n",
        );
        let s = ChangeSummary::between(Some(&old), &new);
        assert_eq!(s.to_string(), "groups +1 -1 ~1, rules +1 -0 ~1");
        assert!(ChangeSummary::between(Some(&new), &new).is_empty());
        assert_eq!(
            ChangeSummary::between(None, &new).to_string(),
            "groups +2 -0 ~0, rules +3 -0 ~0"
        );
    }
}
