//! `verdict_diff` against the model: for random pairs of policies and
//! random packets, the model's outcome (verdict and deciding rule) changes
//! exactly where the diff says, from and to what it says. Pairs are either
//! two unrelated policies or one policy and a small edit of it (a rule
//! dropped or flipped, a default or mode changed, a device moved), the
//! common case in review.

use std::{cell::RefCell, collections::BTreeMap};

use proptest::{prelude::*, sample::Index};
use testkit::random;
use tollgate::{
    compile::compile,
    config::Limits,
    model,
    policy::{Action, Policy},
    verdict_diff::{self, Side, cells::outcome},
};

const PAIRS: u32 = 400;
const PACKETS_PER_SIDE: usize = 60;

/// A small edit of `policy`, chosen by `what` and `at`.
fn edit(mut policy: Policy, what: u8, at: Index) -> Policy {
    // Through the three actions in turn; `unknown-devices` is never reject.
    let flip = |a: Action| match a {
        Action::Allow => Action::Deny,
        Action::Deny => Action::Reject,
        Action::Reject => Action::Allow,
    };
    let flip_unknown = |a: Action| match a {
        Action::Allow => Action::Deny,
        Action::Deny | Action::Reject => Action::Allow,
    };
    let g = at.index(policy.groups.len());
    let others = policy.groups.len();
    let group = std::sync::Arc::make_mut(&mut policy.groups[g]);
    match what {
        0 if !group.rules.is_empty() => {
            group.rules.remove(at.index(group.rules.len()));
        }
        1 if !group.rules.is_empty() => {
            let r = at.index(group.rules.len());
            group.rules[r].action = flip(group.rules[r].action);
        }
        2 => group.default = flip(group.default),
        3 => group.audit = !group.audit,
        4 if !group.devices.is_empty() && others > 1 => {
            let device = group.devices.remove(0);
            std::sync::Arc::make_mut(&mut policy.groups[(g + 1) % others])
                .devices
                .push(device);
        }
        _ => policy.unknown_devices = flip_unknown(policy.unknown_devices),
    }
    policy
}

fn pair() -> impl Strategy<Value = (Policy, Policy)> {
    prop_oneof![
        (random::policy(), random::policy()),
        (random::policy(), 0..6u8, any::<Index>())
            .prop_map(|(p, what, at)| (p.clone(), edit(p, what, at))),
    ]
}

#[test]
fn the_model_changes_exactly_where_the_diff_says() {
    let seen: RefCell<BTreeMap<&'static str, u64>> = RefCell::default();
    random::runner(PAIRS)
        .run(
            &pair().prop_flat_map(|(old, new)| {
                let packets = (
                    random::packets(&old, PACKETS_PER_SIDE),
                    random::packets(&new, PACKETS_PER_SIDE),
                );
                (Just(old), Just(new), packets)
            }),
            |(old, new, (mut packets, more))| {
                packets.extend(more);
                let old_tables = compile(&old, &Limits::default()).expect("old compiles");
                let new_tables = compile(&new, &Limits::default()).expect("new compiles");
                let diff = verdict_diff::diff(
                    Side {
                        policy: &old,
                        tables: &old_tables,
                    },
                    Side {
                        policy: &new,
                        tables: &new_tables,
                    },
                );
                let mut seen = seen.borrow_mut();
                for packet in &packets {
                    let (before, after) =
                        (outcome(&old_tables, packet), outcome(&new_tables, packet));
                    let groups = (
                        model::verdict(&old_tables, packet).group_name,
                        model::verdict(&new_tables, packet).group_name,
                    );
                    let changes = diff.changes_for(&groups.0, &groups.1, packet.src);
                    let context =
                        || format!("{packet:?}: {before:?} → {after:?} in {groups:?}\n{diff:#?}");
                    if groups.0 != groups.1 {
                        prop_assert!(changes.is_some(), "moved source not listed: {}", context());
                        *seen.entry("moved").or_default() += 1;
                    }
                    let holding: Vec<_> = changes
                        .iter()
                        .flat_map(|c| c.verdicts.iter().chain(&c.reattributed))
                        .filter(|c| c.covers(packet))
                        .collect();
                    if before == after {
                        prop_assert!(holding.is_empty(), "unchanged, yet reported: {}", context());
                        continue;
                    }
                    prop_assert_eq!(holding.len(), 1, "{}", context());
                    let change = holding[0];
                    prop_assert_eq!(
                        (&change.old, &change.new),
                        (&before, &after),
                        "{}",
                        context()
                    );
                    let in_verdicts = changes.is_some_and(|c| c.verdicts.contains(change));
                    prop_assert_eq!(in_verdicts, before.verdict != after.verdict);
                    *seen
                        .entry(if in_verdicts {
                            "verdict"
                        } else {
                            "reattributed"
                        })
                        .or_default() += 1;
                }
                Ok(())
            },
        )
        .unwrap();
    let seen = seen.into_inner();
    for what in ["moved", "verdict", "reattributed"] {
        assert!(
            seen.get(what).copied().unwrap_or(0) > 0,
            "never exercised: {what} ({seen:?})"
        );
    }
}

