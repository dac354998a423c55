//! `tollgate check` on hostile input: arbitrary bytes as the files of a
//! policy directory, loaded, validated and compiled as `check` does, with
//! every diagnostic rendered as text and as JSON.
//!
//! The input is split at NUL bytes (which no YAML file holds) into at most
//! [`MAX_FILES`] files, each read lossily as UTF-8; an even-length input is
//! checked with `gateway` and `ntp` addresses, an odd one without. It must
//! never panic, and an invalid policy must say why: a rejected policy has at
//! least one error. Memory is bounded by libFuzzer's `-rss_limit_mb` (and
//! `-malloc_limit_mb`, which defaults to it; see scripts/fuzz-smoke.sh).

#![no_main]

use std::{net::IpAddr, path::PathBuf};

use libfuzzer_sys::fuzz_target;
use tollgate::{
    compile::compile,
    config::Limits,
    diagnostic::Diagnostic,
    policy::{Environment, Source, from_sources},
};

/// A policy directory of a few files is enough to reach the cross-file
/// checks (names defined twice, `unknown-devices` set twice).
const MAX_FILES: usize = 4;

fuzz_target!(|data: &[u8]| {
    let sources: Vec<Source> = data
        .split(|&b| b == 0)
        .take(MAX_FILES)
        .enumerate()
        .map(|(i, bytes)| Source {
            path: PathBuf::from(format!("policies/{i}.yaml")),
            text: String::from_utf8_lossy(bytes).into_owned(),
        })
        .collect();
    // `check` with `--gateway`/`--ntp` (or `--config`), or without: then
    // the keywords resolve to nothing. The input's length picks, so both
    // are reached from any policy text.
    let env = if data.len() % 2 == 0 {
        Environment {
            gateway: vec![ip("10.64.0.1"), ip("fd00:64::1")],
            ntp: vec![ip("100.127.0.123")],
        }
    } else {
        Environment::default()
    };
    let loaded = match from_sources(&sources, &env) {
        Ok(loaded) => loaded,
        Err(diagnostics) => return rejected(&diagnostics),
    };
    assert!(
        !loaded.warnings.iter().any(Diagnostic::is_error),
        "a valid policy came with errors: {:#?}",
        loaded.warnings
    );
    render(&loaded.warnings);
    let tables = match compile(&loaded.policy, &Limits::default()) {
        Ok(tables) => tables,
        Err(diagnostics) => return rejected(&diagnostics),
    };
    // What `check` summarises: every index in the tables must resolve.
    assert_eq!(tables.groups.len(), loaded.policy.groups.len() + 1);
    for destination in &tables.destinations {
        assert!((destination.ruleset as usize) < tables.rulesets.len());
        assert!((destination.group as usize) < tables.groups.len());
    }
    for rules in tables.rulesets.iter() {
        for rule in rules {
            assert!((rule.counter as usize) < tables.counters.len());
        }
    }
    for group in &tables.groups {
        assert!((group.default_counter as usize) < tables.counters.len());
    }
});

/// What `check` prints for an invalid policy: there must be something.
fn rejected(diagnostics: &[Diagnostic]) {
    assert!(
        diagnostics.iter().any(Diagnostic::is_error),
        "a rejected policy without an error: {diagnostics:#?}"
    );
    render(diagnostics);
}

/// `check` prints each diagnostic, or serialises them (`--format json`).
fn render(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        let text = d.to_string();
        assert!(text.starts_with(&d.file), "{text}");
        serde_json::to_string(d).expect("a diagnostic serialises");
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a literal address")
}
