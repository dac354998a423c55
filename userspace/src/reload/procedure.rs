//! One reload, start to end: prepare the policy ([`Preparer`]), install it
//! when it differs from what runs, describe it to everything that labels
//! or reports the policy, and record how the attempt went. On any error the
//! running policy stays untouched.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::sync::watch;

use super::{
    ChangeSummary, Prepared, Preparer, kernel_check,
    verdict_log::{self, PolicyAt},
};
use crate::{
    config::Limits,
    control::{PolicyStatus, ReloadStatus, Status, unix_now},
    datapath::{Dataplane, InstallReport},
    deny_log,
    diagnostic::Diagnostic,
    expectations, labels,
    logging::DAEMON_TARGET,
    metrics::{Metrics, ScrapeView},
    policy::{Environment, Expectation, Policy},
    systemd::Watchdog,
    tables::CompiledPolicy,
};

/// The policy in force, as this process installed it (shared with the
/// thread that logs the verdict diff of the next reload).
struct Installed {
    policy: Arc<Policy>,
    tables: Arc<CompiledPolicy>,
    expectations: Vec<Expectation>,
    commit: Option<String>,
}

/// What a reload writes: the dataplane, and what describes the policy in
/// force to scrapes and `status`.
pub struct Targets {
    pub dataplane: Arc<Mutex<Dataplane>>,
    pub metrics: Arc<Metrics>,
    pub view: Arc<RwLock<ScrapeView>>,
    pub status: Arc<RwLock<Status>>,
}

/// Reloads the policy into the dataplane and keeps what describes it —
/// metrics, scrape labels, deny-event labels, status — in step.
pub struct Reloader {
    policy_dir: PathBuf,
    limits: Limits,
    targets: Targets,
    /// Kernel counter → labels, for the current and the previous policy
    /// (an event read just after a swap may name the previous one).
    event_labels: deny_log::Labels,
    /// Each group's labels, kept while it is unchanged.
    labels: labels::LabelCache,
    preparer: Preparer,
    installed: Option<Installed>,
    /// Policies installed since the start.
    generation: u64,
    /// A verdict diff is being computed (`verdict_log`).
    diffing: Arc<AtomicBool>,
}

impl Reloader {
    /// `preparer` has prepared nothing yet, or the policy the first
    /// [`Reloader::install_prepared`] installs (the daemon's start).
    pub fn new(
        policy_dir: PathBuf,
        limits: Limits,
        targets: Targets,
        preparer: Preparer,
    ) -> Reloader {
        Reloader {
            policy_dir,
            limits,
            targets,
            event_labels: Default::default(),
            labels: Default::default(),
            preparer,
            installed: None,
            generation: 0,
            diffing: Arc::default(),
        }
    }

    /// Loads, validates, compiles and installs the policy. Returns whether
    /// a policy this process installed is now in force. `trigger` names
    /// the cause in the log and the status: start, watch, sighup,
    /// addresses.
    pub async fn reload(
        &mut self,
        trigger: &str,
        env: Environment,
        stop: &mut watch::Receiver<bool>,
        watchdog: &mut Watchdog,
    ) -> bool {
        let started = Instant::now();
        let prepared = self
            .preparer
            .prepare(&self.policy_dir, env, self.limits, stop, watchdog)
            .await;
        self.install_prepared(trigger, prepared, started)
    }

    /// The rest of [`Reloader::reload`] after the preparation `started`
    /// then returned `prepared`: install it, and record the attempt.
    pub fn install_prepared(
        &mut self,
        trigger: &str,
        prepared: Result<Prepared, Vec<Diagnostic>>,
        started: Instant,
    ) -> bool {
        let (outcome, in_force) = match prepared.and_then(|p| self.install(p, started)) {
            Ok((summary, in_force)) => (Ok(summary), in_force),
            Err(errors) => (Err(errors), None),
        };
        self.record(trigger, started.elapsed(), &outcome, in_force);
        // Only now, with the new generation and its reload in the status:
        // packets still on the old slot are no reason to keep anyone from
        // seeing the new policy live.
        let grace = self
            .targets
            .dataplane
            .lock()
            .expect("dataplane lock")
            .settle();
        tracing::debug!(
            target: DAEMON_TARGET,
            "grace period after the flip: {:.1} ms",
            grace.as_secs_f64() * 1e3
        );
        outcome.is_ok() || self.installed.is_some()
    }

