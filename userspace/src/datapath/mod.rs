//! The dataplane as the controller sees it: load (or adopt) the BPF object,
//! install compiled policies atomically, attach to interfaces, read counters.
//!
//! # Atomic install
//! Policy tables are double-buffered (see `tollgate-common`). `install`
//! writes the inactive slot — only the entries that differ from what it
//! holds — then flips `TG_ACTIVE` to the next policy generation (its low
//! bit is the slot) with one 4-byte store. The remembered verdicts of
//! allowed first fragments (`TG_FRAGS`) are keyed by generation, so the flip
//! retires them all without a flush. A slot that was
//! active is written only after an RCU grace period (an update of the
//! `TG_GRACE` array-of-maps returns only after one), so no packet that
//! started under the old policy can see the slot change under it. The wait
//! comes after the flip, when the new policy is already live
//! ([`Dataplane::settle`]), so neither the new policy nor the next install
//! waits for it; a stage that finds it not yet done waits then.
//!
//! The install comes in two halves, [`Dataplane::stage`] (write the
//! inactive slot) and [`Dataplane::flip`], so that the controller can run
//! the policy's `expect:` cases on the staged slot in between
//! ([`Dataplane::probe`]) and refuse to flip when one fails.
//!
//! # Files
//! `open.rs` loads or adopts, `adopt.rs` reads the slots back for the
//! first install after an adoption, `slots/` builds and writes a slot,
//! `attach.rs` attaches, `counters.rs` keeps each counter's kernel index,
//! `usage.rs` reports how full the maps are, `pins.rs` looks after bpffs,
//! `test_run.rs` runs the programs on a frame, `probe.rs` runs the probe
//! on a staged slot (with frames from `probe_frame.rs`), `ntp_fast.rs` hands out the NTP fast path's maps and decodes its samples;
//! this file holds
//! the [`Dataplane`] and its atomic install.

mod adopt;
pub mod attach;
mod bitmap;
mod bpf_obj;
pub mod counters;
pub mod events;
mod hooks;
pub use hooks::LateHooks;
pub mod layout;
pub mod learned;
mod learned_bits;
mod ntp_fast;
mod open;
mod pins;
mod probe;
pub mod probe_frame;
pub mod records;
pub mod slots;
mod test_run;
mod usage;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, ArrayOfMaps, MapData, PerCpuArray, RingBuf},
};
use tollgate_common::{Counter, ProbeResult, RateBucket, Stat};

pub use self::{
    attach::{Adoption, AttachMode, Attachment},
    ntp_fast::{FastSample, NtpFastMaps, decode_sample},
    pins::remove_pins,
    probe::Probed,
    slots::SlotContents,
    usage::{MapUsage, REPORTED_MAPS},
};
use self::{
    counters::CounterRegistry,
    learned::{Learned, LearnedAddress, Refused},
    slots::{GroupIds, PolicyMaps, SlotImage, WriteStats},
};
use crate::{
    config::{AttachPolicy, DenyEventsConfig, Limits, RejectRepliesConfig},
    links::Link,
    tables::{CompiledPolicy, CounterOwner},
};

/// The BPF object built by `build.rs` from `ebpf/program`.
pub static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tollgate"));

/// An address as the maps store it (a family tag, and IPv4 in the first 4
/// of 16 bytes) as an `IpAddr`; any tag but IPv4's reads as IPv6.
pub(crate) fn address_of(family: u8, bytes: [u8; 16]) -> std::net::IpAddr {
    if family == tollgate_common::FAMILY_V4 {
        std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()
    } else {
        std::net::Ipv6Addr::from(bytes).into()
    }
}

/// XDP return codes (`enum xdp_action`), as `BPF_PROG_TEST_RUN` reports them.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
/// TC return codes: pass to the next filter / drop / redirect (a reply sent
/// back out of the interface).
pub const TC_ACT_UNSPEC: u32 = -1i32 as u32;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// How to open the dataplane.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Pin maps, programs and links here (bpffs) so they outlive us and a
    /// later run adopts them. `None`: everything goes when we do (tests).
    pub pin_dir: Option<PathBuf>,
    pub limits: Limits,
    pub deny_events: DenyEventsConfig,
    pub reject_replies: RejectRepliesConfig,
    /// Non-IP EtherTypes to pass on Ethernet links (`pass-ethertypes`).
    pub pass_ethertypes: Vec<u16>,
    /// The hook programs (`PROG_XDP`, `PROG_XDP_IP`, `PROG_TC`,
    /// `PROG_TC_IP`) to verify in `open`; `None`: all four. The others are
    /// verified by the attach that needs them or by
    /// [`Dataplane::late_hooks`] (see `hooks.rs`).
    pub hooks_at_open: Option<Vec<&'static str>>,
    /// Every trie narrow (4-bit nodes), as the controller makes them when a
    /// slot has no room for wide ones: for the tests that must run the
    /// kernel's narrow walk, and for comparison. `false`: wide wherever
    /// the slot has room.
    pub narrow_tries: bool,
    /// No trie with a big root (16 bits), as the controller makes them when
    /// a slot has no room for those: for the tests that must run the
    /// kernel's walk of a wide trie with an 8-bit root. `false`: big roots
    /// wherever the slot has room (and `narrow_tries` is not set).
    pub small_roots: bool,
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
    /// part of `total`); zero from [`Dataplane::flip`], which leaves that
    /// wait to [`Dataplane::settle`].
    pub grace: Duration,
    /// From the start of the install to the flip: when the policy is live.
    pub total: Duration,
}

