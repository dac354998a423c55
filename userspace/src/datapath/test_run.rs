//! Running the loaded programs on a frame without an interface
//! (`BPF_PROG_TEST_RUN`), as the tests and benchmarks do.

use std::time::Duration;

use anyhow::{Result, anyhow};
use aya::TestRunResult;
use aya::programs::{Program, SchedClassifier, TestRun, TestRunOptions, Xdp};
use tollgate_common::PROG_TC;

use super::{AttachMode, Dataplane};
use crate::links::LinkKind;

impl Dataplane {
    /// Runs the Ethernet XDP program once on `frame` (`BPF_PROG_TEST_RUN`).
    pub fn test_run_xdp(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        self.test_run_xdp_on(LinkKind::Ethernet, frame, repeat)
    }

    /// Runs the XDP program of `kind` `repeat` times on `frame`: an Ethernet
    /// frame, or for [`LinkKind::Ip`] a packet starting at its IP header.
    pub fn test_run_xdp_on(
        &self,
        kind: LinkKind,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration)> {
        let name = AttachMode::XdpGeneric.program(kind);
        self.with_program(name, |p: &Xdp| run_timed(p, frame, repeat))
    }

    /// Runs the XDP program of `kind` once on `frame` and returns the action
    /// with the packet as the program left it (the reply of an `XDP_TX`).
    pub fn test_run_xdp_output(&self, kind: LinkKind, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let name = AttachMode::XdpGeneric.program(kind);
        self.with_program(name, |p: &Xdp| run_with_output(p, frame))
    }

    /// Runs the Ethernet TC program `repeat` times on `frame`.
    pub fn test_run_tc(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        self.with_program(PROG_TC, |p: &SchedClassifier| run_timed(p, frame, repeat))
    }

    /// Runs the Ethernet TC program once on `frame` and returns the action
    /// with the packet as the program left it (the reply of a redirect).
    pub fn test_run_tc_output(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.with_program(PROG_TC, |p: &SchedClassifier| run_with_output(p, frame))
    }

    /// `run` on the program `name`, as a `P`, with the object locked.
    fn with_program<P, R>(&self, name: &str, run: impl FnOnce(&P) -> Result<R>) -> Result<R>
    where
        for<'p> &'p P: TryFrom<&'p Program>,
    {
        let object = self.object();
        let program = object
            .program(name)
            .ok_or_else(|| anyhow!("no program {name}"))?;
        let program: &P = program
            .try_into()
            .map_err(|_| anyhow!("{name}: not of the expected program type"))?;
        run(program)
    }
}

/// `repeat` runs of `program` on `frame`: its return value and the mean
/// time of one run.
fn run_timed<P>(program: &P, frame: &[u8], repeat: u32) -> Result<(u32, Duration)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let r = program.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    })?;
    Ok((r.return_value, r.duration))
}

/// One run of `program` on `frame`: its return value and the packet it left.
fn run_with_output<P>(program: &P, frame: &[u8]) -> Result<(u32, Vec<u8>)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    // Room for a reply longer than the frame (an ICMP error quoting it).
    let mut out = vec![0u8; frame.len() + 256];
    let r = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}
