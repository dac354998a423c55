//! Dataplane benchmark: nanoseconds per packet of the XDP program, from
//! `BPF_PROG_TEST_RUN`, at policy sizes from 10² to 10⁵ destination prefixes
//! and 10³ to 10⁶ devices, against an XDP program that does nothing (the
//! floor) and against xdp-filter on the same frames.
//!
//! # Method
//! Each cell is `BPF_PROG_TEST_RUN` with `repeat` = 10⁶ (one frame, run 10⁶
//! times in the kernel's loop); the kernel reports the mean duration of one
//! run, in whole nanoseconds. A cell is run `DATAPLANE_BENCH_TRIALS` times
//! (default 9) and shows the lowest trial, then the median in brackets: the
//! program's work is the same in every trial, and load from elsewhere on a
//! shared machine only ever adds to it. The trials of one program's cells
//! run in rounds, so a burst of that load spreads over cells instead of
//! spoiling one. Every run's return code is checked against the verdict the
//! reference model (`tollgate::model`) gives for the same packet, so a cell
//! cannot silently measure the wrong path.
//!
//! - **Floor**: the cheapest XDP program there is, `r0 = XDP_PASS; exit`
//!   (two instructions, 16 bytes), loaded here from raw instructions with
//!   `bpf(BPF_PROG_LOAD)` and test-run the same way (no second BPF crate).
//!   It measures the test-run loop itself (program call, context set-up,
//!   timing); what a program costs is what it adds to it. TC rows have a
//!   floor of their own (`r0 = TC_ACT_UNSPEC; exit`, a SCHED_CLS program).
//!   The floors are measured first and last; the lower counts.
//! - **Tollgate**: the real program (`Dataplane::open`, no pins, nothing
//!   attached) with a policy built in code as a `policy::Policy` and compiled
//!   by the real compiler: one group, `fleet`, default deny, with
//!   `allow tcp 443, 8883` to a list `allowed` and `deny any` to a list
//!   `blocked` (the first prefix of each family and every 100th after it),
//!   plus the built-in NTP allow to 100.127.0.123. The N destination
//!   prefixes are the first N of the pool in `testkit::bench` (every distinct AWS
//!   prefix, about 9,000, then more-specific prefixes derived from them:
//!   10⁵ is all AWS prefixes plus ~91,000 /L+4 subnets of them).
//!   Devices: 10⁶ is 500,000 IPv4 /32 and 500,000 IPv6 /128 (the exact hash
//!   map; the probe source is one of them); 10³ is a mix of 250 /32, 250
//!   /24, 250 /128 and 250 /64 and the probe source is in the last /24 or
//!   /64, so it misses the hash map and takes the device LPM trie.
//!   Probes (TCP to port 443): *allow* goes to the last allowed prefix of
//!   the family (the most deeply nested one at 10⁵), *deny (default)* to
//!   192.0.2.1 / 2001:db8::1 (in no list: the group default decides), *deny
//!   (rule)* to the last blocked prefix. Denies also run the deny-event rate
//!   limiter (100/s by default: the steady state of a deny flood).
//! - **Established and new flows**: a repeated frame is one flow, so from
//!   its second run on, *allow* takes the flow cache (`TG_FLOWS`): that is
//!   the cost of an established flow's packets. Denies are never cached.
//!   *Allow (new flow)* is the first packet of a flow: the full decision
//!   plus the insert into the cache. It is measured with `repeat` = 1 on
//!   250 frames from 250 devices (per trial, the same policy is installed
//!   again first: a new generation, so every flow is new), and the trial's
//!   value is the median of those 250 runs. Its floor is measured the same
//!   way, frame by frame in between, because one run at a time carries the
//!   timer's own cost.
//! - **xdp-filter** (xdp-tools, `/usr/sbin/xdp-filter`): loaded with
//!   `xdp-filter load -m skb -p deny -f ipv4,ipv6` on a veth in a namespace
//!   of our own (its allow-list program, `xdpfilt_dny_ip`), filled with
//!   exact destination addresses (its IP filter is a hash of addresses, at
//!   most 10,000 per family), one address per Tollgate destination prefix:
//!   the first of each family with `xdp-filter ip -m dst`, the rest written
//!   into its pinned map with the value xdp-filter wrote for the first.
//!   Its program is found by id on the veth (`ip -d -j link`), opened with
//!   `BPF_PROG_GET_FD_BY_ID` and test-run on the same frames. Unloaded, and
//!   the namespace removed, when done (also on failure).
//! - **TC**: the same Tollgate program's TC twin at the largest cell.
//! - **Where the time goes**: at 10⁵ prefixes, each map lookup the program
//!   makes (and the clock read of the deny-event limiter) is timed alone:
//!   a raw XDP program builds the key the kernel program would build for a
//!   probe, calls `bpf_map_lookup_elem` once on the live policy's map
//!   (found among this process's descriptors) and returns XDP_PASS; its
//!   time minus the floor is the cost of that lookup.
//!
//! Run as root: `cargo bench --bench dataplane`. `DATAPLANE_BENCH_REPEAT`
//! (default 1,000,000) and `DATAPLANE_BENCH_TRIALS` (default 9) change the
//! repeat count and the number of trials per cell.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use ipnet::IpNet;
use testkit::{
    bench,
    frames::{Frame, Transport},
};
use tollgate::{
    compile::compile,
    config::Limits,
    datapath::{Dataplane, Options, TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS},
    model,
    netns::Namespace,
    policy::{Action, Device, Group, Origin, Policy, PortRange, Rule, RuleId, Target},
    tables::{CompiledPolicy, PacketFacts},
};
use tollgate_common::{
    DESTINATION_HEADER_BITS, DEVICE_PREFIX_HEADER_BITS, DecisionReason, FAMILY_V4, FAMILY_V6,
    Verdict,
};

