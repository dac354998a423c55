//! Reads a policy directory: every `*.yaml`/`*.yml` file under it,
//! recursively, in path order. Each file is parsed on its own, so a
//! structural error in one file is reported and the others are still checked.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{Environment, Policy, model::PolicyFile, positions::Positions, validate};
use crate::diagnostic::Diagnostic;

/// One policy file's text; `path` labels its diagnostics.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// A valid policy and the warnings about it.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Vec<Diagnostic>,
}

/// One file after parsing: its spec is `None` when it has structural errors.
pub(super) struct ParsedFile {
    pub file: String,
    pub positions: Positions,
    pub spec: Option<PolicyFile>,
}

/// Loads and validates the policy in `dir`. `Err` holds every error, and the
/// warnings, sorted by file and position.
pub fn load(dir: &Path, env: &Environment) -> Result<Loaded, Vec<Diagnostic>> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    collect(dir, 0, &mut sources, &mut errors);
    if sources.is_empty() && errors.is_empty() {
        errors.push(Diagnostic::error(
            dir,
            0,
            0,
            "",
            "no policy files (*.yaml, *.yml) in this directory".into(),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    from_sources(&sources, env)
}

/// Validates a policy given as file texts (in the order given; `load` sorts
/// them by path).
pub fn from_sources(sources: &[Source], env: &Environment) -> Result<Loaded, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    let files: Vec<ParsedFile> = sources
        .iter()
        .map(|source| parse(source, &mut diagnostics))
        .collect();
    let policy = validate::validate(&files, env, &mut diagnostics);
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
    });
    match policy {
        Some(policy) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(Loaded {
            policy,
            warnings: diagnostics,
        }),
        _ => Err(diagnostics),
    }
}

fn parse(source: &Source, diagnostics: &mut Vec<Diagnostic>) -> ParsedFile {
    let file = source.path.display().to_string();
    let positions = Positions::index(&source.text);
    for dup in positions.duplicate_keys() {
        diagnostics.push(Diagnostic::error(
            &source.path,
            dup.second.line,
            dup.second.column,
            &dup.path,
            format!(
                "duplicate key (first at line {}, column {}); a key may appear once per mapping",
                dup.first.line, dup.first.column
            ),
        ));
    }
    let spec = if positions.is_blank() {
        Some(PolicyFile::default())
    } else {
        match yaml_serde::from_str::<PolicyFile>(&source.text) {
            Ok(spec) => Some(spec),
            Err(e) => {
                diagnostics.push(Diagnostic::from_yaml(&source.path, &e));
                None
            }
        }
    };
    ParsedFile {
        file,
        positions,
        spec,
    }
}

/// Deeper than this is a symlink loop, not a policy repository.
const MAX_DEPTH: usize = 32;

/// Appends the policy files under `dir` in path order. Hidden entries (such
/// as `.git`) are skipped.
fn collect(dir: &Path, depth: usize, sources: &mut Vec<Source>, errors: &mut Vec<Diagnostic>) {
    let unreadable = |path: &Path, e: std::io::Error| {
        Diagnostic::error(path, 0, 0, "", format!("cannot read: {e}"))
    };
    if depth > MAX_DEPTH {
        errors.push(Diagnostic::error(
            dir,
            0,
            0,
            "",
            format!("nested more than {MAX_DEPTH} directories deep (a symlink loop?)"),
        ));
        return;
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return errors.push(unreadable(dir, e)),
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) if !entry.file_name().to_string_lossy().starts_with('.') => {
                paths.push(entry.path());
            }
            Ok(_) => {}
            Err(e) => errors.push(unreadable(dir, e)),
        }
    }
    paths.sort();
    for path in paths {
        // Follows symlinks: a policy repository may link shared lists in.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => collect(&path, depth + 1, sources, errors),
            Ok(_) if is_policy_file(&path) => match fs::read_to_string(&path) {
                Ok(text) => sources.push(Source { path, text }),
                Err(e) => errors.push(unreadable(&path, e)),
            },
            Ok(_) => {}
            Err(e) => errors.push(unreadable(&path, e)),
        }
    }
}

fn is_policy_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}
