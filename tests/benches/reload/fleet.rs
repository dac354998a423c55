//! Shape (b): a fleet of explicit rules ([`testkit::explicit_fleet`]):
//! 100,000 rules in 100 group files and 1,000,000 device /32s by default
//! (`RELOAD_BENCH_FLEET_RULES`, `RELOAD_BENCH_FLEET_DEVICES`).
//!
//! The same reload path as shape (a) (watcher, `policy::load_cached`,
//! then `compile_cached` as `reload::prepare` does: only the groups a
//! changed file holds are validated and compiled again; the change
//! summary, `Dataplane::install`), in this process, for the changes of
//! `fleet_changes.rs`:
//! - **add-group**: a new small group file (one device, one rule), named
//!   to sort before every group already there (so that a group id taken
//!   from the group's position would move every group); the files
//!   accumulate;
//! - **delete-group**: then removing them, in the order they came;
//! - **edit**: a one-line port change of a rule in `groups/g000.yaml`,
//!   three ports in turn (so the slot written holds the policy before
//!   last, one port apart);
//! - **git-pull-1%**: the policy directory is a git checkout
//!   (`fleet_git.rs`); `git merge --ff-only` to the next commit of a
//!   chain that moves every hundredth rule of every group (1 % of the
//!   rules, in all 100 files) to another prefix, to a third, and back
//!   (three states, so that the slot written holds the state before
//!   last, 1 % of the rules away). The watcher
//!   holds the reload while git holds `.git/index.lock`;
//! - **full**: every file rewritten in place, one after another, with
//!   every rule's prefix changed (three versions of the fleet's prefixes
//!   in turn; the devices stay).
//!
//! A change of many files may be caught half-written (a reload starts
//! once the directory has been quiet for the debounce); each reload is
//! followed by more until the policy in force is the whole change (the
//! first rule of every group tells), the time then runs to the last flip,
//! the stages and writes are summed, and the column `split` counts such
//! reloads. After each reload a probe packet (the changed rule's
//! destination, from a device of its group) runs through the XDP program
//! and must get the model's verdict. Memory: VmRSS and VmHWM of this
//! process after the first install and after every reload (it also
//! generates the file texts, about 30 MB at 10⁶ devices, before the start,
//! for the git states and for each full replacement: in its VmHWM, not
//! in the daemon's); kernel memory: `memlock` of
//! each map this process holds (`/proc/self/fdinfo`, as `bpftool map
//! show` reports it).

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use testkit::{
    explicit_fleet::Shape,
    frames::{Frame, Transport},
};
use tollgate::{
    compile::compile_cached,
    config::Limits,
    datapath::{Dataplane, Options, XDP_DROP, XDP_PASS},
    model,
    policy::{self, Environment, Policy},
    reload::watch::{DEBOUNCE, PolicyWatcher},
    tables::{CompiledPolicy, PacketFacts},
};
use tollgate_common::Verdict;

use super::{
    Caches, Samples, Stages, diagnostics,
    fleet_changes::{Changes, VERSIONS, write_all, write_file},
    fleet_daemon::DaemonResults,
    fleet_nft::NftFleet,
    reload_step,
};

/// One kind of reload of the fleet.
#[derive(Default)]
pub struct Kind {
    pub total: Samples,
    pub load: Samples,
    pub compile: Samples,
    pub summary: Samples,
    pub install: Samples,
    pub writes: Vec<usize>,
    /// Reloads that caught the change half-made.
    pub splits: usize,
}

