//! Tollgate's controller: policy language, compiler, reference model,
//! dataplane management, hot reload, metrics and the private NTP server.
//!
//! The binary in `main.rs` is a thin CLI over this library.

pub mod addresses;
pub mod attachments;
pub mod compile;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod deny_log;
pub mod diagnostic;
pub mod dns;
pub mod expectations;
pub mod explain;
pub mod fqdn;
pub mod git;
pub mod heap;
pub mod lab;
pub mod labels;
#[cfg(test)]
mod layering_tests;
pub mod links;
pub mod lists_import;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod ntp;
pub mod parallel;
pub mod policy;
pub mod preflight;
pub mod reload;
pub mod systemd;
pub mod tables;
pub mod verdict_diff;

/// The git commit this library was built from (`build.rs`: the short hash,
/// `-dirty` for a changed tree, `unknown` outside git), as `--version` and
/// the `tollgate_build_info` metric report it. Public for the integration
/// suites, a package of their own that does not see this build's variables.
pub const GIT_REVISION: &str = env!("TOLLGATE_GIT_REVISION");

/// Unit tests that need root (they create BPF maps) call this first:
/// without root they fail with its message, never pass unseen. CI runs
/// them as root; the integration suites' twin is `testkit::require_root`.
#[cfg(test)]
pub(crate) fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (CAP_BPF): run it as root");
}
