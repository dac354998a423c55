//! Shape (b) end to end: the real daemon (`tollgate run`, the release
//! build, [`testkit::daemon_process::Daemon`]) in a network namespace of
//! the bench's own, attached to a veth there, on the fleet's policy (its
//! policy directory a git checkout as in `fleet.rs`). Each change of
//! `fleet_changes.rs` is timed from just before it is made to the first
//! `status` answer (the control socket, as `tollgate status --json` asks
//! it, polled every millisecond) whose `policy.generation` is past the one
//! before: the watcher's debounce, the whole reload and the daemon's
//! bookkeeping after the flip, and up to a poll's delay. Every answer
//! must show the reload succeeded, with the expected number of groups.
//! The daemon's own figure for the reload (`last_reload.duration_ms`) is
//! kept beside it.
//! The changes start once the work a fresh start leaves for after READY=1
//! is done (filling the inactive slot, verifying the other hooks: 2 s of
//! CPU at this size), and each comes [`GAP`] after the last: what a reload
//! does after its flip (the verdict log, 15–20 ms on a thread of its own)
//! would otherwise share the two CPUs with the next change's reload, and
//! the figures would be those of changes made faster than anyone makes
//! them.
//! A full replacement can be caught half-written (see `fleet.rs`): after
//! the new generation, the bench keeps polling for twice as long again (at
//! least 200 ms); a further generation in that time is the rest of the
//! change, counted as a split, and the time runs to it.
//!
//! Cold start: from the process's spawn to its `READY=1` (sent once the
//! first generation is in force: policy loaded, compiled, installed,
//! attached); the BPF verifier's time is in it. Restart: after the
//! reloads the daemon is stopped and started again on the same pins and
//! policy, timed the same way; it adopts the pinned maps, and the map
//! writes of its first generation come from its log line. Memory: VmRSS
//! and VmHWM of the daemon process from `/proc/PID/status`, after the
//! start, after every reload and after the restart.
//!
//! `RELOAD_BENCH_ONLY=start` ([`starts`]): only the starts, without the
//! in-process run, nft or the reloads, [`STARTS`] times each: a cold start
//! (nothing pinned), stopped, then a restart on its pins, stopped. Timed
//! as above; each start's stages come from the daemon's log.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use testkit::daemon_process::Daemon;
use tollgate::{
    control::{self, Status},
    netns::Namespace,
};

use super::{
    Samples,
    fleet::memory,
    fleet_changes::{Changes, VERSIONS, write_all, write_file},
};

pub struct DaemonResults {
    /// Spawn to READY=1.
    pub cold_start: Duration,
    /// Spawn to READY=1 of a second process on the first one's pins.
    pub restart: Duration,
    /// The map writes of the restarted daemon's first generation.
    pub restart_writes: u64,
    /// (VmRSS, VmHWM) in KiB after the start, after the reloads and after
    /// the restart.
    pub after_start: (u64, u64),
    pub after_reloads: (u64, u64),
    pub after_restart: (u64, u64),
    pub kinds: Vec<DaemonKind>,
}

/// One kind of change (the names of `fleet.rs`), end to end.
pub struct DaemonKind {
    pub name: &'static str,
    /// Change made -> the new generation in `status`.
    pub total: Samples,
    /// The daemon's own figure for the reload (`last_reload.duration_ms`).
    pub reload: Samples,
    pub splits: usize,
}

const POLL: Duration = Duration::from_millis(1);
/// Quiet time before each change (module doc).
const GAP: Duration = Duration::from_millis(250);
/// How long a reload may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(120);

