//! The dataplane as the controller sees it: load (or adopt) the BPF object,
//! install compiled policies atomically, attach to interfaces, read counters.
//!
//! # Atomic install
//! Policy tables are double-buffered (see `tollgate-common`). `install`
//! writes the inactive slot — only the entries that differ from what it
//! holds — then flips `TG_ACTIVE` to the next policy generation (its low
//! bit is the slot) with one 4-byte store. The remembered verdicts of allowed
//! flows (`TG_FLOWS`) are keyed by generation, so the flip retires them all
//! without a flush. A slot that was
//! active is written only after an RCU grace period (an update of the
//! `TG_GRACE` array-of-maps returns only after one), so no packet that
//! started under the old policy can see the slot change under it. `install`
//! waits for it right after its flip, when the new policy is already live,
//! so the next install can write at once.

pub mod attach;
mod bpf_obj;
pub mod counters;
pub mod events;
pub mod layout;
pub mod records;
pub mod slots;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, ArrayOfMaps, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use tollgate_common::{
    Counter, MAP_ACTIVE, MAP_COUNTER_OWNERS, MAP_COUNTERS, MAP_DESTINATIONS, MAP_DEVICE_EXACT,
    MAP_DEVICE_PREFIX, MAP_EVENTS, MAP_FLOWS, MAP_FRAGMENTS, MAP_GATEWAY, MAP_GRACE, MAP_GROUPS,
    MAP_PASS_ETHERTYPES, MAP_RULESETS, MAP_SETTINGS, MAP_STATS, PROG_TC, PROG_TC_IP, PROG_XDP,
    PROG_XDP_IP, PROGRAMS, Settings, Stat,
};

pub use self::attach::{Adoption, AttachMode, Attachment};
use self::{
    counters::CounterRegistry,
    layout::Pinned,
    slots::{PolicyMaps, SlotImage, WriteStats},
};
use crate::{
    config::{AttachPolicy, DenyEventsConfig, Limits},
    links::{Link, LinkKind},
    tables::{CompiledPolicy, CounterOwner},
};

/// The BPF object built by `build.rs` from `ebpf/program`.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tollgate"));

/// XDP return codes (`enum xdp_action`), as `BPF_PROG_TEST_RUN` reports them.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// TC return codes: pass to the next filter / drop.
pub const TC_ACT_UNSPEC: u32 = -1i32 as u32;
pub const TC_ACT_SHOT: u32 = 2;

/// How to open the dataplane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Pin maps, programs and links here (bpffs) so they outlive us and a
    /// later run adopts them. `None`: everything goes when we do (tests).
    pub pin_dir: Option<PathBuf>,
    pub limits: Limits,
    pub deny_events: DenyEventsConfig,
    /// Non-IP EtherTypes to pass on Ethernet links (`pass-ethertypes`).
    pub pass_ethertypes: Vec<u16>,
}

/// How `open` found the pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// No previous run: new maps.
    Fresh,
    /// A previous run's maps (policy in force, counters) were adopted.
    Adopted,
    /// A previous run used another layout: new maps; its links keep
    /// filtering with its program until `attach` swaps ours in.
    Upgraded { reason: String },
}

/// What one `install` did.
#[derive(Clone, Copy, Debug)]
pub struct InstallReport {
    pub slot: u8,
    pub writes: WriteStats,
    /// Waiting for packets to leave the old slot, after the flip (so not
    /// part of `total`).
    pub grace: Duration,
    /// From the start of the install to the flip: when the policy is live.
    pub total: Duration,
}

pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    start: Start,
    active: Array<MapData, u32>,
    /// What `TG_ACTIVE` holds: the generation in force; its low bit is the
    /// slot packets read.
    generation: u32,
    policy: PolicyMaps,
    counters: CounterRegistry,
    stats: PerCpuArray<MapData, Counter>,
    grace: ArrayOfMaps<MapData, Array<MapData, u32>>,
    grace_inner: Array<MapData, u32>,
    /// True from a flip until the next grace period has passed.
    grace_pending: bool,
    events: Option<RingBuf<MapData>>,
    /// What each slot holds; `None` until read back (after a restart).
    slots: [Option<SlotImage>; 2],
    /// Kernel counter of each logical counter of the installed policy.
    installed_counters: Vec<u32>,
    attachments: Vec<Attachment>,
    /// The programs a previous run pinned.
    previous_programs: Vec<attach::ProgramIdentity>,
    /// Every map's `max_entries`, as `layout::specs` sizes it.
    capacities: Vec<(&'static str, u32)>,
}

