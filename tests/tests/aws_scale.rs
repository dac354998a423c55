//! Realistic scale: a policy built from AWS's complete ip-ranges.json (every
//! service list: 13k list items, 9k distinct prefixes, both families) goes
//! through the real loader and compiler; prints how long each takes and how
//! big the tables are (never asserts a timing), and spot-checks the compiled
//! model against the naive semantics on packets into those prefixes.
//!
//! Reads the snapshot vendored in `tests/data/aws-ip-ranges.json.gz` (AWS's
//! file of 2025-07-24, sync token 1753388594; see `tests/data/README.md`),
//! so the suite needs nothing outside the repository.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
    time::Instant,
};

use ipnet::IpNet;
use tollgate::{
    compile::compile,
    config::Limits,
    model::{self, naive},
    policy::{self, Environment},
    tables::PacketFacts,
};

fn aws_ranges() -> (PathBuf, serde_json::Value) {
    use std::io::Read as _;
    let path = testkit::repo_root().join("tests/data/aws-ip-ranges.json.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("a gzip of UTF-8 JSON");
    (
        path,
        serde_json::from_str(&text).expect("ip-ranges.json parses"),
    )
}

/// One list per AWS service, as AWS publishes them (a prefix may be in
/// several, e.g. AMAZON and EC2).
fn lists_by_service(ranges: &serde_json::Value) -> BTreeMap<String, BTreeSet<IpNet>> {
    let mut lists: BTreeMap<String, BTreeSet<IpNet>> = BTreeMap::new();
    for (array, key) in [("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")] {
        for entry in ranges[array].as_array().expect("a prefix array") {
            let service = entry["service"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .replace('_', "-");
            let prefix: IpNet = entry[key].as_str().unwrap().parse().unwrap();
            lists
                .entry(format!("aws-{service}"))
                .or_default()
                .insert(prefix);
        }
    }
    lists
}

#[test]
fn compiles_the_complete_aws_list() {
    let (path, ranges) = aws_ranges();
    let lists = lists_by_service(&ranges);
    let items: usize = lists.values().map(BTreeSet::len).sum();
    let distinct: BTreeSet<IpNet> = lists.values().flatten().copied().collect();
    assert!(
        items > 13_000,
        "{} has only {items} prefixes",
        path.display()
    );

    let dir = std::env::temp_dir().join(format!("tollgate-aws-scale-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("lists")).unwrap();
    for (name, prefixes) in &lists {
        let mut text = format!("lists:\n  {name}:\n");
        for p in prefixes {
            let _ = writeln!(text, "    - \"{p}\"");
        }
        std::fs::write(dir.join(format!("lists/{name}.yaml")), text).unwrap();
    }
    let all: Vec<&str> = lists.keys().map(String::as_str).collect();
    let groups = format!(
        "groups:
  fleet:
    devices: [10.0.0.0/9, \"fd00::/9\"]
    default: deny
    rules:
      - allow: {{to: [{}], proto: tcp, ports: [443, 8883, \"8000-8099\"]}}
      - deny: {{to: aws-ec2, proto: udp}}
      - allow: {{to: aws-route53-healthchecks, proto: udp, ports: [53]}}
      - deny: {{to: [10.0.0.0/8, \"fc00::/7\"]}}
  cameras:
    devices: [10.128.0.0/9]
    default: deny
    mode: audit
    rules:
      - allow: {{to: aws-cloudfront, proto: tcp, ports: [443]}}
      - allow: {{to: aws-ec2, proto: udp, ports: [\"3478-3479\"]}}
      - deny: {{to: any, proto: tcp, ports: [25]}}
",
        all.join(", ")
    );
    std::fs::write(dir.join("groups.yaml"), groups).unwrap();

    let env = Environment {
        gateway: vec![],
        ntp: vec!["100.127.0.123".parse().unwrap()],
    };
    let started = Instant::now();
    let loaded = policy::load(&dir, &env);
    let load_time = started.elapsed();
    std::fs::remove_dir_all(&dir).unwrap();
    let loaded = loaded.unwrap_or_else(|d| panic!("{d:#?}"));

    let started = Instant::now();
    let tables = compile(&loaded.policy, &Limits::default()).unwrap_or_else(|d| panic!("{d:#?}"));
    let compile_time = started.elapsed();
    let ruleset_entries = tables.rulesets.entries();
    let compiled_entries: usize = tables
        .destinations
        .iter()
        .map(|d| tables.rulesets[d.ruleset as usize].len())
        .sum();
    eprintln!(
        "AWS scale ({}): {} lists, {items} list items, {} distinct prefixes; \
         load + validate {load_time:.2?}, compile {compile_time:.2?}; \
         {} destinations, {compiled_entries} compiled entries, {} rule sets \
         ({ruleset_entries} entries), {} counters",
        path.display(),
        lists.len(),
        distinct.len(),
        tables.destinations.len(),
        tables.rulesets.len(),
        tables.counters.len(),
    );
    assert!(tables.destinations.len() >= distinct.len());

    // Spot checks: one packet into every 25th prefix, from each group.
    let mut checked = 0;
    for (i, prefix) in distinct.iter().enumerate().filter(|(i, _)| i % 25 == 0) {
        let src: IpAddr = match (prefix.addr().is_ipv4(), i % 2) {
            (true, 0) => "10.1.2.3".parse().unwrap(),
            (true, _) => "10.200.0.9".parse().unwrap(),
            (false, _) => "fd00::77".parse().unwrap(),
        };
        for (proto, dport) in [(6, Some(443)), (17, Some(3478)), (17, Some(53)), (6, None)] {
            let packet = PacketFacts {
                src,
                dst: prefix.broadcast(),
                proto,
                dport,
            };
            let compiled = model::verdict(&tables, &packet);
            let semantic = naive::evaluate(&loaded.policy, &packet);
            assert_eq!(
                (compiled.verdict, compiled.reason, compiled.rule.as_ref()),
                (semantic.verdict, semantic.reason, semantic.rule_id()),
                "{packet:?}"
            );
            checked += 1;
        }
    }
    eprintln!("{checked} spot checks agree with the naive semantics");
}
