//! Policy reload latency: from a policy file being written to the new
//! verdict being live, for policies of 10³, 10⁴ and 10⁵ destination
//! prefixes, against `nft -f` loading an equivalent ruleset on the same
//! machine.
//!
//! # Tollgate
//! The daemon's reload, in this process, on the real parts: a
//! `PolicyWatcher` on the policy directory (inotify, then the fixed
//! debounce `reload::watch::DEBOUNCE` of quiet time), then what
//! `reload::prepare` does (`policy::load_cached`: read the files, parse
//! those whose text changed since the last reload, validate;
//! `compile_cached`: only the groups that changed; both in [`reload_step`]),
//! the daemon's bookkeeping before the swap
//! (`ChangeSummary::between` and its is-anything-different comparison) and
//! `Dataplane::install`, which writes the inactive slot and flips it. The
//! clock starts just before the file is written and stops at the flip
//! (`InstallReport::total` after the start of `install`; `install` then
//! waits for an RCU grace period, which the new verdict does not wait for). After each reload a probe packet is test-run through
//! the XDP program to check that the new verdict is live (not timed).
//!
//! The policy: `lists/allowed.yaml` holds one list of N prefixes (the
//! first N of the pool in `testkit::bench`: AWS ip-ranges.json, then derived
//! subnets), `lists/extra.yaml` a list `extra` of one prefix, `groups.yaml`
//! one group `fleet` with 1,000 devices (250 /32, 250 /24, 250 /128, 250
//! /64), default deny, and one rule:
//! `allow: {to: [allowed, extra], proto: tcp, ports: [443, 8883]}`.
//! - **edit**: a one-line change, the common GitOps case: the last line of
//!   the big list names one extra prefix, and each edit changes it (in turn
//!   203.0.113.0/24, 198.51.100.0/24, 192.0.2.0/24: three, so that the slot
//!   being written holds the policy before last, which differs from the new
//!   one by that line: one entry removed, one written). The big file is
//!   parsed again.
//! - **edit-small**: the same change, made in `lists/extra.yaml` (the big
//!   list is left as it was): a policy kept as large vendor lists plus
//!   the operator's own small files. Only the small file is parsed again.
//! - **pull-1%**: the policy directory, back at the first version without
//!   the extra prefix, becomes a git checkout (`reload/fleet_git.rs`) and
//!   `git merge --ff-only` brings the next commit of a chain that cycles
//!   every hundredth prefix of the big list through the three versions
//!   (1 % of the list changed by each pull; the watcher holds the reload
//!   while git holds its index lock).
//! - **full**: every file rewritten with a different list of N prefixes
//!   (three versions in turn, so the slot being written never already
//!   holds the new version: every destination entry is removed and
//!   written again).
//!
//! # nft
//! `nft -f FILE` in a network namespace of the bench's own (`ip netns exec
//! NS nft -f FILE`), timed from just before FILE is written to nft's exit
//! (nft commits its netlink transaction before it exits). The ruleset: a
//! table `inet tollgate` with interval sets (`auto-merge`, since the AWS
//! list nests prefixes) of the device addresses and of the N allowed
//! prefixes, per family, and a forward chain, policy drop, that accepts
//! `saddr @devices daddr @allowed tcp dport {443, 8883}` with a counter.
//! - **edit** (and edit-small: the same for nft): `delete element` of the
//!   old extra prefix and `add element` of the new one, in one file: one
//!   transaction.
//! - **full**: `flush table inet tollgate` and the whole table again (same
//!   three versions of the list), in one file: one transaction.
//!
//! Last, the load and compile times of a policy of 20,000 rules written one
//! by one (each with its own prefix), the other way a policy grows.
//!
//! Then shape (b) of issue 14, many explicit rules in many group files and
//! a million devices, first: in this process (`reload/fleet.rs`: a new
//! group file, deleting it, a one-line edit, a `git pull` changing 1 % of
//! the rules, a full replacement; the changes themselves in
//! `reload/fleet_changes.rs`, the git chain in `reload/fleet_git.rs`),
//! nft on the same elements (`reload/fleet_nft.rs`: one `nft add element`,
//! `nft -f` of the full set), and the real daemon end to end, polled
//! through `status`, with its cold start and memory
//! (`reload/fleet_daemon.rs`); one table compares them.
//!
//! Run as root: `cargo bench --bench reload`. `RELOAD_BENCH_ITERATIONS`
//! (default 25, at least 20) sets the iterations per size and kind,
//! `RELOAD_BENCH_SIZES` (default `1000,10000,100000`) the sizes of shape
//! (a), `RELOAD_BENCH_SHAPES` (default `list,fleet`) the shapes to run,
//! `RELOAD_BENCH_FLEET_RULES` (default 100000, in 100 groups; a multiple of
//! 10,000 keeps the pulls at exactly 1 %) and `RELOAD_BENCH_FLEET_DEVICES`
//! (default 1000000) the size of shape (b), `RELOAD_BENCH_DAEMON` (`1`,
//! the default, or `0`) whether shape (b) also runs the daemon: it needs
//! the release `tollgate` binary, which the bench builds (`cargo build
//! --release -p tollgate`, a no-op when current) unless `TOLLGATE_BIN`
//! names one. `RELOAD_BENCH_ONLY=start` runs only the daemon's cold
//! starts and restarts on shape (b) (`reload/fleet_daemon.rs`), a minute
//! instead of twenty; `RELOAD_BENCH_ONLY=daemon` only the daemon's run
//! (its reloads, start, restart and memory), without the in-process run
//! and nft. A small run: `RELOAD_BENCH_SHAPES=fleet
//! RELOAD_BENCH_FLEET_DEVICES=10000 RELOAD_BENCH_FLEET_RULES=10000`.
//! Everything the bench creates (temporary directories, network
//! namespaces, the daemon, its pins) goes when it ends, by error too.

