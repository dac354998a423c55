//! One packet at a time from cold caches: what a flow's first packet costs,
//! and what one read of memory that is not in the cache costs this machine
//! whatever program makes it.
//!
//! A first packet is one run at `repeat` 1 from one of 250 devices, after
//! the CPU idled (as a device's first packet after a quiet spell comes):
//! the kernel's timer around a single run, and the cache misses of that
//! run, are what it measures. A program that reads one bucket of the live
//! `TG_DEV_EXACT` and nothing else ([`BucketReader`]), run the same way on
//! the first bucket each of those devices has, separates what that one
//! read costs the machine from what the rest of the decision adds.

use std::{
    net::IpAddr,
    os::fd::{AsRawFd as _, OwnedFd},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use tollgate::datapath::XDP_PASS;

use crate::{
    asm::Asm,
    bpf::{self, ProgType},
    fixtures::{Family, frame_any},
    lookups::own_maps,
    measure::{Cell, Floor, median},
};

/// Frames per trial: each run once per trial.
pub const FRAMES: usize = 250;

/// How long the CPU idles before each trial: what makes a trial's first
/// packets cold. On this VM the host runs other work on an idle vCPU's
/// core, and its caches are gone when the vCPU comes back: the first read
/// of a device's bucket measured +0 to +10 after no idle or 1 ms, +100
/// after 10 ms and +250 to +390 after 50 ms (BENCHMARKS.md). A device that
/// sends after a quiet spell meets the same.
pub const IDLE: Duration = Duration::from_millis(50);

/// Per trial, the CPU idles for [`IDLE`], then frame by frame
/// (0..`frames`) each of `runs` runs once, in turn; a run returns its ns.
/// A trial's value per run is the median over its frames; the cells show
/// the lowest and the median trial, as everywhere in this bench.
pub fn once_each(
    trials: usize,
    frames: usize,
    runs: &[&dyn Fn(usize) -> Result<u64>],
) -> Result<Vec<Cell>> {
    let mut per_trial = vec![Vec::with_capacity(trials); runs.len()];
    for _ in 0..trials {
        std::thread::sleep(IDLE);
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

    /// One read (`repeat` 1) of bucket `index`: its ns.
    pub fn read(&self, index: u32) -> Result<u64> {
        ensure!(index < self.buckets, "bucket {index} is past the table");
        let mut frame = vec![0u8; 60];
        frame[..4].copy_from_slice(&index.to_ne_bytes());
        let (action, ns) = bpf::test_run(&self.read, &frame, 1)?;
        ensure!(action == XDP_PASS, "a bucket read returned {action}");
        Ok(ns)
    }
}

/// A kernel hash map (`BPF_MAP_TYPE_HASH`) from the address of each exact
/// device of one family to its group, the structure xdp-filter and
/// Tollgate v1 look an address up in, and a program that makes one lookup
/// in it and reads the value found (`Asm::lookup_frame_key_of`, the key
/// from the frame): what the same first read costs in a hash map of the
/// same devices.
pub struct HashReader {
    read: OwnedFd,
    map: OwnedFd,
    /// The addresses in the map.
    pub entries: usize,
}

impl HashReader {
    pub fn load(devices: &[(IpAddr, u32)], family: Family) -> Result<HashReader> {
        let keys: Vec<(Vec<u8>, u32)> = devices
            .iter()
            .filter(|(addr, _)| Family::of_addr(*addr) == family)
            .map(|&(addr, group)| (key(addr), group))
            .collect();
        let key_size = if family == Family::V4 { 4 } else { 16 };
        let map = bpf::hash_create(key_size, 4, keys.len().max(1) as u32, "tg_cold_hash")?;
        for (key, group) in &keys {
            bpf::map_update(&map, key, &group.to_ne_bytes())?;
        }
        let program = Asm::new()
            .lookup_frame_key_of(map.as_raw_fd(), key_size as usize)
            .read_found();
        let read = bpf::prog_load(ProgType::Xdp, &program.0, "tg_cold_hash")?;
        Ok(HashReader {
            read,
            map,
            entries: keys.len(),
        })
    }

    /// Whether `addr` is in the map.
    pub fn holds(&self, addr: IpAddr) -> bool {
        bpf::map_lookup(&self.map, &key(addr), 4).is_ok()
    }

    /// One lookup (`repeat` 1) of `addr`, which must be in the map: its ns.
    pub fn read(&self, addr: IpAddr) -> Result<u64> {
        let mut frame = key(addr);
        frame.resize(60, 0);
        let (action, ns) = bpf::test_run(&self.read, &frame, 1)?;
        ensure!(action == XDP_PASS, "{addr} is not in the hash map");
        Ok(ns)
    }
}

/// An address as xdp-filter keys its maps: its bytes in network order.
fn key(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// What one run on its own, with nothing cold, costs this machine: each
/// program run twice in a row per frame, the second run counted, beside
/// the floor run the same way ([`once_each`]), as the decision's "right
/// after the same allow" is.
/// - A chain of dependent reads, 4, 8 and 16 deep (`Asm::chain_of_loads`:
///   each load's address is the word the one before read, in one array
///   value, as a trie walk reads its levels). Looped, the same chains cost
///   little (`machine_costs`): one run's loads overlap the next run's. A
///   single packet's decision pays its own chain in full, and these rows
///   price it per read.
/// - A chain of dependent array lookups, 4, 8 and 16 deep
///   (`Asm::chain_of_lookups`: each keyed by the word the one before read,
///   the key stored to the stack and read back, as a compiled program's
///   lookups are): what a step of the decision's chain costs where it is
///   a map lookup rather than a load inside one value.
/// - Code with nothing to wait for (`Asm::alu_blocks`): 16, 32 and 64
///   blocks of four independent instructions, each ending in a taken
///   branch, as a decision's code runs; and the 64 spread one per cache
///   line. They price an instruction of a single run against its looped
///   price (`machine_costs` has the looped rows), and show whether the
///   code's footprint costs a single run anything.
pub fn single_run_machine(trials: usize) -> Result<Vec<(String, Cell, Cell)>> {
    let values = bpf::array_create(1024, 1, "tg_chain_value")?;
    let words = bpf::array_create(4, 1024, "tg_chain_words")?;
    let mut programs = Vec::new();
    for hops in [4, 8, 16] {
        programs.push((
            format!("{hops} dependent loads, right after the same run (the machine)"),
            Asm::new().chain_of_loads(values.as_raw_fd(), hops),
        ));
    }
    for hops in [4, 8, 16] {
        programs.push((
            format!(
                "{hops} dependent array lookups, key through the stack, right after the same run"
            ),
            Asm::new().chain_of_lookups(words.as_raw_fd(), hops),
        ));
    }
    for blocks in CODE_BLOCKS {
        programs.push((
            format!(
                "{} instructions in {blocks} blocks, contiguous, right after the same run",
                blocks * 5
            ),
            Asm::new().alu_blocks(blocks, CONTIGUOUS),
        ));
    }
    let blocks = CODE_BLOCKS[CODE_BLOCKS.len() - 1];
    programs.push((
        format!(
            "{} instructions in {blocks} blocks, a cache line each, right after the same run",
            blocks * 5
        ),
        Asm::new().alu_blocks(blocks, SPREAD),
    ));
    let floor = Floor::load(ProgType::Xdp)?;
    let frame = frame_any();
    let mut rows = Vec::new();
    for (what, program) in programs {
        let fd = bpf::prog_load(ProgType::Xdp, &program.0, "tg_machine")?;
        let run = |_: usize| -> Result<u64> {
            let (action, ns) = bpf::test_run(&fd, &frame, 1)?;
            ensure!(action == XDP_PASS, "{what} returned {action}");
            Ok(ns)
        };
        let floor = |_: usize| Ok(floor.test_run(&frame, 1)?.1);
        let cells = once_each(trials, FRAMES, &[&run, &run, &floor])?;
        rows.push((what, cells[1], cells[2]));
    }
    Ok(rows)
}

/// The blocks of [`single_run_machine`]'s code rows (five instructions
/// each: four ALU and a taken branch).
pub const CODE_BLOCKS: [usize; 3] = [16, 32, 64];

/// `Asm::alu_blocks`' gaps: the blocks back to back, or one a cache line.
pub const CONTIGUOUS: i16 = 2;
pub const SPREAD: i16 = 40;
