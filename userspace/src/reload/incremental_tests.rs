//! The incremental preparation (parse cache, group cache and device
//! counts, compiled fragments) against one from scratch, after random
//! sequences of edits to a policy directory: files written, rewritten,
//! broken and removed, groups moved between files or defined twice,
//! devices shared between groups, lists changed under the rules that use
//! them, the environment changed. Every step must give exactly what a fresh
//! preparation gives: the policy, its warnings, its `expect:` cases and its
//! tables, or the same errors.

use std::{fs, path::Path};

use proptest::{collection::vec, prelude::*};

use super::{PrepareCache, Prepared, prepare};
use crate::{
    config::Limits,
    diagnostic::Diagnostic,
    policy::{Environment, Expectation, Policy},
    tables::CompiledPolicy,
};

/// What a preparation says, in a comparable form.
type Outcome = Result<(Policy, Vec<String>, Vec<Expectation>, CompiledPolicy), Vec<String>>;

fn outcome(result: Result<Prepared, Vec<Diagnostic>>) -> Outcome {
    let text = |d: Vec<Diagnostic>| d.iter().map(ToString::to_string).collect();
    match result {
        Ok(p) => Ok((p.policy, text(p.warnings), p.expectations, p.tables)),
        Err(errors) => Err(text(errors)),
    }
}

#[derive(Clone, Debug)]
struct RuleSpec {
    action: u8,
    to: Vec<u8>,
    proto: u8,
    port: Option<u32>,
}

#[derive(Clone, Debug)]
struct GroupSpec {
    name: u8,
    devices: Vec<u8>,
    default: u8,
    rules: Vec<RuleSpec>,
}

/// File 0 holds the lists (and `unknown-devices`), the others groups: most
/// edits give a valid policy, and errors come one at a time.
#[derive(Clone, Debug)]
enum FileSpec {
    Groups(Vec<GroupSpec>),
    Lists {
        lists: Vec<(u8, Vec<u8>)>,
        unknown_allow: Option<bool>,
    },
    /// Not YAML.
    Broken,
}

#[derive(Clone, Debug)]
enum Edit {
    Write(u8, FileSpec),
    Remove(u8),
    /// The other [`environment`].
    SwitchEnvironment,
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        0u8..3,
        vec(0u8..24, 1..3),
        0u8..4,
        prop::option::of(0u32..24),
    )
        .prop_map(|(action, to, proto, port)| RuleSpec {
            action,
            to,
            proto,
            // Mostly good ports; 70000 is an error.
            port: port.map(|p| if p == 0 { 70_000 } else { 440 + p % 4 }),
        })
}

fn group() -> impl Strategy<Value = GroupSpec> {
    // Eight names over five files: now and then a group is defined twice.
    (0u8..8, vec(0u8..24, 0..4), 0u8..24, vec(rule(), 0..4)).prop_map(
        |(name, devices, default, rules)| GroupSpec {
            name,
            devices,
            default,
            rules,
        },
    )
}

fn file(f: u8) -> BoxedStrategy<FileSpec> {
    let spec = if f == 0 {
        (
            // l0 to l2, now and then one fewer.
            vec(vec(0u8..6, 1..4), 3),
            0u8..8,
            prop::option::of(any::<bool>()),
        )
            .prop_map(|(items, drop, unknown_allow)| {
                let lists = (0u8..3)
                    .zip(items)
                    .filter(|(name, _)| *name != drop)
                    .collect();
                FileSpec::Lists {
                    lists,
                    unknown_allow,
                }
            })
            .boxed()
    } else {
        vec(group(), 0..3)
            .prop_map(|mut groups| {
                // A name twice in one file is a YAML duplicate key.
                groups.sort_by_key(|g| g.name);
                groups.dedup_by_key(|g| g.name);
                FileSpec::Groups(groups)
            })
            .boxed()
    };
    prop_oneof![12 => spec, 1 => Just(FileSpec::Broken)].boxed()
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        8 => (0u8..6).prop_flat_map(|f| file(f).prop_map(move |spec| Edit::Write(f, spec))),
        2 => (0u8..6).prop_map(Edit::Remove),
        1 => Just(Edit::SwitchEnvironment),
    ]
}

/// Device `i` of group `g`: its own /32s, a /29 over them, now and then
/// an address every group may list (an error when two do) or a typo.
fn device(g: u8, i: u8) -> String {
    match i {
        0 => "10.9.9.9".into(),
        1 => "not-an-address".into(),
        2..8 => format!("10.0.{g}.0/29"),
        i => format!("10.0.{g}.{}", i % 4),
    }
}