#[path = "reload/fleet.rs"]
mod fleet;
#[path = "reload/fleet_changes.rs"]
mod fleet_changes;
#[path = "reload/fleet_daemon.rs"]
mod fleet_daemon;
#[path = "reload/fleet_git.rs"]
mod fleet_git;
#[path = "reload/fleet_nft.rs"]
mod fleet_nft;

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use ipnet::IpNet;
use testkit::{
    bench,
    frames::{Frame, Transport},
};
use tollgate::{
    compile::{CompileCache, compile, compile_cached},
    config::Limits,
    datapath::{Dataplane, InstallReport, Options, XDP_DROP, XDP_PASS},
    netns::Namespace,
    policy::{self, Environment, ParseCache, Policy, ReadLimits},
    reload::{ChangeSummary, watch::DEBOUNCE, watch::PolicyWatcher},
    tables::CompiledPolicy,
};

const SIZES: &str = "1000,10000,100000";
const DEVICES: usize = 1_000;
/// The extra prefixes the one-line edits cycle through (documentation
/// prefixes: in no version of the list), and an address in each.
const EDIT_PREFIXES: [(&str, Ipv4Addr); 3] = [
    ("203.0.113.0/24", Ipv4Addr::new(203, 0, 113, 9)),
    ("198.51.100.0/24", Ipv4Addr::new(198, 51, 100, 9)),
    ("192.0.2.0/24", Ipv4Addr::new(192, 0, 2, 9)),
];
/// `lists/extra.yaml`'s prefix while the edits happen in the big list.
const QUIET_EXTRA: &str = "2001:db8::/32";
/// Versions of the list the full replacements cycle through.
const VERSIONS: usize = 3;
const TARGET: Duration = Duration::from_millis(100);

