//! One test per validation error and warning, asserting the exact
//! `file:line:col: field: message` an operator sees.

use std::{net::IpAddr, path::PathBuf};

use super::*;

fn sources(files: &[(&str, &str)]) -> Vec<Source> {
    files
        .iter()
        .map(|(path, text)| Source {
            path: PathBuf::from(path),
            text: text.to_string(),
        })
        .collect()
}

fn env() -> Environment {
    Environment {
        gateway: vec!["10.64.0.1".parse().unwrap()],
        ntp: vec!["100.127.0.123".parse().unwrap()],
    }
}

/// Every diagnostic of an invalid policy, rendered.
fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match from_sources(&sources(files), &env()) {
        Ok(_) => panic!("the policy is valid"),
        Err(diags) => diags.iter().map(ToString::to_string).collect(),
    }
}

fn valid(files: &[(&str, &str)]) -> Loaded {
    from_sources(&sources(files), &env()).unwrap_or_else(|diags| {
        let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
        panic!("invalid:\n{}", lines.join("\n"))
    })
}

fn warnings(files: &[(&str, &str)]) -> Vec<String> {
    valid(files)
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A group with one rule: `- allow: <body>` on line 6, the body's `{` at
/// column 16.
fn one_rule(body: &str) -> String {
    format!(
        "groups:\n  g:\n    devices: [10.1.0.0/16]\n    default: deny\n    rules:\n      - allow: {body}\n"
    )
}

#[test]
fn port_out_of_range_the_example_of_the_issue() {
    let text = "\
groups:
  meters:
    devices: [10.64.0.0/16]
    default: deny
    description: Smart meters
    rules:
    - allow: {to: ntp, proto: udp, ports: [123]}
    - deny: {to: 10.0.0.0/8}
    - allow:
        to: any
        proto: tcp
        ports:
        - 443
        - 70000
";
    assert_eq!(
        errors(&[("policies/meters.yaml", text)]),
        [
            "policies/meters.yaml:14:11: groups.meters.rules[2].allow.ports[1]: \"70000\" is not a port (0-65535)"
        ]
    );
}

#[test]
fn bad_cidr_and_bad_address() {
    let text = "\
groups:
  g:
    devices: [10.64.0.300, 10.0.0.0/33, fd00::/129, 10.1.0.0/x]
    default: deny
    rules:
      - allow: {to: 1.2.3.4.5/8}
";
    assert_eq!(
        errors(&[("p.yaml", text)]),
        [
            "p.yaml:3:15: groups.g.devices[0]: \"10.64.0.300\" is not an IP address or CIDR",
            "p.yaml:3:28: groups.g.devices[1]: \"10.0.0.0/33\" is not a CIDR: the prefix length must be 0-32",
            "p.yaml:3:41: groups.g.devices[2]: \"fd00::/129\" is not a CIDR: the prefix length must be 0-128",
            "p.yaml:3:53: groups.g.devices[3]: \"10.1.0.0/x\" is not a CIDR: the prefix length must be 0-32",
            "p.yaml:6:21: groups.g.rules[0].allow.to: \"1.2.3.4.5/8\" is not a CIDR: \"1.2.3.4.5\" is not an IP address",
        ]
    );
}

#[test]
fn host_bits_suggest_the_network() {
    assert_eq!(
        errors(&[("p.yaml", &one_rule("{to: [10.0.0.0/8, 192.168.1.7/24]}"))]),
        [
            "p.yaml:6:34: groups.g.rules[0].allow.to[1]: \"192.168.1.7/24\" has host bits set; did you mean 192.168.1.0/24?"
        ]
    );
}

#[test]
fn ipv4_mapped_prefixes_are_rejected() {
    assert_eq!(
        errors(&[("p.yaml", &one_rule("{to: \"::ffff:10.0.0.0/104\"}"))]),
        [
            "p.yaml:6:21: groups.g.rules[0].allow.to: \"::ffff:10.0.0.0/104\" is IPv4-mapped IPv6, \
          which the dataplane never matches (it drops IPv6 packets to ::ffff:0:0/96); write the \
          IPv4 prefix 10.0.0.0/8"
        ]
    );
}

#[test]
fn unknown_list_name_suggests_a_near_one() {
    let lists = "lists:\n  aws-tokyo: [13.112.0.0/14]\n";
    assert_eq!(
        errors(&[
            ("a.yaml", lists),
            ("b.yaml", &one_rule("{to: [aws-tokio, internet]}"))
        ]),
        [
            "b.yaml:6:22: groups.g.rules[0].allow.to[0]: \"aws-tokio\" is not a CIDR, an address, a defined list or a keyword (any, gateway, ntp); did you mean \"aws-tokyo\"?",
            "b.yaml:6:33: groups.g.rules[0].allow.to[1]: \"internet\" is not a CIDR, an address, a defined list or a keyword (any, gateway, ntp)",
        ]
    );
}

#[test]
fn unknown_keywords_in_enumerated_fields() {
    let text = "\
unknown-devices: reject
groups:
  g:
    devices: [10.1.0.0/16]
    default: maybe
    mode: strict
    rules:
      - deny: {to: any, proto: tcpp}
";
    assert_eq!(
        errors(&[("p.yaml", text)]),
        [
            "p.yaml:1:18: unknown-devices: \"reject\" is not a verdict for unknown devices (allow | deny): the gateway never answers a source it does not know",
            "p.yaml:5:14: groups.g.default: \"maybe\" is not a verdict (allow | deny | reject)",
            "p.yaml:6:11: groups.g.mode: \"strict\" is not a mode (enforce | audit)",
            "p.yaml:8:32: groups.g.rules[0].deny.proto: \"tcpp\" is not a protocol (tcp | udp | icmp | icmpv6 | any | 0-255)",
        ]
    );
}

#[test]
fn ports_need_tcp_or_udp() {
    assert_eq!(
        errors(&[("p.yaml", &one_rule("{to: any, ports: [53]}"))]),
        [
            "p.yaml:6:26: groups.g.rules[0].allow.ports: ports need `proto: tcp` or `proto: udp` (proto is any): only TCP and UDP packets carry ports"
        ]
    );
    assert_eq!(
        errors(&[("p.yaml", &one_rule("{to: any, proto: icmp, ports: 53}"))]),
        [
            "p.yaml:6:39: groups.g.rules[0].allow.ports: ports need `proto: tcp` or `proto: udp` (proto is icmp): only TCP and UDP packets carry ports"
        ]
    );
    // Numeric TCP is TCP.
    valid(&[("p.yaml", &one_rule("{to: any, proto: 6, ports: 53}"))]);
}

#[test]
fn inverted_and_malformed_ranges() {
    assert_eq!(
        errors(&[(
            "p.yaml",
            &one_rule("{to: any, proto: tcp, ports: [\"2000-1000\", \"1-\", 5-6]}")
        )]),
        [
            "p.yaml:6:46: groups.g.rules[0].allow.ports[0]: \"2000-1000\" is an inverted range: 2000 is above 1000; write \"1000-2000\"",
            "p.yaml:6:59: groups.g.rules[0].allow.ports[1]: \"1-\" is not a port or a range (a port 0-65535, or \"lo-hi\")",
        ]
    );
}

#[test]
fn empty_ports_and_empty_to() {
    assert_eq!(
        errors(&[("p.yaml", &one_rule("{to: [], proto: tcp, ports: []}"))]),
        [
            "p.yaml:6:21: groups.g.rules[0].allow.to: empty `to`: name at least one CIDR, address, list or keyword (any, gateway, ntp)",
            "p.yaml:6:44: groups.g.rules[0].allow.ports: empty `ports`: omit it to match every port",
        ]
    );
    assert_eq!(
        errors(&[("p.yaml", &one_rule("{proto: tcp}"))]),
        [
            "p.yaml:6:16: groups.g.rules[0].allow: missing `to`: a CIDR, an address, a list name, any, gateway or ntp, or a list of these"
        ]
    );
}

#[test]
fn duplicate_names_across_files_name_both_places() {
    let a = "lists:\n  web: [192.0.2.0/24]\ngroups:\n  g:\n    devices: [10.1.0.0/16]\n    default: deny\nunknown-devices: deny\n";
    let b = "unknown-devices: allow\nlists:\n  web: [198.51.100.0/24]\ngroups:\n  g:\n    devices: [10.2.0.0/16]\n    default: allow\n";
    assert_eq!(
        errors(&[("a.yaml", a), ("b.yaml", b)]),
        [
            "b.yaml:1:1: unknown-devices: is also set at a.yaml:7:18; set it in one file",
            "b.yaml:3:3: lists.web: list \"web\" is also defined at a.yaml:2:3",
            "b.yaml:5:3: groups.g: group \"g\" is also defined at a.yaml:4:3",
        ]
    );
}

#[test]
fn duplicate_device_prefix_across_groups() {
    let a = "groups:\n  cameras:\n    devices: [10.65.0.0/16]\n    default: deny\n";
    let b = "groups:\n  meters:\n    devices:\n      - 10.64.0.0/16\n      - 10.65.0.0/16\n    default: deny\n";
    assert_eq!(
        errors(&[("a.yaml", a), ("b.yaml", b)]),
        [
            "b.yaml:5:9: groups.meters.devices[1]: 10.65.0.0/16 is also a device prefix of group \"cameras\" (a.yaml:3:15); a source belongs to one group"
        ]
    );
}

#[test]
fn group_name_syntax() {
    let text = "groups:\n  Meters_1:\n    devices: [10.1.0.0/16]\n    default: deny\n";
    assert_eq!(
        errors(&[("p.yaml", text)]),
        [
            "p.yaml:2:3: groups.Meters_1: group \"Meters_1\" must be 1-48 characters of a-z, 0-9 and -"
        ]
    );
}

#[test]
fn list_names_are_not_keywords() {
    assert_eq!(
        errors(&[("p.yaml", "lists:\n  gateway: [10.0.0.1]\n")]),
        [
            "p.yaml:2:3: lists.gateway: list \"gateway\" is a keyword (any, gateway, ntp); pick another name"
        ]
    );
}

#[test]
fn default_is_required() {
    let text = "groups:\n  g:\n    devices: [10.1.0.0/16]\n    rules: []\n";
    assert_eq!(
        errors(&[("p.yaml", text)]),
        [
            "p.yaml:3:5: groups.g: missing `default` (allow | deny | reject): the verdict when no rule matches"
        ]
    );
}

#[test]
fn duplicate_rules_and_ids() {
    let text = "\
groups:
  g:
    devices: [10.1.0.0/16]
    default: deny
    rules:
      - allow: {to: [192.0.2.0/24, any], proto: tcp, ports: [443, 80]}
      - allow: {to: [any, 192.0.2.0/24], proto: 6, ports: [80, 443]}
      - deny: {to: 10.0.0.0/8, id: lateral}
      - deny: {to: 172.16.0.0/12, id: lateral}
      - deny: {to: 192.168.0.0/16, id: default}
      - deny: {to: 192.168.0.0/16, id: Bad_Id}
";
    let errs = errors(&[("p.yaml", text)]);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].starts_with("p.yaml:7:9: groups.g.rules[1].allow: duplicate rule: id \"allow-")
            && errs[0].ends_with(
                "\" is also the id of the rule at p.yaml:6:9 (a derived id repeats when two \
                 rules mean the same; otherwise give each an `id:`)"
            ),
        "{}",
        errs[0]
    );
    assert_eq!(
        errs[1..],
        [
            "p.yaml:9:9: groups.g.rules[3].deny: duplicate rule: id \"lateral\" is also the id of the rule at p.yaml:8:9 (a derived id repeats when two rules mean the same; otherwise give each an `id:`)",
            "p.yaml:10:40: groups.g.rules[4].deny.id: \"default\" is reserved (default, builtin-ntp)",
            "p.yaml:11:40: groups.g.rules[5].deny.id: rule id \"Bad_Id\" must be 1-48 characters of a-z, 0-9 and -",
        ]
    );
}

