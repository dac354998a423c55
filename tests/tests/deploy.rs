//! The operator-facing deployment artifacts under `deploy/`: the alert rules
//! pass `promtool check` and their own `promtool test rules` cases, the
//! Grafana dashboard and the alerts use only the metric names of the
//! contract (and between them use all of it), the example configuration
//! parses with the controller's own parser, the systemd unit passes
//! `systemd-analyze verify` and `systemd-analyze security` rates its
//! exposure 2.5 or lower, and its sysusers file makes the `tollgate` user.
//!
//! promtool comes from Debian's `prometheus` package, systemd-analyze and
//! systemd-sysusers from `systemd`; `scripts/setup.sh` installs them. Without them these
//! tests fail, they never skip.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde::Deserialize;
use serde_json::Value;
use tollgate::config::{Config, OnExit};

/// The exported metric names (`tests/src/contract.rs`, which
/// `tests/tests/metrics.rs` checks against a real scrape).
use testkit::contract::{DNS_METRICS, METRICS, family_of};

/// Prometheus's own per-target series, which alerts may use besides ours.
const PROMETHEUS_METRICS: &[&str] = &["up"];

/// The alerts operators and runbooks refer to by name.
const REQUIRED_ALERTS: &[&str] = &[
    "TollgatePolicyReloadFailing",
    "TollgateDataplaneDetached",
    "TollgateDown",
    "TollgateDenyRateSpike",
    "TollgateNtpUnsynchronised",
    "TollgateNtpKernelUnsynchronised",
    "TollgateMapNearlyFull",
    "TollgateDenyEventsLost",
    "TollgateNtpClientClockSkew",
];

const ALERTS: &str = "deploy/prometheus/tollgate-alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/tollgate-alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/tollgate.json";
const EXAMPLE_CONFIG: &str = "deploy/tollgate.yaml";
const UNIT: &str = "deploy/systemd/tollgate.service";
const SYSUSERS: &str = "deploy/systemd/tollgate.sysusers";
const TMPFILES: &str = "deploy/systemd/tollgate.tmpfiles";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs a tool, failing the test with an install hint when it is missing.
fn run(tool: &str, package: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{tool}` ({e}): install Debian's `{package}` package \
                 (scripts/setup.sh does); these tests never skip"
            )
        })
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch directory for this process, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("tollgate-deploy-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- PromQL

/// The metric names a PromQL expression selects. A small lexer, enough for
/// the expressions we write: it skips strings, label matchers `{...}`,
/// ranges `[...]`, Grafana variables, numbers and durations, keywords and
/// their label lists, and function and aggregation names (an identifier
/// followed by `(`). What is left is metric names.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Operators, literals, and the aggregations, which may take `by (...)`
    // or `without (...)` before their parenthesis.
    const KEYWORDS: &[&str] = &[
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // The index just past the bracket closing the one at `open`.
    let skip_group = |open: usize, close: char| {
        let mut i = open + 1;
        let mut quote = None;
        while i < chars.len() {
            match (quote, chars[i]) {
                (Some(_), '\\') => i += 1,
                (Some(q), c) if c == q => quote = None,
                (None, '"' | '\'' | '`') => quote = Some(chars[i]),
                (None, c) if c == close => return i + 1,
                _ => {}
            }
            i += 1;
        }
        panic!("unclosed `{}` in {expr:?}", chars[open]);
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            // A string outside a matcher: find its end the same way.
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if c == '{' {
            i = skip_group(i, '}');
        } else if c == '[' {
            i = skip_group(i, ']');
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(i, '}');
            } else {
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let calls = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if calls {
                    i = skip_group(next, ')');
                }
            } else if !KEYWORDS.contains(&word.as_str()) && !calls {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_promql_lexer_finds_exactly_the_metric_names() {
    let names = |e| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            "topk(10, sum by (instance, group, rule) (rate(tollgate_rule_packets_total{group=~\"$group\", \
             rule!=\"a{b}\"}[$__range])) * on (instance, group, rule) group_left (file, line) \
             max by (instance, group, rule, file, line) (tollgate_rule_info{action=\"deny\"}))"
        ),
        ["tollgate_rule_info", "tollgate_rule_packets_total"]
    );
    assert_eq!(
        names("time() - tollgate_policy_last_reload_timestamp_seconds > 1.5e3 and up offset 5m"),
        ["tollgate_policy_last_reload_timestamp_seconds", "up"]
    );
    assert_eq!(
        names("sum without (verdict) (rate(foo:bar[5m] offset 1h)) or vector(0) * ${x}"),
        ["foo:bar"]
    );
    assert_eq!(names("a * on (x) group_left b unless c"), ["a", "b", "c"]);
    assert_eq!(
        names("sum without (verdict) (rate(a[5m])) > max(b) by (group)"),
        ["a", "b"]
    );
}

