//! Finds rules that can never decide: every destination they name is taken
//! by rules of another action with the same protocol and ports that rank
//! above them (a longer prefix, or the same prefix with a stricter action:
//! deny over reject over allow). Such a rule is almost always a mistake
//! worth a warning.

use std::collections::{BTreeSet, HashMap};

use ipnet::IpNet;

use super::{Action, PortRange, Rule};

/// What makes two rules rivals: protocol, normalised ports, action.
type Match = (Option<u8>, Option<Vec<PortRange>>, Action);

pub(super) struct Shadowed {
    /// Index of the shadowed rule.
    pub rule: usize,
    /// Indices of the rules that take its destinations.
    pub by: Vec<usize>,
}

pub(super) fn find(rules: &[&Rule]) -> Vec<Shadowed> {
    // A rule's rivals are the rules with the same protocol and ports and
    // another action: group the rules by those once (comparing every pair of
    // rules took seconds at a few thousand rules).
    let mut by_match: HashMap<Match, Vec<(IpNet, usize)>> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        by_match
            .entry((r.proto, normalised_ports(r), r.action))
            .or_default()
            .extend(r.prefixes().map(|p| (*p, i)));
    }
    for prefixes in by_match.values_mut() {
        prefixes.sort();
    }
    // The rivals of each (protocol, ports, action): the entries of the other
    // actions, merged once per match rather than once per rule.
    let mut rivals_of: HashMap<Match, Vec<(IpNet, usize)>> = HashMap::new();
    let mut found = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let key = (rule.proto, normalised_ports(rule), rule.action);
        let rivals = rivals_of.entry(key.clone()).or_insert_with(|| {
            let mut merged: Vec<(IpNet, usize)> = [Action::Allow, Action::Deny, Action::Reject]
                .into_iter()
                .filter(|a| *a != key.2)
                .filter_map(|a| by_match.get(&(key.0, key.1.clone(), a)))
                .flatten()
                .copied()
                .collect();
            merged.sort();
            merged
        });
        if rivals.is_empty() {
            continue;
        }
        let mut own: Vec<IpNet> = rule.prefixes().copied().collect();
        own.sort();
        own.dedup();
        let mut by = BTreeSet::new();
        let all_taken = !own.is_empty()
            && own.iter().all(|p| {
                let above: Vec<(IpNet, usize)> = inside(rivals, p)
                    .iter()
                    .filter(|(q, i)| outranks(q, rules[*i].action, p, rule.action))
                    .copied()
                    .collect();
                let nets: Vec<IpNet> = above.iter().map(|(q, _)| *q).collect();
                let taken = covers(*p, &nets);
                if taken {
                    by.extend(above.iter().map(|(_, i)| *i));
                }
                taken
            });
        if all_taken {
            found.push(Shadowed {
                rule: index,
                by: by.into_iter().collect(),
            });
        }
    }
    found
}

fn normalised_ports(rule: &Rule) -> Option<Vec<PortRange>> {
    rule.ports.as_ref().map(|ports| {
        let mut ports = ports.clone();
        ports.sort();
        ports.dedup();
        ports
    })
}

/// Does a rival entry for `q` with `action` rank above an entry for `p`
/// with `own`?
fn outranks(q: &IpNet, action: Action, p: &IpNet, own: Action) -> bool {
    q.prefix_len() > p.prefix_len() || (q == p && action.strictness() > own.strictness())
}

/// The entries of `sorted` whose prefix lies inside `p`. Normalised prefixes
/// sort by (family, address, length), so they are one contiguous run.
fn inside<'a, T>(sorted: &'a [(IpNet, T)], p: &IpNet) -> &'a [(IpNet, T)] {
    let last = IpNet::new(p.broadcast(), p.max_prefix_len()).expect("full length is valid");
    let start = sorted.partition_point(|(q, _)| q < p);
    let end = sorted.partition_point(|(q, _)| *q <= last);
    &sorted[start..end.max(start)]
}

/// Whether the union of `nets` (sorted, each inside `p`) is all of `p`.
fn covers(p: IpNet, nets: &[IpNet]) -> bool {
    match nets.first() {
        None => false,
        Some(first) if *first == p => true,
        Some(_) if p.prefix_len() == p.max_prefix_len() => false,
        Some(_) => {
            let mut halves = p
                .subnets(p.prefix_len() + 1)
                .expect("a shorter prefix splits");
            let (low, high) = (halves.next().unwrap(), halves.next().unwrap());
            let split = nets.partition_point(|q| *q < high);
            covers(low, &nets[..split]) && covers(high, &nets[split..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = list.iter().map(|s| s.parse().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn coverage_by_halves() {
        let p: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(covers(p, &nets(&["10.1.0.0/17", "10.1.128.0/17"])));
        assert!(covers(
            p,
            &nets(&["10.1.0.0/17", "10.1.128.0/18", "10.1.192.0/18"])
        ));
        assert!(!covers(p, &nets(&["10.1.0.0/17", "10.1.128.0/18"])));
        assert!(covers(p, &nets(&["10.1.0.0/16"])));
    }

    #[test]
    fn inside_finds_the_contiguous_run() {
        let all: Vec<(IpNet, ())> =
            nets(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "11.0.0.0/8"])
                .into_iter()
                .map(|n| (n, ()))
                .collect();
        let p: IpNet = "10.1.0.0/16".parse().unwrap();
        let run: Vec<String> = inside(&all, &p)
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(run, ["10.1.0.0/16", "10.1.2.0/24"]);
    }
}