    /// Policies installed since the start.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Writes the policy in force into the inactive slot as well, off the
    /// main loop and without a flip. After a fresh start that slot is
    /// empty, so the first reload would write the whole policy there while
    /// an edit waits: 1.2·10^6 entries at fleet scale, seconds. Filled now,
    /// that reload writes its difference only. Skipped when a reload got
    /// the dataplane first.
    pub fn fill_inactive_slot(&self) {
        let Some(installed) = &self.installed else {
            return;
        };
        let tables = Arc::clone(&installed.tables);
        let dataplane = Arc::clone(&self.targets.dataplane);
        let generation = dataplane.lock().expect("dataplane lock").generation();
        tokio::task::spawn_blocking(move || {
            let mut dataplane = dataplane.lock().expect("dataplane lock");
            if dataplane.generation() != generation {
                return;
            }
            let begin = std::time::Instant::now();
            // Dropped unflipped: the slot keeps what was written, and the
            // next install diffs against it.
            match dataplane.stage(&tables) {
                Ok(staged) => {
                    let w = staged.writes();
                    tracing::info!(
                        "inactive slot filled with the policy in force in {:?} \
                         ({} map writes, {} trie words)",
                        begin.elapsed(),
                        w.inserted + w.removed,
                        w.trie_words
                    );
                }
                Err(e) => tracing::warn!(
                    "filling the inactive slot failed (the next reload writes it): {e:#}"
                ),
            }
        });
    }

    /// The tables of the policy this process installed, if any.
    pub fn tables(&self) -> Option<&CompiledPolicy> {
        self.installed.as_ref().map(|i| &*i.tables)
    }

    /// The git commit of the policy this process installed, if known.
    pub fn commit(&self) -> Option<&str> {
        self.installed.as_ref().and_then(|i| i.commit.as_deref())
    }

    /// What the deny-event reader labels events with.
    pub fn event_labels(&self) -> deny_log::Labels {
        self.event_labels.clone()
    }

    /// Swaps `prepared` in (when it differs from what runs) and describes
    /// it. Returns the change summary, and the status of the policy now in
    /// force if it changed (for [`Reloader::record`] to publish with the
    /// reload); `Err` holds the failed `expect:` cases, or what made the
    /// install fail.
    fn install(
        &mut self,
        prepared: Prepared,
        started: Instant,
    ) -> Result<(String, Option<PolicyStatus>), Vec<Diagnostic>> {
        for w in &prepared.warnings {
            tracing::warn!(target: DAEMON_TARGET, "{w}");
        }
        let summary = ChangeSummary::between(
            self.installed.as_ref().map(|i| &*i.policy),
            &prepared.policy,
        );
        let commit = prepared.commit.clone().unwrap_or_default();
        if let Some(current) = &mut self.installed
            && *current.tables == prepared.tables
            && *current.policy == prepared.policy
            && current.expectations == prepared.expectations
        {
            tracing::info!(
                target: DAEMON_TARGET,
                "policy unchanged (generation {}, commit {})",
                self.generation,
                if commit.is_empty() { "none" } else { &commit }
            );
            if current.commit != prepared.commit {
                current.commit = prepared.commit.clone();
                self.targets.metrics.policy_info.reset();
                self.targets
                    .metrics
                    .policy_info
                    .with_label_values(&[&commit])
                    .set(1);
                self.targets
                    .status
                    .write()
                    .expect("status lock")
                    .policy
                    .commit = prepared.commit;
            }
            return Ok(("unchanged".into(), None));
        }
        let report = self.swap_in(&prepared)?;
        self.generation += 1;
        tracing::info!(
            target: DAEMON_TARGET,
            "policy generation {} in force (commit {}): {summary}; {} entries, {} map writes, {} expect: cases passed on the kernel, swap {:.1} ms, reload {:.1} ms",
            self.generation,
            if commit.is_empty() { "none" } else { &commit },
            prepared.tables.destinations.len()
                + prepared.tables.device_exact.len()
                + prepared.tables.device_prefixes.len(),
            report.writes.inserted + report.writes.removed,
            prepared.expectations.len(),
            report.total.as_secs_f64() * 1e3,
            started.elapsed().as_secs_f64() * 1e3,
        );
        let in_force = self
            .describe(&prepared)
            .map_err(|e| self.install_failed(&e))?;
        let installed = Installed {
            policy: Arc::new(prepared.policy),
            tables: Arc::new(prepared.tables),
            expectations: prepared.expectations,
            commit: prepared.commit,
        };
        let new = PolicyAt {
            policy: Arc::clone(&installed.policy),
            tables: Arc::clone(&installed.tables),
            generation: self.generation,
        };
        if let Some(previous) = self.installed.replace(installed) {
            let old = PolicyAt {
                policy: previous.policy,
                tables: previous.tables,
                generation: self.generation - 1,
            };
            verdict_log::spawn(old, new, &self.diffing);
        }
        Ok((summary.to_string(), Some(in_force)))
    }

