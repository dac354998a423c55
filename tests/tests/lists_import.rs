//! `tollgate lists import` on the providers' real files (vendored in
//! `tests/data/`, see its README): each format parses, the output checks as
//! a policy list, the header names source, version and filters, filters
//! select what they say, and the collapsed list covers exactly the naive
//! union of the selected prefixes.

use std::{
    io::{Read as _, Write as _},
    net::IpAddr,
    path::Path,
    process::{Command, Stdio},
};

use ipnet::IpNet;
use serde_json::Value;
use testkit::tollgate;

const AWS: &str = "tests/data/aws-ip-ranges.json.gz";
const GCP: &str = "tests/data/google-cloud-ip-ranges.json.gz";
const AZURE: &str = "tests/data/azure-service-tags-sample.json";
const ORACLE: &str = "tests/data/oracle-cloud-ip-ranges.json.gz";
const GITHUB: &str = "tests/data/github-ip-ranges.json.gz";

/// Runs `tollgate lists import ARGS`, asserting success; its stdout.
fn import(args: &[&str]) -> String {
    let run = tollgate(&[&["lists", "import"], args].concat());
    assert_eq!(run.status, 0, "{args:?}: {}", run.stderr);
    run.stdout
}

/// The prefixes of a list file.
fn prefixes(list: &str) -> Vec<IpNet> {
    list.lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|p| p.trim_matches('"').parse().unwrap())
        .collect()
}

fn header(list: &str) -> Vec<&str> {
    list.lines().take_while(|l| l.starts_with('#')).collect()
}

/// The addresses of `prefixes` as merged intervals (IPv4 first): two
/// prefix sets cover the same addresses exactly when these are equal.
fn union(prefixes: &[IpNet]) -> Vec<(bool, u128, u128)> {
    let number = |a: IpAddr| match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let mut intervals: Vec<_> = prefixes
        .iter()
        .map(|n| {
            (
                n.addr().is_ipv6(),
                number(n.network()),
                number(n.broadcast()),
            )
        })
        .collect();
    intervals.sort();
    let mut merged: Vec<(bool, u128, u128)> = Vec::new();
    for (v6, start, end) in intervals {
        match merged.last_mut() {
            Some((last_v6, _, last_end))
                if *last_v6 == v6 && start <= last_end.saturating_add(1) =>
            {
                *last_end = (*last_end).max(end)
            }
            _ => merged.push((v6, start, end)),
        }
    }
    merged
}

/// A vendored provider file as JSON.
fn json(path: &str) -> Value {
    let mut bytes = Vec::new();
    std::fs::File::open(testkit::repo_root().join(path))
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    if path.ends_with(".gz") {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut text)
            .unwrap();
        bytes = text;
    }
    serde_json::from_slice(&bytes).unwrap()
}

/// AWS prefixes (both families) whose region and service pass `keep`.
fn aws_prefixes(keep: impl Fn(&str, &str) -> bool) -> Vec<IpNet> {
    let file = json(AWS);
    let mut selected = Vec::new();
    for (array, field) in [("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")] {
        for p in file[array].as_array().unwrap() {
            if keep(
                p["region"].as_str().unwrap(),
                p["service"].as_str().unwrap(),
            ) {
                selected.push(p[field].as_str().unwrap().parse().unwrap());
            }
        }
    }
    selected
}

/// `tollgate check` accepts a policy using the list file `list` as `name`.
fn assert_checks(list: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("list.yaml"), list).unwrap();
    let group = format!(
        "groups:\n  devices:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
         - allow: {{id: cloud, to: {name}, proto: tcp, ports: [443]}}\n"
    );
    std::fs::write(dir.path().join("group.yaml"), group).unwrap();
    let run = tollgate(&["check", "--strict", dir.path().to_str().unwrap()]);
    assert_eq!(run.status, 0, "{name}: {}{}", run.stdout, run.stderr);
}

