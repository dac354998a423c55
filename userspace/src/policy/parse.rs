//! One policy file on its own: its text parsed into the file's [`spec`]
//! (structure only) and the [`Positions`] of its values, in one walk of
//! libyaml's events (`tree`). Names and values are resolved across all
//! files later, by `validate`.
//!
//! [`spec`]: super::spec

use std::{path::PathBuf, sync::Arc};

use super::{positions::Positions, spec::PolicyFile, tree};
use crate::diagnostic::Diagnostic;

/// One policy file's text; `path` labels its diagnostics.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// One file after parsing: its spec is `None` when it has structural errors.
pub(super) struct ParsedFile {
    pub file: Arc<str>,
    pub positions: Positions,
    pub spec: Option<PolicyFile>,
}

/// Parses one file, appending what is structurally wrong with it to
/// `diagnostics`.
pub(super) fn parse(source: &Source, diagnostics: &mut Vec<Diagnostic>) -> ParsedFile {
    let file: Arc<str> = source.path.display().to_string().into();
    let (positions, tree) = tree::read(&source.text);
    for (mark, field, message) in positions.problems() {
        diagnostics.push(Diagnostic::error(
            &source.path,
            mark.line,
            mark.column,
            field,
            message.clone(),
        ));
    }
    if positions.refuses_parsing() {
        return ParsedFile {
            file,
            positions,
            spec: None,
        };
    }
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
    } else if let Some(spec) = tree.and_then(|tree| tree::deserialize(&tree).ok()) {
        Some(spec)
    } else {
        // Only what the tree leaves undecided (see `tree`): mostly files
        // with errors, which yaml_serde words.
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
