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
    /// Dropped, and the device told at once (TCP RST, ICMP unreachable).
    Reject = 3,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [
        Verdict::Allow,
        Verdict::Deny,
        Verdict::AuditDeny,
        Verdict::Reject,
    ];

    /// How `explain`, logs and events spell it.
    pub const fn label(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::AuditDeny => "audit-deny",
            Verdict::Reject => "reject",
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
            Verdict::Reject => "reject",
        }
    }

    pub const fn from_u8(v: u8) -> Option<Verdict> {
        match v {
            0 => Some(Verdict::Allow),
            1 => Some(Verdict::Deny),
            2 => Some(Verdict::AuditDeny),
            3 => Some(Verdict::Reject),
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
    /// An address the DNS forwarder learned for an FQDN rule (step 12).
    Learned = 4,
}

impl DecisionReason {
    pub const fn from_u8(v: u8) -> Option<DecisionReason> {
        match v {
            0 => Some(DecisionReason::Rule),
            1 => Some(DecisionReason::GroupDefault),
            2 => Some(DecisionReason::UnknownDevice),
            3 => Some(DecisionReason::BuiltinNtp),
            4 => Some(DecisionReason::Learned),
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
            DecisionReason::Learned => "learned",
        }
    }
}

/// Value of `TG_EVENT_BKT` and `TG_REJECT_BKT`, one per CPU: a GCRA
/// limiter and the coarse clock it reads.
///
/// `bpf_ktime_get_coarse_ns` costs about 14 ns a call (BENCHMARKS.md), and a
/// flood of denies would pay it on every packet, while `bpf_jiffies64`,
/// which the verifier inlines into a load, costs nothing measurable. The
/// coarse clock only moves when the timekeeper does, on the tick that moves
/// jiffies, so the limiter reads it once per tick per CPU and uses the value
/// it kept otherwise: at most about one tick old, the coarse clock's own
/// resolution. It reads its rate from `TG_SETTINGS` on the same tick and
/// keeps it here, so that a refused packet, nearly every one of a flood,
/// reads no other map: a new rate applies from each CPU's next tick.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    /// The theoretical arrival time of the next admitted packet, in ns.
    pub tat_ns: u64,
    /// The jiffies `now_ns` was read at.
    pub tick: u64,
    /// `CLOCK_MONOTONIC`, coarse, in ns.
    pub now_ns: u64,
    /// Packets this CPU's limiter refused: the statistic of the limiter
    /// (`EventsSuppressed`, `RejectLimited`), counted here, in the cache
    /// line the limiter reads anyway, rather than in `TG_STATS` (a deny
    /// flood, mostly refused, pays one per-CPU lookup less a packet).
    pub refused: u64,
    /// The rate read at `tick`: nanoseconds between admitted packets (0
    /// admits none), and how far ahead of it a burst may run.
    pub interval_ns: u64,
    pub burst_ns: u64,
}

/// One deny, reject or audit-deny decision.
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

/// What the reply to a rejected packet needs to find its headers again:
/// the decision stores it in `TG_REJECT_PKT` (per CPU) and the reply reads
/// it back. Going through a map is deliberate: the verifier then sees
/// offsets it knows only as bounded, so it checks the reply once, not once
/// per way the parser can reach a reject.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectFacts {
    /// Offset of the IP header (the link header's length).
    pub l3: u16,
    /// Offset of the transport header.
    pub l4: u16,
    pub proto: u8,
    pub family: u8,
    /// `REJECT_*` bits.
    pub flags: u8,
    pub _pad: u8,
}
/// The packet came on an Ethernet link.
pub const REJECT_ETHERNET: u8 = 1;
/// The packet is a later fragment: no transport header.
pub const REJECT_LATER_FRAGMENT: u8 = 2;

pod!(DenyEvent, RejectFacts, RateBucket);

const _: () = assert!(core::mem::size_of::<DenyEvent>() == 44);
const _: () = assert!(core::mem::size_of::<RejectFacts>() == 8);
const _: () = assert!(core::mem::size_of::<RateBucket>() == 48);
