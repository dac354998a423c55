//! Change detection for the policy directory.
//!
//! Deploy tools update a policy directory in three ways, all handled here:
//! editing files in place (`git pull`, an editor), renaming a new directory
//! over the old one, and re-pointing a symlink (`ln -sfn new current`). We
//! watch the resolved directory recursively *and* the parent of the
//! configured path, and re-resolve the path after every change. Bursts (a
//! checkout touching 50 files) are debounced into one trigger, and while a
//! git command is rewriting the checkout (it holds `index.lock`), the
//! trigger waits for it to finish, so a half-applied checkout is never
//! loaded however slowly git writes. Tools other than git should deploy by
//! renaming or re-pointing a symlink, which is one atomic change.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// Quiet time after the last change before a reload starts: an editor's
/// save (write to a temporary file, rename) is a few events within a
/// millisecond or two; a git operation is covered by its lock instead.
pub const DEBOUNCE: Duration = Duration::from_millis(15);
/// A continuous stream of changes still reloads this often.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// How often a reload held for a running git command checks again.
const GIT_POLL: Duration = Duration::from_millis(10);
/// A git command holding its lock longer than this (or a stale lock left by
/// a crashed one) no longer holds the reload back.
pub const GIT_HOLD_MAX: Duration = Duration::from_secs(30);

pub struct PolicyWatcher {
    configured: PathBuf,
    resolved: Option<PathBuf>,
    /// (device, inode) of `resolved`: a directory renamed over the old one
    /// has the same path but is another directory, needing a new watch.
    identity: Option<(u64, u64)>,
    watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<PathBuf>,
    /// A change was seen and not yet reported. Kept here, not in the
    /// future, so `changed` is cancel-safe.
    pending: Option<Pending>,
}

#[derive(Clone, Copy)]
struct Pending {
    /// End of the quiet period (moved by every further change).
    quiet: tokio::time::Instant,
    /// Latest reload time for a continuous stream of changes.
    deadline: tokio::time::Instant,
    /// When the first change of this trigger was seen.
    since: tokio::time::Instant,
}