pub struct FleetResults {
    pub shape: Shape,
    pub start: Start,
    pub kinds: Vec<(&'static str, Kind)>,
    /// (VmRSS, VmHWM) in KiB after the last reload.
    pub after_reloads: (u64, u64),
    pub reloads: usize,
    /// `memlock` bytes by map name.
    pub memlock: BTreeMap<String, u64>,
}

/// The first load and install.
pub struct Start {
    pub load: Duration,
    pub compile: Duration,
    pub install: Duration,
    pub writes: usize,
    /// (VmRSS, VmHWM) in KiB.
    pub memory: (u64, u64),
}

/// (VmRSS, VmHWM) of process `pid`, in KiB.
pub fn memory(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in {path}"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("a number")?
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// `memlock` of every BPF map this process has open, by name (the id from
/// fdinfo, the name from `bpftool map show id`).
fn memlock() -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let (Some(id), Some(bytes), Some(_)) =
            (field("map_id:"), field("memlock:"), field("map_type:"))
        else {
            continue;
        };
        let shown = std::process::Command::new("bpftool")
            .args(["map", "show", "id", &id])
            .output()?;
        let text = String::from_utf8_lossy(&shown.stdout);
        let name = text
            .split_whitespace()
            .skip_while(|w| *w != "name")
            .nth(1)
            .unwrap_or("?")
            .to_string();
        *out.entry(name).or_default() += bytes.parse::<u64>().unwrap_or(0);
    }
    Ok(out)
}

