//! The rules of a validated policy that can never decide (what `check`
//! warns about, see `shadow`), as data: `tollgate diff` reports those a
//! change newly shadows.

use super::{Origin, Policy, Rule, shadow};

/// A rule whose every destination is taken by rules of the other action
/// that rank above it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct NeverDecides {
    pub group: String,
    pub rule: String,
    pub origin: Origin,
    /// The ids of the rules that take its destinations.
    pub by: Vec<String>,
}

/// Every rule of `policy` that never decides, by group then rule order.
pub fn never_deciding(policy: &Policy) -> Vec<NeverDecides> {
    let mut found = Vec::new();
    for group in &policy.groups {
        let rules: Vec<&Rule> = group.rules.iter().collect();
        for shadowed in shadow::find(&rules) {
            let rule = rules[shadowed.rule];
            found.push(NeverDecides {
                group: group.name.clone(),
                rule: rule.id.to_string(),
                origin: rule.origin.clone(),
                by: shadowed
                    .by
                    .iter()
                    .map(|&i| rules[i].id.to_string())
                    .collect(),
            });
        }
    }
    found
}
