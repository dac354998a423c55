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
//!   `allow tcp 443, 8883` and `allow udp 5683` to a list `allowed` and
//!   `deny any` to a list `blocked` (the first prefix of each family and
//!   every 100th after it), plus the built-in NTP allow to 100.127.0.123.
//!   The N destination
//!   prefixes are the first N of the pool in `testkit::bench` (every distinct AWS
//!   prefix, about 9,000, then more-specific prefixes derived from them:
//!   10⁵ is all AWS prefixes plus ~91,000 /L+4 subnets of them).
//!   Devices: 10⁶ is 500,000 IPv4 /32 and 500,000 IPv6 /128 (the exact
//!   device table, `TG_DEV_EXACT`; the probe source is one of them); 10³ is
//!   a mix of 250 /32, 250 /24, 250 /128 and 250 /64 and the probe source
//!   is in the last /24 or /64, so it misses the exact table and takes the
//!   device trie.
//!   Probes (TCP to port 443): *allow* goes to the last allowed prefix of
//!   the family (the most deeply nested one at 10⁵), *deny (default)* to
//!   192.0.2.1 / 2001:db8::1 (in no list: the group default decides), *deny
//!   (rule)* to the last blocked prefix, *unknown device* from 192.168.200.1
//!   / fd99::1 (in no group: `unknown-devices: deny` decides) to the allow
//!   probe's destination. Denies also run the deny-event rate limiter
//!   (100/s by default: the steady state of a deny flood).
//! - **Established and new flows**: a repeated frame is one flow, run from
//!   warm caches: the cost of an established flow's packets. There is no
//!   flow cache, so every packet takes the full decision. *Allow (new
//!   flow)* is the first packet of a flow, from cold caches: it is measured
//!   with `repeat` = 1 on 250 frames from 250 devices (per trial, after the
//!   CPU idled for 50 ms: on this VM the caches are gone by then), and the
//!   trial's value is the median of those 250 runs. Its floor is measured
//!   the same way, frame by frame in between, because one run at a time
//!   carries the timer's own cost. The deny(default) probe from the same
//!   devices is measured the same way, then each device's allow right
//!   after its deny, and each device's allow right after the same allow:
//!   one run with nothing cold, what a single run of the decision costs
//!   on its own (`cold.rs`).
//! - **xdp-filter** (xdp-tools, `/usr/sbin/xdp-filter`): loaded with
//!   `xdp-filter load -m skb -p deny -f ipv4,ipv6` on a veth in a namespace
//!   of our own (its allow-list program of addresses only,
//!   `xdpfilt_dny_ip`), and again without `-f`, xdp-filter's default of
//!   every feature (`xdpfilt_dny_all`: Ethernet addresses, IP addresses,
//!   then TCP and UDP ports, a lookup each, both directions), filled with
//!   exact destination addresses (its IP filter is a hash of addresses, at
//!   most 10,000 per family), one address per Tollgate destination prefix:
//!   the first of each family with `xdp-filter ip -m dst`, the rest written
//!   into its pinned map with the value xdp-filter wrote for the first.
//!   Its program is found by id on the veth (`ip -d -j link`), opened with
//!   `BPF_PROG_GET_FD_BY_ID` and test-run on the same frames. Unloaded, and
//!   the namespace removed, when done (also on failure).
//! - **One packet at a time from cold caches** (`cold.rs`): beside the
//!   first packets, a program that reads one bucket of the live
//!   `TG_DEV_EXACT` and nothing else, on the first bucket of each of the
//!   same 250 devices, in a pass of its own (after the idle, as the first
//!   packets are), then on the same bucket again; and
//!   xdp-filter's allow probe from 250 sources, the same way: what one read
//!   of memory that is not in the cache costs this machine, whatever
//!   program makes it. The same devices are also looked up, the same way,
//!   in a kernel hash map (`BPF_MAP_TYPE_HASH`) of the cell's exact devices
//!   of the family: the structure xdp-filter and Tollgate v1 use, at this
//!   fleet's size. Both xdp-filter programs' allow probe also runs twice in
//!   a row per source, as Tollgate's "right after the same allow" does: the
//!   anchor's single run with nothing cold. Last, programs of the machine's
//!   own run the same way (`cold::single_run_machine`): chains of 4, 8 and
//!   16 dependent loads, what one run's chain of reads costs per read, which
//!   a looped run hides; and 80 to 320 instructions with nothing to wait
//!   for, in blocks ending in a taken branch, back to back or one a cache
//!   line: what an instruction of one run costs, and whether the code's
//!   footprint does.
//! - **Machine code** (`jited.rs`): each program's JITed image, function by
//!   function, as `bpftool prog dump jited` reads it, with its bytes,
//!   instructions, calls and conditional branches counted by `objdump`
//!   (binutils).
//! - **The instructions a path runs** (`paths.rs`): each probe of the
//!   target cell, and xdp-filter's allow and deny, looped for 2 s under
//!   `perf record` (the software clock); the basic blocks of the JITed
//!   code that the samples land on, in instructions, by function. Without
//!   perf the table says why it is missing.
//! - **TC**: the same Tollgate program's TC twin at the largest cell.
//! - **UDP**: the same probes as UDP datagrams to port 5683 at the largest
//!   cell: an allowed one is also checked for the NTP fast path, which a
//!   TCP segment is not (`ntp::candidate`).
//! - **FQDN group**: the same cell with an FQDN rule in the group
//!   (`allow tcp 443` to a name nothing answers, so nothing is learned): a
//!   packet the group's default decides is first checked for a learned
//!   destination (`learned::learned_counter`).
//! - **VLAN tag**: the same probes behind one 802.1Q tag, at the largest
//!   cell: the parse of tagged frames, which is not the untagged one's.
//! - **Raw IP**: the same probes from their IP header on, through the
//!   raw-IP hook (`tollgate_xdp_ip`: tun, WireGuard, raw-IP modems), at the
//!   largest cell.
//! - **Small roots and narrow tries**: the same program and policy at the
//!   largest cell with 8-bit roots (`Options::small_roots`: one level more
//!   than the big roots the controller builds where the slot has room) and
//!   with every trie narrow (`Options::narrow_tries`: 4-bit nodes, twice
//!   the levels of wide ones), what a slot without that room gets.
//! - **Where the time goes**: at 10⁵ prefixes, each map lookup the program
//!   makes (and the clock read of the deny-event limiter) is timed alone:
//!   a raw XDP program builds the key the kernel program would build for a
//!   probe, calls `bpf_map_lookup_elem` once on the live policy's map
//!   (found among this process's descriptors) and returns XDP_PASS; its
//!   time minus the floor is the cost of that lookup. Then what reads and
//!   instructions cost here (`lookups::machine_costs`): two chains of 16
//!   dependent reads in maps of their own, loads inside one value (as a
//!   trie walk reads its levels) and array lookups each keyed by the word
//!   before, 128 ALU instructions, and 320 in blocks ending in a taken
//!   branch (back to back, and a cache line each). Looped, a chain that
//!   costs far less than 16 load latencies shows that the runs overlap, so
//!   a packet's time follows all of its work rather than its longest chain
//!   of reads; the ALU rows price that work by the instruction. The same
//!   programs run again as TC programs, over the TC floor: the kernel's
//!   loop of TC test runs overlaps runs less, and the chain shows it.
//! - **Differential** (`differential.rs`), last: the kernel-versus-model
//!   differential test's harness (`testkit::differential`) at ≥ 10⁶ cases
//!   with the tries' largest shape and a fifth of that each with 8-bit
//!   roots and with narrow tries, every verdict and
//!   counter of the real program checked against the model; it prints the
//!   cases and the seconds they took (a disagreement panics).
//!
//! Run as root: `cargo bench --bench dataplane`. `DATAPLANE_BENCH_REPEAT`
//! (default 1,000,000) and `DATAPLANE_BENCH_TRIALS` (default 9) change the
//! repeat count and the number of trials per cell.
//! `DATAPLANE_BENCH_TARGET_ONLY=1` measures only the target's cell (10⁵
//! rules, 10⁶ devices) beside the floors and xdp-filter: a quick check of
//! one change, not a result to record; it skips the differential section
//! unless `DATAPLANE_BENCH_DIFFERENTIAL_POLICIES` is set.
//! `DATAPLANE_BENCH_DIFFERENTIAL_POLICIES` sets the wide differential run's
//! policies (default 5,000: ≥ 200 cases each; 0 skips the section), and
//! `DATAPLANE_BENCH_DIFFERENTIAL_ONLY=1` runs that section alone, without
//! the timing.

