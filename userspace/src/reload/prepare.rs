//! The pure step of a reload: load, validate and compile a policy
//! directory into something ready to install.

use std::path::Path;

use crate::{
    compile::{CompileCache, compile_cached},
    config::Limits,
    diagnostic::Diagnostic,
    policy::{self, Environment, Expectation, LoadWork, ParseCache, Policy},
    tables::CompiledPolicy,
};

/// What one preparation keeps for the next: the parsed files and their
/// validated groups, and each group compiled. A reload after an edit of
/// one file parses, validates and compiles only that file's groups.
#[derive(Default)]
pub struct PrepareCache {
    parse: ParseCache,
    compile: CompileCache,
}

impl PrepareCache {
    /// How much of the last preparation was done anew: files parsed,
    /// groups validated (`None`: the whole policy, it had errors), groups
    /// compiled.
    pub fn last_work(&self) -> (LoadWork, usize) {
        (self.parse.last_load(), self.compile.groups_compiled())
    }
}

/// A policy that passed every check and compiled: ready to install.
#[derive(Debug)]
pub struct Prepared {
    pub policy: Policy,
    pub warnings: Vec<Diagnostic>,
    pub tables: CompiledPolicy,
    /// The policy's `expect:` cases.
    pub expectations: Vec<Expectation>,
    /// The git commit the directory is checked out at.
    pub commit: Option<String>,
}

/// Loads, validates and compiles the policy in `dir`. Pure apart from
/// reading the files; nothing is installed. `Err` holds every error.
/// `cache` keeps what it can between calls: a reload after an edit
/// parses, validates and compiles only what the changed files hold; the
/// result is the same as from an empty cache.
pub fn prepare(
    dir: &Path,
    env: &Environment,
    limits: &Limits,
    cache: &mut PrepareCache,
) -> Result<Prepared, Vec<Diagnostic>> {
    let loaded = policy::load_cached(dir, env, &limits.read_limits(), &mut cache.parse)?;
    let tables = compile_cached(&loaded.policy, limits, &mut cache.compile)?;
    Ok(Prepared {
        commit: crate::git::head_commit(dir),
        policy: loaded.policy,
        warnings: loaded.warnings,
        expectations: loaded.expectations,
        tables,
    })
}