const RULE_COUNTS: [usize; 3] = [100, 10_000, 100_000];
const DEVICE_COUNTS: [usize; 2] = [1_000, 1_000_000];
/// xdp-filter holds at most 10,000 addresses per family.
const XDP_FILTER_COUNTS: [usize; 2] = [100, 10_000];
/// The cell the target is about.
const TARGET_RULES: usize = 100_000;
const TARGET_DEVICES: usize = 1_000_000;
const TARGET_NS_OVER_FLOOR: u64 = 25;
const NTP_ADDRESS: Ipv4Addr = Ipv4Addr::new(100, 127, 0, 123);
const PORT: u16 = 443;
/// First packets per trial for *allow (new flow)*.
const NEW_FLOWS: u8 = 250;

fn main() -> Result<()> {
    if std::env::args().skip(1).any(|a| a != "--bench") {
        bail!("usage: cargo bench --bench dataplane");
    }
    // SAFETY: geteuid has no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "needs root (BPF)");
    let repeat: u32 = env_number("DATAPLANE_BENCH_REPEAT", 1_000_000)?;
    let trials: usize = env_number("DATAPLANE_BENCH_TRIALS", 9)?;
    ensure!(
        repeat >= 1 && trials >= 1,
        "repeat and trials must be positive"
    );
    // Other jobs share this machine; time spent preempted is not counted by
    // the kernel's test-run timer, but fewer preemptions mean less noise.
    // SAFETY: setpriority on this process.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0 {
        eprintln!(
            "warning: cannot raise priority: {}",
            std::io::Error::last_os_error()
        );
    }
    bench::print_machine_facts();
    println!(
        " method: BPF_PROG_TEST_RUN, repeat {repeat} per trial, {trials} trials per cell; \
         ns per packet as the kernel reports it (mean of the repeats, whole ns): lowest \
         trial (median trial); trials of the cells of one program run in rounds"
    );
    let measure = Measure { repeat, trials };
    let pool = bench::Pool::load()?;
    let mut table = Vec::new();

    // The floors are measured first and last, and the lower of the two
    // counts: one burst of load while they run would shift every row.
    let floors_first = Floors::measure(&measure)?;
    let mut tc = Vec::new();
    let mut costs = Vec::new();
    for &rules in &RULE_COUNTS {
        for &devices in &DEVICE_COUNTS {
            let started = Instant::now();
            let mut setup = Setup::build(&pool, rules, devices)?;
            eprintln!(
                "tollgate: {rules} destination prefixes, {devices} devices: {} destination \
                 entries, {} exact + {} prefix devices, {} rule sets; built and installed in \
                 {:.1?} ({} map writes)",
                setup.tables.destinations.len(),
                setup.tables.device_exact.len(),
                setup.tables.device_prefixes.len(),
                setup.tables.rulesets.len(),
                started.elapsed(),
                setup.writes,
            );
            let probes = [setup.probes(Family::V4)?, setup.probes(Family::V6)?];
            let jobs = |pass: u32, drop: u32| -> Vec<(&[u8], u32)> {
                probes
                    .iter()
                    .flat_map(|p| {
                        [
                            (&p.allow[..], pass),
                            (&p.deny_default[..], drop),
                            (&p.deny_rule[..], drop),
                        ]
                    })
                    .collect()
            };
            let xdp = |f: &[u8], r: u32| {
                let (action, d) = setup.dataplane.test_run_xdp(f, r)?;
                Ok((action, d.as_nanos() as u64))
            };
            let cells = measure.run_all(xdp, &jobs(XDP_PASS, XDP_DROP))?;
            let row = |program: &str, kind: ProgType, family: Family, cells: &[Cell]| Row {
                program: program.into(),
                kind,
                rules: count(rules),
                devices: count(devices),
                family,
                allow: Some(cells[0]),
                allow_new: None,
                deny_default: Some(cells[1]),
                deny_rule: Ok(cells[2]),
            };
            for (family, cells) in [Family::V4, Family::V6].into_iter().zip(cells.chunks(3)) {
                let mut r = row("tollgate (xdp)", ProgType::Xdp, family, cells);
                r.allow_new = Some(setup.first_packets(&measure, &probes[family as usize])?);
                table.push(r);
            }
            if rules == TARGET_RULES {
                for family in [Family::V4, Family::V6] {
                    costs.extend(lookup_costs(&measure, &setup, family, devices)?);
                }
            }
            if rules == TARGET_RULES && devices == TARGET_DEVICES {
                let tc_run = |f: &[u8], r: u32| {
                    let (action, d) = setup.dataplane.test_run_tc(f, r)?;
                    Ok((action, d.as_nanos() as u64))
                };
                let cells = measure.run_all(tc_run, &jobs(TC_ACT_UNSPEC, TC_ACT_SHOT))?;
                for (family, cells) in [Family::V4, Family::V6].into_iter().zip(cells.chunks(3)) {
                    tc.push(row("tollgate (tc)", ProgType::SchedCls, family, cells));
                }
            }
        }
    }
    table.extend(tc);

    for &entries in &XDP_FILTER_COUNTS {
        let destinations = pool.take(entries);
        match XdpFilter::load(&destinations) {
            Ok(filter) => {
                let sources = probe_sources(DEVICE_COUNTS[1]);
                let frames = [Family::V4, Family::V6].map(|family| {
                    Ok::<_, anyhow::Error>((
                        xdp_filter_allow_frame(&destinations, family)?,
                        Probes::frames_for(family, &sources).deny_default,
                    ))
                });
                let [v4, v6] = frames;
                let (v4, v6) = (v4?, v6?);
                let cells = measure.run_all(
                    |f, r| filter.test_run(f, r),
                    &[
                        (&v4.0, XDP_PASS),
                        (&v4.1, XDP_DROP),
                        (&v6.0, XDP_PASS),
                        (&v6.1, XDP_DROP),
                    ],
                )?;
                for (family, cells) in [Family::V4, Family::V6].into_iter().zip(cells.chunks(2)) {
                    table.push(Row {
                        program: format!("xdp-filter ({})", filter.name),
                        kind: ProgType::Xdp,
                        rules: count(entries),
                        devices: "-".into(),
                        family,
                        allow: Some(cells[0]),
                        allow_new: None,
                        deny_default: Some(cells[1]),
                        deny_rule: Err("n/a (no rules)".into()),
                    });
                }
            }
            Err(why) => table.push(Row {
                program: format!("xdp-filter: not measured: {why:#}"),
                kind: ProgType::Xdp,
                rules: count(entries),
                devices: "-".into(),
                family: Family::V4,
                allow: None,
                allow_new: None,
                deny_default: None,
                deny_rule: Err("-".into()),
            }),
        }
    }

    // The clock the deny-event limiter reads, and the coarse one it could.
    for (what, helper) in [
        (
            "bpf_ktime_get_ns() (not used; for comparison)",
            HELPER_KTIME_GET_NS,
        ),
        (
            "bpf_ktime_get_coarse_ns() (deny-event limiter)",
            HELPER_KTIME_GET_COARSE_NS,
        ),
    ] {
        let program = Asm::new().call(helper).pass();
        let fd = bpf::prog_load(ProgType::Xdp, &program.0, "tg_clock")?;
        let cell = measure.run(|f, r| bpf::test_run(&fd, f, r), &frame_any(), XDP_PASS)?;
        costs.push((what.into(), cell));
    }

    let floors = floors_first.lower(&Floors::measure(&measure)?);
    let mut rows = floors.rows();
    rows.extend(table);
    print_table(&rows, &floors);
    print_costs(&costs, floors.of(ProgType::Xdp, Family::V4));
    print_verdicts(&rows, &floors);
    Ok(())
}