fn main() -> Result<()> {
    if std::env::args().skip(1).any(|a| a != "--bench") {
        bail!("usage: cargo bench --bench reload");
    }
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root (BPF, network namespace)"
    );
    let iterations: usize = match std::env::var("RELOAD_BENCH_ITERATIONS") {
        Ok(text) => text.parse().context("RELOAD_BENCH_ITERATIONS")?,
        Err(_) => 25,
    };
    ensure!(
        iterations >= 20,
        "RELOAD_BENCH_ITERATIONS: at least 20 for a p99"
    );
    let shapes = std::env::var("RELOAD_BENCH_SHAPES").unwrap_or_else(|_| "list,fleet".into());
    let shapes: Vec<&str> = shapes.split(',').map(str::trim).collect();
    ensure!(
        shapes.iter().all(|s| ["list", "fleet"].contains(s)),
        "RELOAD_BENCH_SHAPES: list, fleet or both"
    );
    let fleet_shape = testkit::explicit_fleet::Shape {
        groups: 100,
        rules_per_group: env_number("RELOAD_BENCH_FLEET_RULES", 100_000)? / 100,
        devices: env_number("RELOAD_BENCH_FLEET_DEVICES", 1_000_000)?,
    };
    let daemon = match std::env::var("RELOAD_BENCH_DAEMON").as_deref() {
        Ok("0") => false,
        Ok("1") | Err(_) => true,
        Ok(_) => bail!("RELOAD_BENCH_DAEMON: 0 or 1"),
    };
    let only = match std::env::var("RELOAD_BENCH_ONLY").as_deref() {
        Ok("start") => Some(Only::Start),
        Ok("daemon") => Some(Only::Daemon),
        Err(_) => None,
        Ok(_) => bail!("RELOAD_BENCH_ONLY: start, daemon, or unset"),
    };
    ensure!(
        only.is_none() || (daemon && shapes == ["fleet"]),
        "RELOAD_BENCH_ONLY: with RELOAD_BENCH_SHAPES=fleet and the daemon"
    );
    // Built (or found current) before any thread starts: it sets
    // TOLLGATE_BIN.
    let binary = if shapes.contains(&"fleet") && daemon {
        Some(bench::release_tollgate_binary()?)
    } else {
        None
    };
    let sizes: Vec<usize> = std::env::var("RELOAD_BENCH_SIZES")
        .unwrap_or_else(|_| SIZES.into())
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .context("RELOAD_BENCH_SIZES: comma-separated prefix counts")?;
    bench::print_machine_facts();
    println!(
        " method: {iterations} iterations per size and kind; p50 and p99 (nearest rank) of the \
         time from writing the file to the new policy being in force"
    );
    let pool = bench::Pool::load()?;
    let root = TempDir::create()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match only {
        Some(Only::Start) => {
            let binary = binary.as_deref().expect("built above");
            return fleet_starts(&root.path, &pool, fleet_shape, binary);
        }
        Some(Only::Daemon) => {
            let binary = binary.as_deref().expect("built above");
            return fleet_daemon_only(&root.path, &pool, fleet_shape, binary, iterations);
        }
        None => {}
    }
    if shapes.contains(&"fleet") {
        run_fleet(
            &runtime,
            &root.path,
            &pool,
            fleet_shape,
            binary.as_deref(),
            iterations,
        )
        .context("shape (b)")?;
    }
    if !shapes.contains(&"list") {
        return Ok(());
    }
    let ns = Namespace::create(&format!("tg-benchreload-{}", std::process::id()))?;
    let netns_exec = netns_exec_overhead(&ns, iterations)?;

    let mut results = Vec::new();
    for &size in &sizes {
        let versions: Vec<Vec<IpNet>> = (0..VERSIONS).map(|v| pool.range(v * size, size)).collect();
        let dir = root.path.join(format!("tollgate-{size}"));
        let tollgate = tollgate_reloads(&runtime, &dir, &versions, iterations)
            .with_context(|| format!("tollgate at {size}"))?;
        let dir = root.path.join(format!("nft-{size}"));
        let nft = nft_reloads(&ns, &dir, &versions, iterations)
            .with_context(|| format!("nft at {size}"))?;
        results.push((size, tollgate, nft));
    }

    println!();
    println!(
        "reload latency, ms: p50 / p99 over {iterations} iterations (tollgate: file written -> \
         flip, including the {} ms debounce; nft: file written -> nft exited)",
        DEBOUNCE.as_millis()
    );
    println!(
        "{:>9} {:>20} {:>20} {:>20} {:>20} {:>20} {:>20}",
        "prefixes",
        "tollgate edit",
        "tollgate edit-small",
        "tollgate pull-1%",
        "tollgate full",
        "nft edit",
        "nft full"
    );
    for (size, t, n) in &results {
        println!(
            "{:>9} {:>20} {:>20} {:>20} {:>20} {:>20} {:>20}",
            size,
            t.edit.total.summary(),
            t.edit_small.total.summary(),
            t.pull.total.summary(),
            t.full.total.summary(),
            n.edit.summary(),
            n.full.summary()
        );
    }
    println!();
    println!(
        "tollgate breakdown, ms, p50: watch = inotify + debounce; load = read, parse, \
         validate; summary = the daemon's change summary and comparison; install = slot \
         writes up to the flip; grace = the RCU wait after the flip (not in the total)"
    );
    println!(
        "{:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>16}",
        "prefixes",
        "kind",
        "watch",
        "load",
        "compile",
        "summary",
        "install",
        "grace",
        "writes",
        "w/o debounce"
    );
    for (size, t, _) in &results {
        for (kind, r) in t.kinds() {
            println!(
                "{:>9} {:>10} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>16}",
                size,
                kind,
                r.watch.p50_ms(),
                r.load.p50_ms(),
                r.compile.p50_ms(),
                r.summary.p50_ms(),
                r.install.p50_ms(),
                r.grace.p50_ms(),
                r.writes,
                r.without_debounce.summary()
            );
        }
    }
    println!();
    println!(
        "`ip netns exec NS true` alone (in every nft number): p50 {:.1} ms",
        netns_exec.p50_ms()
    );
    let (load, compiled) = explicit_rules(&root.path.join("rules"), iterations)?;
    println!(
        "{EXPLICIT_RULES} explicit rules (one /24 each, allow and deny in turn): load {:.1} ms, \
         compile {:.1} ms (p50)",
        load.p50_ms(),
        compiled.p50_ms()
    );
    for (size, t, _) in &results {
        if *size == 100_000 {
            for (kind, r) in t.kinds() {
                let p50 = r.total.percentile(50);
                println!(
                    "target <= {} ms p50 at 10^5 prefixes, tollgate {kind}: {:.1} ms: {}",
                    TARGET.as_millis(),
                    p50.as_secs_f64() * 1e3,
                    if p50 <= TARGET { "MET" } else { "MISSED" }
                );
            }
        }
    }
    Ok(())
}

