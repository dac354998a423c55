//! Timing: cells of trials measured in rounds, and the floor programs
//! every other time is read against.

use std::os::fd::OwnedFd;

use anyhow::{Context as _, Result, ensure};
use tollgate::datapath::{TC_ACT_UNSPEC, XDP_PASS};

use crate::{
    DEVICE_COUNTS,
    asm::Asm,
    bpf::{self, ProgType},
    fixtures::{Family, Probes, probe_sources},
    report::Row,
};

/// The floors: XDP and TC programs that return at once, per family.
pub struct Floors {
    pub xdp: Vec<Cell>,
    pub tc: Vec<Cell>,
}

impl Floors {
    pub fn measure(measure: &Measure) -> Result<Floors> {
        let frames = [Family::V4, Family::V6]
            .map(|family| Probes::frames_for(family, &probe_sources(DEVICE_COUNTS[1])).allow);
        let xdp = Floor::load(ProgType::Xdp)?;
        let tc = Floor::load(ProgType::SchedCls)?;
        Ok(Floors {
            xdp: measure.run_all(
                |f, r| xdp.test_run(f, r),
                &[(&frames[0], XDP_PASS), (&frames[1], XDP_PASS)],
            )?,
            tc: measure.run_all(
                |f, r| tc.test_run(f, r),
                &[(&frames[0], TC_ACT_UNSPEC), (&frames[1], TC_ACT_UNSPEC)],
            )?,
        })
    }

    /// Per cell, the measurement with the lower lowest trial.
    pub fn lower(&self, other: &Floors) -> Floors {
        let pick = |a: &[Cell], b: &[Cell]| -> Vec<Cell> {
            a.iter()
                .zip(b)
                .map(|(a, b)| if b.min < a.min { *b } else { *a })
                .collect()
        };
        Floors {
            xdp: pick(&self.xdp, &other.xdp),
            tc: pick(&self.tc, &other.tc),
        }
    }

    pub fn of(&self, kind: ProgType, family: Family) -> u64 {
        match kind {
            ProgType::Xdp => self.xdp[family as usize].min,
            ProgType::SchedCls => self.tc[family as usize].min,
        }
    }

    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (program, kind, cells) in [
            ("floor xdp (r0=2; exit)", ProgType::Xdp, &self.xdp),
            ("floor tc (r0=-1; exit)", ProgType::SchedCls, &self.tc),
        ] {
            for family in [Family::V4, Family::V6] {
                rows.push(Row {
                    program: program.into(),
                    kind,
                    rules: "-".into(),
                    devices: "-".into(),
                    family,
                    allow: Some(cells[family as usize]),
                    allow_new: None,
                    deny_default: None,
                    deny_rule: Err("-".into()),
                    unknown: None,
                });
            }
        }
        rows
    }
}

/// One cell's trials, in ns per packet: the lowest (the headline: noise
/// from the shared machine only ever adds) and the median.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    pub min: u64,
    pub median: u64,
}

impl Cell {
    /// The lowest and the median of the trials.
    pub fn of(trials: &mut [u64]) -> Cell {
        trials.sort_unstable();
        Cell {
            min: trials[0],
            median: trials[trials.len() / 2],
        }
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.min, self.median)
    }
}

pub struct Measure {
    pub repeat: u32,
    pub trials: usize,
}

impl Measure {
    /// Test-runs each `(frame, expected return code)` `trials` times, in
    /// rounds (one trial of each, then the next round), so that a burst of
    /// load from elsewhere lands on one trial of several cells rather than
    /// on every trial of one. Every run must return what is expected.
    pub fn run_all(
        &self,
        run: impl Fn(&[u8], u32) -> Result<(u32, u64)>,
        cells: &[(&[u8], u32)],
    ) -> Result<Vec<Cell>> {
        let checked = |frame: &[u8], expect: u32, repeat: u32| -> Result<u64> {
            let (action, per_run) = run(frame, repeat)?;
            ensure!(
                action == expect,
                "the program returned {action}, expected {expect}"
            );
            Ok(per_run)
        };
        // A short run of each first: caches warm, verdicts checked before
        // anything is timed.
        for &(frame, expect) in cells {
            checked(frame, expect, 1000)?;
        }
        let mut ns = vec![Vec::with_capacity(self.trials); cells.len()];
        for _ in 0..self.trials {
            for (samples, &(frame, expect)) in ns.iter_mut().zip(cells) {
                samples.push(checked(frame, expect, self.repeat)?);
            }
        }
        Ok(ns.into_iter().map(|mut s| Cell::of(&mut s)).collect())
    }

    pub fn run(
        &self,
        run: impl Fn(&[u8], u32) -> Result<(u32, u64)>,
        frame: &[u8],
        expect: u32,
    ) -> Result<Cell> {
        Ok(self.run_all(run, &[(frame, expect)])?[0])
    }
}

pub fn median(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// The floor: a program of two instructions that passes every packet.
pub struct Floor {
    pub fd: OwnedFd,
}

impl Floor {
    pub fn load(kind: ProgType) -> Result<Floor> {
        let program = match kind {
            ProgType::Xdp => Asm::new().pass(),
            ProgType::SchedCls => Asm::new().ret(TC_ACT_UNSPEC as i32),
        };
        assert_eq!(program.0.len(), 16, "two instructions");
        let fd = bpf::prog_load(kind, &program.0, "tg_floor").context("load a floor program")?;
        Ok(Floor { fd })
    }

    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        bpf::test_run(&self.fd, frame, repeat)
    }
}