pub fn run(
    binary: &Path,
    ns: &Namespace,
    changes: &Changes,
    iterations: usize,
) -> Result<DaemonResults> {
    let mut daemon = on_fleet(binary, ns, changes)?;
    let dir = daemon.policy_dir.clone();
    let mut chain = changes.git_chain(&dir, &daemon.root.join("git-scratch"), iterations + 1)?;
    let groups = changes.shape.groups;

    eprintln!("shape (b), daemon: starting");
    let spawned = Instant::now();
    daemon.spawn();
    let cold_start = spawned.elapsed();
    let first = control::query(&daemon.control_socket)?;
    ensure!(
        first.policy.generation >= 1 && first.policy.groups == groups,
        "READY=1 before the fleet was in force: {:?}",
        first.policy
    );
    let after_start = memory(daemon.pid())?;
    // The work a fresh start leaves for after READY=1 (module doc).
    for done in ["inactive slot filled", "hooks verified after READY=1"] {
        daemon.wait_log(done, PATIENCE);
    }

    let mut kinds = Vec::new();
    let mut add = Timer::new(&daemon);
    for k in 0..=iterations {
        let (path, text, _) = changes.new_group(&dir, k);
        add.time(k > 0, groups + k + 1, false, &mut || {
            write_file(&path, &text)
        })?;
    }
    kinds.push(add.done("add-group"));
    let mut delete = Timer::new(&daemon);
    for k in 0..=iterations {
        let (path, _, _) = changes.new_group(&dir, k);
        delete.time(k > 0, groups + iterations - k, false, &mut || {
            Ok(std::fs::remove_file(&path)?)
        })?;
    }
    kinds.push(delete.done("delete-group"));
    eprintln!("shape (b), daemon: group files added and deleted; now the edits");
    let g000 = changes.g000_path(&dir);
    let mut edit = Timer::new(&daemon);
    for i in 0..=iterations {
        let (text, _) = changes.edit(i);
        edit.time(i > 0, groups, false, &mut || write_file(&g000, &text))?;
    }
    // Back to the base commit's g000, not counted.
    edit.time(false, groups, false, &mut || {
        write_file(&g000, changes.g000())
    })?;
    kinds.push(edit.done("edit"));
    let mut pull = Timer::new(&daemon);
    for i in 0..=iterations {
        pull.time(i > 0, groups, false, &mut || {
            chain.pull()?;
            Ok(())
        })?;
    }
    kinds.push(pull.done("git-pull-1%"));
    eprintln!("shape (b), daemon: pulls done; now the full replacements");
    let mut full = Timer::new(&daemon);
    for i in 0..=iterations {
        let files = changes.files((i + 1) % VERSIONS);
        full.time(i > 0, groups, true, &mut || write_all(&dir, &files))?;
    }
    kinds.push(full.done("full"));
    let after_reloads = memory(daemon.pid())?;
    let exit = daemon.stop();
    ensure!(exit.success(), "the daemon exited with {exit}");

    eprintln!("shape (b), daemon: restarting");
    let in_force = generations_in_force(&daemon.logs());
    let spawned = Instant::now();
    daemon.spawn();
    let restart = spawned.elapsed();
    let again = control::query(&daemon.control_socket)?;
    ensure!(
        again.policy.groups == groups,
        "READY=1 after the restart before the fleet was in force: {:?}",
        again.policy
    );
    let logs = daemon.logs();
    let restart_line = logs
        .lines()
        .filter(|l| l.contains(IN_FORCE))
        .nth(in_force)
        .context("the restarted daemon logged no generation in force")?;
    let restart_writes =
        map_writes(restart_line).with_context(|| format!("no map writes in {restart_line:?}"))?;
    let after_restart = memory(daemon.pid())?;
    let exit = daemon.stop();
    ensure!(exit.success(), "the restarted daemon exited with {exit}");
    Ok(DaemonResults {
        cold_start,
        restart,
        restart_writes,
        after_start,
        after_reloads,
        after_restart,
        kinds,
    })
}

/// The daemon's results alone (`RELOAD_BENCH_ONLY=daemon`): each kind's
/// p50 and p95, then start, restart and memory.
pub fn print(d: &DaemonResults) {
    println!("shape (b), the daemon alone: change made -> `status` shows it (the daemon's own)");
    for kind in &d.kinds {
        println!(
            "  {:<13} {} ({}){}",
            kind.name,
            kind.total.p50_p95(),
            kind.reload.p50_p95(),
            if kind.splits > 0 {
                format!(", {} split", kind.splits)
            } else {
                String::new()
            }
        );
    }
    let mib = |kib: u64| kib / 1024;
    println!(
        "  cold start {:.0} ms; restart {:.0} ms, {} map writes",
        d.cold_start.as_secs_f64() * 1e3,
        d.restart.as_secs_f64() * 1e3,
        d.restart_writes
    );
    for (when, (rss, hwm)) in [
        ("after start", d.after_start),
        ("after the reloads", d.after_reloads),
        ("after the restart", d.after_restart),
    ] {
        println!("  {when}: VmRSS {} MiB, VmHWM {} MiB", mib(rss), mib(hwm));
    }
}

/// How many cold starts and restarts `RELOAD_BENCH_ONLY=start` times.
pub const STARTS: usize = 5;