/// Shape (b): in this process, then nft on the same elements, then the
/// daemon end to end (when `binary` is given), and the table of all three.
fn run_fleet(
    runtime: &tokio::runtime::Runtime,
    root: &Path,
    pool: &bench::Pool,
    shape: testkit::explicit_fleet::Shape,
    binary: Option<&Path>,
    iterations: usize,
) -> Result<()> {
    let changes = fleet_changes::Changes::new(pool, shape)?;
    let results = fleet::run(runtime, &root.join("fleet"), &changes, iterations)?;
    eprintln!("shape (b): now nft");
    let ns = Namespace::create(&format!("tg-benchfleet-{}", std::process::id()))?;
    let netns_exec = netns_exec_overhead(&ns, iterations)?;
    let nft = fleet_nft::run(
        &ns,
        &root.join("fleet-nft"),
        &shape,
        &changes.versions,
        iterations,
    )
    .context("nft")?;
    drop(ns);
    let daemon = match binary {
        Some(binary) => {
            // A copy: the shared build directory's binary may be rebuilt
            // meanwhile from another checkout.
            let copy = root.join("tollgate");
            std::fs::copy(binary, &copy).context("copy the tollgate binary")?;
            let ns = testkit::namespace("benchfleet");
            Some(fleet_daemon::run(&copy, &ns, &changes, iterations).context("the daemon")?)
        }
        None => None,
    };
    let others = fleet::Others {
        nft: Some(&nft),
        netns_exec: Some(&netns_exec),
        daemon: daemon.as_ref(),
    };
    fleet::print(&results, &others, iterations);
    Ok(())
}

/// What `RELOAD_BENCH_ONLY` restricts the run to.
enum Only {
    /// The daemon's cold starts and restarts on shape (b).
    Start,
    /// The daemon's reloads on shape (b), without the in-process run and nft.
    Daemon,
}

/// `RELOAD_BENCH_ONLY=daemon`: shape (b)'s changes on the daemon alone, and
/// its start, restart and memory.
fn fleet_daemon_only(
    root: &Path,
    pool: &bench::Pool,
    shape: testkit::explicit_fleet::Shape,
    binary: &Path,
    iterations: usize,
) -> Result<()> {
    let changes = fleet_changes::Changes::new(pool, shape)?;
    // A copy, as in `run_fleet`.
    let copy = root.join("tollgate");
    std::fs::copy(binary, &copy).context("copy the tollgate binary")?;
    let ns = testkit::namespace("benchfleet");
    let daemon = fleet_daemon::run(&copy, &ns, &changes, iterations).context("the daemon")?;
    fleet_daemon::print(&daemon);
    Ok(())
}

/// `RELOAD_BENCH_ONLY=start`: the daemon's cold starts and restarts on
/// shape (b), and their medians.
fn fleet_starts(
    root: &Path,
    pool: &bench::Pool,
    shape: testkit::explicit_fleet::Shape,
    binary: &Path,
) -> Result<()> {
    let changes = fleet_changes::Changes::new(pool, shape)?;
    // A copy, as in `run_fleet`.
    let copy = root.join("tollgate");
    std::fs::copy(binary, &copy).context("copy the tollgate binary")?;
    let ns = testkit::namespace("benchfleet");
    let (cold, restart) = fleet_daemon::starts(&copy, &ns, &changes)?;
    let all = |s: &Samples| {
        let ms: Vec<String> =
            s.0.iter()
                .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
                .collect();
        ms.join(", ")
    };
    println!(
        "shape (b): {} explicit rules in {} group files, {} device /32s",
        shape.rules(),
        shape.groups,
        shape.devices
    );
    println!(
        "  daemon, spawn -> READY=1, median of {}: cold start {:.0} ms ({}), restart on its \
         pins {:.0} ms ({})",
        fleet_daemon::STARTS,
        cold.p50_ms(),
        all(&cold),
        restart.p50_ms(),
        all(&restart)
    );
    Ok(())
}

