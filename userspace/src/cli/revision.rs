//! The policy directory at a git revision, for `tollgate diff`: `REV:DIR`
//! (DIR as git reads it, from the repository's root) or `REV` with the
//! `--policy DIR` of the current directory (git's `REV:./DIR`). The files
//! are read with the `git` binary, within the policy read limits, without
//! touching the work tree.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use tollgate::policy::{ReadLimits, Source};

/// The git object name of the policy directory at `revision`.
pub(super) fn tree_spec(revision: &str, policy_dir: &Path) -> String {
    if revision.contains(':') {
        revision.to_string()
    } else {
        format!("{revision}:./{}", policy_dir.display())
    }
}

/// Every `*.yaml`/`*.yml` file under the tree `spec`, in path order, as the
/// loader would read them from a checkout; `Err` says why not (a usage
/// error: an unknown revision, no git, a limit passed).
pub(super) fn sources(spec: &str, limits: &ReadLimits) -> Result<Vec<Source>, String> {
    // --full-tree: in a subdirectory, ls-tree would otherwise keep only the
    // paths under it, relative to the repository's root.
    let listing = git(&["ls-tree", "-r", "-l", "-z", "--full-tree", spec])?;
    let mut files = Vec::new();
    let mut total = 0u64;
    for entry in listing.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        // `<mode> <type> <object> <size>\t<path>`
        let (meta, path) = entry
            .split_once('\t')
            .ok_or_else(|| format!("git ls-tree: unexpected line {entry:?}"))?;
        let fields: Vec<&str> = meta.split_whitespace().collect();
        let [mode, "blob", object, size] = fields[..] else {
            continue; // submodules: no files of ours
        };
        let is_policy = path.ends_with(".yaml") || path.ends_with(".yml");
        // Symlinks are not followed: their target is outside the tree.
        if !is_policy || mode == "120000" {
            continue;
        }
        if path.matches('/').count() > limits.depth {
            return Err(format!(
                "{spec}/{path}: deeper than {} levels",
                limits.depth
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| format!("git ls-tree: bad size in {entry:?}"))?;
        if size > limits.file_bytes {
            return Err(format!(
                "{spec}/{path}: larger than {} bytes",
                limits.file_bytes
            ));
        }
        total += size;
        if total > limits.total_bytes {
            return Err(format!(
                "{spec}: policy files larger than {} bytes",
                limits.total_bytes
            ));
        }
        files.push((path.to_string(), object.to_string()));
        if files.len() > limits.files {
            return Err(format!("{spec}: more than {} policy files", limits.files));
        }
    }
    if files.is_empty() {
        return Err(format!("{spec}: no policy files (*.yaml, *.yml)"));
    }
    files.sort();
    files
        .into_iter()
        .map(|(path, object)| {
            let text = git(&["cat-file", "blob", &object])?;
            Ok(Source {
                path: PathBuf::from(format!("{spec}/{path}")),
                text: String::from_utf8(text)
                    .map_err(|_| format!("{spec}/{path}: not UTF-8 text"))?,
            })
        })
        .collect()
}

fn git(args: &[&str]) -> Result<Vec<u8>, String> {
    let output = Command::new("git")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}
