use std::path::PathBuf;

use super::*;
use crate::policy::{Environment, Source, from_sources};

fn policy_with(text: &str, ntp: &[&str]) -> Policy {
    let env = Environment {
        gateway: vec!["10.64.0.1".parse().unwrap()],
        ntp: ntp.iter().map(|a| a.parse().unwrap()).collect(),
    };
    let source = Source {
        path: PathBuf::from("p.yaml"),
        text: text.to_string(),
    };
    match from_sources(&[source], &env) {
        Ok(loaded) => loaded.policy,
        Err(diags) => panic!("{diags:#?}"),
    }
}

fn policy(text: &str) -> Policy {
    policy_with(text, &[])
}

fn ruleset_of<'t>(tables: &'t CompiledPolicy, group: u32, prefix: &str) -> &'t [RuleEntry] {
    let prefix: IpNet = prefix.parse().unwrap();
    let d = tables
        .destinations
        .iter()
        .find(|d| d.group == group && d.prefix == prefix)
        .unwrap_or_else(|| panic!("no destination {prefix} in group {group}"));
    &tables.rulesets[d.ruleset as usize]
}

fn counter_of(tables: &CompiledPolicy, group: &str, decider: Decider) -> u32 {
    let owner = CounterOwner::Decision {
        group: group.into(),
        decider,
    };
    tables.counters.iter().position(|o| *o == owner).unwrap() as u32
}