/// The floors: XDP and TC programs that return at once, per family.
struct Floors {
    xdp: Vec<Cell>,
    tc: Vec<Cell>,
}

impl Floors {
    fn measure(measure: &Measure) -> Result<Floors> {
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
    fn lower(&self, other: &Floors) -> Floors {
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

    fn of(&self, kind: ProgType, family: Family) -> u64 {
        match kind {
            ProgType::Xdp => self.xdp[family as usize].min,
            ProgType::SchedCls => self.tc[family as usize].min,
        }
    }

    fn rows(&self) -> Vec<Row> {
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
                });
            }
        }
        rows
    }
}

/// A frame for programs that never read it.
fn frame_any() -> Vec<u8> {
    frame(
        Ipv4Addr::new(10, 0, 0, 1).into(),
        Ipv4Addr::new(192, 0, 2, 1).into(),
    )
}

fn print_costs(costs: &[(String, Cell)], floor: u64) {
    println!();
    println!(
        "one map lookup or helper call on its own, in an XDP program that does nothing else \
         (10^5 destination prefixes; the live policy's own maps and keys)"
    );
    println!("{:<68} {:>14} {:>8}", "operation", "ns", "-floor");
    for (what, cell) in costs {
        println!(
            "{what:<68} {:>14} {:>+8}",
            cell.to_string(),
            cell.min as i64 - floor as i64
        );
    }
}

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_MAP_UPDATE_ELEM: i32 = 2;
const HELPER_KTIME_GET_NS: i32 = 5;
const HELPER_KTIME_GET_COARSE_NS: i32 = 160;

