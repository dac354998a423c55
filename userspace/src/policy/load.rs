//! Reads a policy directory: every `*.yaml`/`*.yml` file under it,
//! recursively, in path order. Each file is parsed on its own, so a
//! structural error in one file is reported and the others are still checked.

use std::{
    collections::HashMap,
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

/// The files parsed by the previous load, reused while their text is the
/// same. A reload usually follows an edit of one small file; parsing a
/// large prefix list again would dominate it.
#[derive(Default)]
pub struct ParseCache {
    files: HashMap<PathBuf, CachedFile>,
}

struct CachedFile {
    text: String,
    parsed: ParsedFile,
    /// What parsing it reported (validation runs again every time).
    diagnostics: Vec<Diagnostic>,
}

/// Loads and validates the policy in `dir`. `Err` holds every error, and the
/// warnings, sorted by file and position.
pub fn load(dir: &Path, env: &Environment) -> Result<Loaded, Vec<Diagnostic>> {
    load_cached(dir, env, &mut ParseCache::default())
}

/// [`load`], reusing the parse of every file whose text `cache` has seen.
pub fn load_cached(
    dir: &Path,
    env: &Environment,
    cache: &mut ParseCache,
) -> Result<Loaded, Vec<Diagnostic>> {
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
    validate_sources(sources, env, cache)
}

/// Validates a policy given as file texts (in the order given; `load` sorts
/// them by path).
pub fn from_sources(sources: &[Source], env: &Environment) -> Result<Loaded, Vec<Diagnostic>> {
    validate_sources(sources.to_vec(), env, &mut ParseCache::default())
}

fn validate_sources(
    sources: Vec<Source>,
    env: &Environment,
    cache: &mut ParseCache,
) -> Result<Loaded, Vec<Diagnostic>> {
    let mut order = Vec::with_capacity(sources.len());
    let mut current = HashMap::with_capacity(sources.len());
    for source in sources {
        let cached = match cache.files.remove(&source.path) {
            Some(cached) if cached.text == source.text => cached,
            _ => {
                let mut diagnostics = Vec::new();
                let parsed = parse(&source, &mut diagnostics);
                CachedFile {
                    text: source.text,
                    parsed,
                    diagnostics,
                }
            }
        };
        order.push(source.path.clone());
        current.insert(source.path, cached);
    }
    // Files that are gone are forgotten.
    cache.files = current;
    let mut diagnostics: Vec<Diagnostic> = order
        .iter()
        .flat_map(|p| cache.files[p].diagnostics.iter().cloned())
        .collect();
    let files: Vec<&ParsedFile> = order.iter().map(|p| &cache.files[p].parsed).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `load` says, in a comparable form.
    fn outcome(
        result: Result<Loaded, Vec<Diagnostic>>,
    ) -> Result<(Policy, Vec<String>), Vec<String>> {
        let text = |d: Vec<Diagnostic>| d.iter().map(ToString::to_string).collect();
        match result {
            Ok(loaded) => Ok((loaded.policy, text(loaded.warnings))),
            Err(errors) => Err(text(errors)),
        }
    }

    #[test]
    fn a_cached_load_says_what_a_fresh_one_says() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        let env = Environment::default();
        let mut cache = ParseCache::default();
        let mut check = |step: &str| {
            let fresh = outcome(load(dir.path(), &env));
            let cached = outcome(load_cached(dir.path(), &env, &mut cache));
            assert_eq!(cached, fresh, "{step}");
            fresh
        };

        write(
            "groups.yaml",
            "groups:\n  meters:\n    devices: [10.1.0.0/16]\n    default: deny\n    rules:\n      - allow: {to: cloud, proto: tcp, ports: [443]}\n",
        );
        write("lists.yaml", "lists:\n  cloud: [198.51.100.0/24]\n");
        assert!(check("first load").is_ok());
        // An edit of one file, seen through the cache.
        write("lists.yaml", "lists:\n  cloud: [203.0.113.0/24]\n");
        let edited = check("edit").unwrap();
        assert_eq!(
            edited.0.groups[0].rules[0].targets[0].prefixes[0].to_string(),
            "203.0.113.0/24"
        );
        // A broken file is reported on every load, not only the first.
        write("broken.yaml", "groups: [\n");
        assert!(check("broken file").is_err());
        assert!(check("broken file, unchanged").is_err());
        // A removed file is forgotten; a removed list is an error again.
        fs::remove_file(dir.path().join("broken.yaml")).unwrap();
        assert!(check("broken file removed").is_ok());
        fs::remove_file(dir.path().join("lists.yaml")).unwrap();
        assert!(check("list removed").is_err());
    }
}