const METERS: &str = "\
unknown-devices: allow
groups:
  meters:
    devices: [10.64.0.0/16, 10.99.0.7, \"fd00:64::/48\"]
    default: deny
    rules:
      - deny: {to: 10.0.0.0/8, id: lateral}
      - allow: {to: 10.64.0.0/16, proto: tcp, ports: [443, \"8000-8999\"], id: web}
      - allow: {to: any, proto: udp, ports: 53, id: dns}
      - deny: {to: 10.64.0.0/16, proto: tcp, ports: [443], id: no-443}
";

#[test]
fn groups_devices_and_counters() {
    let t = compile(&policy(METERS), &Limits::default()).unwrap();
    assert_eq!(t.groups.len(), 2);
    assert_eq!(t.groups[0].name, UNKNOWN_GROUP_NAME);
    assert!(t.groups[0].default == Verdict::Allow && !t.groups[0].audit);
    assert_eq!(t.groups[1].default, Verdict::Deny);
    assert_eq!(*t.device_exact, [("10.99.0.7".parse().unwrap(), 1)]);
    assert_eq!(
        t.device_prefixes,
        [
            ("10.64.0.0/16".parse().unwrap(), 1),
            ("fd00:64::/48".parse().unwrap(), 1)
        ]
    );
    let decision = |g: &str, d| CounterOwner::Decision {
        group: g.into(),
        decider: d,
    };
    let verdict = |g: &str, v| CounterOwner::Verdict {
        group: g.into(),
        verdict: v,
    };
    assert_eq!(
        t.counters,
        [
            decision("_unknown", Decider::GroupDefault),
            verdict("_unknown", Verdict::Allow),
            verdict("_unknown", Verdict::Deny),
            verdict("_unknown", Verdict::AuditDeny),
            verdict("_unknown", Verdict::Reject),
            decision("meters", Decider::GroupDefault),
            decision("meters", Decider::Rule("lateral".into())),
            decision("meters", Decider::Rule("web".into())),
            decision("meters", Decider::Rule("dns".into())),
            decision("meters", Decider::Rule("no-443".into())),
            verdict("meters", Verdict::Allow),
            verdict("meters", Verdict::Deny),
            verdict("meters", Verdict::AuditDeny),
            verdict("meters", Verdict::Reject),
        ]
    );
    let g = &t.groups[1];
    assert_eq!(
        (
            g.default_counter,
            g.allow_counter,
            g.deny_counter,
            g.audit_deny_counter,
            g.reject_counter
        ),
        (5, 10, 11, 12, 13)
    );
    assert_eq!(t.groups[0].verdict_counter(Verdict::Deny), 2);
}

#[test]
fn rule_sets_inherit_sort_and_prune() {
    let t = compile(&policy(METERS), &Limits::default()).unwrap();
    let c = |id: &str| counter_of(&t, "meters", Decider::Rule(id.into()));
    let entry = |proto, ports, deny: bool, counter| RuleEntry {
        proto,
        ports,
        verdict: if deny { Verdict::Deny } else { Verdict::Allow },
        builtin: false,
        counter,
    };
    let dns = entry(Some(17), Some((53, 53)), false, c("dns"));
    // Destinations: 0.0.0.0/0, ::/0 (dns), 10.0.0.0/8, 10.64.0.0/16.
    assert_eq!(t.destinations.len(), 4);
    assert_eq!(ruleset_of(&t, 1, "0.0.0.0/0"), [dns]);
    assert_eq!(ruleset_of(&t, 1, "::/0"), [dns]);
    // The /8 deny has no conditions: the inherited dns entry after it is
    // unreachable and pruned.
    assert_eq!(
        ruleset_of(&t, 1, "10.0.0.0/8"),
        [entry(None, None, true, c("lateral"))]
    );
    // Own entries first (specific proto, narrow ports, deny before allow:
    // no-443 takes 443 from web), then the inherited /8 deny.
    assert_eq!(
        ruleset_of(&t, 1, "10.64.0.0/16"),
        [
            entry(Some(6), Some((443, 443)), true, c("no-443")),
            entry(Some(6), Some((8000, 8999)), false, c("web")),
            entry(None, None, true, c("lateral")),
        ]
    );
}

#[test]
fn identical_rule_sets_are_shared() {
    let t = compile(
        &policy(
            "groups:\n  g:\n    devices: [10.1.0.0/16]\n    default: deny\n    rules:\n      \
             - allow: {to: [192.0.2.0/24, 198.51.100.0/24, \"2001:db8::/32\"], proto: tcp}\n",
        ),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(t.destinations.len(), 3);
    assert_eq!(t.rulesets.len(), 1);
}

#[test]
fn builtin_ntp_is_a_full_length_entry_after_explicit_ties() {
    let text = "\
groups:
  g:
    devices: [10.1.0.0/16]
    default: deny
    rules:
      - deny: {to: 100.64.0.0/10}
      - allow: {to: ntp, proto: udp, ports: [123], id: explicit-ntp}
  h:
    devices: [10.2.0.0/16]
    default: deny
    rules:
      - deny: {to: 100.127.0.123, proto: udp, ports: [123], id: no-ntp}
";
    let t = compile(
        &policy_with(text, &["100.127.0.123", "fd00::123"]),
        &Limits::default(),
    )
    .unwrap();
    let builtin = |group: &str| RuleEntry {
        proto: Some(17),
        ports: Some((123, 123)),
        verdict: Verdict::Allow,
        builtin: true,
        counter: counter_of(&t, group, Decider::BuiltinNtp),
    };
    let g = ruleset_of(&t, 1, "100.127.0.123/32");
    // The explicit allow ties the built-in on every key but wins (explicit
    // first), so the built-in is pruned; the /10 deny stays for other ports.
    assert_eq!(g.len(), 2);
    assert_eq!(
        g[0].counter,
        counter_of(&t, "g", Decider::Rule("explicit-ntp".into()))
    );
    assert!(!g[1].builtin && g[1].verdict == Verdict::Deny);
    // `to: ntp` covers the IPv6 NTP address too.
    assert_eq!(ruleset_of(&t, 1, "fd00::123/128").len(), 1);
    assert!(!ruleset_of(&t, 1, "fd00::123/128")[0].builtin);
    // Where no rule names it, the NTP address has only the built-in.
    assert_eq!(ruleset_of(&t, 2, "fd00::123/128"), [builtin("h")]);
    // An explicit deny of the same address and port overrides the built-in.
    let h = ruleset_of(&t, 2, "100.127.0.123/32");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].verdict, Verdict::Deny);
    // Group 0 has no destinations, so no built-in.
    assert!(t.destinations.iter().all(|d| d.group != 0));
}

#[test]
fn compiling_is_deterministic() {
    let p = policy(METERS);
    assert_eq!(
        compile(&p, &Limits::default()),
        compile(&p, &Limits::default())
    );
}

#[test]
fn device_addresses_are_sorted_across_groups() {
    let sorted = |text: &str, expected: [(&str, u32); 4]| {
        let t = compile(&policy(text), &Limits::default()).unwrap();
        let expected = expected.map(|(a, id)| (a.parse::<IpAddr>().unwrap(), id));
        assert_eq!(*t.device_exact, expected);
    };
    // Interleaved: each group's addresses lie between the other's.
    sorted(
        "groups:\n  a:\n    devices: [10.0.0.3, 10.0.0.1]\n    default: deny\n  \
         b:\n    devices: [10.0.0.9, 10.0.0.2]\n    default: deny\n",
        [
            ("10.0.0.1", 1),
            ("10.0.0.2", 2),
            ("10.0.0.3", 1),
            ("10.0.0.9", 2),
        ],
    );
    // Apart, the later group first.
    sorted(
        "groups:\n  a:\n    devices: [10.0.0.9, 10.0.0.7]\n    default: deny\n  \
         b:\n    devices: [10.0.0.2, 10.0.0.1]\n    default: deny\n",
        [
            ("10.0.0.1", 2),
            ("10.0.0.2", 2),
            ("10.0.0.7", 1),
            ("10.0.0.9", 1),
        ],
    );
}

#[test]
fn a_reload_that_keeps_every_groups_devices_keeps_the_device_table() {
    let p = policy(METERS);
    let mut cache = CompileCache::default();
    let first = compile_cached(&p, &Limits::default(), &mut cache).unwrap();
    // The group compiled again (a new `Arc`), its devices the same.
    let mut edited = p.clone();
    let mut group = (*edited.groups[0]).clone();
    group.rules.pop();
    edited.groups[0] = Arc::new(group);
    let second = compile_cached(&edited, &Limits::default(), &mut cache).unwrap();
    assert_eq!(cache.groups_compiled(), 1);
    assert!(Arc::ptr_eq(&first.device_exact, &second.device_exact));
    assert_eq!(second, compile(&edited, &Limits::default()).unwrap());
}

#[test]
fn a_rule_set_over_capacity_names_group_prefix_count_and_limit() {
    let ports: Vec<String> = (1..=33).map(|p| (p * 10).to_string()).collect();
    let text = format!(
        "groups:\n  g:\n    devices: [10.1.0.0/16]\n    default: deny\n    rules:\n      \
         - allow: {{to: 192.0.2.0/24, proto: tcp, ports: [{}]}}\n",
        ports.join(", ")
    );
    let errs = compile(&policy(&text), &Limits::default()).unwrap_err();
    let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "p.yaml:2:3: groups.g: destination 192.0.2.0/24 needs 33 rule entries (its own and \
          those inherited from less specific prefixes, one per `to` prefix and `ports` item); \
          at most 32 fit (RULESET_ENTRIES): merge ports into ranges or split the group"
        ]
    );
}

