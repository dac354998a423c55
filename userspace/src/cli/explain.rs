//! `tollgate explain`: how the policy decides one packet, and why.

use std::process::ExitCode;

use serde::Serialize;
use tollgate::{diagnostic::Diagnostic, explain::explain, reload::Prepared, tables::PacketFacts};

use super::{
    Format, plural,
    policy_source::{Context, build},
    print_notes,
};

pub(super) fn explain_packet(
    ctx: &Context,
    format: Format,
    packet: &PacketFacts,
    mut notes: Vec<String>,
) -> ExitCode {
    let Prepared {
        policy,
        tables,
        warnings,
        ..
    } = match build(ctx) {
        Ok(built) => built,
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!("{}: invalid policy, nothing to explain", ctx.dir.display());
            return ExitCode::FAILURE;
        }
    };
    notes.splice(0..0, ctx.notes.iter().cloned());
    let explanation = explain(&policy, &tables, packet);
    match format {
        Format::Json => {
            #[derive(Serialize)]
            struct Report<'a> {
                #[serde(flatten)]
                explanation: &'a tollgate::explain::Explanation,
                notes: &'a [String],
                warnings: &'a [Diagnostic],
            }
            let report = Report {
                explanation: &explanation,
                notes: &notes,
                warnings: &warnings,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serialisable")
            );
        }
        Format::Text => {
            if !warnings.is_empty() {
                notes.push(format!(
                    "the policy has {}; `tollgate check` lists them",
                    plural(warnings.len(), "warning")
                ));
            }
            print_notes(&notes);
            print!("{}", explanation.render());
        }
    }
    ExitCode::SUCCESS
}
