//! Keeps the dataplane attached to the configured interfaces as they come
//! and go. VPN daemons recreate `tun0` or `wg0` on every reconnect and USB
//! modems re-enumerate; each time the interface gets a new index and the
//! old attachment is gone with it. On every link change the daemon calls
//! [`Attachments::reconcile`], which compares the kernel's interfaces with
//! what is attached and attaches, re-attaches or forgets.
//!
//! An interface appears down (`RTM_NEWLINK` comes at creation, before `ip
//! link set up`), so attaching on its first notification filters it before
//! it can carry traffic, unless whoever creates it brings it up within the
//! same few milliseconds.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::{
    config::AttachPolicy,
    control::InterfaceStatus,
    datapath::{Adoption, AttachMode, Attachment, Dataplane},
    links::{self, Link, LinkKind},
};

/// What is known of one configured interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceState {
    /// Not looked up yet.
    Pending,
    Attached(Attachment),
    /// No interface of that name exists (yet, or any more).
    Missing,
    /// It exists with a link type Tollgate cannot parse.
    Refused(String),
    /// Attaching failed.
    Failed(String),
}

/// One change [`Attachments::reconcile`] made, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub interface: String,
    pub now: InterfaceState,
}

pub struct Attachments {
    policy: AttachPolicy,
    states: BTreeMap<String, InterfaceState>,
}

impl Attachments {
    pub fn new(interfaces: &[String], policy: AttachPolicy) -> Attachments {
        Attachments {
            policy,
            states: interfaces
                .iter()
                .map(|i| (i.clone(), InterfaceState::Pending))
                .collect(),
        }
    }

    /// Brings every configured interface to the state the kernel's links
    /// call for. Returns what changed.
    pub fn reconcile(&mut self, dataplane: &mut Dataplane) -> Result<Vec<Change>> {
        let present: BTreeMap<String, Link> = links::snapshot()?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        let mut changes = Vec::new();
        for (name, state) in &mut self.states {
            let next = match present.get(name) {
                None => InterfaceState::Missing,
                Some(link) => match link.kind() {
                    Err(e) => InterfaceState::Refused(format!("{e:#}")),
                    Ok(kind) => match state {
                        InterfaceState::Attached(a) if a.index == link.index && a.kind == kind => {
                            continue;
                        }
                        _ => match dataplane.attach(link, self.policy) {
                            Ok(a) => InterfaceState::Attached(a),
                            Err(e) => InterfaceState::Failed(format!("{e:#}")),
                        },
                    },
                },
            };
            if next == *state {
                continue;
            }
            if matches!(state, InterfaceState::Attached(_))
                && !matches!(next, InterfaceState::Attached(_))
            {
                // Gone, or now of a type the attached variant would misparse.
                dataplane.forget(name)?;
            }
            *state = next.clone();
            changes.push(Change {
                interface: name.clone(),
                now: next,
            });
        }
        Ok(changes)
    }

    pub fn states(&self) -> impl Iterator<Item = (&String, &InterfaceState)> {
        self.states.iter()
    }

    /// For `tollgate_dataplane_attached`: each interface with its mode and
    /// link kind when attached.
    pub fn gauge_view(&self) -> Vec<(String, Option<(AttachMode, LinkKind)>)> {
        self.states
            .iter()
            .map(|(name, s)| {
                let attached = match s {
                    InterfaceState::Attached(a) => Some((a.mode, a.kind)),
                    _ => None,
                };
                (name.clone(), attached)
            })
            .collect()
    }

    /// For `tollgate status`.
    pub fn statuses(&self) -> Vec<InterfaceStatus> {
        self.states
            .iter()
            .map(|(name, s)| {
                let mut status = InterfaceStatus {
                    interface: name.clone(),
                    ..InterfaceStatus::default()
                };
                match s {
                    InterfaceState::Attached(a) => {
                        status.state = "attached".into();
                        status.mode = Some(a.mode.to_string());
                        status.link = Some(a.kind.to_string());
                        status.adoption = Some(adoption_label(a.adoption).into());
                    }
                    InterfaceState::Pending => status.state = "pending".into(),
                    InterfaceState::Missing => status.state = "missing".into(),
                    InterfaceState::Refused(e) => {
                        status.state = "refused".into();
                        status.error = Some(e.clone());
                    }
                    InterfaceState::Failed(e) => {
                        status.state = "failed".into();
                        status.error = Some(e.clone());
                    }
                }
                status
            })
            .collect()
    }
}

fn adoption_label(a: Adoption) -> &'static str {
    match a {
        Adoption::Fresh => "fresh",
        Adoption::Kept => "kept",
        Adoption::Replaced => "replaced",
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.interface;
        match &self.now {
            InterfaceState::Attached(a) => write!(
                f,
                "attached to {i} ({} link, index {}) in {} mode ({})",
                a.kind,
                a.index,
                a.mode,
                match a.adoption {
                    Adoption::Fresh => "new link",
                    Adoption::Kept => "kept the running link",
                    Adoption::Replaced => "program replaced atomically on the running link",
                }
            ),
            InterfaceState::Pending => write!(f, "{i}: not looked up yet"),
            InterfaceState::Missing => write!(
                f,
                "interface {i} is missing: nothing to filter until it appears, then it is attached"
            ),
            InterfaceState::Refused(e) => write!(f, "{e}; not attached"),
            InterfaceState::Failed(e) => write!(f, "cannot attach to {i}: {e}"),
        }
    }
}