// ---------------------------------------------------------------- alerts

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    pending: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn alert_rules() -> Vec<AlertRule> {
    let file: RuleFile = yaml_serde::from_str(&read(ALERTS)).expect("parse the alert rules");
    assert_eq!(
        file.groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        ["tollgate"],
        "one rule group, `tollgate`"
    );
    file.groups.into_iter().flat_map(|g| g.rules).collect()
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = run("promtool", "prometheus", &["check", "rules", ALERTS]);
    assert_success("promtool check rules", &out);
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let out = run("promtool", "prometheus", &["test", "rules", ALERT_TESTS]);
    assert_success("promtool test rules", &out);
}

/// Each alert is tested both ways: some evaluation expects it to fire and
/// some expects silence, so a rule that always or never fires is caught.
#[test]
fn every_alert_has_a_firing_and_a_quiet_test_case() {
    #[derive(Deserialize)]
    struct TestFile {
        tests: Vec<TestGroup>,
    }
    #[derive(Deserialize)]
    struct TestGroup {
        #[serde(default)]
        alert_rule_test: Vec<AlertTest>,
    }
    #[derive(Deserialize)]
    struct AlertTest {
        alertname: String,
        #[serde(default)]
        exp_alerts: Vec<yaml_serde::Value>,
    }
    let file: TestFile = yaml_serde::from_str(&read(ALERT_TESTS)).expect("parse the alert tests");
    let cases: Vec<AlertTest> = file
        .tests
        .into_iter()
        .flat_map(|t| t.alert_rule_test)
        .collect();
    for rule in alert_rules() {
        let mine = cases.iter().filter(|c| c.alertname == rule.alert);
        let (firing, quiet): (Vec<_>, Vec<_>) = mine.partition(|c| !c.exp_alerts.is_empty());
        assert!(
            !firing.is_empty(),
            "{}: no test case where it fires",
            rule.alert
        );
        assert!(
            !quiet.is_empty(),
            "{}: no test case where it stays quiet",
            rule.alert
        );
    }
}

/// The headings of the README, as GitHub makes them into anchors.
fn readme_anchors() -> BTreeSet<String> {
    read("README.md")
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn alerts_carry_severity_annotations_and_a_runbook_that_exists() {
    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|r| r.alert.as_str()).collect();
    for required in REQUIRED_ALERTS {
        assert!(names.contains(required), "alert {required} is missing");
    }
    let anchors = readme_anchors();
    let mut bases = BTreeSet::new();
    for rule in &rules {
        let severity = rule.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{}: severity must be critical or warning, is {severity:?}",
            rule.alert
        );
        assert!(
            rule.pending.is_some(),
            "{}: no `for:`, one bad scrape would page",
            rule.alert
        );
        for key in ["summary", "description", "runbook", "runbook_url"] {
            assert!(
                rule.annotations.contains_key(key),
                "{}: no {key} annotation",
                rule.alert
            );
        }
        let runbook = &rule.annotations["runbook"];
        let anchor = runbook
            .strip_prefix("README.md#")
            .unwrap_or_else(|| panic!("{}: runbook {runbook} is not a README section", rule.alert));
        assert!(
            anchors.contains(anchor),
            "{}: runbook {runbook}: the README has no such heading",
            rule.alert
        );
        // The conventional annotation: an absolute link to the same section.
        let url = &rule.annotations["runbook_url"];
        let (base, url_anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{}: runbook_url {url} has no anchor", rule.alert));
        assert!(
            base.starts_with("https://") && base.ends_with("/README.md"),
            "{}: runbook_url {url} is not an absolute link to a README",
            rule.alert
        );
        assert_eq!(
            url_anchor, anchor,
            "{}: runbook_url and runbook differ",
            rule.alert
        );
        bases.insert(base.to_string());
    }
    assert_eq!(
        bases.len(),
        1,
        "every runbook_url starts with one base, so operators change it in one substitution: {bases:?}"
    );
    let documented = read(ALERTS);
    let base = bases.first().unwrap();
    assert!(
        documented.contains(&format!("#   {base}\n")),
        "the header of {ALERTS} names the base {base} to substitute"
    );
}

