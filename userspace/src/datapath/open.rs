//! Opening the dataplane: load and verify the programs, adopt what a
//! previous run pinned (or replace a layout that changed), and set the
//! program's runtime knobs.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, ProgramArray},
    programs::{SchedClassifier, Xdp},
};
use tollgate_common::{
    GLOBAL_DEVICE_BUCKETS, MAP_ACTIVE, MAP_COUNTER_OWNERS, MAP_COUNTERS, MAP_DESTINATIONS,
    MAP_DEVICE_EXACT, MAP_DEVICE_PREFIX, MAP_EVENT_LIMITER, MAP_GATEWAY, MAP_GRACE, MAP_GROUPS,
    MAP_LEARNED, MAP_LEARNED_BITS, MAP_NTP_PROG, MAP_NTP_TC, MAP_PASS_ETHERTYPES, MAP_PROBE,
    MAP_PROBE_RESULT, MAP_REJECT_LIMITER, MAP_REJECT_TC, MAP_REJECT_XDP, MAP_RULESETS,
    MAP_SETTINGS, MAP_STATS, MAP_TRIE, MAP_TRIE_ROOTS, PROG_NTP, PROG_NTP_TC, PROG_PROBE,
    PROG_REJECT_TC, PROG_REJECT_XDP, PROGRAMS, ROOTS_PER_SLOT, SLOTS, Settings, TABLE_ENCODING,
    TRIE_WORDS_PER_SLOT,
};

use super::{
    Dataplane, Options, PROGRAM_OBJECT, Start, attach,
    counters::CounterRegistry,
    hooks::{self, verify},
    layout::{self, Pinned},
    learned::Learned,
    pins::ensure_bpffs,
    slots::{DeviceTable, FlatMaps, Geometry, MappedWords, PolicyMaps, Shape, SlotImage},
};

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

        let geometry = Geometry::for_devices(options.limits.device_addresses);
        let buckets = [geometry.v4, geometry.v6];
        let mut loader = EbpfLoader::new();
        loader.override_global(GLOBAL_DEVICE_BUCKETS, &buckets, true);
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
        // What the previous run pinned, to recognise its programs on links
        // (listing all loaded programs would need CAP_SYS_ADMIN): read
        // before a hook of ours takes its pin.
        let mut previous_programs = Vec::new();
        if let Some(dir) = &options.pin_dir {
            for name in PROGRAMS {
                if let Ok(identity) = attach::ProgramIdentity::pinned(&dir.join(name)) {
                    previous_programs.push(identity);
                }
            }
        }
        // Pinned below, once every program of the start is verified.
        let first = options.hooks_at_open.as_deref().unwrap_or(&PROGRAMS);
        for name in first {
            hooks::load_hook(&mut ebpf, name, None)?;
        }
        // The probe is loaded with the rest but never pinned nor attached:
        // it belongs to this process, which alone runs it (see `probe.rs`).
        let probe: &mut Xdp = ebpf
            .program_mut(PROG_PROBE)
            .ok_or_else(|| anyhow!("no program {PROG_PROBE}"))?
            .try_into()?;
        verify(PROG_PROBE, || probe.load())?;
        // The programs the XDP hooks tail-call, each in its table before any
        // packet can look for it there.
        for (program, table) in [(PROG_NTP, MAP_NTP_PROG), (PROG_REJECT_XDP, MAP_REJECT_XDP)] {
            let target: &mut Xdp = ebpf
                .program_mut(program)
                .ok_or_else(|| anyhow!("no program {program}"))?
                .try_into()?;
            verify(program, || target.load())?;
            let target = target.fd()?.try_clone()?;
            let mut slots: ProgramArray<&mut MapData> = ProgramArray::try_from(
                ebpf.map_mut(table)
                    .ok_or_else(|| anyhow!("BPF object has no map {table}"))?,
            )?;
            slots
                .set(0, &target, 0)
                .with_context(|| format!("put {program} into {table}"))?;
        }
        // And those the TC hooks tail-call.
        for (program, table) in [(PROG_NTP_TC, MAP_NTP_TC), (PROG_REJECT_TC, MAP_REJECT_TC)] {
            let target: &mut SchedClassifier = ebpf
                .program_mut(program)
                .ok_or_else(|| anyhow!("no program {program}"))?
                .try_into()?;
            verify(program, || target.load())?;
            let target = target.fd()?.try_clone()?;
            ProgramArray::try_from(
                ebpf.map_mut(table)
                    .ok_or_else(|| anyhow!("BPF object has no map {table}"))?,
            )?
            .set(0, &target, 0)
            .with_context(|| format!("put {program} into {table}"))?;
        }
        if let Some(dir) = &options.pin_dir {
            for name in first {
                hooks::pin_hook(&mut ebpf, name, dir)?;
            }
        }

        let active: Array<MapData, u32> = take(&mut ebpf, MAP_ACTIVE)?;
        let generation = active.get(&0, 0)?;
        let active_slot = (generation & 1) as u8;
        let policy = PolicyMaps {
            groups: take(&mut ebpf, MAP_GROUPS)?,
            device_exact: DeviceTable::new(
                // A bucket is 16 words, the array's entries one bucket each.
                mapped(&mut ebpf, MAP_DEVICE_EXACT, geometry.words() as u32, 1)?,
                geometry,
            ),
            gateway: take(&mut ebpf, MAP_GATEWAY)?,
            device_prefixes: take(&mut ebpf, MAP_DEVICE_PREFIX)?,
            destinations: take(&mut ebpf, MAP_DESTINATIONS)?,
            rulesets: take(&mut ebpf, MAP_RULESETS)?,
            flat: FlatMaps {
                // A node is 16 words, the array's entries one word each.
                trie: mapped(&mut ebpf, MAP_TRIE, SLOTS * TRIE_WORDS_PER_SLOT, 1)?,
                // A `u32` per 8-byte element.
                roots: mapped(&mut ebpf, MAP_TRIE_ROOTS, SLOTS * ROOTS_PER_SLOT, 2)?,
            },
            records_per_slot: options.limits.rule_records,
            largest_trie: if options.narrow_tries {
                Shape::Narrow
            } else if options.small_roots {
                Shape::Wide
            } else {
                Shape::BigRoot
            },
        };
        let counters = CounterRegistry::adopt(
            take(&mut ebpf, MAP_COUNTER_OWNERS)?,
            take(&mut ebpf, MAP_COUNTERS)?,
            usize::from(active_slot),
            start == Start::Adopted,
        )?;
        // Borrowed, not taken: they stay open for the hooks verified later
        // (`hooks.rs`).
        let mut settings: Array<&mut MapData, Settings> = borrow(&mut ebpf, MAP_SETTINGS)?;
        settings.set(0, runtime_settings(options), 0)?;
        let mut ethertypes: HashMap<&mut MapData, u16, u8> =
            borrow(&mut ebpf, MAP_PASS_ETHERTYPES)?;
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
        let learned = Learned::new(
            take(&mut ebpf, MAP_LEARNED)?,
            take(&mut ebpf, MAP_LEARNED_BITS)?,
        )?;
        Ok(Dataplane {
            stats: take(&mut ebpf, MAP_STATS)?,
            event_limiter: take(&mut ebpf, MAP_EVENT_LIMITER)?,
            reject_limiter: take(&mut ebpf, MAP_REJECT_LIMITER)?,
            grace: take(&mut ebpf, MAP_GRACE)?,
            grace_inner: Array::create(1, 0).context("create TG_GRACE inner map")?,
            events_taken: false,
            probe_generation: take(&mut ebpf, MAP_PROBE)?,
            probe_result: take(&mut ebpf, MAP_PROBE_RESULT)?,
            object: Arc::new(Mutex::new(ebpf)),
            pin_dir: options.pin_dir.clone(),
            start,
            active,
            generation,
            policy,
            counters,
            // A previous run may have flipped just before it died.
            grace_pending: true,
            slots,
            group_ids: Default::default(),
            installed_counters: Vec::new(),
            attachments: Vec::new(),
            ntp_fast_virtual: false,
            previous_programs,
            learned,
            capacities: layout::specs(&options.limits)
                .iter()
                .map(|s| match s.name {
                    // Its entries are buckets; what it holds is devices.
                    MAP_DEVICE_EXACT => (s.name, SLOTS * options.limits.device_addresses),
                    _ => (s.name, s.max_entries),
                })
                .collect(),
        })
    }
}

