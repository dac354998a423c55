//! Each format's parser on small samples in its real shape, the errors a
//! malformed file gets, and the rendered file as the policy loader reads it.
//! The real files are parsed by `tests/lists_import.rs`.

use std::path::PathBuf;

use super::*;
use crate::policy::{Environment, Source, from_sources};

fn parsed(provider: Provider, json: &str) -> Vec<(String, Option<String>, Vec<String>)> {
    provider
        .parse(json.as_bytes())
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (e.prefix.to_string(), e.region, e.services))
        .collect()
}

fn entry(
    prefix: &str,
    region: Option<&str>,
    services: &[&str],
) -> (String, Option<String>, Vec<String>) {
    (
        prefix.into(),
        region.map(Into::into),
        services.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn aws_maps_both_families() {
    let json = r#"{"syncToken":"1","createDate":"2025-07-24-20-23-14",
        "prefixes":[{"ip_prefix":"3.4.12.4/32","region":"eu-west-1","service":"AMAZON","network_border_group":"eu-west-1"}],
        "ipv6_prefixes":[{"ipv6_prefix":"2600:1f69:7400::/40","region":"mx-central-1","service":"EC2","network_border_group":"mx-central-1"}]}"#;
    assert_eq!(
        parsed(Provider::Aws, json),
        [
            entry("3.4.12.4/32", Some("eu-west-1"), &["AMAZON"]),
            entry("2600:1f69:7400::/40", Some("mx-central-1"), &["EC2"]),
        ]
    );
    let source = Provider::Aws.parse(json.as_bytes()).unwrap().source;
    assert_eq!(
        source,
        "AWS ip-ranges.json, syncToken 1, createDate 2025-07-24-20-23-14"
    );
}

#[test]
fn gcp_maps_scope_to_region() {
    let json = r#"{"syncToken":"17","creationTime":"2025-07-24T19:16:28.780563","prefixes":[
        {"ipv4Prefix":"34.1.208.0/20","service":"Google Cloud","scope":"africa-south1"},
        {"ipv6Prefix":"2600:1900:8000::/44","service":"Google Cloud","scope":"africa-south1"}]}"#;
    assert_eq!(
        parsed(Provider::Gcp, json),
        [
            entry("34.1.208.0/20", Some("africa-south1"), &["Google Cloud"]),
            entry(
                "2600:1900:8000::/44",
                Some("africa-south1"),
                &["Google Cloud"]
            ),
        ]
    );
    let both = r#"{"syncToken":"1","creationTime":"t","prefixes":[{"service":"x","scope":"y"}]}"#;
    assert_eq!(
        Provider::Gcp.parse(both.as_bytes()).unwrap_err(),
        "prefixes[0]: needs one of ipv4Prefix and ipv6Prefix"
    );
}

#[test]
fn azure_maps_tags_and_global_regions() {
    let json = r#"{"changeNumber":9,"cloud":"Public","values":[
        {"name":"AzureCloud.eastus","id":"AzureCloud.eastus","properties":{"changeNumber":3,"region":"eastus","regionId":32,"platform":"Azure","systemService":"","addressPrefixes":["20.42.0.0/17","2603:1030:210::/47"],"networkFeatures":["API"]}},
        {"name":"AzureFrontDoor.Frontend","id":"AzureFrontDoor.Frontend","properties":{"changeNumber":1,"region":"","regionId":0,"platform":"Azure","systemService":"AzureFrontDoor","addressPrefixes":["13.107.246.0/24"]}},
        {"name":"Storage.WestUS","id":"Storage.WestUS","properties":{"changeNumber":1,"region":"westus","regionId":1,"platform":"Azure","systemService":"AzureStorage","addressPrefixes":["20.150.34.0/23"]}}]}"#;
    assert_eq!(
        parsed(Provider::Azure, json),
        [
            entry("20.42.0.0/17", Some("eastus"), &["AzureCloud"]),
            entry("2603:1030:210::/47", Some("eastus"), &["AzureCloud"]),
            entry("13.107.246.0/24", Some("global"), &["AzureFrontDoor"]),
            entry(
                "20.150.34.0/23",
                Some("westus"),
                &["Storage", "AzureStorage"]
            ),
        ]
    );
}