/// The cost of each lookup the program makes for `family`'s probes, each
/// timed alone: an XDP program that builds the key the kernel program
/// would build, calls `bpf_map_lookup_elem` on the live map once and
/// returns XDP_PASS if it found an entry, XDP_DROP if not (checked against
/// what the lookup should find). Minus the floor, that is the lookup.
fn lookup_costs(
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
    let mut insert = None;
    let exact = if devices >= 100_000 { "hit" } else { "miss" };
    let mut key = vec![slot, fam, 0, 0];
    key.extend_from_slice(&addr);
    time(
        format!(
            "TG_DEV_EXACT hash, {} devices, {name} source, {exact}",
            count(devices)
        ),
        map("TG_DEV_EXACT")?,
        key,
        devices >= 100_000,
    )?;
    if devices < 100_000 {
        let mut key = (DEVICE_PREFIX_HEADER_BITS + bits).to_ne_bytes().to_vec();
        key.extend_from_slice(&[slot, fam]);
        key.extend_from_slice(&addr);
        key.extend_from_slice(&[0, 0]);
        time(
            format!(
                "TG_DEV_PREFIX LPM, {} devices, {name} source",
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
                format!("TG_DST LPM, 10^5 prefixes, {name} {path} destination"),
                map("TG_DST")?,
                key,
                found,
            )?;
        }
        // The allow probe's flow, remembered by one run under the
        // generation in force.
        let (action, _) = setup.dataplane.test_run_xdp(&probes.allow, 1)?;
        ensure!(action == XDP_PASS);
        let (_, _, dst) = family_key(probes.allow_dst);
        let mut key = setup.dataplane.generation().to_ne_bytes().to_vec();
        key.extend_from_slice(&PORT.to_ne_bytes());
        key.extend_from_slice(&[6, fam]);
        key.extend_from_slice(&addr);
        key.extend_from_slice(&dst);
        time(
            format!("TG_FLOWS LRU hash, {name} allow flow, hit (established flows)"),
            map("TG_FLOWS")?,
            key.clone(),
            true,
        )?;
        // The insert of a new flow, timed as the update of one key in a
        // generation far from the live one (an LRU update takes a free
        // node and releases the old one: the work of an insert).
        key[..4].copy_from_slice(&(setup.dataplane.generation() ^ 1 << 31).to_ne_bytes());
        let program = Asm::new()
            .update(map("TG_FLOWS")?, &key, &[0; 8])
            .pass_if_zero();
        let fd = bpf::prog_load(ProgType::Xdp, &program.0, "tg_insert")?;
        let cell = measure.run(|f, r| bpf::test_run(&fd, f, r), &frame_any(), XDP_PASS)?;
        insert = Some((
            format!("TG_FLOWS LRU hash update, {name} (a new flow's insert)"),
            cell,
        ));
        if family == Family::V4 {
            time(
                "TG_COUNTERS per-CPU array (twice per packet)".into(),
                map("TG_COUNTERS")?,
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
    out.extend(insert);
    Ok(out)
}

/// (family byte, address bits, address as the maps store it).
fn family_key(addr: IpAddr) -> (u8, u32, [u8; 16]) {
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
fn own_maps() -> Result<Vec<(String, i32)>> {
    let mut maps: Vec<(String, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_map = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        if let Some(name) = bpf::map_name(fd) {
            ensure!(
                !maps.iter().any(|(n, _)| *n == name),
                "two maps named {name} are open"
            );
            maps.push((name, fd));
        }
    }
    Ok(maps)
}

/// Just enough of a BPF assembler for the floor and the lookup programs.
struct Asm(Vec<u8>);

impl Asm {
    fn new() -> Asm {
        Asm(Vec::new())
    }

    fn insn(mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Asm {
        self.0.push(code);
        self.0.push(dst | (src << 4));
        self.0.extend_from_slice(&off.to_le_bytes());
        self.0.extend_from_slice(&imm.to_le_bytes());
        self
    }

    /// `r0 = XDP_PASS; exit`: the whole XDP floor program.
    fn pass(self) -> Asm {
        self.ret(XDP_PASS as i32)
    }

    /// `if r0 == 0 { r0 = XDP_DROP } else { r0 = XDP_PASS }; exit`: after
    /// a lookup, says whether it found an entry.
    fn pass_if_found(self) -> Asm {
        // BPF_JMP | BPF_JEQ | BPF_K: if r0 == 0 skip the next two.
        self.insn(0x15, 0, 0, 2, 0)
            .ret(XDP_PASS as i32)
            .ret(XDP_DROP as i32)
    }

    /// `r0 = value; exit`.
    fn ret(self, value: i32) -> Asm {
        // BPF_ALU64 | BPF_MOV | BPF_K; BPF_JMP | BPF_EXIT.
        self.insn(0xb7, 0, 0, 0, value).insn(0x95, 0, 0, 0, 0)
    }

    fn call(self, helper: i32) -> Asm {
        self.insn(0x85, 0, 0, 0, helper)
    }

    /// `if r0 == 0 { r0 = XDP_PASS } else { r0 = XDP_DROP }; exit`: after
    /// an update, says whether it succeeded.
    fn pass_if_zero(self) -> Asm {
        self.insn(0x15, 0, 0, 2, 0)
            .ret(XDP_DROP as i32)
            .ret(XDP_PASS as i32)
    }

    /// Stores `bytes` on the stack at `base` (8-byte aligned, below r10).
    fn stack(mut self, base: i16, bytes: &[u8]) -> Asm {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(8) * 8, 0);
        for (i, word) in padded.chunks(4).enumerate() {
            let imm = i32::from_ne_bytes(word.try_into().expect("4 bytes"));
            // BPF_ST | BPF_MEM | BPF_W: *(u32 *)(r10 + off) = imm.
            self = self.insn(0x62, 10, 0, base + 4 * i as i16, imm);
        }
        self
    }

    /// `r1 = map` (BPF_LD | BPF_DW | BPF_IMM, BPF_PSEUDO_MAP_FD); `reg =
    /// r10 + base`.
    fn map_and_pointer(self, map_fd: i32, reg: u8, base: i16) -> Asm {
        self.insn(0x18, 1, 1, 0, map_fd)
            .insn(0, 0, 0, 0, 0)
            .insn(0xbf, reg, 10, 0, 0)
            .insn(0x07, reg, 0, 0, i32::from(base))
    }

    /// `bpf_map_lookup_elem(map, &key)` with `key` built on the stack.
    fn lookup(self, map_fd: i32, key: &[u8]) -> Asm {
        let base = -((key.len().div_ceil(8) * 8) as i16);
        self.stack(base, key)
            .map_and_pointer(map_fd, 2, base)
            .call(HELPER_MAP_LOOKUP_ELEM)
    }

    /// `bpf_map_update_elem(map, &key, &value, BPF_ANY)`, both on the stack.
    fn update(self, map_fd: i32, key: &[u8], value: &[u8]) -> Asm {
        let key_base = -((key.len().div_ceil(8) * 8) as i16);
        let value_base = key_base - (value.len().div_ceil(8) * 8) as i16;
        self.stack(key_base, key)
            .stack(value_base, value)
            .map_and_pointer(map_fd, 2, key_base)
            // r3 = r10 + value_base; r4 = 0.
            .insn(0xbf, 3, 10, 0, 0)
            .insn(0x07, 3, 0, 0, i32::from(value_base))
            .insn(0xb7, 4, 0, 0, 0)
            .call(HELPER_MAP_UPDATE_ELEM)
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(text) => text
            .replace('_', "")
            .parse()
            .with_context(|| name.to_string()),
        Err(_) => Ok(default),
    }
}

/// 100 000 -> "100 000" (thin groups keep the table readable).
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4 = 0,
    V6 = 1,
}

impl Family {
    fn of(net: &IpNet) -> Family {
        if net.addr().is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// One cell's trials, in ns per packet: the lowest (the headline: noise
/// from the shared machine only ever adds) and the median.
#[derive(Clone, Copy, Debug)]
struct Cell {
    min: u64,
    median: u64,
}

impl Cell {
    /// The lowest and the median of the trials.
    fn of(trials: &mut [u64]) -> Cell {
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

struct Measure {
    repeat: u32,
    trials: usize,
}

impl Measure {
    /// Test-runs each `(frame, expected return code)` `trials` times, in
    /// rounds (one trial of each, then the next round), so that a burst of
    /// load from elsewhere lands on one trial of several cells rather than
    /// on every trial of one. Every run must return what is expected.
    fn run_all(
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

    fn run(
        &self,
        run: impl Fn(&[u8], u32) -> Result<(u32, u64)>,
        frame: &[u8],
        expect: u32,
    ) -> Result<Cell> {
        Ok(self.run_all(run, &[(frame, expect)])?[0])
    }
}

/// One line of the table.
struct Row {
    program: String,
    kind: ProgType,
    rules: String,
    devices: String,
    family: Family,
    allow: Option<Cell>,
    /// The first packet of a flow, and the floor measured the same way.
    allow_new: Option<FirstPackets>,
    deny_default: Option<Cell>,
    /// `Err` says why there is no number.
    deny_rule: Result<Cell, String>,
}

fn print_table(rows: &[Row], floors: &Floors) {
    let cell = |c: &Option<Cell>| c.map_or("-".to_string(), |c| c.to_string());
    println!();
    println!(
        "{:<26} {:>11} {:>9} {:>6} {:>14} {:>15} {:>15} {:>12} {:>16} {:>10}",
        "program",
        "dst entries",
        "devices",
        "family",
        "allow ns",
        "deny(default)",
        "deny(rule)",
        "allow-floor",
        "allow(new flow)",
        "new-floor1"
    );
    for r in rows {
        let over = r
            .allow
            .filter(|_| !r.program.starts_with("floor"))
            .map_or("-".to_string(), |c| {
                format!("{:+}", c.min as i64 - floors.of(r.kind, r.family) as i64)
            });
        if r.allow.is_none() {
            println!("{:<26} {:>11}  {}", "xdp-filter", r.rules, r.program);
            continue;
        }
        let (new, new_over) = match r.allow_new {
            Some(first) => (
                first.allow.to_string(),
                format!("{:+}", first.allow.min as i64 - first.floor.min as i64),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<26} {:>11} {:>9} {:>6} {:>14} {:>15} {:>15} {:>12} {:>16} {:>10}",
            r.program,
            r.rules,
            r.devices,
            r.family.name(),
            cell(&r.allow),
            cell(&r.deny_default),
            match &r.deny_rule {
                Ok(c) => c.to_string(),
                Err(why) => why.clone(),
            },
            over,
            new,
            new_over
        );
    }
}

/// The target line and the allow/deny difference at the largest cell.
fn print_verdicts(rows: &[Row], floors: &Floors) {
    println!();
    let target = rows.iter().filter(|r| {
        r.program == "tollgate (xdp)"
            && r.rules == count(TARGET_RULES)
            && r.devices == count(TARGET_DEVICES)
    });
    for r in target {
        let paths = [
            ("allow", r.allow),
            ("deny(default)", r.deny_default),
            ("deny(rule)", r.deny_rule.as_ref().ok().copied()),
        ];
        let floor = floors.of(r.kind, r.family);
        for (path, cell) in paths {
            let Some(cell) = cell else { continue };
            let over = cell.min as i64 - floor as i64;
            println!(
                "target <= floor + {TARGET_NS_OVER_FLOOR} ns at 10^5 rules / 10^6 devices, {} \
                 {path}: {} ns = floor {} + {over} ns: {}",
                r.family.name(),
                cell.min,
                floor,
                if over <= TARGET_NS_OVER_FLOOR as i64 {
                    "MET"
                } else {
                    "MISSED"
                }
            );
        }
        if let Some(first) = r.allow_new {
            println!(
                "at 10^5 rules / 10^6 devices, {} allow (new flow): {} ns = floor at repeat 1 {} \
                 + {} ns; deny(default) from the same devices, one at a time: {} ns (no insert)",
                r.family.name(),
                first.allow.min,
                first.floor.min,
                first.allow.min as i64 - first.floor.min as i64,
                first.deny_default.min
            );
        }
        if let (Some(a), Some(d)) = (r.allow, r.deny_default) {
            println!(
                "deny(default) - allow at 10^5 rules / 10^6 devices, {}: {:+} ns",
                r.family.name(),
                d.min as i64 - a.min as i64
            );
        }
    }
}

/// A compiled policy in a freshly opened dataplane, and its probe packets.
struct Setup {
    dataplane: Dataplane,
    tables: CompiledPolicy,
    sources: [IpAddr; 2],
    writes: usize,
}

impl Setup {
    fn build(pool: &bench::Pool, rules: usize, devices: usize) -> Result<Setup> {
        let destinations = pool.take(rules);
        let (device_list, sources) = devices_for(devices);
        let policy = fleet_policy(&destinations, device_list);
        let limits = Limits {
            device_addresses: 1 << 20,
            device_prefixes: 1 << 16,
            destinations: 1 << 18,
            counters: 1 << 17,
            ..Limits::default()
        };
        let tables = compile(&policy, &limits).map_err(|errors| {
            anyhow::anyhow!(
                "compile: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let mut dataplane = Dataplane::open(&Options {
            pin_dir: None,
            limits,
            ..Options::default()
        })?;
        let report = dataplane.install(&tables)?;
        Ok(Setup {
            dataplane,
            tables,
            sources,
            writes: report.writes.inserted + report.writes.removed,
        })
    }

    /// The probes of `family`, each checked against the reference model.
    fn probes(&self, family: Family) -> Result<Probes> {
        let src = self.sources[family as usize];
        let decide = |dst: IpAddr| {
            model::verdict(
                &self.tables,
                &PacketFacts {
                    src,
                    dst,
                    proto: 6,
                    dport: Some(PORT),
                },
            )
        };
        // The last entry of the family whose own rule set decides a packet
        // to its last address with `verdict` (a later, more specific entry
        // may take that address).
        let last_deciding = |verdict: Verdict| -> Result<IpAddr> {
            self.tables
                .destinations
                .iter()
                .rev()
                .filter(|d| Family::of(&d.prefix) == family)
                .map(|d| (d.prefix, d.prefix.broadcast()))
                .find(|(prefix, dst)| {
                    let d = decide(*dst);
                    d.verdict == verdict
                        && d.reason == DecisionReason::Rule
                        && d.destination == Some(*prefix)
                })
                .map(|(_, dst)| dst)
                .with_context(|| format!("no {family:?} destination decides {verdict:?}"))
        };
        let allow = last_deciding(Verdict::Allow)?;
        let deny_rule = last_deciding(Verdict::Deny)?;
        let frames = Probes::frames_for(family, &self.sources);
        let default = decide(frames.deny_default_dst);
        ensure!(
            default.verdict == Verdict::Deny && default.reason == DecisionReason::GroupDefault,
            "{:?} is not decided by the group default: {default:?}",
            frames.deny_default_dst
        );
        Ok(Probes {
            allow: frame(src, allow),
            allow_dst: allow,
            deny_rule: frame(src, deny_rule),
            deny_rule_dst: deny_rule,
            ..frames
        })
    }
}

impl Setup {
    /// *Allow (new flow)* for `probes`' family: per trial, a new generation
    /// (the same policy installed again: no map writes, every remembered
    /// flow retired), then the allow probe's destination from 250 devices,
    /// each frame once, with the floor run on the same frame in between.
    /// A trial's value is the median of its 250 first packets; the cells
    /// show the lowest and the median trial, as elsewhere.
    fn first_packets(&mut self, measure: &Measure, probes: &Probes) -> Result<FirstPackets> {
        let floor = Floor::load(ProgType::Xdp)?;
        let src = self.sources[probes.family as usize];
        let frames: Vec<(Vec<u8>, Vec<u8>)> = (1..=NEW_FLOWS)
            .map(|host| {
                let src = with_last_byte(src, host);
                let d = model::verdict(
                    &self.tables,
                    &PacketFacts {
                        src,
                        dst: probes.allow_dst,
                        proto: 6,
                        dport: Some(PORT),
                    },
                );
                ensure!(
                    d.verdict == Verdict::Allow,
                    "{src} -> {} is not allowed: {d:?}",
                    probes.allow_dst
                );
                Ok((
                    frame(src, probes.allow_dst),
                    frame(src, probes.deny_default_dst),
                ))
            })
            .collect::<Result<_>>()?;
        // Once into the other slot, so that both hold this policy and the
        // installs below write nothing.
        self.dataplane.install(&self.tables)?;
        let mut trials = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..measure.trials {
            let report = self.dataplane.install(&self.tables)?;
            ensure!(report.writes.inserted + report.writes.removed == 0);
            let mut runs = [Vec::new(), Vec::new(), Vec::new()];
            for (allow, deny) in &frames {
                let (action, d) = self.dataplane.test_run_xdp(allow, 1)?;
                ensure!(action == XDP_PASS, "a new flow was not allowed");
                runs[0].push(d.as_nanos() as u64);
                runs[1].push(floor.test_run(allow, 1)?.1);
                let (action, d) = self.dataplane.test_run_xdp(deny, 1)?;
                ensure!(action == XDP_DROP, "a deny(default) probe passed");
                runs[2].push(d.as_nanos() as u64);
            }
            for (trial, runs) in trials.iter_mut().zip(&mut runs) {
                trial.push(median(runs));
            }
        }
        let [allow, floor, deny_default] = trials.map(|mut t| Cell::of(&mut t));
        Ok(FirstPackets {
            allow,
            floor,
            deny_default,
        })
    }
}

/// One packet at a time (`repeat` 1), each from another device.
#[derive(Clone, Copy)]
struct FirstPackets {
    /// A flow's first packet: the full decision and the cache insert.
    allow: Cell,
    /// The floor program on the same frames.
    floor: Cell,
    /// The deny(default) probe from the same devices: a full decision
    /// without an insert, just as cold.
    deny_default: Cell,
}

fn median(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// `addr` with its last byte replaced: another device of the same fleet
/// (every probe source sits where its neighbours are devices too).
fn with_last_byte(addr: IpAddr, last: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mut o = a.octets();
            o[3] = last;
            IpAddr::V4(o.into())
        }
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[15] = last;
            IpAddr::V6(o.into())
        }
    }
}

/// The probe frames of one family.
struct Probes {
    family: Family,
    allow: Vec<u8>,
    allow_dst: IpAddr,
    deny_default: Vec<u8>,
    deny_default_dst: IpAddr,
    deny_rule: Vec<u8>,
    deny_rule_dst: IpAddr,
}

impl Probes {
    /// Frames from the probe source of `family`; allow and deny(rule) are
    /// placeholders until a policy picks their destinations.
    fn frames_for(family: Family, sources: &[IpAddr; 2]) -> Probes {
        let src = sources[family as usize];
        let nowhere: IpAddr = match family {
            Family::V4 => Ipv4Addr::new(192, 0, 2, 1).into(),
            Family::V6 => "2001:db8::1".parse().expect("an address"),
        };
        Probes {
            family,
            allow: frame(src, nowhere),
            allow_dst: nowhere,
            deny_default: frame(src, nowhere),
            deny_default_dst: nowhere,
            deny_rule: frame(src, nowhere),
            deny_rule_dst: nowhere,
        }
    }
}

fn frame(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    Frame::new(src, dst, Transport::Tcp { dport: PORT }).build()
}

fn origin() -> Origin {
    Origin {
        file: "bench".into(),
        line: 1,
        column: 1,
    }
}

/// The devices of the fleet and the probe source of each family.
fn devices_for(n: usize) -> (Vec<IpNet>, [IpAddr; 2]) {
    let v4 = |i: usize| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i as u32);
    let v6 = |i: usize| {
        Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0)) + i as u128)
    };
    if n >= 100_000 {
        // All exact: half IPv4 /32, half IPv6 /128 (TG_DEV_EXACT).
        let half = n / 2;
        let mut list: Vec<IpNet> = (0..half).map(|i| IpNet::from(IpAddr::V4(v4(i)))).collect();
        list.extend((0..n - half).map(|i| IpNet::from(IpAddr::V6(v6(i)))));
        (list, probe_sources(n))
    } else {
        // A quarter each: /32, /24, /128, /64.
        let q = n / 4;
        let mut list = Vec::with_capacity(n);
        list.extend(
            (1..=q).map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)))),
        );
        list.extend((0..q).map(|i| {
            IpNet::new(Ipv4Addr::new(10, 1 + (i >> 8) as u8, i as u8, 0).into(), 24).expect("a /24")
        }));
        list.extend((1..=q).map(|i| IpNet::from(IpAddr::V6(v6(i)))));
        list.extend((0..n - 3 * q).map(|i| {
            let net = Ipv6Addr::new(0xfd00, 1, 0, i as u16, 0, 0, 0, 0);
            IpNet::new(net.into(), 64).expect("a /64")
        }));
        (list, probe_sources(n))
    }
}