fn env_number(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(text) => text.parse().with_context(|| format!("{name}: a number")),
        Err(_) => Ok(default),
    }
}

/// Samples of one measurement.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// Nearest-rank percentile.
    fn percentile(&self, p: usize) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let rank = (p * sorted.len()).div_ceil(100).max(1);
        sorted[rank - 1]
    }

    fn p50_ms(&self) -> f64 {
        self.percentile(50).as_secs_f64() * 1e3
    }

    /// "p50 / p95" in ms.
    fn p50_p95(&self) -> String {
        format!(
            "{:.1} / {:.1}",
            self.p50_ms(),
            self.percentile(95).as_secs_f64() * 1e3
        )
    }

    fn summary(&self) -> String {
        format!(
            "{:.1} / {:.1}",
            self.p50_ms(),
            self.percentile(99).as_secs_f64() * 1e3
        )
    }
}

/// One kind of Tollgate reload: the total and its parts.
#[derive(Default)]
struct Breakdown {
    total: Samples,
    without_debounce: Samples,
    watch: Samples,
    load: Samples,
    compile: Samples,
    summary: Samples,
    install: Samples,
    grace: Samples,
    /// Map writes of the last iteration.
    writes: usize,
}

struct TollgateResults {
    edit: Breakdown,
    edit_small: Breakdown,
    pull: Breakdown,
    full: Breakdown,
}

impl TollgateResults {
    fn kinds(&self) -> [(&'static str, &Breakdown); 4] {
        [
            ("edit", &self.edit),
            ("edit-small", &self.edit_small),
            ("pull-1%", &self.pull),
            ("full", &self.full),
        ]
    }
}

struct NftResults {
    edit: Samples,
    full: Samples,
}

/// Where an edit puts the extra prefix.
#[derive(Clone, Copy)]
enum Extra<'a> {
    /// Nowhere (`extra` holds `QUIET_EXTRA`).
    None,
    /// Last in the big list.
    InBigList(&'a str),
    /// In `lists/extra.yaml`, instead of `QUIET_EXTRA`.
    InSmallFile(&'a str),
}

/// The policy files of one version: (relative path, text).
fn policy_files(allowed: &[IpNet], extra: Extra) -> Vec<(&'static str, String)> {
    let mut list = String::from("lists:\n  allowed:\n");
    for net in allowed {
        let _ = writeln!(list, "    - \"{net}\"");
    }
    if let Extra::InBigList(extra) = extra {
        let _ = writeln!(list, "    - \"{extra}\"");
    }
    let small = match extra {
        Extra::InSmallFile(extra) => extra,
        _ => QUIET_EXTRA,
    };
    let small = format!("lists:\n  extra:\n    - \"{small}\"\n");
    let mut groups = String::from("groups:\n  fleet:\n    devices:\n");
    for device in devices() {
        let _ = writeln!(groups, "      - \"{device}\"");
    }
    groups.push_str(
        "    default: deny\n    rules:\n      \
         - allow: {to: [allowed, extra], proto: tcp, ports: [443, 8883]}\n",
    );
    vec![
        ("lists/allowed.yaml", list),
        ("lists/extra.yaml", small),
        ("groups.yaml", groups),
    ]
}

/// 1,000 devices: a quarter each of /32, /24, /128, /64.
fn devices() -> Vec<IpNet> {
    let q = DEVICES / 4;
    let mut list = Vec::with_capacity(DEVICES);
    list.extend((1..=q).map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8)))));
    list.extend((0..q).map(|i| {
        IpNet::new(Ipv4Addr::new(10, 1 + (i >> 8) as u8, i as u8, 0).into(), 24).expect("a /24")
    }));
    list.extend((1..=q).map(|i| {
        IpNet::from(IpAddr::V6(Ipv6Addr::new(
            0xfd00, 0, 0, 0, 0, 0, 0, i as u16,
        )))
    }));
    list.extend((0..q).map(|i| {
        IpNet::new(Ipv6Addr::new(0xfd00, 1, 0, i as u16, 0, 0, 0, 0).into(), 64).expect("a /64")
    }));
    list
}

