//! The main loop: serve metrics, the status socket and deny events; reload
//! on policy edits, SIGHUP and address changes; follow interfaces; ping
//! the watchdog — until SIGTERM or SIGINT, then exit as `on-exit` says.

use std::sync::Arc;

use anyhow::{Result, anyhow};

use super::Daemon;
use crate::{
    addresses,
    config::OnExit,
    control::{self, Status},
    datapath::Start,
    deny_log,
    links::InterfaceChanges,
    logging::DAEMON_TARGET,
    reload::watch::PolicyWatcher,
    systemd::notify,
};

impl Daemon {
    pub(super) async fn serve(&mut self) -> Result<()> {
        let listener = crate::metrics::bind(self.config.metrics.listen).await?;
        tracing::info!(
            target: DAEMON_TARGET,
            "metrics on http://{}/metrics",
            self.config.metrics.listen
        );
        let metrics_task = tokio::spawn(crate::metrics::serve(listener, self.metrics.clone()));
        let control = control::bind(&self.config.control_socket)?;
        let ntp = self.ntp.clone();
        let learning = self.dns.is_some().then(|| self.dataplane.clone());
        let counting = learning.clone();
        let refresh: control::Refresh = Arc::new(move |s: &mut Status| {
            s.ntp = ntp
                .as_ref()
                .and_then(|n| serde_json::to_value(n.status()).ok());
            s.learned_addresses = counting
                .as_ref()
                .map(|dp| dp.lock().expect("dataplane lock").learned_counts());
        });
        let leases: control::Leases = Arc::new(move || {
            let learned = learning.as_ref()?.lock().expect("dataplane lock").learned();
            Some(crate::dns::leases_file::leases(learned))
        });
        let control_task = tokio::spawn(control::serve(
            control,
            self.status.clone(),
            refresh,
            leases,
        ));
        let events_task = deny_log::spawn(
            self.dataplane.clone(),
            self.reloader.event_labels(),
            self.ntp.as_ref().map(|n| n.health()),
        )?;

        let mut watcher = PolicyWatcher::new(&self.config.policy_dir)?;
        let mut interface_changes = InterfaceChanges::subscribe()?;
        // A link may have come or gone between the start and the
        // subscription.
        self.reconcile_interfaces()?;
        let mut hangup = self
            .hangup
            .take()
            .ok_or_else(|| anyhow!("the main loop runs once"))?;
        let mut stop = self.stop.clone();
        notify("READY=1");
        self.ready = true;
        self.publish_systemd_status();
        // A fresh start leaves the inactive slot empty; after an adoption it
        // holds a policy of the previous run, which the next reload diffs
        // against as usual. Filled after READY=1: at fleet scale the fill
        // holds the dataplane for a second or more, and the policy is
        // already in force.
        if *self.dataplane.lock().expect("dataplane lock").start() != Start::Adopted {
            self.reloader.fill_inactive_slot();
        }
        super::opening::verify_other_hooks(&self.dataplane);
        if let Some(every) = self.watchdog.period() {
            tracing::info!(target: DAEMON_TARGET, "systemd watchdog: pinging every {every:?}");
        }
        tracing::info!(target: DAEMON_TARGET, "ready");

        loop {
            tokio::select! {
                changed = watcher.changed() => {
                    changed.ok_or_else(|| anyhow!("policy watcher stopped"))?;
                    self.reload("watch").await;
                }
                _ = hangup.recv() => {
                    self.reload("sighup").await;
                }
                changed = interface_changes.next() => {
                    changed?;
                    self.reconcile_interfaces()?;
                    let now = addresses::current(&self.config.interfaces)?;
                    if now != self.gateway {
                        tracing::info!(target: DAEMON_TARGET, "gateway addresses now {now:?}");
                        self.gateway = now;
                        self.reload("addresses").await;
                    }
                }
                _ = self.watchdog.ping() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        notify("STOPPING=1");
        metrics_task.abort();
        control_task.abort();
        events_task.abort();
        let _ = std::fs::remove_file(&self.config.control_socket);
        // The status hook may still hold a reference; dropping the last one
        // stops the server too.
        if let Some(ntp) = self.ntp.take()
            && let Ok(ntp) = Arc::try_unwrap(ntp)
        {
            ntp.shutdown().await;
        }
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        match self.config.on_exit {
            OnExit::Keep => {
                tracing::info!(
                    target: DAEMON_TARGET,
                    "exiting; filtering continues with generation {} (on-exit: keep)",
                    self.reloader.generation()
                );
                Ok(())
            }
            OnExit::Detach => {
                tracing::info!(target: DAEMON_TARGET, "exiting; detaching (on-exit: detach)");
                self.dataplane.lock().expect("dataplane lock").detach_all()
            }
        }
    }
}