pub fn run(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    changes: &Changes,
    iterations: usize,
) -> Result<FleetResults> {
    std::fs::create_dir_all(dir.join("groups"))?;
    write_all(dir, &changes.files(0))?;

    let env = Environment::default();
    let limits = Limits::default();
    let read_limits = policy::ReadLimits::default();
    let mut caches = Caches::default();
    let mut dataplane = Dataplane::open(&Options {
        pin_dir: None,
        limits,
        ..Options::default()
    })?;
    let begin = Instant::now();
    let loaded =
        policy::load_cached(dir, &env, &read_limits, &mut caches.parse).map_err(diagnostics)?;
    let loaded_at = Instant::now();
    let tables =
        compile_cached(&loaded.policy, &limits, &mut caches.compile).map_err(diagnostics)?;
    let compiled_at = Instant::now();
    let report = dataplane.install(&tables)?;
    let start = Start {
        load: loaded_at - begin,
        compile: compiled_at - loaded_at,
        install: report.total,
        writes: report.writes.inserted + report.writes.removed,
        memory: memory(std::process::id())?,
    };
    eprintln!(
        "shape (b): installed in {:.1?}; now the group files",
        begin.elapsed()
    );
    let mut installed = (loaded.policy, tables);
    let mut watcher = PolicyWatcher::new(dir)?;

    let mut reloads = 0;
    // Makes `change`, then reloads until `settled` says the policy in
    // force is the whole change (a change of many files may be caught
    // half-written: the time is then the last flip's, the stages are
    // summed, and the split is counted).
    let mut reload = |change: &mut dyn FnMut() -> Result<()>,
                      settled: &dyn Fn(&Policy) -> bool,
                      probe: PacketFacts,
                      into: &mut Kind|
     -> Result<()> {
        let start = Instant::now();
        change()?;
        let (mut load, mut compile) = (Duration::ZERO, Duration::ZERO);
        let (mut summary, mut install) = (Duration::ZERO, Duration::ZERO);
        let mut writes = 0;
        for step in 0.. {
            ensure!(step < 10, "the policy never settled after {step} reloads");
            let Stages {
                watched,
                parsed,
                compiled,
                summarised,
                report,
            } = reload_step(
                (runtime, &mut watcher, Duration::from_secs(60)),
                dir,
                (&env, &limits),
                &mut caches,
                &mut installed,
                &mut dataplane,
            )?;
            reloads += 1;
            load += parsed - watched;
            compile += compiled - parsed;
            summary += summarised - compiled;
            install += report.total;
            writes += report.writes.inserted + report.writes.removed;
            if settled(&installed.0) {
                into.total.push(summarised + report.total - start);
                if step > 0 {
                    // Writes the last reload read may still have their
                    // events queued: a trigger for nothing new, which
                    // the next change's reload must not take as its own.
                    let drain = watcher.changed();
                    let _ =
                        runtime.block_on(async { tokio::time::timeout(DEBOUNCE * 4, drain).await });
                }
                break;
            }
            into.splits += 1;
        }
        into.load.push(load);
        into.compile.push(compile);
        into.summary.push(summary);
        into.install.push(install);
        into.writes.push(writes);
        check_probe(&dataplane, &installed.1, probe)
    };
    let any = |_: &Policy| true;

    let (mut add, mut delete, mut edit) = (Kind::default(), Kind::default(), Kind::default());
    // The files accumulate, then go in the order they came; the first of
    // each kind fills the other slot and is not counted.
    let mut warm_up = Kind::default();
    for k in 0..iterations + 1 {
        let (path, text, probe) = changes.new_group(dir, k);
        let into = if k == 0 { &mut warm_up } else { &mut add };
        reload(&mut || write_file(&path, &text), &any, probe, into)?;
    }
    for k in 0..iterations + 1 {
        let (path, _, probe) = changes.new_group(dir, k);
        let into = if k == 0 { &mut warm_up } else { &mut delete };
        reload(&mut || Ok(std::fs::remove_file(&path)?), &any, probe, into)?;
    }
    eprintln!("shape (b): group files added and deleted; now the edits");
    let g000_path = changes.g000_path(dir);
    for i in 0..iterations + 1 {
        let (text, probe) = changes.edit(i);
        let into = if i == 0 { &mut warm_up } else { &mut edit };
        reload(&mut || write_file(&g000_path, &text), &any, probe, into)?;
    }
    // Back to the base commit's g000 (the pulls would not overwrite a
    // local change), not counted.
    let (_, probe) = changes.edit(0);
    reload(
        &mut || write_file(&g000_path, changes.g000()),
        &any,
        probe,
        &mut warm_up,
    )?;

    eprintln!("shape (b): edits done; now the pulls");
    // Made now, not before the start, so that the start's memory is what
    // it was before the pulls were measured. Git writes only `.git`, which
    // the watcher ignores, and the checkout is the base commit's again.
    let mut chain = changes.git_chain(dir, &dir.with_extension("git-scratch"), iterations + 1)?;
    let mut pull = Kind::default();
    for i in 0..iterations + 1 {
        // Pull i brings state i + 1 (of three: the base is state 0).
        let state = (i + 1) % VERSIONS;
        let prefixes = &changes.pull_states[state];
        let into = if i == 0 { &mut warm_up } else { &mut pull };
        let mut pulled = 0;
        reload(
            &mut || {
                pulled = chain.pull()?;
                Ok(())
            },
            &|policy| changes.first_rules_are(policy, prefixes),
            changes.first_rule_probe(prefixes)?,
            into,
        )?;
        ensure!(pulled == state, "pull {i} out of step");
    }

    eprintln!("shape (b): pulls done; now the full replacements");
    let mut full = Kind::default();
    for i in 0..iterations + 1 {
        let v = (i + 1) % VERSIONS;
        // Generated before the clock starts: a deploy tool has its files.
        let files = changes.files(v);
        let prefixes = &changes.versions[v];
        let into = if i == 0 { &mut warm_up } else { &mut full };
        reload(
            &mut || write_all(dir, &files),
            &|policy| changes.first_rules_are(policy, prefixes),
            changes.first_rule_probe(prefixes)?,
            into,
        )?;
    }
    Ok(FleetResults {
        shape: changes.shape,
        start,
        kinds: vec![
            ("add-group", add),
            ("delete-group", delete),
            ("edit", edit),
            ("git-pull-1%", pull),
            ("full", full),
        ],
        after_reloads: memory(std::process::id())?,
        reloads,
        memlock: memlock()?,
    })
}

/// The probe must get the model's verdict from the program.
fn check_probe(dataplane: &Dataplane, tables: &CompiledPolicy, probe: PacketFacts) -> Result<()> {
    let expected = match model::verdict(tables, &probe).verdict {
        Verdict::Allow | Verdict::AuditDeny => XDP_PASS,
        Verdict::Deny | Verdict::Reject => XDP_DROP,
    };
    let transport = Transport::Tcp {
        dport: probe.dport.unwrap_or(0),
    };
    let frame = Frame::new(probe.src, probe.dst, transport).build();
    let (action, _) = dataplane.test_run_xdp(&frame, 1)?;
    ensure!(
        action == expected,
        "{probe:?}: the program said {action}, the model {expected}"
    );
    Ok(())
}

