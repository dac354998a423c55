//! Shape (b): a fleet of explicit rules ([`testkit::explicit_fleet`]):
//! 100,000 rules in 100 group files and 1,000,000 device /32s by default
//! (`RELOAD_BENCH_FLEET_RULES`, `RELOAD_BENCH_FLEET_DEVICES`).
//!
//! The same reload path as shape (a) (watcher, `policy::load_cached`,
//! then `compile_cached` as `reload::prepare` does: only the groups a
//! changed file holds are validated and compiled again; the change
//! summary, `Dataplane::install`), for:
//! - **add-group**: a new small group file (one device, one rule), named
//!   to sort before every group already there (so that a group id taken
//!   from the group's position would move every group); the files
//!   accumulate;
//! - **delete-group**: then removing them, in the order they came;
//! - **edit**: a one-line port change of a rule in `groups/g000.yaml`,
//!   three ports in turn (so the slot written holds the policy before
//!   last, one port apart).
//!
//! After each reload a probe packet (the changed rule's destination, from
//! a device of its group) runs through the XDP program and must get the
//! model's verdict. Memory: VmRSS and VmHWM of this process (which also
//! holds the generated file texts, about 30 MB) after the first install
//! and after every reload; kernel memory: `memlock` of each map this
//! process holds (`/proc/self/fdinfo`, as `bpftool map show` reports it).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use ipnet::IpNet;
use testkit::{
    bench,
    explicit_fleet::{self, Shape},
    frames::{Frame, Transport},
};
use tollgate::{
    compile::compile_cached,
    config::Limits,
    datapath::{Dataplane, Options, XDP_DROP, XDP_PASS},
    model,
    policy::{self, Environment},
    reload::watch::PolicyWatcher,
    tables::{CompiledPolicy, PacketFacts},
};
use tollgate_common::Verdict;

use super::{Caches, Samples, Stages, diagnostics, reload_step};

