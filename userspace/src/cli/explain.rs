//! `tollgate explain`: how the policy decides one packet, and why.

use std::{net::IpAddr, path::Path, process::ExitCode};

use serde::Serialize;

use tollgate::{
    control::Lease,
    diagnostic::Diagnostic,
    explain::{explain, explain_live, fqdn::explain_fqdn},
    model,
    reload::Prepared,
    tables::PacketFacts,
};

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
    live: Option<&Path>,
) -> ExitCode {
    let leases = match live.map(leases_of).transpose() {
        Ok(leases) => leases,
        Err(code) => return code,
    };
    let Prepared {
        policy,
        tables,
        warnings,
        ..
    } = match build_or_report(ctx) {
        Ok(built) => built,
        Err(code) => return code,
    };
    notes.splice(0..0, ctx.notes.iter().cloned());
    let explanation = match &leases {
        Some(leases) => explain_live(&policy, &tables, leases, packet),
        None => explain(&policy, &tables, packet),
    };
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

/// `explain --fqdn NAME [--src IP]`: the FQDN rules that name it.
pub(super) fn explain_name(
    ctx: &Context,
    format: Format,
    name: &str,
    src: Option<IpAddr>,
    live: Option<&Path>,
) -> ExitCode {
    let leases = match live.map(leases_of).transpose() {
        Ok(leases) => leases,
        Err(code) => return code,
    };
    let Prepared { policy, tables, .. } = match build_or_report(ctx) {
        Ok(built) => built,
        Err(code) => return code,
    };
    let group = src.map(|src| model::group_of(&tables, src));
    if group == Some(tollgate_common::UNKNOWN_GROUP) {
        eprintln!(
            "{} is in no group's devices: the DNS forwarder refuses it",
            src.expect("given")
        );
        return ExitCode::FAILURE;
    }
    let explanation = match explain_fqdn(&policy, name, group, leases.as_deref()) {
        Ok(e) => e,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&explanation).expect("serialisable")
        ),
        Format::Text => {
            print_notes(&ctx.notes);
            print!("{}", explanation.render());
        }
    }
    ExitCode::SUCCESS
}

/// What the daemon on `socket` has learned, or the error on stderr and the
/// exit status: `--live` without an answer is no explanation.
fn leases_of(socket: &Path) -> Result<Vec<Lease>, ExitCode> {
    tollgate::control::query_leases(socket).map_err(|e| {
        eprintln!("--live: {e:#}");
        ExitCode::FAILURE
    })
}

/// The policy of `ctx`, or every error on stderr and the exit status.
fn build_or_report(ctx: &Context) -> Result<Prepared, ExitCode> {
    build(ctx).map_err(|diagnostics| {
        for d in &diagnostics {
            eprintln!("{d}");
        }
        eprintln!("{}: invalid policy, nothing to explain", ctx.dir.display());
        ExitCode::FAILURE
    })
}