// ---------------------------------------------------------------- dashboard

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL expression in the dashboard, labelled for messages: panel
/// targets, template variable queries and annotation queries.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {}: a target without expr", panel["title"]));
            queries.push((
                format!("panel {} target {}", panel["title"], target["refId"]),
                expr.to_string(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().unwrap();
            // label_values(selector, label): only the selector is PromQL.
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _label)| selector)
                .unwrap_or_else(|| panic!("variable {}: not label_values(...)", variable["name"]));
            queries.push((
                format!("variable {}", variable["name"]),
                selector.to_string(),
            ));
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = annotation["expr"].as_str() {
            queries.push((
                format!("annotation {}", annotation["name"]),
                expr.to_string(),
            ));
        }
    }
    queries
}

#[test]
fn dashboard_queries_use_only_contract_metrics() {
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "only {} queries found", queries.len());
    for (whence, expr) in queries {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{whence}: no metric in {expr:?}");
        for name in names {
            assert!(
                is_contract_metric(&name),
                "{whence}: `{name}` is not a Tollgate metric (in {expr:?})"
            );
        }
    }
}

#[test]
fn alerts_use_only_contract_metrics() {
    for rule in alert_rules() {
        for name in metric_names(&rule.expr) {
            assert!(
                is_contract_metric(&name),
                "{}: `{name}` is not a Tollgate metric",
                rule.alert
            );
        }
    }
}

#[test]
fn every_exported_metric_is_on_the_dashboard() {
    let used: BTreeSet<&str> = dashboard_queries(&dashboard())
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .filter_map(|name| family_of(&name))
        .collect();
    let missing: Vec<&str> = METRICS
        .iter()
        .chain(DNS_METRICS)
        .copied()
        .filter(|m| !used.contains(*m))
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}

/// A family the daemon exports (the DNS forwarder's with `dns.listen`), or
/// Prometheus's own.
fn is_contract_metric(name: &str) -> bool {
    family_of(name).is_some() || PROMETHEUS_METRICS.contains(&name)
}

/// promtool parses every dashboard query, with Grafana's variables replaced
/// by values of their kind, as the expression of a recording rule.
#[test]
fn dashboard_queries_are_valid_promql() {
    const VARIABLES: &[(&str, &str)] = &[
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "6h"),
        ("$job", ".*"),
        ("$instance", ".*"),
        ("$group", ".*"),
    ];
    let rules: Vec<Value> = dashboard_queries(&dashboard())
        .into_iter()
        .enumerate()
        .map(|(n, (whence, mut expr))| {
            for (variable, value) in VARIABLES {
                expr = expr.replace(variable, value);
            }
            assert!(
                !expr.contains('$'),
                "{whence}: unknown variable in {expr:?}"
            );
            serde_json::json!({ "record": format!("dashboard:query_{n}"), "expr": expr })
        })
        .collect();
    let scratch = Scratch::new("promql");
    let file = scratch.0.join("dashboard-queries.yml");
    // JSON is YAML, which promtool reads.
    let text = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(&file, text.to_string()).unwrap();
    let out = run(
        "promtool",
        "prometheus",
        &["check", "rules", file.to_str().unwrap()],
    );
    assert_success("promtool check rules (dashboard queries)", &out);
}

