//! Shape (b)'s policy directory as a git checkout, for the `git pull`
//! kind: the files as they are become the base commit, and a chain of
//! commits after it cycles through other trees (some files changed) and
//! back to the base, so that every fast-forward changes the same rules.
//! (Three states at least: with two, the dataplane's inactive slot would
//! already hold the state a pull brings, and the pull would write
//! nothing.) The chain is built with git's plumbing (`hash-object`,
//! `update-index` on an index of its own, `write-tree`, `commit-tree`),
//! which writes only inside `.git`: the checkout, and so the watcher, sees
//! nothing until a pull. A pull is `git merge --ff-only` to the next
//! commit: what `git pull` does once it has fetched (the fetch is the
//! network's time, not the gateway's).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, ensure};

pub struct GitChain {
    dir: PathBuf,
    commits: Vec<String>,
    /// The base and the changed states.
    states: usize,
    next: usize,
}

impl GitChain {
    /// Makes `dir` a repository whose base commit (state 0) holds its
    /// files as they are, followed by `count` commits cycling through the
    /// states `1..states` and 0: state `s` is the base with the files
    /// `files_of(s)` (relative path, text; one state's texts at a time in
    /// memory). `scratch` (outside `dir`) holds git's temporary files and
    /// is removed.
    pub fn create(
        dir: &Path,
        scratch: &Path,
        states: usize,
        files_of: impl Fn(usize) -> Vec<(String, String)>,
        count: usize,
    ) -> Result<GitChain> {
        git(dir, &["init", "-q", "-b", "main"], None)?;
        // Local to this repository: the bench never touches the user's
        // or the system's git configuration.
        for (key, value) in [
            ("user.name", "tollgate reload bench"),
            ("user.email", "bench@localhost"),
            ("commit.gpgsign", "false"),
        ] {
            git(dir, &["config", key, value], None)?;
        }
        git(dir, &["add", "-A"], None)?;
        git(dir, &["commit", "-q", "-m", "base"], None)?;
        let base = git(dir, &["rev-parse", "HEAD"], None)?;
        let base_tree = git(dir, &["rev-parse", "HEAD^{tree}"], None)?;

        std::fs::create_dir_all(scratch)?;
        let mut trees = vec![base_tree];
        for state in 1..states {
            let tree = tree_with(dir, scratch, &files_of(state))?;
            ensure!(!trees.contains(&tree), "a state the same as another");
            trees.push(tree);
        }
        std::fs::remove_dir_all(scratch)?;

        let mut commits = Vec::with_capacity(count);
        let mut parent = base;
        for k in 1..=count {
            let tree = &trees[k % trees.len()];
            let message = format!("pull {k}");
            parent = git(
                dir,
                &["commit-tree", tree, "-p", &parent, "-m", &message],
                None,
            )?;
            commits.push(parent.clone());
        }
        Ok(GitChain {
            dir: dir.to_path_buf(),
            commits,
            states: trees.len(),
            next: 0,
        })
    }

    /// Fast-forwards the checkout to the next commit; the state it holds.
    pub fn pull(&mut self) -> Result<usize> {
        let commit = self
            .commits
            .get(self.next)
            .context("no commit left in the chain")?;
        git(&self.dir, &["merge", "--ff-only", "-q", commit], None)?;
        self.next += 1;
        Ok(self.next % self.states)
    }
}

/// The tree of HEAD with `changed` (relative path, text) written in,
/// built in `scratch` without touching the checkout.
fn tree_with(dir: &Path, scratch: &Path, changed: &[(String, String)]) -> Result<String> {
    let mut paths = String::new();
    for (i, (_, text)) in changed.iter().enumerate() {
        let path = scratch.join(i.to_string());
        std::fs::write(&path, text)?;
        paths.push_str(&format!("{}\n", path.display()));
    }
    let blobs = git(dir, &["hash-object", "-w", "--stdin-paths"], Some(&paths))?;
    let mut index_info = String::new();
    for ((path, _), blob) in changed.iter().zip(blobs.lines()) {
        index_info.push_str(&format!("100644 {blob}\t{path}\n"));
    }
    let index = scratch.join("index");
    let with_index = |args: &[&str], stdin: Option<&str>| {
        git_env(dir, args, stdin, &[("GIT_INDEX_FILE", &index)])
    };
    with_index(&["read-tree", "HEAD"], None)?;
    with_index(&["update-index", "--index-info"], Some(&index_info))?;
    with_index(&["write-tree"], None)
}

fn git(dir: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    git_env(dir, args, stdin, &[])
}

/// Runs git in `dir`; its trimmed output.
fn git_env(
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &Path)],
) -> Result<String> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run git")?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("git's stdin")?
            .write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