/// A device address: the first /32.
const DEVICE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn tollgate_reloads(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    versions: &[Vec<IpNet>],
    iterations: usize,
) -> Result<TollgateResults> {
    std::fs::create_dir_all(dir.join("lists"))?;
    let env = Environment::default();
    let limits = Limits::default();
    write_files(
        dir,
        &policy_files(&versions[0], Extra::InBigList(EDIT_PREFIXES[0].0)),
    )?;
    let mut caches = Caches::default();
    let mut dataplane = Dataplane::open(&Options {
        pin_dir: None,
        limits,
        ..Options::default()
    })?;
    let loaded = policy::load_cached(dir, &env, &ReadLimits::default(), &mut caches.parse)
        .map_err(diagnostics)?;
    let tables =
        compile_cached(&loaded.policy, &limits, &mut caches.compile).map_err(diagnostics)?;
    dataplane.install(&tables)?;
    let mut installed = (loaded.policy, tables);
    let mut watcher = PolicyWatcher::new(dir)?;

    // Reloads `files` and checks that each probe (an address, allowed?)
    // gets its verdict from the program.
    let mut reload = |change: &mut dyn FnMut() -> Result<()>,
                      probes: &[(Ipv4Addr, bool)],
                      into: &mut Breakdown|
     -> Result<()> {
        let start = Instant::now();
        change()?;
        let Stages {
            watched,
            parsed,
            compiled,
            summarised,
            report,
        } = reload_step(
            (runtime, &mut watcher, Duration::from_secs(10)),
            dir,
            (&env, &limits),
            &mut caches,
            &mut installed,
            &mut dataplane,
        )?;
        // The flip: `install` then waits for packets still on the old slot
        // (`report.grace`), which the new verdict does not wait for.
        let live = summarised + report.total;

        into.total.push(live - start);
        into.without_debounce.push(live - start - DEBOUNCE);
        into.watch.push(watched - start);
        into.load.push(parsed - watched);
        into.compile.push(compiled - parsed);
        into.summary.push(summarised - compiled);
        into.install.push(report.total);
        into.grace.push(report.grace);
        into.writes = report.writes.inserted + report.writes.removed;
        for &(probe, allowed) in probes {
            let frame =
                Frame::new(DEVICE.into(), probe.into(), Transport::Tcp { dport: 443 }).build();
            let (action, _) = dataplane.test_run_xdp(&frame, 1)?;
            let expected = if allowed { XDP_PASS } else { XDP_DROP };
            ensure!(
                action == expected,
                "after the reload, {probe} got {action}, expected {expected}"
            );
        }
        Ok(())
    };

    // Edits 1, 2, 3, ...: the first of each kind fills the other slot (and
    // moves the prefix) and is not counted.
    let mut edit = Breakdown::default();
    let mut edit_small = Breakdown::default();
    let mut warm_up = Breakdown::default();
    for small in [false, true] {
        for i in 1..=iterations + 1 {
            let (new, new_probe) = EDIT_PREFIXES[i % EDIT_PREFIXES.len()];
            let (_, old_probe) = EDIT_PREFIXES[(i - 1) % EDIT_PREFIXES.len()];
            let (extra, into) = match (small, i) {
                (false, 1) => (Extra::InBigList(new), &mut warm_up),
                (false, _) => (Extra::InBigList(new), &mut edit),
                (true, 1) => (Extra::InSmallFile(new), &mut warm_up),
                (true, _) => (Extra::InSmallFile(new), &mut edit_small),
            };
            let probes = [(new_probe, true), (old_probe, false)];
            let files = policy_files(&versions[0], extra);
            reload(&mut || write_files(dir, &files), &probes, into)?;
        }
    }
    // A `git pull` changing 1 % of the prefixes (reload/fleet_git.rs): the
    // directory, back at version 0 without the extra prefix (not
    // counted), becomes the base commit of a chain cycling through three
    // states of the list, every hundredth prefix from versions 0, 1, 2.
    let base = policy_files(&versions[0], Extra::None);
    reload(&mut || write_files(dir, &base), &[], &mut warm_up)?;
    let states: Vec<Vec<IpNet>> = (0..VERSIONS)
        .map(|v| {
            let mut state = versions[0].clone();
            for i in (0..state.len()).step_by(fleet_changes::PULL_STRIDE) {
                state[i] = versions[v][i];
            }
            state
        })
        .collect();
    let probe_at = (0..versions[0].len())
        .step_by(fleet_changes::PULL_STRIDE)
        .find(|&i| versions.iter().all(|v| v[i].addr().is_ipv4()))
        .context("no changed prefix that is IPv4 in every version")?;
    let owned = |files: Vec<(&str, String)>| {
        files
            .into_iter()
            .map(|(path, text)| (path.to_string(), text))
            .collect::<Vec<_>>()
    };
    let mut chain = fleet_git::GitChain::create(
        dir,
        &dir.with_extension("git-scratch"),
        VERSIONS,
        |s| owned(policy_files(&states[s], Extra::None)),
        iterations + 1,
    )?;
    let mut pull = Breakdown::default();
    for i in 0..iterations + 1 {
        let state = (i + 1) % VERSIONS;
        let probe = match states[state][probe_at] {
            IpNet::V4(net) => net.broadcast(),
            IpNet::V6(_) => unreachable!("chosen IPv4"),
        };
        let into = if i == 0 { &mut warm_up } else { &mut pull };
        let mut pulled = 0;
        reload(
            &mut || {
                pulled = chain.pull()?;
                Ok(())
            },
            &[(probe, true)],
            into,
        )?;
        ensure!(pulled == state, "pull {i} out of step");
    }

    let mut full = Breakdown::default();
    for i in 0..iterations {
        let version = &versions[(i + 1) % VERSIONS];
        let probe = version
            .iter()
            .find_map(|net| match net {
                IpNet::V4(v4) => Some(v4.broadcast()),
                IpNet::V6(_) => None,
            })
            .context("a version without IPv4 prefixes")?;
        let files = policy_files(version, Extra::None);
        reload(
            &mut || write_files(dir, &files),
            &[(probe, true)],
            &mut full,
        )?;
    }
    Ok(TollgateResults {
        edit,
        edit_small,
        pull,
        full,
    })
}

