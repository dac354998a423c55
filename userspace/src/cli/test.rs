//! `tollgate test`: the policy's `expect:` cases, evaluated on the model.

use std::process::ExitCode;

use serde::Serialize;
use tollgate::{diagnostic::Diagnostic, expectations::failures_on_model, reload::Prepared};

use super::{
    Format, plural,
    policy_source::{Context, build},
    print_notes,
};

/// `test --format json`.
#[derive(Serialize)]
struct TestReport<'a> {
    /// The policy is valid and every case passed.
    passed: bool,
    /// Cases run (0 when the policy is invalid).
    cases: usize,
    /// Failed cases; for an invalid policy, its errors.
    failures: &'a [Diagnostic],
    warnings: &'a [Diagnostic],
    notes: &'a [String],
}

pub(super) fn test(ctx: &Context, format: Format) -> ExitCode {
    let (cases, failures, warnings, valid) = match build(ctx) {
        Ok(Prepared {
            tables,
            expectations,
            warnings,
            ..
        }) => {
            let failures = failures_on_model(&tables, &expectations);
            (expectations.len(), failures, warnings, true)
        }
        Err(diagnostics) => {
            let (errors, warnings) = diagnostics.into_iter().partition(Diagnostic::is_error);
            (0, errors, warnings, false)
        }
    };
    let passed = valid && failures.is_empty();
    let dir = ctx.dir.display();
    match format {
        Format::Json => {
            let report = TestReport {
                passed,
                cases,
                failures: &failures,
                warnings: &warnings,
                notes: &ctx.notes,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable")
            );
        }
        Format::Text => {
            print_notes(&ctx.notes);
            for d in warnings.iter().chain(&failures) {
                eprintln!("{d}");
            }
            if !valid {
                eprintln!(
                    "{dir}: invalid policy ({}), no case run",
                    plural(failures.len(), "error")
                );
            } else if passed {
                println!("{dir}: ok: {} passed", plural(cases, "case"));
            } else {
                eprintln!(
                    "{dir}: {} of {} failed",
                    failures.len(),
                    plural(cases, "case")
                );
            }
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
