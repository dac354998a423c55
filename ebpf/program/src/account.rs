//! Accounting: per-CPU counters and rate-limited deny events.

use tollgate_common::{Counter, DenyEvent, EVENT_FRAGMENT, EVENT_PORT_KNOWN, Stat};

use crate::{
    decide::Decision,
    maps::{TG_COUNTERS, TG_EVENT_BKT, TG_EVENTS, TG_SETTINGS, TG_STATS},
    parse::{Fragment, Packet},
    rate,
};

#[inline(always)]
fn add(counter: Option<*mut Counter>, bytes: u64) {
    if let Some(c) = counter {
        // SAFETY: a per-CPU slot; programs do not preempt each other on a CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Charges a global statistic.
#[inline(always)]
pub fn stat(stat: Stat, bytes: u64) {
    add(TG_STATS.get_ptr_mut(stat as u32), bytes);
}

/// Charges a policy counter (rule, default or verdict total).
#[inline(always)]
pub fn counter(index: u32, bytes: u64) {
    add(TG_COUNTERS.get_ptr_mut(index), bytes);
}

/// Sends a deny or audit-deny event unless this CPU is over its rate.
///
/// The limiter is GCRA per CPU (`rate.rs`, `TG_EVENT_BKT`): an event may run
/// at most `event_burst_ns` ahead of one per `event_interval_ns`. Suppressed
/// and lost events are counted, so userspace knows. Its clock is the coarse
/// one (a tick, a few ms), read once per tick with the rate: a deny flood
/// pays neither a clock read nor a settings read per packet, and the rate
/// still holds over any second.
#[inline(always)]
pub fn report(p: &Packet, d: &Decision) {
    // A refusal is the `EventsSuppressed` statistic, counted in the bucket.
    let rate = || {
        TG_SETTINGS
            .get(0)
            .map(|s| (s.event_interval_ns, s.event_burst_ns))
    };
    if !rate::admit(&TG_EVENT_BKT, rate) {
        return;
    }

    let mut flags = 0;
    if p.port_known {
        flags |= EVENT_PORT_KNOWN;
    }
    if let Fragment::Later { .. } = p.fragment {
        flags |= EVENT_FRAGMENT;
    }
    let event = DenyEvent {
        src: p.src.bytes(),
        dst: p.dst.bytes(),
        counter: d.counter,
        dport: p.dport,
        proto: p.proto,
        family: p.family,
        verdict: d.verdict as u8,
        reason: d.reason as u8,
        flags,
        _pad: 0,
    };
    if TG_EVENTS.output(event, 0).is_err() {
        stat(Stat::EventsLost, 0);
    }
}