/// The environment the golden pair is written for (the lab's).
const ENV: [&str; 4] = ["--gateway", "10.64.0.1", "--ntp", "100.127.0.123"];
const OLD: &str = "tests/policies/diff/old";
const NEW: &str = "tests/policies/diff/new";

/// `tollgate diff` of the golden pair in every format, against
/// `tests/golden/diff.{txt,json,github}` (`TOLLGATE_BLESS=1` rewrites them).
#[test]
fn diff_golden_outputs() {
    let golden = testkit::repo_root().join("tests/golden");
    let mut wrong = Vec::new();
    for (ext, format) in [("txt", "text"), ("json", "json"), ("github", "github")] {
        let mut args = vec!["diff", OLD, NEW, "--format", format];
        args.extend(ENV);
        let run = testkit::tollgate(&args);
        assert_eq!(run.status, 0, "{format}: {}", run.stderr);
        let path = golden.join(format!("diff.{ext}"));
        if testkit::blessing() {
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
    assert!(
        wrong.is_empty(),
        "golden mismatch (TOLLGATE_BLESS=1 rewrites):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn diff_exit_codes() {
    let run = |extra: &[&str]| {
        let mut args = vec!["diff"];
        args.extend(extra);
        args.extend(ENV);
        testkit::tollgate(&args)
    };
    // The same policy: nothing changes, even under --exit-code.
    let same = run(&[OLD, OLD, "--exit-code"]);
    assert_eq!(
        (same.status, same.stdout.as_str()),
        (0, "no verdict changes\n")
    );
    // Changes: 0, or 3 with --exit-code.
    assert_eq!(run(&[OLD, NEW]).status, 0);
    assert_eq!(run(&[OLD, NEW, "--exit-code"]).status, 3);
    // An invalid side: its diagnostics, status 1.
    let broken = run(&[OLD, "tests/policies/broken"]);
    assert_eq!(broken.status, 1);
    assert!(
        broken
            .stderr
            .contains("tests/policies/broken/meters.yaml:10:24:"),
        "{}",
        broken.stderr
    );
    // Neither a directory nor a revision: usage, status 2.
    let missing = run(&[OLD, "no-such-dir-or-revision"]);
    assert_eq!(missing.status, 2);
    assert!(
        missing
            .stderr
            .contains("neither a directory nor a policy at a git revision"),
        "{}",
        missing.stderr
    );
    // --max-lines bounds the lines and says how many are left out.
    let bounded = run(&[OLD, NEW, "--max-lines", "2"]);
    assert_eq!(bounded.stdout.lines().count(), 3, "{}", bounded.stdout);
    assert!(
        bounded
            .stdout
            .ends_with("… 11 more line(s) not shown (--max-lines)\n")
    );
    let json = run(&[OLD, NEW, "--max-lines", "2", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["truncated"], true);
    assert_eq!(report["omitted"], 9);
}

/// OLD and NEW as git revisions, `REV` (with --policy) and `REV:DIR`.
#[test]
fn diff_reads_git_revisions() {
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(repo.path())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    let policy = repo.path().join("site/policies/policy.yaml");
    std::fs::create_dir_all(policy.parent().unwrap()).unwrap();
    git(&["init", "-q"]);
    for side in [OLD, NEW] {
        std::fs::copy(testkit::repo_root().join(side).join("policy.yaml"), &policy).unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-qm", side]);
    }
    let in_repo = |cwd: &std::path::Path, args: &[&str]| {
        let output = std::process::Command::new(testkit::tollgate_binary())
            .args(args)
            .args(ENV)
            .current_dir(cwd)
            .output()
            .unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8(output.stdout).unwrap(),
        )
    };
    let expected =
        std::fs::read_to_string(testkit::repo_root().join("tests/golden/diff.txt")).unwrap();
    let site = repo.path().join("site");
    assert_eq!(
        in_repo(&site, &["diff", "HEAD~1", "HEAD", "--policy", "policies"]),
        (0, expected.clone())
    );
    assert_eq!(
        in_repo(
            repo.path(),
            &["diff", "HEAD~1:site/policies", "HEAD:site/policies"]
        ),
        (0, expected.clone())
    );
    // A revision against the work tree's directory.
    assert_eq!(
        in_repo(&site, &["diff", "HEAD~1", "policies"]),
        (0, expected)
    );
    let (status, _) = in_repo(&site, &["diff", "HEAD~5", "HEAD", "--policy", "policies"]);
    assert_eq!(status, 2);
}