/// `STARTS` cold starts, each followed by a restart on its pins (see the
/// module doc): their times, spawn -> READY=1.
pub fn starts(binary: &Path, ns: &Namespace, changes: &Changes) -> Result<(Samples, Samples)> {
    let mut daemon = on_fleet(binary, ns, changes)?;
    let groups = changes.shape.groups;
    let (mut cold, mut restart) = (Samples::default(), Samples::default());
    for i in 0..STARTS {
        // What the previous restart left pinned goes: a cold start.
        testkit::remove_pin_tree(&daemon.pins.0)?;
        for (kind, samples) in [("cold start", &mut cold), ("restart", &mut restart)] {
            let spawned = Instant::now();
            daemon.spawn();
            let took = spawned.elapsed();
            let status = control::query(&daemon.control_socket)?;
            ensure!(
                status.policy.groups == groups,
                "READY=1 before the fleet was in force: {:?}",
                status.policy
            );
            let exit = daemon.stop();
            ensure!(exit.success(), "the daemon exited with {exit}");
            eprintln!("{kind} {i}: {:.0} ms", took.as_secs_f64() * 1e3);
            samples.push(took);
        }
    }
    eprintln!("the daemon's log:\n{}", daemon.logs());
    Ok((cold, restart))
}

/// The daemon, prepared (not started) in `ns` on a veth of its own, with
/// the fleet's base policy in its policy directory.
fn on_fleet(binary: &Path, ns: &Namespace, changes: &Changes) -> Result<Daemon> {
    ns.ip(&[
        "link", "add", "dev0", "type", "veth", "peer", "name", "dev1",
    ])?;
    let mut daemon = Daemon::prepare(ns, "benchfleet", &["dev0"], "", &[]);
    daemon.binary = binary.to_path_buf();
    let dir = &daemon.policy_dir;
    std::fs::create_dir_all(dir.join("groups"))?;
    write_all(dir, &changes.files(0))?;
    Ok(daemon)
}

/// What the daemon logs when a generation comes into force
/// (`reload/procedure.rs`), followed by its entries and map writes.
const IN_FORCE: &str = "in force (commit";

fn generations_in_force(logs: &str) -> usize {
    logs.lines().filter(|l| l.contains(IN_FORCE)).count()
}

/// The `N map writes` of a generation's log line.
fn map_writes(line: &str) -> Option<u64> {
    let (before, _) = line.split_once(" map writes")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Times one kind of change against the running daemon.
struct Timer<'a> {
    daemon: &'a Daemon,
    total: Samples,
    reload: Samples,
    splits: usize,
}

impl<'a> Timer<'a> {
    fn new(daemon: &'a Daemon) -> Timer<'a> {
        Timer {
            daemon,
            total: Samples::default(),
            reload: Samples::default(),
            splits: 0,
        }
    }

    /// Makes `change` and waits for the generation after it, which must
    /// have `groups` groups; records the time if `counted`. `may_split`:
    /// then waits on for a further generation (see the module doc).
    fn time(
        &mut self,
        counted: bool,
        groups: usize,
        may_split: bool,
        change: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        // The previous change's background work is done (module doc).
        std::thread::sleep(GAP);
        let before = self.status()?.policy.generation;
        let start = Instant::now();
        change()?;
        let (mut at, mut status) = self
            .next_generation(before, start + PATIENCE)?
            .context("no new generation in time")?;
        if may_split {
            let settle = (2 * (at - start)).max(Duration::from_millis(200));
            while let Some(later) = self.next_generation(status.policy.generation, at + settle)? {
                (at, status) = later;
                self.splits += usize::from(counted);
            }
        }
        ensure!(
            status.policy.groups == groups,
            "{} groups in force, expected {groups}",
            status.policy.groups
        );
        if counted {
            self.total.push(at - start);
            // The status names a generation and the reload that made it
            // in one write.
            let reload = status.last_reload.as_ref().map_or(0.0, |r| r.duration_ms);
            self.reload.push(Duration::from_secs_f64(reload / 1e3));
        }
        Ok(())
    }

    /// Polls until the generation is past `after` (when and what the
    /// status said); `None` at `deadline`; fails on a failed reload.
    fn next_generation(&self, after: u64, deadline: Instant) -> Result<Option<(Instant, Status)>> {
        loop {
            let status = self.status()?;
            let now = Instant::now();
            if status.policy.generation > after {
                return Ok(Some((now, status)));
            }
            if let Some(reload) = status.last_reload.as_ref().filter(|r| !r.success) {
                bail!("the daemon's reload failed: {:?}", reload.errors);
            }
            if now > deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    fn status(&self) -> Result<Status> {
        control::query(&self.daemon.control_socket).context("status")
    }

    fn done(self, name: &'static str) -> DaemonKind {
        DaemonKind {
            name,
            total: self.total,
            reload: self.reload,
            splits: self.splits,
        }
    }
}
