//! One packet at a time from cold caches: what a flow's first packet costs,
//! and what one read of memory that is not in the cache costs this machine
//! whatever program makes it.
//!
//! A first packet is one run at `repeat` 1 from one of 250 devices, whose
//! entry in the device table no run has read since the trial before: the
//! kernel's timer around a single run, and the cache misses of that run,
//! are what it measures. In the same pass, frame by frame, a program that
//! reads one bucket of the live `TG_DEV_EXACT` and nothing else
//! ([`BucketReader`]) reads a bucket no run has read before, then the same
//! one again: what one read of that table costs the machine at that moment,
//! beside what the whole decision costs.

use std::os::fd::OwnedFd;

use anyhow::{Context as _, Result, ensure};
use tollgate::datapath::XDP_PASS;

use crate::{
    asm::Asm,
    bpf::{self, ProgType},
    lookups::own_maps,
    measure::{Cell, median},
};

/// Frames per trial: each run once per trial.
pub const FRAMES: usize = 250;

/// Per trial, `before_trial`, then frame by frame (0..`frames`) each of
/// `runs` once, in turn; a run returns its ns. A trial's value per run is
/// the median over its frames; the cells show the lowest and the median
/// trial, as everywhere in this bench.
pub fn once_each(
    trials: usize,
    frames: usize,
    mut before_trial: impl FnMut() -> Result<()>,
    runs: &[&dyn Fn(usize) -> Result<u64>],
) -> Result<Vec<Cell>> {
    let mut per_trial = vec![Vec::with_capacity(trials); runs.len()];
    for _ in 0..trials {
        before_trial()?;
        let mut ns = vec![Vec::with_capacity(frames); runs.len()];
        for frame in 0..frames {
            for (run, ns) in runs.iter().zip(&mut ns) {
                ns.push(run(frame)?);
            }
        }
        for (trial, mut ns) in per_trial.iter_mut().zip(ns) {
            trial.push(median(&mut ns));
        }
    }
    Ok(per_trial
        .into_iter()
        .map(|mut t| Cell::of(&mut t))
        .collect())
}

/// A program that reads one bucket of the live `TG_DEV_EXACT` and does
/// nothing else (`Asm::lookup_frame_key`: the bucket's index is the frame's
/// first 4 bytes; `Asm::read_found` waits for its first word).
pub struct BucketReader {
    read: OwnedFd,
    /// The buckets in the map (both slots): the table the reads land in.
    pub buckets: u32,
}

impl BucketReader {
    pub fn load() -> Result<BucketReader> {
        let (_, fd) = own_maps()?
            .into_iter()
            .find(|(name, _)| name == "TG_DEV_EXACT")
            .context("TG_DEV_EXACT is not among this process's maps")?;
        let (_, buckets) = bpf::map_info(fd).context("TG_DEV_EXACT's info")?;
        ensure!(
            buckets as usize >= FRAMES,
            "TG_DEV_EXACT has too few buckets"
        );
        let program = Asm::new().lookup_frame_key(fd).read_found();
        let read = bpf::prog_load(ProgType::Xdp, &program.0, "tg_cold_read")?;
        Ok(BucketReader { read, buckets })
    }

    /// The frame for the `i`th read of `trial`: buckets spread evenly over
    /// the whole table, scattered within the stride, other ones each trial
    /// (250 lines would stay cached from one trial to the next).
    pub fn frame(&self, trial: u64, i: usize) -> Vec<u8> {
        let stride = u64::from(self.buckets) / FRAMES as u64;
        let i = i as u64;
        let index = (i * stride + (trial * 4099 + i * 2_654_435_761) % stride) as u32;
        let mut frame = vec![0u8; 60];
        frame[..4].copy_from_slice(&index.to_ne_bytes());
        frame
    }

    /// One read (`repeat` 1): its ns.
    pub fn read(&self, frame: &[u8]) -> Result<u64> {
        let (action, ns) = bpf::test_run(&self.read, frame, 1)?;
        ensure!(action == XDP_PASS, "a bucket read returned {action}");
        Ok(ns)
    }
}
