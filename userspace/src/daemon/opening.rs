//! The start's two long steps, side by side: opening the dataplane (the
//! BPF verifier checks the programs the interfaces present will run; the
//! others wait until after READY=1) on one blocking thread, reading,
//! validating and compiling the policy ([`Preparer`]) on another. At fleet
//! scale each takes over a second and neither needs the other; the
//! install waits for both, so what READY=1 means does not change.

use std::{sync::Mutex, time::Instant};

use anyhow::{Context as _, Result};
use tokio::sync::watch;

use crate::{
    config::Config,
    datapath::{Dataplane, Options, Start, attach::AttachMode},
    diagnostic::Diagnostic,
    links,
    logging::DAEMON_TARGET,
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

/// The hook programs the configured interfaces present now will run: the
/// one of the first mode their attach policy tries on their kind of link.
/// Verified before READY=1; the others after it ([`verify_other_hooks`]),
/// or by an attach that falls back to another mode. An interface that is
/// missing, or of a kind Tollgate refuses, needs none now.
fn hooks_at_start(config: &Config) -> Vec<&'static str> {
    let mut hooks = Vec::new();
    for name in &config.interfaces {
        let Ok(Some(link)) = links::find(name) else {
            continue;
        };
        let Ok(kind) = link.kind() else { continue };
        let Ok(modes) = AttachMode::candidates(config.attach, kind) else {
            continue;
        };
        if let Some(mode) = modes.first()
            && !hooks.contains(&mode.program(kind))
        {
            hooks.push(mode.program(kind));
        }
    }
    hooks
}

/// Which hooks the start verified, and which wait for READY=1.
fn hooks_note(dataplane: &Dataplane) -> String {
    let later = dataplane.late_hooks().unverified();
    let now: Vec<&str> = tollgate_common::PROGRAMS
        .into_iter()
        .filter(|h| !later.contains(h))
        .collect();
    let list = |hooks: &[&str]| match hooks {
        [] => "none".to_string(),
        _ => hooks.join(", "),
    };
    format!(
        "hooks verified now: {}; after READY=1: {}",
        list(&now),
        list(&later)
    )
}

/// Verifies the hook programs the start did not, one at a time on a
/// blocking thread, holding only the BPF object (reloads, scrapes and the
/// deny log go on): run after READY=1, so that an interface that appears
/// later is attached without waiting for the verifier. A rejection is
/// logged here and fails the attach that needs the hook.
pub(super) fn verify_other_hooks(dataplane: &Mutex<Dataplane>) {
    let hooks = dataplane.lock().expect("dataplane lock").late_hooks();
    tokio::task::spawn_blocking(move || {
        let begin = Instant::now();
        let mut verified = Vec::new();
        for name in hooks.unverified() {
            match hooks.verify(name) {
                Ok(()) => verified.push(name),
                Err(e) => tracing::error!(
                    target: DAEMON_TARGET,
                    "{e:#}: interfaces that need {name} cannot be attached"
                ),
            }
        }
        if !verified.is_empty() {
            tracing::info!(
                "hooks verified after READY=1 in {} ms: {}",
                begin.elapsed().as_millis(),
                verified.join(", ")
            );
        }
    });
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
        hooks_at_open: Some(hooks_at_start(config)),
        narrow_tries: false,
        small_roots: false,
    })?;
    let ms = begin.elapsed().as_millis();
    let hooks = hooks_note(&dataplane);
    match dataplane.start() {
        Start::Fresh => tracing::info!("dataplane loaded in {ms} ms (fresh start; {hooks})"),
        Start::Adopted => tracing::info!(
            "dataplane adopted from {} in {ms} ms (the last policy stayed in force meanwhile; \
             {hooks})",
            config.pin_dir.display()
        ),
        Start::Upgraded { reason } => tracing::warn!(
            "dataplane layout changed ({reason}): new maps, counters restart from zero; \
             the previous program keeps filtering until it is replaced (loaded in {ms} ms; \
             {hooks})"
        ),
    }
    Ok(dataplane)
}
