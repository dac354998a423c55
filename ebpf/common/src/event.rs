//! Deny events sent to userspace through `TG_EVENTS`.

use crate::pod;

/// A policy verdict.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Allow = 0,
    Deny = 1,
    /// A deny in an audit-mode group: reported and counted, not dropped.
    AuditDeny = 2,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::AuditDeny];

    /// How `explain`, logs and events spell it.
    pub const fn label(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::AuditDeny => "audit-deny",
        }
    }

    /// How the `verdict` label of metrics spells it (Prometheus label
    /// values conventionally use `_`); also part of pinned counter
    /// identities, so it never changes.
    pub const fn metric_label(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::AuditDeny => "audit_deny",
        }
    }

    pub const fn from_u8(v: u8) -> Option<Verdict> {
        match v {
            0 => Some(Verdict::Allow),
            1 => Some(Verdict::Deny),
            2 => Some(Verdict::AuditDeny),
            _ => None,
        }
    }
}

/// What decided a verdict.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecisionReason {
    Rule = 0,
    GroupDefault = 1,
    UnknownDevice = 2,
    BuiltinNtp = 3,
}

impl DecisionReason {
    pub const fn from_u8(v: u8) -> Option<DecisionReason> {
        match v {
            0 => Some(DecisionReason::Rule),
            1 => Some(DecisionReason::GroupDefault),
            2 => Some(DecisionReason::UnknownDevice),
            3 => Some(DecisionReason::BuiltinNtp),
            _ => None,
        }
    }

    /// How `explain`, logs and events spell it.
    pub const fn label(self) -> &'static str {
        match self {
            DecisionReason::Rule => "rule",
            DecisionReason::GroupDefault => "group-default",
            DecisionReason::UnknownDevice => "unknown-device",
            DecisionReason::BuiltinNtp => "builtin-ntp",
        }
    }
}

/// One deny or audit-deny decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyEvent {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Counter of the deciding rule or default; identifies it in userspace.
    pub counter: u32,
    /// Destination port, valid with [`EVENT_PORT_KNOWN`].
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    /// A [`Verdict`].
    pub verdict: u8,
    /// A [`DecisionReason`].
    pub reason: u8,
    /// `EVENT_*` bits.
    pub flags: u8,
    pub _pad: u8,
}
pub const EVENT_PORT_KNOWN: u8 = 1;
/// The packet was a non-first fragment (its port is unknown).
pub const EVENT_FRAGMENT: u8 = 2;

pod!(DenyEvent);

const _: () = assert!(core::mem::size_of::<DenyEvent>() == 44);
