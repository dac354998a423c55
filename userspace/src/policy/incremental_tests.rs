//! The incremental load (parse cache, group cache) reuses what an edit
//! did not touch. That it says what a fresh load says, after any sequence
//! of edits, is the property test in `reload/incremental_tests.rs`.

use std::fs;

use super::*;

fn outcome(
    result: Result<Loaded, Vec<crate::diagnostic::Diagnostic>>,
) -> Result<Policy, Vec<String>> {
    match result {
        Ok(loaded) => Ok(loaded.policy),
        Err(errors) => Err(errors.iter().map(ToString::to_string).collect()),
    }
}

fn environment() -> Environment {
    Environment {
        gateway: vec!["10.64.0.1".parse().unwrap()],
        ntp: vec!["100.127.0.123".parse().unwrap()],
    }
}

/// Editing one file of many validates only that file's groups, and an
/// invalid edit, reported as a fresh load reports it, leaves the cache
/// able to give the policy back at once when the edit is undone.
#[test]
fn an_edit_validates_only_the_groups_of_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let env = environment();
    let group = |g: usize, port: u16| {
        format!(
            "groups:\n  g{g}:\n    devices: [10.0.{g}.0/24]\n    default: deny\n    rules:\n      \
             - allow: {{to: l0, proto: tcp, ports: [{port}]}}\n"
        )
    };
    fs::write(
        dir.path().join("lists.yaml"),
        "lists:\n  l0: [203.0.113.0/24]\n",
    )
    .unwrap();
    for g in 0..5 {
        fs::write(dir.path().join(format!("g{g}.yaml")), group(g, 443)).unwrap();
    }
    let mut cache = ParseCache::default();
    let load = |cache: &mut ParseCache| {
        outcome(load_cached(dir.path(), &env, &ReadLimits::default(), cache))
    };
    let first = load(&mut cache).unwrap();
    assert_eq!(cache.last_load().groups_validated, Some(5));

    fs::write(dir.path().join("g2.yaml"), group(2, 8883)).unwrap();
    load(&mut cache).unwrap();
    let work = cache.last_load();
    assert_eq!((work.files_parsed, work.groups_validated), (1, Some(1)));

    // A device of g1 in g2 too: an error, from the full check.
    fs::write(
        dir.path().join("g2.yaml"),
        group(2, 8883).replace("10.0.2.0/24", "10.0.1.0/24"),
    )
    .unwrap();
    let errors = load(&mut cache).unwrap_err();
    assert_eq!(cache.last_load().groups_validated, None);
    assert!(
        errors[0].contains("also a device prefix of group \"g1\""),
        "{errors:?}"
    );

    // Undone: back to the first policy, validating only the edited file.
    fs::write(dir.path().join("g2.yaml"), group(2, 443)).unwrap();
    assert_eq!(load(&mut cache).unwrap(), first);
    assert_eq!(cache.last_load().groups_validated, Some(1));

    // A list changes under every rule: every group is validated again.
    fs::write(
        dir.path().join("lists.yaml"),
        "lists:\n  l0: [203.0.113.0/25]\n",
    )
    .unwrap();
    load(&mut cache).unwrap();
    assert_eq!(cache.last_load().groups_validated, Some(5));
}
