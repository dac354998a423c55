//! The commit a policy directory is checked out at, read straight from the
//! repository's files (no `git` binary needed on the gateway).

use std::path::{Path, PathBuf};

/// The commit id of the checkout containing `dir`, if it is in one.
pub fn head_commit(dir: &Path) -> Option<String> {
    let git_dir = find_git_dir(dir)?;
    let common_dir = common_dir(&git_dir);
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    match head.strip_prefix("ref: ") {
        None => is_object_id(head).then(|| head.to_string()),
        Some(reference) => resolve(&common_dir, &git_dir, reference),
    }
}

/// Whether a git command is writing the checkout containing `dir`: git
/// holds `index.lock` in the repository while a checkout, pull, merge or
/// reset rewrites the work tree, and removes it when done.
pub fn operation_in_progress(dir: &Path) -> bool {
    find_git_dir(dir).is_some_and(|git_dir| git_dir.join("index.lock").exists())
}

/// The `.git` directory for `dir`: walks up; follows `gitdir:` files
/// (worktrees, submodules).
fn find_git_dir(dir: &Path) -> Option<PathBuf> {
    let start = dir.canonicalize().ok()?;
    for candidate in start.ancestors() {
        let dot_git = candidate.join(".git");
        if dot_git.is_dir() {
            return Some(dot_git);
        }
        if dot_git.is_file() {
            let text = std::fs::read_to_string(&dot_git).ok()?;
            let target = text.trim().strip_prefix("gitdir: ")?;
            return Some(candidate.join(target));
        }
    }
    None
}

/// Worktrees keep refs in the main repository (`commondir`).
fn common_dir(git_dir: &Path) -> PathBuf {
    match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(rel) => git_dir.join(rel.trim()),
        Err(_) => git_dir.to_path_buf(),
    }
}

fn resolve(common_dir: &Path, git_dir: &Path, reference: &str) -> Option<String> {
    for dir in [git_dir, common_dir] {
        if let Ok(id) = std::fs::read_to_string(dir.join(reference)) {
            let id = id.trim();
            if is_object_id(id) {
                return Some(id.to_string());
            }
        }
    }
    let packed = std::fs::read_to_string(common_dir.join("packed-refs")).ok()?;
    packed
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
        .find_map(|l| {
            let (id, name) = l.split_once(' ')?;
            (name == reference && is_object_id(id)).then(|| id.to_string())
        })
}

fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t", "-C"])
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn temp_repo() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-git-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join("policies/a.yaml"), "groups: {}\n").unwrap();
        git(&dir, &["add", "."]);
        git(&dir, &["commit", "-qm", "one"]);
        dir
    }

    #[test]
    fn reads_branch_detached_and_packed_heads() {
        let repo = temp_repo();
        let policies = repo.join("policies");
        let first = git(&repo, &["rev-parse", "HEAD"]);
        assert_eq!(head_commit(&policies), Some(first.clone()));

        std::fs::write(policies.join("b.yaml"), "lists: {}\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-qm", "two"]);
        git(&repo, &["pack-refs", "--all"]);
        let second = git(&repo, &["rev-parse", "HEAD"]);
        assert_eq!(head_commit(&policies), Some(second));

        git(&repo, &["checkout", "-q", &first]);
        assert_eq!(head_commit(&policies), Some(first));
        std::fs::remove_dir_all(&repo).unwrap();
    }

    #[test]
    fn worktrees_resolve_through_the_common_dir() {
        let repo = temp_repo();
        let wt = repo.with_extension("wt");
        let _ = std::fs::remove_dir_all(&wt);
        git(&repo, &["worktree", "add", "-q", wt.to_str().unwrap()]);
        assert_eq!(
            head_commit(&wt.join("policies")),
            Some(git(&repo, &["rev-parse", "HEAD"]))
        );
        std::fs::remove_dir_all(&wt).unwrap();
        std::fs::remove_dir_all(&repo).unwrap();
    }

    #[test]
    fn a_plain_directory_has_no_commit() {
        assert_eq!(head_commit(Path::new("/proc/self")), None);
    }
}
