//! After each reload that installs a new policy: what it did to verdicts
//! (`tollgate diff` between the policy that was in force and the new one),
//! in the log, bounded to [`MAX_LINES`] lines and a count of the rest.
//!
//! The diff is computed after the flip, on a thread of its own, so a reload
//! does not wait for it: the new verdicts are live before it starts. One
//! diff runs at a time; a reload that comes while one runs logs that its
//! diff was skipped instead of queueing work.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use crate::{
    logging::DAEMON_TARGET,
    policy::Policy,
    tables::CompiledPolicy,
    verdict_diff::{self, Side, render},
};

/// Lines of one reload's verdict diff in the log.
pub const MAX_LINES: usize = 20;

/// A policy in force: shared with the diff thread.
#[derive(Clone)]
pub struct PolicyAt {
    pub policy: Arc<Policy>,
    pub tables: Arc<CompiledPolicy>,
    pub generation: u64,
}

/// Logs the verdict diff from `old` to `new` on a thread of its own,
/// unless one is running (`busy`).
pub fn spawn(old: PolicyAt, new: PolicyAt, busy: &Arc<AtomicBool>) {
    if busy.swap(true, Ordering::AcqRel) {
        tracing::info!(
            target: DAEMON_TARGET,
            "verdict diff of generation {} skipped: the previous diff is still running",
            new.generation
        );
        return;
    }
    let done = Arc::clone(busy);
    let spawned = std::thread::Builder::new()
        .name("verdict-diff".into())
        .spawn(move || {
            log(&old, &new);
            // Often the last holder of the previous policy.
            drop((old, new));
            crate::heap::release_free_memory();
            done.store(false, Ordering::Release);
        });
    if let Err(e) = spawned {
        busy.store(false, Ordering::Release);
        tracing::warn!(target: DAEMON_TARGET, "verdict diff not computed: {e}");
    }
}

/// Computes and logs the diff (what [`spawn`] runs).
pub fn log(old: &PolicyAt, new: &PolicyAt) {
    let started = Instant::now();
    let diff = verdict_diff::verdict_changes(
        Side::new(&old.policy, &old.tables),
        Side::new(&new.policy, &new.tables),
    );
    let lines = render::lines(&diff, &new.policy);
    tracing::info!(
        target: DAEMON_TARGET,
        "verdict diff of generation {} from {}: {} ({:.1} ms)",
        new.generation,
        old.generation,
        if lines.is_empty() {
            "no verdict changes".to_string()
        } else {
            format!("{} line(s)", lines.len())
        },
        started.elapsed().as_secs_f64() * 1e3
    );
    if !lines.is_empty() {
        for line in render::text(&lines, MAX_LINES).lines() {
            tracing::info!(target: DAEMON_TARGET, "verdict diff: {line}");
        }
    }
}