/// The probe source of each family for a fleet of `n` devices: an exact
/// device in the middle for 10⁶; inside the last /24 and /64 for 10³.
fn probe_sources(n: usize) -> [IpAddr; 2] {
    if n >= 100_000 {
        let half = n / 2;
        [
            IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (half / 2) as u32,
            )),
            IpAddr::V6(Ipv6Addr::from(
                u128::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0)) + (half / 2) as u128,
            )),
        ]
    } else {
        let q = n / 4;
        let last = n - 3 * q - 1;
        [
            IpAddr::V4(Ipv4Addr::new(
                10,
                1 + ((q - 1) >> 8) as u8,
                (q - 1) as u8,
                77,
            )),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, last as u16, 0, 0, 0, 0x77)),
        ]
    }
}

/// One group, `fleet`: default deny, `allow tcp [443, 8883]` to `allowed`,
/// `deny any` to `blocked` (per family, the first destination and every
/// 100th after it), the built-in NTP allow.
fn fleet_policy(destinations: &[IpNet], devices: Vec<IpNet>) -> Policy {
    let mut allowed = Vec::new();
    let mut blocked = Vec::new();
    let mut seen = [0usize; 2];
    for net in destinations {
        let n = &mut seen[Family::of(net) as usize];
        if (*n).is_multiple_of(100) {
            blocked.push(*net);
        } else {
            allowed.push(*net);
        }
        *n += 1;
    }
    let ports = vec![PortRange::new(443, 443), PortRange::new(8883, 8883)];
    let rule = |action, list: &str, prefixes, proto, ports: Option<Vec<PortRange>>| Rule {
        id: RuleId::derived(action, &[list.to_string()], proto, ports.as_deref()),
        action,
        targets: vec![Target {
            written: list.into(),
            prefixes,
        }],
        proto,
        ports,
        comment: None,
        origin: origin(),
    };
    let group = Group {
        name: "fleet".into(),
        description: None,
        devices: devices
            .into_iter()
            .map(|prefix| Device {
                prefix,
                origin: origin(),
            })
            .collect(),
        default: Action::Deny,
        audit: false,
        rules: vec![
            rule(Action::Allow, "allowed", allowed, Some(6), Some(ports)),
            rule(Action::Deny, "blocked", blocked, None, None),
        ],
        origin: origin(),
        default_origin: origin(),
    };
    Policy {
        groups: vec![group],
        unknown_devices: Action::Deny,
        unknown_devices_origin: None,
        ntp: vec![IpAddr::V4(NTP_ADDRESS)],
        gateway: Vec::new(),
    }
}