#[test]
fn a_groups_fqdn_rules_fit_one_learned_address_together() {
    // 2 + 2 entries fit; a third rule of one port does not: an address
    // answered for all three names would lose an entry in the kernel.
    let text = "groups:\n  g:\n    devices: [10.1.0.0/16]\n    default: deny\n    rules:\n      \
         - allow: {id: a, to: {fqdn: [a.example.com]}, proto: tcp, ports: [443, 8883]}\n      \
         - allow: {id: b, to: {fqdn: [b.example.com]}, proto: udp, ports: [53, 123]}\n      \
         - allow: {id: c, to: {fqdn: [c.example.com]}, proto: tcp, ports: [80]}\n";
    let errs = compile(&policy(text), &Limits::default()).unwrap_err();
    let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "p.yaml:8:9: groups.g.rules: FQDN rule \"c\" brings the group's FQDN rules to 5 \
             ports items; an address may be learned for all of them and carries at most 4 \
             (LEARNED_RULES): merge ports into ranges or drop some"
        ]
    );
    let fits = text.replace(
        "      - allow: {id: c, to: {fqdn: [c.example.com]}, proto: tcp, ports: [80]}\n",
        "",
    );
    let tables = compile(&policy(&fits), &Limits::default()).unwrap();
    assert_eq!(tables.fqdn_rules.len(), 2);
}

#[test]
fn map_limits_from_the_config_are_enforced() {
    let limits = Limits {
        device_addresses: 0,
        device_prefixes: 1,
        destinations: 3,
        counters: 13,
        ..Limits::default()
    };
    let errs = compile(&policy(METERS), &limits).unwrap_err();
    let rendered: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "p.yaml:3:3: groups.meters: the policy needs 1 device addresses (/32, /128), over the \
             limit of 0 (limits.device-addresses in the controller config); this group brings it to 1",
            "p.yaml:3:3: groups.meters: the policy needs 2 device prefixes, over the limit of 1 \
             (limits.device-prefixes in the controller config); this group brings it to 2",
            "p.yaml:3:3: groups.meters: the policy needs 4 (group, destination prefix) entries, \
             over the limit of 3 (limits.destinations in the controller config); this group brings it to 4",
            "p.yaml:3:3: groups.meters: the policy needs 14 counters (a default, the verdict \
             totals and one per rule, per group), over the limit of 13 (limits.counters in the \
             controller config); this group brings it to 14",
        ]
    );
}

#[test]
fn too_many_groups() {
    let mut text = String::from("groups:\n");
    for i in 0..MAX_GROUPS {
        text.push_str(&format!(
            "  g{i:04}:\n    devices: [10.{}.{}.0/24]\n    default: deny\n",
            i / 256,
            i % 256
        ));
    }
    let errs = compile(&policy(&text), &Limits::default()).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].to_string().ends_with(
            "groups.g4095: 4096 groups; at most 4095 fit (MAX_GROUPS, one id is the unknown-device group)"
        ),
        "{}",
        errs[0]
    );
}

#[test]
fn every_counter_maps_back_to_its_place_in_the_files() {
    let p = policy(METERS);
    let t = compile(&p, &Limits::default()).unwrap();
    let places: Vec<Option<String>> = t
        .counters
        .iter()
        .map(|owner| p.origin_of(owner).map(ToString::to_string))
        .collect();
    let at = |s: &str| Some(s.to_string());
    assert_eq!(
        places,
        [
            at("p.yaml:1:18"), // unknown-devices
            None,
            None,
            None,
            None,
            at("p.yaml:5:14"), // meters default
            at("p.yaml:7:9"),  // lateral
            at("p.yaml:8:9"),  // web
            at("p.yaml:9:9"),  // dns
            at("p.yaml:10:9"), // no-443
            at("p.yaml:3:3"),  // meters verdict totals
            at("p.yaml:3:3"),
            at("p.yaml:3:3"),
            at("p.yaml:3:3"),
        ]
    );
}