/// One kind of reload of the fleet.
#[derive(Default)]
pub struct Kind {
    pub total: Samples,
    pub load: Samples,
    pub compile: Samples,
    pub summary: Samples,
    pub install: Samples,
    pub writes: Vec<usize>,
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

/// (VmRSS, VmHWM) of this process, in KiB.
pub fn memory() -> Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/self/status"))?;
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
    pool: &bench::Pool,
    shape: Shape,
    iterations: usize,
) -> Result<FleetResults> {
    let prefixes = pool.take(shape.rules());
    let files = explicit_fleet::files(&shape, &prefixes);
    std::fs::create_dir_all(dir.join("groups"))?;
    for (path, text) in &files {
        std::fs::write(dir.join(path), text)?;
    }
    // The rule the edits change: the last TCP allow to an IPv4 prefix in
    // g000, and the line it is on.
    let edited = (0..shape.rules_per_group)
        .rev()
        .find(|&j| j % 3 == 0 && j % 7 != 6 && prefixes[j].addr().is_ipv4())
        .context("g000 has no TCP allow to an IPv4 prefix")?;
    let g000 = files[0].1.clone();
    let original_line =
        explicit_fleet::rule_line(edited, &prefixes[edited], explicit_fleet::port(edited));
    ensure!(g000.contains(&original_line), "the edited rule's line");
    drop(files);

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
        memory: memory()?,
    };
    eprintln!(
        "shape (b): installed in {:.1?}; now the group files",
        begin.elapsed()
    );
    let mut installed = (loaded.policy, tables);
    let mut watcher = PolicyWatcher::new(dir)?;

    let mut reloads = 0;
    let mut reload =
        |change: &dyn Fn() -> Result<()>, probe: PacketFacts, into: &mut Kind| -> Result<()> {
            let start = Instant::now();
            change()?;
            let Stages {
                watched,
                parsed,
                compiled,
                summarised,
                report,
            } = reload_step(
                (runtime, &mut watcher, Duration::from_secs(20)),
                dir,
                (&env, &limits),
                &mut caches,
                &mut installed,
                &mut dataplane,
            )?;
            let live = summarised + report.total;
            into.total.push(live - start);
            into.load.push(parsed - watched);
            into.compile.push(compiled - parsed);
            into.summary.push(summarised - compiled);
            into.install.push(report.total);
            into.writes
                .push(report.writes.inserted + report.writes.removed);
            check_probe(&dataplane, &installed.1, probe)?;
            reloads += 1;
            Ok(())
        };

    let (mut add, mut delete, mut edit) = (Kind::default(), Kind::default(), Kind::default());
    // Group file k: `a-new-NN`, named so that each sorts before the ones
    // added earlier and before every fleet group, with one device of its
    // own and one rule.
    let group = |k: usize| {
        let name = format!("a-new-{:02}", 99 - k);
        let device = Ipv4Addr::new(172, 16, 0, 1 + k as u8);
        let path = dir.join(format!("groups/{name}.yaml"));
        let text = explicit_fleet::small_group_file(&name, device, "192.0.2.0/24");
        let probe = PacketFacts {
            src: device.into(),
            dst: Ipv4Addr::new(192, 0, 2, 9).into(),
            proto: 6,
            dport: Some(443),
        };
        (path, text, probe)
    };
    // The files accumulate, then go in the order they came; the first of
    // each kind fills the other slot and is not counted.
    let mut warm_up = Kind::default();
    for k in 0..iterations + 1 {
        let (path, text, probe) = group(k);
        let into = if k == 0 { &mut warm_up } else { &mut add };
        reload(&|| Ok(std::fs::write(&path, &text)?), probe, into)?;
    }
    for k in 0..iterations + 1 {
        let (path, _, probe) = group(k);
        let into = if k == 0 { &mut warm_up } else { &mut delete };
        reload(&|| Ok(std::fs::remove_file(&path)?), probe, into)?;
    }
    eprintln!("shape (b): group files added and deleted; now the edits");
    let g000_path = dir.join(explicit_fleet::group_path(0));
    let ports = [40_001u16, 40_002, 40_003];
    let dst = match prefixes[edited] {
        IpNet::V4(net) => IpAddr::V4(net.broadcast()),
        IpNet::V6(_) => unreachable!("an IPv4 prefix"),
    };
    for i in 0..iterations + 1 {
        let port = ports[i % ports.len()];
        let line = explicit_fleet::rule_line(edited, &prefixes[edited], port);
        let text = g000.replacen(&original_line, &line, 1);
        let probe = PacketFacts {
            src: explicit_fleet::device(0).into(),
            dst,
            proto: 6,
            dport: Some(port),
        };
        let mut warm_up = Kind::default();
        let into = if i == 0 { &mut warm_up } else { &mut edit };
        reload(&|| Ok(std::fs::write(&g000_path, &text)?), probe, into)?;
    }
    Ok(FleetResults {
        shape,
        start,
        kinds: vec![("add-group", add), ("delete-group", delete), ("edit", edit)],
        after_reloads: memory()?,
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

pub fn print(results: &FleetResults, iterations: usize) {
    let s = &results.shape;
    println!();
    println!(
        "shape (b): {} explicit rules in {} group files, {} device /32s",
        s.rules(),
        s.groups,
        s.devices
    );
    println!(
        "  start: load {:.0} ms, compile {:.0} ms, install {:.0} ms ({} map writes); \
         VmRSS {} MiB, VmHWM {} MiB",
        results.start.load.as_secs_f64() * 1e3,
        results.start.compile.as_secs_f64() * 1e3,
        results.start.install.as_secs_f64() * 1e3,
        results.start.writes,
        results.start.memory.0 / 1024,
        results.start.memory.1 / 1024
    );
    println!(
        "  reload, ms, p50 / p95 over {iterations}: file written -> flip, and its parts \
         (p50); map writes p50 / max"
    );
    println!(
        "  {:>13} {:>16} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "kind", "total", "load", "compile", "summary", "install", "writes"
    );
    for (name, k) in &results.kinds {
        let mut writes = k.writes.clone();
        writes.sort_unstable();
        let p50 = writes.get(writes.len() / 2).copied().unwrap_or(0);
        let max = writes.last().copied().unwrap_or(0);
        println!(
            "  {:>13} {:>16} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>12}",
            name,
            format!(
                "{:.1} / {:.1}",
                k.total.p50_ms(),
                k.total.percentile(95).as_secs_f64() * 1e3
            ),
            k.load.p50_ms(),
            k.compile.p50_ms(),
            k.summary.p50_ms(),
            k.install.p50_ms(),
            format!("{p50} / {max}")
        );
    }
    println!(
        "  after {} reloads: VmRSS {} MiB, VmHWM {} MiB",
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
}