#[test]
fn each_format_imports_its_real_file_into_a_list_that_checks() {
    // (arguments, list name, what the header says of the source)
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &["aws", AWS, "--region", "eu-central-1", "--service", "S3"],
            "aws-eu-central-1-s3",
            "AWS ip-ranges.json, syncToken 1753388594, createDate 2025-07-24-20-23-14",
        ),
        (
            &["gcp", GCP, "--region", "asia-northeast1"],
            "gcp-asia-northeast1",
            "Google Cloud cloud.json, syncToken 1753409788780, creationTime 2025-07-24T19:16:28.780563",
        ),
        (
            &[
                "azure",
                AZURE,
                "--region",
                "japaneast",
                "--service",
                "AzureIoTHub",
            ],
            "azure-japaneast-azureiothub",
            "Azure Service Tags, cloud Public, changeNumber 341",
        ),
        (
            &[
                "oracle",
                ORACLE,
                "--region",
                "ap-tokyo-1",
                "--service",
                "OSN",
            ],
            "oracle-ap-tokyo-1-osn",
            "Oracle Cloud public_ip_ranges.json, last_updated_timestamp 2025-07-21T07:13:25.457838",
        ),
        (
            &[
                "github",
                GITHUB,
                "--service",
                "hooks",
                "--name",
                "github-webhooks",
            ],
            "github-webhooks",
            "GitHub meta API; the file carries no date or version",
        ),
        (
            &["github", GITHUB, "--service", "actions", "--family", "ipv6"],
            "github-actions-ipv6",
            "GitHub meta API; the file carries no date or version",
        ),
    ];
    for (args, name, source) in cases {
        let list = import(args);
        let file = Path::new(args[1]).file_name().unwrap().to_str().unwrap();
        let header = header(&list);
        assert_eq!(
            header[1],
            format!("#   tollgate lists import {}", args.join(" ")).replace(args[1], file),
            "{name}"
        );
        assert_eq!(header[3], format!("# Source: {file}, {source}"), "{name}");
        assert!(
            header[4].starts_with("# Filters: "),
            "{name}: {}",
            header[4]
        );
        assert!(
            list.contains(&format!("\nlists:\n  {name}:\n    - ")),
            "{name}"
        );
        assert!(!prefixes(&list).is_empty(), "{name}");
        assert_checks(&list, name);
    }
}

#[test]
fn the_aws_tokyo_list_is_what_the_importer_writes() {
    let path = testkit::repo_root().join("tests/data/lists-aws-ap-northeast-1.yaml");
    let example = std::fs::read_to_string(path).unwrap();
    let list = import(&[
        "aws",
        AWS,
        "--region",
        "ap-northeast-1",
        "--service",
        "AMAZON",
        "--name",
        "aws-ap-northeast-1",
    ]);
    assert_eq!(
        list, example,
        "regenerate tests/data/lists-aws-ap-northeast-1.yaml"
    );
}