/// How full one map is (`tollgate_map_entries` / `tollgate_map_capacity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapUsage {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

/// The maps whose fill is reported: the policy maps (both slots) and
/// counters, from what the controller installed, and the LRU caches the
/// program fills, by counting their keys.
pub const REPORTED_MAPS: [&str; 8] = [
    MAP_DEVICE_EXACT,
    MAP_GATEWAY,
    MAP_DEVICE_PREFIX,
    MAP_DESTINATIONS,
    MAP_RULESETS,
    MAP_COUNTERS,
    MAP_FLOWS,
    MAP_FRAGMENTS,
];

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("BPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

impl Dataplane {
    /// Loads the program and its maps, adopting a previous run's pins.
    pub fn open(options: &Options) -> Result<Dataplane> {
        options.limits.validate().map_err(|e| anyhow!(e))?;
        let mut start = Start::Fresh;
        if let Some(dir) = &options.pin_dir {
            ensure_bpffs(dir)?;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("create pin directory {}", dir.display()))?;
            match layout::check_pins(dir, &options.limits)? {
                Pinned::Absent => {}
                Pinned::Compatible => start = Start::Adopted,
                Pinned::Incompatible(reason) => {
                    // The old program keeps its maps alive through its links
                    // until `attach` replaces it; only the names go now.
                    for spec in layout::specs(&options.limits) {
                        let _ = std::fs::remove_file(dir.join(spec.name));
                    }
                    start = Start::Upgraded { reason };
                }
            }
        }

        let mut loader = EbpfLoader::new();
        let specs = layout::specs(&options.limits);
        let pins: Vec<(&str, PathBuf)> = match &options.pin_dir {
            Some(dir) => specs.iter().map(|s| (s.name, dir.join(s.name))).collect(),
            None => Vec::new(),
        };
        for spec in specs.iter().filter(|s| s.sized_by_config) {
            loader.map_max_entries(spec.name, spec.max_entries);
        }
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(PROGRAM_OBJECT).context("load BPF object")?;
        for name in [PROG_XDP, PROG_XDP_IP] {
            let xdp: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("no program {name}"))?
                .try_into()?;
            xdp.load().with_context(|| format!("verify {name}"))?;
        }
        for name in [PROG_TC, PROG_TC_IP] {
            let tc: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("no program {name}"))?
                .try_into()?;
            tc.load().with_context(|| format!("verify {name}"))?;
        }
        // What the previous run pinned, to recognise its programs on links
        // (listing all loaded programs would need CAP_SYS_ADMIN).
        let mut previous_programs = Vec::new();
        if let Some(dir) = &options.pin_dir {
            for name in PROGRAMS {
                let path = dir.join(name);
                if let Ok(identity) = attach::ProgramIdentity::pinned(&path) {
                    previous_programs.push(identity);
                }
                let _ = std::fs::remove_file(&path);
                ebpf.program_mut(name)
                    .expect("loaded above")
                    .pin(&path)
                    .with_context(|| format!("pin {}", path.display()))?;
            }
        }

        let active: Array<MapData, u32> = take(&mut ebpf, MAP_ACTIVE)?;
        let generation = active.get(&0, 0)?;
        let active_slot = (generation & 1) as u8;
        let policy = PolicyMaps {
            groups: take(&mut ebpf, MAP_GROUPS)?,
            device_exact: take(&mut ebpf, MAP_DEVICE_EXACT)?,
            gateway: take(&mut ebpf, MAP_GATEWAY)?,
            device_prefixes: take(&mut ebpf, MAP_DEVICE_PREFIX)?,
            destinations: take(&mut ebpf, MAP_DESTINATIONS)?,
            rulesets: take(&mut ebpf, MAP_RULESETS)?,
            records_per_slot: options.limits.rule_records,
        };
        let counters = CounterRegistry::adopt(
            take(&mut ebpf, MAP_COUNTER_OWNERS)?,
            take(&mut ebpf, MAP_COUNTERS)?,
            usize::from(active_slot),
        )?;
        let mut settings: Array<MapData, Settings> = take(&mut ebpf, MAP_SETTINGS)?;
        settings.set(0, runtime_settings(options), 0)?;
        let mut ethertypes: HashMap<MapData, u16, u8> = take(&mut ebpf, MAP_PASS_ETHERTYPES)?;
        // Pinned with the rest: what an earlier configuration passed goes.
        let old: Vec<u16> = ethertypes.keys().collect::<Result<_, _>>()?;
        for t in old.iter().filter(|t| !options.pass_ethertypes.contains(t)) {
            ethertypes.remove(t)?;
        }
        for t in &options.pass_ethertypes {
            ethertypes
                .insert(t, 1, 0)
                .with_context(|| format!("pass-ethertypes {t:#06x}"))?;
        }
        let slots = if start == Start::Adopted {
            [None, None]
        } else {
            [Some(SlotImage::default()), Some(SlotImage::default())]
        };
        Ok(Dataplane {
            stats: take(&mut ebpf, MAP_STATS)?,
            grace: take(&mut ebpf, MAP_GRACE)?,
            grace_inner: Array::create(1, 0).context("create TG_GRACE inner map")?,
            events: Some(take(&mut ebpf, MAP_EVENTS)?),
            ebpf,
            pin_dir: options.pin_dir.clone(),
            start,
            active,
            generation,
            policy,
            counters,
            // A previous run may have flipped just before it died.
            grace_pending: true,
            slots,
            installed_counters: Vec::new(),
            attachments: Vec::new(),
            previous_programs,
            capacities: layout::specs(&options.limits)
                .iter()
                .map(|s| (s.name, s.max_entries))
                .collect(),
        })
    }

    /// How full the [`REPORTED_MAPS`] are. The policy maps count the
    /// entries of both slots as installed (a slot not known since an
    /// adoption is read back once, as the next install would); the LRU
    /// caches are walked key by key (one syscall per entry: about
    /// `limits.flow-cache` + `limits.fragments` syscalls when full).
    pub fn map_usage(&mut self) -> Result<Vec<MapUsage>> {
        for slot in 0..2u8 {
            if self.slots[usize::from(slot)].is_none() {
                let image = self
                    .policy
                    .read_slot(slot)
                    .with_context(|| format!("read back slot {slot}"))?;
                self.slots[usize::from(slot)] = Some(image);
            }
        }
        let images: Vec<&SlotImage> = self.slots.iter().flatten().collect();
        let sum = |f: fn(&SlotImage) -> usize| images.iter().map(|i| f(i) as u64).sum::<u64>();
        let mut usage = Vec::with_capacity(REPORTED_MAPS.len());
        for map in REPORTED_MAPS {
            let entries = match map {
                MAP_DEVICE_EXACT => sum(|i| i.device_exact.len()),
                MAP_GATEWAY => sum(|i| i.gateway.len()),
                MAP_DEVICE_PREFIX => sum(|i| i.device_prefixes.len()),
                MAP_DESTINATIONS => sum(|i| i.destinations.len()),
                MAP_RULESETS => sum(|i| i.records.len()),
                MAP_COUNTERS => self.counters.in_use() as u64,
                _ => self.count_keys(map)?,
            };
            let capacity = self
                .capacities
                .iter()
                .find(|(name, _)| *name == map)
                .map_or(0, |(_, c)| u64::from(*c));
            // A walk of a cache the program changes meanwhile may restart
            // (its current key evicted) and count some keys twice.
            let entries = entries.min(capacity);
            usage.push(MapUsage {
                map,
                entries,
                capacity,
            });
        }
        Ok(usage)
    }

    /// Entries of an LRU hash map the object still holds, counted key by
    /// key.
    fn count_keys(&self, name: &str) -> Result<u64> {
        fn count<K: aya::Pod, V: aya::Pod>(map: &aya::maps::Map) -> Result<u64> {
            count_entries(&HashMap::<&MapData, K, V>::try_from(map)?)
        }
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("BPF object has no map {name}"))?;
        match name {
            MAP_FLOWS => count::<tollgate_common::FlowKey, tollgate_common::Allowed>(map),
            MAP_FRAGMENTS => {
                count::<tollgate_common::FragmentKey, tollgate_common::FragmentVerdict>(map)
            }
            _ => bail!("map {name} is not counted key by key"),
        }
        .with_context(|| format!("count the entries of {name}"))
    }

    pub fn start(&self) -> &Start {
        &self.start
    }

    /// Makes `policy` the one every packet sees, in one step.
    pub fn install(&mut self, policy: &CompiledPolicy) -> Result<InstallReport> {
        let begin = Instant::now();
        // Wrapping keeps the parity alternating: 2^32 is even.
        let generation = self.generation.wrapping_add(1);
        let slot = (generation & 1) as u8;
        // Normally the last install waited already; not after an adoption
        // (a previous run may have flipped just before it died) or a wait
        // that failed.
        if self.grace_pending {
            self.wait_grace_period()?;
        }
        let indices = self.counters.assign(usize::from(slot), &policy.counters)?;
        let mut current = match self.slots[usize::from(slot)].take() {
            Some(image) => image,
            None => self
                .policy
                .read_slot(slot)
                .context("read back the inactive slot")?,
        };
        let target = match SlotImage::build(
            slot,
            policy,
            &indices,
            &current,
            self.policy.records_per_slot,
        ) {
            Ok(target) => target,
            Err(e) => {
                self.slots[usize::from(slot)] = Some(current);
                return Err(e);
            }
        };
        let result = self.policy.write_slot(slot, &mut current, &target);
        self.slots[usize::from(slot)] = Some(current);
        let writes = result?;

        self.active
            .set(0, generation, 0)
            .context("flip TG_ACTIVE")?;
        let total = begin.elapsed();
        self.generation = generation;
        self.grace_pending = true;
        self.installed_counters = indices;
        // Packets that started before the flip may still be reading the old
        // slot. Wait for them now, when the new policy is already live,
        // rather than at the start of the next install, which would then
        // take that long to make its policy live. The flip is done: a
        // failed wait is only retried then.
        let waited = Instant::now();
        let grace = match self.wait_grace_period() {
            Ok(()) => waited.elapsed(),
            Err(e) => {
                tracing::warn!("{e:#}; the next install waits instead");
                Duration::ZERO
            }
        };
        Ok(InstallReport {
            slot,
            writes,
            grace,
            total,
        })
    }

    /// Blocks until every program run that started before now has ended.
    fn wait_grace_period(&mut self) -> Result<()> {
        self.grace
            .set(0, &self.grace_inner, 0)
            .context("update TG_GRACE (RCU grace period)")?;
        self.grace_pending = false;
        Ok(())
    }

    /// The policy generation in force (what `TG_ACTIVE` holds).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The slot packets read now.
    pub fn active_slot(&self) -> u8 {
        (self.generation & 1) as u8
    }

    /// Kernel counter index of logical counter `logical` of the installed
    /// policy.
    pub fn counter_index(&self, logical: u32) -> Option<u32> {
        self.installed_counters.get(logical as usize).copied()
    }

    /// The counter of `owner`, while a loaded policy (either slot)
    /// references it.
    pub fn counter_of(&self, owner: &CounterOwner) -> Result<Option<Counter>> {
        self.counters
            .index_of(owner)
            .map(|i| self.counters.read(i))
            .transpose()
    }

    /// Sums a kernel counter over all CPUs.
    pub fn counter(&self, index: u32) -> Result<Counter> {
        self.counters.read(index)
    }

    /// Sums the per-CPU statistic `stat`.
    pub fn stat(&self, stat: Stat) -> Result<Counter> {
        let per_cpu = self.stats.get(&(stat as u32), 0)?;
        Ok(counters::sum(per_cpu.iter()))
    }

    /// The deny-event ring buffer; it can be taken once.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Attaches to `link` (in the calling thread's network namespace) with
    /// the program variant of its link kind. A link of a type Tollgate
    /// cannot parse is refused, naming the type.
    pub fn attach(&mut self, link: &Link, policy: AttachPolicy) -> Result<Attachment> {
        let kind = link.kind()?;
        let attachment = attach::attach(
            &mut self.ebpf,
            self.pin_dir.as_deref(),
            (&link.name, link.index, kind),
            AttachMode::candidates(policy, kind)?,
            &self.previous_programs,
        )?;
        self.attachments.retain(|a| a.interface != link.name);
        self.attachments.push(attachment.clone());
        Ok(attachment)
    }

    /// Attaches to the interface called `name` (see [`Dataplane::attach`]).
    pub fn attach_by_name(&mut self, name: &str, policy: AttachPolicy) -> Result<Attachment> {
        let link = crate::links::find(name)?
            .ok_or_else(|| anyhow!("no interface {name} in this network namespace"))?;
        self.attach(&link, policy)
    }

    /// Forgets the attachment to `interface`, which is gone or must not be
    /// filtered by the wrong variant, and removes its pinned links.
    pub fn forget(&mut self, interface: &str) -> Result<()> {
        self.attachments.retain(|a| a.interface != interface);
        if let Some(dir) = &self.pin_dir {
            for (_, path) in attach::pinned_links(dir, interface)? {
                attach::unpin(&path)?;
            }
        }
        Ok(())
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Detaches from every interface and removes all pins: filtering stops
    /// (links attached without pins go when `self` drops).
    pub fn detach_all(&mut self) -> Result<()> {
        self.attachments.clear();
        match self.pin_dir.take() {
            Some(dir) => remove_pins(&dir),
            None => Ok(()),
        }
    }

    /// Runs the Ethernet XDP program once on `frame` (`BPF_PROG_TEST_RUN`).
    pub fn test_run_xdp(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        self.test_run_xdp_on(LinkKind::Ethernet, frame, repeat)
    }

    /// Runs the XDP program of `kind` once on `frame`: an Ethernet frame,
    /// or for [`LinkKind::Ip`] a packet starting at its IP header.
    pub fn test_run_xdp_on(
        &self,
        kind: LinkKind,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration)> {
        let name = AttachMode::XdpGeneric.program(kind);
        let xdp: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?;
        let r = xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok((r.return_value, r.duration))
    }

    /// Runs the TC program once on `frame` (`BPF_PROG_TEST_RUN`).
    pub fn test_run_tc(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let tc: &SchedClassifier = self
            .ebpf
            .program(PROG_TC)
            .ok_or_else(|| anyhow!("no program {PROG_TC}"))?
            .try_into()?;
        let r = tc.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok((r.return_value, r.duration))
    }
}