/// What `print` sets tollgate's numbers against, when measured.
pub struct Others<'a> {
    pub nft: Option<&'a NftFleet>,
    /// `ip netns exec NS true` alone (in every nft number).
    pub netns_exec: Option<&'a Samples>,
    pub daemon: Option<&'a DaemonResults>,
}

/// Issue 14's latency target for a new small group file and a one-line
/// edit.
const TARGET: Duration = Duration::from_millis(50);
/// Issue 14's memory target (VmHWM).
const MEMORY_TARGET_KIB: u64 = 256 * 1024;
/// Deliverable 5's cold start target.
const COLD_START_TARGET: Duration = Duration::from_secs(2);

pub fn print(results: &FleetResults, others: &Others, iterations: usize) {
    let s = &results.shape;
    println!();
    println!(
        "shape (b): {} explicit rules in {} group files, {} device /32s",
        s.rules(),
        s.groups,
        s.devices
    );
    println!(
        "  start (in this process): load {:.0} ms, compile {:.0} ms, install {:.0} ms ({} map \
         writes); VmRSS {} MiB, VmHWM {} MiB",
        results.start.load.as_secs_f64() * 1e3,
        results.start.compile.as_secs_f64() * 1e3,
        results.start.install.as_secs_f64() * 1e3,
        results.start.writes,
        results.start.memory.0 / 1024,
        results.start.memory.1 / 1024
    );
    println!(
        "  reload, ms, p50 / p95 over {iterations}: in-process = change made -> flip, its \
         stages (p50), map writes p50 / max, reloads that caught the change half-made; \
         daemon = change made -> `status` shows the new generation, and the daemon's own \
         reload time (`last_reload.duration_ms`); nft = nft's exit"
    );
    println!(
        "  {:>17} {:>17} {:>8} {:>8} {:>8} {:>8} {:>12} {:>5} {:>26} {:>17}",
        "kind",
        "in-process",
        "load",
        "compile",
        "summary",
        "install",
        "writes",
        "split",
        "daemon",
        "daemon's own"
    );
    let daemon_kind = |name: &str| {
        others
            .daemon
            .and_then(|d| d.kinds.iter().find(|k| k.name == name))
    };
    for (name, k) in &results.kinds {
        let mut writes = k.writes.clone();
        writes.sort_unstable();
        let p50 = writes.get(writes.len() / 2).copied().unwrap_or(0);
        let max = writes.last().copied().unwrap_or(0);
        let daemon = daemon_kind(name).map_or("-".into(), |d| {
            if d.splits == 0 {
                d.total.p50_p95()
            } else {
                format!("{} ({} split)", d.total.p50_p95(), d.splits)
            }
        });
        let daemon_reload = daemon_kind(name).map_or("-".into(), |d| d.reload.p50_p95());
        println!(
            "  {:>17} {:>17} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>12} {:>5} {:>26} {:>17}",
            name,
            k.total.p50_p95(),
            k.load.p50_ms(),
            k.compile.p50_ms(),
            k.summary.p50_ms(),
            k.install.p50_ms(),
            format!("{p50} / {max}"),
            k.splits,
            daemon,
            daemon_reload
        );
    }
    if let Some(nft) = others.nft {
        for (name, samples) in [
            ("nft add element", &nft.add_element),
            ("nft -f full set", &nft.full),
        ] {
            println!("  {name:>17} {:>17}", samples.p50_p95());
        }
    }
    if let Some(netns) = others.netns_exec {
        println!(
            "  (`ip netns exec NS true` alone, in every nft number: p50 {:.1} ms)",
            netns.p50_ms()
        );
    }
    println!(
        "  in-process, after {} reloads: VmRSS {} MiB, VmHWM {} MiB",
        results.reloads,
        results.after_reloads.0 / 1024,
        results.after_reloads.1 / 1024
    );
    let total: u64 = results.memlock.values().sum();
    println!(
        "  kernel map memory (memlock, both slots): {} MiB in all",
        total / (1 << 20)
    );
    for (name, bytes) in &results.memlock {
        if *bytes >= 1 << 20 {
            println!(
                "    {name:>16} {:>8.1} MiB",
                *bytes as f64 / f64::from(1 << 20)
            );
        }
    }
    if let Some(d) = others.daemon {
        println!(
            "  daemon: cold start (spawn -> READY=1, first generation in force) {:.0} ms; \
             after start VmRSS {} MiB, VmHWM {} MiB; after the reloads VmRSS {} MiB, VmHWM {} MiB",
            d.cold_start.as_secs_f64() * 1e3,
            d.after_start.0 / 1024,
            d.after_start.1 / 1024,
            d.after_reloads.0 / 1024,
            d.after_reloads.1 / 1024
        );
        println!(
            "  daemon: restart on its pins (spawn -> READY=1) {:.0} ms, {} map writes; \
             after it VmRSS {} MiB, VmHWM {} MiB",
            d.restart.as_secs_f64() * 1e3,
            d.restart_writes,
            d.after_restart.0 / 1024,
            d.after_restart.1 / 1024
        );
    }
    print_targets(results, others);
}