#[test]
fn oracle_maps_tags_to_services() {
    let json = r#"{"last_updated_timestamp":"2025-07-21T07:13:25.457838","regions":[
        {"region":"ap-tokyo-1","cidrs":[{"cidr":"140.91.0.0/16","tags":["OCI","OSN"]}]}]}"#;
    assert_eq!(
        parsed(Provider::Oracle, json),
        [entry("140.91.0.0/16", Some("ap-tokyo-1"), &["OCI", "OSN"])]
    );
}

#[test]
fn github_services_are_the_arrays_of_cidrs() {
    let json = r#"{"verifiable_password_authentication":false,
        "ssh_keys":["ssh-ed25519 AAAA"],"domains":{"website":["*.github.com"]},
        "hooks":["192.30.252.0/22","2a0a:a440::/29"],"api":["20.201.28.148/32"],"pages":[]}"#;
    assert_eq!(
        parsed(Provider::Github, json),
        [
            entry("20.201.28.148/32", None, &["api"]),
            entry("192.30.252.0/22", None, &["hooks"]),
            entry("2a0a:a440::/29", None, &["hooks"]),
        ]
    );
    let mixed = r#"{"hooks":["192.30.252.0/22","nonsense"]}"#;
    assert_eq!(
        Provider::Github.parse(mixed.as_bytes()).unwrap_err(),
        "hooks[1]: \"nonsense\" is not an IP address or CIDR"
    );
    assert_eq!(
        Provider::Github
            .parse(br#"{"ssh_keys":["x"]}"#)
            .unwrap_err(),
        "not GitHub's meta: no key holds a list of CIDRs"
    );
}

#[test]
fn malformed_files_say_what_is_wrong_and_where() {
    assert_eq!(
        Provider::Aws
            .parse(b"{\"syncToken\": \"1\",\n  oops}")
            .unwrap_err(),
        "not valid JSON: key must be a string at line 2 column 3"
    );
    let gcp = br#"{"syncToken":"1","creationTime":"t","prefixes":[]}"#;
    assert_eq!(
        Provider::Aws.parse(gcp).unwrap_err(),
        "not an AWS ip-ranges.json: missing field `createDate` at line 1 column 50"
    );
    let bad = br#"{"last_updated_timestamp":"t","regions":[{"region":"r","cidrs":[{"cidr":"10.0.0.1/8","tags":[]}]}]}"#;
    assert_eq!(
        Provider::Oracle.parse(bad).unwrap_err(),
        "regions[0].cidrs[0].cidr: \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?"
    );
    // What the policy language refuses, the importer refuses too.
    let mapped = br#"{"syncToken":"1","createDate":"d","prefixes":[],
        "ipv6_prefixes":[{"ipv6_prefix":"::ffff:192.0.2.0/120","region":"r","service":"s"}]}"#;
    let error = Provider::Aws.parse(mapped).unwrap_err();
    assert!(
        error.starts_with("ipv6_prefixes[0].ipv6_prefix: \"::ffff:192.0.2.0/120\" is IPv4-mapped"),
        "{error}"
    );
}

#[test]
fn gzip_and_the_size_limit() {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&[b' '; 1000]).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(input::read_from(gz.as_slice(), 1000).unwrap().len(), 1000);
    assert_eq!(
        input::read_from(gz.as_slice(), 999).unwrap_err(),
        "gzip: more than 999 bytes decompressed: not a provider's range file"
    );
    assert_eq!(
        input::read_from(&b"{}"[..], 1).unwrap_err(),
        "more than 1 bytes: not a provider's range file"
    );
}

fn oracle_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let json = r#"{"last_updated_timestamp":"2025-07-21T07:13:25","regions":[
        {"region":"ap-tokyo-1","cidrs":[{"cidr":"140.91.0.0/17","tags":["OCI"]},{"cidr":"140.91.128.0/17","tags":["OCI"]},
            {"cidr":"140.91.10.0/24","tags":["OSN"]},{"cidr":"2603:c020::/35","tags":["OCI"]}]},
        {"region":"ap-osaka-1","cidrs":[{"cidr":"192.0.2.0/24","tags":["OCI"]}]}]}"#;
    std::fs::write(file.path(), json).unwrap();
    file
}

fn request(file: PathBuf, regions: &[&str], services: &[&str], name: Option<&str>) -> Request {
    Request {
        provider: Provider::Oracle,
        file,
        filters: Filters {
            regions: regions.iter().map(|s| s.to_string()).collect(),
            services: services.iter().map(|s| s.to_string()).collect(),
            family: None,
        },
        name: name.map(Into::into),
    }
}

