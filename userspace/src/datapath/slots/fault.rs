//! Test-only fault injection: with the cargo feature `fault-injection`
//! (never in a package build) and `TOLLGATE_FAULT=shift-ports` in the
//! environment, every port range is written into the kernel one port
//! higher than compiled. The model, which reads the compiled tables, does
//! not see it; only the kernel check of `expect:` cases before the flip can
//! (tests/controller.rs shows it does). Without the feature this is the
//! identity, and the compiler removes it.

/// The environment variable that names the fault.
#[cfg(feature = "fault-injection")]
pub const FAULT_VARIABLE: &str = "TOLLGATE_FAULT";

/// The port range to write for the compiled range `(lo, hi)`.
#[cfg(feature = "fault-injection")]
pub fn ports(lo: u16, hi: u16) -> (u16, u16) {
    if std::env::var_os(FAULT_VARIABLE).is_some_and(|v| v == "shift-ports") {
        (lo.saturating_add(1), hi.saturating_add(1))
    } else {
        (lo, hi)
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn ports(lo: u16, hi: u16) -> (u16, u16) {
    (lo, hi)
}