/// A policy written into the inactive slot by [`Dataplane::stage`], not
/// yet live.
#[derive(Debug)]
pub struct Staged {
    begin: Instant,
    /// The generation the flip will write (its low bit is the slot).
    generation: u32,
    /// Kernel counter of each logical counter of the staged policy.
    indices: Vec<u32>,
    writes: WriteStats,
    /// The slot staged is the active one, which held the policy already
    /// (`adopt.rs`): the flip has nothing to flip.
    in_force: bool,
}

impl Staged {
    pub fn slot(&self) -> u8 {
        (self.generation & 1) as u8
    }

    /// What staging wrote.
    pub fn writes(&self) -> WriteStats {
        self.writes
    }
}

pub struct Dataplane {
    /// The BPF object: its programs, and the maps no field holds. Locked
    /// apart from the dataplane, so that verifying a hook after READY=1
    /// (`hooks.rs`, up to half a second) does not hold up a reload, a
    /// scrape or the deny log.
    object: Arc<Mutex<Ebpf>>,
    pin_dir: Option<PathBuf>,
    start: Start,
    active: Array<MapData, u32>,
    /// What `TG_ACTIVE` holds: the generation in force; its low bit is the
    /// slot packets read.
    generation: u32,
    policy: PolicyMaps,
    counters: CounterRegistry,
    stats: PerCpuArray<MapData, Counter>,
    /// The deny-event and reject-reply limiters, which count their own
    /// refusals (`EventsSuppressed`, `RejectLimited`).
    event_limiter: PerCpuArray<MapData, RateBucket>,
    reject_limiter: PerCpuArray<MapData, RateBucket>,
    grace: ArrayOfMaps<MapData, Array<MapData, u32>>,
    grace_inner: Array<MapData, u32>,
    /// True from a flip until the next grace period has passed.
    grace_pending: bool,
    /// Whether the deny events' ring was handed to its reader.
    events_taken: bool,
    /// The probe's generation and its last decision (`probe.rs`).
    probe_generation: Array<MapData, u32>,
    probe_result: Array<MapData, ProbeResult>,
    /// What each slot holds; `None` until read back (after a restart).
    slots: [Option<SlotImage>; 2],
    /// The kernel id of each group in each slot, stable across installs.
    group_ids: GroupIds,
    /// Kernel counter of each logical counter of the installed policy.
    installed_counters: Vec<u32>,
    attachments: Vec<Attachment>,
    /// `ntp.fast-path-virtual`: native XDP on a veth answers NTP too.
    ntp_fast_virtual: bool,
    /// The programs a previous run pinned.
    previous_programs: Vec<attach::ProgramIdentity>,
    /// Every map's `max_entries`, as `layout::specs` sizes it.
    capacities: Vec<(&'static str, u32)>,
    /// The addresses the DNS forwarder learned (`TG_LEARNED`).
    learned: Learned,
}

impl Dataplane {
    pub fn start(&self) -> &Start {
        &self.start
    }

    /// Makes `policy` the one every packet sees, in one step: [`stage`],
    /// [`flip`], then [`settle`].
    ///
    /// [`stage`]: Dataplane::stage
    /// [`flip`]: Dataplane::flip
    /// [`settle`]: Dataplane::settle
    pub fn install(&mut self, policy: &CompiledPolicy) -> Result<InstallReport> {
        let staged = self.stage(policy)?;
        let report = self.flip(staged)?;
        Ok(InstallReport {
            grace: self.settle(),
            ..report
        })
    }