/// Issue 14's targets, each MET or MISSED.
fn print_targets(results: &FleetResults, others: &Others) {
    let verdict = |met: bool| if met { "MET" } else { "MISSED" };
    let kind = |name: &str| {
        results
            .kinds
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| &k.total)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("  targets (issue 14):");
    for name in ["add-group", "edit"] {
        let Some(in_process) = kind(name) else {
            continue;
        };
        let mut line = format!(
            "    {name} p50 <= {} ms: in-process {:.1} ms {}",
            TARGET.as_millis(),
            ms(in_process.percentile(50)),
            verdict(in_process.percentile(50) <= TARGET)
        );
        if let Some(daemon) = others
            .daemon
            .and_then(|d| d.kinds.iter().find(|k| k.name == name))
        {
            let p50 = daemon.total.percentile(50);
            line += &format!(", daemon {:.1} ms {}", ms(p50), verdict(p50 <= TARGET));
        }
        if let Some(nft) = others.nft {
            let p50 = nft.add_element.percentile(50);
            line += &format!(
                "; goal no slower than nft add element ({:.1} ms): {}",
                ms(p50),
                verdict(in_process.percentile(50) <= p50)
            );
        }
        println!("{line}");
    }
    if let (Some(full), Some(nft)) = (kind("full"), others.nft) {
        let (ours, theirs) = (full.percentile(50), nft.full.percentile(50));
        println!(
            "    full replacement p50 no slower than nft -f of the full set: {:.1} ms vs {:.1} \
             ms {}",
            ms(ours),
            ms(theirs),
            verdict(ours <= theirs)
        );
    }
    let (whose, hwm) = match others.daemon {
        Some(d) => ("the daemon", d.after_reloads.1),
        None => ("this process", results.after_reloads.1),
    };
    println!(
        "    VmHWM <= {} MiB ({whose}, after the reloads): {} MiB {}",
        MEMORY_TARGET_KIB / 1024,
        hwm / 1024,
        verdict(hwm <= MEMORY_TARGET_KIB)
    );
    if let Some(d) = others.daemon {
        println!(
            "    cold start <= {} s: {:.2} s {}",
            COLD_START_TARGET.as_secs(),
            d.cold_start.as_secs_f64(),
            verdict(d.cold_start <= COLD_START_TARGET)
        );
        println!(
            "    a restart that adopts the pins rewrites no unchanged entry: {} map writes {}",
            d.restart_writes,
            verdict(d.restart_writes == 0)
        );
    }
}