/// Entries of a hash map, counted key by key: one `BPF_MAP_GET_NEXT_KEY`
/// syscall each (about 2 µs: 150 ms for a full TG_FLOWS and TG_FRAGS at
/// their default sizes, 81,920 entries, in a debug build).
fn count_entries<T: std::borrow::Borrow<MapData>, K: aya::Pod, V: aya::Pod>(
    map: &HashMap<T, K, V>,
) -> Result<u64> {
    let mut n = 0u64;
    for key in map.keys() {
        key?;
        n += 1;
    }
    Ok(n)
}

/// Removes everything a run pinned in `dir`: links (which detaches them),
/// programs and maps.
pub fn remove_pins(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        std::fs::remove_file(&path).with_context(|| format!("unpin {}", path.display()))?;
    }
    match std::fs::remove_dir(dir) {
        // A directory the system provides stays, empty: under the systemd
        // unit the controller runs as an unprivileged user that may not
        // write bpffs's root (tmpfiles.d creates the directory for it), and
        // ReadWritePaths= makes it a mount point (EBUSY). With every pin
        // gone, filtering has stopped either way.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EBUSY | libc::EROFS)
            ) =>
        {
            Ok(())
        }
        r => r.with_context(|| format!("remove {}", dir.display())),
    }
}

/// The program's runtime knobs: the deny-event limiter and the fragment
/// cache's lifetime and per-source quota.
fn runtime_settings(options: &Options) -> Settings {
    let (event_interval_ns, event_burst_ns) = event_rate(&options.deny_events);
    Settings {
        event_interval_ns,
        event_burst_ns,
        fragment_lifetime_ns: options.limits.fragment_lifetime.as_nanos() as u64,
        fragments_per_source: options.limits.fragments_per_source,
        _pad: 0,
    }
}