    /// Writes `policy` into the inactive slot, where no packet reads it yet:
    /// [`Dataplane::probe`] can try it, [`Dataplane::flip`] makes it live.
    /// Dropping the result instead leaves the slot unused; the next stage
    /// writes over it.
    pub fn stage(&mut self, policy: &CompiledPolicy) -> Result<Staged> {
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
        if let Some(staged) = self.stage_in_force(policy, begin)? {
            return Ok(staged);
        }
        let mut current = match self.slots[usize::from(slot)].take() {
            Some(image) => image,
            None => self.read_back(slot, policy).context("the inactive slot")?,
        };
        let assigned =
            self.counters
                .assign(usize::from(slot), &policy.counters, &policy.group_spans);
        let indices = match assigned {
            Ok(indices) => indices,
            Err(e) => {
                self.slots[usize::from(slot)] = Some(current);
                return Err(e);
            }
        };
        let group_ids = self.group_ids.assign(slot, &policy.groups);
        let target = match SlotImage::build(
            slot,
            policy,
            &indices,
            &group_ids,
            &current,
            self.policy.records_per_slot,
            self.policy.largest_trie,
        ) {
            Ok(target) => target,
            Err(e) => {
                self.slots[usize::from(slot)] = Some(current);
                return Err(e);
            }
        };
        let result = self.policy.write_slot(slot, &mut current, target);
        // After a failed write the slot is read back before the next one:
        // the kernel, not our record of the batches, says what it holds.
        self.slots[usize::from(slot)] = result.is_ok().then_some(current);
        let writes = result?;
        self.learned.stage_slot(slot, policy, &indices)?;
        Ok(Staged {
            begin,
            generation,
            indices,
            writes,
            in_force: false,
        })
    }

    /// Makes the staged policy the one every packet sees, with one store.
    pub fn flip(&mut self, staged: Staged) -> Result<InstallReport> {
        let Staged {
            begin,
            generation,
            indices,
            writes,
            in_force,
        } = staged;
        if in_force && generation == self.generation {
            self.installed_counters = indices;
            return Ok(InstallReport {
                slot: (generation & 1) as u8,
                writes,
                grace: Duration::ZERO,
                total: begin.elapsed(),
            });
        }
        if generation != self.generation.wrapping_add(1) {
            return Err(anyhow!(
                "staged generation {generation} is stale (in force: {})",
                self.generation
            ));
        }
        // What the forwarder learned joins the slot only now, after its
        // `expect:` cases ran on the policy as written.
        self.learned
            .fill_slot((generation & 1) as u8, learned::monotonic_ns())?;
        self.active
            .set(0, generation, 0)
            .context("flip TG_ACTIVE")?;
        let total = begin.elapsed();
        self.generation = generation;
        self.grace_pending = true;
        self.installed_counters = indices;
        Ok(InstallReport {
            slot: (generation & 1) as u8,
            writes,
            grace: Duration::ZERO,
            total,
        })
    }

    /// Waits, after a flip, for the packets that started before it to
    /// leave the old slot, and returns how long that took. The new policy
    /// is live already, so the caller first tells the world (status,
    /// metrics) and then settles, rather than letting the next install
    /// take that long to make its policy live. A failed wait is only
    /// retried by the next stage.
    pub fn settle(&mut self) -> Duration {
        if !self.grace_pending {
            return Duration::ZERO;
        }
        let waited = Instant::now();
        match self.wait_grace_period() {
            Ok(()) => waited.elapsed(),
            Err(e) => {
                tracing::warn!("{e:#}; the next install waits instead");
                Duration::ZERO
            }
        }
    }

    /// Blocks until every program run that started before now has ended.
    fn wait_grace_period(&mut self) -> Result<()> {
        self.grace
            .set(0, &self.grace_inner, 0)
            .context("update TG_GRACE (RCU grace period)")?;
        self.grace_pending = false;
        Ok(())
    }

    /// Nodes of `TG_TRIE` the installed tries of both slots take (slots not
    /// known since an adoption count none).
    pub fn trie_nodes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|image| image.flat.words() / tollgate_common::NODE_WORDS as usize)
            .sum()
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

    /// What `slot` holds, read back from the kernel, by group name,
    /// counter owner and rule list content ([`SlotContents`]).
    pub fn slot_contents(&self, slot: u8) -> Result<SlotContents> {
        let image = self.policy.read_slot(slot)?;
        SlotContents::decode(&image, &self.group_ids.names(slot), |i| {
            self.counters.owner_at(i)
        })
    }

    /// Sums a kernel counter over all CPUs.
    pub fn counter(&self, index: u32) -> Result<Counter> {
        self.counters.read(index)
    }

