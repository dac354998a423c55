//! The policy's `expect:` cases on the real kernel, before the flip: each
//! case's frame goes through the probe program against the slot just
//! written ([`Dataplane::probe`]), and what the kernel decides must be what
//! the case expects and what the model decides. This catches what no model
//! can: a compiler or map-writing bug, or a kernel that behaves otherwise.

use anyhow::Result;

use crate::{
    datapath::{Dataplane, Probed, Staged, probe_frame},
    diagnostic::Diagnostic,
    expectations::{self, Outcome},
    policy::Expectation,
    tables::CompiledPolicy,
};

/// Every case that fails on the staged slot; `Err` when the probe could
/// not run at all.
pub fn failures(
    dataplane: &mut Dataplane,
    staged: &Staged,
    tables: &CompiledPolicy,
    cases: &[Expectation],
) -> Result<Vec<Diagnostic>> {
    let mut failed = Vec::new();
    for case in cases {
        let probed = dataplane.probe(staged, &probe_frame::frame(&case.packet))?;
        if let Err(failure) = judge(tables, case, probed) {
            failed.push(failure);
        }
    }
    Ok(failed)
}

fn judge(
    tables: &CompiledPolicy,
    case: &Expectation,
    probed: Option<Probed>,
) -> Result<(), Diagnostic> {
    let Some(probed) = probed else {
        return Err(expectations::failure(
            case,
            "the kernel dropped its frame before deciding (see tollgate_drops_total)".into(),
        ));
    };
    let outcome = probed
        .counter
        .and_then(|logical| Outcome::of_counter(tables, probed.verdict, logical))
        .ok_or_else(|| {
            expectations::failure(
                case,
                format!(
                    "got {} on the kernel, charged to counter {}, which no rule or \
                     default of the new policy owns",
                    probed.verdict.label(),
                    probed.kernel_counter
                ),
            )
        })?;
    expectations::judge(case, "kernel", &outcome)?;
    let model = expectations::on_model(tables, case);
    if outcome != model {
        return Err(expectations::failure(
            case,
            format!(
                "the kernel decided {} (rule {}, group {}) but the model {} (rule {}, group {})",
                outcome.verdict.label(),
                outcome.rule,
                outcome.group,
                model.verdict.label(),
                model.rule,
                model.group
            ),
        ));
    }
    Ok(())
}