#[test]
fn dashboard_has_its_variables_and_a_sound_structure() {
    let dashboard = dashboard();
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    assert!(schema >= 39, "schemaVersion {schema} < 39");

    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let datasource = variables.get("datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for name in ["job", "instance", "group"] {
        let v = variables
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` variable"));
        assert_eq!(v["type"], "query", "{name}");
        let query = v["query"]["query"].as_str().unwrap();
        assert!(
            query.starts_with("label_values(") && query.ends_with(&format!(", {name})")),
            "{name}: {query}"
        );
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
    }

    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {}: use the datasource variable",
            panel["title"]
        );
        let targets = panel["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "panel {}: no query",
            panel["title"]
        );
        for target in targets.unwrap() {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {}: target {}",
                panel["title"], target["refId"]
            );
        }
    }
}

// ---------------------------------------------------------------- config

/// Every key of the controller's configuration (`userspace/src/config/`),
/// by its last path component. The example documents each one, set or as a
/// commented alternative; a new key belongs here and in the example.
const CONFIG_KEYS: &[&str] = &[
    "interfaces",
    "attach",
    "policy-dir",
    "metrics",
    "listen",
    "rule-series-limit",
    "ntp",
    "reference",
    "servers",
    "stratum",
    "holdover",
    "poll-interval",
    "allow",
    "rate-limit",
    "interval",
    "burst",
    "leak",
    "max-rate",
    "workers",
    "deny-events",
    "rate",
    "reject-replies",
    "on-exit",
    "pin-dir",
    "control-socket",
    "limits",
    "device-addresses",
    "device-prefixes",
    "destinations",
    "counters",
    "rule-records",
    "fragments",
];

#[test]
fn example_config_parses_with_the_controller_parser() {
    let path = repo().join(EXAMPLE_CONFIG);
    let config = Config::load(&path).unwrap_or_else(|d| panic!("{d}"));
    assert!(!config.interfaces.is_empty());
    assert_eq!(
        config.ntp.listen,
        ["100.127.0.123:123".parse().unwrap()],
        "the example serves NTP on Soracom's private NTP address"
    );
    assert_eq!(config.on_exit, OnExit::Keep);
    assert_eq!(
        config.control_socket,
        Path::new("/run/tollgate/control.sock"),
        "the unit's RuntimeDirectory holds the control socket"
    );

    let text = read(EXAMPLE_CONFIG);
    let documented: BTreeSet<&str> = text
        .lines()
        .map(|l| l.trim_start().trim_start_matches('#').trim_start())
        .filter_map(|l| l.split_once(':').map(|(key, _)| key))
        .collect();
    for key in CONFIG_KEYS {
        assert!(
            documented.contains(key),
            "{EXAMPLE_CONFIG} does not document `{key}`"
        );
    }
}

// ---------------------------------------------------------------- systemd

#[test]
fn systemd_unit_is_a_notify_service_with_reload_and_bounded_capabilities() {
    let unit = read(UNIT);
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let value = |key: &str| {
        let values: Vec<&str> = settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(values.len(), 1, "{key}= set {} times", values.len());
        values[0]
    };
    assert_eq!(value("Type"), "notify");
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(
        value("ExecStart"),
        "/usr/bin/tollgate run --config /etc/tollgate/tollgate.yaml"
    );
    // An unprivileged user with exactly the capabilities the daemon needs
    // (tests/tests/least_privilege.rs runs it so, and without each one).
    assert_eq!(value("User"), "tollgate");
    assert_eq!(value("Group"), "tollgate");
    let capabilities = [
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_PERFMON",
        "CAP_NET_BIND_SERVICE",
    ];
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let set: BTreeSet<&str> = value(key).split_whitespace().collect();
        assert_eq!(set, capabilities.into_iter().collect(), "{key}");
    }
    assert_eq!(value("NoNewPrivileges"), "yes");
    // Writable: the pin directory, which tollgate.tmpfiles makes the user's
    // before every start, and the control socket's runtime directory.
    assert_eq!(value("ReadWritePaths"), "/sys/fs/bpf/tollgate");
    assert_eq!(
        value("ExecStartPre"),
        "+/usr/bin/systemd-tmpfiles --create tollgate.conf"
    );
    assert_eq!(value("RuntimeDirectory"), "tollgate");
    let config = Config::load(&repo().join(EXAMPLE_CONFIG)).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(config.pin_dir, Path::new("/sys/fs/bpf/tollgate"));
    assert_eq!(
        tmpfiles_lines(),
        [
            ("z", "/sys/fs/bpf", "0711", "root", "root"),
            ("d", "/sys/fs/bpf/tollgate", "0700", "tollgate", "tollgate"),
            ("Z", "/sys/fs/bpf/tollgate", "-", "tollgate", "tollgate"),
        ]
        .map(|(t, p, m, u, g)| [t, p, m, u, g].map(String::from).to_vec())
    );

    // systemd's own parser: an unknown or misspelt directive is a warning,
    // so any output fails. The binary is not installed here; point
    // ExecStart at one that is, the only change.
    let scratch = Scratch::new("unit");
    let copy = scratch.0.join("tollgate.service");
    std::fs::write(
        &copy,
        unit.replace("ExecStart=/usr/bin/tollgate ", "ExecStart=/bin/true "),
    )
    .unwrap();
    let out = run(
        "systemd-analyze",
        "systemd",
        &["verify", copy.to_str().unwrap()],
    );
    assert_success("systemd-analyze verify", &out);
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify complains:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The entries of tollgate.tmpfiles: type, path, mode, user, group.
fn tmpfiles_lines() -> Vec<Vec<String>> {
    read(TMPFILES)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let fields: Vec<String> = l.split_whitespace().map(String::from).collect();
            assert_eq!(fields.len(), 6, "{TMPFILES}: {l}");
            fields[..5].to_vec()
        })
        .collect()
}

/// `systemd-analyze security` rates the unit's exposure from 0 (all of
/// systemd's sandboxing) to 10 (none): 2.5 or lower is what we ship.
#[test]
fn systemd_unit_exposure_is_at_most_2_5() {
    let out = run(
        "systemd-analyze",
        "systemd",
        &["security", "--offline=true", "--no-pager", UNIT],
    );
    assert_success("systemd-analyze security", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for tollgate.service:"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    let exposure: f64 = line
        .rsplit_once(':')
        .unwrap()
        .1
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"));
    eprintln!("{line}");
    assert!(
        exposure <= 2.5,
        "exposure {exposure} is above 2.5; what counts against it:\n{}",
        text.lines()
            .filter(|l| l.starts_with('✗'))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The sysusers file makes a system user and group `tollgate` with no
/// login, applied here to a scratch root instead of the host's /etc.
#[test]
fn sysusers_file_creates_a_system_user_without_login() {
    let scratch = Scratch::new("sysusers");
    std::fs::create_dir_all(scratch.0.join("etc")).unwrap();
    let root = format!("--root={}", scratch.0.display());
    // An absolute path: with --root, a relative one is looked up below it.
    let file = repo().join(SYSUSERS);
    let out = run(
        "systemd-sysusers",
        "systemd",
        &[&root, file.to_str().unwrap()],
    );
    assert_success("systemd-sysusers", &out);
    let passwd = std::fs::read_to_string(scratch.0.join("etc/passwd")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("tollgate:"))
        .unwrap_or_else(|| panic!("no tollgate user in\n{passwd}"))
        .split(':')
        .collect();
    let uid: u32 = user[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "a system user: uid {uid}");
    assert!(user[6].ends_with("nologin"), "no login shell: {}", user[6]);
    let group = std::fs::read_to_string(scratch.0.join("etc/group")).unwrap();
    let gid = group
        .lines()
        .find_map(|l| l.strip_prefix("tollgate:x:"))
        .unwrap_or_else(|| panic!("no tollgate group in\n{group}"));
    assert_eq!(gid.split(':').next(), Some(user[3]), "its own group");
}