/// (interval, burst) in nanoseconds; (0, 0) disables deny events.
fn event_rate(config: &DenyEventsConfig) -> (u64, u64) {
    if config.rate == 0 {
        return (0, 0);
    }
    let interval = 1_000_000_000 / u64::from(config.rate);
    let burst = u64::from(config.burst.unwrap_or(config.rate).max(1));
    (interval.max(1), interval * (burst - 1))
}

/// bpffs must be mounted where we pin. When it is not, mount it the way
/// systemd would — but only in the host's mount namespace: a bpffs mounted
/// in a private one (as under `ip netns exec`, which remounts /sys) dies
/// with this process, and pinned links with it.
fn ensure_bpffs(dir: &Path) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        bail!("pin-dir {} is not under /sys/fs/bpf (bpffs)", dir.display());
    }
    let is_bpffs = || -> bool {
        let Ok(path) = std::ffi::CString::new("/sys/fs/bpf") else {
            return false;
        };
        // SAFETY: statfs writes into the zeroed struct we own.
        unsafe {
            let mut s: libc::statfs = std::mem::zeroed();
            libc::statfs(path.as_ptr(), &mut s) == 0 && s.f_type as i64 == BPF_FS_MAGIC
        }
    };
    if is_bpffs() {
        return Ok(());
    }
    let own = std::fs::read_link("/proc/self/ns/mnt").ok();
    let host = std::fs::read_link("/proc/1/ns/mnt").ok();
    if own.is_none() || own != host {
        bail!(
            "/sys/fs/bpf is not bpffs in this mount namespace, and a bpffs mounted here would \
             vanish with this process (taking the pinned links, i.e. filtering, with it). \
             Under `ip netns exec` (which remounts /sys), use `tollgate run --netns NAME` instead."
        );
    }
    tracing::info!("mounting bpffs at /sys/fs/bpf");
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .context("run mount")?;
    if !status.success() || !is_bpffs() {
        bail!("bpffs is not mounted at /sys/fs/bpf and mounting it failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What counting a full LRU cache costs a scrape: TG_FLOWS at its
    /// default size (65,536) plus TG_FRAGS (16,384). Needs CAP_BPF.
    #[test]
    fn counting_full_caches_key_by_key() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let sizes = [
            tollgate_common::DEFAULT_FLOWS,
            tollgate_common::DEFAULT_FRAGMENTS,
        ];
        let mut maps = Vec::new();
        for size in sizes {
            // Keys of TG_FLOWS's size; the count does not read values.
            let mut map =
                HashMap::<MapData, [u8; size_of::<tollgate_common::FlowKey>()], u64>::create(
                    size, 0,
                )
                .unwrap();
            for i in 0..size {
                let mut key = [0u8; size_of::<tollgate_common::FlowKey>()];
                key[..4].copy_from_slice(&i.to_le_bytes());
                map.insert(key, u64::from(i), 0).unwrap();
            }
            maps.push(map);
        }
        let started = Instant::now();
        let total: u64 = maps.iter().map(|m| count_entries(m).unwrap()).sum();
        let took = started.elapsed();
        assert_eq!(total, sizes.iter().map(|s| u64::from(*s)).sum::<u64>());
        eprintln!("counted {total} entries in {took:?}");
    }
}
