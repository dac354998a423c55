//! Deny events from the ring buffer, decoded.

use std::net::IpAddr;

use anyhow::{Result, anyhow};
use tollgate_common::{DecisionReason, DenyEvent, EVENT_FRAGMENT, EVENT_PORT_KNOWN, Verdict};

/// One deny or audit-deny decision, as userspace sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub dport: Option<u16>,
    pub verdict: Verdict,
    pub reason: DecisionReason,
    /// Kernel counter of the deciding rule or default.
    pub counter: u32,
    /// A later fragment (its port is unknown).
    pub fragment: bool,
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event> {
    if bytes.len() < std::mem::size_of::<DenyEvent>() {
        return Err(anyhow!("short deny event ({} bytes)", bytes.len()));
    }
    // SAFETY: length checked; DenyEvent is plain old data.
    let e: DenyEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let addr = |b: [u8; 16]| -> IpAddr { super::address_of(e.family, b) };
    Ok(Event {
        src: addr(e.src),
        dst: addr(e.dst),
        proto: e.proto,
        dport: (e.flags & EVENT_PORT_KNOWN != 0).then_some(e.dport),
        verdict: Verdict::from_u8(e.verdict).ok_or_else(|| anyhow!("bad verdict {}", e.verdict))?,
        reason: DecisionReason::from_u8(e.reason)
            .ok_or_else(|| anyhow!("bad reason {}", e.reason))?,
        counter: e.counter,
        fragment: e.flags & EVENT_FRAGMENT != 0,
    })
}
