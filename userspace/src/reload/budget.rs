//! Preparing a policy off the main loop, within `limits.reload-timeout`:
//! signals, status, metrics and NTP keep answering whatever the policy
//! directory holds, and a preparation that takes too long is abandoned.

use std::path::{Path, PathBuf};

use humantime_serde::re::humantime::format_duration;
use tokio::{sync::watch, task::JoinHandle};

use super::{PrepareCache, Prepared, prepare};
use crate::{config::Limits, diagnostic::Diagnostic, policy::Environment, systemd::Watchdog};

/// What a preparation's blocking task hands back: the outcome and the
/// cache.
type Finished = (Result<Prepared, Vec<Diagnostic>>, PrepareCache);

/// Runs [`prepare`] on a blocking thread, one preparation at a time.
#[derive(Default)]
pub struct Preparer {
    /// The policy files as last parsed, validated and compiled. Moved into each preparation's
    /// thread and back; one abandoned past its budget takes it along, and
    /// the next one starts afresh.
    cache: Option<PrepareCache>,
    /// A preparation abandoned past its budget (its thread cannot be
    /// killed), still running.
    abandoned: Option<JoinHandle<Finished>>,
}

impl Preparer {
    /// Prepares the policy in `dir` within `limits.reload_timeout`. Gives
    /// up early when `stop` turns true; pings `watchdog` while it waits.
    pub async fn prepare(
        &mut self,
        dir: &Path,
        env: Environment,
        limits: Limits,
        stop: &mut watch::Receiver<bool>,
        watchdog: &mut Watchdog,
    ) -> Result<Prepared, Vec<Diagnostic>> {
        let budget = limits.reload_timeout;
        // One preparation at a time: one abandoned past its budget is
        // waited for first, within this budget.
        if let Some(mut previous) = self.abandoned.take() {
            let finished = {
                let wait = tokio::time::timeout(budget, &mut previous);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        done = &mut wait => break done.is_ok(),
                        _ = stop.wait_for(|s| *s) => break false,
                        _ = watchdog.ping() => {}
                    }
                }
            };
            if !finished {
                self.abandoned = Some(previous);
            }
        }
        if self.abandoned.is_some() {
            return Err(vec![error(
                dir,
                format!(
                    "an earlier reload abandoned past limits.reload-timeout ({}) is still running; \
                     this one is retried on the next change or SIGHUP",
                    format_duration(budget)
                ),
            )]);
        }
        let mut cache = self.cache.take().unwrap_or_default();
        let owned_dir: PathBuf = dir.to_path_buf();
        let mut task = tokio::task::spawn_blocking(move || {
            let prepared = prepare(&owned_dir, &env, &limits, &mut cache);
            (prepared, cache)
        });
        // The wait stays in the main loop's task, which keeps pinging the
        // watchdog meanwhile.
        let joined = {
            let wait = tokio::time::timeout(budget, &mut task);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    joined = &mut wait => break Some(joined),
                    _ = stop.wait_for(|s| *s) => break None,
                    _ = watchdog.ping() => {}
                }
            }
        };
        match joined {
            Some(Ok(Ok((prepared, cache)))) => {
                self.cache = Some(cache);
                prepared
            }
            Some(Ok(Err(crashed))) => Err(vec![Diagnostic::error(
                Path::new(""),
                0,
                0,
                "",
                format!("policy loader crashed: {crashed}"),
            )]),
            Some(Err(_)) => {
                self.abandoned = Some(task);
                Err(vec![error(
                    dir,
                    format!(
                        "preparing the policy took longer than limits.reload-timeout ({}); \
                         abandoned",
                        format_duration(budget)
                    ),
                )])
            }
            None => {
                self.abandoned = Some(task);
                Err(vec![error(
                    dir,
                    "reload abandoned: the controller is stopping".into(),
                )])
            }
        }
    }
}

fn error(dir: &Path, message: String) -> Diagnostic {
    Diagnostic::error(dir, 0, 0, "", message)
}
