//! `tollgate check`: validate and compile a policy directory, and say so in
//! text, JSON, GitHub annotations or SARIF.

use std::process::ExitCode;

use serde::Serialize;
use tollgate::{diagnostic::Diagnostic, reload::Prepared};

use super::{
    CheckFormat, STRICT_WARNINGS, ci_formats, plural,
    policy_source::{Context, build},
    print_notes,
};

/// `check --format json`.
#[derive(Serialize)]
struct CheckReport<'a> {
    valid: bool,
    errors: Vec<&'a Diagnostic>,
    warnings: Vec<&'a Diagnostic>,
    notes: &'a [String],
    summary: Option<Summary>,
}

#[derive(Serialize)]
struct Summary {
    groups: usize,
    device_prefixes: usize,
    rules: usize,
    /// Rule entries over all (group, destination prefix) pairs, inherited
    /// ones included: the policy as the kernel matches it.
    compiled_entries: usize,
    /// (group, destination prefix) entries.
    destinations: usize,
    /// Distinct rule sets, and the entries they hold (what kernel memory
    /// holds, identical rule sets being shared).
    rulesets: usize,
    ruleset_entries: usize,
    counters: usize,
    warnings: usize,
}

pub(super) fn check(ctx: &Context, format: CheckFormat, strict: bool) -> ExitCode {
    let outcome = build(ctx);
    let (diagnostics, summary) = match &outcome {
        Ok(Prepared {
            policy,
            tables,
            warnings,
            ..
        }) => (
            warnings,
            Some(Summary {
                groups: policy.groups.len(),
                device_prefixes: policy.device_count(),
                rules: policy.rule_count(),
                compiled_entries: tables
                    .destinations
                    .iter()
                    .map(|d| tables.rulesets[d.ruleset as usize].len())
                    .sum(),
                destinations: tables.destinations.len(),
                rulesets: tables.rulesets.len(),
                ruleset_entries: tables.rulesets.entries(),
                counters: tables.counters.len(),
                warnings: warnings.len(),
            }),
        ),
        Err(diagnostics) => (diagnostics, None),
    };
    let (errors, warnings): (Vec<&Diagnostic>, Vec<&Diagnostic>) =
        diagnostics.iter().partition(|d| d.is_error());
    let dir = ctx.dir.display();
    let valid = summary.is_some();
    let warning_count = warnings.len();
    match format {
        CheckFormat::Json => {
            let report = CheckReport {
                valid,
                errors,
                warnings,
                notes: &ctx.notes,
                summary,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable")
            );
        }
        CheckFormat::Github => {
            print!("{}", ci_formats::github(diagnostics, &ctx.notes));
            print_summary(ctx, summary.as_ref(), errors.len(), warnings.len());
        }
        CheckFormat::Sarif => {
            let sarif = ci_formats::Sarif::new(diagnostics);
            println!(
                "{}",
                serde_json::to_string_pretty(&sarif).expect("serialisable")
            );
        }
        CheckFormat::Text => {
            print_notes(&ctx.notes);
            for d in diagnostics {
                eprintln!("{d}");
            }
            print_summary(ctx, summary.as_ref(), errors.len(), warnings.len());
        }
    }
    if !valid {
        ExitCode::FAILURE
    } else if strict && warning_count > 0 {
        if matches!(format, CheckFormat::Text | CheckFormat::Github) {
            eprintln!(
                "{dir}: failed under --strict: {}",
                plural(warning_count, "warning")
            );
        }
        ExitCode::from(STRICT_WARNINGS)
    } else {
        ExitCode::SUCCESS
    }
}

/// The last line of `check`'s text output: on stdout when valid.
fn print_summary(ctx: &Context, summary: Option<&Summary>, errors: usize, warnings: usize) {
    let dir = ctx.dir.display();
    match summary {
        Some(s) => println!(
            "{dir}: ok: {}, {}, {}, {}, {}",
            plural(s.groups, "group"),
            plural(s.device_prefixes, "device prefix"),
            plural(s.rules, "rule"),
            plural(s.compiled_entries, "compiled entry"),
            plural(s.warnings, "warning"),
        ),
        None => eprintln!(
            "{dir}: invalid: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        ),
    }
}