fn destination(i: u8) -> String {
    match i {
        // l3 is never defined.
        0 => "l3".into(),
        1..12 => format!("l{}", i % 3),
        12..15 => "any".into(),
        15..17 => "gateway".into(),
        i => format!("198.51.100.{}/31", (i % 4) * 2),
    }
}

fn text(spec: &FileSpec) -> String {
    let mut out = String::new();
    match spec {
        FileSpec::Broken => out += "groups: [\n",
        FileSpec::Lists {
            lists,
            unknown_allow,
        } => {
            if let Some(allow) = unknown_allow {
                let verdict = if *allow { "allow" } else { "deny" };
                out += &format!("unknown-devices: {verdict}\n");
            }
            if !lists.is_empty() {
                out += "lists:\n";
            }
            for (name, items) in lists {
                let items: Vec<String> = items
                    .iter()
                    .map(|i| format!("\"203.0.113.{}/32\"", i % 4))
                    .collect();
                out += &format!("  l{name}: [{}]\n", items.join(", "));
            }
        }
        FileSpec::Groups(groups) => {
            if !groups.is_empty() {
                out += "groups:\n";
            }
            for g in groups {
                out += &group_text(g);
            }
        }
    }
    out
}

fn group_text(g: &GroupSpec) -> String {
    let mut out = format!("  g{}:\n", g.name);
    let devices: Vec<String> = g.devices.iter().map(|&d| device(g.name, d)).collect();
    out += &format!("    devices: [{}]\n", devices.join(", "));
    match g.default {
        0 => {}
        1 => out += "    default: maybe\n",
        2..12 => out += "    default: deny\n",
        _ => out += "    default: allow\n",
    }
    if g.rules.is_empty() {
        return out;
    }
    out += "    rules:\n";
    for r in &g.rules {
        let action = ["allow", "deny", "reject"][r.action as usize];
        let to: Vec<String> = r.to.iter().map(|&t| destination(t)).collect();
        let proto = ["", ", proto: tcp", ", proto: udp", ", proto: any"][r.proto as usize];
        // Ports only where they may be: most rules are valid.
        let ports = match (r.proto, r.port) {
            (1 | 2, Some(p)) | (_, Some(p @ 70_000)) => format!(", ports: [{p}]"),
            _ => String::new(),
        };
        out += &format!(
            "      - {action}: {{to: [{}]{proto}{ports}}}\n",
            to.join(", ")
        );
    }
    out
}

/// The environment, and another one: `gateway` resolves anew, and without
/// NTP addresses no group has a built-in NTP allow.
fn environment(switched: bool) -> Environment {
    if switched {
        Environment {
            gateway: vec!["10.64.0.2".parse().unwrap()],
            ntp: Vec::new(),
        }
    } else {
        Environment {
            gateway: vec!["10.64.0.1".parse().unwrap()],
            ntp: vec!["100.127.0.123".parse().unwrap()],
        }
    }
}

fn path(dir: &Path, f: u8) -> std::path::PathBuf {
    // Two levels, so that files move in path order too.
    dir.join(format!(
        "{}/f{f}.yaml",
        if f.is_multiple_of(2) { "a" } else { "b" }
    ))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn an_incremental_preparation_says_what_a_fresh_one_says(
        start in (file(0), vec(file(1), 1..4)),
        edits in vec(edit(), 1..14),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["a", "b"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let (lists, groups) = start;
        fs::write(path(dir.path(), 0), text(&lists)).unwrap();
        for (f, spec) in groups.iter().enumerate() {
            fs::write(path(dir.path(), f as u8 + 1), text(spec)).unwrap();
        }
        let mut cache = PrepareCache::default();
        // Low enough that compiling fails now and then.
        let limits = Limits {
            destinations: 40,
            ..Limits::default()
        };
        let mut switched = false;
        for (step, edit) in std::iter::once(None).chain(edits.iter().map(Some)).enumerate() {
            match edit {
                None => {}
                Some(Edit::Write(f, spec)) => fs::write(path(dir.path(), *f), text(spec)).unwrap(),
                Some(Edit::Remove(f)) => {
                    let _ = fs::remove_file(path(dir.path(), *f));
                }
                Some(Edit::SwitchEnvironment) => switched = !switched,
            }
            let env = environment(switched);
            let fresh = outcome(prepare(dir.path(), &env, &limits, &mut PrepareCache::default()));
            let cached = outcome(prepare(dir.path(), &env, &limits, &mut cache));
            prop_assert_eq!(&cached, &fresh, "step {}: {:?}", step, edit);
            // A valid policy never needs the full check.
            prop_assert_eq!(
                cache.last_work().0.groups_validated.is_some(),
                fresh.is_ok(),
                "step {}", step
            );
        }
    }
}
