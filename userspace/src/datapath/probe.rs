//! Running the probe program (`tollgate_common::probe`) on a staged slot:
//! what the kernel will decide for a frame once that slot is live, asked
//! before it is.

use anyhow::{Context as _, Result, anyhow};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use tollgate_common::{DecisionReason, PROG_PROBE, Verdict};

use super::{Dataplane, Staged, XDP_PASS};

/// What the probe decided for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probed {
    pub verdict: Verdict,
    pub reason: DecisionReason,
    /// The kernel counter the decision charges.
    pub kernel_counter: u32,
    /// The staged policy's logical counter behind it; `None` when the staged
    /// policy owns no such counter (a bug in writing the slot).
    pub counter: Option<u32>,
}

impl Dataplane {
    /// Decides `frame` (an Ethernet frame) on the slot `staged` wrote, as
    /// the attached programs will once it is flipped. `None` when the
    /// parser drops the frame before any policy decision.
    pub fn probe(&mut self, staged: &Staged, frame: &[u8]) -> Result<Option<Probed>> {
        self.probe_generation
            .set(0, staged.generation, 0)
            .context("set TG_PROBE")?;
        let object = self.object();
        let xdp: &Xdp = object
            .program(PROG_PROBE)
            .ok_or_else(|| anyhow!("no program {PROG_PROBE}"))?
            .try_into()?;
        let run = xdp
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..Default::default()
            })
            .context("run the probe (BPF_PROG_TEST_RUN)")?;
        if run.return_value != XDP_PASS {
            return Ok(None);
        }
        let result = self
            .probe_result
            .get(&0, 0)
            .context("read TG_PROBE_RESULT")?;
        let verdict = Verdict::from_u8(result.verdict)
            .ok_or_else(|| anyhow!("the probe wrote verdict {}", result.verdict))?;
        let reason = DecisionReason::from_u8(result.reason)
            .ok_or_else(|| anyhow!("the probe wrote reason {}", result.reason))?;
        let counter = staged
            .indices
            .iter()
            .position(|&kernel| kernel == result.counter)
            .map(|logical| logical as u32);
        Ok(Some(Probed {
            verdict,
            reason,
            kernel_counter: result.counter,
            counter,
        }))
    }
}
