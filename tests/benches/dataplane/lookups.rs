//! Where the time goes: each map lookup the program makes, timed alone in
//! a program that does nothing else, on the live policy's own maps.

use std::{net::IpAddr, os::fd::AsRawFd as _};

use anyhow::{Context as _, Result, ensure};
use tollgate::datapath::{XDP_DROP, XDP_PASS};
use tollgate_common::{DESTINATION_HEADER_BITS, DEVICE_PREFIX_HEADER_BITS, FAMILY_V4, FAMILY_V6};

use crate::{
    asm::Asm,
    bpf::{self, ProgType},
    cold::{CODE_BLOCKS, CONTIGUOUS, SPREAD},
    fixtures::{Family, frame_any},
    measure::{Cell, Measure},
    report::count,
    setup::Setup,
};

/// The cost of each lookup the program makes for `family`'s probes, each
/// timed alone: an XDP program that builds the key the kernel program
/// would build, calls `bpf_map_lookup_elem` on the live map once and
/// returns XDP_PASS if it found an entry, XDP_DROP if not (checked against
/// what the lookup should find). Minus the floor, that is the lookup.
pub fn lookup_costs(
    measure: &Measure,
    setup: &Setup,
    family: Family,
    devices: usize,
) -> Result<Vec<(String, Cell)>> {
    let maps = own_maps()?;
    let map = |name: &str| {
        maps.iter()
            .find(|(n, _)| n == name)
            .map(|(_, fd)| *fd)
            .with_context(|| format!("map {name} not among this process's descriptors"))
    };
    let slot = setup.dataplane.active_slot();
    let src = setup.sources[family as usize];
    let (fam, bits, addr) = family_key(src);
    let probes = setup.probes(family)?;
    let mut out = Vec::new();
    let mut time = |what: String, map_fd: i32, key: Vec<u8>, found: bool| -> Result<()> {
        let program = Asm::new().lookup(map_fd, &key).pass_if_found();
        let fd = bpf::prog_load(ProgType::Xdp, &program.0, "tg_lookup")?;
        let expect = if found { XDP_PASS } else { XDP_DROP };
        let cell = measure
            .run(|f, r| bpf::test_run(&fd, f, r), &frame_any(), expect)
            .with_context(|| format!("{what}: found {found}?"))?;
        out.push((what, cell));
        Ok(())
    };
    let name = family.name();
    if family == Family::V4 && devices >= 100_000 {
        time(
            format!(
                "TG_DEV_EXACT array, one 64-byte bucket, {} devices (an exact device lookup reads 1 or 2)",
                count(devices)
            ),
            map("TG_DEV_EXACT")?,
            0u32.to_ne_bytes().to_vec(),
            true,
        )?;
    }
    if devices < 100_000 {
        let mut key = (DEVICE_PREFIX_HEADER_BITS + bits).to_ne_bytes().to_vec();
        key.extend_from_slice(&[slot, fam]);
        key.extend_from_slice(&addr);
        key.extend_from_slice(&[0, 0]);
        time(
            format!(
                "v1: TG_DEV_PREFIX LPM, {} devices, {name} source",
                count(devices)
            ),
            map("TG_DEV_PREFIX")?,
            key,
            true,
        )?;
    }
    if devices >= 100_000 {
        for (path, dst, found) in [
            ("allow", probes.allow_dst, true),
            ("deny(default)", probes.deny_default_dst, false),
            ("deny(rule)", probes.deny_rule_dst, true),
        ] {
            let (fam, bits, addr) = family_key(dst);
            let mut key = (DESTINATION_HEADER_BITS + bits).to_ne_bytes().to_vec();
            key.extend_from_slice(&[slot, fam]);
            key.extend_from_slice(&1u16.to_be_bytes());
            key.extend_from_slice(&addr);
            time(
                format!("v1: TG_DST LPM, 10^5 prefixes, {name} {path} destination"),
                map("TG_DST")?,
                key,
                found,
            )?;
        }
        if family == Family::V4 {
            time(
                "TG_COUNTERS per-CPU array (twice per packet)".into(),
                map("TG_COUNTERS")?,
                0u32.to_ne_bytes().to_vec(),
                true,
            )?;
            time(
                "TG_TRIE array, a slot's words (once per trie walk; then a load per level)".into(),
                map("TG_TRIE")?,
                0u32.to_ne_bytes().to_vec(),
                true,
            )?;
            time(
                "TG_ROOTS array (once per trie walk)".into(),
                map("TG_ROOTS")?,
                0u32.to_ne_bytes().to_vec(),
                true,
            )?;
            time(
                "TG_RULESETS array (once per packet with a destination)".into(),
                map("TG_RULESETS")?,
                0u32.to_ne_bytes().to_vec(),
                true,
            )?;
        }
    }
    Ok(out)
}