/// Rules written one by one rather than through a list: each rule's own
/// counter makes its rule list distinct, one rule record each.
const EXPLICIT_RULES: usize = 20_000;

/// Load and compile times of a policy of `EXPLICIT_RULES` rules, each
/// naming its own prefix, allow and deny in turn.
fn explicit_rules(dir: &Path, iterations: usize) -> Result<(Samples, Samples)> {
    std::fs::create_dir_all(dir)?;
    let mut text = String::from(
        "groups:\n  fleet:\n    devices: [10.0.0.0/8]\n    default: deny\n    rules:\n",
    );
    for i in 0..EXPLICIT_RULES {
        let action = if i % 2 == 0 { "allow" } else { "deny" };
        let _ = writeln!(
            text,
            "      - {action}: {{to: 100.{}.{}.0/24, proto: tcp, ports: [443]}}",
            64 + (i >> 8),
            i & 255
        );
    }
    std::fs::write(dir.join("rules.yaml"), text)?;
    let (mut load, mut compiled) = (Samples::default(), Samples::default());
    for _ in 0..iterations {
        let start = Instant::now();
        let loaded = policy::load(dir, &Environment::default()).map_err(diagnostics)?;
        let parsed = Instant::now();
        compile(&loaded.policy, &Limits::default()).map_err(diagnostics)?;
        load.push(parsed - start);
        compiled.push(parsed.elapsed());
    }
    Ok((load, compiled))
}

/// The caches one reload hands the next, as the daemon's prepare keeps
/// them: only the files and groups that changed are parsed and compiled.
#[derive(Default)]
struct Caches {
    parse: ParseCache,
    compile: CompileCache,
}

/// When each stage of a reload ended, and the install's own report.
struct Stages {
    /// The watcher reported the change.
    watched: Instant,
    parsed: Instant,
    compiled: Instant,
    summarised: Instant,
    report: InstallReport,
}

/// A reload as the daemon runs it: waits (up to `patience`) for the
/// watcher to see a change, then loads, compiles, summarises (the daemon
/// skips a policy that did not change; here that is an error) and installs.
/// `installed` becomes the new policy.
fn reload_step(
    (runtime, watcher, patience): (&tokio::runtime::Runtime, &mut PolicyWatcher, Duration),
    dir: &Path,
    (env, limits): (&Environment, &Limits),
    caches: &mut Caches,
    installed: &mut (Policy, CompiledPolicy),
    dataplane: &mut Dataplane,
) -> Result<Stages> {
    runtime
        .block_on(async { tokio::time::timeout(patience, watcher.changed()).await })
        .with_context(|| format!("no change seen within {patience:?}"))?
        .context("the watcher stopped")?;
    let watched = Instant::now();
    let loaded = policy::load_cached(dir, env, &ReadLimits::default(), &mut caches.parse)
        .map_err(diagnostics)?;
    let parsed = Instant::now();
    let tables =
        compile_cached(&loaded.policy, limits, &mut caches.compile).map_err(diagnostics)?;
    let compiled = Instant::now();
    let summary = ChangeSummary::between(Some(&installed.0), &loaded.policy);
    let unchanged = installed.1 == tables && installed.0 == loaded.policy;
    ensure!(
        !unchanged,
        "the new policy is the same as the old ({summary})"
    );
    let summarised = Instant::now();
    let report = dataplane.install(&tables)?;
    *installed = (loaded.policy, tables);
    Ok(Stages {
        watched,
        parsed,
        compiled,
        summarised,
        report,
    })
}