/// xdp-filter's allow probe: to the last address of the family's last
/// destination prefix, which the filter holds.
fn xdp_filter_allow_frame(destinations: &[IpNet], family: Family) -> Result<Vec<u8>> {
    let dst = destinations
        .iter()
        .rev()
        .find(|d| Family::of(d) == family)
        .map(IpNet::broadcast)
        .with_context(|| format!("no {family:?} destination"))?;
    let src = probe_sources(DEVICE_COUNTS[1])[family as usize];
    Ok(frame(src, dst))
}

/// The floor: a program of two instructions that passes every packet.
struct Floor {
    fd: OwnedFd,
}

impl Floor {
    fn load(kind: ProgType) -> Result<Floor> {
        let program = match kind {
            ProgType::Xdp => Asm::new().pass(),
            ProgType::SchedCls => Asm::new().ret(TC_ACT_UNSPEC as i32),
        };
        assert_eq!(program.0.len(), 16, "two instructions");
        let fd = bpf::prog_load(kind, &program.0, "tg_floor").context("load a floor program")?;
        Ok(Floor { fd })
    }

    fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        bpf::test_run(&self.fd, frame, repeat)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProgType {
    Xdp,
    SchedCls,
}

/// xdp-filter on a veth in a namespace of its own; unloaded (and its pins
/// removed) on drop.
struct XdpFilter {
    ns: Namespace,
    prog: OwnedFd,
    name: String,
    /// libxdp creates /sys/fs/bpf/xdp; remove it after if it was not there.
    remove_libxdp_dir: bool,
}

const XDP_FILTER: &str = "/usr/sbin/xdp-filter";
const XDP_FILTER_PINS: &str = "/sys/fs/bpf/xdp-filter";
const LIBXDP_DIR: &str = "/sys/fs/bpf/xdp";

impl XdpFilter {
    fn load(destinations: &[IpNet]) -> Result<XdpFilter> {
        ensure!(
            Path::new(XDP_FILTER).exists(),
            "{XDP_FILTER} is not installed"
        );
        // xdp-filter pins its maps at a fixed path: one set per machine.
        ensure!(
            !Path::new(XDP_FILTER_PINS).exists(),
            "{XDP_FILTER_PINS} exists: xdp-filter is in use elsewhere on this machine"
        );
        let remove_libxdp_dir = !Path::new(LIBXDP_DIR).exists();
        let ns = Namespace::create(&format!("tg-benchdp-{}", std::process::id()))?;
        ns.ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ])?;
        ns.ip(&["link", "set", "veth0", "up"])?;
        ns.ip(&["link", "set", "veth1", "up"])?;
        let mut filter = XdpFilter {
            ns,
            prog: bpf::placeholder_fd()?,
            name: String::new(),
            remove_libxdp_dir,
        };
        // nsenter, not `ip netns exec`: the latter gives xdp-filter a mount
        // namespace of its own, without the host's bpffs.
        filter.run(&[
            "load",
            "-m",
            "skb",
            "-p",
            "deny",
            "-f",
            "ipv4,ipv6",
            "veth0",
        ])?;
        let (id, name) = filter.attached_program()?;
        filter.prog = bpf::prog_fd_by_id(id)?;
        filter.name = name;
        filter.fill(destinations)?;
        Ok(filter)
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.name()))
            .arg(XDP_FILTER)
            .args(args)
            .output()
            .context("run nsenter (util-linux)")?;
        ensure!(
            out.status.success(),
            "xdp-filter {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The id and name of the XDP program on veth0.
    fn attached_program(&self) -> Result<(u32, String)> {
        let json = self.ns.ip(&["-d", "-j", "link", "show", "dev", "veth0"])?;
        let links: serde_json::Value = serde_json::from_str(&json).context("ip -j link")?;
        let prog = &links[0]["xdp"]["prog"];
        let id = prog["id"]
            .as_u64()
            .with_context(|| format!("no XDP program on veth0: {json}"))?;
        Ok((id as u32, prog["name"].as_str().unwrap_or("?").to_string()))
    }

    /// Filters on the last address of each destination prefix (dst mode).
    fn fill(&self, destinations: &[IpNet]) -> Result<()> {
        for family in [Family::V4, Family::V6] {
            let addrs: Vec<IpAddr> = destinations
                .iter()
                .filter(|d| Family::of(d) == family)
                .map(IpNet::broadcast)
                .collect();
            let Some(first) = addrs.first() else { continue };
            self.run(&["ip", "-m", "dst", &first.to_string()])?;
            let map_name = match family {
                Family::V4 => "filter_ipv4",
                Family::V6 => "filter_ipv6",
            };
            let map = bpf::obj_get(&Path::new(XDP_FILTER_PINS).join(map_name))?;
            let key = |a: &IpAddr| match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            // Per-CPU values: the flags xdp-filter set, on every CPU.
            let value = bpf::map_lookup(&map, &key(first), 8 * bpf::possible_cpus()?)?;
            for addr in &addrs[1..] {
                bpf::map_update(&map, &key(addr), &value)
                    .with_context(|| format!("add {addr} to xdp-filter's {map_name}"))?;
            }
        }
        Ok(())
    }

    fn test_run(&self, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        bpf::test_run(&self.prog, frame, repeat)
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        if let Err(e) = self.run(&["unload", "veth0"]) {
            eprintln!("warning: {e:#}");
        }
        if self.remove_libxdp_dir {
            let _ = std::fs::remove_dir(LIBXDP_DIR);
        }
    }
}

