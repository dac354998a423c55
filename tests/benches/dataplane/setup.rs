//! Tollgate's side: the real program, opened with a policy compiled by the
//! real compiler, its probes checked against the reference model, and the
//! first packets of new flows.

use std::net::IpAddr;

use anyhow::{Context as _, Result, ensure};
use testkit::bench;
use tollgate::{
    compile::compile,
    config::Limits,
    datapath::{Dataplane, Options, XDP_DROP, XDP_PASS, slots::Geometry},
    links::LinkKind,
    model,
    tables::{CompiledPolicy, PacketFacts},
};
use tollgate_common::{DecisionReason, Verdict};

use crate::{
    bpf::ProgType,
    cold::{self, BucketReader, HashReader, once_each},
    fixtures::{Family, PORT, Probes, Proto, devices_for, fleet_policy, frame, with_last_byte},
    lookups::family_key,
    measure::{Cell, Floor, Measure},
};

/// First packets per trial for *allow (new flow)*.
pub const NEW_FLOWS: u8 = cold::FRAMES as u8;

/// What the fleet's policy and tries are like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// As the controller builds it: the largest shape of trie the slot has
    /// room for (a big root and wide nodes, at the bench's cells).
    Wide,
    /// Wide nodes under 8-bit roots (`Options::small_roots`), what a slot
    /// without room for big roots gets.
    SmallRoots,
    /// Every trie narrow (4-bit nodes, twice the levels), what a slot
    /// without room for wide ones gets.
    Narrow,
    /// Wide, and the group has an FQDN rule too: a packet its default
    /// decides is first checked for a learned destination.
    Fqdn,
}

/// A compiled policy in a freshly opened dataplane, and its probe packets.
pub struct Setup {
    pub dataplane: Dataplane,
    /// The exact device table's buckets.
    pub device_table: Geometry,
    pub tables: CompiledPolicy,
    pub sources: [IpAddr; 2],
    pub writes: usize,
}

impl Setup {
    /// `TG_TRIE` nodes in use, both slots.
    pub fn trie_nodes(&self) -> usize {
        self.dataplane.trie_nodes()
    }

