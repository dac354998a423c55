//! The precedence is written once, in `tollgate_common::precedence`; the
//! language reference words it for policy authors under the same numbers,
//! and the code that decides a step says so in a `// step N: ...` comment.
//! These tests hold the reference and the tags to that one list, so a step
//! added, removed or renumbered shows up everywhere it has to.

const SPEC: &str = include_str!("../../../ebpf/common/src/precedence.rs");
const REFERENCE: &str = include_str!("../../../policies/README.md");
const README: &str = include_str!("../../../README.md");

const KERNEL_MAIN: &str = include_str!("../../../ebpf/program/src/main.rs");
const KERNEL_DECIDE: &str = include_str!("../../../ebpf/program/src/decide.rs");
const KERNEL_CLASSIFY: &str = include_str!("../../../ebpf/program/src/classify.rs");
const MODEL: &str = include_str!("../model.rs");
const NAIVE: &str = include_str!("naive.rs");
const COMPILE: &str = include_str!("../compile.rs");
const TABLES: &str = include_str!("../tables.rs");

/// Where steps are decided: the kernel decides all of them; the userspace
/// evaluators and the compiler only those of the policy itself.
struct Place {
    name: &'static str,
    sources: &'static [&'static str],
    policy_only: bool,
}

const PLACES: [Place; 4] = [
    Place {
        name: "the kernel (ebpf/program/src/main.rs, decide.rs, classify.rs)",
        sources: &[KERNEL_MAIN, KERNEL_DECIDE, KERNEL_CLASSIFY],
        policy_only: false,
    },
    Place {
        name: "the model (userspace/src/model.rs)",
        sources: &[MODEL],
        policy_only: true,
    },
    Place {
        name: "the naive evaluator (userspace/src/model/naive.rs)",
        sources: &[NAIVE],
        policy_only: true,
    },
    Place {
        name: "the compiler (userspace/src/compile.rs)",
        sources: &[COMPILE],
        policy_only: true,
    },
];

#[derive(Debug, PartialEq, Eq)]
struct Step {
    number: u32,
    title: String,
}

/// A numbered step, `N. **Title.** ...`, or `None` for any other line.
fn step(line: &str) -> Option<Step> {
    let (number, rest) = line.trim_start().split_once(". **")?;
    let title = rest.split_once(".**")?.0;
    Some(Step {
        number: number.parse().ok()?,
        title: title.to_string(),
    })
}

/// The spec's steps, and the number of the first one of the policy itself
/// (its `# The policy` section).
fn spec() -> (Vec<Step>, u32) {
    let mut steps = Vec::new();
    let mut first_policy_step = None;
    for line in SPEC.lines().filter_map(|l| l.strip_prefix("//!")) {
        if line.trim() == "# The policy" {
            first_policy_step = Some(steps.len() as u32 + 1);
        }
        steps.extend(step(line));
    }
    let first = first_policy_step.expect("the spec has a `# The policy` section");
    (steps, first)
}

/// The text of a Markdown section, from its heading to the next one of the
/// same level.
fn section<'t>(text: &'t str, heading: &str) -> &'t str {
    let level = heading.split(' ').next().unwrap();
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"))
        + 1;
    let body = &text[start + heading.len()..];
    let end = body
        .find(&format!("\n{level} "))
        .map_or(text.len(), |i| start + heading.len() + i);
    &text[start..end]
}

/// The step numbers of the `// step N: ...` tags in `source`. A comment
/// that starts like a tag but is not one is an error, not a miss.
fn tags(source: &str) -> Vec<u32> {
    source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("// step "))
        .map(|tag| {
            tag.split_once(": ")
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or_else(|| panic!("malformed step tag `// step {tag}`"))
        })
        .collect()
}

#[test]
fn the_spec_numbers_its_steps_from_one() {
    let (steps, first_policy_step) = spec();
    assert!(steps.len() > 1, "no steps found in the spec");
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s.number, i as u32 + 1, "step {s:?} is out of sequence");
    }
    assert!((2..=steps.len() as u32).contains(&first_policy_step));
}

#[test]
fn the_language_reference_has_the_specs_steps_under_the_same_numbers() {
    let (spec, _) = spec();
    let semantics = section(REFERENCE, "## Verdict semantics");
    let reference: Vec<Step> = semantics.lines().filter_map(step).collect();
    assert_eq!(
        reference, spec,
        "policies/README.md and precedence.rs differ"
    );
}

#[test]
fn every_step_is_tagged_where_it_is_decided_and_no_tag_is_stray() {
    let (steps, first_policy_step) = spec();
    let last = steps.len() as u32;
    for place in &PLACES {
        let tagged: Vec<u32> = place.sources.iter().flat_map(|s| tags(s)).collect();
        let first = if place.policy_only {
            first_policy_step
        } else {
            1
        };
        for n in first..=last {
            assert!(tagged.contains(&n), "{}: no `// step {n}:` tag", place.name);
        }
        for n in tagged {
            assert!(
                (first..=last).contains(&n),
                "{}: `// step {n}:` names no step it decides (steps {first}-{last})",
                place.name
            );
        }
    }
}

#[test]
fn the_steps_are_listed_nowhere_else() {
    let module_docs = [
        ("decide.rs", KERNEL_DECIDE),
        ("model.rs", MODEL),
        ("naive.rs", NAIVE),
        ("compile.rs", COMPILE),
        ("tables.rs", TABLES),
    ];
    for (name, source) in module_docs {
        let listed = source
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .any(|l| l.trim_start().starts_with("1. "));
        assert!(!listed, "{name} lists steps of its own: refer to the spec");
    }
    let summary = section(README, "### Verdict semantics");
    assert!(
        !summary.lines().any(|l| l.starts_with("1. ")),
        "README.md lists the steps: refer to policies/README.md"
    );
}
