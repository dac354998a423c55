//! The daemon's interfaces: attach to each configured one at start, and
//! follow them as they appear, go and come back.

use anyhow::{Result, bail};

use super::Daemon;
use crate::{attachments::InterfaceState, logging::DAEMON_TARGET};

impl Daemon {
    /// Attaches to every configured interface present now. An interface of
    /// a link type Tollgate cannot parse, or one it cannot attach to, stops
    /// the start with that error; a missing one is attached when it appears.
    pub(super) fn attach_at_start(&mut self) -> Result<()> {
        self.reconcile_interfaces()?;
        for (name, state) in self.attachments.states() {
            match state {
                InterfaceState::Refused(e) => bail!("{e}"),
                InterfaceState::Failed(e) => bail!("attach to {name}: {e}"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Attaches to configured interfaces that appeared or were recreated,
    /// forgets those that went, and publishes the result.
    pub(super) fn reconcile_interfaces(&mut self) -> Result<()> {
        let changes = {
            let mut dp = self.dataplane.lock().expect("dataplane lock");
            self.attachments.reconcile(&mut dp)?
        };
        for c in &changes {
            match c.now {
                InterfaceState::Attached(_) => tracing::info!(target: DAEMON_TARGET, "{c}"),
                InterfaceState::Missing | InterfaceState::Pending => {
                    tracing::warn!(target: DAEMON_TARGET, "{c}")
                }
                InterfaceState::Refused(_) | InterfaceState::Failed(_) => {
                    tracing::error!(target: DAEMON_TARGET, "{c}")
                }
            }
        }
        self.view.write().expect("view lock").interfaces = self.attachments.gauge_view();
        self.status.write().expect("status lock").interfaces = self.attachments.statuses();
        if !changes.is_empty() && self.ready {
            self.publish_systemd_status();
        }
        Ok(())
    }
}
