//! Hot reload, one step per file, in the order a policy change takes them:
//!
//! 1. `watch.rs`: notice that the policy directory changed
//!    ([`watch::PolicyWatcher`]);
//! 2. `prepare.rs`: load, validate and compile it — pure, nothing installed
//!    ([`prepare()`]);
//! 3. `budget.rs`: run that off the main loop within
//!    `limits.reload-timeout` ([`Preparer`]);
//! 4. `procedure.rs`: install the result when it differs from what runs:
//!    write the inactive slot, run the policy's `expect:` cases on it
//!    (`kernel_check.rs`; on the model too) and flip to it in one swap only
//!    when every case passes; describe it to the metrics,
//!    the deny log and the status, and record how the reload went — or keep
//!    the last good policy when the new one is bad ([`Reloader`]);
//! 5. `summary.rs`: what changed, for the log line of every reload
//!    ([`ChangeSummary`]);
//! 6. `verdict_log.rs`: what it did to verdicts, logged after the flip.

mod budget;
#[cfg(test)]
mod incremental_tests;
mod kernel_check;
mod prepare;
mod procedure;
mod summary;
mod verdict_log;
pub mod watch;

pub use budget::Preparer;
pub use prepare::{PrepareCache, Prepared, prepare};
pub use procedure::{Reloader, Targets};
pub use summary::ChangeSummary;