    /// Sums the per-CPU statistic `stat`. A limiter's refusals are counted
    /// in its bucket (`RateBucket::refused`), packets without bytes.
    pub fn stat(&self, stat: Stat) -> Result<Counter> {
        let limiter = match stat {
            Stat::EventsSuppressed => &self.event_limiter,
            Stat::RejectLimited => &self.reject_limiter,
            _ => {
                let per_cpu = self.stats.get(&(stat as u32), 0)?;
                return Ok(counters::sum(per_cpu.iter()));
            }
        };
        let per_cpu = limiter.get(&0, 0)?;
        Ok(Counter {
            packets: per_cpu.iter().map(|b| b.refused).sum(),
            bytes: 0,
        })
    }

    /// Learns `addr` for the FQDN rule `rule` of `group` until `expires_ns`
    /// (`CLOCK_MONOTONIC`), in the policy in force, from the answer for
    /// `name`. `Ok(Err)` says why it was not learned; `Err` is a failed map
    /// write.
    pub fn learn(
        &mut self,
        (group, rule): (&str, &str),
        addr: std::net::IpAddr,
        name: &str,
        expires_ns: u64,
    ) -> Result<Result<(), Refused>> {
        let slot = self.active_slot();
        self.learned
            .learn(slot, (group, rule), addr, name, expires_ns)
    }

    /// Forgets the learned addresses that expired; returns how many
    /// (group, address) pairs lost a rule.
    pub fn sweep_learned(&mut self) -> Result<usize> {
        let slot = self.active_slot();
        self.learned.sweep(slot, learned::monotonic_ns())
    }

    /// Forgets every learned address: devices must ask the forwarder
    /// again (the differential test starts each policy from none).
    pub fn forget_learned(&mut self) -> Result<()> {
        self.learned.forget_all()
    }

    /// How many times the live learned addresses changed so far (a learn,
    /// an expiry, a forget).
    pub fn learned_changes(&self) -> u64 {
        self.learned.changes()
    }

    /// Every live learned address.
    pub fn learned(&self) -> Vec<LearnedAddress> {
        self.learned.list()
    }

    /// The groups `addr` is learned for, each once.
    pub fn learned_by(&self, addr: std::net::IpAddr) -> Vec<String> {
        let mut groups: Vec<String> = self
            .learned
            .list()
            .into_iter()
            .filter(|l| l.addr == addr)
            .map(|l| l.group)
            .collect();
        groups.dedup();
        groups
    }

    /// How many addresses are learned for each group (an address learned
    /// for two rules counts once).
    pub fn learned_counts(&self) -> std::collections::BTreeMap<String, u64> {
        let mut counts = std::collections::BTreeMap::new();
        let mut last = None;
        // `list` is sorted by group, then address.
        for l in self.learned.list() {
            let key = (l.group, l.addr);
            if last.as_ref() != Some(&key) {
                *counts.entry(key.0.clone()).or_default() += 1;
                last = Some(key);
            }
        }
        counts
    }

    /// What `TG_LEARNED` holds for the slot in force, as the model reads it.
    pub fn learned_destinations(&self) -> Vec<crate::tables::LearnedDestination> {
        self.learned.destinations(self.active_slot())
    }

    /// The deny-event ring buffer, for its one reader (a handle of its
    /// own: see `hooks::duplicate`); it can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        if std::mem::replace(&mut self.events_taken, true) {
            return Err(anyhow!("deny event ring buffer already taken"));
        }
        let map = hooks::duplicate(&self.object(), tollgate_common::MAP_EVENTS)?;
        RingBuf::try_from(map).context("map TG_EVENTS")
    }

    /// Attaches to `link` (in the calling thread's network namespace) with
    /// the program variant of its link kind. A link of a type Tollgate
    /// cannot parse is refused, naming the type.
    pub fn attach(&mut self, link: &Link, policy: AttachPolicy) -> Result<Attachment> {
        let kind = link.kind()?;
        let attachment = attach::attach(
            &mut self.object.lock().expect("BPF object lock"),
            self.pin_dir.as_deref(),
            (&link.name, link.index, kind),
            AttachMode::candidates(policy, kind)?,
            &self.previous_programs,
        )?;
        self.attachments.retain(|a| a.interface != link.name);
        self.attachments.push(attachment.clone());
        self.note_ntp_replies(&attachment)?;
        Ok(attachment)
    }

    /// A handle that verifies the hooks not verified yet without the
    /// dataplane (see [`LateHooks`]).
    pub fn late_hooks(&self) -> LateHooks {
        LateHooks {
            object: Arc::clone(&self.object),
            pin_dir: self.pin_dir.clone(),
        }
    }

    /// The BPF object, locked.
    fn object(&self) -> std::sync::MutexGuard<'_, Ebpf> {
        self.object.lock().expect("BPF object lock")
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
        if let Some(gone) = self.attachments.iter().find(|a| a.interface == interface) {
            self.answer_ntp_on(gone.index, false)?;
        }
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
}
