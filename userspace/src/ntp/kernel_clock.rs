//! The kernel's own view of the host clock, read-only.
//!
//! The host's NTP daemon (not Tollgate) disciplines the clock and tells the
//! kernel whether it is synchronised (`STA_UNSYNC`) and how far off it may
//! be (`maxerror`, which the kernel grows by 500 ppm while nobody updates it).
//! Tollgate only reads this — `ntp_adjtime` with `modes = 0` changes nothing
//! and needs no privilege — to cross-check what it advertises.

use std::time::SystemTime;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct KernelClock {
    /// `STA_UNSYNC` is set (or the kernel reports `TIME_ERROR`): no daemon
    /// is disciplining the clock.
    pub unsynchronized: bool,
    /// The kernel's maximum error estimate, seconds.
    pub maxerror_seconds: f64,
    /// The kernel's estimated error, seconds.
    pub esterror_seconds: f64,
}

/// Reads the kernel clock status without changing anything.
pub fn read() -> std::io::Result<KernelClock> {
    // SAFETY: timex is plain data; all-zero is a valid value, and modes = 0
    // makes ntp_adjtime a pure read.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: `tx` is a valid, exclusively borrowed timex.
    let state = unsafe { libc::ntp_adjtime(&mut tx) };
    if state == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(KernelClock {
        unsynchronized: tx.status & libc::STA_UNSYNC != 0 || state == libc::TIME_ERROR,
        maxerror_seconds: tx.maxerror as f64 * 1e-6,
        esterror_seconds: tx.esterror as f64 * 1e-6,
    })
}

/// The host clock's read precision as log2 seconds, measured as chrony does:
/// the smallest step between consecutive distinct readings, rounded up to a
/// power of two.
pub fn precision_log2() -> i8 {
    let mut smallest = f64::MAX;
    let mut last = SystemTime::now();
    for _ in 0..100 {
        let now = SystemTime::now();
        if let Ok(step) = now.duration_since(last)
            && !step.is_zero()
        {
            smallest = smallest.min(step.as_secs_f64());
        }
        last = now;
    }
    // Clamped: a clock finer than 2^-30 s (~1 ns) does not exist here, and
    // one coarser than 2^-6 s would be a broken clocksource.
    smallest.log2().ceil().clamp(-30.0, -6.0) as i8
}

/// CLOCK_TAI minus CLOCK_REALTIME, nanoseconds: the kernel's TAI offset,
/// whole seconds (0 when nothing set it). The NTP fast path reads
/// CLOCK_TAI, the only time-of-day clock a BPF program has, and subtracts
/// this to serve what CLOCK_REALTIME says.
pub fn tai_offset_ns() -> u64 {
    // Read as adjtimex's `tai` (a pure read with modes = 0), not as the
    // difference of two clock reads, which could straddle a tick.
    // SAFETY: as in `read`.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed timex.
    let state = unsafe { libc::ntp_adjtime(&mut tx) };
    if state == -1 {
        return 0;
    }
    u64::try_from(tx.tai).unwrap_or(0) * 1_000_000_000
}

/// CLOCK_MONOTONIC now, nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, exclusively borrowed timespec; reading
    // CLOCK_MONOTONIC, CLOCK_REALTIME or CLOCK_TAI cannot fail.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_clock_without_privilege_or_change() {
        let first = read().unwrap();
        assert!(first.maxerror_seconds >= 0.0);
        assert!(first.esterror_seconds >= 0.0);
        // Reading twice gives the same verdict: the read changed nothing.
        assert_eq!(read().unwrap().unsynchronized, first.unsynchronized);
    }

    #[test]
    fn the_tai_offset_is_what_clock_tai_says() {
        let measured = clock_ns(libc::CLOCK_TAI) as f64 - clock_ns(libc::CLOCK_REALTIME) as f64;
        assert!((measured - tai_offset_ns() as f64).abs() < 0.5e9);
    }

    #[test]
    fn precision_is_a_plausible_power_of_two() {
        let p = precision_log2();
        assert!((-30..=-6).contains(&p), "{p}");
    }
}
