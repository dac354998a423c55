//! The `check` and `explain` commands as CI scripts and operators use them:
//! exit codes, output formats, and golden outputs of `explain` on the example
//! policies (`tests/golden/`; `TOLLGATE_BLESS=1` rewrites them).

mod common;

use common::tollgate;
use serde_json::Value;

/// The environment the example policies are written for (the lab's).
const ENV: [&str; 4] = ["--gateway", "10.64.0.1", "--ntp", "100.127.0.123"];

#[test]
fn check_accepts_the_example_policies() {
    let run = tollgate(&["check", "policies/"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    // Without --gateway, the DNS rule to `gateway` resolves to nothing.
    assert_eq!(
        run.stdout,
        "policies/: ok: 3 groups, 5 device prefixes, 7 rules, 550 compiled entries, 1 warning\n"
    );
    assert!(
        run.stderr.contains("note: `gateway` resolves to nothing"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("policies/meters.yaml:22:15: warning: groups.meters.rules[1].allow.to: `to` resolves to no address"), "{}", run.stderr);

    let mut args = vec!["check", "--policy", "policies"];
    args.extend(ENV);
    let run = tollgate(&args);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "policies: ok: 3 groups, 5 device prefixes, 7 rules, 556 compiled entries, 0 warnings\n"
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn check_reports_every_error_and_exits_1() {
    let run = tollgate(&["check", "tests/policies/broken"]);
    assert_eq!(run.status, 1);
    assert_eq!(run.stdout, "");
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("tests/policies/broken/meters.yaml:"))
        .collect();
    assert_eq!(errors.len(), 7, "{}", run.stderr);
    assert!(run.stderr.contains(
        "tests/policies/broken/meters.yaml:10:24: groups.meters.rules[0].allow.ports[1]: \"70000\" is not a port (0-65535)"
    ));
    assert!(
        run.stderr
            .ends_with("tests/policies/broken: invalid: 7 errors, 0 warnings\n")
    );
}

#[test]
fn check_json_for_machines() {
    let mut args = vec!["check", "policies", "--format", "json"];
    args.extend(ENV);
    let run = tollgate(&args);
    assert_eq!(run.status, 0);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"], Value::Array(vec![]));
    let s = &v["summary"];
    assert_eq!(
        (
            s["groups"].as_u64(),
            s["device_prefixes"].as_u64(),
            s["rules"].as_u64()
        ),
        (Some(3), Some(5), Some(7))
    );
    // 200 + 68 AWS prefixes, the gateway, the NTP address, the lateral
    // prefixes, the ingest ranges and the update server.
    assert_eq!(s["destinations"], 282);
    assert_eq!(s["compiled_entries"], 556);

    let run = tollgate(&["check", "tests/policies/broken", "--format", "json"]);
    assert_eq!(run.status, 1);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["summary"], Value::Null);
    let first = &v["errors"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["file"], "tests/policies/broken/meters.yaml");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(4), Some(15))
    );
    assert_eq!(first["field"], "groups.meters.devices[0]");
    assert_eq!(
        first["message"],
        "\"10.64.1.0/16\" has host bits set; did you mean 10.64.0.0/16?"
    );
    assert_eq!(v["errors"].as_array().unwrap().len(), 7);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["check"][..],
        &["check", "no/such/dir"],
        &["check", "policies", "--policy", "policies"],
        &["check", "policies", "--format", "yaml"],
        &["check", "policies", "--gateway", "not-an-ip"],
        &["check", "--config", "no/such/tollgate.yaml"],
        &["explain", "--policy", "policies", "--src", "10.64.0.5"],
        &[
            "explain",
            "--policy",
            "policies",
            "--src",
            "10.64.0.5",
            "--dst",
            "::1",
        ],
        &[
            "explain",
            "--policy",
            "policies",
            "--src",
            "10.64.0.5",
            "--dst",
            "1.1.1.1",
            "--proto",
            "icmp",
            "--dport",
            "7",
        ],
        &[
            "explain",
            "--policy",
            "policies",
            "--src",
            "10.64.0.5",
            "--dst",
            "1.1.1.1",
            "--proto",
            "any",
        ],
        &[
            "explain",
            "--policy",
            "policies",
            "--src",
            "10.64.0.5",
            "--dst",
            "1.1.1.1",
            "--dport",
            "1",
            "--fragment",
        ],
    ] {
        let run = tollgate(args);
        assert_eq!(run.status, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn check_and_explain_read_the_controller_config() {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [tg-absent0]\npolicy-dir: {}\nntp:\n  listen: [\"100.127.0.123:123\"]\n",
            common::repo_root().join("policies").display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let run = tollgate(&["check", "--config", config]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("note: interface tg-absent0 (from "),
        "{}",
        run.stderr
    );
    let run = tollgate(&[
        "explain",
        "--config",
        config,
        "--src",
        "10.64.3.7",
        "--dst",
        "100.127.0.123",
        "--proto",
        "udp",
        "--dport",
        "123",
        "--format",
        "json",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(run.status, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["reason"], "builtin-ntp");
    assert_eq!(v["rule"], Value::Null);
}

#[test]
fn explain_refuses_an_invalid_policy() {
    let run = tollgate(&[
        "explain",
        "--policy",
        "tests/policies/broken",
        "--src",
        "10.64.0.5",
        "--dst",
        "1.1.1.1",
        "--dport",
        "1",
    ]);
    assert_eq!(run.status, 1);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("invalid policy, nothing to explain"));
}

/// Golden name, and the packet as `explain` arguments.
const GOLDEN: &[(&str, &str)] = &[
    (
        "meters-aws-mqtt",
        "--src 10.64.3.7 --dst 13.112.4.1 --dport 8883",
    ),
    (
        "meters-dns-via-gateway",
        "--src 10.64.3.7 --dst 10.64.0.1 --proto udp --dport 53",
    ),
    (
        "meters-lateral",
        "--src 10.64.3.7 --dst 10.64.9.9 --dport 22",
    ),
    (
        "meters-ntp-builtin",
        "--src 10.64.3.7 --dst 100.127.0.123 --proto udp --dport 123",
    ),
    (
        "meters-internet",
        "--src 10.64.3.7 --dst 8.8.8.8 --proto udp --dport 53",
    ),
    (
        "meters-v6-fragment",
        "--src fd00:64::5 --dst 2406:da14::1 --fragment",
    ),
    (
        "meters-icmp",
        "--src 10.64.3.7 --dst 10.64.0.1 --proto icmp",
    ),
    (
        "cameras-webrtc",
        "--src 10.65.0.20 --dst 203.0.113.7 --proto udp --dport 3478",
    ),
    (
        "cameras-audit-deny",
        "--src 10.65.0.20 --dst 198.51.100.1 --dport 443",
    ),
    (
        "quarantine-exact-device",
        "--src 10.64.13.37 --dst 198.51.100.20 --dport 443",
    ),
    (
        "unknown-device",
        "--src 10.99.0.1 --dst 13.112.4.1 --dport 443",
    ),
];

/// Which goldens also have a JSON form.
const GOLDEN_JSON: [&str; 4] = [
    "meters-aws-mqtt",
    "meters-ntp-builtin",
    "cameras-audit-deny",
    "unknown-device",
];

#[test]
fn explain_golden_outputs() {
    let golden = common::repo_root().join("tests/golden");
    let mut wrong = Vec::new();
    for (name, packet) in GOLDEN {
        let mut formats = vec![("txt", &["--format", "text"][..])];
        if GOLDEN_JSON.contains(name) {
            formats.push(("json", &["--format", "json"][..]));
        }
        for (ext, format) in formats {
            let mut args = vec!["explain", "--policy", "policies"];
            args.extend(ENV);
            args.extend(packet.split_whitespace());
            args.extend(format);
            let run = tollgate(&args);
            assert_eq!(run.status, 0, "{name}: {}", run.stderr);
            let path = golden.join(format!("{name}.{ext}"));
            if common::blessing() {
                std::fs::create_dir_all(&golden).unwrap();
                std::fs::write(&path, &run.stdout).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path).unwrap_or_default();
            if run.stdout != expected {
                wrong.push(format!(
                    "{}\n--- expected\n{expected}--- got\n{}",
                    path.display(),
                    run.stdout
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "golden mismatch (TOLLGATE_BLESS=1 rewrites):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let bash = common::tollgate(&["completions", "bash"]);
    assert_eq!(bash.status, 0, "{}", bash.stderr);
    for sub in ["run", "check", "explain", "status", "lab"] {
        assert!(bash.stdout.contains(sub), "bash completion lacks {sub}");
    }
    assert!(bash.stdout.contains("--check-config"));
    let zsh = common::tollgate(&["completions", "zsh"]);
    assert_eq!(zsh.status, 0);
    assert!(zsh.stdout.starts_with("#compdef tollgate"));
    let man = common::tollgate(&["man"]);
    assert_eq!(man.status, 0, "{}", man.stderr);
    assert!(man.stdout.contains(".TH tollgate 1"));
    assert!(man.stdout.contains("explain"));
    assert_eq!(common::tollgate(&["completions", "tcsh"]).status, 2);
}

#[test]
fn version_names_the_commit_and_the_bpf_object() {
    let run = common::tollgate(&["--version"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    // `tollgate 0.1.0 (commit 1a2b3c4, bpf 0123456789abcdef)`, the commit
    // with `-dirty` for a changed tree, `unknown` outside git.
    let line = run.stdout.trim_end();
    let rest = line
        .strip_prefix(&format!("tollgate {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, bpf) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", bpf "))
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(commit, env!("TOLLGATE_GIT_REVISION"));
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(
        commit == "unknown" || (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit())),
        "{line}"
    );
    assert!(
        bpf.len() == 16 && bpf.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
    assert_eq!(common::tollgate(&["-V"]).stdout, run.stdout);
}

#[test]
fn man_dir_writes_a_page_per_subcommand_and_see_also_cites_them() {
    let dir = std::env::temp_dir().join(format!("tollgate-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = common::tollgate(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    let subcommands = [
        "check",
        "completions",
        "explain",
        "lab",
        "man",
        "run",
        "status",
    ];
    let mut expected: Vec<String> = subcommands
        .iter()
        .map(|s| format!("tollgate-{s}.1"))
        .collect();
    expected.push("tollgate.1".into());
    expected.sort();
    assert_eq!(pages, expected);
    let top = std::fs::read_to_string(dir.join("tollgate.1")).unwrap();
    // The page on stdout is the same tollgate(1).
    assert_eq!(common::tollgate(&["man"]).stdout, top);
    let see_also = top.split(".SH \"SEE ALSO\"").nth(1).expect("SEE ALSO");
    for sub in subcommands {
        assert!(see_also.contains(&format!("tollgate\\-{sub}(1)")), "{sub}");
        let page = std::fs::read_to_string(dir.join(format!("tollgate-{sub}.1"))).unwrap();
        assert!(page.contains(".TH tollgate"), "tollgate-{sub}(1)");
        assert!(page.contains(".SH EXAMPLES"), "tollgate-{sub}(1)");
        assert!(page.contains(".SH \"EXIT STATUS\""), "tollgate-{sub}(1)");
        assert!(
            page.contains("tollgate(1)"),
            "tollgate-{sub}(1) cites tollgate(1)"
        );
    }
    // No page for clap's `help`, and no reference to one.
    assert!(!top.contains("tollgate\\-help"));
    std::fs::remove_dir_all(&dir).unwrap();
}