fn diagnostics(errors: Vec<tollgate::diagnostic::Diagnostic>) -> anyhow::Error {
    let shown: Vec<String> = errors.iter().take(5).map(ToString::to_string).collect();
    anyhow::anyhow!("policy: {}", shown.join("; "))
}

/// The nft ruleset equivalent to one version of the policy.
fn nft_full(allowed: &[IpNet], extra: Option<&str>) -> String {
    let elements = |nets: &mut dyn Iterator<Item = &IpNet>| {
        nets.map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    let devices = devices();
    let v4 = |n: &&IpNet| n.addr().is_ipv4();
    let v6 = |n: &&IpNet| n.addr().is_ipv6();
    let mut text = String::from("table inet tollgate\nflush table inet tollgate\n");
    let _ = writeln!(
        text,
        "table inet tollgate {{
  set devices4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {} }} }}
  set devices6 {{ type ipv6_addr; flags interval; auto-merge; elements = {{ {} }} }}
  set allowed4 {{ type ipv4_addr; flags interval; auto-merge; elements = {{ {} }} }}
  set allowed6 {{ type ipv6_addr; flags interval; auto-merge; elements = {{ {} }} }}
  chain fleet {{
    type filter hook forward priority filter; policy drop;
    ip saddr @devices4 ip daddr @allowed4 tcp dport {{ 443, 8883 }} counter accept
    ip6 saddr @devices6 ip6 daddr @allowed6 tcp dport {{ 443, 8883 }} counter accept
    counter drop
  }}
}}",
        elements(&mut devices.iter().filter(v4)),
        elements(&mut devices.iter().filter(v6)),
        elements(&mut allowed.iter().filter(v4))
            + &extra.map_or(String::new(), |e| format!(", {e}")),
        elements(&mut allowed.iter().filter(v6)) + ", " + QUIET_EXTRA,
    );
    text
}

/// Writes `text` to `file` and loads it with `nft -f` in `ns`, in one
/// transaction: the time from the write to nft's exit.
fn nft_load(ns: &Namespace, file: &Path, text: &str) -> Result<Duration> {
    let start = Instant::now();
    std::fs::write(file, text)?;
    let out = ns.exec("nft", &["-f", &file.to_string_lossy()])?;
    let took = start.elapsed();
    ensure!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(took)
}

fn nft_reloads(
    ns: &Namespace,
    dir: &Path,
    versions: &[Vec<IpNet>],
    iterations: usize,
) -> Result<NftResults> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("ruleset.nft");
    let load = |text: &str| nft_load(ns, &file, text);
    let allows = |probe: Ipv4Addr| -> Result<bool> {
        let element = format!("{{ {probe} }}");
        let args = ["get", "element", "inet", "tollgate", "allowed4", &element];
        Ok(ns.exec("nft", &args)?.status.success())
    };
    load(&nft_full(&versions[0], Some(EDIT_PREFIXES[0].0)))?;
    let mut edit = Samples::default();
    for i in 1..=iterations {
        let (new, new_probe) = EDIT_PREFIXES[i % EDIT_PREFIXES.len()];
        let (old, old_probe) = EDIT_PREFIXES[(i - 1) % EDIT_PREFIXES.len()];
        edit.push(load(&format!(
            "delete element inet tollgate allowed4 {{ {old} }}\n\
             add element inet tollgate allowed4 {{ {new} }}\n"
        ))?);
        ensure!(
            allows(new_probe)? && !allows(old_probe)?,
            "nft: the edit from {old} to {new} is not in force"
        );
    }
    let mut full = Samples::default();
    for i in 0..iterations {
        full.push(load(&nft_full(&versions[(i + 1) % VERSIONS], None))?);
    }
    ns.exec("nft", &["delete", "table", "inet", "tollgate"])?;
    Ok(NftResults { edit, full })
}

/// What `ip netns exec NS` costs by itself.
fn netns_exec_overhead(ns: &Namespace, iterations: usize) -> Result<Samples> {
    let mut samples = Samples::default();
    for _ in 0..iterations {
        let start = Instant::now();
        let out = ns.exec("true", &[])?;
        samples.push(start.elapsed());
        ensure!(out.status.success(), "ip netns exec true failed");
    }
    Ok(samples)
}

/// A temporary directory, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create() -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("tg-reload-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
