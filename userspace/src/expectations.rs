//! Judging a policy's `expect:` cases: on the reference model
//! (`tollgate test`, every reload) and, given what the kernel decided, on
//! the real dataplane (the daemon, before every flip). A failed case is a
//! [`Diagnostic`] at the case's file:line:col, so it reads like any other
//! policy error.

use tollgate_common::Verdict;

use crate::{
    diagnostic::Diagnostic,
    model,
    policy::{Expectation, expect::ShownPacket},
    tables::{CompiledPolicy, CounterOwner},
};

/// What an evaluator decided for a case's packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The group that decided and the decider's `rule` label (a rule id,
    /// `default` or `builtin-ntp`).
    pub group: String,
    pub rule: String,
}

impl Outcome {
    /// The outcome of a decision that charged logical counter `counter` of
    /// `tables`; `None` when that counter is not a decision's.
    pub fn of_counter(tables: &CompiledPolicy, verdict: Verdict, counter: u32) -> Option<Outcome> {
        match tables.counters.get(counter as usize)? {
            CounterOwner::Decision { group, decider } => Some(Outcome {
                verdict,
                group: group.to_string(),
                rule: decider.rule_id().to_string(),
            }),
            CounterOwner::Verdict { .. } => None,
        }
    }
}

/// What the model decides for `case`.
pub fn on_model(tables: &CompiledPolicy, case: &Expectation) -> Outcome {
    let decision = model::verdict(tables, &case.packet);
    Outcome::of_counter(tables, decision.verdict, decision.counter)
        .expect("the model charges a decision counter")
}

/// `Err` with the failure when `got` is not what `case` expects; `on`
/// names the evaluator (`model`, `kernel`).
pub fn judge(case: &Expectation, on: &str, got: &Outcome) -> Result<(), Diagnostic> {
    let rule_ok = case.rule.as_ref().is_none_or(|rule| *rule == got.rule);
    if got.verdict == case.verdict && rule_ok {
        return Ok(());
    }
    Err(failure(
        case,
        format!(
            "got {} (rule {}, group {}) on the {on}",
            got.verdict.label(),
            got.rule,
            got.group
        ),
    ))
}

/// A failed case, at the case's place and field (`expect[i]`):
/// `10.64.0.10 → 13.112.10.10 tcp/8883: expected allow (rule aws-iot),
/// <what happened>`.
pub fn failure(case: &Expectation, what: String) -> Diagnostic {
    Diagnostic::error(
        std::path::Path::new(&*case.origin.file),
        case.origin.line,
        case.origin.column,
        &case.field,
        format!(
            "{}: expected {}, {what}",
            ShownPacket(&case.packet),
            case.expected()
        ),
    )
}

/// Every case that fails on the model of `tables`.
pub fn failures_on_model(tables: &CompiledPolicy, cases: &[Expectation]) -> Vec<Diagnostic> {
    cases
        .iter()
        .filter_map(|case| judge(case, "model", &on_model(tables, case)).err())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        compile::compile,
        config::Limits,
        policy::{Environment, Source, from_sources},
    };

    fn failures(expect: &str) -> Vec<String> {
        let text = format!(
            "groups:\n  meters:\n    devices: [10.64.0.0/16]\n    default: deny\n    rules:\n      \
             - allow: {{id: aws-iot, to: 13.112.0.0/14, proto: tcp, ports: [8883]}}\n\
             expect:\n{expect}"
        );
        let source = Source {
            path: PathBuf::from("policies/meters.yaml"),
            text,
        };
        let loaded = from_sources(&[source], &Environment::default()).expect("valid");
        let tables = compile(&loaded.policy, &Limits::default()).expect("compiles");
        failures_on_model(&tables, &loaded.expectations)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn passing_cases_report_nothing() {
        let cases = "  - {from: 10.64.0.10, to: 13.112.10.10, proto: tcp, port: 8883, verdict: allow, rule: aws-iot}\n  \
                     - {from: 10.64.0.10, to: 13.112.10.10, proto: tcp, port: 22, verdict: deny}\n";
        assert_eq!(failures(cases), Vec::<String>::new());
    }

    #[test]
    fn a_failing_case_says_what_it_expected_and_got() {
        let cases = "  - {from: 10.64.0.10, to: 13.112.10.10, proto: tcp, port: 443, verdict: allow, rule: aws-iot}\n  \
                     - {from: 10.64.0.10, to: 13.112.10.10, proto: tcp, port: 8883, verdict: allow, rule: default}\n";
        assert_eq!(
            failures(cases),
            [
                "policies/meters.yaml:8:5: expect[0]: 10.64.0.10 → 13.112.10.10 tcp/443: \
                 expected allow (rule aws-iot), got deny (rule default, group meters) on the model",
                "policies/meters.yaml:9:5: expect[1]: 10.64.0.10 → 13.112.10.10 tcp/8883: \
                 expected allow (rule default), got allow (rule aws-iot, group meters) on the model",
            ]
        );
    }
}