#[test]
fn structural_errors_per_file_and_semantic_errors_elsewhere_in_one_run() {
    let a = "groups:\n  g:\n    devices: [10.1.0.0/16]\n    defualt: deny\n";
    let b = "groups:\n  h:\n    devices: [10.2.0.0/33]\n    default: deny\n";
    let c = "lists:\n  x: [10.0.0.0/8]\n  x: [10.0.0.0/8]\n";
    assert_eq!(
        errors(&[("a.yaml", a), ("b.yaml", b), ("c.yaml", c)]),
        [
            "a.yaml:4:5: groups.g: unknown field `defualt`, expected one of `description`, `devices`, `default`, `mode`, `rules`",
            "b.yaml:3:15: groups.h.devices[0]: \"10.2.0.0/33\" is not a CIDR: the prefix length must be 0-32",
            "c.yaml:3:3: lists.x: duplicate key (first at line 2, column 3); a key may appear once per mapping",
        ]
    );
}

#[test]
fn names_a_broken_file_may_define_are_not_reported_as_unknown() {
    let lists = "lists:\n  web: [192.0.2.0/24\n";
    let errs = errors(&[("a.yaml", lists), ("b.yaml", &one_rule("{to: web}"))]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("a.yaml:"), "{}", errs[0]);
}

