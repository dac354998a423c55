//! Who may ask for time: the members of policy groups, and the sources in
//! `ntp.allow`.
//!
//! A source's group is found exactly as the dataplane finds it (see
//! `tables`): its exact device address, else the longest device prefix that
//! contains it, else group 0 (`_unknown`, not a member). Non-members are
//! answered only when `ntp.allow` contains them.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use ipnet::IpNet;

use crate::tables::{CompiledPolicy, UNKNOWN_GROUP_NAME};

/// Group label of sources answered because `ntp.allow` lists them.
pub const ALLOW_LIST_LABEL: &str = "allow-list";

/// Source address → policy group, for one policy generation.
#[derive(Clone, Debug, Default)]
pub struct SourceGroups {
    /// By group id; index 0 is `_unknown`.
    names: Vec<String>,
    /// The policy's own table (shared), searched by address.
    exact: Arc<[(IpAddr, u32)]>,
    /// Device prefixes by length, longest first.
    prefixes: Vec<(u8, HashMap<IpNet, u32>)>,
    allow: Vec<IpNet>,
}

/// How a source is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// A member of this policy group (its id).
    Group(u32),
    /// Not a member, but listed in `ntp.allow`.
    AllowList,
    /// Neither: no reply.
    Denied,
}

impl SourceGroups {
    /// The device tables of `policy`, and the `ntp.allow` list.
    pub fn from_policy(policy: &CompiledPolicy, allow: &[IpNet]) -> Self {
        let mut names: Vec<String> = policy.groups.iter().map(|g| g.name.clone()).collect();
        if names.is_empty() {
            names.push(UNKNOWN_GROUP_NAME.to_string());
        }
        let mut by_len: HashMap<u8, HashMap<IpNet, u32>> = HashMap::new();
        for &(prefix, group) in &policy.device_prefixes {
            by_len
                .entry(prefix.prefix_len())
                .or_default()
                .insert(prefix.trunc(), group);
        }
        let mut prefixes: Vec<_> = by_len.into_iter().collect();
        prefixes.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        SourceGroups {
            names,
            exact: Arc::clone(&policy.device_exact),
            prefixes,
            allow: allow.to_vec(),
        }
    }

    pub fn classify(&self, source: IpAddr) -> Membership {
        let source = source.to_canonical();
        let exact = self
            .exact
            .binary_search_by(|(addr, _)| addr.cmp(&source))
            .ok()
            .map(|i| self.exact[i].1);
        let group = exact.or_else(|| {
            self.prefixes.iter().find_map(|(len, table)| {
                let net = IpNet::new(source, *len).ok()?.trunc();
                table.get(&net).copied()
            })
        });
        match group {
            Some(group) if group != 0 => Membership::Group(group),
            _ if self.allow.iter().any(|net| net.contains(&source)) => Membership::AllowList,
            _ => Membership::Denied,
        }
    }

    /// Policy group names by id (index 0: `_unknown`).
    pub fn group_names(&self) -> &[String] {
        &self.names
    }

    /// The label a source's requests are counted under: its group's name,
    /// [`ALLOW_LIST_LABEL`], or none for a non-member.
    pub fn label(&self, membership: Membership) -> Option<&str> {
        match membership {
            Membership::Group(id) => self.names.get(id as usize).map(String::as_str),
            Membership::AllowList => Some(ALLOW_LIST_LABEL),
            Membership::Denied => None,
        }
    }

    /// Every label [`label`](Self::label) can give.
    pub fn labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self.names.iter().skip(1).cloned().collect();
        if !self.allow.is_empty() {
            labels.push(ALLOW_LIST_LABEL.to_string());
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::GroupTable;

    fn group(name: &str) -> GroupTable {
        GroupTable::named(name)
    }

    fn policy() -> CompiledPolicy {
        CompiledPolicy {
            groups: vec![group(UNKNOWN_GROUP_NAME), group("meters"), group("cameras")],
            device_exact: [
                ("10.1.2.3".parse().unwrap(), 2),
                ("fd00::7".parse().unwrap(), 2),
            ]
            .into(),
            device_prefixes: vec![
                ("10.0.0.0/8".parse().unwrap(), 1),
                ("10.1.0.0/16".parse().unwrap(), 2),
                ("fd00::/64".parse().unwrap(), 1),
            ],
            ..CompiledPolicy::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_then_longest_prefix() {
        let g = SourceGroups::from_policy(&policy(), &[]);
        assert_eq!(g.classify(ip("10.1.2.3")), Membership::Group(2), "exact");
        assert_eq!(
            g.classify(ip("10.1.9.9")),
            Membership::Group(2),
            "/16 over /8"
        );
        assert_eq!(g.classify(ip("10.2.0.1")), Membership::Group(1), "/8");
        assert_eq!(g.classify(ip("fd00::7")), Membership::Group(2));
        assert_eq!(g.classify(ip("fd00::8")), Membership::Group(1));
        assert_eq!(
            g.classify(ip("::ffff:10.2.0.1")),
            Membership::Group(1),
            "IPv4-mapped sources are their IPv4 address"
        );
        assert_eq!(g.classify(ip("192.0.2.1")), Membership::Denied);
        assert_eq!(g.group_names()[2], "cameras");
    }

    #[test]
    fn the_allow_list_admits_non_members_only_as_allow_list() {
        let allow = [
            "192.0.2.0/24".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let g = SourceGroups::from_policy(&policy(), &allow);
        assert_eq!(g.classify(ip("192.0.2.1")), Membership::AllowList);
        assert_eq!(
            g.classify(ip("10.2.0.1")),
            Membership::Group(1),
            "members keep their group"
        );
        assert_eq!(g.classify(ip("198.51.100.1")), Membership::Denied);
        assert_eq!(g.label(Membership::Group(2)), Some("cameras"));
        assert_eq!(g.label(Membership::AllowList), Some(ALLOW_LIST_LABEL));
        assert_eq!(g.label(Membership::Denied), None);
        assert_eq!(g.labels(), ["meters", "cameras", ALLOW_LIST_LABEL]);
    }

    #[test]
    fn an_empty_policy_denies_all_but_the_allow_list() {
        let g = SourceGroups::from_policy(&CompiledPolicy::default(), &[]);
        assert_eq!(g.classify(ip("10.0.0.1")), Membership::Denied);
        assert_eq!(g.group_names(), [UNKNOWN_GROUP_NAME]);
    }
}
