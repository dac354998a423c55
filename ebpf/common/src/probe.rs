//! The probe: a program never attached to any interface, which the
//! controller runs with `BPF_PROG_TEST_RUN` on one frame per `expect:` case
//! of a policy, against the slot it has just written and before it makes
//! that slot live. It decides exactly as the attached programs do (the same
//! `decide`), but for the generation in [`MAP_PROBE`] rather than the one
//! in force, and it charges no counter, remembers no flow and reports no
//! event: it only writes what it decided into [`MAP_PROBE_RESULT`].

use crate::pod;

/// The probe's program name.
pub const PROG_PROBE: &str = "tollgate_probe";

/// `Array<u32>` with one entry: the generation the probe decides for (its
/// low bit is the slot), set by the controller before each test run.
pub const MAP_PROBE: &str = "TG_PROBE";
/// `Array<ProbeResult>` with one entry: the probe's last decision.
pub const MAP_PROBE_RESULT: &str = "TG_PROBE_RESULT";

/// What the probe decided for its frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeResult {
    /// The counter of the deciding rule or default.
    pub counter: u32,
    /// A [`crate::Verdict`].
    pub verdict: u8,
    /// A [`crate::DecisionReason`].
    pub reason: u8,
    pub _pad: [u8; 2],
}

pod!(ProbeResult);

const _: () = assert!(core::mem::size_of::<ProbeResult>() == 8);
