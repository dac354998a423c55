//! `tollgate explain --fqdn NAME`: what the policy says for a domain name,
//! per group: the FQDN rules whose names match it, so what the gateway's
//! DNS forwarder would learn its addresses for, with which protocol and
//! ports. Which addresses are learned is known only on the gateway: with
//! `--live`, the addresses learned from answers for the name, with their
//! expiries, as the running daemon reports them.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Place, lease_line};
use crate::{
    control::Lease,
    fqdn,
    policy::{Policy, proto_name},
};

#[derive(Clone, Debug, Serialize)]
pub struct FqdnExplanation {
    /// The name as compared: ASCII, lower case, no trailing dot.
    pub name: String,
    /// Every group asked about (the source's, or all), in policy order.
    pub groups: Vec<FqdnGroup>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FqdnGroup {
    pub group: String,
    /// The FQDN rules whose names match; empty: the forwarder learns
    /// nothing for it (and refuses it with `dns.filter`).
    pub rules: Vec<FqdnRuleView>,
    /// With `--live`: the addresses learned from answers for the name in
    /// this group, with expiries (absent without `--live`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<Vec<Lease>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FqdnRuleView {
    pub rule_id: String,
    pub at: Place,
    /// The rule's names that match.
    pub matched: Vec<String>,
    pub proto: String,
    /// `null`: every port.
    pub ports: Option<Vec<String>>,
}

/// Explains `name` for the group with id `group`, or every group; with
/// `leases` (the running gateway's), what was learned from its answers.
pub fn explain_fqdn(
    policy: &Policy,
    name: &str,
    group: Option<u32>,
    leases: Option<&[Lease]>,
) -> Result<FqdnExplanation, String> {
    let name =
        fqdn::normalise(name).map_err(|why| format!("{name:?} is not a domain name: {why}"))?;
    let groups = policy
        .groups
        .iter()
        .enumerate()
        .filter(|(i, _)| group.is_none_or(|g| g == *i as u32 + 1))
        .map(|(_, g)| FqdnGroup {
            group: g.name.clone(),
            rules: g
                .rules
                .iter()
                .filter_map(|r| {
                    let matched: Vec<String> = r
                        .fqdn
                        .iter()
                        .filter(|p| p.matches(&name))
                        .map(|p| p.to_string())
                        .collect();
                    (!matched.is_empty()).then(|| FqdnRuleView {
                        rule_id: r.id.to_string(),
                        at: Place::from(&r.origin),
                        matched,
                        proto: proto_name(r.proto),
                        ports: r
                            .ports
                            .as_ref()
                            .map(|ports| ports.iter().map(|p| p.to_string()).collect()),
                    })
                })
                .collect(),
            learned: leases.map(|all| {
                all.iter()
                    .filter(|l| l.group == g.name && l.name == name)
                    .cloned()
                    .collect()
            }),
        })
        .collect();
    Ok(FqdnExplanation { name, groups })
}

impl FqdnExplanation {
    /// The operator-facing text form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<10}{}", "name", self.name);
        for g in &self.groups {
            if g.rules.is_empty() {
                let _ = writeln!(
                    out,
                    "{:<10}{}: no FQDN rule names it: no address is learned for it (with \
                     dns.filter the forwarder refuses it)",
                    "group", g.group
                );
            }
            for r in &g.rules {
                let ports = match r.ports.as_deref() {
                    Some([one]) => format!(" port {one}"),
                    Some(many) => format!(" ports {}", many.join(", ")),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{:<10}{}: rule {}, {} ({}): the addresses the DNS forwarder answers are \
                     allowed, {}{ports}, for their TTL",
                    "group",
                    g.group,
                    r.rule_id,
                    r.at,
                    r.matched.join(", "),
                    r.proto
                );
            }
            for l in g.learned.iter().flatten() {
                let _ = writeln!(
                    out,
                    "{:<10}{}: {} {}",
                    "learned",
                    g.group,
                    l.address,
                    lease_line(l)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Environment, Source, from_sources};

    #[test]
    fn the_matching_rules_of_each_group_are_named() {
        let text = "\
groups:
  cameras:
    devices: [10.65.0.0/16]
    default: deny
  meters:
    devices: [10.64.0.0/16]
    default: deny
    rules:
      - allow: {id: iot, to: {fqdn: [\"*.iot.example.com\"]}, proto: tcp, ports: [443, 8883]}
";
        let loaded = from_sources(
            &[Source {
                path: "p.yaml".into(),
                text: text.into(),
            }],
            &Environment::default(),
        )
        .unwrap();
        let e = explain_fqdn(&loaded.policy, "A1.IoT.example.com.", None, None).unwrap();
        assert_eq!(
            e.render(),
            "name      a1.iot.example.com\n\
             group     cameras: no FQDN rule names it: no address is learned for it (with \
             dns.filter the forwarder refuses it)\n\
             group     meters: rule iot, p.yaml:9 (*.iot.example.com): the addresses the DNS \
             forwarder answers are allowed, tcp ports 443, 8883, for their TTL\n"
        );
        let only_meters = explain_fqdn(&loaded.policy, "x.example.com", Some(2), None).unwrap();
        assert_eq!(only_meters.groups.len(), 1);
        assert!(only_meters.groups[0].rules.is_empty());
        assert!(explain_fqdn(&loaded.policy, "a..b", None, None).is_err());
    }
}
