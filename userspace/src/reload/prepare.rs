//! The pure step of a reload: load, validate and compile a policy
//! directory into something ready to install.

use std::path::Path;

use crate::{
    compile::compile,
    config::Limits,
    diagnostic::Diagnostic,
    policy::{self, Environment, Expectation, ParseCache, Policy},
    tables::CompiledPolicy,
};

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
/// `cache` keeps the parse of each file between calls: a reload after an
/// edit parses only the files that changed.
pub fn prepare(
    dir: &Path,
    env: &Environment,
    limits: &Limits,
    cache: &mut ParseCache,
) -> Result<Prepared, Vec<Diagnostic>> {
    let loaded = policy::load_cached(dir, env, &limits.read_limits(), cache)?;
    let tables = compile(&loaded.policy, limits)?;
    Ok(Prepared {
        commit: crate::git::head_commit(dir),
        policy: loaded.policy,
        warnings: loaded.warnings,
        expectations: loaded.expectations,
        tables,
    })
}