    /// Writes the inactive slot, runs every `expect:` case on the model and
    /// on the kernel against that slot, and flips to it only when all pass.
    /// Otherwise the slot stays unused, the policy in force stays, and each
    /// failed case is counted and returned.
    fn swap_in(&self, prepared: &Prepared) -> Result<InstallReport, Vec<Diagnostic>> {
        let (tables, cases) = (&prepared.tables, &prepared.expectations);
        let mut failed = expectations::failures_on_model(tables, cases);
        let mut dataplane = self.targets.dataplane.lock().expect("dataplane lock");
        if failed.is_empty() {
            let staged = dataplane
                .stage(tables)
                .map_err(|e| self.install_failed(&e))?;
            failed = kernel_check::failures(&mut dataplane, &staged, tables, cases)
                .map_err(|e| self.install_failed(&e))?;
            if failed.is_empty() {
                return dataplane.flip(staged).map_err(|e| self.install_failed(&e));
            }
        }
        self.targets
            .metrics
            .expectations_failed
            .inc_by(failed.len() as u64);
        Err(failed)
    }

    /// An install that failed for a reason of its own, as a diagnostic
    /// about the policy directory.
    fn install_failed(&self, e: &anyhow::Error) -> Vec<Diagnostic> {
        vec![Diagnostic::error(
            &self.policy_dir,
            0,
            0,
            "",
            format!("install failed: {e:#}"),
        )]
    }

    /// Refreshes metrics labels and event labels for a new policy; its
    /// status, returned, is published with the reload's.
    fn describe(&mut self, p: &Prepared) -> Result<PolicyStatus> {
        let labels = {
            let dp = self.targets.dataplane.lock().expect("dataplane lock");
            self.labels
                .update(&p.policy, &p.tables, |logical| dp.counter_index(logical))?
        };
        {
            let mut view = self.targets.view.write().expect("view lock");
            view.groups = p.tables.groups.iter().map(|g| g.name.clone()).collect();
            view.rules = labels.rules;
        }
        // Keep the previous policy's labels: events may still name them.
        self.event_labels
            .write()
            .expect("labels lock")
            .extend(labels.events);
        self.targets.metrics.generation.set(self.generation as i64);
        self.targets.metrics.policy_info.reset();
        self.targets
            .metrics
            .policy_info
            .with_label_values(&[p.commit.as_deref().unwrap_or("")])
            .set(1);
        self.targets.metrics.policy_rules.reset();
        for g in &p.policy.groups {
            self.targets
                .metrics
                .policy_rules
                .with_label_values(&[&g.name])
                .set(g.rules.len() as i64);
        }
        Ok(PolicyStatus {
            dir: self.policy_dir.clone(),
            generation: self.generation,
            commit: p.commit.clone(),
            groups: p.policy.groups.len(),
            rules: p.policy.rule_count(),
            installed_at_unix: unix_now(),
            gateway: p.policy.gateway.clone(),
        })
    }

    /// The reload metrics, the status' `last_reload` (with the policy now
    /// `in_force`, if it changed, in the same write: a status that names a
    /// generation names the reload that made it), and on failure the
    /// errors in the log.
    fn record(
        &self,
        trigger: &str,
        elapsed: Duration,
        outcome: &Result<String, Vec<Diagnostic>>,
        in_force: Option<PolicyStatus>,
    ) {
        self.targets
            .metrics
            .last_reload_timestamp
            .set(unix_now() as f64);
        self.targets
            .metrics
            .last_reload_duration
            .set(elapsed.as_secs_f64());
        let (success, errors, summary) = match outcome {
            Ok(summary) => (true, Vec::new(), summary.clone()),
            Err(errors) => {
                self.log_failure(trigger, errors);
                let errors = errors
                    .iter()
                    .filter(|d| d.is_error())
                    .map(ToString::to_string)
                    .collect();
                (false, errors, String::new())
            }
        };
        let result = if success { "success" } else { "failure" };
        self.targets
            .metrics
            .reloads
            .with_label_values(&[result])
            .inc();
        self.targets
            .metrics
            .last_reload_success
            .set(i64::from(success));
        let mut status = self.targets.status.write().expect("status lock");
        if let Some(policy) = in_force {
            status.policy = policy;
        }
        status.last_reload = Some(ReloadStatus {
            success,
            at_unix: unix_now(),
            duration_ms: elapsed.as_secs_f64() * 1e3,
            trigger: trigger.into(),
            errors,
            summary,
        });
    }

    fn log_failure(&self, trigger: &str, errors: &[Diagnostic]) {
        let in_force = if self.installed.is_some() {
            format!("generation {} stays in force", self.generation)
        } else {
            "the policy already in the dataplane stays in force".into()
        };
        tracing::error!(
            target: DAEMON_TARGET,
            "policy reload ({trigger}) failed with {} error(s); {in_force}",
            errors.iter().filter(|d| d.is_error()).count()
        );
        for d in errors {
            if d.is_error() {
                tracing::error!(target: DAEMON_TARGET, "{d}");
            } else {
                tracing::warn!(target: DAEMON_TARGET, "{d}");
            }
        }
    }
}