mod asm;
mod bpf;
mod cold;
mod differential;
mod fixtures;
mod jited;
mod lookups;
mod measure;
mod paths;
mod report;
mod setup;
mod xdp_filter;

use std::{os::fd::AsRawFd as _, time::Instant};

use anyhow::{Context as _, Result, bail, ensure};
use testkit::bench;
use tollgate::datapath::{TC_ACT_SHOT, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS};

use crate::{
    asm::{Asm, HELPER_JIFFIES64, HELPER_KTIME_GET_COARSE_NS, HELPER_KTIME_GET_NS},
    bpf::ProgType,
    cold::BucketReader,
    differential::Differential,
    fixtures::{Family, Probes, Proto, frame_any, probe_sources},
    jited::Code,
    lookups::{lookup_costs, machine_costs, print_memory},
    measure::{Cell, Floor, Floors, Measure},
    report::{Row, count, print_cold, print_costs, print_jited, print_table, print_verdicts},
    setup::{Reads, Setup, Variant},
    xdp_filter::{Features, XdpFilter, xdp_filter_allow_frame},
};

const RULE_COUNTS: [usize; 3] = [100, 10_000, 100_000];
const DEVICE_COUNTS: [usize; 2] = [1_000, 1_000_000];
/// xdp-filter holds at most 10,000 addresses per family.
const XDP_FILTER_COUNTS: [usize; 2] = [100, 10_000];
/// The cell the target is about.
const TARGET_RULES: usize = 100_000;
const TARGET_DEVICES: usize = 1_000_000;
const TARGET_NS_OVER_FLOOR: u64 = 25;
/// The rows of Tollgate's Ethernet XDP hook on TCP probes, every cell.
const TCP_ROW: &str = "tollgate (xdp)";
/// The row of the target cell measured on UDP probes.
const UDP_ROW: &str = "tollgate (xdp, UDP)";
/// The row of the target cell whose group has an FQDN rule.
const FQDN_ROW: &str = "tollgate (xdp, FQDN group)";
/// The row of the target cell measured on a raw-IP link.
const RAW_IP_ROW: &str = "tollgate (xdp, raw IP)";
/// The row of the target cell measured on VLAN-tagged frames.
const VLAN_ROW: &str = "tollgate (xdp, VLAN tag)";

