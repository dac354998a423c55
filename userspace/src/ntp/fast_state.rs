//! What the NTP fast path answers with (`tollgate_common::NtpFastState`):
//! the advertised state as ntp-proto encodes it, the clock conversion and
//! the per-source rate limit, valid for a few polls.

use std::time::{Duration, SystemTime};

use tollgate_common::{NTP_STATE_SET, NtpFastState};

use super::{adapter::ReplyHeader, reference::Advertised};
use crate::config::NtpRateLimit;

/// Polls a published state outlives: one missed refresh is no reason to
/// stop, three are (the controller is stuck or gone, and the userspace
/// server, which knows, takes over).
const VALID_POLLS: u32 = 3;
/// Bound on the dispersion growth rate the program multiplies with (2^24
/// short units per ns scaled by 2^48, about 0.9 s/s; real rates are
/// 15 µs/s), so that its product with 2^40 ns fits 64 bits.
const MAX_DISPERSION_RATE: u64 = (1 << 24) - 1;

/// The clocks at one instant, as the program reads them.
#[derive(Clone, Copy, Debug)]
pub struct Clocks {
    pub realtime: SystemTime,
    /// CLOCK_MONOTONIC, ns.
    pub monotonic_ns: u64,
    /// CLOCK_TAI minus CLOCK_REALTIME, ns.
    pub tai_offset_ns: u64,
}

impl Clocks {
    pub fn now() -> Self {
        Clocks {
            realtime: SystemTime::now(),
            monotonic_ns: super::kernel_clock::monotonic_ns(),
            tai_offset_ns: super::kernel_clock::tai_offset_ns(),
        }
    }
}

/// The state to publish for `advertised`, refreshed every `poll`.
pub fn fast_state(
    advertised: &Advertised,
    precision_log2: i8,
    limit: NtpRateLimit,
    poll: Duration,
    clocks: Clocks,
) -> NtpFastState {
    // The dispersion as of now, which the program grows from now on: a
    // base time further back could precede the boot, where monotonic time
    // has no value.
    let header = ReplyHeader::of(advertised, precision_log2, clocks.realtime);
    let valid_ns = u64::try_from((poll * VALID_POLLS).as_nanos()).unwrap_or(u64::MAX);
    let dispersion_rate = (advertised.dispersion_rate * 65536.0 / 1e9 * 2f64.powi(48)) as u64;
    let interval_ns = (2f64.powi(limit.interval.into()) * 1e9) as u64;
    NtpFastState {
        valid_until_ns: clocks.monotonic_ns.saturating_add(valid_ns),
        since_ns: clocks.monotonic_ns,
        tai_offset_ns: clocks.tai_offset_ns,
        dispersion_rate: dispersion_rate.min(MAX_DISPERSION_RATE),
        rate_interval_ns: interval_ns,
        rate_tolerance_ns: interval_ns * u64::from(limit.burst.saturating_sub(1)),
        root_delay: header.root_delay,
        root_dispersion: header.root_dispersion,
        reference_id: header.reference_id,
        flags: NTP_STATE_SET,
        leap: header.leap,
        stratum: header.stratum,
        precision: header.precision,
        rate_leak: limit.leak,
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntp::reference::{Leap, Reference};

    #[test]
    fn the_state_carries_what_ntp_proto_encodes() {
        let now = SystemTime::now();
        let advertised = Advertised {
            leap: Leap::InsertSecond,
            stratum: 3,
            reference: Reference::Upstream("192.0.2.9".parse().unwrap()),
            root_delay: 0.25,
            root_dispersion: 0.5,
            since: now - Duration::from_secs(10),
            dispersion_rate: 15e-6,
        };
        let limit = NtpRateLimit {
            interval: 3,
            burst: 8,
            leak: 2,
        };
        let clocks = Clocks {
            realtime: now,
            monotonic_ns: 100_000_000_000,
            tai_offset_ns: 37_000_000_000,
        };
        let s = fast_state(&advertised, -20, limit, Duration::from_secs(16), clocks);
        assert_eq!((s.leap, s.stratum, s.precision), (1, 3, -20));
        assert_eq!(s.reference_id, [192, 0, 2, 9]);
        // 0.25 s, as ntp-proto rounds it (down, through a float).
        let delay = i64::from(u32::from_be_bytes(s.root_delay));
        assert!((delay - 0x4000).abs() <= 1, "{delay:#x}");
        // 0.5 s at `since`, and 10 s at 15 µs/s since.
        let dispersion = f64::from(s.root_dispersion) / 65536.0;
        assert!((dispersion - 0.50015).abs() < 2.0 / 65536.0, "{dispersion}");
        assert_eq!(s.since_ns, 100_000_000_000);
        assert_eq!(s.valid_until_ns, 148_000_000_000);
        assert_eq!(s.rate_interval_ns, 8_000_000_000);
        assert_eq!(s.rate_tolerance_ns, 56_000_000_000);
        // 15 µs/s in 2^-16 s per ns, scaled by 2^48.
        let rate = s.dispersion_rate as f64 / 2f64.powi(48) / 65536.0 * 1e9;
        assert!((rate - 15e-6).abs() < 1e-9, "{rate}");
    }
}