fn borrow<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("BPF object has no map {name}"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// The program's runtime knobs: the deny-event and reject-reply limiters,
/// and the fragment cache's lifetime and per-source quota. (The exact
/// device tables' sizes are a constant of the program, set at load.)
fn runtime_settings(options: &Options) -> Settings {
    let events = &options.deny_events;
    let (event_interval_ns, event_burst_ns) = gcra(events.rate, events.burst);
    let replies = &options.reject_replies;
    let (reject_interval_ns, reject_burst_ns) = gcra(replies.rate, replies.burst);
    Settings {
        event_interval_ns,
        event_burst_ns,
        fragment_lifetime_ns: options.limits.fragment_lifetime.as_nanos() as u64,
        fragments_per_source: options.limits.fragments_per_source,
        encoding: TABLE_ENCODING,
        reject_interval_ns,
        reject_burst_ns,
    }
}

/// (interval, burst) in nanoseconds of a per-CPU limiter allowing `rate`
/// per second with bursts of `burst` (default `rate`); (0, 0) allows none.
fn gcra(rate: u32, burst: Option<u32>) -> (u64, u64) {
    if rate == 0 {
        return (0, 0);
    }
    let interval = 1_000_000_000 / u64::from(rate);
    let burst = u64::from(burst.unwrap_or(rate).max(1));
    (interval.max(1), interval * (burst - 1))
}

/// Takes the array `name` and maps its `len` words, `stride` apart.
fn mapped(ebpf: &mut Ebpf, name: &str, len: u32, stride: usize) -> Result<MappedWords> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("BPF object has no map {name}"))?;
    MappedWords::new(map, len as usize, stride).with_context(|| format!("map {name}"))
}