#[test]
fn warning_shadowed_rule() {
    let text = "\
groups:
  g:
    devices: [10.1.0.0/16]
    default: deny
    rules:
      - allow: {to: 10.2.0.0/16, proto: tcp, ports: [443]}
      - deny: {to: [10.2.0.0/17, 10.2.128.0/17], proto: tcp, ports: [443]}
      - allow: {to: 10.3.0.0/16}
      - deny: {to: 10.3.0.0/16, id: block-10-3}
      - deny: {to: 10.4.0.0/16}
      - allow: {to: 10.4.0.0/16, id: open-10-4}
";
    let w = warnings(&[("p.yaml", text)]);
    // rules[3] (deny) is not shadowed by rules[2]: deny wins the tie.
    assert_eq!(w.len(), 3, "{w:#?}");
    let rest = " take every destination it matches (with a longer prefix, or the same prefix where deny wins)";
    assert!(
        w[0].starts_with("p.yaml:6:9: warning: groups.g.rules[0].allow: rule allow-")
            && w[0].contains(" never decides: deny rule(s) deny-")
            && w[0].ends_with(&format!(" (p.yaml:7:9){rest}")),
        "{}",
        w[0]
    );
    assert!(
        w[1].starts_with("p.yaml:8:9: warning: groups.g.rules[2].allow: rule allow-")
            && w[1].ends_with(&format!("deny rule(s) block-10-3 (p.yaml:9:9){rest}")),
        "{}",
        w[1]
    );
    assert!(
        w[2].starts_with("p.yaml:11:9: warning: groups.g.rules[5].allow: rule open-10-4 never decides: deny rule(s) deny-")
            && w[2].ends_with(&format!(" (p.yaml:10:9){rest}")),
        "{}",
        w[2]
    );
}

