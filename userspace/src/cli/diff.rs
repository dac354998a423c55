//! `tollgate diff OLD NEW`: what a policy change does to verdicts, as text,
//! JSON or GitHub annotations. OLD and NEW are each a policy directory (an
//! argument naming an existing directory) or a git revision ([`revision`]).
//!
//! Exit status: 0 the diff was computed (changes or not), 1 a side is not a
//! valid policy (its diagnostics on stderr), 2 usage, 3 (`--exit-code`
//! only) the change alters verdicts.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use tollgate::{
    compile::compile,
    diagnostic::Diagnostic,
    policy::{Policy, from_sources},
    reload::Prepared,
    tables::CompiledPolicy,
    verdict_diff::{
        self, Side,
        render::{self, LineKind},
    },
};

use super::{
    ci_formats, plural,
    policy_source::{Context, build},
    print_notes, revision, usage_failure,
};

/// The exit status of `--exit-code` when verdicts change.
const CHANGES: u8 = 3;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum DiffFormat {
    Text,
    Json,
    /// GitHub Actions workflow commands (`::notice file=...::message`).
    Github,
}

pub(super) struct DiffRequest {
    pub old: String,
    pub new: String,
    /// The policy directory within a revision given without `:DIR`.
    pub policy_dir: PathBuf,
    pub format: DiffFormat,
    pub max_lines: usize,
    pub exit_code: bool,
}

/// One side, validated and compiled.
struct Built {
    policy: Policy,
    tables: CompiledPolicy,
}

pub(super) fn diff(ctx: &Context, request: &DiffRequest) -> ExitCode {
    let mut sides = Vec::new();
    for argument in [&request.old, &request.new] {
        match build_side(ctx, argument, &request.policy_dir) {
            Ok(built) => sides.push(built),
            // On stderr, or as JSON with --format json.
            Err(Failure::Usage(message)) => return usage_failure(&message),
            Err(Failure::Invalid(diagnostics)) => {
                for d in &diagnostics {
                    eprintln!("{d}");
                }
                eprintln!("{argument}: invalid policy, no diff");
                return ExitCode::FAILURE;
            }
        }
    }
    let (old, new) = (&sides[0], &sides[1]);
    let result = verdict_diff::diff(
        Side::new(&old.policy, &old.tables),
        Side::new(&new.policy, &new.tables),
    );
    let lines = render::lines(&result, &new.policy);
    match request.format {
        DiffFormat::Text => {
            print_notes(&ctx.notes);
            print!("{}", render::text(&lines, request.max_lines));
        }
        DiffFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::report(&result, request.max_lines))
                .expect("serialisable")
        ),
        DiffFormat::Github => print!("{}", github(&lines, request.max_lines)),
    }
    if request.exit_code && result.changes_verdicts() {
        ExitCode::from(CHANGES)
    } else {
        ExitCode::SUCCESS
    }
}

enum Failure {
    Usage(String),
    Invalid(Vec<Diagnostic>),
}

fn build_side(ctx: &Context, argument: &str, policy_dir: &Path) -> Result<Built, Failure> {
    if Path::new(argument).is_dir() {
        let local = Context {
            dir: PathBuf::from(argument),
            env: ctx.env.clone(),
            limits: ctx.limits,
            notes: Vec::new(),
            control_socket: ctx.control_socket.clone(),
        };
        let Prepared { policy, tables, .. } = build(&local).map_err(Failure::Invalid)?;
        return Ok(Built { policy, tables });
    }
    let spec = revision::tree_spec(argument, policy_dir);
    let sources = revision::sources(&spec, &ctx.limits.read_limits()).map_err(|e| {
        Failure::Usage(format!(
            "{argument}: neither a directory nor a policy at a git revision: {e}"
        ))
    })?;
    let loaded = from_sources(&sources, &ctx.env).map_err(Failure::Invalid)?;
    let tables = compile(&loaded.policy, &ctx.limits).map_err(Failure::Invalid)?;
    Ok(Built {
        policy: loaded.policy,
        tables,
    })
}

/// One workflow command per line: verdict changes and membership as
/// notices on the responsible rule, newly shadowed rules as warnings.
fn github(lines: &[render::Line], max_lines: usize) -> String {
    let mut out = String::new();
    for line in lines.iter().take(max_lines) {
        let command = match line.kind {
            LineKind::Shadowed => "warning",
            LineKind::Verdict | LineKind::Reattributed | LineKind::Membership => "notice",
        };
        let mut properties = Vec::new();
        if let Some(at) = &line.at {
            properties.push(format!("file={}", ci_formats::property(&at.file)));
            properties.push(format!("line={}", at.line));
        }
        properties.push(format!("title={}", ci_formats::property("tollgate diff")));
        out.push_str(&format!(
            "::{command} {}::{}\n",
            properties.join(","),
            ci_formats::data(&line.text)
        ));
    }
    if lines.len() > max_lines {
        out.push_str(&format!(
            "::notice title=tollgate diff::{} not shown (--max-lines)\n",
            plural(lines.len() - max_lines, "more line")
        ));
    }
    out
}

/// tollgate-diff(1)'s examples and exit statuses.
pub const MAN_EXAMPLES: &[(&str, &str)] = &[
    (
        "tollgate diff main HEAD --policy policies --ci --gateway 10.64.0.1 --ntp 100.127.0.123",
        "What the commits since main do to verdicts, per group, with the rules responsible.",
    ),
    (
        "tollgate diff origin/main HEAD --ci --format github --config deploy/tollgate.yaml",
        "The same as annotations on a pull request's lines (GitHub Actions).",
    ),
    (
        "tollgate diff /etc/tollgate/policies policies --config /etc/tollgate/tollgate.yaml",
        "What deploying a checkout would change on this gateway.",
    ),
];

pub const MAN_EXIT_STATUSES: &[(&str, &str)] = &[
    ("0", "The diff was computed (changes or not)."),
    (
        "1",
        "A side is not a valid policy: its errors on stderr as file:line:col.",
    ),
    (
        "2",
        "The command could not run as asked: bad flags, an argument that is neither a directory nor a readable git revision, an unusable --config.",
    ),
    ("3", "With --exit-code: the change alters a verdict."),
];