impl PolicyWatcher {
    pub fn new(configured: &Path) -> Result<PolicyWatcher> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                // Opening a directory (notify does, to add recursive
                // watches) is not a change.
                Ok(event) if event.kind.is_access() => {}
                Ok(event) => {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
                // An overflowed inotify queue loses events: reload to be safe.
                Err(e) => {
                    tracing::warn!("policy watch: {e}");
                    let _ = tx.send(PathBuf::new());
                }
            }
        })
        .context("create inotify watcher")?;
        let parent = configured
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        watcher
            .watch(parent, RecursiveMode::NonRecursive)
            .with_context(|| format!("watch {}", parent.display()))?;
        let mut w = PolicyWatcher {
            configured: configured.to_path_buf(),
            resolved: None,
            identity: None,
            watcher,
            events,
            pending: None,
        };
        w.rewatch();
        Ok(w)
    }

    /// Follows the configured path to its current target and watches that.
    fn rewatch(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let target = self.configured.canonicalize().ok();
        let identity = target
            .as_ref()
            .and_then(|t| std::fs::metadata(t).ok())
            .map(|m| (m.dev(), m.ino()));
        if target == self.resolved && identity == self.identity {
            return;
        }
        if let Some(old) = self.resolved.take() {
            let _ = self.watcher.unwatch(&old);
        }
        self.identity = None;
        if let Some(new) = &target {
            match self.watcher.watch(new, RecursiveMode::Recursive) {
                Ok(()) => {
                    tracing::debug!("watching {}", new.display());
                    self.resolved = target;
                    self.identity = identity;
                }
                Err(e) => tracing::warn!("cannot watch {}: {e}", new.display()),
            }
        }
    }

    fn relevant(&self, path: &Path) -> bool {
        if path.as_os_str().is_empty() {
            return true;
        }
        if path.components().any(|c| c.as_os_str() == ".git") {
            return false;
        }
        let in_target = self
            .resolved
            .as_deref()
            .is_some_and(|r| path.starts_with(r));
        let is_configured = path.file_name() == self.configured.file_name()
            && path.parent().map(|p| p.canonicalize().ok())
                == self.configured.parent().map(|p| p.canonicalize().ok());
        in_target || is_configured
    }

    /// Whether a git command is rewriting the watched checkout.
    fn git_busy(&self) -> bool {
        crate::git::operation_in_progress(self.resolved.as_deref().unwrap_or(&self.configured))
    }

    /// Waits for the next change, then for the burst it belongs to to end
    /// and for a git command writing the checkout to finish. Returns `None`
    /// when the watcher is gone. Cancel-safe: dropping the future (another
    /// `select!` branch won) loses no change.
    pub async fn changed(&mut self) -> Option<()> {
        loop {
            match self.pending {
                None => {
                    let path = self.events.recv().await?;
                    if self.relevant(&path) {
                        let now = tokio::time::Instant::now();
                        self.pending = Some(Pending {
                            quiet: now + DEBOUNCE,
                            deadline: now + MAX_DELAY,
                            since: now,
                        });
                    }
                }
                Some(pending) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(pending.quiet.min(pending.deadline)) => {
                            let now = tokio::time::Instant::now();
                            if self.git_busy() {
                                if now < pending.since + GIT_HOLD_MAX {
                                    self.pending = Some(Pending {
                                        quiet: now + GIT_POLL,
                                        deadline: now + GIT_POLL,
                                        ..pending
                                    });
                                    continue;
                                }
                                tracing::warn!(
                                    "git has held index.lock for {GIT_HOLD_MAX:?} (a stale lock?); \
                                     reloading anyway"
                                );
                            }
                            self.pending = None;
                            self.rewatch();
                            return Some(());
                        }
                        more = self.events.recv() => {
                            let path = more?;
                            if self.relevant(&path) {
                                let quiet = tokio::time::Instant::now() + DEBOUNCE;
                                self.pending = Some(Pending { quiet, ..pending });
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tollgate-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn expect_change(w: &mut PolicyWatcher) {
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .expect("a change was reported")
            .expect("watcher alive");
    }

    async fn expect_quiet(w: &mut PolicyWatcher) {
        assert!(
            tokio::time::timeout(Duration::from_millis(500), w.changed())
                .await
                .is_err(),
            "no further change expected"
        );
    }

    #[tokio::test]
    async fn a_running_git_command_holds_the_reload_until_it_is_done() {
        let root = temp_dir("git-lock");
        let policies = root.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        let git = std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(git.success());
        let lock = root.join(".git/index.lock");
        let mut w = PolicyWatcher::new(&policies).unwrap();
        // What a checkout looks like: the lock, files written well apart
        // (a slow disk, a big checkout), then the lock goes.
        std::fs::write(&lock, "").unwrap();
        std::fs::write(policies.join("a.yaml"), "x").unwrap();
        expect_quiet(&mut w).await;
        std::fs::write(policies.join("b.yaml"), "x").unwrap();
        expect_quiet(&mut w).await;
        std::fs::remove_file(&lock).unwrap();
        expect_change(&mut w).await;
        expect_quiet(&mut w).await;
        // Without the lock, a change is reported after the debounce.
        std::fs::write(policies.join("c.yaml"), "x").unwrap();
        expect_change(&mut w).await;
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn a_burst_of_fifty_files_is_one_change() {
        let root = temp_dir("burst");
        let policies = root.join("policies");
        std::fs::create_dir_all(policies.join("sub")).unwrap();
        let mut w = PolicyWatcher::new(&policies).unwrap();
        for i in 0..50 {
            std::fs::write(policies.join(format!("sub/f{i}.yaml")), "x").unwrap();
        }
        expect_change(&mut w).await;
        expect_quiet(&mut w).await;
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn symlink_swap_and_rename_are_seen_and_followed() {
        let root = temp_dir("swap");
        let v1 = root.join("v1");
        let v2 = root.join("v2");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::create_dir_all(&v2).unwrap();
        let current = root.join("current");
        std::os::unix::fs::symlink(&v1, &current).unwrap();
        let mut w = PolicyWatcher::new(&current).unwrap();

        // ln -sfn v2 current, done atomically as deploy tools do.
        let tmp = root.join("current.tmp");
        std::os::unix::fs::symlink(&v2, &tmp).unwrap();
        std::fs::rename(&tmp, &current).unwrap();
        expect_change(&mut w).await;
        assert_eq!(
            w.resolved.as_deref(),
            Some(v2.canonicalize().unwrap().as_path())
        );

        // Edits in the new target are seen, edits in the old one are not.
        std::fs::write(v1.join("old.yaml"), "x").unwrap();
        expect_quiet(&mut w).await;
        std::fs::write(v2.join("new.yaml"), "x").unwrap();
        expect_change(&mut w).await;

        // A directory renamed over the configured path.
        let plain = root.join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let mut w = PolicyWatcher::new(&plain).unwrap();
        let staged = root.join("plain.new");
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::write(staged.join("a.yaml"), "x").unwrap();
        std::fs::remove_dir_all(&plain).unwrap();
        std::fs::rename(&staged, &plain).unwrap();
        expect_change(&mut w).await;
        std::fs::write(plain.join("b.yaml"), "x").unwrap();
        expect_change(&mut w).await;
        std::fs::remove_dir_all(&root).unwrap();
    }
}