/// The probes of each family, in the order of [`probe_jobs`].
const PROBES_PER_FAMILY: usize = 4;

/// The paths of [`probe_jobs`], in its order within a family.
const PROBE_PATHS: [&str; PROBES_PER_FAMILY] =
    ["allow", "deny(default)", "deny(rule)", "unknown device"];

/// The four probes of each family with the action each must get: `pass`
/// for the allow, `drop` for the two denies and the unknown device.
fn probe_jobs(probes: &[Probes; 2], pass: u32, drop: u32) -> Vec<(&[u8], u32)> {
    probes
        .iter()
        .flat_map(|p| {
            [
                (&p.allow[..], pass),
                (&p.deny_default[..], drop),
                (&p.deny_rule[..], drop),
                (&p.unknown[..], drop),
            ]
        })
        .collect()
}

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
    let target_only = std::env::var_os("DATAPLANE_BENCH_TARGET_ONLY").is_some_and(|v| v == "1");
    let differential_only =
        std::env::var_os("DATAPLANE_BENCH_DIFFERENTIAL_ONLY").is_some_and(|v| v == "1");
    // Read now, so that a bad value fails before the timing, not after it.
    let differential = Differential::from_env(target_only && !differential_only)?;
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
    if differential_only {
        differential.run();
        return Ok(());
    }
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
    // The rows of the largest cell only: TC, UDP, raw IP, an FQDN group,
    // and the XDP program with narrow tries.
    let mut at_target = Vec::new();
    let mut costs = Vec::new();
    let mut memory = Vec::new();
    let mut trie_nodes = 0;
    // One packet at a time from cold caches: (what, cell, the floor it was
    // measured beside).
    let mut cold = Vec::new();
    // The machine code of each program measured at the target.
    let mut jited = Vec::new();
    // The instructions each path of the target runs, where perf is here.
    let paths_skipped = paths::unavailable();
    let mut paths = Vec::new();
    for &rules in &RULE_COUNTS {
        for &devices in &DEVICE_COUNTS {
            if target_only && (rules, devices) != (TARGET_RULES, TARGET_DEVICES) {
                continue;
            }
            let started = Instant::now();
            let setup = Setup::build(&pool, rules, devices, Variant::Wide)?;
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
            let xdp = |f: &[u8], r: u32| setup.run_xdp(f, r);
            let cells = measure.run_all(xdp, &probe_jobs(&probes, XDP_PASS, XDP_DROP))?;
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
                unknown: Some(cells[3]),
            };
            // The two rows (IPv4, IPv6) of `cells`, as `probe_jobs` ordered them.
            let rows_of = |program: &str, kind: ProgType, cells: &[Cell]| -> Vec<Row> {
                [Family::V4, Family::V6]
                    .into_iter()
                    .zip(cells.chunks(PROBES_PER_FAMILY))
                    .map(|(family, cells)| row(program, kind, family, cells))
                    .collect()
            };
            let reader = BucketReader::load()?;
            for (family, cells) in [Family::V4, Family::V6]
                .into_iter()
                .zip(cells.chunks(PROBES_PER_FAMILY))
            {
                let mut r = row(TCP_ROW, ProgType::Xdp, family, cells);
                r.allow_new =
                    Some(setup.first_packets(&measure, &probes[family as usize], &reader)?);
                table.push(r);
            }
            if rules == TARGET_RULES {
                for family in [Family::V4, Family::V6] {
                    costs.extend(lookup_costs(&measure, &setup, family, devices)?);
                }
            }
            if rules == TARGET_RULES && devices == TARGET_DEVICES {
                memory = lookups::map_memory()?;
                trie_nodes = setup.trie_nodes();
                let code = jited::disassemble(jited::own_program("tollgate_xdp")?)?;
                jited.extend(code.iter().map(Code::counts));
                if paths_skipped.is_none() {
                    let jobs = probe_jobs(&probes, XDP_PASS, XDP_DROP);
                    for (i, (frame, expect)) in jobs.into_iter().enumerate() {
                        let family = [Family::V4, Family::V6][i / PROBES_PER_FAMILY].name();
                        let path = PROBE_PATHS[i % PROBES_PER_FAMILY];
                        let what = format!("{TCP_ROW}, {family} {path}");
                        paths.push(paths::measure(&what, xdp, frame, expect, &code)?);
                    }
                }
                let this_cell = table.iter().filter(|r| {
                    r.program == TCP_ROW && r.rules == count(rules) && r.devices == count(devices)
                });
                for r in this_cell {
                    if let Some(first) = r.allow_new {
                        let family = r.family.name();
                        for (path, cell) in [
                            ("allow", first.allow),
                            ("deny(default)", first.deny_default),
                            ("allow, right after a deny", first.allow_after_deny),
                            ("allow, right after the same allow", first.allow_again),
                        ] {
                            cold.push((
                                format!("tollgate (xdp), {family} {path}, 250 devices"),
                                cell,
                                first.floor,
                            ));
                        }
                        let buckets = count(reader.buckets as usize);
                        push_reads(
                            &mut cold,
                            format!("the same devices' first buckets, one read each, of {buckets}"),
                            "  then the same bucket again",
                            first.bucket,
                        );
                        if let Some((reads, entries)) = first.hash {
                            push_reads(
                                &mut cold,
                                format!(
                                    "the same devices, one lookup each in a kernel hash of {}",
                                    count(entries)
                                ),
                                "  then the same lookup again",
                                reads,
                            );
                        }
                    }
                }
                let tc_run = |f: &[u8], r: u32| setup.run_tc(f, r);
                let cells =
                    measure.run_all(tc_run, &probe_jobs(&probes, TC_ACT_UNSPEC, TC_ACT_SHOT))?;
                at_target.extend(rows_of("tollgate (tc)", ProgType::SchedCls, &cells));
                // The same cell on UDP probes: an allowed UDP datagram is
                // also checked for the NTP fast path (`ntp::candidate`).
                let udp = [
                    setup.probes_over(Family::V4, Proto::Udp)?,
                    setup.probes_over(Family::V6, Proto::Udp)?,
                ];
                let cells = measure.run_all(xdp, &probe_jobs(&udp, XDP_PASS, XDP_DROP))?;
                at_target.extend(rows_of(UDP_ROW, ProgType::Xdp, &cells));
                // The same probes on a raw-IP link: the packets from their
                // IP header on, through the raw-IP hook.
                let raw = probes.each_ref().map(Probes::without_ethernet);
                let xdp_ip = |f: &[u8], r: u32| setup.run_xdp_ip(f, r);
                let cells = measure.run_all(xdp_ip, &probe_jobs(&raw, XDP_PASS, XDP_DROP))?;
                at_target.extend(rows_of(RAW_IP_ROW, ProgType::Xdp, &cells));
                // The same probes behind a VLAN tag: tagged frames take a
                // parse of their own, the IP header's offset a variable.
                let tagged = probes.each_ref().map(Probes::with_vlan_tag);
                let cells = measure.run_all(xdp, &probe_jobs(&tagged, XDP_PASS, XDP_DROP))?;
                at_target.extend(rows_of(VLAN_ROW, ProgType::Xdp, &cells));
                // The same policy with an FQDN rule in the group.
                let fqdn = Setup::build(&pool, rules, devices, Variant::Fqdn)?;
                let fqdn_probes = [fqdn.probes(Family::V4)?, fqdn.probes(Family::V6)?];
                let xdp = |f: &[u8], r: u32| fqdn.run_xdp(f, r);
                let cells = measure.run_all(xdp, &probe_jobs(&fqdn_probes, XDP_PASS, XDP_DROP))?;
                at_target.extend(rows_of(FQDN_ROW, ProgType::Xdp, &cells));
                drop(fqdn);
                // The same policy with 8-bit roots, and with every trie
                // narrow (4-bit nodes, twice the levels): what a slot
                // without room for big roots, or for wide nodes, gets.
                let small = Setup::build(&pool, rules, devices, Variant::SmallRoots)?;
                let small_probes = [small.probes(Family::V4)?, small.probes(Family::V6)?];
                let xdp = |f: &[u8], r: u32| small.run_xdp(f, r);
                let cells = measure.run_all(xdp, &probe_jobs(&small_probes, XDP_PASS, XDP_DROP))?;
                at_target.extend(rows_of(
                    "tollgate (xdp, 8-bit roots)",
                    ProgType::Xdp,
                    &cells,
                ));
                drop(small);
                let narrow = Setup::build(&pool, rules, devices, Variant::Narrow)?;
                let narrow_probes = [narrow.probes(Family::V4)?, narrow.probes(Family::V6)?];
                let xdp = |f: &[u8], r: u32| narrow.run_xdp(f, r);
                let cells =
                    measure.run_all(xdp, &probe_jobs(&narrow_probes, XDP_PASS, XDP_DROP))?;
                at_target.extend(rows_of("tollgate (xdp, narrow)", ProgType::Xdp, &cells));
            }
        }
    }
    table.extend(at_target);

    for (&entries, features) in XDP_FILTER_COUNTS
        .iter()
        .flat_map(|e| [(e, Features::Addresses), (e, Features::All)])
    {
        let destinations = pool.take(entries);
        match XdpFilter::load(&destinations, features) {
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
                if entries == XDP_FILTER_COUNTS[1] {
                    let code = jited::disassemble(filter.prog.as_raw_fd())?;
                    jited.extend(code.iter().map(Code::counts));
                    if paths_skipped.is_none() {
                        for (family, frames) in [(Family::V4, &v4), (Family::V6, &v6)] {
                            for (path, frame, expect) in [
                                ("allow", &frames.0, XDP_PASS),
                                ("deny", &frames.1, XDP_DROP),
                            ] {
                                let what = format!(
                                    "xdp-filter ({}), {} {path}",
                                    filter.name,
                                    family.name()
                                );
                                let run = |f: &[u8], r: u32| filter.test_run(f, r);
                                paths.push(paths::measure(&what, run, frame, expect, &code)?);
                            }
                        }
                    }
                }
                if entries == XDP_FILTER_COUNTS[1] {
                    for family in [Family::V4, Family::V6] {
                        let (first, again, floor) =
                            filter.first_packets(&destinations, family, measure.trials)?;
                        // Its maps hold XDP_FILTER_COUNTS[1] addresses.
                        let what = format!("xdp-filter ({}), {} allow", filter.name, family.name());
                        cold.push((format!("{what}, 250 sources"), first, floor));
                        cold.push((format!("{what}, right after the same allow"), again, floor));
                    }
                }
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
                        unknown: None,
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
                unknown: None,
            }),
        }
    }

    // The clock the deny-event limiter reads, and the others it could.
    for (what, helper) in [
        (
            "bpf_ktime_get_ns() (not used; for comparison)",
            HELPER_KTIME_GET_NS,
        ),
        (
            "bpf_ktime_get_coarse_ns() (deny-event limiter)",
            HELPER_KTIME_GET_COARSE_NS,
        ),
        (
            "bpf_jiffies64() (the same tick, as a count; for comparison)",
            HELPER_JIFFIES64,
        ),
    ] {
        let program = Asm::new().call(helper).pass();
        let fd = bpf::prog_load(ProgType::Xdp, &program.0, "tg_clock")?;
        let cell = measure.run(|f, r| bpf::test_run(&fd, f, r), &frame_any(), XDP_PASS)?;
        costs.push((what.into(), cell));
    }

    // What a BPF-to-BPF call costs here (the classifier makes one per
    // packet): a call of a function that only returns, then XDP_PASS.
    let program = Asm::new().call_local(2).pass().ret(0);
    let fd = bpf::prog_load(ProgType::Xdp, &program.0, "tg_call")?;
    let cell = measure.run(|f, r| bpf::test_run(&fd, f, r), &frame_any(), XDP_PASS)?;
    costs.push((
        "a BPF-to-BPF call and its return (one per packet: the classifier)".into(),
        cell,
    ));
    costs.extend(machine_costs(&measure, ProgType::Xdp)?);
    let costs_tc = machine_costs(&measure, ProgType::SchedCls)?;

    cold.extend(cold::single_run_machine(trials)?);

    let floors = floors_first.lower(&Floors::measure(&measure)?);
    let mut rows = floors.rows();
    rows.extend(table);
    print_table(&rows, &floors);
    print_costs(
        "one map lookup or helper call on its own, in an XDP program that does nothing else \
         (10^5 destination prefixes; the live policy's own maps and keys), then what reads and \
         instructions cost here (programs and maps of their own)",
        &costs,
        floors.of(ProgType::Xdp, Family::V4),
    );
    print_costs(
        "the same reads and instructions in TC programs (SCHED_CLS), over the TC floor",
        &costs_tc,
        floors.of(ProgType::SchedCls, Family::V4),
    );
    print_verdicts(&rows, &floors);
    print_cold(&cold);
    print_memory(&memory, trie_nodes);
    let floor = Floor::load(ProgType::Xdp)?;
    if paths_skipped.is_none() {
        // Its loop outside the program is the test-run machinery every
        // path pays.
        let run = |f: &[u8], r: u32| floor.test_run(f, r);
        let frame = &xdp_filter_allow_frame(&pool.take(1), Family::V4)?;
        paths.push(paths::measure(
            "floor xdp (r0=2; exit)",
            run,
            frame,
            XDP_PASS,
            &[],
        )?);
    }
    paths::print(&paths, paths_skipped.as_deref());
    jited.extend(jited::functions(floor.fd.as_raw_fd())?);
    print_jited(&jited);
    differential.run();
    Ok(())
}

/// A pass of one-read programs (`setup::Reads`) as two rows of the cold
/// table: the first read, then the same again, each beside the pass's floor.
fn push_reads(cold: &mut Vec<(String, Cell, Cell)>, first: String, again: &str, reads: Reads) {
    cold.push((first, reads.cold, reads.floor));
    cold.push((again.into(), reads.warm, reads.floor));
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