/// The few `bpf(2)` commands the floor program and xdp-filter need, on
/// file descriptors Tollgate's loader does not own.
mod bpf {
    use super::*;

    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;

    /// `union bpf_attr` is at most this big for the commands used here;
    /// the kernel zero-fills what we do not pass.
    #[repr(C, align(8))]
    struct Attr([u8; 128]);

    impl Attr {
        fn new() -> Attr {
            Attr([0; 128])
        }
        fn u32(&mut self, offset: usize, v: u32) -> &mut Self {
            self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
            self
        }
        fn u64(&mut self, offset: usize, v: u64) -> &mut Self {
            self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
            self
        }
        fn get_u32(&self, offset: usize) -> u32 {
            u32::from_ne_bytes(self.0[offset..offset + 4].try_into().expect("4 bytes"))
        }
    }

    fn sys_bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
        // SAFETY: `attr` is a valid, writable bpf_attr of the size passed;
        // every pointer in it points into memory the caller keeps alive.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn owned(fd: i64) -> OwnedFd {
        // SAFETY: the kernel just returned this descriptor to us alone.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    pub fn prog_load(kind: ProgType, insns: &[u8], name: &str) -> Result<OwnedFd> {
        const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
        const BPF_PROG_TYPE_XDP: u32 = 6;
        let license = c"GPL";
        let mut attr = Attr::new();
        attr.u32(
            0,
            match kind {
                ProgType::Xdp => BPF_PROG_TYPE_XDP,
                ProgType::SchedCls => BPF_PROG_TYPE_SCHED_CLS,
            },
        )
        .u32(4, (insns.len() / 8) as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64);
        let name = name.as_bytes();
        attr.0[48..48 + name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
        Ok(owned(
            sys_bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD")?,
        ))
    }

    pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd> {
        let mut attr = Attr::new();
        attr.u32(0, id);
        Ok(owned(
            sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
                .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))?,
        ))
    }

    /// Any valid descriptor, to hold a place until the real one is known.
    pub fn placeholder_fd() -> Result<OwnedFd> {
        Ok(std::fs::File::open("/dev/null")?.into())
    }

    pub fn obj_get(path: &Path) -> Result<OwnedFd> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        let mut attr = Attr::new();
        attr.u64(0, c.as_ptr() as u64);
        Ok(owned(
            sys_bpf(BPF_OBJ_GET, &mut attr).with_context(|| format!("open {}", path.display()))?,
        ))
    }

    pub fn map_lookup(map: &OwnedFd, key: &[u8], value_len: usize) -> Result<Vec<u8>> {
        let mut value = vec![0u8; value_len];
        let mut attr = Attr::new();
        attr.u32(0, map.as_raw_fd() as u32)
            .u64(8, key.as_ptr() as u64)
            .u64(16, value.as_mut_ptr() as u64);
        sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).context("BPF_MAP_LOOKUP_ELEM")?;
        Ok(value)
    }

    pub fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> Result<()> {
        let mut attr = Attr::new();
        attr.u32(0, map.as_raw_fd() as u32)
            .u64(8, key.as_ptr() as u64)
            .u64(16, value.as_ptr() as u64);
        sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).context("BPF_MAP_UPDATE_ELEM")?;
        Ok(())
    }

    /// `BPF_PROG_TEST_RUN` of `frame`, `repeat` times: the return code and
    /// the kernel's mean duration of one run in ns.
    pub fn test_run(prog: &OwnedFd, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        let mut attr = Attr::new();
        attr.u32(0, prog.as_raw_fd() as u32)
            .u32(8, frame.len() as u32)
            .u64(16, frame.as_ptr() as u64)
            .u32(32, repeat);
        sys_bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
        Ok((attr.get_u32(4), u64::from(attr.get_u32(36))))
    }

    /// The name of the BPF map `fd`.
    pub fn map_name(fd: i32) -> Option<String> {
        const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
        // struct bpf_map_info: type, id, key_size, value_size, max_entries,
        // map_flags, then name[16] at offset 24.
        let mut info = [0u8; 40];
        let mut attr = Attr::new();
        attr.u32(0, fd as u32)
            .u32(4, info.len() as u32)
            .u64(8, info.as_mut_ptr() as u64);
        sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
        let name = &info[24..40];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        Some(String::from_utf8_lossy(&name[..end]).into_owned())
    }

    /// The number of possible CPUs: the length of a per-CPU map value.
    pub fn possible_cpus() -> Result<usize> {
        let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
        let mut n = 0;
        for range in text.trim().split(',') {
            n += match range.split_once('-') {
                Some((a, b)) => b.parse::<usize>()? - a.parse::<usize>()? + 1,
                None => 1,
            };
        }
        Ok(n)
    }
}