#[test]
fn the_list_file_has_a_header_and_loads_as_a_policy_list() {
    let file = oracle_file();
    let base = file
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let imported = import(&request(file.path().into(), &["AP-TOKYO-1"], &[], None)).unwrap();
    assert_eq!(imported.name, "oracle-ap-tokyo-1");
    assert_eq!((imported.selected, imported.collapsed), (4, 2));
    let expected = format!(
        "# Generated by `tollgate lists import`: regenerate rather than edit, with\n\
         #   tollgate lists import oracle {base} --region AP-TOKYO-1\n\
         #\n\
         # Source: {base}, Oracle Cloud public_ip_ranges.json, last_updated_timestamp 2025-07-21T07:13:25\n\
         # Filters: region AP-TOKYO-1\n\
         # 3 IPv4 and 1 IPv6 prefixes listed, collapsed to 1 IPv4 and 1 IPv6 prefixes covering the same addresses.\n\
         lists:\n  oracle-ap-tokyo-1:\n    - 140.91.0.0/16\n    - \"2603:c020::/35\"\n"
    );
    assert_eq!(imported.text, expected);
    let group = "groups:\n  g:\n    devices: [10.0.0.0/8]\n    default: deny\n    rules:\n      \
                 - allow: {id: cloud, to: oracle-ap-tokyo-1}\n";
    let sources = [
        Source {
            path: "list.yaml".into(),
            text: imported.text,
        },
        Source {
            path: "group.yaml".into(),
            text: group.into(),
        },
    ];
    let loaded = from_sources(&sources, &Environment::default()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn usage_and_input_errors_are_told_apart() {
    let file = oracle_file();
    let path = file.path().display();
    let error = import(&request(file.path().into(), &[], &[], Some("Bad_Name"))).unwrap_err();
    assert!(
        matches!(error, ImportError::Usage(ref m) if m.starts_with("--name: list \"Bad_Name\"")),
        "{error:?}"
    );
    let mut github = request(file.path().into(), &["x"], &[], None);
    github.provider = Provider::Github;
    assert_eq!(
        import(&github).unwrap_err(),
        ImportError::Usage(
            "--region: the github format has no regions (filter with --service)".into()
        )
    );
    assert_eq!(
        import(&request(file.path().into(), &["tokyo"], &[], None)).unwrap_err(),
        ImportError::Input(format!(
            "{path}: no region \"tokyo\" in the file; did you mean ap-tokyo-1? \
             (its 2 regions: ap-osaka-1, ap-tokyo-1)"
        ))
    );
    let missing = import(&request("/nonexistent/ranges.json".into(), &[], &[], None)).unwrap_err();
    assert!(
        matches!(missing, ImportError::Input(ref m) if m.starts_with("/nonexistent/ranges.json: cannot read: ")),
        "{missing:?}"
    );
}

#[test]
fn the_header_quotes_what_a_shell_would_split() {
    assert_eq!(shell_word("Google Cloud"), "'Google Cloud'");
    assert_eq!(shell_word("it's"), r"'it'\''s'");
    assert_eq!(shell_word("ap-northeast-1"), "ap-northeast-1");
    assert_eq!(shell_word(""), "''");
}

#[test]
fn every_prefix_shape_survives_yaml() {
    let prefixes: Vec<IpNet> = [
        "0.0.0.0/0",
        "192.0.2.1/32",
        "::/0",
        "::1/128",
        "2001:db8::1/128",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let text = render::list_file(
        &render::Header {
            command: "tollgate lists import aws -".into(),
            source: "stdin".into(),
            filters: &Filters::default(),
            selected: &prefixes,
            collapsed: &prefixes,
        },
        "shapes",
        &prefixes,
    );
    let group = "groups:\n  g:\n    devices: [10.0.0.0/8]\n    default: deny\n    rules:\n      \
                 - allow: {id: all, to: shapes}\n";
    let sources = [
        Source {
            path: "list.yaml".into(),
            text,
        },
        Source {
            path: "group.yaml".into(),
            text: group.into(),
        },
    ];
    let loaded = from_sources(&sources, &Environment::default()).unwrap();
    let rule = &loaded.policy.groups[0].rules[0];
    let mut to = rule.targets[0].prefixes.clone();
    to.sort();
    assert_eq!(to, prefixes);
}