/// What reads and instructions cost on this machine, looped, in programs
/// (and maps) of their own: dependent reads chained 16 deep, as loads
/// inside one map value (a trie walk's levels) and as array lookups keyed
/// by the word before (a compiled lookup's key goes through the stack);
/// then 128 ALU instructions, and 320 in blocks ending in a taken branch
/// (contiguous, and a cache line each), as `cold::single_run_machine` runs
/// them one at a time. A chain that costs far less than its reads' latency
/// shows that runs overlap, so that a packet's looped time follows all the
/// work it does, and the ALU rows say what each instruction of that work
/// costs. `kind` is the program type the kernel runs them as: the same
/// programs as TC programs show what the kernel's loop of TC test runs
/// lets overlap (they return 2, `XDP_PASS` or `TC_ACT_SHOT`, which a test
/// run only reports).
pub fn machine_costs(measure: &Measure, kind: ProgType) -> Result<Vec<(String, Cell)>> {
    const HOPS: usize = 16;
    const ALU: usize = 128;
    const BLOCKS: usize = CODE_BLOCKS[CODE_BLOCKS.len() - 1];
    let values = bpf::array_create(1024, 1, "tg_chain_value")?;
    let words = bpf::array_create(4, 1024, "tg_chain_words")?;
    let mut out = Vec::new();
    for (what, program) in [
        (
            format!("{HOPS} dependent loads inside one array value (each a trie level's read)"),
            Asm::new().chain_of_loads(values.as_raw_fd(), HOPS),
        ),
        (
            format!("{HOPS} dependent array lookups, each keyed by the word the one before read"),
            Asm::new().chain_of_lookups(words.as_raw_fd(), HOPS),
        ),
        (
            format!(
                "{ALU} ALU instructions, four independent chains (an instruction's cost, looped)"
            ),
            Asm::new().alu(ALU / 4),
        ),
        (
            format!(
                "{} instructions in {BLOCKS} blocks ending in a taken branch, contiguous, looped",
                BLOCKS * 5
            ),
            Asm::new().alu_blocks(BLOCKS, CONTIGUOUS),
        ),
        (
            format!(
                "{} instructions in {BLOCKS} blocks ending in a taken branch, a cache line each, looped",
                BLOCKS * 5
            ),
            Asm::new().alu_blocks(BLOCKS, SPREAD),
        ),
    ] {
        let fd = bpf::prog_load(kind, &program.0, "tg_machine")?;
        let cell = measure.run(|f, r| bpf::test_run(&fd, f, r), &frame_any(), XDP_PASS)?;
        out.push((what, cell));
    }
    Ok(out)
}

/// (family byte, address bits, address as the maps store it).
pub fn family_key(addr: IpAddr) -> (u8, u32, [u8; 16]) {
    let mut bytes = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            bytes[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, 32, bytes)
        }
        IpAddr::V6(a) => (FAMILY_V6, 128, a.octets()),
    }
}

/// The BPF maps among this process's file descriptors, by name: the live
/// dataplane's maps (only one `Dataplane` is open at a time here).
pub fn own_maps() -> Result<Vec<(String, i32)>> {
    let mut maps: Vec<(String, i32)> = Vec::new();
    for fd in bpf::own_fds("anon_inode:bpf-map")? {
        if let Some((name, _)) = bpf::map_info(fd) {
            ensure!(
                !maps.iter().any(|(n, _)| *n == name),
                "two maps named {name} are open"
            );
            maps.push((name, fd));
        }
    }
    Ok(maps)
}

/// Every map of the live dataplane and its `memlock` (what the kernel
/// charges for it, from `/proc/self/fdinfo`, as `bpftool map show` prints
/// it), largest first.
pub fn map_memory() -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for (name, fd) in own_maps()? {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
        let memlock = info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .with_context(|| format!("no memlock for {name}"))?
            .trim()
            .parse::<u64>()?;
        out.push((name, memlock));
    }
    out.sort_by_key(|(_, m)| std::cmp::Reverse(*m));
    Ok(out)
}

pub fn print_memory(memory: &[(String, u64)], trie_nodes: usize) {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let total: u64 = memory.iter().map(|(_, m)| m).sum();
    println!();
    println!(
        "kernel map memory at 10^5 prefixes / 10^6 devices (memlock, both slots): {:.1} MiB; \
         trie nodes in use, both slots: {trie_nodes} ({:.1} MiB)",
        mib(total),
        mib(trie_nodes as u64 * 64)
    );
    for (name, bytes) in memory.iter().filter(|(_, b)| *b >= 1 << 20) {
        println!("  {name:<16} {:>8.1} MiB", mib(*bytes));
    }
}
