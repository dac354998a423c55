//! The `check` and `explain` commands as CI scripts and operators use them:
//! exit codes, output formats, and golden outputs of `explain` on the example
//! policies (`tests/golden/`; `TOLLGATE_BLESS=1` rewrites them).

use serde_json::Value;
use testkit::tollgate;

/// The environment the example policies are written for (the lab's).
const ENV: [&str; 4] = ["--gateway", "10.64.0.1", "--ntp", "100.127.0.123"];

#[test]
fn check_accepts_the_example_policies() {
    let run = tollgate(&["check", "policies/"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    // Without --gateway, the DNS rule to `gateway` resolves to nothing.
    assert_eq!(
        run.stdout,
        "policies/: ok: 3 groups, 5 device prefixes, 10 rules, 64 compiled entries, 2 warnings\n"
    );
    assert!(
        run.stderr.contains("note: `gateway` resolves to nothing"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("policies/meters.yaml:34:15: warning: groups.meters.rules[1].allow.to: `to` resolves to no address"), "{}", run.stderr);

    let mut args = vec!["check", "--policy", "policies"];
    args.extend(ENV);
    let run = tollgate(&args);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "policies: ok: 3 groups, 5 device prefixes, 10 rules, 71 compiled entries, 0 warnings\n"
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
        (Some(3), Some(5), Some(10))
    );
    // Per group: the 25 public resolvers (meters, cameras), the gateway, the
    // lateral prefixes, the ingest ranges, the update server, and the NTP
    // address in each of the three groups. The FQDN rule has no prefix.
    assert_eq!(s["destinations"], 64);
    assert_eq!(s["compiled_entries"], 71);

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
    let config = config_with(&dir, "tg-absent0");
    let config = config.to_str().unwrap();
    let run = tollgate(&["check", "--config", config]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    // None of the config's interfaces is here: not the gateway, no note.
    assert!(!run.stderr.contains("note: interface"), "{}", run.stderr);
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
        "meters-aws-not-resolved",
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
    "meters-aws-not-resolved",
    "meters-ntp-builtin",
    "cameras-audit-deny",
    "unknown-device",
];

#[test]
fn explain_golden_outputs() {
    let golden = testkit::repo_root().join("tests/golden");
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
            if testkit::blessing() {
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
    let bash = testkit::tollgate(&["completions", "bash"]);
    assert_eq!(bash.status, 0, "{}", bash.stderr);
    for sub in ["run", "check", "test", "explain", "status", "lab"] {
        assert!(bash.stdout.contains(sub), "bash completion lacks {sub}");
    }
    assert!(bash.stdout.contains("--check-config"));
    let zsh = testkit::tollgate(&["completions", "zsh"]);
    assert_eq!(zsh.status, 0);
    assert!(zsh.stdout.starts_with("#compdef tollgate"));
    let man = testkit::tollgate(&["man"]);
    assert_eq!(man.status, 0, "{}", man.stderr);
    assert!(man.stdout.contains(".TH tollgate 1"));
    assert!(man.stdout.contains("explain"));
    assert_eq!(testkit::tollgate(&["completions", "tcsh"]).status, 2);
}

#[test]
fn check_github_annotations() {
    let run = tollgate(&["check", "tests/policies/broken", "--format", "github"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let errors: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("::error "))
        .collect();
    assert_eq!(errors.len(), 7, "{}", run.stdout);
    assert_eq!(
        errors[0],
        "::error file=tests/policies/broken/meters.yaml,line=4,col=15,\
         title=groups.meters.devices[0]::\"10.64.1.0/16\" has host bits set; did you mean 10.64.0.0/16?"
    );
    assert!(run.stdout.contains(
        "::error file=tests/policies/broken/meters.yaml,line=10,col=24,\
         title=groups.meters.rules[0].allow.ports[1]::\"70000\" is not a port (0-65535)\n"
    ));
    // Notes are notices; every line is a workflow command.
    assert!(
        run.stdout.lines().all(|l| l.starts_with("::")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("::notice title=tollgate check::`gateway` resolves to nothing")
    );
    assert!(
        run.stderr
            .ends_with("tests/policies/broken: invalid: 7 errors, 0 warnings\n")
    );

    // A warning, with a `:` and `,` in a property escaped.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("a:b,c.yaml");
    std::fs::write(&policy, WARNING_ONLY).unwrap();
    let run = tollgate(&["check", dir.path().to_str().unwrap(), "--format", "github"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let warning = run
        .stdout
        .lines()
        .find(|l| l.starts_with("::warning "))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(
        warning.starts_with(&format!(
            "::warning file={}/a%3Ab%2Cc.yaml,line=2,col=3,title=groups.idle::",
            dir.path().display()
        )),
        "{warning}"
    );
}

/// A valid policy whose only finding is a warning.
const WARNING_ONLY: &str = "groups:\n  idle:\n    default: deny\n";

#[test]
fn check_sarif_report() {
    let run = tollgate(&["check", "tests/policies/broken", "--format", "sarif"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"].as_str().unwrap().contains("sarif"));
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let driver = &runs[0]["tool"]["driver"];
    assert_eq!(driver["name"], "tollgate");
    assert_eq!(driver["version"], env!("CARGO_PKG_VERSION"));
    let results = runs[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 7);
    let first = &results[0];
    assert_eq!(first["ruleId"], "policy");
    assert_eq!(first["level"], "error");
    assert_eq!(
        first["message"]["text"],
        "groups.meters.devices[0]: \"10.64.1.0/16\" has host bits set; did you mean 10.64.0.0/16?"
    );
    let location = &first["locations"][0]["physicalLocation"];
    assert_eq!(
        location["artifactLocation"]["uri"],
        "tests/policies/broken/meters.yaml"
    );
    assert_eq!(location["region"]["startLine"], 4);
    assert_eq!(location["region"]["startColumn"], 15);

    let mut args = vec!["check", "policies", "--format", "sarif"];
    args.extend(ENV);
    let run = tollgate(&args);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["runs"][0]["results"], Value::Array(vec![]));

    let run = tollgate(&["check", "policies", "--format", "sarif"]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["runs"][0]["results"][0]["level"], "warning");
}

#[test]
fn strict_makes_warnings_fail_with_3() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("idle.yaml"), WARNING_ONLY).unwrap();
    let path = dir.path().to_str().unwrap();
    let run = tollgate(&["check", path]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    for format in ["text", "json", "github", "sarif"] {
        let run = tollgate(&["check", path, "--strict", "--format", format]);
        assert_eq!(run.status, 3, "{format}: {}{}", run.stdout, run.stderr);
    }
    let run = tollgate(&["check", path, "--strict"]);
    assert!(
        run.stderr
            .ends_with(&format!("{path}: failed under --strict: 1 warning\n")),
        "{}",
        run.stderr
    );
    // Errors still exit 1; no warning, no failure.
    assert_eq!(
        tollgate(&["check", "tests/policies/broken", "--strict"]).status,
        1
    );
    let mut args = vec!["check", "policies", "--strict"];
    args.extend(ENV);
    assert_eq!(tollgate(&args).status, 0);
}

#[test]
fn usage_errors_are_json_when_json_is_asked_for() {
    for args in [
        &["check", "policies", "--format", "json", "--bogus"][..],
        &[
            "check",
            "--format=json",
            "policies",
            "--gateway",
            "not-an-ip",
        ],
        &["check", "no/such/dir", "--format", "json"],
        &[
            "check",
            "--config",
            "no/such/tollgate.yaml",
            "--format",
            "json",
        ],
        &[
            "explain",
            "--policy",
            "policies",
            "--src",
            "10.64.0.5",
            "--dst",
            "::1",
            "--format",
            "json",
        ],
        &[
            "explain",
            "--format",
            "json",
            "--policy",
            "policies",
            "--src",
            "10.64.0.5",
        ],
    ] {
        let run = tollgate(args);
        assert_eq!(run.status, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        let v: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", run.stdout));
        assert_eq!(v["usage"], true, "{args:?}");
        let error = v["error"].as_str().unwrap();
        assert!(!error.is_empty() && !error.starts_with("error:"), "{error}");
    }
    let run = tollgate(&["check", "policies", "--bogus", "--format", "json"]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["error"], "unexpected argument '--bogus' found");
    // Help stays help.
    let run = tollgate(&["check", "--help", "--format", "json"]);
    assert_eq!(run.status, 0);
    assert!(run.stdout.contains("--strict"));
}

#[test]
fn check_and_explain_default_to_the_installed_config() {
    if std::path::Path::new("/etc/tollgate/tollgate.yaml").exists() {
        // A gateway: the default is used (not written by this test).
        eprintln!("skipped: /etc/tollgate/tollgate.yaml exists on this host");
        return;
    }
    for args in [
        &["check"][..],
        &["explain", "--src", "10.64.0.5", "--dst", "1.1.1.1"],
    ] {
        let run = tollgate(args);
        assert_eq!(run.status, 2, "{args:?}");
        assert!(
            run.stderr.contains("DIR or --policy DIR")
                && run.stderr.contains("--config FILE")
                && run
                    .stderr
                    .contains("/etc/tollgate/tollgate.yaml does not exist"),
            "{}",
            run.stderr
        );
    }
}

/// A controller config naming `interfaces`, for the policy examples.
fn config_with(dir: &std::path::Path, interfaces: &str) -> std::path::PathBuf {
    let config = dir.join("tollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "interfaces: [{interfaces}]\npolicy-dir: {}\nntp:\n  listen: [\"100.127.0.123:123\"]\n",
            testkit::repo_root().join("policies").display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn a_ci_host_hears_nothing_about_the_gateways_interfaces() {
    let dir = tempfile::tempdir().unwrap();
    // None of them exists here: not the gateway, nothing to say.
    let config = config_with(dir.path(), "tg-absent0, tg-absent1");
    let run = tollgate(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("interface"), "{}", run.stderr);
    // One exists (lo): the others are worth a note...
    let config = config_with(dir.path(), "lo, tg-absent0");
    let run = tollgate(&["check", "--config", config.to_str().unwrap()]);
    assert!(
        run.stderr.contains("note: interface tg-absent0 (from "),
        "{}",
        run.stderr
    );
    // ... unless --ci says this host is not the gateway.
    let run = tollgate(&["check", "--ci", "--config", config.to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("interface"), "{}", run.stderr);
    assert!(
        run.stderr.contains("`to` resolves to no address (gateway"),
        "--ci reads no address of lo: {}",
        run.stderr
    );
}

/// Runs tollgate with its stdout a pipe closed before it writes: it must
/// end quietly (status 0 or killed by SIGPIPE), never panic.
fn closed_stdout(args: &[&str]) {
    use std::os::unix::process::ExitStatusExt as _;
    let mut child = std::process::Command::new(testkit::tollgate_binary())
        .args(args)
        .current_dir(testkit::repo_root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE),
        "{args:?}: {:?} {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

#[test]
fn a_closed_pipe_ends_quietly() {
    // A big report: 90 groups without devices, 90 warnings (a valid
    // policy, under the 100 findings shown).
    let dir = tempfile::tempdir().unwrap();
    let mut big = String::from("groups:\n");
    for g in 0..90 {
        big.push_str(&format!("  g{g}:\n    default: deny\n"));
    }
    std::fs::write(dir.path().join("big.yaml"), big).unwrap();
    let big = dir.path().to_str().unwrap();
    for args in [
        &["completions", "bash"][..],
        &["man"],
        &["check", big, "--format", "json"],
        &["check", big, "--format", "github"],
        &["check", big],
        &[
            "explain",
            "--policy",
            "policies",
            "--src",
            "10.64.3.7",
            "--dst",
            "13.112.4.1",
        ],
    ] {
        closed_stdout(args);
    }
}

/// The verdicts docs/migration-nftables.md states for its example policy.
#[test]
fn migration_guide_verdicts() {
    for (packet, verdict, decided) in [
        ("--dst 13.112.4.1 --dport 8883", "allow", "aws-iot"),
        ("--dst 13.113.200.5 --dport 443", "deny", "retired-broker"),
        (
            "--dst 10.1.0.53 --proto udp --dport 53",
            "allow",
            "plant-dns",
        ),
        ("--dst 10.1.0.54 --proto udp --dport 53", "deny", "lateral"),
        (
            "--dst 198.51.100.7 --proto udp --dport 5683",
            "allow",
            "partner-coap",
        ),
        ("--dst 198.51.100.7 --dport 443", "deny", "partner"),
        ("--dst 203.0.113.10 --dport 8060", "deny", "updates-retired"),
        ("--dst 203.0.113.10 --dport 8010", "allow", "updates"),
        (
            "--dst 8.8.8.8 --proto udp --dport 53",
            "deny",
            "group default",
        ),
    ] {
        let mut args = vec![
            "explain",
            "--policy",
            "tests/policies/migration",
            "--src",
            "10.64.3.7",
        ];
        args.extend(ENV);
        args.extend(packet.split_whitespace());
        let run = tollgate(&args);
        assert_eq!(run.status, 0, "{packet}: {}", run.stderr);
        assert!(
            run.stdout.contains(&format!("verdict   {verdict}\n")),
            "{packet}: {}",
            run.stdout
        );
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with("decided "))
            .unwrap();
        let expected = if decided == "group default" {
            "decided   group default".to_string()
        } else {
            format!("decided   rule {decided}, ")
        };
        assert!(line.starts_with(&expected), "{packet}: {line}");
    }
}

#[test]
fn version_names_the_commit_and_the_bpf_object() {
    let run = testkit::tollgate(&["--version"]);
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
    assert_eq!(commit, tollgate::GIT_REVISION);
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(
        commit == "unknown" || (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit())),
        "{line}"
    );
    assert!(
        bpf.len() == 16 && bpf.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
    assert_eq!(testkit::tollgate(&["-V"]).stdout, run.stdout);
}

#[test]
fn man_dir_writes_a_page_per_subcommand_and_see_also_cites_them() {
    let dir = std::env::temp_dir().join(format!("tollgate-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = testkit::tollgate(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    let subcommands = [
        "check",
        "completions",
        "diff",
        "explain",
        "lab",
        "lists",
        "man",
        "run",
        "status",
        "test",
    ];
    let mut expected: Vec<String> = subcommands
        .iter()
        .map(|s| format!("tollgate-{s}.1"))
        .collect();
    expected.push("tollgate.1".into());
    // A command below a subcommand has its own page.
    expected.push("tollgate-lists-import.1".into());
    expected.sort();
    assert_eq!(pages, expected);
    let import = std::fs::read_to_string(dir.join("tollgate-lists-import.1")).unwrap();
    for option in ["region", "service", "family", "name", "output"] {
        assert!(import.contains(&format!("\\-\\-{option}")), "--{option}");
    }
    assert!(import.contains("tollgate\\-lists(1)"), "cites its parent");
    let top = std::fs::read_to_string(dir.join("tollgate.1")).unwrap();
    // The page on stdout is the same tollgate(1).
    assert_eq!(testkit::tollgate(&["man"]).stdout, top);
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
    let lists = std::fs::read_to_string(dir.join("tollgate-lists.1")).unwrap();
    assert!(lists.contains("tollgate\\-lists\\-import(1)"));
    assert!(!lists.contains("tollgate\\-lists\\-help"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn test_passes_the_example_policies() {
    let run = tollgate(&["test", "policies"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "policies: ok: 11 cases passed\n");
}

/// A policy whose second case fails on the model.
fn failing_cases() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("meters.yaml"),
        "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
         - allow: {id: aws-iot, to: 13.112.0.0/14, proto: tcp, ports: [8883]}\nexpect:\n  \
         - {from: 10.64.0.10, to: 13.112.10.10, proto: tcp, port: 8883, verdict: allow, rule: aws-iot}\n  \
         - {from: 10.64.0.10, to: 13.112.10.10, proto: tcp, port: 443, verdict: allow, rule: aws-iot}\n",
    )
    .unwrap();
    dir
}

#[test]
fn test_reports_a_failing_case_at_its_line_and_exits_1() {
    let dir = failing_cases();
    let path = dir.path().to_str().unwrap();
    let run = tollgate(&["test", path]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains(&format!(
            "{path}/meters.yaml:9:5: expect[1]: 10.64.0.10 → 13.112.10.10 tcp/443: expected \
             allow (rule aws-iot), got deny (rule default, group meters) on the model\n"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .ends_with(&format!("{path}: 1 of 2 cases failed\n")),
        "{}",
        run.stderr
    );
}

#[test]
fn test_json_lists_the_failures() {
    let dir = failing_cases();
    let path = dir.path().to_str().unwrap();
    let run = tollgate(&["test", path, "--format", "json"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["cases"], 2);
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["line"], 9);
    assert_eq!(failures[0]["field"], "expect[1]");

    let run = tollgate(&["test", "policies", "--format", "json"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (report["passed"].clone(), report["cases"].clone()),
        (true.into(), 11.into())
    );
}

#[test]
fn test_of_an_invalid_policy_runs_no_case_and_exits_1() {
    let run = tollgate(&["test", "tests/policies/broken"]);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr
            .ends_with("tests/policies/broken: invalid policy (7 errors), no case run\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn test_usage_errors_exit_2() {
    for args in [
        &["test", "no/such/dir"][..],
        &["test", "policies", "--format", "yaml"],
        &["test", "--config", "no/such/tollgate.yaml"],
    ] {
        assert_eq!(tollgate(args).status, 2, "{args:?}");
    }
}