    /// The fleet policy of `rules` destinations and `devices` devices in
    /// the `variant`, installed in both slots.
    pub fn build(
        pool: &bench::Pool,
        rules: usize,
        devices: usize,
        variant: Variant,
    ) -> Result<Setup> {
        let destinations = pool.take(rules);
        let (device_list, sources) = devices_for(devices);
        let policy = fleet_policy(&destinations, device_list, variant == Variant::Fqdn);
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
            narrow_tries: variant == Variant::Narrow,
            small_roots: variant == Variant::SmallRoots,
            ..Options::default()
        })?;
        let report = dataplane.install(&tables)?;
        // Into the other slot as well: both hold the policy, as after any
        // reload, and the memory and trie figures count both.
        dataplane.install(&tables)?;
        Ok(Setup {
            dataplane,
            device_table: Geometry::for_devices(limits.device_addresses),
            tables,
            sources,
            writes: report.writes.inserted + report.writes.removed,
        })
    }

    /// The XDP program on `frame`, `repeat` times: its return code and ns
    /// per run.
    pub fn run_xdp(&self, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        let (action, d) = self.dataplane.test_run_xdp(frame, repeat)?;
        Ok((action, d.as_nanos() as u64))
    }

    /// [`Setup::run_xdp`] for the raw-IP XDP program, on a packet that
    /// starts at its IP header (a tun, WireGuard or raw-IP modem link).
    pub fn run_xdp_ip(&self, packet: &[u8], repeat: u32) -> Result<(u32, u64)> {
        let (action, d) = self
            .dataplane
            .test_run_xdp_on(LinkKind::Ip, packet, repeat)?;
        Ok((action, d.as_nanos() as u64))
    }

    /// [`Setup::run_xdp`] for the TC program.
    pub fn run_tc(&self, frame: &[u8], repeat: u32) -> Result<(u32, u64)> {
        let (action, d) = self.dataplane.test_run_tc(frame, repeat)?;
        Ok((action, d.as_nanos() as u64))
    }

    /// The index in `TG_DEV_EXACT` of the first bucket the program reads
    /// for a packet from `src` under the slot in force.
    fn first_device_bucket(&self, src: IpAddr) -> u32 {
        let (family, _, bytes) = family_key(src);
        let words = std::array::from_fn(|i| {
            u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
        });
        let slot = self.dataplane.active_slot();
        self.device_table.buckets(slot, family, &words)[0] as u32
    }

    /// The TCP probes of `family`, each checked against the reference
    /// model.
    pub fn probes(&self, family: Family) -> Result<Probes> {
        self.probes_over(family, Proto::Tcp)
    }

    /// [`Setup::probes`] on `proto`.
    pub fn probes_over(&self, family: Family, proto: Proto) -> Result<Probes> {
        let src = self.sources[family as usize];
        let frame = |src, dst| proto.frame(src, dst);
        let decide = |dst: IpAddr| {
            model::verdict(
                &self.tables,
                &PacketFacts {
                    src,
                    dst,
                    proto: proto.number(),
                    dport: Some(proto.port()),
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
        let frames = Probes::frames_over(family, &self.sources, proto);
        let default = decide(frames.deny_default_dst);
        ensure!(
            default.verdict == Verdict::Deny && default.reason == DecisionReason::GroupDefault,
            "{:?} is not decided by the group default: {default:?}",
            frames.deny_default_dst
        );
        let unknown = model::verdict(
            &self.tables,
            &PacketFacts {
                src: Probes::unknown_source(family),
                dst: allow,
                proto: proto.number(),
                dport: Some(proto.port()),
            },
        );
        ensure!(
            unknown.verdict == Verdict::Deny && unknown.reason == DecisionReason::UnknownDevice,
            "the unknown device's probe is not decided by unknown-devices: {unknown:?}"
        );
        Ok(Probes {
            allow: frame(src, allow),
            allow_dst: allow,
            deny_rule: frame(src, deny_rule),
            deny_rule_dst: deny_rule,
            unknown: frame(Probes::unknown_source(family), allow),
            ..frames
        })
    }
}

impl Setup {
    /// *Allow (new flow)* for `probes`' family: per trial, after the CPU
    /// idled (`cold::idle`), the allow probe's destination from 250
    /// devices, each frame once, with the floor run on the same frame after
    /// it (`cold::once_each`). `reader` then reads each device's first
    /// bucket the same way, twice, in a pass of its own; where the devices
    /// are exact ones, a [`HashReader`] of the cell's devices of the family
    /// looks each up the same way. The deny(default) probe from the same
    /// devices is measured the same way, and then each device's allow
    /// right after its deny. A trial's value is the median of its 250 first
    /// packets; the cells show the lowest and the median trial, as
    /// elsewhere.
    pub fn first_packets(
        &self,
        measure: &Measure,
        probes: &Probes,
        reader: &BucketReader,
    ) -> Result<FirstPackets> {
        let floor = Floor::load(ProgType::Xdp)?;
        let src = self.sources[probes.family as usize];
        let frames: Vec<(Vec<u8>, Vec<u8>, IpAddr)> = (1..=NEW_FLOWS)
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
                    src,
                ))
            })
            .collect::<Result<_>>()?;
        let allow = |i: usize| -> Result<u64> {
            let (action, ns) = self.run_xdp(&frames[i].0, 1)?;
            ensure!(action == XDP_PASS, "a new flow was not allowed");
            Ok(ns)
        };
        let deny = |i: usize| -> Result<u64> {
            let (action, ns) = self.run_xdp(&frames[i].1, 1)?;
            ensure!(action == XDP_DROP, "a deny(default) probe passed");
            Ok(ns)
        };
        let floor = |i: usize| Ok(floor.test_run(&frames[i].0, 1)?.1);
        let bucket = |i: usize| reader.read(self.first_device_bucket(frames[i].2));
        let trials = measure.trials;
        let n = frames.len();
        let allowed = once_each(trials, n, &[&allow, &floor])?;
        // The same devices' first buckets, read by a program that does only
        // that, in a pass of its own: no run has read them since the idle
        // before the trial, as for the allows above.
        let reads = |read: &dyn Fn(usize) -> Result<u64>| -> Result<Reads> {
            let cells = once_each(trials, n, &[&floor, read, read])?;
            Ok(Reads {
                floor: cells[0],
                cold: cells[1],
                warm: cells[2],
            })
        };
        let bucket = reads(&bucket)?;
        // The same devices in a kernel hash map, the same way, where they
        // are exact devices (at 10^3 devices they are prefixes).
        let hash = HashReader::load(&self.tables.device_exact, probes.family)?;
        let hash = if frames.iter().all(|f| hash.holds(f.2)) {
            Some((reads(&|i| hash.read(frames[i].2))?, hash.entries))
        } else {
            None
        };
        let denied = once_each(trials, n, &[&deny, &floor])?;
        // Each device's deny, then its allow: the allow's device bucket is
        // cached, and its branches were last taken the other way.
        let switched = once_each(trials, n, &[&deny, &allow])?;
        // Each device's allow twice in a row: the second run finds every
        // line it reads cached and its branches taken the same way just
        // before, so what it costs is one run of the decision on its own.
        let again = once_each(trials, n, &[&allow, &allow])?;
        let (allow, floor) = (allowed[0], allowed[1]);
        let (deny_default, allow_after_deny, allow_again) = (denied[0], switched[1], again[1]);
        Ok(FirstPackets {
            allow,
            floor,
            deny_default,
            allow_after_deny,
            allow_again,
            bucket,
            hash,
        })
    }
}

/// One packet at a time (`repeat` 1), each from another device.
#[derive(Clone, Copy)]
pub struct FirstPackets {
    /// A flow's first packet: the full decision, from cold caches.
    pub allow: Cell,
    /// The floor program on the same frames.
    pub floor: Cell,
    /// The deny(default) probe from the same devices, measured the same way.
    pub deny_default: Cell,
    /// Each device's allow right after its deny(default): a first packet
    /// whose branches the packet before took the other way.
    pub allow_after_deny: Cell,
    /// Each device's allow right after the same allow: one run from warm
    /// caches, with the branches the run before took (a single run on its
    /// own, nothing cold).
    pub allow_again: Cell,
    /// The first bucket of each device read by a program that does only
    /// that (`BucketReader`).
    pub bucket: Reads,
    /// The same devices looked up in a kernel hash map of the cell's exact
    /// devices of the family (`HashReader`, the structure xdp-filter and v1
    /// use), and the addresses in it; `None` where the devices are prefixes.
    pub hash: Option<(Reads, usize)>,
}

/// One read per device by a program that makes only that read, in a pass
/// of its own: the floor, the read, then the same read again.
#[derive(Clone, Copy)]
pub struct Reads {
    pub floor: Cell,
    pub cold: Cell,
    pub warm: Cell,
}