#[test]
fn warning_group_without_devices_and_to_resolving_to_nothing() {
    let text = "groups:\n  g:\n    default: deny\n    rules:\n      - allow: {to: [gateway, empty]}\nlists:\n  empty: []\n";
    let loaded = from_sources(&sources(&[("p.yaml", text)]), &Environment::default()).unwrap();
    let w: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "p.yaml:2:3: warning: groups.g: the group has no devices: no packet is ever in it",
            "p.yaml:5:21: warning: groups.g.rules[0].allow.to: `to` resolves to no address (gateway: no gateway addresses known; list \"empty\" is empty): the rule never matches",
            "p.yaml:7:3: warning: lists.empty: the list is empty: rules using it match nothing",
        ]
    );
}

#[test]
fn warning_icmp_of_the_wrong_family() {
    assert_eq!(
        warnings(&[("p.yaml", &one_rule("{to: \"fd00::/8\", proto: icmp}"))]),
        [
            "p.yaml:6:40: warning: groups.g.rules[0].allow.proto: icmp never matches IPv6 destinations, and this rule has only those (ICMP is icmp for IPv4, icmpv6 for IPv6)"
        ]
    );
}

#[test]
fn a_valid_policy_resolves_names_keywords_and_ids() {
    let lists = "lists:\n  aws-tokyo:\n    - 13.112.0.0/14\n    - 2406:da14::/32\n";
    let groups = "\
unknown-devices: allow
groups:
  meters:
    description: Smart meters
    devices: [10.64.0.0/16, \"fd00:64::/48\", 10.99.0.7]
    default: deny
    rules:
      - allow: {to: aws-tokyo, proto: tcp, ports: [443, 8883, \"10000-10100\"], comment: broker}
      - allow: {to: gateway, proto: udp, ports: 53, id: dns}
      - deny: {to: any}
  cameras:
    devices: [10.65.0.0/16]
    default: allow
    mode: audit
";
    let loaded = valid(&[("l.yaml", lists), ("g.yaml", groups)]);
    let p = loaded.policy;
    assert_eq!(p.unknown_devices, Action::Allow);
    assert_eq!(p.ntp, [IpAddr::from([100, 127, 0, 123])]);
    let names: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["cameras", "meters"]);
    assert_eq!(p.group_id("meters"), Some(2));
    assert!(p.groups[0].audit && !p.groups[1].audit);
    let meters = &p.groups[1];
    assert_eq!(meters.devices.len(), 3);
    assert_eq!(meters.devices[2].prefix.to_string(), "10.99.0.7/32");
    let broker = &meters.rules[0];
    assert_eq!(broker.origin.to_string(), "g.yaml:8:9");
    assert_eq!(broker.targets[0].written, "aws-tokyo");
    assert_eq!(broker.prefixes().count(), 2);
    assert_eq!(broker.proto, Some(PROTO_TCP));
    assert_eq!(
        broker.ports.as_deref(),
        Some(
            &[
                PortRange::new(443, 443),
                PortRange::new(8883, 8883),
                PortRange::new(10000, 10100)
            ][..]
        )
    );
    assert_eq!(meters.rules[1].id.as_str(), "dns");
    assert_eq!(
        meters.rules[1].targets[0].prefixes[0].to_string(),
        "10.64.0.1/32"
    );
    assert!(p.rule("meters", broker.id.as_str()).is_some());
    assert_eq!(p.rule_count(), 3);
    assert_eq!(p.device_count(), 4);
}

#[test]
fn an_empty_directory_is_an_error() {
    let dir = std::env::temp_dir().join(format!("tollgate-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let errs = load(&dir, &env()).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .to_string()
            .ends_with(": no policy files (*.yaml, *.yml) in this directory"),
        "{}",
        errs[0]
    );
}

#[test]
fn a_rule_is_allow_or_deny() {
    let text = "\
groups:
  g:
    devices: [10.1.0.0/16]
    default: deny
    rules:
      - allow: {to: any}
        deny: {to: any}
      - {}
";
    assert_eq!(
        errors(&[("p.yaml", text)]),
        [
            "p.yaml:6:9: groups.g.rules[0]: a rule is one of `allow:`, `deny:` or `reject:`; split it",
            "p.yaml:8:9: groups.g.rules[1]: empty rule: write `allow:`, `deny:` or `reject:` and what it matches",
        ]
    );
}

/// A group `g` (10.1.0.0/16) with rule `web` (tcp/443), then `expect:` with
/// the given cases, the first on line 8.
fn with_cases(cases: &str) -> String {
    format!(
        "groups:\n  g:\n    devices: [10.1.0.0/16]\n    default: deny\n    rules:\n      \
         - allow: {{id: web, to: 0.0.0.0/0, proto: tcp, ports: [443]}}\nexpect:\n{cases}"
    )
}

#[test]
fn expectations_are_read_with_their_place() {
    let text = with_cases(
        "  - {from: 10.1.0.1, to: 1.1.1.1, proto: tcp, port: 443, verdict: allow, rule: web}\n  \
         - {from: 10.9.0.1, to: 1.1.1.1, proto: icmp, verdict: deny, rule: default}\n",
    );
    let loaded = valid(&[("p/a.yaml", &text)]);
    let cases = &loaded.expectations;
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].packet.dport, Some(443));
    assert_eq!(cases[0].rule.as_deref(), Some("web"));
    assert_eq!(cases[0].origin.to_string(), "p/a.yaml:8:5");
    assert_eq!(cases[0].field, "expect[0]");
    assert_eq!(cases[1].packet.proto, PROTO_ICMP);
    assert_eq!(cases[1].packet.dport, None);
    assert_eq!(cases[1].verdict, tollgate_common::Verdict::Deny);
}

#[test]
fn expectation_errors_name_the_field() {
    let text = with_cases(
        "  - {from: 10.1.0.x, to: \"::1\", proto: any, verdict: permit}\n  \
         - {from: 10.1.0.1, to: 1.1.1.1, proto: tcp, verdict: allow}\n  \
         - {from: 10.1.0.1, to: 1.1.1.1, proto: icmp, port: 3, verdict: allow}\n  \
         - {from: 10.1.0.1, to: 1.1.1.1, proto: udp, port: 70000, verdict: allow}\n  \
         - {to: 1.1.1.1, proto: udp, port: 7, verdict: allow}\n",
    );
    assert_eq!(
        errors(&[("a.yaml", &text)]),
        [
            "a.yaml:8:12: expect[0].from: \"10.1.0.x\" is not an IP address",
            "a.yaml:8:40: expect[0].proto: a packet has one protocol: tcp | udp | icmp | icmpv6 | 0-255",
            "a.yaml:8:54: expect[0].verdict: \"permit\" is not a verdict (allow | deny | audit-deny | reject)",
            "a.yaml:9:5: expect[1]: missing `port`: tcp packets carry one",
            "a.yaml:10:54: expect[2].port: icmp packets carry no port the policy reads; only tcp and udp do",
            "a.yaml:11:53: expect[3].port: \"70000\" is not a port (0-65535)",
            "a.yaml:12:5: expect[4]: missing `from` (the source address)",
        ]
    );
}

#[test]
fn expectation_families_must_agree() {
    let text = with_cases("  - {from: 10.1.0.1, to: \"::1\", proto: icmp, verdict: deny}\n");
    assert_eq!(
        errors(&[("a.yaml", &text)]),
        ["a.yaml:8:26: expect[0].to: ::1 and the source 10.1.0.1 are of different families"]
    );
}

#[test]
fn expectation_rules_belong_to_the_group_of_the_source() {
    let text = with_cases(
        "  - {from: 10.1.0.1, to: 1.1.1.1, proto: tcp, port: 1, verdict: deny, rule: wbe}\n  \
         - {from: 10.2.0.1, to: 1.1.1.1, proto: tcp, port: 1, verdict: deny, rule: web}\n  \
         - {from: 10.1.0.1, to: 1.1.1.1, proto: udp, port: 1, verdict: deny, rule: default}\n",
    );
    assert_eq!(
        errors(&[("a.yaml", &text)]),
        [
            "a.yaml:8:77: expect[0].rule: \"wbe\" is not a rule of group \"g\", the group of \
             10.1.0.1 (rule ids, `default` or `builtin-ntp`)",
            "a.yaml:9:77: expect[1].rule: 10.2.0.1 is in no group (_unknown): only `default` \
             (unknown-devices) decides for it, not \"web\"",
        ]
    );
}

#[test]
fn expectation_fields_are_strict() {
    let text =
        with_cases("  - {from: 10.1.0.1, to: 1.1.1.1, proto: icmp, verdict: deny, dport: 1}\n");
    let e = errors(&[("a.yaml", &text)]);
    assert!(
        e[0].starts_with("a.yaml:8:63: expect[0]: unknown field `dport`, expected one of"),
        "{e:?}"
    );
}

#[test]
fn fqdn_rules_are_validated_at_their_positions() {
    let text = "\
groups:
  g:
    devices: [10.1.0.0/16]
    default: deny
    rules:
      - allow: {to: {fqdn: [iot.example.com, \"ex*ample.com\", \"a..b.com\"]}, proto: tcp, ports: [443]}
      - deny: {to: {fqdn: [bad.example.com]}}
      - allow: {to: {fqdn: []}}
";
    assert_eq!(
        errors(&[("p.yaml", text)]),
        [
            "p.yaml:6:46: groups.g.rules[0].allow.to.fqdn[1]: \"ex*ample.com\" is not a domain name: a wildcard is only `*.` (exactly one label) or `**.` (one or more labels), at the start",
            "p.yaml:6:62: groups.g.rules[0].allow.to.fqdn[2]: \"a..b.com\" is not a domain name: an empty label (two dots in a row)",
            "p.yaml:7:21: groups.g.rules[1].deny.to.fqdn: only allow rules take fqdn (this is a deny rule): a deny by name cannot be enforced, since the addresses behind a name also serve other names and a device can reach them without asking; deny the addresses instead",
            "p.yaml:8:28: groups.g.rules[2].allow.to.fqdn: empty `fqdn`: name at least one domain",
        ]
    );
}

#[test]
fn a_to_mapping_takes_only_fqdn() {
    assert_eq!(
        errors(&[("p.yaml", &one_rule("{to: {name: iot.example.com}}"))]),
        ["p.yaml:6:22: groups.g.rules[0].allow.to: unknown field `name`, expected `fqdn`"]
    );
}

#[test]
fn fqdn_names_are_normalised_and_get_a_derived_id() {
    let loaded = valid(&[(
        "p.yaml",
        &one_rule("{to: {fqdn: [\"IoT.Example.COM.\", \"**.bücher.example\"]}, proto: tcp}"),
    )]);
    let rule = &loaded.policy.groups[0].rules[0];
    let names: Vec<String> = rule.fqdn.iter().map(|p| p.to_string()).collect();
    assert_eq!(names, ["iot.example.com", "**.xn--bcher-kva.example"]);
    assert!(rule.targets.is_empty());
    assert!(warnings(&[("p.yaml", &one_rule("{to: {fqdn: [a.example.com]}}"))]).is_empty());
}