#[test]
fn collapsed_output_covers_exactly_the_naive_union() {
    // All of AWS: 13k prefixes, many repeated across services and nested.
    let all = aws_prefixes(|_, _| true);
    let list = prefixes(&import(&["aws", AWS]));
    assert!(list.len() < all.len());
    assert_eq!(union(&list), union(&all));
    // And minimal: no two output prefixes overlap or could merge.
    assert!(list.windows(2).all(|w| w[0] < w[1]));
    for pair in list.windows(2) {
        let siblings = pair[0].prefix_len() == pair[1].prefix_len()
            && pair[0].prefix_len() > 0
            && pair[0].supernet() == pair[1].supernet();
        assert!(!siblings && !pair[0].contains(&pair[1]), "{pair:?}");
    }
    // GitHub: every service at once.
    let github = json(GITHUB);
    let raw: Vec<IpNet> = github
        .as_object()
        .unwrap()
        .iter()
        .filter(|(key, _)| !["ssh_keys", "domains"].contains(&key.as_str()))
        .filter_map(|(_, v)| v.as_array())
        .flatten()
        .map(|p| p.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(union(&prefixes(&import(&["github", GITHUB]))), union(&raw));
}

#[test]
fn filters_or_within_a_flag_and_across_flags_case_insensitively() {
    let list = import(&[
        "aws",
        AWS,
        "--region",
        "EU-West-1",
        "--region",
        "us-east-1",
        "--service",
        "s3",
        "--service",
        "CLOUDFRONT",
    ]);
    let expected = aws_prefixes(|region, service| {
        ["eu-west-1", "us-east-1"].contains(&region) && ["S3", "CLOUDFRONT"].contains(&service)
    });
    assert_eq!(union(&prefixes(&list)), union(&expected));
    assert!(
        header(&list)
            .contains(&"# Filters: region EU-West-1 or us-east-1; service s3 or CLOUDFRONT"),
        "{list}"
    );
    // Only the region: every service there.
    let list = import(&["aws", AWS, "--region", "ap-northeast-3", "--family", "ipv4"]);
    let expected = aws_prefixes(|region, _| region == "ap-northeast-3");
    let expected: Vec<IpNet> = expected
        .into_iter()
        .filter(|n| matches!(n, IpNet::V4(_)))
        .collect();
    assert_eq!(union(&prefixes(&list)), union(&expected));
}

#[test]
fn filters_that_match_nothing_fail_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("list.yaml");
    let output = output.to_str().unwrap();
    let run = tollgate(&[
        "lists",
        "import",
        "aws",
        AWS,
        "--region",
        "ap-northeast-9",
        "-o",
        output,
    ]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(
            "tollgate lists import: tests/data/aws-ip-ranges.json.gz: no region \"ap-northeast-9\" in the \
             file; did you mean ap-northeast-1, ap-northeast-2, ap-northeast-3"
        ),
        "{}",
        run.stderr
    );
    // Both values exist, but no prefix has both.
    let run = tollgate(&[
        "lists",
        "import",
        "oracle",
        ORACLE,
        "--region",
        "sa-bogota-1",
        "--service",
        "object_storage",
        "-o",
        output,
    ]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.ends_with(
            "no prefix matches all the filters (region sa-bogota-1; service object_storage); \
             services in the region: OCI, OSN\n"
        ),
        "{}",
        run.stderr
    );
    assert!(!Path::new(output).exists());
}

#[test]
fn usage_errors_exit_2() {
    let run = tollgate(&["lists", "import", "github", GITHUB, "--region", "us-east-1"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("the github format has no regions"),
        "{}",
        run.stderr
    );
    let run = tollgate(&["lists", "import", "aws", AWS, "--name", "Tokyo"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--name: list \"Tokyo\" must be"),
        "{}",
        run.stderr
    );
    let run = tollgate(&["lists", "import", "azurite", AZURE]);
    assert_eq!(run.status, 2, "{}", run.stderr);
}

#[test]
fn malformed_input_fails_with_the_file_and_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloud.json");
    std::fs::write(&file, "{\"syncToken\": \"1\",\n \"prefixes\": [}\n").unwrap();
    let run = tollgate(&["lists", "import", "gcp", file.to_str().unwrap()]);
    assert_eq!(run.status, 1);
    assert_eq!(
        run.stderr,
        format!(
            "tollgate lists import: {}: not valid JSON: expected value at line 2 column 15\n",
            file.display()
        )
    );
    // The wrong format for the file.
    let run = tollgate(&["lists", "import", "oracle", GCP]);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr.starts_with(
            "tollgate lists import: tests/data/google-cloud-ip-ranges.json.gz: not an Oracle Cloud \
             public_ip_ranges.json: missing field"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn standard_input_and_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("oracle.yaml");
    let mut child = Command::new(testkit::tollgate_binary())
        .args(["lists", "import", "oracle", "-", "--region", "ap-osaka-1"])
        .arg("--output")
        .arg(&output)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gz = std::fs::read(testkit::repo_root().join(ORACLE)).unwrap();
    child.stdin.take().unwrap().write_all(&gz).unwrap();
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(done.stderr).unwrap();
    assert!(done.status.success(), "{stderr}");
    assert!(stderr.contains("list oracle-ap-osaka-1"), "{stderr}");
    let list = std::fs::read_to_string(&output).unwrap();
    assert!(list.contains("# Source: stdin, Oracle Cloud"), "{list}");
    assert!(list.contains("#   tollgate lists import oracle - --region ap-osaka-1\n"));
    // Only the list file: no temporary left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert_checks(&list, "oracle-ap-osaka-1");
}
