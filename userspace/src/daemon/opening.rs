//! The start's two long steps, side by side: opening the dataplane (the
//! BPF verifier checks every program) on one blocking thread, reading,
//! validating and compiling the policy ([`Preparer`]) on another. At fleet
//! scale each takes over a second and neither needs the other; the
//! install waits for both, so what READY=1 means does not change.

use std::time::Instant;

use anyhow::{Context as _, Result};
use tokio::sync::watch;

use crate::{
    config::Config,
    datapath::{Dataplane, Options, Start},
    diagnostic::Diagnostic,
    policy::Environment,
    reload::{Prepared, Preparer},
    systemd::Watchdog,
};

/// The dataplane, opened, and the first policy, prepared or not.
pub(super) struct Opened {
    pub dataplane: Dataplane,
    /// Holds what the preparation parsed, for the reloads after it.
    pub preparer: Preparer,
    pub prepared: Result<Prepared, Vec<Diagnostic>>,
    /// When the preparation began: the start's reload is timed from it.
    pub started: Instant,
}

/// Opens the dataplane while the policy in `config.policy_dir` is
/// prepared for `env`. A dataplane that fails to open is the start's
/// error whatever the policy holds, as when the two ran one after the
/// other; the policy's errors are the first install's to report.
pub(super) async fn open_and_prepare(
    config: &Config,
    env: Environment,
    stop: &mut watch::Receiver<bool>,
    watchdog: &mut Watchdog,
) -> Result<Opened> {
    let opening = tokio::task::spawn_blocking({
        let config = config.clone();
        move || open_dataplane(&config)
    });
    let started = Instant::now();
    let mut preparer = Preparer::default();
    let prepared = preparer
        .prepare(&config.policy_dir, env, config.limits, stop, watchdog)
        .await;
    if prepared.is_ok() {
        let ms = started.elapsed().as_millis();
        tracing::info!("policy read, validated and compiled in {ms} ms");
    }
    let dataplane = opening.await.context("open the dataplane")??;
    Ok(Opened {
        dataplane,
        preparer,
        prepared,
        started,
    })
}

/// Opens the dataplane, adopting what a previous run pinned, and says how
/// it was found and how long it took.
fn open_dataplane(config: &Config) -> Result<Dataplane> {
    let begin = Instant::now();
    let dataplane = Dataplane::open(&Options {
        pin_dir: Some(config.pin_dir.clone()),
        limits: config.limits,
        deny_events: config.deny_events,
        reject_replies: config.reject_replies,
        pass_ethertypes: config.pass_ethertypes.clone(),
    })?;
    let ms = begin.elapsed().as_millis();
    match dataplane.start() {
        Start::Fresh => tracing::info!("dataplane loaded in {ms} ms (fresh start)"),
        Start::Adopted => tracing::info!(
            "dataplane adopted from {} in {ms} ms (the last policy stayed in force meanwhile)",
            config.pin_dir.display()
        ),
        Start::Upgraded { reason } => tracing::warn!(
            "dataplane layout changed ({reason}): new maps, counters restart from zero; \
             the previous program keeps filtering until it is replaced (loaded in {ms} ms)"
        ),
    }
    Ok(dataplane)
}
